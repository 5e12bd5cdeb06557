//! The shared state backends: what one replica records, another sees. Memory always; Redis
//! when `GATEHOUSE_TEST_REDIS` names one (CI always gives it), failing rather than skipping if
//! it cannot be reached.

use std::future::ready;
use std::time::Duration;

use gateway::state::{RedisOptions, Replicated, Revocation, StateHealth, StateSettings};
use kit::testing::wait::within_patience;
use kit::testing::{wait_until, TestRedis};

fn redis_settings() -> Option<StateSettings> {
    let url = std::env::var("GATEHOUSE_TEST_REDIS")
        .ok()
        .filter(|u| !u.is_empty())?;
    Some(StateSettings::Redis {
        url: url.into(),
        prefix: format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple()),
        options: RedisOptions::default(),
    })
}

/// A timeout no test waits out: what the behaviour must not wait for is configured this long.
const FOREVER: Duration = Duration::from_secs(3600);

fn in_a_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60
}

#[tokio::test]
async fn memory_state_denies_cuts_off_and_counts() {
    let state = Replicated::connect(&StateSettings::Memory).await.unwrap();
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
    let one = Replicated::connect(&settings).await.unwrap();
    assert_eq!(
        one.health(),
        StateHealth::RedisUp,
        "GATEHOUSE_TEST_REDIS is set but Redis is unreachable"
    );
    let other = Replicated::connect(&settings).await.unwrap();

    one.deny("jti-1", in_a_minute()).await.unwrap();
    one.deny_session("session-1", in_a_minute()).await.unwrap();
    one.cut_off("alice", 5_000, Duration::from_secs(60))
        .await
        .unwrap();
    wait_until("the denial is published", || {
        ready(other.mirror().is_denied("jti-1"))
    })
    .await;
    wait_until("the cut-off is published", || {
        ready(other.mirror().cutoff("alice") == Some(5_000))
    })
    .await;
    wait_until("the session denial is published", || {
        ready(other.mirror().is_session_denied("session-1"))
    })
    .await;

    let late = Replicated::connect(&settings).await.unwrap();
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
async fn a_redis_url_that_cannot_be_parsed_is_an_error_at_start() {
    let settings = StateSettings::Redis {
        url: "http://127.0.0.1:6379".into(),
        prefix: "x".into(),
        options: RedisOptions::default(),
    };
    let error = Replicated::connect(&settings)
        .await
        .err()
        .expect("not a Redis URL");
    assert!(
        format!("{error:#}").contains("invalid Redis URL"),
        "{error:#}"
    );
}

#[tokio::test]
async fn a_replica_started_while_redis_is_down_serves_degraded_and_joins_when_it_comes_up() {
    if redis_settings().is_none() {
        eprintln!("GATEHOUSE_TEST_REDIS is not set: the late Redis test checks nothing");
        return;
    }
    // Its URL is known before it runs: a socket in the test's own directory, which no parallel
    // test can take while it is down.
    let mut redis = TestRedis::stopped();
    let settings = StateSettings::Redis {
        url: redis.url().into(),
        prefix: "late".to_owned(),
        options: RedisOptions {
            probe_interval: Duration::from_millis(100),
            // Far past the test's patience: a start that waited for Redis, or for a connect
            // timeout, would never return within it.
            connect: FOREVER,
            ..RedisOptions::default()
        },
    };
    let window = Duration::from_secs(60);

    let early = within_patience("starting", Replicated::connect(&settings))
        .await
        .expect("a Redis that does not answer is no reason not to start");
    assert_eq!(
        early.health(),
        StateHealth::RedisDown,
        "/readyz shows down-degraded"
    );
    assert_eq!(
        early.record_failure("login:user:bob", window).await.count,
        1,
        "sign-ins are counted on this replica"
    );
    early.deny("jti-early", in_a_minute()).await.unwrap();
    assert!(early.mirror().is_denied("jti-early"), "holds here at once");

    redis.start().await;
    wait_until("the replica takes Redis up once it answers", || {
        ready(early.health() == StateHealth::RedisUp)
    })
    .await;
    let other = Replicated::connect(&settings).await.unwrap();
    assert_eq!(other.health(), StateHealth::RedisUp);
    wait_until(
        "what was revoked while Redis was down is published once it answers",
        || ready(other.mirror().is_denied("jti-early")),
    )
    .await;
    other.deny("jti-late", in_a_minute()).await.unwrap();
    wait_until("the replica subscribed once Redis answered", || {
        ready(early.mirror().is_denied("jti-late"))
    })
    .await;
    assert_eq!(
        early.record_failure("login:user:carol", window).await.count,
        1
    );
    assert_eq!(
        other.record_failure("login:user:carol", window).await.count,
        2,
        "the replica counts in Redis once it answers"
    );
}

#[tokio::test]
async fn a_revocation_that_could_not_be_published_reaches_a_subscribed_replica_through_the_store() {
    let Some(StateSettings::Redis { url, prefix, .. }) = redis_settings() else {
        eprintln!("GATEHOUSE_TEST_REDIS is not set: the partition test checks nothing");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store =
        gateway::store::Store::connect(&format!("sqlite://{}/data/store.db", dir.path().display()))
            .await
            .unwrap();
    let options = RedisOptions {
        probe_interval: Duration::from_millis(200),
        store_sync: Duration::from_millis(100),
        ..RedisOptions::default()
    };
    // The revoking replica reaches only a Redis that dies; the other stays subscribed to its own.
    let cut_off = TestRedis::started().await;
    let revoking = Replicated::connect_with_store(
        &StateSettings::Redis {
            url: cut_off.url().into(),
            prefix: prefix.clone(),
            // A revocation that waited for a reconnect or an answer would never return.
            options: RedisOptions {
                connect: FOREVER,
                command: FOREVER,
                ..options
            },
        },
        store.clone(),
    )
    .await
    .unwrap();
    let other = std::sync::Arc::new(
        Replicated::connect_with_store(
            &StateSettings::Redis {
                url,
                prefix,
                options,
            },
            store,
        )
        .await
        .unwrap(),
    );
    let following = std::sync::Arc::clone(&other);
    let follower = tokio::spawn(async move { following.follow_store().await });
    drop(cut_off);

    let reach = within_patience(
        "revoking",
        revoking.revoke(Revocation::Token {
            jti: "jti-partitioned".to_owned(),
            until: in_a_minute(),
        }),
    )
    .await
    .unwrap();
    assert!(
        !reach.published && reach.shared(),
        "{reach:?}: in the store, not in Redis"
    );
    assert!(
        revoking.mirror().is_denied("jti-partitioned"),
        "at once on its replica"
    );
    assert_eq!(revoking.health(), StateHealth::RedisDown);
    wait_until("the other replica reads it from the store", || {
        ready(other.mirror().is_denied("jti-partitioned"))
    })
    .await;
    follower.abort();
}

/// Blocks `redis` for `seconds` (`DEBUG SLEEP`): connections stay open, answers come late.
async fn stall(redis: &TestRedis, seconds: f64) -> tokio::task::JoinHandle<()> {
    let client = redis::Client::open(redis.url()).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    // Connected before the stall, which would hold up the connection's own handshake.
    let probe = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_millis(20))),
        )
        .await
        .unwrap();
    let stalled = tokio::spawn(async move {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(seconds)
            .query_async::<()>(&mut connection)
            .await
            .unwrap();
    });
    // The DEBUG SLEEP has reached the server once a PING on the other connection goes
    // unanswered; only then is anything else sent.
    wait_until("the Redis server to stall", || {
        let mut probe = probe.clone();
        async move {
            redis::cmd("PING")
                .query_async::<()>(&mut probe)
                .await
                .is_err()
        }
    })
    .await;
    stalled
}

#[tokio::test]
async fn one_slow_answer_does_not_trip_the_breaker_but_timeouts_in_a_row_do() {
    if redis_settings().is_none() {
        eprintln!("GATEHOUSE_TEST_REDIS is not set: the slow Redis test checks nothing");
        return;
    }
    let redis = TestRedis::started().await;
    let state = Replicated::connect(&StateSettings::Redis {
        url: redis.url().into(),
        prefix: "slow".to_owned(),
        options: RedisOptions {
            command: Duration::from_millis(100),
            // The breaker stays as the test left it while it looks.
            probe_interval: Duration::from_secs(60),
            ..RedisOptions::default()
        },
    })
    .await
    .unwrap();
    let window = Duration::from_secs(60);

    let stalled = stall(&redis, 0.5).await;
    state.record_failure("login:user:alice", window).await;
    assert_eq!(
        state.health(),
        StateHealth::RedisUp,
        "one command that timed out leaves Redis in use"
    );
    stalled.await.unwrap();
    state.record_failure("login:user:alice", window).await;
    assert_eq!(state.health(), StateHealth::RedisUp);

    let stalled = stall(&redis, 1.0).await;
    for _ in 1..gateway::state::TIMEOUTS_TO_TRIP {
        state.record_failure("login:user:alice", window).await;
        assert_eq!(
            state.health(),
            StateHealth::RedisUp,
            "an answer in between started the count again"
        );
    }
    state.record_failure("login:user:alice", window).await;
    assert_eq!(
        state.health(),
        StateHealth::RedisDown,
        "{} timeouts in a row take Redis as down",
        gateway::state::TIMEOUTS_TO_TRIP
    );
    stalled.await.unwrap();
}

#[tokio::test]
async fn with_redis_down_each_replica_allows_its_share_of_a_limit_and_carries_its_count_over() {
    if redis_settings().is_none() {
        eprintln!("GATEHOUSE_TEST_REDIS is not set: the throttle share test checks nothing");
        return;
    }
    let redis = TestRedis::started().await;
    let settings = StateSettings::Redis {
        url: redis.url().into(),
        prefix: "share".to_owned(),
        options: RedisOptions {
            probe_interval: Duration::from_millis(100),
            ..RedisOptions::default()
        },
    };
    let one = Replicated::connect(&settings).await.unwrap();
    let other = Replicated::connect(&settings).await.unwrap();
    wait_until("each replica to learn how many are live", || {
        ready(one.replicas() == 2 && other.replicas() == 2)
    })
    .await;
    let (limit, window) = (4, Duration::from_secs(60));
    for expected in 1..=3 {
        let counted = one.record_failure("login:user:mallory", window).await;
        assert_eq!(counted.count, expected, "counted in Redis");
        assert!(!counted.exceeds(limit));
    }

    drop(redis);
    let next = one.record_failure("login:user:mallory", window).await;
    assert_eq!(one.health(), StateHealth::RedisDown);
    assert!(
        next.exceeds(limit),
        "{next:?}: the replica carries on from the count it last saw, not from zero"
    );
    let mut allowed = 0;
    while !other
        .record_failure("login:user:mallory", window)
        .await
        .exceeds(limit)
    {
        allowed += 1;
        assert!(allowed <= limit, "never more than the limit");
    }
    assert_eq!(
        allowed, 2,
        "each of the two replicas allows its half of the limit while Redis is down"
    );
    assert_eq!(other.health(), StateHealth::RedisDown);
}
