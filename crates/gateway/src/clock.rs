//! The gateway's two clocks, in one place, and the [`Clock`] a test can drive.
//!
//! - The **wall clock** (`unix_*`): what tokens carry (`iat`, `exp`) and what replicas compare
//!   (revocation cut-offs), so it must be the time other machines agree on.
//! - The **monotonic clock** (`monotonic_ms`): for everything measured on this process only
//!   (breaker windows, back-off, silence on a connection), which a wall-clock step must never
//!   shorten or stretch.
//!
//! Where time decides behaviour it is read from a [`Clock`]: the system's, or a [`ManualClock`]
//! a test moves forward, so an expiry or a back-off is crossed at the exact millisecond instead
//! of by waiting for it. The system clock is an enum match away from the free functions below,
//! no allocation and no dynamic call, so the request path can afford it.
//! - [`crate::app::AppState::clock`] is the app's: sign-in lifetimes (device and refresh
//!   tokens) read it, and every service of the proxy holds a clone, read through
//!   `proxy::upstream::Upstream::now` by its per-instance bookkeeping (breaker, back-off,
//!   decay, trials, health verdicts); the status page turns the breaker's times into wall-clock
//!   ones with a reading of the same clock. The response cache measures its entries' time in
//!   the store on it (`cache`'s # Time: moka's own expiry only frees memory), the identity
//!   minter decides on it how long a caller's identity token is reused, and the file watch
//!   measures `watch_settle` on it between two looks (`reload`).
//! - `proxy/instance.rs` itself reads no clock: its functions take `now` as an argument, which
//!   the service reads from its `Clock`, and its tests pass the instant they mean.
//! - Real waits on I/O stay on the process's clock and tokio's timers, out of a test's hand:
//!   a streamed request body's turns (`proxy/request_body.rs`) and the deadline measured on
//!   them, connection and body idle timeouts. So do the routes' status windows, which the
//!   observe phase fills from the reading it takes for a request's duration anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock reads before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    unix_ms() / 1000
}

/// Milliseconds on a process-wide monotonic clock; never 0, so 0 can mean "not set".
pub fn monotonic_ms() -> u64 {
    monotonic_ms_at(Instant::now())
}

/// [`monotonic_ms`] at `instant`, a reading the caller has already taken: the observe phase
/// reads the clock once for a request's duration and its status window both (a clock read is
/// the larger part of recording into the window).
pub fn monotonic_ms_at(instant: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = instant
        .saturating_duration_since(*START.get_or_init(Instant::now))
        .as_millis();
    u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 4)
}

/// Where a part of the gateway reads the time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The machine's clocks: what every deployed gateway uses.
    #[default]
    System,
    /// A test's clock, which moves only when the test says so.
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// See [`unix_ms`].
    #[inline]
    pub fn unix_ms(&self) -> u64 {
        match self {
            Self::System => unix_ms(),
            Self::Manual(manual) => manual.unix_ms.load(Ordering::Acquire),
        }
    }

    /// See [`unix_seconds`].
    #[inline]
    pub fn unix_seconds(&self) -> u64 {
        self.unix_ms() / 1000
    }

    /// See [`monotonic_ms`].
    #[inline]
    pub fn monotonic_ms(&self) -> u64 {
        match self {
            Self::System => monotonic_ms(),
            Self::Manual(manual) => manual.monotonic_ms.load(Ordering::Acquire),
        }
    }
}

impl From<&Arc<ManualClock>> for Clock {
    fn from(manual: &Arc<ManualClock>) -> Self {
        Self::Manual(Arc::clone(manual))
    }
}

/// A clock that stands still until [`ManualClock::advance`]: both of its readings move together,
/// by exactly what the test says.
#[derive(Debug)]
pub struct ManualClock {
    unix_ms: AtomicU64,
    monotonic_ms: AtomicU64,
}

impl ManualClock {
    /// Stopped at the system's wall-clock time now (so what it stamps looks current to anyone
    /// else), its monotonic reading at 1 ms (0 means "not set" to its readers).
    pub fn starting_now() -> Arc<Self> {
        Arc::new(Self {
            unix_ms: AtomicU64::new(unix_ms()),
            monotonic_ms: AtomicU64::new(1),
        })
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.unix_ms.fetch_add(millis(by), Ordering::AcqRel);
        self.monotonic_ms.fetch_add(millis(by), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_never_reads_zero_or_goes_back() {
        let first = monotonic_ms();
        assert!(first > 0);
        assert!(monotonic_ms() >= first);
        assert!(Clock::System.monotonic_ms() >= first);
    }

    #[test]
    fn seconds_and_milliseconds_of_the_wall_clock_agree() {
        let ms = unix_ms();
        let seconds = unix_seconds();
        assert!(seconds >= ms / 1000 && seconds <= ms / 1000 + 1);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_both_readings_by_the_same() {
        let time = ManualClock::starting_now();
        let clock = Clock::from(&time);
        let (wall, monotonic) = (clock.unix_ms(), clock.monotonic_ms());
        assert_eq!(monotonic, 1, "never 0, which means \"not set\"");
        assert_eq!(clock.unix_ms(), wall, "stands still");

        time.advance(Duration::from_millis(1500));
        assert_eq!(clock.unix_ms(), wall + 1500);
        assert_eq!(clock.monotonic_ms(), monotonic + 1500);
        assert_eq!(clock.unix_seconds(), (wall + 1500) / 1000);
    }
}
