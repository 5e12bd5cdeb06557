//! Fixed-window failure counters kept in this process: the memory backend, and the fallback
//! while Redis cannot be reached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries beyond this are not counted; it bounds memory against a spray of usernames or IPs.
const MAX_KEYS: usize = 1_000_000;

/// Failures counted in the current window, and the time until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub count: u64,
    pub resets_in: Duration,
}

#[derive(Default)]
pub struct LocalCounters {
    windows: Mutex<HashMap<String, (u64, Instant)>>,
}

impl LocalCounters {
    pub fn increment(&self, key: &str, window: Duration) -> Attempts {
        let now = Instant::now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= MAX_KEYS {
            windows.retain(|_, (_, ends)| *ends > now);
        }
        if windows.len() >= MAX_KEYS && !windows.contains_key(key) {
            return Attempts {
                count: 0,
                resets_in: window,
            };
        }
        let entry = windows.entry(key.to_owned()).or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += 1;
        Attempts {
            count: entry.0,
            resets_in: entry.1 - now,
        }
    }

    pub fn count(&self, key: &str) -> Attempts {
        let now = Instant::now();
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match windows.get(key) {
            Some((count, ends)) if *ends > now => Attempts {
                count: *count,
                resets_in: *ends - now,
            },
            _ => Attempts {
                count: 0,
                resets_in: Duration::ZERO,
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

    #[test]
    fn failures_count_up_within_a_window_and_clear() {
        let counters = LocalCounters::default();
        let window = Duration::from_secs(60);
        assert_eq!(counters.increment("u:alice", window).count, 1);
        assert_eq!(counters.increment("u:alice", window).count, 2);
        assert_eq!(counters.count("u:alice").count, 2);
        assert_eq!(counters.count("u:bob").count, 0);
        counters.clear("u:alice");
        assert_eq!(counters.count("u:alice").count, 0);
    }

    #[test]
    fn a_new_window_starts_from_zero() {
        let counters = LocalCounters::default();
        counters.increment("k", Duration::ZERO);
        assert_eq!(counters.increment("k", Duration::from_secs(60)).count, 1);
    }
}
