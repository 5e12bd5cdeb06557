//! The shared state backends: what one replica records, another sees. Memory always; Redis
//! when `GATEHOUSE_TEST_REDIS` names one (CI always gives it), failing rather than skipping if
//! it cannot be reached.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gateway::state::{RedisTimeouts, SharedState, StateSettings};

fn redis_settings() -> Option<StateSettings> {
    let url = std::env::var("GATEHOUSE_TEST_REDIS")
        .ok()
        .filter(|u| !u.is_empty())?;
    Some(StateSettings::Redis {
        url,
        prefix: format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple()),
        timeouts: RedisTimeouts::default(),
    })
}

async fn until(deadline: Duration, check: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check()
}

fn in_a_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60
}

#[tokio::test]
async fn memory_state_denies_cuts_off_and_counts() {
    let state = SharedState::connect(&StateSettings::Memory).await.unwrap();
    state.deny("jti-1", in_a_minute()).await.unwrap();
    assert!(state.mirror().is_denied("jti-1"));
    state
        .cut_off("alice", 1_000, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(state.mirror().is_revoked("other", None, "alice", 999));
    state.deny_session("s-1", in_a_minute()).await.unwrap();
    assert!(state.mirror().is_session_denied("s-1"));
    assert_eq!(
        state
            .record_failure("k", Duration::from_secs(60))
            .await
            .count,
        1
    );
    assert_eq!(
        state
            .record_failure("k", Duration::from_secs(60))
            .await
            .count,
        2
    );
    state.clear_failures("k").await;
    assert_eq!(state.failures("k").await.count, 0);
}

#[tokio::test]
async fn a_revocation_recorded_by_one_replica_reaches_the_other_through_redis() {
    let Some(settings) = redis_settings() else {
        eprintln!("GATEHOUSE_TEST_REDIS is not set: the Redis state test checks nothing");
        return;
    };
    let one = SharedState::connect(&settings)
        .await
        .expect("GATEHOUSE_TEST_REDIS is set but Redis is unreachable");
    let other = SharedState::connect(&settings).await.unwrap();

    one.deny("jti-1", in_a_minute()).await.unwrap();
    one.deny_session("session-1", in_a_minute()).await.unwrap();
    one.cut_off("alice", 5_000, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        until(Duration::from_secs(2), || other.mirror().is_denied("jti-1")).await,
        "the denial is published"
    );
    assert!(
        until(Duration::from_secs(2), || other.mirror().cutoff("alice")
            == Some(5_000))
        .await,
        "the cut-off is published"
    );
    assert!(
        until(Duration::from_secs(2), || other
            .mirror()
            .is_session_denied("session-1"))
        .await,
        "the session denial is published"
    );

    let late = SharedState::connect(&settings).await.unwrap();
    assert!(
        late.mirror().is_denied("jti-1"),
        "a replica that starts later loads what is in force"
    );
    assert_eq!(late.mirror().cutoff("alice"), Some(5_000));
    assert!(late.mirror().is_session_denied("session-1"));

    let window = Duration::from_secs(60);
    assert_eq!(one.record_failure("login:user:bob", window).await.count, 1);
    let counted = other.record_failure("login:user:bob", window).await;
    assert_eq!(counted.count, 2, "throttle counts are shared");
    assert!(counted.resets_in > Duration::ZERO && counted.resets_in <= window);
    one.forgive_failure("login:user:bob").await;
    assert_eq!(
        other.failures("login:user:bob").await.count,
        1,
        "a forgiven attempt is taken back"
    );
    other.clear_failures("login:user:bob").await;
    assert_eq!(one.failures("login:user:bob").await.count, 0);
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_at_start_not_later() {
    let settings = StateSettings::Redis {
        url: "redis://127.0.0.1:1".into(),
        prefix: "x".into(),
        timeouts: RedisTimeouts::default(),
    };
    let error = SharedState::connect(&settings)
        .await
        .err()
        .expect("nothing listens on port 1");
    assert!(format!("{error:#}").contains("Redis"), "{error:#}");
}
