//! Request pre-processing and response post-processing (issue 14), over real HTTP: a gateway of
//! the test's own in front of an echo (what the service received) and a JSON service that
//! compresses carelessly (`harness::upstreams::spawn_json`). What is pinned: header and query
//! edits reach the service, and nothing a route or a client writes can speak for the gateway;
//! `deny`, wildcards and `rename` reach every element of a gzip, br or zstd answer, which the
//! client gets in that coding or as identity; problem+json and non-JSON bodies are left alone;
//! an oversized body or a bomb passes untouched and is counted; a body that lies is a 502.

use std::io::Read as _;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::harness::upstreams::{gzip_bomb, spawn_echo, spawn_json};
use crate::harness::{config_head, Gate};

/// A gateway with `routes` (YAML list items) in front of the echo (`echo`) and the JSON
/// service (`json`).
async fn gate(routes: &str) -> Gate {
    let echo = spawn_echo(Arc::new(AtomicUsize::new(0))).await;
    let json = spawn_json().await;
    let head = config_head("off").replacen(
        "services:\n",
        &format!(
            "services:\n  echo: {{ upstreams: [\"http://{echo}\"], required: false }}\n  \
             json: {{ upstreams: [\"http://{json}\"], required: false, retries: {{ attempts: 0 }} }}\n"
        ),
        1,
    );
    Gate::start(&format!("{head}routes:\n{routes}")).await
}

/// `/api/echo` to the echo, with `rules` (a `request:` or `response:` line).
fn echo_route(rules: &str) -> String {
    format!("  - path: /api/echo\n    methods: [GET]\n    service: echo\n    to: /echo\n    auth: public\n    {rules}\n")
}

/// The JSON routes: `/api/{coding}/{kind}` with the issue's deny list and a rename, and a
/// 1 KiB body limit on `/small/...`.
const JSON_ROUTES: &str = r#"  - path: "/api/{coding}/{kind}"
    methods: [GET]
    service: json
    to: "/{coding}/{kind}"
    auth: public
    response:
      headers: { set: { X-Served-By: gatehouse }, remove: [Server, X-Internal-Trace] }
      json:
        deny: ["items[*].secret", "*.owner.email", "items.internal_notes"]
        rename: { "items[*].cust_id": customer_id }
  - path: "/small/{coding}/{kind}"
    methods: [GET]
    service: json
    to: "/{coding}/{kind}"
    auth: public
    response: { json: { deny: [secret] }, max_body: 1KiB }
"#;

/// What the issue's rules make of [`items_json`].
fn transformed_items() -> Value {
    json!({
        "items": [
            { "id": 1, "name": "one", "owner": { "name": "A" } },
            { "id": 2, "name": "two", "owner": { "name": "B" } },
            { "id": 3, "name": "three", "customer_id": 7 },
        ],
        "meta": { "total": 3, "owner": {} },
    })
}

fn decoded(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        "zstd" => out = zstd::stream::decode_all(bytes).expect("valid zstd"),
        _ => out = bytes.to_vec(),
    }
    out
}

async fn get(gate: &Gate, path: &str, accept_encoding: Option<&str>) -> reqwest::Response {
    let mut request = gate.http.get(format!("{}{path}", gate.url));
    if let Some(accept) = accept_encoding {
        request = request.header("accept-encoding", accept);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

async fn skipped(gate: &Gate, route: &str, reason: &str) -> u64 {
    let metrics = gate
        .http
        .get(format!("{}/metrics", gate.admin_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series =
        format!("gatehouse_transform_skipped_total{{route=\"{route}\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[tokio::test]
async fn header_and_query_edits_reach_the_service_as_configured() {
    let gate = gate(
        r#"  - path: "/api/echo/{id}"
    methods: [GET]
    service: echo
    to: "/echo/{id}"
    auth: public
    request:
      headers: { set: { X-Tenant: acme }, add: { X-Tag: from-gateway }, remove: [X-Debug], rename: { X-Old: X-New } }
      query: { add: { v: "2" }, set: { tenant: acme }, remove: [debug], rename: { q: search } }
"#,
    )
    .await;
    let response = gate
        .http
        .get(format!(
            "{}/api/echo/7?q=a%20b&debug=1&tenant=evil&keep=%2B",
            gate.url
        ))
        .header("x-tenant", "forged")
        .header("x-tag", "from-client")
        .header("x-debug", "1")
        .header("x-old", "moved")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-tenant"], "acme",
        "set replaces the client's value"
    );
    assert_eq!(headers["x-new"], "moved");
    assert!(headers.get("x-old").is_none());
    assert!(headers.get("x-debug").is_none());
    let tags = headers["x-tag"].as_str().unwrap();
    assert!(
        tags.contains("from-client") || tags == "from-gateway",
        "{tags}"
    );
    assert_eq!(
        seen["path"], "/echo/7",
        "the `to` template still rewrites the path"
    );
    assert_eq!(
        seen["query"], "search=a%20b&keep=%2B&tenant=acme&v=2",
        "what no edit names keeps the client's bytes"
    );
}

#[tokio::test]
async fn a_client_cannot_speak_for_the_gateway_through_a_transformed_route() {
    let gate = gate(&echo_route(
        "request: { headers: { rename: { X-Client: X-Caller } } }",
    ))
    .await;
    let response = gate
        .http
        .get(format!("{}/api/echo", gate.url))
        .header("x-gatehouse-identity", "forged.token")
        .header("x-user-id", "00000000-0000-0000-0000-000000000001")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-client", "me")
        .send()
        .await
        .unwrap();
    let seen: Value = response.json().await.unwrap();
    let headers = &seen["headers"];
    assert!(headers.get("x-gatehouse-identity").is_none(), "{headers}");
    assert!(headers.get("x-user-id").is_none(), "{headers}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "the gateway's own");
    assert_eq!(headers["x-caller"], "me");
}

#[test]
fn a_route_that_names_a_header_the_gateway_owns_is_refused_at_load() {
    let file = format!(
        "{}routes:\n  - path: /a\n    methods: [GET]\n    service: users\n    auth: public\n    \
         request: {{ headers: {{ set: {{ X-Gatehouse-Identity: forged }}, remove: [Connection], rename: {{ X-A: X-User-Id }} }} }}\n    \
         response: {{ headers: {{ remove: [Content-Length] }}, json: {{ allow: [a], deny: [\"items[\"] }} }}\n",
        config_head("off")
    );
    let error = gateway::config::parse(&file, "gateway.yaml", &gateway::config::Vars::new())
        .unwrap_err()
        .to_string();
    for (field, why) in [
        ("routes[0].request.headers.set", "the identity header"),
        ("routes[0].request.headers.remove", "a hop-by-hop header"),
        (
            "routes[0].request.headers.rename",
            "a rename onto x-user-id",
        ),
        ("routes[0].response.headers.remove", "the framing"),
        ("routes[0].response.json.deny", "a bad path"),
    ] {
        assert!(error.contains(field), "{why}: {field} is named in {error}");
    }
    assert!(error.contains("gateway.yaml:"), "with its place: {error}");
}

#[tokio::test]
async fn deny_reaches_every_element_of_a_gzip_answer_which_stays_gzip() {
    let gate = gate(JSON_ROUTES).await;
    let response = get(&gate, "/api/gzip/items", Some("gzip")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-encoding").as_deref(),
        Some("gzip")
    );
    assert_eq!(
        header(&response, "etag").as_deref(),
        Some("W/\"v1\""),
        "weakened"
    );
    assert_eq!(
        header(&response, "x-served-by").as_deref(),
        Some("gatehouse")
    );
    assert!(header(&response, "server").is_none());
    assert!(header(&response, "x-internal-trace").is_none());
    assert!(header(&response, "vary").is_some_and(|v| v.contains("accept-encoding")));
    assert_eq!(
        header(&response, "x-seen-accept-encoding").as_deref(),
        Some("gzip"),
        "the service is offered what both sides decode"
    );
    let length: usize = header(&response, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), length);
    let body: Value = serde_json::from_slice(&decoded("gzip", &bytes)).unwrap();
    assert_eq!(body, transformed_items());
}

#[tokio::test]
async fn a_client_that_takes_no_gzip_gets_the_rewritten_answer_as_identity() {
    let gate = gate(JSON_ROUTES).await;
    for accept in [None, Some("br;q=0, deflate"), Some("gzip;q=0")] {
        let response = get(&gate, "/api/gzip/items", accept).await;
        assert_eq!(response.status(), 200, "{accept:?}");
        assert!(
            header(&response, "content-encoding").is_none(),
            "{accept:?}"
        );
        assert_eq!(
            header(&response, "x-seen-accept-encoding").as_deref(),
            Some("identity"),
            "{accept:?}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, transformed_items(), "{accept:?}");
    }
}

#[tokio::test]
async fn br_and_zstd_answers_are_rewritten_and_sent_back_in_their_coding() {
    let gate = gate(JSON_ROUTES).await;
    for coding in ["br", "zstd"] {
        let response = get(
            &gate,
            &format!("/api/{coding}/items"),
            Some("gzip, br, zstd"),
        )
        .await;
        assert_eq!(response.status(), 200, "{coding}");
        assert_eq!(
            header(&response, "content-encoding").as_deref(),
            Some(coding)
        );
        let bytes = response.bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&decoded(coding, &bytes)).unwrap();
        assert_eq!(body, transformed_items(), "{coding}");
    }
}

#[tokio::test]
async fn an_identity_answer_is_rewritten_in_place() {
    let gate = gate(JSON_ROUTES).await;
    let response = get(&gate, "/api/identity/items", Some("gzip")).await;
    assert!(header(&response, "content-encoding").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, transformed_items());
}

#[tokio::test]
async fn problem_and_non_json_bodies_are_untouched_but_headers_still_apply() {
    let gate = gate(JSON_ROUTES).await;
    let problem = get(&gate, "/api/identity/problem", None).await;
    assert_eq!(problem.status(), 404);
    assert_eq!(
        header(&problem, "x-served-by").as_deref(),
        Some("gatehouse")
    );
    let body: Value = problem.json().await.unwrap();
    assert_eq!(body["secret"], "kept", "the service's problem is its own");

    let text = get(&gate, "/api/identity/text", None).await;
    assert_eq!(header(&text, "x-served-by").as_deref(), Some("gatehouse"));
    assert_eq!(text.text().await.unwrap(), "secret: plain text");
}

#[tokio::test]
async fn an_oversized_body_passes_through_untouched_and_is_counted() {
    let gate = gate(JSON_ROUTES).await;
    let route = "/small/{coding}/{kind}";
    for path in ["/small/identity/big", "/small/identity/big-stream"] {
        let response = get(&gate, path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["secret"], "s", "{path}: untouched");
        assert_eq!(
            body["padding"].as_str().unwrap().len(),
            4096,
            "{path}: whole"
        );
    }
    assert_eq!(skipped(&gate, route, "too_large").await, 2);
    let small = get(&gate, "/small/identity/problem", None).await;
    assert_eq!(small.status(), 404);
    assert_eq!(
        skipped(&gate, route, "too_large").await,
        2,
        "a problem is never counted"
    );
}

#[tokio::test]
async fn a_gzip_bomb_is_decoded_only_up_to_the_limit_and_passed_through() {
    let gate = gate(JSON_ROUTES).await;
    let response = get(&gate, "/api/gzip/bomb", Some("gzip")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-encoding").as_deref(),
        Some("gzip")
    );
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes, gzip_bomb(), "the service's bytes, untouched");
    assert_eq!(
        skipped(&gate, "/api/{coding}/{kind}", "decoded_too_large").await,
        1
    );
    let after = get(&gate, "/api/gzip/items", Some("gzip")).await;
    assert_eq!(after.status(), 200, "the gateway serves on");
}

#[tokio::test]
async fn a_body_that_lies_about_its_coding_or_is_not_json_is_a_502_problem() {
    let gate = gate(JSON_ROUTES).await;
    for path in [
        "/api/gzip/liar",
        "/api/identity/broken",
        "/api/deflate/items",
    ] {
        let response = get(&gate, path, Some("gzip, deflate")).await;
        assert_eq!(response.status(), 502, "{path}");
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("application/problem+json"),
            "{path}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 502, "{path}: {problem}");
        assert_eq!(
            problem["reason"], "upstream_bad_response",
            "{path}: {problem}"
        );
    }
}

#[tokio::test]
async fn a_range_request_on_a_filtered_route_never_reaches_the_service_as_a_range() {
    // A slice of the document could hold the very field `deny` removes.
    let gate = gate(&echo_route("response: { json: { deny: [body_len] } }")).await;
    let response = gate
        .http
        .get(format!("{}/api/echo", gate.url))
        .header("range", "bytes=0-20")
        .header("if-range", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert!(seen.get("body_len").is_none(), "filtered: {seen}");
    assert!(seen["headers"].get("range").is_none(), "{seen}");
    assert!(seen["headers"].get("if-range").is_none(), "{seen}");
}

#[tokio::test]
async fn the_cache_stores_the_transformed_answer_and_keeps_the_codings_apart() {
    let gate = gate(
        r#"  - path: "/cached/{coding}/{kind}"
    methods: [GET]
    service: json
    to: "/{coding}/{kind}"
    auth: public
    cache: { ttl: 60s }
    response: { json: { deny: ["items[*].secret", "*.owner.email", "items.internal_notes"], rename: { "items[*].cust_id": customer_id } } }
"#,
    )
    .await;
    for round in ["miss", "hit"] {
        let response = get(&gate, "/cached/gzip/items", Some("gzip")).await;
        assert_eq!(response.status(), 200, "{round}");
        let status = header(&response, "cache-status").unwrap_or_default();
        assert_eq!(status.contains("hit"), round == "hit", "{round}: {status}");
        assert_eq!(
            header(&response, "content-encoding").as_deref(),
            Some("gzip")
        );
        let bytes = response.bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&decoded("gzip", &bytes)).unwrap();
        assert_eq!(body, transformed_items(), "{round}");
    }
    let plain = get(&gate, "/cached/gzip/items", None).await;
    assert!(
        header(&plain, "content-encoding").is_none(),
        "a gzip entry is never served to a client that takes no gzip"
    );
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body, transformed_items());
}
