//! Sliding-window logs in this process: the memory state's limiter, and with Redis the fallback
//! each replica counts on while Redis does not answer.
//!
//! Sharded, not lock-free: a request's policies are decided together (all allowed, or none
//! counted), so it locks the shards of its keys, in shard order (no deadlock), for a trim and a
//! few comparisons each. With 64 shards two requests rarely meet. `governor` was the
//! alternative; it is GCRA only (no hard cap per window), decides one key at a time (a request
//! refused by its second policy would already have spent its first), and cannot take the
//! per-replica share of a limit that changes with the number of live replicas.
//!
//! Bounded by bytes, not keys: a log costs 8 bytes per admission kept (at most `requests` per
//! key), so a few keys of a large policy weigh as much as many small ones. Each shard keeps at
//! most `1/64` of [`MAX_BYTES`] (its allocations as counted by [`Bucket::bytes`]). A shard over
//! it first drops what no answer needs (entries that left their window, keys left with none);
//! when live logs fill it anyway (a flood of distinct addresses), it forgets the keys that
//! would be empty soonest until an eighth is free: those that had the least left to remember,
//! while the callers nearest their quota keep theirs. Forgetting errs towards admitting (that
//! caller starts a fresh window); refusing new keys instead would let a flood lock everyone
//! else out.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::window::{Limit, Observed};

/// The most bytes the logs keep, over all shards (counted as [`Bucket::bytes`]).
pub const MAX_BYTES: usize = 128 << 20;

const SHARDS: usize = 64;

// A shard holds the largest log a policy may have, with room to spare: a key is never
// forgotten for its own size.
const _: () = assert!(
    MAX_BYTES / SHARDS >= 2 * (super::policy::MAX_REQUESTS as usize).next_power_of_two() * 8
);

/// What a key costs besides its entries: the map's slot, the log's header, the allocator's
/// rounding (an estimate that errs high).
const BUCKET_OVERHEAD: usize = 96;

/// One key's state: its admissions still (possibly) in the window, oldest first, and the GCRA
/// TAT when its policy smooths.
#[derive(Debug, Default)]
struct Bucket {
    log: VecDeque<u64>,
    tat: Option<u64>,
    /// The window it was last decided with, so a sweep can drop what left it.
    window_us: u64,
}

impl Bucket {
    fn bytes(&self, key: &str) -> usize {
        BUCKET_OVERHEAD + key.len() + self.log.capacity() * std::mem::size_of::<u64>()
    }

    /// Drops the entries that left the window at `now`, and any beyond `requests` (the oldest:
    /// after a reload tightened the policy they decide nothing the newest do not).
    fn trim(&mut self, window_us: u64, requests: u64, now: u64) {
        self.window_us = window_us;
        while self
            .log
            .front()
            .is_some_and(|&at| at.saturating_add(window_us) <= now)
        {
            self.log.pop_front();
        }
        let keep = usize::try_from(requests).unwrap_or(usize::MAX);
        while self.log.len() > keep {
            self.log.pop_front();
        }
    }

    /// When this bucket will hold nothing an answer needs: its newest entry left the window
    /// and its TAT passed.
    fn empty_at(&self) -> u64 {
        let log = self
            .log
            .back()
            .map_or(0, |&at| at.saturating_add(self.window_us));
        log.max(self.tat.unwrap_or(0))
    }
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<Box<str>, Bucket>,
    /// Σ [`Bucket::bytes`] over `buckets`.
    bytes: usize,
}

impl Shard {
    /// Runs `change` on `key`'s bucket (created when new), keeping `bytes` true.
    fn change<T>(&mut self, key: &str, change: impl FnOnce(&mut Bucket) -> T) -> T {
        if let Some(bucket) = self.buckets.get_mut(key) {
            let before = bucket.bytes(key);
            let answer = change(bucket);
            self.bytes = self.bytes - before + bucket.bytes(key);
            return answer;
        }
        let mut bucket = Bucket::default();
        let answer = change(&mut bucket);
        self.bytes += bucket.bytes(key);
        self.buckets.insert(key.into(), bucket);
        answer
    }

    /// Forgets `key` when it holds nothing an answer needs (a refused request to a new key
    /// leaves no bucket behind).
    fn forget_if_idle(&mut self, key: &str, now: u64) {
        let idle = self
            .buckets
            .get(key)
            .is_some_and(|bucket| bucket.log.is_empty() && bucket.tat.is_none_or(|tat| tat <= now));
        if let Some(bucket) = idle.then(|| self.buckets.remove(key)).flatten() {
            self.bytes -= bucket.bytes(key);
        }
    }

    /// Brings the shard back under `budget`: first what no answer needs, then, when live logs
    /// fill it, the keys that would be empty soonest, until an eighth of it is free.
    fn make_room(&mut self, budget: usize, now: u64) {
        if self.bytes <= budget {
            return;
        }
        self.buckets.retain(|_, bucket| {
            let requests = bucket.log.len() as u64;
            bucket.trim(bucket.window_us, requests, now);
            bucket.log.shrink_to_fit();
            !bucket.log.is_empty() || bucket.tat.is_some_and(|tat| tat > now)
        });
        self.bytes = self
            .buckets
            .iter()
            .map(|(key, bucket)| bucket.bytes(key))
            .sum();
        let target = budget - budget / 8;
        if self.bytes <= target {
            return;
        }
        let mut by_emptying: Vec<(u64, Box<str>, usize)> = self
            .buckets
            .iter()
            .map(|(key, bucket)| (bucket.empty_at(), key.clone(), bucket.bytes(key)))
            .collect();
        by_emptying.sort_unstable_by_key(|(empty_at, _, _)| *empty_at);
        for (_, key, bytes) in by_emptying {
            if self.bytes <= target {
                break;
            }
            self.buckets.remove(&key);
            self.bytes -= bytes;
        }
    }
}

pub struct MemoryBuckets {
    shards: Box<[Mutex<Shard>]>,
    /// Bytes per shard before it makes room.
    budget: usize,
    /// Picks a key's shard; seeded per process so nobody can aim keys at one shard.
    spread: std::collections::hash_map::RandomState,
}

impl Default for MemoryBuckets {
    fn default() -> Self {
        Self::with_capacity(MAX_BYTES)
    }
}

impl MemoryBuckets {
    /// Logs of at most about `max_bytes` in all.
    pub fn with_capacity(max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            budget: (max_bytes / SHARDS).max(BUCKET_OVERHEAD),
            spread: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        // The modulo of a 64-bit hash by 64 cannot truncate.
        (self.spread.hash_one(key) % SHARDS as u64) as usize
    }

    /// Decides one request against every `(key, limit)` at `now` (µs on a monotonic clock) as
    /// one step: when each limit admits it, each key counts it; when any refuses, none does.
    /// Answers what each key held before ([`Observed`], for [`Limit::verdict`]).
    pub fn decide(&self, keys: &[(&str, Limit)], now: u64) -> Vec<Observed> {
        let shard_of_key: Vec<usize> = keys.iter().map(|(key, _)| self.shard_of(key)).collect();
        let mut order = shard_of_key.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> = order
            .iter()
            .map(|&index| {
                self.shards[index]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect();
        let slot = |shard: usize| order.binary_search(&shard).unwrap_or(0);

        // Each key's time: never before its newest entry, so a log stays in order.
        let mut at = Vec::with_capacity(keys.len());
        let observed: Vec<Observed> = keys
            .iter()
            .zip(&shard_of_key)
            .map(|((key, limit), &shard)| {
                guards[slot(shard)].change(key, |bucket| {
                    let now = bucket.log.back().map_or(now, |&newest| newest.max(now));
                    at.push(now);
                    bucket.trim(limit.window_us, limit.requests, now);
                    observe(bucket, limit, now)
                })
            })
            .collect();
        let admitted = keys
            .iter()
            .zip(&observed)
            .all(|((_, limit), observed)| limit.verdict(*observed).allowed);

        for (((key, limit), &shard), &now) in keys.iter().zip(&shard_of_key).zip(&at) {
            let shard = &mut guards[slot(shard)];
            shard.change(key, |bucket| match limit.smoothing {
                Some(rate) if admitted => {
                    bucket.tat = Some(rate.held(bucket.tat, now) + rate.emission_us);
                }
                // Refused: nothing spent, but a TAT left by a stricter policy is clamped
                // for good (see `Rate::held`).
                Some(rate) => bucket.tat = bucket.tat.map(|tat| rate.capped(tat, now)),
                None => bucket.tat = None,
            });
            if admitted {
                shard.change(key, |bucket| bucket.log.push_back(now));
            } else {
                shard.forget_if_idle(key, now);
            }
        }
        for guard in &mut guards {
            guard.make_room(self.budget, now);
        }
        observed
    }

    /// Keys held now, over all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .buckets
                    .len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the logs hold now, over all shards (as counted against the bound).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }
}

/// What `bucket` (trimmed to `limit` at `now`) holds for this request.
fn observe(bucket: &Bucket, limit: &Limit, now: u64) -> Observed {
    Observed {
        in_window: bucket.log.len() as u64,
        oldest_leaves_in_us: bucket.log.front().map_or(0, |&oldest| {
            oldest.saturating_add(limit.window_us).saturating_sub(now)
        }),
        smoothing_used: limit.smoothing.map(|rate| rate.used(bucket.tat, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::window::Verdict;

    const SECOND: u64 = 1_000_000;
    const MS: u64 = 1_000;

    /// One request for `key` at `now` under `limit`, as the limiter answers it.
    fn send(buckets: &MemoryBuckets, key: &str, limit: Limit, now: u64) -> Verdict {
        limit.verdict(buckets.decide(&[(key, limit)], now)[0])
    }

    /// A reproducible spread of arrival times: `count` requests, 0 to `gap` µs apart.
    fn arrivals(count: usize, gap: u64, mut seed: u64) -> Vec<u64> {
        let mut now = 0;
        (0..count)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                now += (seed >> 33) % (gap + 1);
                now
            })
            .collect()
    }

    /// The most of `times` (sorted) in any window `(t − window, t]`.
    fn most_in_any_window(times: &[u64], window: u64) -> usize {
        let mut most = 0;
        let mut start = 0;
        for (end, &at) in times.iter().enumerate() {
            while times[start] + window <= at {
                start += 1;
            }
            most = most.max(end + 1 - start);
        }
        most
    }

    #[test]
    fn every_window_holds_at_most_the_quota_and_a_refusal_only_when_it_holds_exactly_that() {
        let buckets = MemoryBuckets::default();
        let limit = Limit::new(10, SECOND, 10);
        let mut admitted = Vec::new();
        for now in arrivals(20_000, 60 * MS, 7) {
            if send(&buckets, "alice", limit, now).allowed {
                admitted.push(now);
            } else {
                let in_window = admitted.iter().filter(|&&at| at + SECOND > now).count();
                assert_eq!(in_window, 10, "refused at {now} µs with room in the window");
            }
        }
        assert_eq!(most_in_any_window(&admitted, SECOND), 10);
    }

    #[test]
    fn thirty_requests_within_one_second_pass_exactly_ten_counting_down() {
        let buckets = MemoryBuckets::default();
        let limit = Limit::new(10, SECOND, 10);
        let verdicts: Vec<Verdict> = (0..30)
            .map(|i| send(&buckets, "alice", limit, 5 * SECOND + i * 33 * MS))
            .collect();
        let remaining: Vec<u64> = verdicts
            .iter()
            .filter(|verdict| verdict.allowed)
            .map(|verdict| verdict.remaining)
            .collect();
        assert_eq!(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        let first_refusal = verdicts[10];
        assert!(!first_refusal.allowed);
        assert_eq!(
            first_refusal.window_us,
            SECOND - 10 * 33 * MS,
            "until the first admission leaves the window"
        );
        assert!(
            send(&buckets, "bob", limit, 5 * SECOND).allowed,
            "another key is unaffected"
        );
    }

    #[test]
    fn a_client_at_exactly_the_quota_rate_is_never_refused() {
        let buckets = MemoryBuckets::default();
        let limit = Limit::new(10, SECOND, 10);
        let refused = (0..10_000u64)
            .filter(|i| !send(&buckets, "steady", limit, i * 100 * MS).allowed)
            .count();
        assert_eq!(refused, 0);
        let refused = (0..1_000u64)
            .flat_map(|second| std::iter::repeat_n(second * SECOND, 10))
            .filter(|&at| !send(&buckets, "ten-at-once", limit, at).allowed)
            .count();
        assert_eq!(refused, 0, "ten at once each second is ten per second too");
    }

    #[test]
    fn a_full_window_refills_one_as_each_oldest_entry_leaves() {
        let buckets = MemoryBuckets::default();
        let limit = Limit::new(3, SECOND, 3);
        for at in [0, 100 * MS, 200 * MS] {
            assert!(send(&buckets, "k", limit, at).allowed);
        }
        let early = send(&buckets, "k", limit, SECOND - 1);
        assert_eq!((early.allowed, early.window_us), (false, 1));
        let on_time = send(&buckets, "k", limit, SECOND);
        assert_eq!((on_time.allowed, on_time.remaining), (true, 0));
        assert_eq!(on_time.window_us, 100 * MS, "the next leaves at 1.1 s");
        assert!(
            !send(&buckets, "k", limit, SECOND).allowed,
            "one left, one came"
        );
        assert!(send(&buckets, "k", limit, SECOND + 100 * MS).allowed);
    }

    #[test]
    fn a_burst_below_the_quota_spreads_it_at_the_policy_rate_never_past_the_window() {
        let buckets = MemoryBuckets::default();
        // 10 per second, at most 2 at once: GCRA T = 100 ms, τ = 200 ms.
        let limit = Limit::new(10, SECOND, 2);
        let admitted: Vec<u64> = (0..120u64)
            .map(|i| i * 10 * MS)
            .filter(|&at| send(&buckets, "k", limit, at).allowed)
            .collect();
        let ms: Vec<u64> = admitted.iter().map(|at| at / MS).collect();
        assert_eq!(
            ms,
            [0, 10, 100, 200, 300, 400, 500, 600, 700, 800, 1000, 1010, 1100],
            "two at once, then one per 100 ms, and the tenth in a second waits for the window"
        );
    }

    #[test]
    fn a_request_refused_by_one_policy_spends_nothing_of_the_others() {
        let buckets = MemoryBuckets::default();
        let roomy = Limit::new(100, SECOND, 100);
        let tight = Limit::new(1, SECOND, 1);
        let both = [("roomy", roomy), ("tight", tight)];
        for _ in 0..50 {
            buckets.decide(&both, 0);
        }
        let roomy_alone = send(&buckets, "roomy", roomy, 0);
        assert_eq!(
            roomy_alone.remaining, 98,
            "only the request both allowed was counted"
        );
    }

    #[test]
    fn after_a_reload_relaxes_a_policy_the_old_window_holds_nobody() {
        let buckets = MemoryBuckets::default();
        let hourly = Limit::new(10, 3600 * SECOND, 10);
        for _ in 0..10 {
            assert!(send(&buckets, "alice", hourly, 0).allowed);
        }
        assert_eq!(send(&buckets, "alice", hourly, SECOND).window_secs(), 3599);
        let per_second = Limit::new(10, SECOND, 10);
        assert!(
            send(&buckets, "alice", per_second, SECOND).allowed,
            "the hour's entries left the new one-second window"
        );
        let tighter = Limit::new(1, SECOND, 1);
        let held = send(&buckets, "alice", tighter, SECOND + 1);
        assert_eq!(
            (held.allowed, held.window_us),
            (false, SECOND - 1),
            "a tightened policy holds by its own window"
        );
    }

    #[test]
    fn after_a_reload_relaxes_the_smoothing_a_far_tat_holds_nobody() {
        let buckets = MemoryBuckets::default();
        let slow = Limit::new(10, 3600 * SECOND, 1);
        assert!(send(&buckets, "alice", slow, 0).allowed);
        assert!(!send(&buckets, "alice", slow, 0).allowed);
        let relaxed = Limit::new(10, SECOND, 1);
        let refused = send(&buckets, "alice", relaxed, 0);
        assert_eq!(
            (refused.allowed, refused.window_us),
            (false, SECOND / 10),
            "one interval of the new rate, not the old six minutes"
        );
        assert!(send(&buckets, "alice", relaxed, SECOND / 10).allowed);
    }

    #[test]
    fn replicas_at_their_share_never_pass_the_policy_together_in_any_window() {
        let limit = Limit::new(50, 10 * SECOND, 50);
        for replicas in [2u64, 3, 7] {
            let share = limit.share(replicas);
            let fleet: Vec<MemoryBuckets> =
                (0..replicas).map(|_| MemoryBuckets::default()).collect();
            let mut admitted = Vec::new();
            for (i, now) in arrivals(30_000, 5 * MS, replicas).into_iter().enumerate() {
                let replica = &fleet[i % fleet.len()];
                if send(replica, "route", share, now).allowed {
                    admitted.push(now);
                }
            }
            let expected = usize::try_from(50 / replicas * replicas).unwrap();
            assert_eq!(
                most_in_any_window(&admitted, 10 * SECOND),
                expected,
                "{replicas} replicas"
            );
        }
    }

    #[test]
    fn replicas_whose_share_is_below_one_per_window_keep_the_policy_rate() {
        // 3 per 10 s over 8 replicas: each one per 26.67 s, so 8 per 26.67 s fleet-wide.
        let limit = Limit::new(3, 10 * SECOND, 3);
        let share = limit.share(8);
        let fleet: Vec<MemoryBuckets> = (0..8).map(|_| MemoryBuckets::default()).collect();
        let mut admitted = Vec::new();
        for (i, now) in arrivals(40_000, 20 * MS, 3).into_iter().enumerate() {
            if send(&fleet[i % 8], "route", share, now).allowed {
                admitted.push(now);
            }
        }
        assert_eq!(most_in_any_window(&admitted, share.window_us), 8);
        assert_eq!(
            most_in_any_window(&admitted, share.window_us * 10),
            80,
            "the policy's rate over longer spans, not 8 per 10 s"
        );
    }

    #[test]
    fn memory_stays_bounded_by_bytes_under_a_flood_of_distinct_keys() {
        let buckets = MemoryBuckets::with_capacity(64 << 10);
        let limit = Limit::new(5, 60 * SECOND, 5);
        for n in 0..100_000u64 {
            let key = format!("ip:10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
            send(&buckets, &key, limit, n);
        }
        assert!(
            buckets.bytes() <= buckets.budget * SHARDS,
            "{} bytes kept",
            buckets.bytes()
        );
        let counted: usize = buckets
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap();
                shard
                    .buckets
                    .iter()
                    .map(|(key, bucket)| bucket.bytes(key))
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(counted, buckets.bytes(), "the running count is the truth");
    }

    #[test]
    fn under_a_flood_the_keys_that_empty_soonest_are_forgotten_first() {
        let buckets = MemoryBuckets::with_capacity(64 << 10);
        let hourly = Limit::new(3, 3600 * SECOND, 3);
        for _ in 0..3 {
            assert!(send(&buckets, "busy", hourly, 0).allowed);
        }
        let minute = Limit::new(1, 60 * SECOND, 1);
        for n in 0..20_000u64 {
            send(&buckets, &format!("flood:{n}"), minute, n);
        }
        assert!(
            !send(&buckets, "busy", hourly, 20_000).allowed,
            "the key that stays full for an hour is kept; the flood's, emptying sooner, went"
        );
    }

    #[test]
    fn a_refused_request_to_a_new_key_leaves_nothing_behind() {
        let buckets = MemoryBuckets::default();
        let tight = Limit::new(1, SECOND, 1);
        send(&buckets, "tight", tight, 0);
        let roomy = Limit::new(10, SECOND, 10);
        buckets.decide(&[("tight", tight), ("fresh", roomy)], 0);
        assert_eq!(buckets.len(), 1);
    }
}
