//! The status page's document, `/status.json` on the admin listener, as an operator's script
//! reads it: each route's last minute counted from a known mix of requests, an instance killed
//! shown ejected, a reload's outcome, the signing keys, and nothing secret anywhere in it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::harness::{
    config_head, dead_address, spawn_app_with, wait_for, write_atomically, Gate, Instance,
};

/// Service `pool` on instances `a` and `b` (one failure ejects, for a long back-off, so the
/// ejection is still there when the test looks), and three routes on it: public, signed-in
/// only, and one to a service nothing listens for.
pub(crate) fn pool_config(a: &Instance, b: &Instance, extra_route: &str) -> String {
    format!(
        "{head}  pool: {{ upstreams: [\"{a}\", \"{b}\"], timeout: 5s, connect_timeout: 1s, breaker: {{ failures: 1, backoff: 5m }} }}\n\
         \x20 gone: {{ upstreams: [\"http://{dead}\"], connect_timeout: 1s, required: false }}\n\
         routes:\n\
         \x20 - {{ path: /api/pool, methods: [GET], service: pool, to: /pool, auth: public }}\n\
         \x20 - {{ path: /api/private, methods: [GET], service: pool, to: /private, auth: authenticated }}\n\
         \x20 - {{ path: /api/gone, methods: [GET], service: gone, to: /, auth: public }}\n{extra_route}",
        head = config_head("off"),
        a = a.url(),
        b = b.url(),
        dead = dead_address(),
    )
}

/// `method path` on the gateway's admin listener.
async fn admin(gate: &Gate, method: reqwest::Method, path: &str) -> reqwest::Response {
    gate.http
        .request(method, format!("{}{path}", gate.admin_url))
        .send()
        .await
        .unwrap()
}

async fn status_of(gate: &Gate) -> Value {
    let response = admin(gate, reqwest::Method::GET, "/status.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "a script must never read a cached status"
    );
    response.json().await.unwrap()
}

fn route<'a>(status: &'a Value, template: &str) -> &'a Value {
    status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|route| route["template"] == template)
        .unwrap_or_else(|| panic!("{template} is listed: {status:#}"))
}

fn instance<'a>(status: &'a Value, service: &str, name: &str) -> &'a Value {
    let service = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("service {service} is listed: {status:#}"));
    service["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == name)
        .unwrap_or_else(|| panic!("instance {name} is listed: {service:#}"))
}

#[tokio::test]
async fn a_known_mix_of_requests_is_counted_per_route_with_errors_and_refusals_apart() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    let gate = Gate::start(&pool_config(&a, &b, "")).await;

    for _ in 0..6 {
        assert_eq!(gate.get("/api/pool").await.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(gate.get("/api/private").await.status(), 401);
    }
    for _ in 0..2 {
        assert_eq!(gate.get("/api/gone").await.status(), 503);
    }

    // An answer is counted once its body has gone out, a moment after the client read it.
    let status = wait_for("the mix counted", || async {
        let status = status_of(&gate).await;
        let counted: u64 = status["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum();
        (counted == 11).then_some(status)
    })
    .await;

    let pool = route(&status, "/api/pool");
    assert_eq!(pool["requests"], 6, "{pool:#}");
    assert_eq!(pool["server_errors"], 0);
    assert_eq!(pool["refused"], 0);
    assert_eq!(pool["error_rate"], 0.0);
    assert_eq!(pool["service"], "pool");
    assert_eq!(pool["methods"], serde_json::json!(["GET"]));
    assert!(
        pool["requests_per_second"].as_f64().unwrap() > 0.0,
        "{pool:#}"
    );
    let (p50, p99) = (
        pool["p50_ms"].as_f64().unwrap(),
        pool["p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} ms, p99 {p99} ms");
    assert_eq!(pool["series"]["step_seconds"], 5);
    assert_eq!(pool["series"]["requests"].as_array().unwrap().len(), 12);

    let private = route(&status, "/api/private");
    assert_eq!(private["requests"], 3);
    assert_eq!(private["refused"], 3, "the gateway's own 401s: {private:#}");
    assert_eq!(private["refusal_rate"], 1.0);
    assert_eq!(
        private["server_errors"], 0,
        "a refusal is not a server error"
    );

    let gone = route(&status, "/api/gone");
    assert_eq!(gone["requests"], 2);
    assert_eq!(gone["server_errors"], 2, "{gone:#}");
    assert_eq!(gone["error_rate"], 1.0);
    assert_eq!(gone["refused"], 0);

    // Nothing else is a route: the raw paths of requests that matched none never appear.
    assert_eq!(gate.get("/api/no/such/path").await.status(), 404);
    let status = status_of(&gate).await;
    assert_eq!(status["routes"].as_array().unwrap().len(), 3, "{status:#}");
    assert!(!status.to_string().contains("/api/no/such/path"));
    assert_eq!(status["window_seconds"], 60);
}

#[tokio::test]
async fn a_killed_instance_shows_ejected_with_its_open_breaker_since_when_it_failed() {
    let a = Instance::start("a").await;
    let mut b = Instance::start("b").await;
    let gate = Gate::start(&pool_config(&a, &b, "")).await;
    let b_name = b.address.to_string();
    let a_name = a.address.to_string();

    let before = status_of(&gate).await;
    for name in [&a_name, &b_name] {
        let view = instance(&before, "pool", name);
        assert_eq!(view["state"], "healthy", "{view:#}");
        assert_eq!(view["breaker"], "closed");
    }

    b.kill().await;
    let killed_at = chrono::Utc::now();
    // Requests go on (the balancer reaches b in turn, fails, and retries on a).
    let status = wait_for("b ejected", || async {
        let _ = gate.get("/api/pool").await;
        let status = status_of(&gate).await;
        (instance(&status, "pool", &b_name)["state"] == "ejected").then_some(status)
    })
    .await;

    let ejected = instance(&status, "pool", &b_name);
    assert_eq!(ejected["breaker"], "open", "{ejected:#}");
    let since = chrono::DateTime::parse_from_rfc3339(ejected["since"].as_str().unwrap())
        .expect("an RFC 3339 time");
    let generated =
        chrono::DateTime::parse_from_rfc3339(status["generated_at"].as_str().unwrap()).unwrap();
    // The breaker keeps monotonic time, reported as wall-clock time by one reading of both
    // clocks: allow for the millisecond rounding and the instant between the two readings.
    let slack = chrono::Duration::milliseconds(50);
    assert!(
        since + slack >= killed_at && since <= generated + slack,
        "ejected at {since}, killed at {killed_at}, reported at {generated}"
    );
    assert_eq!(instance(&status, "pool", &a_name)["state"], "healthy");
    let pool = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "pool")
        .unwrap();
    assert_eq!(pool["available"], 1, "{pool:#}");
}

#[tokio::test]
async fn the_last_reload_is_shown_refused_with_its_reason_then_applied_keeping_the_counts() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    let gate = Gate::start(&pool_config(&a, &b, "")).await;

    let status = status_of(&gate).await;
    assert_eq!(status["config"]["generation"], 1);
    assert!(status["config"]["last_reload"].is_null(), "{status:#}");

    for _ in 0..4 {
        assert_eq!(gate.get("/api/pool").await.status(), 200);
    }
    wait_for("the requests counted", || async {
        let status = status_of(&gate).await;
        (route(&status, "/api/pool")["requests"] == 4).then_some(())
    })
    .await;

    let broken = "  - { path: /api/more, methods: [GET], service: nowhere, to: /, auth: public }\n";
    write_atomically(&gate.config, &pool_config(&a, &b, broken));
    assert!(gate.reloader.reload("test").is_err());
    let status = status_of(&gate).await;
    let last = &status["config"]["last_reload"];
    assert_eq!(last["outcome"], "refused", "{status:#}");
    let error = last["error"].as_str().unwrap();
    assert!(
        error.contains("routes[3].service") && error.contains("nowhere"),
        "{error}"
    );
    chrono::DateTime::parse_from_rfc3339(last["at"].as_str().unwrap()).expect("an RFC 3339 time");
    assert_eq!(
        status["config"]["generation"], 1,
        "the running configuration stays"
    );
    assert_eq!(status["config"]["reloads_refused"], 1);

    let added = "  - { path: /api/more, methods: [GET], service: pool, to: /more, auth: public }\n";
    write_atomically(&gate.config, &pool_config(&a, &b, added));
    gate.reloader.reload("test").unwrap();
    let status = status_of(&gate).await;
    assert_eq!(status["config"]["generation"], 2);
    assert_eq!(status["config"]["last_reload"]["outcome"], "applied");
    assert!(status["config"]["last_reload"]["error"].is_null());
    assert_eq!(
        route(&status, "/api/pool")["requests"],
        4,
        "a route the reload kept keeps its last minute"
    );
    assert_eq!(route(&status, "/api/more")["requests"], 0);
}

#[tokio::test]
async fn the_status_page_and_document_are_on_the_admin_listener_only() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    let gate = Gate::start(&pool_config(&a, &b, "")).await;

    for path in ["/status", "/status.json"] {
        assert_eq!(
            gate.get(path).await.status(),
            404,
            "{path} on the public port"
        );
    }
    let page = admin(&gate, reqwest::Method::GET, "/status").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "script-src 'sha256-",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/status.json"), "the page reads the document");

    // Only GET: the page changes nothing.
    let post = admin(&gate, reqwest::Method::POST, "/status.json").await;
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_document_lists_the_keys_and_holds_no_secret_token_or_user() {
    let app = spawn_app_with(|config| config.replace("algorithm: EdDSA", "algorithm: HS256")).await;
    let login: Value = app.login("admin", "a").await.json().await.unwrap();
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();
    assert_eq!(app.get("/api/echo/x", Some(access)).await.status(), 200);
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let user_id = claims["sub"].as_str().unwrap();

    let status = wait_for("the signed-in request counted", || async {
        let status: Value = app.admin_get("/status.json").await.json().await.unwrap();
        (route(&status, "/api/echo/{*rest}")["requests"] == 1).then_some(status)
    })
    .await;
    let text = status.to_string();

    let store = gateway::store::Store::connect(&app.store_url)
        .await
        .unwrap();
    let stored = store.signing_keys().await.unwrap();
    assert!(stored.iter().any(|key| key.algorithm == "HS256"));
    for key in &stored {
        assert!(text.contains(&key.kid), "key {} is listed", key.kid);
        // The material as stored, and every long piece of it (a PEM's lines, a secret's text).
        assert!(
            !text.contains(&key.private_key),
            "key material of {}",
            key.kid
        );
        for piece in key
            .private_key
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '+' && c != '/')
        {
            assert!(
                piece.len() < 16 || !text.contains(piece),
                "a piece of {}'s material",
                key.kid
            );
        }
    }
    for (what, secret) in [
        ("the access token", access),
        ("its signature", access.rsplit('.').next().unwrap()),
        ("the refresh token", refresh),
        ("the user's id", user_id),
    ] {
        assert!(!text.contains(secret), "{what} is in the status document");
    }
    for field in ["private_key", "secret", "password", "token\""] {
        assert!(!text.contains(field), "a field named like {field}: {text}");
    }

    let keys = status["keys"]["keys"].as_array().unwrap();
    let hs256 = keys.iter().find(|k| k["algorithm"] == "HS256").unwrap();
    assert_eq!(hs256["state"], "active", "{keys:#?}");
    chrono::DateTime::parse_from_rfc3339(hs256["created_at"].as_str().unwrap())
        .expect("an RFC 3339 creation time");
    assert!(status["keys"]["error"].is_null());
}

#[tokio::test]
async fn a_services_own_4xx_is_an_answer_and_only_the_gateways_are_refusals() {
    let app = spawn_app_with(|config| config).await;
    let admin = app.admin().await;
    let missing = "/api/users/00000000-0000-7000-8000-000000000000";
    assert_eq!(
        app.get(missing, Some(&admin)).await.status(),
        404,
        "the users service's own 404"
    );
    assert_eq!(
        app.get(missing, None).await.status(),
        401,
        "the gateway's refusal"
    );

    let status = wait_for("both counted", || async {
        let status: Value = app.admin_get("/status.json").await.json().await.unwrap();
        (route(&status, "/api/users/{id}")["requests"] == 2).then_some(status)
    })
    .await;
    let users = route(&status, "/api/users/{id}");
    assert_eq!(users["refused"], 1, "{users:#}");
    assert_eq!(users["server_errors"], 0);
}
