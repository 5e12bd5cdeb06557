//! Two gateway processes sharing one store and one Redis: what one replica revokes, the other
//! refuses, and throttle counts are shared. Runs when `GATEHOUSE_TEST_REDIS` names a Redis
//! (CI always gives it); without it the test says so and checks nothing.

use serde_json::{json, Value};

use crate::harness::replicas::Fleet;
use crate::harness::wait_until;

const REDIS_ENV: &str = "GATEHOUSE_TEST_REDIS";

/// The replica starters other tests have imported from here; they live in
/// [`crate::harness::gateway`].
#[allow(unused_imports)]
pub use crate::harness::{start_replica, Replica};

#[tokio::test]
async fn a_logout_through_one_replica_is_refused_by_the_other_and_throttles_are_shared() {
    let Some(redis) = std::env::var(REDIS_ENV).ok().filter(|url| !url.is_empty()) else {
        eprintln!("{REDIS_ENV} is not set: the two-replica Redis test checks nothing");
        return;
    };
    let http = reqwest::Client::new();
    // No replica reads the store's new revocations on a timer: what reaches the other replica
    // came through Redis.
    let mut fleet = Fleet::new(&redis, ", store_sync: 1h").await;
    let first = fleet.replica().await;
    // The second starts once the first has made the signing keys, which both then share.
    let second = fleet.replica().await;

    let session: Value = http
        .post(format!("{}/api/login", first.url))
        .json(&json!({ "username": "test", "password": "test" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = session["access_token"].as_str().unwrap();
    let me = |replica: &Replica| {
        http.get(format!("{}/api/users/me", replica.url))
            .bearer_auth(access)
            .send()
    };
    assert_eq!(
        me(&second).await.unwrap().status(),
        200,
        "a token of one replica is good at the other"
    );

    let logout = http
        .post(format!("{}/api/logout", first.url))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    wait_until(
        "the other replica to refuse the logged-out token, told through Redis",
        || async { me(&second).await.unwrap().status() == 401 },
    )
    .await;

    for _ in 0..10 {
        let failed = http
            .post(format!("{}/api/login", first.url))
            .json(&json!({ "username": "test", "password": "no" }))
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 401);
    }
    let throttled = http
        .post(format!("{}/api/login", second.url))
        .json(&json!({ "username": "test", "password": "no" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        throttled.status(),
        429,
        "failures counted at one replica throttle the other"
    );
}
