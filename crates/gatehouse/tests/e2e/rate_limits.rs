//! Rate limits through the whole system (memory state): a route's policies let exactly their
//! quota through in any window, count down in `RateLimit`, refuse with a `quota-exceeded`
//! problem and `Retry-After`, keep users (and addresses) apart, and are counted in the metrics.
//! The Redis variants (two replicas sharing one count, Redis killed) are in `rate_limits_redis`.
//!
//! The limit is a sliding window: exactly `requests` in any `per`. A test that counts a short
//! window exactly needs its requests to fit in it; when a run took longer it says so and tries
//! again with a fresh caller, rather than accepting a range.

use std::time::Instant;

use crate::config::check_config;
use crate::support::{assert_problem, spawn_app_with, TestApp};

const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// The system with `policies` under `rate_limits`, the authenticated echo route taking
/// `echo_limits` and the public one `public_limits`.
async fn app_with_limits(policies: &str, echo_limits: &str, public_limits: &str) -> TestApp {
    let policies = policies.to_owned();
    let echo = format!(
        r#"{{ path: "/api/echo/{{*rest}}", methods: [GET, POST, PUT, DELETE], service: echo, to: "/echo/{{rest}}", auth: authenticated, rate_limit: [{echo_limits}] }}"#
    );
    let public = format!(
        r#"{{ path: "/api/public/{{*rest}}", methods: [GET, POST], service: echo, to: "/echo/{{rest}}", auth: public, rate_limit: [{public_limits}] }}"#
    );
    spawn_app_with(move |config| {
        let config = config
            .replace(
                r#"{ path: "/api/echo/{*rest}", methods: [GET, POST, PUT, DELETE], service: echo, to: "/echo/{rest}", auth: authenticated }"#,
                &echo,
            )
            .replace(
                r#"{ path: "/api/public/{*rest}", methods: [GET, POST], service: echo, to: "/echo/{rest}", auth: public }"#,
                &public,
            )
            .replacen("routes:\n", &format!("rate_limits:\n{policies}\nroutes:\n"), 1);
        assert!(config.contains("rate_limit: ["), "the test routes were found");
        config
    })
    .await
}

/// A signed-in user of its own (admin creates it).
async fn user(app: &TestApp, name: &str) -> String {
    let admin = app.admin().await;
    app.create_user(&admin, name, "a-long-enough-password-1")
        .await;
    app.token(name, "a-long-enough-password-1").await
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// `r` of a `RateLimit` item `"name";r=R;t=T`.
fn remaining(rate_limit: &str) -> u64 {
    rate_limit
        .split(';')
        .find_map(|part| part.strip_prefix("r="))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no r in {rate_limit:?}"))
}

#[tokio::test]
async fn a_burst_of_ten_passes_exactly_ten_counting_down_then_quota_exceeded_and_another_user_is_unaffected(
) {
    let app = app_with_limits(
        "  ten-per-user: { requests: 10, per: 1h, by: user }",
        "ten-per-user",
        "",
    )
    .await;
    let alice = user(&app, "alice").await;
    let bob = user(&app, "bob").await;

    let started = Instant::now();
    let mut left = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..30 {
        let response = app.get("/api/echo/x", Some(&alice)).await;
        assert_eq!(
            header(&response, "ratelimit-policy"),
            "\"ten-per-user\";q=10;w=3600",
            "every answer names the policy"
        );
        if response.status() == 200 {
            left.push(remaining(&header(&response, "ratelimit")));
        } else {
            refusals.push(response);
        }
    }
    assert_eq!(
        left,
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        "exactly ten, counting down"
    );
    assert_eq!(refusals.len(), 20);
    let took = started.elapsed().as_secs();
    for refusal in refusals {
        let retry_after: u64 = header(&refusal, "retry-after").parse().unwrap();
        assert!(
            retry_after <= 3600 && retry_after + took + 1 >= 3600,
            "the first admission leaves the hour's window an hour after it came: {retry_after}"
        );
        let rate_limit = header(&refusal, "ratelimit");
        assert!(
            rate_limit.starts_with("\"ten-per-user\";r=0;t="),
            "{rate_limit}"
        );
        let body = assert_problem(refusal, 429).await;
        assert_eq!(body["type"], QUOTA_EXCEEDED);
        assert_eq!(
            body["violated-policies"],
            serde_json::json!(["ten-per-user"])
        );
        assert_eq!(body["reason"], "rate_limited");
    }

    let bobs = app.get("/api/echo/x", Some(&bob)).await;
    assert_eq!(bobs.status(), 200, "bob has a bucket of his own");
    assert_eq!(remaining(&header(&bobs, "ratelimit")), 9);

    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"gatehouse_rate_limit_decisions_total{outcome="refused",reason=""} 20"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gatehouse_rate_limit_decisions_total{outcome="allowed",reason=""} 11"#),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("gatehouse_requests_total")
                && line.contains(r#"status_class="4xx""#)
                && line.contains(r#"reason="rate_limited""#)
                && line.ends_with(" 20")),
        "the refusals are counted with their reason"
    );
}

#[tokio::test]
async fn ten_per_second_by_user_thirty_requests_within_a_second_pass_exactly_ten_and_another_user_is_unaffected(
) {
    let app = app_with_limits(
        "  ten-per-second: { requests: 10, per: 1s, by: user }",
        "ten-per-second",
        "",
    )
    .await;
    for attempt in 0..5 {
        let alice = user(&app, &format!("alice-{attempt}")).await;
        let bob = user(&app, &format!("bob-{attempt}")).await;
        let started = Instant::now();
        let mut responses = Vec::new();
        for _ in 0..30 {
            responses.push(app.get("/api/echo/x", Some(&alice)).await);
        }
        let bobs = app.get("/api/echo/x", Some(&bob)).await;
        let elapsed = started.elapsed();
        if elapsed >= std::time::Duration::from_secs(1) {
            eprintln!("ten per second: 30 requests took {elapsed:?}, more than the window: again");
            continue;
        }

        let mut left = Vec::new();
        let mut refusals = Vec::new();
        for response in responses {
            assert_eq!(
                header(&response, "ratelimit-policy"),
                "\"ten-per-second\";q=10;w=1"
            );
            match response.status().as_u16() {
                200 => left.push(remaining(&header(&response, "ratelimit"))),
                429 => refusals.push(response),
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(
            left,
            [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
            "exactly ten in the second, counting down"
        );
        assert_eq!(refusals.len(), 20);
        for refusal in refusals {
            assert_eq!(
                header(&refusal, "retry-after"),
                "1",
                "the first admission leaves the window within the second"
            );
            assert_eq!(header(&refusal, "ratelimit"), "\"ten-per-second\";r=0;t=1");
            let body = assert_problem(refusal, 429).await;
            assert_eq!(body["type"], QUOTA_EXCEEDED);
            assert_eq!(
                body["violated-policies"],
                serde_json::json!(["ten-per-second"])
            );
        }
        assert_eq!(bobs.status(), 200, "bob counts in a window of his own");
        assert_eq!(header(&bobs, "ratelimit"), "\"ten-per-second\";r=9;t=1");
        return;
    }
    panic!("no run of 30 requests fit in one second on this machine");
}

#[tokio::test]
async fn on_a_public_route_an_address_is_counted_and_several_policies_all_apply() {
    let app = app_with_limits(
        "  per-ip: { requests: 3, per: 1h, by: ip }\n  whole-route: { requests: 100, per: 1h, by: route }",
        "",
        "per-ip, whole-route",
    )
    .await;
    let first = app.get("/api/public/x", None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "ratelimit-policy"),
        "\"per-ip\";q=3;w=3600, \"whole-route\";q=100;w=3600",
        "every policy of the route is listed"
    );
    assert!(
        header(&first, "ratelimit").starts_with("\"per-ip\";r=2;"),
        "the most restrictive answers: {}",
        header(&first, "ratelimit")
    );
    for _ in 0..2 {
        assert_eq!(app.get("/api/public/x", None).await.status(), 200);
    }
    let refused = app.get("/api/public/x", None).await;
    let body = assert_problem(refused, 429).await;
    assert_eq!(
        body["violated-policies"],
        serde_json::json!(["per-ip"]),
        "only the policy that refused is named"
    );
    let other_route = app.get("/api/echo/x", Some(&app.admin().await)).await;
    assert_eq!(
        other_route.status(),
        200,
        "a route without policies is not limited"
    );
    assert_eq!(
        header(&other_route, "ratelimit"),
        "",
        "and says nothing of limits"
    );
}

#[test]
fn a_configuration_with_bad_policies_or_an_unknown_one_is_refused_naming_every_one() {
    let (ok, text) = check_config(
        "services:\n  users: { upstreams: [\"http://127.0.0.1:9\"] }\n\
         rate_limits:\n  per-user: { requests: 0, per: 1m, by: user }\n\
         \x20 huge: { requests: 1000000, per: 1h, by: ip }\n\
         \x20 spiky: { requests: 5, per: 1s, burst: 6, by: ip }\n\
         \x20 instant: { requests: 5, per: 0s, by: ip }\n\
         routes:\n  - { path: /a, methods: [GET], service: users, auth: public, rate_limit: [per-user, nope] }\n",
    );
    assert!(!ok);
    for expected in [
        "gateway.yaml:4:",
        "rate_limits.per-user.requests: must be at least 1",
        "gateway.yaml:5:",
        "rate_limits.huge.requests: at most 100000 per window",
        "gateway.yaml:6:",
        "rate_limits.spiky.burst: at most `requests` (5)",
        "gateway.yaml:7:",
        "rate_limits.instant.per: must be longer than zero",
        "routes[0].rate_limit[1]: unknown rate-limit policy `nope`",
    ] {
        assert!(text.contains(expected), "{expected} missing: {text}");
    }
}

/// A gateway (in this process) whose public route `/thing` takes the policy `p` = `policy`.
fn reloadable_config(upstream: &str, policy: &str, extra_route: bool) -> String {
    let mut text = crate::fleet::config_head("off");
    text.push_str(&format!("  app: {{ upstreams: [\"{upstream}\"] }}\n"));
    text.push_str(&format!("rate_limits:\n  p: {policy}\nroutes:\n"));
    text.push_str(
        "  - { path: /thing, methods: [GET], service: app, auth: public, rate_limit: [p] }\n",
    );
    if extra_route {
        text.push_str("  - { path: /other, methods: [GET], service: app, auth: public }\n");
    }
    text
}

#[tokio::test]
async fn a_reload_keeps_the_counts_and_a_changed_policy_reads_them_with_its_new_numbers() {
    let upstream = crate::fleet::Instance::start("app").await;
    let gate = crate::fleet::Gate::start(&reloadable_config(
        &upstream.url(),
        "{ requests: 3, per: 1h, by: route }",
        false,
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(gate.get("/thing").await.status(), 200);
    }
    assert_eq!(gate.get("/thing").await.status(), 429);

    crate::fleet::write_atomically(
        &gate.config,
        &reloadable_config(&upstream.url(), "{ requests: 3, per: 1h, by: route }", true),
    );
    gate.reloader.reload("test").unwrap();
    assert_eq!(gate.get("/other").await.status(), 200, "the reload applied");
    assert_eq!(
        gate.get("/thing").await.status(),
        429,
        "an unchanged policy keeps its count across a reload"
    );

    crate::fleet::write_atomically(
        &gate.config,
        &reloadable_config(&upstream.url(), "{ requests: 5, per: 1h, by: route }", true),
    );
    gate.reloader.reload("test").unwrap();
    let after: Vec<u16> = futures_util::future::join_all((0..4).map(|_| gate.get("/thing")))
        .await
        .iter()
        .map(|response| response.status().as_u16())
        .collect();
    assert_eq!(
        after.iter().filter(|status| **status == 200).count(),
        2,
        "a quota raised to 5, the 3 already spent still count: {after:?}"
    );
    assert_eq!(
        header(&gate.get("/thing").await, "ratelimit-policy"),
        "\"p\";q=5;w=3600"
    );
}

#[tokio::test]
async fn the_login_takes_a_policy_by_address_refusing_before_any_password_is_checked() {
    let app = spawn_app_with(|config| {
        let config = config
            .replacen(
                "routes:\n",
                "rate_limits:\n  login-ip: { requests: 3, per: 1h, by: ip }\nroutes:\n",
                1,
            )
            .replacen("auth:\n", "auth:\n  rate_limit: [login-ip]\n", 1);
        assert!(config.contains("rate_limit: [login-ip]"));
        config
    })
    .await;
    let first = app.login("admin", "wrong").await;
    assert_eq!(first.status(), 401);
    assert_eq!(
        header(&first, "ratelimit-policy"),
        "\"login-ip\";q=3;w=3600",
        "the login's answers name its policy"
    );
    assert_eq!(remaining(&header(&first, "ratelimit")), 2);
    assert_eq!(app.login("admin", "wrong").await.status(), 401);
    assert_eq!(app.login("admin", "a").await.status(), 200);
    let refused = app.login("admin", "a").await;
    let body = assert_problem(refused, 429).await;
    assert_eq!(body["type"], QUOTA_EXCEEDED);
    assert_eq!(body["violated-policies"], serde_json::json!(["login-ip"]));
}

#[tokio::test]
async fn the_gateways_own_refusals_on_a_limited_route_carry_the_headers_because_it_was_counted() {
    let app = spawn_app_with(|config| {
        config
            .replace(
                r#"{ path: /api/dead, methods: [GET, POST], service: dead, to: /, auth: public }"#,
                r#"{ path: /api/dead, methods: [GET, POST], service: dead, to: /, auth: public, rate_limit: [per-ip] }"#,
            )
            .replacen(
                "routes:\n",
                "rate_limits:\n  per-ip: { requests: 3, per: 1h, by: ip }\nroutes:\n",
                1,
            )
    })
    .await;
    let dead = app.get("/api/dead", None).await;
    assert!(
        [502, 503, 504].contains(&dead.status().as_u16()),
        "{}",
        dead.status()
    );
    assert_eq!(header(&dead, "ratelimit-policy"), "\"per-ip\";q=3;w=3600");
    assert!(
        header(&dead, "ratelimit").starts_with("\"per-ip\";r=2;"),
        "the failed request was counted, and says so: {:?}",
        header(&dead, "ratelimit")
    );
    app.get("/api/dead", None).await;
    let last = app.get("/api/dead", None).await;
    assert!(header(&last, "ratelimit").starts_with("\"per-ip\";r=0;"));
    let refused = app.get("/api/dead", None).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        "\"per-ip\";q=3;w=3600"
    );
    assert!(header(&refused, "ratelimit").starts_with("\"per-ip\";r=0;"));
    assert!(!header(&refused, "retry-after").is_empty());
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_counted_by_an_address_policy_before_any_token_is_verified() {
    let app = app_with_limits(
        "  per-ip: { requests: 5, per: 1h, by: ip }\n  per-user: { requests: 100, per: 1h, by: user }",
        "per-ip, per-user",
        "",
    )
    .await;
    let mut statuses = Vec::new();
    for n in 0..10 {
        let response = app
            .get("/api/echo/x", Some(&format!("garbage.token.{n}")))
            .await;
        if response.status() == 401 {
            assert!(
                header(&response, "ratelimit").starts_with("\"per-ip\";"),
                "a counted 401 says what is left: {:?}",
                header(&response, "ratelimit")
            );
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429, 429, 429]);
    let token = user(&app, "honest").await;
    let same_address = app.get("/api/echo/x", Some(&token)).await;
    assert_eq!(
        same_address.status(),
        429,
        "the address spent its quota, whoever it is now"
    );
    let body = assert_problem(same_address, 429).await;
    assert_eq!(body["violated-policies"], serde_json::json!(["per-ip"]));
}
