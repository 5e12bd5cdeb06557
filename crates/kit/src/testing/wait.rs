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

/// `operation`'s result, failing the test as `what` "waited" if it is still waiting after
/// [`PATIENCE`]. For behaviour proven by causality rather than by a clock: the test holds what
/// must not be waited for (a locked database, a dead Redis) for as long as it runs, so an
/// answer at all proves it was not waited for; the deadline only keeps a regression from
/// hanging the suite, and measures nothing.
pub async fn within_patience<T>(what: &str, operation: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, operation)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for what the test holds out of reach"))
}

/// Polls `probe` until `enough` holds of its reading, and returns that reading. After
/// [`PATIENCE`] it returns the last reading instead of failing, for the test's own assertion to
/// show what there was (a count that never reached its mark, the lines written so far).
pub async fn read_until<T, F, Fut>(probe: F, enough: impl Fn(&T) -> bool) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reading = probe().await;
        if enough(&reading) || Instant::now() >= deadline {
            return reading;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`read_until`] for a probe that does not await.
pub fn read_until_blocking<T>(probe: impl Fn() -> T, enough: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reading = probe();
        if enough(&reading) || Instant::now() >= deadline {
            return reading;
        }
        std::thread::sleep(POLL);
    }
}
