//! Composition routes over real HTTP: the whole system in front of [`Parts`], a service the
//! gateway knows under two names (`people`, `ledger`), beside a dead one (`gone`). What is
//! pinned: every part's answer arrives under its name; a failed optional part is `null` with its
//! problem in `errors` and named by `Gatehouse-Partial`, never dropped; a failed required part
//! fails the whole answer, naming it; a slow part fails alone with its own 504; a sequential
//! part gets the field of the earlier one, and no field value can change its path; the route's
//! auth applies once, before any part is asked; a broken plan never loads.

use serde_json::{json, Value};

use crate::config::check_config;
use crate::harness::{
    assert_problem, config_head, dead_address, spawn_app_with, wait_until, write_atomically, Gate,
    Parts, TestApp,
};

/// The services and routes that put `parts` behind the gateway.
fn config(parts: &Parts, text: String) -> String {
    let (url, dead) = (parts.url(), dead_address());
    let text = text.replacen(
        "services:\n",
        &format!(
            "services:\n  people: {{ upstreams: [\"{url}\"], timeout: 5s, required: false }}\n  \
             ledger: {{ upstreams: [\"{url}\"], timeout: 5s, required: false }}\n  \
             gone: {{ upstreams: [\"http://{dead}\"], timeout: 5s, connect_timeout: 1s, required: false }}\n"
        ),
        1,
    );
    format!(
        "{text}  - path: \"/api/summary/{{id}}\"\n    methods: [GET]\n    auth: {{ roles: [admin] }}\n    compose:\n      \
         user: {{ service: people, to: \"/people/{{id}}\", required: true }}\n      \
         orders: {{ service: ledger, to: \"/ledger/orders?user_id={{id}}&sort={{query.sort}}\", required: false }}\n      \
         last: {{ service: ledger, to: \"/ledger/orders/{{user.last_order_id}}\", required: false }}\n  \
         - path: \"/api/partial/{{id}}\"\n    methods: [GET]\n    auth: authenticated\n    compose:\n      \
         user: {{ service: people, to: \"/people/{{id}}\", required: true }}\n      \
         orders: {{ service: gone, to: /orders, required: false }}\n      \
         slow: {{ service: ledger, to: /held, required: false, timeout: 300ms }}\n  \
         - path: /api/broken\n    methods: [GET]\n    auth: authenticated\n    compose:\n      \
         user: {{ service: people, to: /people/me, required: true }}\n      \
         orders: {{ service: gone, to: /orders, required: true }}\n  \
         - path: /api/odd\n    methods: [GET]\n    auth: authenticated\n    compose:\n      \
         fine: {{ service: ledger, to: /ledger/fine, required: true }}\n      \
         text: {{ service: ledger, to: /text, required: false }}\n      \
         missing: {{ service: ledger, to: /missing, required: false }}\n      \
         huge: {{ service: ledger, to: /huge, required: false, max_body: 64KiB }}\n"
    )
}

async fn start() -> (TestApp, Parts) {
    let parts = Parts::start().await;
    let app = spawn_app_with(|text| config(&parts, text)).await;
    (app, parts)
}

#[tokio::test]
async fn all_parts_up_answer_one_object_with_every_member_by_part_name() {
    let (app, parts) = start().await;
    let admin = app.admin().await;

    let response = app.get("/api/summary/7?sort=new", Some(&admin)).await;

    assert_eq!(response.status(), 200);
    assert!(response.headers().get("gatehouse-partial").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], json!({ "id": "7", "last_order_id": 42 }));
    assert_eq!(
        body["orders"],
        json!({ "target": "/ledger/orders?user_id=7&sort=new" })
    );
    assert_eq!(
        body["last"],
        json!({ "target": "/ledger/orders/42" }),
        "the sequential part got the earlier part's field"
    );
    assert!(body.get("errors").is_none(), "nothing failed: {body}");

    let seen = parts.seen();
    assert!(
        seen.contains(&("/people/7".to_owned(), "people".to_owned())),
        "each part carries an identity minted for its own service: {seen:?}"
    );
    assert!(
        seen.contains(&("/ledger/orders/42".to_owned(), "ledger".to_owned())),
        "{seen:?}"
    );
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    for service in ["people", "ledger"] {
        assert!(
            metrics.contains(&format!(
                "gatehouse_upstream_duration_seconds_count{{service=\"{service}\"}}"
            )),
            "part durations are labelled by service: {service}"
        );
    }
}

#[tokio::test]
async fn an_optional_part_down_is_null_with_its_problem_in_errors_and_the_header() {
    let (app, parts) = start().await;
    let token = app.admin().await;

    let pending = tokio::spawn({
        let request = app.http.get(app.url("/api/partial/7")).bearer_auth(&token);
        async move { request.send().await.unwrap() }
    });
    // The slow part is held by its service until after the answer: its 504 is its own.
    wait_until("the slow part to be asked", || async { parts.held() == 1 }).await;
    let response = pending.await.unwrap();
    parts.release(1);

    assert_eq!(response.status(), 200);
    let partial = response.headers()["gatehouse-partial"].to_str().unwrap();
    assert_eq!(partial, "orders, slow");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["id"], "7", "the part that answered arrived");
    assert_eq!(body["orders"], Value::Null);
    assert_eq!(body["slow"], Value::Null);
    let orders = &body["errors"]["orders"];
    assert_eq!(orders["status"], 503);
    assert_eq!(orders["title"], "Service Unavailable");
    assert_eq!(orders["type"], "about:blank");
    assert_eq!(orders["reason"], "upstream_unreachable");
    let slow = &body["errors"]["slow"];
    assert_eq!(slow["status"], 504);
    assert_eq!(slow["reason"], "upstream_timeout");
    assert!(body["errors"].get("user").is_none());
}

#[tokio::test]
async fn a_required_part_down_fails_the_whole_answer_naming_it() {
    let (app, _parts) = start().await;
    let token = app.admin().await;

    let response = app.get("/api/broken", Some(&token)).await;

    assert!(response.headers().contains_key("retry-after"));
    let problem = assert_problem(response, 503).await;
    assert_eq!(problem["part"], "orders");
    assert_eq!(problem["reason"], "upstream_unreachable");
    assert!(
        problem["detail"].as_str().unwrap().contains("orders"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_part_answering_badly_fails_alone_as_502_with_its_reason() {
    let (app, _parts) = start().await;
    let token = app.admin().await;

    let response = app.get("/api/odd", Some(&token)).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["gatehouse-partial"],
        "huge, missing, text"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["fine"]["target"], "/ledger/fine");
    for (part, reason) in [
        ("text", "part_not_json"),
        ("missing", "part_status"),
        ("huge", "part_too_large"),
    ] {
        assert_eq!(body[part], Value::Null, "{part}");
        assert_eq!(body["errors"][part]["status"], 502, "{part}");
        assert_eq!(body["errors"][part]["reason"], reason, "{part}");
    }
    assert!(
        body["errors"]["missing"]["detail"]
            .as_str()
            .unwrap()
            .contains("404"),
        "the service's status is told: {body}"
    );
}

#[tokio::test]
async fn hostile_field_values_never_change_the_target_path() {
    let (app, parts) = start().await;
    let token = app.admin().await;

    parts.set_last_order_id(json!("../admin?role=admin#x"));
    let body: Value = app
        .get("/api/summary/7", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["last"]["target"], "/ledger/orders/..%2Fadmin%3Frole%3Dadmin%23x",
        "the value stays one segment under /ledger/orders/"
    );

    // A path parameter cannot add a query parameter either.
    let body: Value = app
        .get("/api/summary/7%26admin%3Dtrue", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["orders"]["target"],
        "/ledger/orders?user_id=7%26admin%3Dtrue&sort="
    );

    // Values that would climb a segment, vanish, or are no single value: the part is not asked.
    for hostile in [
        json!(".."),
        json!("."),
        json!(""),
        json!({ "id": 1 }),
        json!(null),
    ] {
        parts.set_last_order_id(hostile.clone());
        let asked = parts.seen().len();
        let response = app.get("/api/summary/8", Some(&token)).await;
        assert_eq!(response.status(), 200, "{hostile}");
        assert_eq!(response.headers()["gatehouse-partial"], "last");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["last"], Value::Null, "{hostile}");
        assert_eq!(
            body["errors"]["last"]["reason"], "part_field_unusable",
            "{hostile}"
        );
        assert_eq!(
            parts.seen().len(),
            asked + 2,
            "only `user` and `orders` reached the service: {hostile}"
        );
    }
    let seen = parts.seen();
    assert!(
        seen.iter()
            .all(|(target, _)| target.starts_with("/people/") || target.starts_with("/ledger/")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_route_auth_applies_once_before_any_part_is_asked() {
    let (app, parts) = start().await;
    let admin = app.admin().await;
    app.create_user(&admin, "carol", "carol-password-1").await;
    let carol = app.token("carol", "carol-password-1").await;

    let anonymous = app.get("/api/summary/7", None).await;
    assert_problem(anonymous, 401).await;
    let not_admin = app.get("/api/summary/7", Some(&carol)).await;
    assert_problem(not_admin, 403).await;

    assert!(
        parts.seen().is_empty(),
        "no part was asked: {:?}",
        parts.seen()
    );
}

#[tokio::test]
async fn only_reads_are_composed() {
    let (app, _parts) = start().await;
    let admin = app.admin().await;
    let response = app
        .send_json(reqwest::Method::POST, "/api/summary/7", &admin, &json!({}))
        .await;
    let problem = assert_problem(response, 405).await;
    assert_eq!(problem["reason"], "method_not_allowed");
    let head = app
        .http
        .head(app.url("/api/summary/7"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200, "HEAD is answered like GET");
}

const VALID: &str = "listen: 127.0.0.1:8001\nstore: sqlite://data/gateway.db\nservices:\n  users: { upstreams: [\"http://127.0.0.1:8101\"] }\n  orders: { upstreams: [\"http://127.0.0.1:8102\"] }\nroutes:\n  - path: \"/api/users/{id}/summary\"\n    methods: [GET]\n    auth: { roles: [admin] }\n    compose:\n      user: { service: users, to: \"/users/{id}\", required: true }\n      orders: { service: orders, to: \"/orders?user_id={id}\", required: false, timeout: 2s }\n";

#[test]
fn check_config_accepts_a_composition_and_refuses_a_cycle_or_an_unknown_field_reference() {
    let (ok, output) = check_config(VALID);
    assert!(ok, "{output}");

    let cycle = VALID.replace(
        "to: \"/users/{id}\", required: true",
        "to: \"/users/{orders.user_id}\", required: true",
    );
    let cycle = cycle.replace(
        "to: \"/orders?user_id={id}\", required: false",
        "to: \"/orders?user_id={user.id}\", required: true",
    );
    let (ok, output) = check_config(&cycle);
    assert!(!ok);
    assert!(
        output.contains("gateway.yaml:11:") && output.contains("routes[0].compose.user.to"),
        "{output}"
    );
    assert!(output.contains("a cycle"), "{output}");

    let unknown = VALID.replace("to: \"/users/{id}\"", "to: \"/users/{account.id}\"");
    let (ok, output) = check_config(&unknown);
    assert!(!ok);
    assert!(
        output.contains("routes[0].compose.user.to")
            && output.contains("uses a field of `account`, which is no part of this composition"),
        "{output}"
    );

    let optional = VALID.replace("to: \"/users/{id}\"", "to: \"/users/{orders.user_id}\"");
    let (ok, output) = check_config(&optional);
    assert!(!ok);
    assert!(output.contains("which is optional"), "{output}");
}

/// A gateway alone with one public composition on `parts`; `last` takes `user`'s field, and
/// with `cycle` `user` takes `last`'s too.
fn reloadable(parts: &Parts, cycle: bool) -> String {
    let user_to = if cycle {
        "/people/{last.target}"
    } else {
        "/people/{id}"
    };
    format!(
        "{head}  people: {{ upstreams: [\"{url}\"], required: false }}\n\
         routes:\n  - path: \"/api/card/{{id}}\"\n    methods: [GET]\n    auth: public\n    compose:\n      \
         user: {{ service: people, to: \"{user_to}\" }}\n      \
         last: {{ service: people, to: \"/people/{{user.last_order_id}}\" }}\n",
        head = config_head("off"),
        url = parts.url(),
    )
}

#[tokio::test]
async fn a_reload_with_a_cycle_is_refused_and_the_running_composition_stays() {
    let parts = Parts::start().await;
    let gate = Gate::start(&reloadable(&parts, false)).await;
    let before: Value = gate.get("/api/card/7").await.json().await.unwrap();
    assert_eq!(
        before["last"]["id"], "42",
        "`last` asked with `user`'s field"
    );

    write_atomically(&gate.config, &reloadable(&parts, true));
    let error = gate.reloader.reload("test").unwrap_err().to_string();
    assert!(
        error.contains("routes[0].compose.user.to") && error.contains("a cycle"),
        "{error}"
    );

    let after = gate.get("/api/card/7").await;
    assert_eq!(after.status(), 200, "the old table stays");
    let after: Value = after.json().await.unwrap();
    assert_eq!(after, before);
}
