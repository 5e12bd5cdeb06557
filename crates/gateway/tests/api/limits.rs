//! The rate limiter on Redis: the Lua script's arithmetic is the memory buckets' (the GCRA unit
//! tests pin the memory side with an injected clock; Redis keeps its own, so these use windows
//! far from the test's duration). Runs when `GATEHOUSE_TEST_REDIS` names a Redis.

use gateway::limit::{bucket_key, Limiter, Rate, Subject};
use gateway::state::{RedisOptions, Replicated, StateSettings};
use kit::observe::Metrics;

const SECOND: u64 = 1_000_000;

#[tokio::test]
async fn on_redis_after_a_reload_relaxes_a_policy_the_old_window_holds_nobody() {
    let Some(url) = std::env::var("GATEHOUSE_TEST_REDIS")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("GATEHOUSE_TEST_REDIS is not set: the Redis limiter test checks nothing");
        return;
    };
    let shared = Replicated::connect(&StateSettings::Redis {
        url: url.into(),
        prefix: format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple()),
        options: RedisOptions::default(),
    })
    .await
    .unwrap();
    let limiter = Limiter::new(&Metrics::default());
    let key = bucket_key("p", "/api/time", Subject::User("alice"));
    let hourly = [(key.clone(), Rate::new(3600 * SECOND / 10, 10))];
    for _ in 0..10 {
        let decision = limiter.decide(&shared, &hourly).await;
        assert!(decision.allowed() && !decision.degraded, "{decision:?}");
    }
    let held = limiter.decide(&shared, &hourly).await;
    assert!(!held.allowed());
    assert!(held.verdicts[0].window_secs() > 300, "{held:?}");

    let relaxed = [(key, Rate::new(SECOND / 10, 10))];
    let refused = limiter.decide(&shared, &relaxed).await;
    assert!(!refused.degraded);
    assert!(!refused.allowed(), "empty under the new policy as well");
    assert!(
        refused.verdicts[0].window_secs() <= 1,
        "Retry-After of the new policy, not the old hour: {refused:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if limiter.decide(&shared, &relaxed).await.allowed() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never passed under the relaxed policy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_replica_started_while_redis_is_down_takes_its_share_of_the_configured_fleet() {
    // Nothing listens on port 1: this replica never learns how many are live.
    let shared = Replicated::connect(&StateSettings::Redis {
        url: "redis://127.0.0.1:1".into(),
        prefix: "never".to_owned(),
        options: RedisOptions {
            expected_replicas: 4,
            ..RedisOptions::default()
        },
    })
    .await
    .unwrap();
    assert_eq!(shared.replicas(), 4);
    let limiter = Limiter::new(&Metrics::default());
    let key = bucket_key("p", "/api/time", Subject::Route);
    let buckets = [(key, Rate::new(3600 * SECOND / 8, 8))];
    let mut passed = 0;
    for _ in 0..20 {
        let decision = limiter.decide(&shared, &buckets).await;
        assert!(decision.degraded, "decided here: Redis never answered");
        passed += usize::from(decision.allowed());
    }
    assert_eq!(passed, 2, "a quarter of the burst, not the whole policy");
}
