//! Gateway replicas while their Redis fails: each test starts its own Redis (no persistence) on
//! a unix socket in its own directory, kills it and starts it again there. Redis down must cost no request a wait (login answers without waiting on Redis,
//! throttling counts on each replica, `/readyz` says `down-degraded` and stays ready), a logout
//! holds on its replica at once and on the others once Redis is back, and a replica started
//! after Redis lost everything still refuses a logged-out token (the store is the source of
//! truth). Runs when `GATEHOUSE_TEST_REDIS` is set (CI sets it), like the other Redis tests.

use serde_json::Value;

use crate::harness::redis::{redis_tests_enabled, TestRedis};
use crate::harness::replicas::Fleet;
use crate::harness::wait_until;

/// Health probes often, so a test need not wait for Redis to be seen back. `store_sync: 1h`:
/// no replica reads the store's new revocations on a timer here, so what reaches another
/// replica came through Redis (its republication, or the reload when its subscription returns).
/// Connect and command timeouts of an hour: a request that waited for one on the dead Redis
/// would never answer within the test's patience.
const STATE_OPTIONS: &str =
    ", probe_interval: 200ms, store_sync: 1h, connect_timeout: 1h, command_timeout: 1h";

/// Runs `request` while Redis is down: that it answers at all proves it did not wait for Redis
/// to come back (Redis stays down until the test starts it again).
async fn without_waiting_for_redis<T>(
    what: &str,
    request: impl std::future::Future<Output = T>,
) -> T {
    kit::testing::wait::within_patience(what, request).await
}

#[tokio::test]
async fn with_redis_killed_login_answers_at_once_and_a_logout_holds_on_every_replica() {
    if !redis_tests_enabled() {
        return;
    }
    let mut redis = TestRedis::started().await;
    let mut fleet = Fleet::new(&redis.url(), STATE_OPTIONS).await;
    let first = fleet.replica().await;
    let second = fleet.replica().await;
    let session: Value = fleet.login(&first, "test").await.json().await.unwrap();
    let access = session["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fleet.me(&second, &access).await, 200);
    assert_eq!(fleet.state_detail(&first).await.1, "up");

    redis.kill();
    for replica in [&first, &second, &first] {
        let login = without_waiting_for_redis("a sign-in", fleet.login(replica, "test")).await;
        assert_eq!(login.status(), 200, "sign-in works without Redis");
    }
    let (status, state) = fleet.state_detail(&first).await;
    assert_eq!(status, 200, "Redis down does not make the gateway unready");
    assert_eq!(state, "down-degraded", "/readyz tells Redis's state");

    // Without Redis each of the two replicas allows its half of `per_username` (10 by default),
    // so together they allow no more than the limit.
    let mut wrong = 0;
    loop {
        let guess =
            without_waiting_for_redis("a wrong password", fleet.login(&second, "wrong")).await;
        if guess.status() == 429 {
            break;
        }
        assert_eq!(guess.status(), 401);
        wrong += 1;
        assert!(wrong <= 10, "without Redis, guesses are still throttled");
    }
    assert_eq!(
        wrong, 5,
        "a replica of two allows half the username's limit while Redis is down"
    );

    let logout = without_waiting_for_redis("a logout", fleet.logout(&first, &access)).await;
    assert_eq!(
        logout, 204,
        "the logout is recorded locally and in the store"
    );
    assert_eq!(
        fleet.me(&first, &access).await,
        401,
        "refused at once where it was made"
    );

    redis.start().await;
    wait_until(
        "the other replica to refuse the token once Redis is back",
        || async { fleet.me(&second, &access).await == 401 },
    )
    .await;
    wait_until("/readyz to tell Redis is back", || async {
        fleet.state_detail(&first).await.1 == "up"
    })
    .await;
}

#[tokio::test]
async fn a_replica_started_after_redis_restarted_empty_refuses_a_logged_out_token() {
    if !redis_tests_enabled() {
        return;
    }
    let mut redis = TestRedis::started().await;
    let mut fleet = Fleet::new(&redis.url(), STATE_OPTIONS).await;
    let first = fleet.replica().await;
    let session: Value = fleet.login(&first, "test").await.json().await.unwrap();
    let access = session["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fleet.logout(&first, &access).await, 204);

    redis.kill();
    redis.start().await;
    let late = fleet.replica().await;
    assert_eq!(
        fleet.me(&late, &access).await,
        401,
        "a replica started after Redis forgot everything loads the revocation from the store"
    );
    eprintln!("the replica started after the Redis restart refused the logged-out token");
}

#[tokio::test]
async fn a_replica_started_while_redis_is_down_serves_and_joins_when_redis_comes_up() {
    if !redis_tests_enabled() {
        return;
    }
    let mut redis = TestRedis::stopped();
    let mut fleet = Fleet::new(&redis.url(), STATE_OPTIONS).await;
    let early = fleet.replica().await;
    let (status, state) = fleet.state_detail(&early).await;
    assert_eq!(status, 200, "a replica started without Redis is ready");
    assert_eq!(state, "down-degraded", "and says why it is degraded");
    let login = without_waiting_for_redis("a sign-in", fleet.login(&early, "test")).await;
    assert_eq!(
        login.status(),
        200,
        "sign-in works on local throttle counts"
    );

    redis.start().await;
    wait_until("the replica to take Redis up once it answers", || async {
        fleet.state_detail(&early).await.1 == "up"
    })
    .await;
    let later = fleet.replica().await;
    let session: Value = fleet.login(&later, "test").await.json().await.unwrap();
    let access = session["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fleet.me(&early, &access).await, 200);
    assert_eq!(fleet.logout(&later, &access).await, 204);
    wait_until(
        "the replica that started without Redis to have subscribed to revocations since",
        || async { fleet.me(&early, &access).await == 401 },
    )
    .await;
}
