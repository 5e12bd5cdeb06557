//! A Redis of a test's own, for the tests that stop it: [`TestRedis`] (from `kit::testing`) on
//! a unix socket in the test's own directory, killed and started again at the same URL.

use std::time::{Duration, Instant};

pub use kit::testing::TestRedis;

const REDIS_ENV: &str = "GATEHOUSE_TEST_REDIS";

pub fn redis_tests_enabled() -> bool {
    let enabled = std::env::var(REDIS_ENV).is_ok_and(|url| !url.is_empty());
    if !enabled {
        eprintln!("{REDIS_ENV} is not set: the Redis fault tests check nothing");
    }
    enabled
}

/// Polls `check` for up to `deadline`; whether it came to hold.
pub async fn eventually<Fut: std::future::Future<Output = bool>>(
    deadline: Duration,
    mut check: impl FnMut() -> Fut,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
