//! Waiting for a condition in tests, with a deadline instead of a fixed sleep: a fixed sleep is
//! either too short on a loaded machine (a flake) or too long everywhere else (a slow suite).

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for anything before it fails: generous, because CI machines are shared
/// and slow; a passing test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How often a condition is probed again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it gives a value and returns it; panics naming `what` after
/// [`PATIENCE`].
pub async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` until it holds; panics naming `what` after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// [`wait_for`] for a probe that does not await (a thread writing a file, an atomic): the same
/// deadline, probed from a blocking test or a synchronous helper.
pub fn wait_for_blocking<T>(what: &str, probe: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}
