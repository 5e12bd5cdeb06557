//! The gateway's two clocks, in one place.
//!
//! - The **wall clock** (`unix_*`): what tokens carry (`iat`, `exp`) and what replicas compare
//!   (revocation cut-offs), so it must be the time other machines agree on.
//! - The **monotonic clock** (`monotonic_ms`): for everything measured on this process only
//!   (breaker windows, back-off, silence on a connection), which a wall-clock step must never
//!   shorten or stretch.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_never_reads_zero_or_goes_back() {
        let first = monotonic_ms();
        assert!(first > 0);
        assert!(monotonic_ms() >= first);
    }

    #[test]
    fn seconds_and_milliseconds_of_the_wall_clock_agree() {
        let ms = unix_ms();
        let seconds = unix_seconds();
        assert!(seconds >= ms / 1000 && seconds <= ms / 1000 + 1);
    }
}
