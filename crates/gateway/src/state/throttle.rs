//! Fixed-window failure counters kept in this process: the memory backend, and with Redis a
//! shadow of the shared counts (each replica keeps the last count Redis told it, plus its own
//! attempts), which is what the replica counts on while Redis cannot be reached.
//!
//! # Time
//! The counters read no clock: each call takes `now`, in ms on the app clock's monotonic
//! reading ([`crate::clock::Clock::monotonic_ms`]), which [`super::Replicated`] reads for them,
//! so a window ends at the exact millisecond a test moves a manual clock to. A window's end is
//! kept in the same milliseconds. Redis's own windows are its keys' expiry, on Redis's clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Entries beyond this are not counted; it bounds memory against a spray of usernames or IPs.
const MAX_KEYS: usize = 1_000_000;

/// Every this many keys, a new one first sweeps out the ended windows: with Redis every key is
/// shadowed here too, so ended windows must not pile up until `MAX_KEYS`.
const SWEEP_EVERY: usize = 4096;

/// Makes room for `key` in `windows` when it is new: sweeps ended windows every
/// [`SWEEP_EVERY`] keys and when full; whether `key` may be counted.
fn room_for(windows: &mut HashMap<String, (u64, u64)>, key: &str, now: u64) -> bool {
    if windows.contains_key(key) {
        return true;
    }
    if windows.len() >= MAX_KEYS || (windows.len() + 1).is_multiple_of(SWEEP_EVERY) {
        windows.retain(|_, (_, ends)| *ends > now);
    }
    windows.len() < MAX_KEYS
}

/// Failures counted in the current window, and the time until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub count: u64,
    pub resets_in: Duration,
    /// How many replicas count this key each on its own: 1 when the count is shared (Redis, or
    /// the memory state's single replica); the last known number of live replicas when each
    /// counts locally because Redis is down.
    pub counted_by: u64,
}

impl Attempts {
    /// Whether the count is over `limit`, or, counted by n replicas each on its own, over this
    /// replica's share `limit / n` (at least 1, so an outage locks nobody out): the n shares
    /// together stay within the limit.
    pub fn exceeds(&self, limit: u64) -> bool {
        let share = if self.counted_by <= 1 {
            limit
        } else {
            (limit / self.counted_by).max(limit.min(1))
        };
        self.count > share
    }
}

/// The failures counted under each key, and when its window ends (ms, as `now`).
#[derive(Default)]
pub struct LocalCounters {
    windows: Mutex<HashMap<String, (u64, u64)>>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 4)
}

impl LocalCounters {
    /// Counts one more failure under `key` at `now`, in a window of `window` from the first.
    pub fn increment(&self, key: &str, window: Duration, now: u64) -> Attempts {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !room_for(&mut windows, key, now) {
            return Attempts {
                count: 0,
                resets_in: window,
                counted_by: 1,
            };
        }
        let ends = now.saturating_add(millis(window));
        let entry = windows.entry(key.to_owned()).or_insert((0, ends));
        if entry.1 <= now {
            *entry = (0, ends);
        }
        entry.0 += 1;
        Attempts {
            count: entry.0,
            resets_in: Duration::from_millis(entry.1 - now),
            counted_by: 1,
        }
    }

    /// Takes in a count Redis answered for `key`: the shadow keeps the larger of it and its own
    /// (so a replica carries on from the shared count if Redis goes down), in Redis's window.
    pub fn observe(&self, key: &str, shared: Attempts, now: u64) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !room_for(&mut windows, key, now) {
            return;
        }
        let entry = windows.entry(key.to_owned()).or_insert((0, now));
        let own = if entry.1 > now { entry.0 } else { 0 };
        *entry = (
            own.max(shared.count),
            now.saturating_add(millis(shared.resets_in)),
        );
    }

    /// The failures under `key` in its window at `now`.
    pub fn count(&self, key: &str, now: u64) -> Attempts {
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match windows.get(key) {
            Some((count, ends)) if *ends > now => Attempts {
                count: *count,
                resets_in: Duration::from_millis(*ends - now),
                counted_by: 1,
            },
            _ => Attempts {
                count: 0,
                resets_in: Duration::ZERO,
                counted_by: 1,
            },
        }
    }

    pub fn decrement(&self, key: &str) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((count, _)) = windows.get_mut(key) {
            *count = count.saturating_sub(1);
        }
    }

    pub fn clear(&self, key: &str) {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    /// A moment on the app clock's monotonic reading, in ms.
    const START: u64 = 1_000;

    fn shared(count: u64) -> Attempts {
        Attempts {
            count,
            resets_in: WINDOW,
            counted_by: 1,
        }
    }

    #[test]
    fn failures_count_up_within_a_window_and_clear() {
        let counters = LocalCounters::default();
        assert_eq!(counters.increment("u:alice", WINDOW, START).count, 1);
        assert_eq!(counters.increment("u:alice", WINDOW, START + 10).count, 2);
        assert_eq!(counters.count("u:alice", START + 20).count, 2);
        assert_eq!(counters.count("u:bob", START + 20).count, 0);
        counters.clear("u:alice");
        assert_eq!(counters.count("u:alice", START + 30).count, 0);
    }

    #[test]
    fn a_window_ends_at_the_millisecond_it_was_given_and_the_next_starts_from_zero() {
        let counters = LocalCounters::default();
        counters.increment("k", WINDOW, START);
        counters.increment("k", WINDOW, START + 30_000);
        let ends = START + 60_000;
        assert_eq!(
            counters.count("k", ends - 1),
            Attempts {
                count: 2,
                resets_in: Duration::from_millis(1),
                counted_by: 1,
            },
            "the window is counted from the first failure"
        );
        assert_eq!(counters.count("k", ends).count, 0);
        assert_eq!(
            counters.increment("k", WINDOW, ends),
            Attempts {
                count: 1,
                resets_in: WINDOW,
                counted_by: 1,
            }
        );
    }

    #[test]
    fn counted_by_several_replicas_each_allows_its_share_of_the_limit_at_least_one() {
        let counted = |count, counted_by| Attempts {
            count,
            resets_in: WINDOW,
            counted_by,
        };
        assert!(!counted(5, 1).exceeds(5), "shared: the whole limit");
        assert!(counted(6, 1).exceeds(5));
        assert!(!counted(2, 2).exceeds(5), "two replicas: 5 / 2 = 2 each");
        assert!(counted(3, 2).exceeds(5));
        assert!(!counted(1, 8).exceeds(5), "eight replicas: still one each");
        assert!(counted(2, 8).exceeds(5));
        assert!(counted(1, 8).exceeds(0), "a limit of 0 stays 0");
    }

    #[test]
    fn the_shadow_keeps_the_larger_of_the_shared_count_and_its_own() {
        let counters = LocalCounters::default();
        counters.increment("k", WINDOW, START);
        counters.observe("k", shared(7), START + 10);
        assert_eq!(counters.increment("k", WINDOW, START + 20).count, 8);
        counters.observe("k", shared(3), START + 30);
        assert_eq!(
            counters.count("k", START + 40).count,
            8,
            "its own count is never lowered"
        );
    }

    #[test]
    fn the_shadow_ends_when_redis_said_the_shared_window_ends() {
        let counters = LocalCounters::default();
        counters.observe(
            "k",
            Attempts {
                resets_in: Duration::from_secs(5),
                ..shared(4)
            },
            START,
        );
        assert_eq!(counters.count("k", START + 4_999).count, 4);
        assert_eq!(counters.count("k", START + 5_000).count, 0);
    }

    #[test]
    fn ended_windows_are_swept_as_keys_come_in() {
        let counters = LocalCounters::default();
        // One key short of a sweep, all in windows that end together; the key that makes
        // SWEEP_EVERY comes as they end.
        for n in 1..SWEEP_EVERY {
            counters.increment(&format!("ended:{n}"), WINDOW, START);
        }
        counters.increment("live", WINDOW, START + 60_000);
        let windows = counters.windows.lock().unwrap();
        assert_eq!(windows.keys().collect::<Vec<_>>(), ["live"]);
    }
}
