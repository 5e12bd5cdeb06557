//! The rate limiter on Redis: the Lua script decides as the memory logs do (the unit tests pin
//! the memory side with an injected clock; Redis keeps its own, so these either use windows far
//! longer than the test, or say so and try again when a run outlasted its window). Runs when
//! `GATEHOUSE_TEST_REDIS` names a Redis.

use std::time::Instant;

use gateway::limit::{bucket_key, Limit, Limiter, Subject};
use gateway::state::{RedisOptions, Replicated, StateSettings};
use kit::observe::Metrics;
use kit::testing::wait::wait_until;

const SECOND: u64 = 1_000_000;
const HOUR: u64 = 3600 * SECOND;

/// A connection to the test Redis under a prefix of its own, or `None` (said) without one.
async fn redis() -> Option<Replicated> {
    let Some(url) = std::env::var("GATEHOUSE_TEST_REDIS")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("GATEHOUSE_TEST_REDIS is not set: the Redis limiter test checks nothing");
        return None;
    };
    let shared = Replicated::connect(&StateSettings::Redis {
        url: url.into(),
        prefix: format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple()),
        options: RedisOptions::default(),
    })
    .await
    .unwrap();
    Some(shared)
}

#[tokio::test]
async fn on_redis_thirty_requests_within_the_window_pass_exactly_ten_counting_down() {
    let Some(shared) = redis().await else { return };
    let limiter = Limiter::new(&Metrics::default());
    for attempt in 0..5 {
        let key = bucket_key("p", "/api/time", Subject::User(&format!("alice-{attempt}")));
        let policy = [(key, Limit::new(10, SECOND, 10))];
        let started = Instant::now();
        let mut decisions = Vec::new();
        for _ in 0..30 {
            decisions.push(limiter.decide(&shared, &policy).await);
        }
        let elapsed = started.elapsed();
        if elapsed.as_micros() >= u128::from(SECOND) {
            eprintln!("30 decisions took {elapsed:?}, longer than the window: trying again");
            continue;
        }
        assert!(decisions.iter().all(|decision| !decision.degraded));
        let remaining: Vec<u64> = decisions
            .iter()
            .filter(|decision| decision.allowed())
            .map(|decision| decision.verdicts[0].remaining)
            .collect();
        assert_eq!(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        for refused in decisions.iter().filter(|decision| !decision.allowed()) {
            assert_eq!(refused.verdicts[0].window_secs(), 1, "{refused:?}");
        }
        return;
    }
    panic!("no run of 30 decisions fit in one second");
}

#[tokio::test]
async fn on_redis_a_burst_below_the_quota_smooths_at_the_policy_rate() {
    let Some(shared) = redis().await else { return };
    let limiter = Limiter::new(&Metrics::default());
    let key = bucket_key("p", "/api/time", Subject::Route);
    // 10 an hour, 2 at once: then one per 6 minutes.
    let policy = [(key, Limit::new(10, HOUR, 2))];
    let first = limiter.decide(&shared, &policy).await;
    assert_eq!((first.allowed(), first.verdicts[0].remaining), (true, 1));
    assert!(limiter.decide(&shared, &policy).await.allowed());
    let third = limiter.decide(&shared, &policy).await;
    assert!(!third.allowed());
    assert_eq!(third.verdicts[0].window_secs(), 360, "{third:?}");
}

#[tokio::test]
async fn on_redis_after_a_reload_relaxes_a_policy_the_old_window_holds_nobody() {
    let Some(shared) = redis().await else { return };
    let limiter = Limiter::new(&Metrics::default());
    let key = bucket_key("p", "/api/time", Subject::User("alice"));
    let hourly = [(key.clone(), Limit::new(10, HOUR, 10))];
    for _ in 0..10 {
        let decision = limiter.decide(&shared, &hourly).await;
        assert!(decision.allowed() && !decision.degraded, "{decision:?}");
    }
    let held = limiter.decide(&shared, &hourly).await;
    assert!(!held.allowed());
    assert!(held.verdicts[0].window_secs() > 3500, "{held:?}");

    let tightened = [(key.clone(), Limit::new(3, HOUR, 3))];
    let still = limiter.decide(&shared, &tightened).await;
    assert!(!still.allowed(), "a tightened policy holds too");

    let relaxed = [(key, Limit::new(10, SECOND, 10))];
    passes_within_a_second(&limiter, &shared, &relaxed).await;
}

/// A caller held by a stricter policy before a reload: under `relaxed` a retry is due within
/// a second (its own window or interval, not the old one's), and then passes.
async fn passes_within_a_second(
    limiter: &Limiter,
    shared: &Replicated,
    relaxed: &[(String, Limit)],
) {
    let refused = limiter.decide(shared, relaxed).await;
    if !refused.allowed() {
        assert_eq!(refused.verdicts[0].window_secs(), 1, "{refused:?}");
    }
    wait_until("a pass under the relaxed policy", || async {
        limiter.decide(shared, relaxed).await.allowed()
    })
    .await;
}

#[tokio::test]
async fn on_redis_a_smoothing_tat_left_by_a_stricter_policy_holds_nobody_after_a_reload() {
    let Some(shared) = redis().await else { return };
    let limiter = Limiter::new(&Metrics::default());
    let key = bucket_key("p", "/api/time", Subject::User("bob"));
    let slow = [(key.clone(), Limit::new(10, HOUR, 1))];
    assert!(limiter.decide(&shared, &slow).await.allowed());
    // One a second now: a retry waits one new interval, not the old six minutes.
    let relaxed = [(key, Limit::new(3600, HOUR, 1))];
    passes_within_a_second(&limiter, &shared, &relaxed).await;
}

#[tokio::test]
async fn a_key_left_by_the_gcra_build_is_replaced_not_a_wrongtype_error_every_time() {
    let Some(shared) = redis().await else { return };
    let limiter = Limiter::new(&Metrics::default());
    let key = bucket_key("p", "/api/time", Subject::User("upgraded"));
    let url = std::env::var("GATEHOUSE_TEST_REDIS").unwrap();
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // What the GCRA limiter stored under the same name: a string (its theoretical arrival time).
    let stored = format!("{}:{key}", shared.redis_prefix().unwrap());
    let _: () = redis::cmd("SET")
        .arg(&stored)
        .arg("1700000000000000")
        .query_async(&mut connection)
        .await
        .unwrap();
    let policy = [(key, Limit::new(10, HOUR, 10))];
    let first = limiter.decide(&shared, &policy).await;
    assert!(!first.degraded, "decided on Redis, not locally: {first:?}");
    assert_eq!((first.allowed(), first.verdicts[0].remaining), (true, 9));
    let kind: String = redis::cmd("TYPE")
        .arg(&stored)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(kind, "list");
}
