//! A Redis of a test's own, for the tests that stop it: [`TestRedis`] (from `kit::testing`) on
//! a unix socket in the test's own directory, killed and started again at the same URL.

use std::time::Duration;

pub use kit::testing::TestRedis;

const REDIS_ENV: &str = "GATEHOUSE_TEST_REDIS";

pub fn redis_tests_enabled() -> bool {
    let enabled = std::env::var(REDIS_ENV).is_ok_and(|url| !url.is_empty());
    if !enabled {
        eprintln!("{REDIS_ENV} is not set: the Redis fault tests check nothing");
    }
    enabled
}

/// Whether `check` comes to hold within `deadline`: kit's polling, for the callers that assert
/// on the answer with a message of their own.
pub async fn eventually<Fut: std::future::Future<Output = bool>>(
    deadline: Duration,
    check: impl Fn() -> Fut,
) -> bool {
    tokio::time::timeout(deadline, kit::testing::wait_until("a check", check))
        .await
        .is_ok()
}
