//! Rate limits across gateway replicas on Redis: two processes count one log (the Lua script,
//! by Redis's clock), so a fleet allows the policy exactly, not the policy per replica; with
//! Redis killed each replica answers at once from its own logs at its share (no 5xx, still
//! 429s), and it counts on Redis again once Redis is back. Runs when `GATEHOUSE_TEST_REDIS`
//! names a Redis (CI sets it); the outage test starts a Redis of its own on a unix socket.

use std::time::Instant;

use serde_json::Value;

use crate::harness::redis::{eventually, redis_tests_enabled, TestRedis};
use crate::harness::replicas::replica_head;
use crate::harness::Instance;
use crate::harness::{start_replica, Replica};

/// A gateway configuration for replicas on `redis`, with one public route to `upstream`
/// taking `policy` (named `fleet`).
fn replica_config(
    dir: &std::path::Path,
    redis: &str,
    policy: &str,
    upstream: &str,
) -> std::path::PathBuf {
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        replica_head(&dir.join("data"), redis, ", probe_interval: 200ms, store_sync: 1h")
            + &format!(
                r#"services:
  users: {{ upstreams: ["http://127.0.0.1:9"], required: false }}
  app: {{ upstreams: ["{upstream}"], timeout: 10s }}
rate_limits:
  fleet: {policy}
routes:
  - {{ path: /api/thing, methods: [GET], service: app, to: /thing, auth: public, rate_limit: [fleet] }}
"#
            ),
    )
    .unwrap();
    config
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Counted {
    passed: usize,
    refused: usize,
    other: Vec<u16>,
}

/// Sends `count` GETs, in turn to each of `replicas`, `parallel` at a time.
async fn send(
    http: &reqwest::Client,
    replicas: &[&Replica],
    count: usize,
    parallel: usize,
) -> Counted {
    let mut counted = Counted::default();
    let urls: Vec<String> = (0..count)
        .map(|i| format!("{}/api/thing", replicas[i % replicas.len()].url))
        .collect();
    for batch in urls.chunks(parallel) {
        let answers = futures_util::future::join_all(
            batch
                .iter()
                .map(|url| async move { http.get(url).send().await.unwrap().status().as_u16() }),
        )
        .await;
        for status in answers {
            match status {
                200 => counted.passed += 1,
                429 => counted.refused += 1,
                other => counted.other.push(other),
            }
        }
    }
    counted
}

/// A replica's admin listener's answer to `path`, as text.
async fn admin_text(http: &reqwest::Client, replica: &Replica, path: &str) -> String {
    let response = http.get(format!("{}{path}", replica.admin)).send().await;
    response.unwrap().text().await.unwrap()
}

async fn readiness(http: &reqwest::Client, replica: &Replica) -> Value {
    serde_json::from_str(&admin_text(http, replica, "/readyz").await).unwrap()
}

#[tokio::test]
async fn two_replicas_on_one_redis_allow_the_policy_once_not_once_each() {
    let Some(redis) = std::env::var("GATEHOUSE_TEST_REDIS")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!(
            "GATEHOUSE_TEST_REDIS is not set: the two-replica rate-limit test checks nothing"
        );
        return;
    };
    let http = reqwest::Client::new();
    // Exact when the 200 fit in the window; a run that took longer says so and starts again
    // with new replicas (and a new key prefix: a fresh count).
    for attempt in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let upstream = Instance::start("app").await;
        let config = replica_config(
            dir.path(),
            &redis,
            "{ requests: 50, per: 10s, by: route }",
            &upstream.url(),
        );
        let first = start_replica(&config, &http).await;
        let second = start_replica(&config, &http).await;

        let started = Instant::now();
        let counted = send(&http, &[&first, &second], 200, 50).await;
        let elapsed = started.elapsed();
        if elapsed >= std::time::Duration::from_secs(10) {
            eprintln!(
                "attempt {attempt}: 200 requests took {elapsed:?}, more than the window: again"
            );
            continue;
        }
        assert_eq!(counted.other, Vec::<u16>::new(), "only 200 and 429");
        eprintln!(
            "two replicas on one Redis: {} of 200 passed in {elapsed:?}",
            counted.passed
        );
        assert_eq!(
            (counted.passed, counted.refused),
            (50, 150),
            "the replicas share one window: 50, not 50 each"
        );
        assert_eq!(upstream.hits(), 50, "every refusal stayed at the gateway");
        return;
    }
    panic!("no run of 200 requests fit in the 10 s window on this machine");
}

#[tokio::test]
async fn with_redis_killed_each_replica_limits_at_its_share_without_a_5xx_and_shares_again_when_it_returns(
) {
    if !redis_tests_enabled() {
        return;
    }
    let mut redis = TestRedis::started().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = Instance::start("app").await;
    // 20 an hour for the whole route: nothing refills while the test runs.
    let config = replica_config(
        dir.path(),
        &redis.url(),
        "{ requests: 20, per: 1h, by: route }",
        &upstream.url(),
    );
    let http = reqwest::Client::new();
    let first = start_replica(&config, &http).await;
    let second = start_replica(&config, &http).await;
    for replica in [&first, &second] {
        assert!(
            eventually(std::time::Duration::from_secs(10), || async {
                readiness(&http, replica).await["replicas"] == 2
            })
            .await,
            "each replica learns there are two"
        );
    }
    let shared = send(&http, &[&first, &second], 10, 1).await;
    assert_eq!(shared.passed, 10, "{shared:?}");

    redis.kill();
    let degraded = send(&http, &[&first, &second], 40, 4).await;
    assert_eq!(
        degraded.other,
        Vec::<u16>::new(),
        "Redis down is never a 5xx"
    );
    assert_eq!(
        degraded.passed, 20,
        "each of the two replicas allows half the policy on its own (20 ÷ 2): {degraded:?}"
    );
    for replica in [&first, &second] {
        let metrics = admin_text(&http, replica, "/metrics").await;
        assert!(
            metrics.contains(r#"gatehouse_rate_limit_decisions_total{outcome="refused",reason="limiter_degraded"} 10"#),
            "the degraded decisions are counted: {metrics}"
        );
        assert_eq!(readiness(&http, replica).await["state"], "down-degraded");
    }

    // Back, and empty (no persistence): one shared bucket of 20 again, not a replica's half.
    redis.start().await;
    for replica in [&first, &second] {
        assert!(
            eventually(std::time::Duration::from_secs(10), || async {
                readiness(&http, replica).await["state"] == "up"
            })
            .await,
            "the replica finds Redis back"
        );
    }
    let again = send(&http, &[&first], 30, 1).await;
    assert_eq!(
        again.passed, 20,
        "one replica, counting on Redis again, allows the whole policy: {again:?}"
    );
    eprintln!("rate limits counted on Redis again after it came back");
}
