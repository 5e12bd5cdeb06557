//! GCRA (the generic cell rate algorithm), the smoothing a policy's `burst` adds to its window
//! (see [`super::window`]): a key holds one number, its theoretical arrival time (TAT, µs). A
//! request at `now` would move it to `max(TAT, now) + T` (T: the emission interval); GCRA admits
//! it when that lies at most `burst × T` ahead of `now`. A refused request moves nothing (but a
//! TAT more than `burst × T` ahead, left by a stricter policy, is brought back to it: see
//! [`Rate::held`]). A TAT at or before `now` is a full bucket, the same as none.
//!
//! Both stores answer the same number per key, `used = max(TAT, now) + T − now`, and
//! [`Rate::verdict`] turns it into GCRA's answer.

use super::window::Verdict;

/// A policy's GCRA parameters, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// T: one request every this many µs, sustained.
    pub emission_us: u64,
    /// τ = burst × T: how far ahead of now the TAT may run.
    pub tolerance_us: u64,
    pub burst: u64,
}

impl Rate {
    pub fn new(emission_us: u64, burst: u64) -> Self {
        let emission_us = emission_us.max(1);
        let burst = burst.max(1);
        Self {
            emission_us,
            tolerance_us: emission_us.saturating_mul(burst),
            burst,
        }
    }

    /// This rate shared by `replicas` counting each on its own: each gets `1/n` of the
    /// sustained rate (T × n) and exactly `1/n` of the burst — `τ` itself as the tolerance, not
    /// `⌊burst / n⌋` intervals rounded, so a burst that does not divide evenly is neither lost
    /// nor exceeded: over any span `w` the fleet allows at most `burst + w / T`.
    ///
    /// Except when `burst < n`: a replica must be able to hold one whole request (a bucket of
    /// less never lets one through, and a caller whose balancer sends it to that replica
    /// would be locked out), so each holds one, and the fleet may allow up to `n` at once,
    /// `n − burst` more than the policy; its sustained rate stays the policy's.
    pub fn share(self, replicas: u64) -> Self {
        let n = replicas.max(1);
        if n == 1 {
            return self;
        }
        let emission_us = self.emission_us.saturating_mul(n);
        Self {
            emission_us,
            tolerance_us: self.tolerance_us.max(emission_us),
            burst: (self.burst / n).max(1),
        }
    }

    /// The TAT of a key (none: a full bucket) as this rate reads it at `now`: clamped to
    /// `[now, now + τ]`. A TAT further ahead than `τ` was left by a stricter policy (a reload
    /// relaxed it); under this one the bucket can be no emptier than empty, so a caller never
    /// waits out the old policy's window. The stores write the clamped TAT back even when they
    /// refuse (otherwise every retry would read the far TAT again and be refused for ever with
    /// a `Retry-After` of one interval); the Lua script reads and writes it the same way.
    pub fn held(self, tat: Option<u64>, now: u64) -> u64 {
        tat.map_or(now, |tat| {
            tat.max(now).min(now.saturating_add(self.tolerance_us))
        })
    }

    /// What a store writes back for a refused request: the stored TAT brought back to at most
    /// `τ` ahead, nothing else: a refused request spends nothing.
    pub fn capped(self, tat: u64, now: u64) -> u64 {
        tat.min(now.saturating_add(self.tolerance_us))
    }

    /// `used` for a key whose TAT is `tat` at `now`: how far ahead of `now` the TAT would be
    /// after this request.
    pub fn used(self, tat: Option<u64>, now: u64) -> u64 {
        self.held(tat, now)
            .saturating_add(self.emission_us)
            .saturating_sub(now)
    }

    /// The answer for a request that would make the TAT run `used` µs ahead.
    pub fn verdict(self, used: u64) -> Verdict {
        if used > self.tolerance_us {
            return Verdict {
                allowed: false,
                remaining: 0,
                window_us: used - self.tolerance_us,
            };
        }
        let slack = self.tolerance_us - used;
        Verdict {
            allowed: true,
            remaining: slack / self.emission_us,
            window_us: self.emission_us - slack % self.emission_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    /// 10 per second, burst 10: T = 100 ms.
    fn ten_per_second() -> Rate {
        Rate::new(SECOND / 10, 10)
    }

    /// Sends one request at `now` against `tat`, committing it when allowed and its clamp when
    /// refused (as the stores do).
    fn send(rate: Rate, tat: &mut Option<u64>, now: u64) -> Verdict {
        let used = rate.used(*tat, now);
        let verdict = rate.verdict(used);
        if verdict.allowed {
            *tat = Some(now + used);
        } else if let Some(held) = tat.as_mut() {
            *held = rate.capped(*held, now);
        }
        verdict
    }

    #[test]
    fn a_full_bucket_allows_the_burst_at_once_counting_down_then_refuses() {
        let rate = ten_per_second();
        let mut tat = None;
        let now = 5 * SECOND;
        let remaining: Vec<u64> = (0..10)
            .map(|_| send(rate, &mut tat, now).remaining)
            .collect();
        assert_eq!(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        let refused = send(rate, &mut tat, now);
        assert!(!refused.allowed);
        assert_eq!(refused.window_us, SECOND / 10, "one more fits in 100 ms");
        assert_eq!(refused.window_secs(), 1);
    }

    #[test]
    fn a_refusal_moves_nothing_and_the_rate_refills_one_per_interval() {
        let rate = ten_per_second();
        let mut tat = None;
        let start = 7 * SECOND;
        for _ in 0..10 {
            assert!(send(rate, &mut tat, start).allowed);
        }
        let spent = tat;
        for _ in 0..100 {
            assert!(!send(rate, &mut tat, start + 1).allowed);
        }
        assert_eq!(tat, spent, "refused requests do not push the wait further");
        assert!(
            !send(rate, &mut tat, start + SECOND / 10 - 1).allowed,
            "1 µs early"
        );
        let after = send(rate, &mut tat, start + SECOND / 10);
        assert!(after.allowed, "exactly one interval later");
        assert_eq!(after.remaining, 0);
        assert!(!send(rate, &mut tat, start + SECOND / 10).allowed);
    }

    #[test]
    fn an_idle_key_is_a_full_bucket_again_never_more() {
        let rate = ten_per_second();
        let mut tat = None;
        for _ in 0..10 {
            send(rate, &mut tat, 0);
        }
        let later = send(rate, &mut tat, 3600 * SECOND);
        assert_eq!(
            later.remaining, 9,
            "a rested bucket holds the burst, not an hour's worth"
        );
    }

    #[test]
    fn the_window_is_when_the_next_request_becomes_available() {
        let rate = ten_per_second();
        let mut tat = None;
        let first = send(rate, &mut tat, 0);
        assert_eq!((first.remaining, first.window_us), (9, SECOND / 10));
        let a_bit_later = send(rate, &mut tat, SECOND / 40);
        assert_eq!(a_bit_later.remaining, 8);
        assert_eq!(a_bit_later.window_us, SECOND / 10 - SECOND / 40);
    }

    #[test]
    fn after_a_reload_relaxes_a_policy_the_old_window_holds_nobody() {
        let strict = Rate::new(3600 * SECOND / 10, 10);
        let relaxed = ten_per_second();
        let mut tat = None;
        let start = 9 * SECOND;
        for _ in 0..10 {
            assert!(send(strict, &mut tat, start).allowed);
        }
        assert_eq!(strict.verdict(strict.used(tat, start)).window_secs(), 360);
        let refused = send(relaxed, &mut tat, start);
        assert!(
            !refused.allowed,
            "the bucket is empty under the new policy too"
        );
        assert!(
            refused.window_secs() <= 1,
            "Retry-After of the new policy, not the old hour: {}",
            refused.window_secs()
        );
        assert!(
            send(relaxed, &mut tat, start + refused.window_us).allowed,
            "passes again once the new policy refilled one"
        );
    }

    #[test]
    fn a_tat_far_ahead_reads_as_an_empty_bucket_of_the_current_rate() {
        let rate = ten_per_second();
        let now = 50 * SECOND;
        assert_eq!(
            rate.used(Some(now + 3600 * SECOND), now),
            rate.used(Some(now + rate.tolerance_us), now)
        );
        assert_eq!(
            rate.verdict(rate.used(Some(u64::MAX), now)).window_us,
            rate.emission_us
        );
    }

    #[test]
    fn a_smaller_burst_than_the_rate_smooths_requests() {
        // 60 per minute, at most 2 at once.
        let rate = Rate::new(SECOND, 2);
        let mut tat = None;
        assert!(send(rate, &mut tat, 0).allowed);
        assert!(send(rate, &mut tat, 0).allowed);
        let third = send(rate, &mut tat, 0);
        assert!(!third.allowed);
        assert_eq!(third.window_secs(), 1);
    }

    #[test]
    fn shared_by_replicas_each_gets_its_part_of_rate_and_burst() {
        let rate = Rate::new(200_000, 50);
        let shared = rate.share(2);
        assert_eq!((shared.emission_us, shared.burst), (400_000, 25));
        assert_eq!(
            rate.share(0),
            rate,
            "no replica count known: the whole rate"
        );
        let mut tat = None;
        let at_once = (0..100)
            .filter(|_| send(shared, &mut tat, 0).allowed)
            .count();
        assert_eq!(at_once, 25);
    }

    /// How many requests `replicas` replicas, each counting `rate.share(replicas)` on its own
    /// and each sent a request every `step` µs, let through from 0 to `span`.
    fn fleet_allows(rate: Rate, replicas: u64, step: u64, span: u64) -> usize {
        let shared = rate.share(replicas);
        (0..replicas)
            .map(|_| {
                let mut tat = None;
                (0..=span / step)
                    .filter(|k| send(shared, &mut tat, k * step).allowed)
                    .count()
            })
            .sum()
    }

    #[test]
    fn an_uneven_burst_share_is_exact_never_more_than_the_policy_fleet_wide() {
        // 5 at once, then one a second, over 3 replicas: 5/3 each, not 1 (lost) nor 2 (6 > 5).
        let rate = Rate::new(SECOND, 5);
        assert_eq!(fleet_allows(rate, 3, SECOND / 100, 0), 3);
        for span in [SECOND, 2 * SECOND, 10 * SECOND, 60 * SECOND] {
            let allowed = fleet_allows(rate, 3, SECOND / 100, span);
            let policy = usize::try_from(5 + span / SECOND).unwrap();
            assert!(allowed <= policy, "{allowed} in {span} µs > {policy}");
            assert!(
                allowed + 3 >= policy,
                "{allowed} in {span} µs: the share is used"
            );
        }
    }

    #[test]
    fn a_burst_smaller_than_the_replicas_lets_each_hold_one_and_keeps_the_sustained_rate() {
        let rate = Rate::new(SECOND, 3);
        assert_eq!(
            fleet_allows(rate, 8, SECOND / 100, 0),
            8,
            "one each at once: the documented excess"
        );
        let minute = fleet_allows(rate, 8, SECOND / 100, 60 * SECOND);
        assert!(minute <= 8 + 60, "{minute}");
    }

    #[test]
    fn huge_numbers_saturate_instead_of_overflowing() {
        let rate = Rate::new(u64::MAX, u64::MAX);
        let verdict = rate.verdict(rate.used(Some(u64::MAX), u64::MAX - 1));
        assert!(verdict.allowed || verdict.window_us > 0);
        let tiny = Rate::new(0, 0);
        assert_eq!((tiny.emission_us, tiny.burst), (1, 1));
    }
}
