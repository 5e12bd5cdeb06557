//! The limiter's clock: microseconds on a monotonic clock for the memory logs and the
//! degraded-mode log, injectable so tests pin the arithmetic at exact instants. (Redis decides
//! by its own `TIME`; this clock never reaches it.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the limiter reads `now`.
pub trait Clock: Send + Sync {
    /// µs since an origin of the clock's choosing; never goes back.
    fn now_us(&self) -> u64;
}

/// The process's monotonic clock, from when the limiter was made.
pub struct Monotonic {
    epoch: Instant,
}

impl Default for Monotonic {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }
}

impl Clock for Monotonic {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told (tests).
#[derive(Default)]
pub struct ManualClock {
    now_us: AtomicU64,
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.now_us.fetch_add(by, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now_us.load(Ordering::Acquire)
    }
}
