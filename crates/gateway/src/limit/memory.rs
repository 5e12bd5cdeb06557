//! GCRA buckets in this process: the memory state's limiter, and with Redis the fallback each
//! replica counts on while Redis does not answer.
//!
//! Sharded, not lock-free: a request's policies are decided together (all allowed, or none
//! counted), so it locks the shards of its keys, in shard order (no deadlock), for a few
//! comparisons each. With 64 shards two requests rarely meet. `governor` was the alternative; it
//! decides one key at a time (a request refused by its second policy would already have spent
//! its first), its keyed store grows until someone calls `retain_recent`, and it cannot take the
//! per-replica share of a rate that changes with the number of live replicas.
//!
//! Bounded: at most [`MAX_KEYS`] keys (about 100 MB at worst). A shard that is full first drops
//! the keys whose bucket is full again (TAT ≤ now: forgetting them changes no answer); when a
//! flood of live keys (many addresses at once) fills it anyway, it forgets the eighth of its
//! keys nearest to full, so memory stays bounded and the keys forgotten are those that had the
//! least left to remember.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::gcra::Rate;

/// The most keys kept, over all shards.
pub const MAX_KEYS: usize = 1 << 20;

const SHARDS: usize = 64;

type Shard = HashMap<Box<str>, u64>;

pub struct MemoryBuckets {
    shards: Box<[Mutex<Shard>]>,
    /// Keys per shard before it sweeps.
    capacity: usize,
    /// Picks a key's shard; seeded per process so nobody can aim keys at one shard.
    spread: std::collections::hash_map::RandomState,
}

impl Default for MemoryBuckets {
    fn default() -> Self {
        Self::with_capacity(MAX_KEYS)
    }
}

impl MemoryBuckets {
    /// Buckets for at most about `max_keys` keys.
    pub fn with_capacity(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            capacity: (max_keys / SHARDS).max(8),
            spread: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        // The modulo of a 64-bit hash by 64 cannot truncate.
        (self.spread.hash_one(key) % SHARDS as u64) as usize
    }

    /// Decides one request against every `(key, rate)` at `now` (µs on a monotonic clock) as
    /// one step: when each allows it, each is counted; when any refuses, none is. Answers each
    /// key's `used` (see [`super::gcra`]).
    pub fn decide(&self, keys: &[(&str, Rate)], now: u64) -> Vec<u64> {
        let mut order: Vec<usize> = keys.iter().map(|(key, _)| self.shard_of(key)).collect();
        let shard_of_key = order.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> = order
            .iter()
            .map(|&index| {
                let guard = self.shards[index]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                (index, guard)
            })
            .collect();
        let slot = |shard: usize| order.binary_search(&shard).unwrap_or(0);
        let used: Vec<u64> = keys
            .iter()
            .zip(&shard_of_key)
            .map(|((key, rate), &shard)| {
                let tat = guards[slot(shard)].1.get(*key).copied();
                rate.used(tat, now)
            })
            .collect();
        let allowed = keys
            .iter()
            .zip(&used)
            .all(|((_, rate), &used)| rate.verdict(used).allowed);
        for (((key, rate), &shard), &used) in keys.iter().zip(&shard_of_key).zip(&used) {
            let (_, map) = &mut guards[slot(shard)];
            if allowed {
                store(map, key, now + used, now, self.capacity);
            } else if let Some(held) = map.get_mut(*key) {
                // Refused: nothing spent, but a TAT left by a stricter policy is clamped for good.
                *held = rate.capped(*held, now);
            }
        }
        used
    }

    /// Keys held now, over all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sets `key`'s TAT in `map`, making room first when the key is new and the shard full.
fn store(map: &mut Shard, key: &str, tat: u64, now: u64, capacity: usize) {
    if let Some(held) = map.get_mut(key) {
        *held = tat;
        return;
    }
    if map.len() >= capacity {
        map.retain(|_, held| *held > now);
    }
    if map.len() >= capacity {
        forget_nearest_to_full(map, capacity / 8);
    }
    map.insert(key.into(), tat);
}

/// Drops at least `count` keys, those whose TAT is nearest (their bucket closest to full).
fn forget_nearest_to_full(map: &mut Shard, count: usize) {
    let mut tats: Vec<u64> = map.values().copied().collect();
    let nth = count.clamp(1, tats.len()) - 1;
    let (_, threshold, _) = tats.select_nth_unstable(nth);
    let threshold = *threshold;
    map.retain(|_, held| *held > threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn allowed(rate: Rate, used: u64) -> bool {
        rate.verdict(used).allowed
    }

    #[test]
    fn a_key_allows_its_burst_then_refuses_and_another_key_is_unaffected() {
        let buckets = MemoryBuckets::default();
        let rate = Rate::new(SECOND / 10, 10);
        let passed = (0..30)
            .filter(|_| allowed(rate, buckets.decide(&[("alice", rate)], SECOND)[0]))
            .count();
        assert_eq!(passed, 10);
        assert!(allowed(rate, buckets.decide(&[("bob", rate)], SECOND)[0]));
    }

    #[test]
    fn a_request_refused_by_one_policy_spends_nothing_of_the_others() {
        let buckets = MemoryBuckets::default();
        let roomy = Rate::new(SECOND, 100);
        let tight = Rate::new(SECOND, 1);
        let both = [("roomy", roomy), ("tight", tight)];
        let first = buckets.decide(&both, 0);
        assert!(first.iter().zip(&both).all(|(u, (_, r))| allowed(*r, *u)));
        for _ in 0..50 {
            buckets.decide(&both, 0);
        }
        let roomy_alone = buckets.decide(&[("roomy", roomy)], 0)[0];
        assert_eq!(
            roomy.verdict(roomy_alone).remaining,
            98,
            "only the request both allowed was counted"
        );
    }

    #[test]
    fn after_a_reload_relaxes_a_policy_a_refused_retry_passes_once_the_new_rate_refilled() {
        let buckets = MemoryBuckets::default();
        let hourly = Rate::new(3600 * SECOND / 10, 10);
        for _ in 0..10 {
            assert!(allowed(hourly, buckets.decide(&[("alice", hourly)], 0)[0]));
        }
        let relaxed = Rate::new(SECOND / 10, 10);
        let refused = relaxed.verdict(buckets.decide(&[("alice", relaxed)], 0)[0]);
        assert!(!refused.allowed);
        assert!(refused.window_secs() <= 1, "{refused:?}");
        assert!(allowed(
            relaxed,
            buckets.decide(&[("alice", relaxed)], refused.window_us)[0]
        ));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
        let buckets = MemoryBuckets::with_capacity(64 * 64);
        let rate = Rate::new(SECOND * 60, 5);
        for n in 0..100_000u32 {
            let key = format!("ip:10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
            buckets.decide(&[(key.as_str(), rate)], u64::from(n));
        }
        assert!(buckets.len() <= 64 * 64, "{} keys kept", buckets.len());
    }

    #[test]
    fn under_a_flood_the_keys_nearest_to_a_full_bucket_are_forgotten_first() {
        let buckets = MemoryBuckets::with_capacity(64 * 8);
        let rate = Rate::new(SECOND, 1);
        buckets.decide(&[("busy", rate)], 100 * SECOND);
        for n in 0..10_000u64 {
            let key = format!("old:{n}");
            buckets.decide(&[(key.as_str(), rate)], n);
        }
        let again = buckets.decide(&[("busy", rate)], 100 * SECOND);
        assert!(
            !allowed(rate, again[0]),
            "the key far from full is kept; the flood's, nearer, were forgotten"
        );
    }
}
