//! The sliding-window log, the arithmetic shared by the memory buckets and the Redis script: a
//! key holds the times (µs) of its admissions in the last `window`, at most `requests` of them. A
//! request is admitted iff fewer than `requests` are still in the window — an entry at `t` is
//! in it at `now` while `t + window > now` — so **every** window of that length holds at most
//! `requests` admissions (never more), and a client sending at most `requests` per window is
//! never refused (never less). A smaller `burst` adds a GCRA check ([`super::gcra`]) that must
//! admit too: it spreads the window's requests out, it never lets more through.
//!
//! Both stores report the same [`Observed`] per key, and [`Limit::verdict`] turns it into the
//! answer, so memory and Redis cannot disagree.

use super::gcra::Rate;

/// What a policy allows, in the units a decision needs (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// At most this many admissions in any window of `window_us` (≥ 1).
    pub requests: u64,
    /// The window's length, µs (≥ 1).
    pub window_us: u64,
    /// With a `burst` below `requests`: GCRA at `requests / window` with that burst, which must
    /// admit as well. `None` when the burst is the whole window (the window alone decides).
    pub smoothing: Option<Rate>,
}

/// What a store found for one key at `now`, before counting the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Admissions still in the window (never more than `requests`: a store keeps the newest).
    pub in_window: u64,
    /// µs until the oldest of them leaves the window (0 when there is none).
    pub oldest_leaves_in_us: u64,
    /// GCRA's `used` for this request (see [`Rate::used`]), when the limit smooths.
    pub smoothing_used: Option<u64>,
}

/// What one policy says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests still allowed now, this one counted (the headers' `r`).
    pub remaining: u64,
    /// µs until `remaining` grows by one (the headers' `t`); for a refusal, until a retry
    /// passes (`Retry-After`).
    pub window_us: u64,
}

impl Limit {
    /// A limit of `requests` per `window_us`, smoothed by GCRA when `burst < requests`.
    pub fn new(requests: u64, window_us: u64, burst: u64) -> Self {
        let requests = requests.max(1);
        let window_us = window_us.max(1);
        // T = ⌊window / requests⌋: the window caps the sustained rate exactly, so the GCRA
        // interval may round down; it keeps τ = burst × T below the window, so a GCRA state
        // outlives no log (a key whose admissions all left the window holds a full bucket).
        let smoothing = (burst < requests).then(|| Rate::new(window_us / requests, burst));
        Self {
            requests,
            window_us,
            smoothing,
        }
    }

    /// This limit for one of `replicas` counting each on its own (Redis down): the fleet
    /// together must not pass the policy in any window. Each takes `⌊requests / n⌋` per window
    /// (n of them: at most `requests`); when that is below one, each takes one request per
    /// `window × n / requests` instead — the policy's rate, but not n at once per window.
    pub fn share(self, replicas: u64) -> Self {
        let n = replicas.max(1);
        if n == 1 {
            return self;
        }
        let per_replica = self.requests / n;
        let (requests, window_us) = if per_replica >= 1 {
            (per_replica, self.window_us)
        } else {
            let scaled = u128::from(self.window_us) * u128::from(n);
            let scaled = scaled.div_ceil(u128::from(self.requests));
            (1, u64::try_from(scaled).unwrap_or(u64::MAX))
        };
        Self {
            requests,
            window_us,
            smoothing: self.smoothing.map(|rate| rate.share(n)),
        }
    }

    /// The answer for a request to a key as `observed`.
    pub fn verdict(&self, observed: Observed) -> Verdict {
        let smoothing = self
            .smoothing
            .zip(observed.smoothing_used)
            .map(|(rate, used)| rate.verdict(used));
        let window_full = observed.in_window >= self.requests;
        let smoothing_refuses = smoothing.is_some_and(|verdict| !verdict.allowed);
        if window_full || smoothing_refuses {
            // A retry passes once the oldest entry left the window and GCRA refilled one.
            let window_wait = if window_full {
                observed.oldest_leaves_in_us
            } else {
                0
            };
            let smoothing_wait = smoothing
                .filter(|verdict| !verdict.allowed)
                .map_or(0, |verdict| verdict.window_us);
            return Verdict {
                allowed: false,
                remaining: 0,
                window_us: window_wait.max(smoothing_wait).max(1),
            };
        }
        let window = Verdict {
            allowed: true,
            remaining: self.requests - observed.in_window - 1,
            // This request's own entry is the oldest when the window held none.
            window_us: if observed.in_window == 0 {
                self.window_us
            } else {
                observed.oldest_leaves_in_us
            },
        };
        match smoothing {
            Some(gcra) if gcra.remaining < window.remaining => gcra,
            Some(gcra) if gcra.remaining == window.remaining => Verdict {
                window_us: window.window_us.max(gcra.window_us),
                ..window
            },
            _ => window,
        }
    }
}

impl Verdict {
    /// The window in whole seconds, rounded up (a client that waits this long is not early).
    pub fn window_secs(&self) -> u64 {
        self.window_us.div_ceil(1_000_000)
    }

    /// Which of two verdicts restricts the client more: a refusal, then the fewer requests
    /// left, then the longer wait.
    pub fn more_restrictive_than(&self, other: &Verdict) -> bool {
        (
            !self.allowed,
            std::cmp::Reverse(self.remaining),
            self.window_us,
        ) > (
            !other.allowed,
            std::cmp::Reverse(other.remaining),
            other.window_us,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn observed(in_window: u64, oldest_leaves_in_us: u64) -> Observed {
        Observed {
            in_window,
            oldest_leaves_in_us,
            smoothing_used: None,
        }
    }

    #[test]
    fn the_default_burst_needs_no_smoothing_and_a_smaller_one_smooths_at_the_policy_rate() {
        assert_eq!(Limit::new(10, SECOND, 10).smoothing, None);
        let smoothed = Limit::new(10, SECOND, 2).smoothing.unwrap();
        assert_eq!((smoothed.emission_us, smoothed.burst), (SECOND / 10, 2));
        let uneven = Limit::new(3, SECOND, 2).smoothing.unwrap();
        assert_eq!(
            uneven.emission_us, 333_333,
            "rounded down: the window caps the rate"
        );
        assert!(uneven.tolerance_us < SECOND, "τ stays within the window");
    }

    #[test]
    fn a_window_counts_down_then_refuses_until_the_oldest_leaves() {
        let limit = Limit::new(10, SECOND, 10);
        let first = limit.verdict(observed(0, 0));
        assert_eq!(
            first,
            Verdict {
                allowed: true,
                remaining: 9,
                window_us: SECOND
            }
        );
        let last = limit.verdict(observed(9, 400_000));
        assert_eq!(
            last,
            Verdict {
                allowed: true,
                remaining: 0,
                window_us: 400_000
            }
        );
        let refused = limit.verdict(observed(10, 400_000));
        assert_eq!(
            refused,
            Verdict {
                allowed: false,
                remaining: 0,
                window_us: 400_000
            }
        );
        assert_eq!(refused.window_secs(), 1);
    }

    #[test]
    fn a_refusal_waits_for_the_longer_of_the_window_and_the_smoothing() {
        let limit = Limit::new(10, SECOND, 2);
        let rate = limit.smoothing.unwrap();
        let smoothing_full = Observed {
            in_window: 2,
            oldest_leaves_in_us: 900_000,
            smoothing_used: Some(rate.tolerance_us + 30_000),
        };
        let refused = limit.verdict(smoothing_full);
        assert!(!refused.allowed);
        assert_eq!(refused.window_us, 30_000, "only GCRA refuses: its wait");
        let both_full = Observed {
            in_window: 10,
            ..smoothing_full
        };
        assert_eq!(limit.verdict(both_full).window_us, 900_000);
    }

    #[test]
    fn the_more_restrictive_of_window_and_smoothing_gives_the_headers() {
        let limit = Limit::new(10, SECOND, 2);
        let rate = limit.smoothing.unwrap();
        // A full GCRA bucket (used = T): 1 more at once; the window has 9 after this one.
        let fresh = limit.verdict(Observed {
            in_window: 0,
            oldest_leaves_in_us: 0,
            smoothing_used: Some(rate.emission_us),
        });
        assert_eq!((fresh.remaining, fresh.window_us), (1, rate.emission_us));
        // Window nearly spent, GCRA rested: the window decides.
        let late = limit.verdict(Observed {
            in_window: 8,
            oldest_leaves_in_us: 250_000,
            smoothing_used: Some(rate.emission_us),
        });
        assert_eq!((late.remaining, late.window_us), (1, 250_000));
    }

    #[test]
    fn a_share_of_at_least_one_per_window_divides_the_requests_rounding_down() {
        let limit = Limit::new(50, 10 * SECOND, 50);
        assert_eq!(limit.share(1), limit);
        assert_eq!(
            limit.share(0),
            limit,
            "no replica count known: the whole limit"
        );
        let third = limit.share(3);
        assert_eq!((third.requests, third.window_us), (16, 10 * SECOND));
    }

    #[test]
    fn a_share_below_one_per_window_stretches_the_window_instead() {
        let limit = Limit::new(3, 10 * SECOND, 3);
        let share = limit.share(8);
        assert_eq!(share.requests, 1);
        assert_eq!(
            share.window_us,
            80 * SECOND / 3 + 1,
            "10 s × 8 / 3, rounded up"
        );
    }

    #[test]
    fn a_refusal_restricts_more_than_any_allowance_then_fewer_left_then_longer_wait() {
        let refused = Verdict {
            allowed: false,
            remaining: 0,
            window_us: 5,
        };
        let low = Verdict {
            allowed: true,
            remaining: 1,
            window_us: 1,
        };
        let high = Verdict {
            allowed: true,
            remaining: 9,
            window_us: 100,
        };
        assert!(refused.more_restrictive_than(&low));
        assert!(low.more_restrictive_than(&high));
        assert!(!high.more_restrictive_than(&low));
        let low_longer = Verdict {
            window_us: 2,
            ..low
        };
        assert!(low_longer.more_restrictive_than(&low));
    }
}
