//! Several instances per service: an instance that dies, hangs, fails or restarts costs the
//! clients (almost) nothing; retries never repeat what may not be repeated; no healthy instance
//! is an honest 503 at once.

use std::time::Duration;

use serde_json::Value;

use crate::harness::assert_problem;
use crate::harness::{config_head, wait_for, Gate, Instance, Load, Mode};

/// A service `pool` of `instances` behind public routes: GET and POST on `/api/pool/{*rest}`,
/// `service` settings added as written.
fn pool_config(instances: &[&Instance], service: &str, route_timeout: &str) -> String {
    let upstreams: Vec<String> = instances
        .iter()
        .map(|i| format!("\"{}\"", i.url()))
        .collect();
    format!(
        "{head}  pool: {{ upstreams: [{upstreams}], timeout: 10s, connect_timeout: 2s{service} }}\n\
         routes:\n  - {{ path: \"/api/pool/{{*rest}}\", methods: [GET, POST], service: pool, to: \"/{{rest}}\", auth: public, timeout: {route_timeout} }}\n",
        head = config_head("off"),
        upstreams = upstreams.join(", "),
    )
}

#[tokio::test]
async fn a_killed_instance_costs_no_request_and_rejoins_when_it_is_back() {
    let mut a = Instance::start("a").await;
    let b = Instance::start("b").await;
    let gate = Gate::start(&pool_config(
        &[&a, &b],
        ", health: { path: /healthz, interval: 200ms, timeout: 2s, healthy: 1, unhealthy: 2 }, breaker: { failures: 3, backoff: 1s }",
        "10s",
    ))
    .await;
    let ready = wait_for("the first health checks", || async {
        let (status, ready) = gate.readiness().await;
        (status == 200).then_some(ready)
    })
    .await;
    assert_eq!(ready["services"]["pool"]["healthy"], 2, "{ready}");

    let load = Load::start(format!("{}/api/pool/items", gate.url), 4);
    wait_for("traffic on both instances", || async {
        (a.hits() >= 20 && b.hits() >= 20).then_some(())
    })
    .await;
    let before_kill = load.tally();

    a.kill().await;
    let b_at_kill = b.hits();
    wait_for("200 more requests answered by b alone", || async {
        (b.hits() >= b_at_kill + 200).then_some(())
    })
    .await;
    wait_for("readiness to count a out", || async {
        let (_, ready) = gate.readiness().await;
        (ready["services"]["pool"]["healthy"] == 1).then_some(())
    })
    .await;
    let after_kill = load.tally();

    a.restart().await;
    let a_back = a.hits();
    wait_for("a to receive traffic again", || async {
        (a.hits() >= a_back + 20).then_some(())
    })
    .await;
    let tally = load.finish().await;

    let killed_window = after_kill.failures.len() - before_kill.failures.len();
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed ({} while a was down): {:?}",
        tally.failures.len(),
        tally.ok + tally.failures.len(),
        killed_window,
        tally.failures
    );
    eprintln!(
        "killed instance: 0 failed requests of {} (a answered {}, b {})",
        tally.ok,
        tally.by_instance.get("a").unwrap_or(&0),
        tally.by_instance.get("b").unwrap_or(&0)
    );
    let (_, ready) = gate.readiness().await;
    assert_eq!(
        ready["services"]["pool"]["healthy"], 2,
        "a is back: {ready}"
    );
}

#[tokio::test]
async fn a_rolling_restart_of_both_instances_under_load_loses_no_request() {
    let mut a = Instance::start("a").await;
    let mut b = Instance::start("b").await;
    let gate = Gate::start(&pool_config(
        &[&a, &b],
        ", balance: least_requests, health: { path: /healthz, interval: 200ms, timeout: 2s, healthy: 1, unhealthy: 2 }, breaker: { failures: 3, backoff: 1s }",
        "10s",
    ))
    .await;
    let load = Load::start(format!("{}/api/pool/items", gate.url), 4);
    restart(&gate, &mut a, &b).await;
    restart(&gate, &mut b, &a).await;
    let tally = load.finish().await;
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed during the rolling restart: {:?}",
        tally.failures.len(),
        tally.ok + tally.failures.len(),
        tally.failures
    );
    eprintln!("rolling restart: 0 failed requests of {}", tally.ok);
}

/// Stops `stopping` gracefully under load, waits for `other` to carry the traffic, starts it
/// again and waits until it gets traffic: one step of a rolling restart.
async fn restart(gate: &Gate, stopping: &mut Instance, other: &Instance) {
    // Both serve before one goes down, as a rollout waits for readiness.
    wait_for("both instances healthy", || async {
        let (_, ready) = gate.readiness().await;
        (ready["services"]["pool"]["healthy"] == 2).then_some(())
    })
    .await;
    let (other_hits, stopping_hits) = (other.hits(), stopping.hits());
    wait_for("traffic on both instances", || async {
        (other.hits() > other_hits + 20 && stopping.hits() > stopping_hits + 20).then_some(())
    })
    .await;
    stopping.stop().await;
    let other_at_stop = other.hits();
    wait_for("100 requests on the other instance", || async {
        (other.hits() >= other_at_stop + 100).then_some(())
    })
    .await;
    stopping.restart().await;
    let back = stopping.hits();
    wait_for("the restarted instance to get traffic", || async {
        (stopping.hits() >= back + 20).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_post_without_idempotency_key_is_never_retried_and_one_with_a_key_is() {
    let mut a = Instance::start("a").await;
    let b = Instance::start("b").await;
    a.set_mode(Mode::Unavailable);
    // The breaker stays closed throughout, so a keeps getting its turn.
    let gate = Gate::start(&pool_config(
        &[&a, &b],
        ", balance: round_robin, breaker: { failures: 1000 }",
        "10s",
    ))
    .await;
    let post = |key: Option<&str>| {
        let mut request = gate
            .http
            .post(format!("{}/api/pool/orders", gate.url))
            .body("{}");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };

    let mut refused = 0;
    for _ in 0..10 {
        match post(None).await.unwrap().status().as_u16() {
            200 => {}
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(a.posts() + b.posts(), 10, "each POST ran exactly once");
    assert_eq!(refused, a.posts(), "a's 503s reached the client unretried");
    assert!(refused > 0, "round robin gave a its turns");

    for i in 0..10 {
        let key = format!("order-{i}");
        assert_eq!(
            post(Some(&key)).await.unwrap().status(),
            200,
            "a keyed POST is retried"
        );
    }
    assert_eq!(b.posts(), 10 - refused + 10, "b ran every keyed POST once");

    // Even a connection failure is not retried: the contract repeats only what may repeat.
    a.kill().await;
    let (a_before, b_before) = (a.posts(), b.posts());
    let mut answered = 0;
    for _ in 0..10 {
        match post(None).await.unwrap().status().as_u16() {
            200 => answered += 1,
            503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(a.posts(), a_before);
    assert_eq!(
        b.posts() - b_before,
        answered,
        "b ran each answered POST once"
    );
    assert!(answered < 10, "the POSTs that met the dead instance failed");

    // A GET is retried on the other instance.
    for _ in 0..10 {
        assert_eq!(gate.answered_by("/api/pool/x").await, "b");
    }
}

#[tokio::test]
async fn a_hanging_instance_answers_504_then_the_breaker_stops_sending_to_it() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    a.set_mode(Mode::Hang);
    let gate = Gate::start(&pool_config(
        &[&a, &b],
        ", balance: round_robin, breaker: { failures: 3, backoff: 5m }",
        "1s",
    ))
    .await;

    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = gate.get("/api/pool/slow").await;
        let status = response.status().as_u16();
        if status == 504 {
            let body = assert_problem(response, 504).await;
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains("`pool`"), "{detail}");
            assert!(!detail.contains("127.0.0.1"), "{detail}");
        }
        statuses.push(status);
    }
    let timeouts = statuses.iter().filter(|s| **s == 504).count();
    assert_eq!(
        timeouts, 3,
        "the breaker opens after 3 timeouts in a row on a: {statuses:?}"
    );
    assert_eq!(a.hits(), 3, "nothing more reached the hanging instance");
    assert!(
        statuses[10..].iter().all(|s| *s == 200),
        "b answers the rest: {statuses:?}"
    );
}

#[tokio::test]
async fn with_every_instance_out_the_answer_is_503_at_once_and_readiness_shows_it() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    a.set_mode(Mode::Hang);
    b.set_mode(Mode::Hang);
    let gate = Gate::start(&pool_config(
        &[&a, &b],
        ", breaker: { failures: 1, backoff: 5m }",
        "500ms",
    ))
    .await;
    assert_problem(gate.get("/api/pool/x").await, 504).await;
    assert_problem(gate.get("/api/pool/x").await, 504).await;
    assert_eq!(a.hits() + b.hits(), 2);

    let response = gate.get("/api/pool/x").await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after > 60,
        "Retry-After tells when a back-off ends: {retry_after}"
    );
    let body = assert_problem(response, 503).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("`pool`") && !detail.contains("127.0.0.1"),
        "{detail}"
    );
    assert_eq!(
        a.hits() + b.hits(),
        2,
        "no instance was tried: no waiting for a timeout"
    );

    // The gateway itself can serve: one service's outage must not take every replica out.
    let (status, ready): (u16, Value) = gate.readiness().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["services"]["pool"]["healthy"], 0, "{ready}");
    assert_eq!(ready["services"]["pool"]["instances"], 2, "{ready}");
    assert_eq!(ready["services"]["users"]["required"], false, "{ready}");
}

#[tokio::test]
async fn a_service_that_is_not_required_does_not_make_the_gateway_unready() {
    let a = Instance::start("a").await;
    a.set_mode(Mode::Hang);
    let gate = Gate::start(&pool_config(
        &[&a],
        ", required: false, breaker: { failures: 1, backoff: 5m }",
        "500ms",
    ))
    .await;
    assert_problem(gate.get("/api/pool/x").await, 504).await;
    let (status, ready) = gate.readiness().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["services"]["pool"]["healthy"], 0, "{ready}");
}

#[tokio::test]
async fn least_requests_sends_new_requests_away_from_a_slow_instance() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    a.set_delay(Duration::from_millis(300));
    let gate = Gate::start(&pool_config(&[&a, &b], ", balance: least_requests", "10s")).await;
    let load = Load::start(format!("{}/api/pool/x", gate.url), 8);
    wait_for("400 requests", || async {
        (a.hits() + b.hits() >= 400).then_some(())
    })
    .await;
    let tally = load.finish().await;
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert!(
        b.hits() > 4 * a.hits(),
        "the fast instance takes most requests: a {} b {}",
        a.hits(),
        b.hits()
    );
}
