//! The in-memory store: moka, weighted by bytes (bodies and headers), one item per primary key
//! holding its variants (see [`super::vary`]), expiring when the last of them may no longer
//! serve. Invalidation marks (a path's generation) live beside it, bounded too;
//! when one must be forgotten to make room, the epoch moves, which invalidates every entry: the
//! store may forget that a path was written, but never serve an entry from before the write.
//!
//! Two clocks, two jobs. What is served is decided on the app's [`Clock`]: a lookup serves only
//! an answer still kept at the clock's reading, and a stored key's lifetime is what its answers
//! have left by that reading. moka's expiry reads moka's own clock (it takes no other), so it is
//! only the memory bound in time: it frees a key once that lifetime has passed in real time.
//! With the system clock the two agree; with a test's manual clock moka may hold a key the
//! lookup no longer serves, which costs memory only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

use http::HeaderMap;
use moka::ops::compute::Op;

use super::key::{CacheKey, Digest32};
use super::metrics::CacheMetrics;
use super::vary::{Names, MAX_VARIANTS};
use super::{Entry, Found, Generation};
use crate::clock::Clock;
use crate::config::{MAX_CACHE_TTL, MAX_STALE_IF_ERROR};

/// Paths with an invalidation mark at once, at most.
const MAX_MARKS: u64 = 1_000_000;

/// The answers stored for one primary key: the names the latest varies on, and the answers
/// for those names, the most recently stored first (at most [`MAX_VARIANTS`]).
pub struct Variants {
    names: Names,
    answers: Vec<Arc<Entry>>,
}

impl Variants {
    fn weight(&self) -> u32 {
        self.answers
            .iter()
            .fold(0u32, |total, entry| total.saturating_add(entry.weight()))
    }

    /// From `now` until the last answer is no longer kept.
    fn lifetime(&self, now: u64) -> Duration {
        self.answers
            .iter()
            .map(|entry| entry.freshness.keep().saturating_sub(entry.resident(now)))
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// Handles on shared state: clones are the same store (the metrics read it at each scrape).
#[derive(Clone)]
pub struct MemoryStore {
    entries: Cache<Digest32, Arc<Variants>>,
    /// The bound, in bytes (`cache.memory`).
    max_bytes: u64,
    /// Bytes inserted since the store last settled its bookkeeping: moka applies inserts and
    /// evicts in batches (every 64 writes or 300 ms), so without this the store could hold up
    /// to 64 entries of `max_body` beyond its bound between two batches.
    unsettled: Arc<AtomicU64>,
    /// Each written path's generation; kept as long as any entry can live.
    marks: Cache<Digest32, u64>,
    /// Generations handed out, so a mark forgotten and set again never repeats a value.
    next: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
    /// The app's: what is kept is decided on it (see the module docs).
    clock: Clock,
}

/// A key's answers expire when the last of them may no longer serve (fresh or stale), by the
/// app's clock's reading when they are stored; moka counts that lifetime down on its own clock.
struct UntilStale(Clock);

impl Expiry<Digest32, Arc<Variants>> for UntilStale {
    fn expire_after_create(
        &self,
        _key: &Digest32,
        variants: &Arc<Variants>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(variants.lifetime(self.0.monotonic_ms()))
    }

    /// Replaced (a stale answer answered anew, a new variant), the key lives as long as its
    /// answers now may: without this moka keeps the first deadline, and the new answer's
    /// `stale_if_error` window would be cut short by the old one's.
    fn expire_after_update(
        &self,
        _key: &Digest32,
        variants: &Arc<Variants>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(variants.lifetime(self.0.monotonic_ms()))
    }
}

impl MemoryStore {
    /// A store of at most `max_bytes`, counting what it lets go of in `metrics`, serving what
    /// `clock` says is still kept.
    pub fn new(max_bytes: u64, metrics: &CacheMetrics, clock: Clock) -> Self {
        let epoch = Arc::new(AtomicU64::new(0));
        let forgotten = Arc::clone(&epoch);
        let marks = Cache::builder()
            .max_capacity(MAX_MARKS)
            .time_to_live(MAX_CACHE_TTL + MAX_STALE_IF_ERROR)
            .eviction_listener(move |_path, _generation, cause| {
                if cause == RemovalCause::Size {
                    forgotten.fetch_add(1, Ordering::AcqRel);
                }
            })
            .build();
        let (size, expired) = (metrics.evictions("size"), metrics.evictions("expired"));
        // moka's TinyLFU admission: once full, a new key is kept only if it has been asked for
        // more often than what it would evict, so a flood of one-off keys (distinct queries)
        // is refused admission rather than pushing out the answers others keep asking for.
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Digest32, variants: &Arc<Variants>| variants.weight())
            .expire_after(UntilStale(clock.clone()))
            .eviction_listener(move |_key, _variants, cause| match cause {
                // Evicted to make room, or refused admission: both are the bound at work.
                RemovalCause::Size => {
                    size.inc();
                }
                RemovalCause::Expired => {
                    expired.inc();
                }
                // Replaced by a newer answer, or removed on purpose: not an eviction.
                RemovalCause::Replaced | RemovalCause::Explicit => {}
            })
            .build();
        Self {
            entries,
            max_bytes,
            unsettled: Arc::new(AtomicU64::new(0)),
            marks,
            next: Arc::new(AtomicU64::new(1)),
            epoch,
            clock,
        }
    }

    fn generation(&self, path: &Digest32) -> Generation {
        Generation {
            epoch: self.epoch.load(Ordering::Acquire),
            path: self.marks.get(path).unwrap_or(0),
        }
    }

    /// The answer for `request`'s values of the names `key`'s answers vary on.
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Found {
        let generation = self.generation(&key.path);
        let mut found = Found::nothing(key, generation);
        let Some(variants) = self.entries.get(&key.entry) else {
            return found;
        };
        let now = self.clock.monotonic_ms();
        let usable = |entry: &&Arc<Entry>| entry.generation == generation && entry.is_kept(now);
        let variant = variants.names.variant(request);
        found.flight = variants.names.flight(&key.entry, &variant);
        found.entry = variants
            .answers
            .iter()
            .filter(usable)
            .find(|entry| entry.variant == variant)
            .cloned();
        found.vary_miss = found.entry.is_none() && variants.answers.iter().any(|e| usable(&e));
        found
    }

    /// Stores `entry` beside the other variants of its key, in place of the one for the same
    /// values; past [`MAX_VARIANTS`] the least recently stored goes. An answer that varies on
    /// other names than the stored ones replaces them all: the service changed what it varies
    /// on, and answers selected by the old names would never be found again.
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        // Written meanwhile: the answer may predate the write, so it is not kept.
        if entry.generation != self.generation(&key.path) {
            return;
        }
        let now = self.clock.monotonic_ms();
        // Per key, one computation at a time: two variants stored at once both stay.
        self.entries.entry(key.entry).and_compute_with(|stored| {
            let mut answers: Vec<Arc<Entry>> = Vec::with_capacity(MAX_VARIANTS);
            answers.push(Arc::clone(&entry));
            if let Some(stored) = stored.map(moka::Entry::into_value) {
                if stored.names == entry.vary {
                    let others = stored.answers.iter().filter(|other| {
                        other.variant != entry.variant
                            && other.generation == entry.generation
                            && other.is_kept(now)
                    });
                    answers.extend(others.take(MAX_VARIANTS - 1).cloned());
                }
            }
            Op::Put(Arc::new(Variants {
                names: entry.vary.clone(),
                answers,
            }))
        });
        self.settle_past_the_bound(u64::from(entry.weight()));
    }

    /// After an insert of `weight` bytes: when what the store last counted plus what was
    /// inserted since could pass the bound, moka's pending work is done now (eviction,
    /// admission), so what the store holds stays within its bound by at most the entries being
    /// inserted at this moment. On a full store that is once per insert, i.e. per stored miss,
    /// which has just cost an upstream round trip; hits never pay it.
    fn settle_past_the_bound(&self, weight: u64) {
        let unsettled = self.unsettled.fetch_add(weight, Ordering::AcqRel) + weight;
        if self.entries.weighted_size().saturating_add(unsettled) > self.max_bytes {
            self.unsettled.store(0, Ordering::Release);
            self.entries.run_pending_tasks();
        }
    }

    /// Keys held (each with its variants), after moka applied its pending work.
    pub fn keys(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// What the stored answers weigh, in bytes (after moka applied its pending work).
    pub fn weighted_bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    pub fn invalidate(&self, path: &Digest32) {
        let generation = self.next.fetch_add(1, Ordering::AcqRel);
        self.marks.insert(*path, generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Freshness, Stored};
    use crate::clock::ManualClock;

    /// The manual clock's first reading: the tests' entries are stored then.
    const START: u64 = 1;

    /// A store on a manual clock, which stands at [`START`] until the test moves it.
    fn store(max_bytes: u64, metrics: &CacheMetrics) -> (MemoryStore, Arc<ManualClock>) {
        let time = ManualClock::starting_now();
        (MemoryStore::new(max_bytes, metrics, (&time).into()), time)
    }

    fn entry(keep: Duration) -> Arc<Entry> {
        sized(keep, 6, &Names::default(), &HeaderMap::new())
    }

    /// An answer of `body` bytes for `request`, varying on `names`.
    fn sized(keep: Duration, body: usize, names: &Names, request: &HeaderMap) -> Arc<Entry> {
        Arc::new(Entry {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(vec![b'x'; body]),
            vary: names.clone(),
            variant: names.variant(request),
            generation: Generation::default(),
            freshness: Freshness {
                fresh_for: keep,
                stale_for: Duration::ZERO,
                revalidate_for: Duration::ZERO,
                age: Duration::ZERO,
            },
            stored: Stored::at(START),
        })
    }

    fn key(n: u8) -> CacheKey {
        CacheKey {
            entry: [n; 32],
            path: [n; 32],
        }
    }

    fn asking(language: &str) -> HeaderMap {
        let mut request = HeaderMap::new();
        request.insert("accept-language", language.parse().unwrap());
        request
    }

    fn by_language() -> Names {
        let mut answer = HeaderMap::new();
        answer.insert("vary", "Accept-Language".parse().unwrap());
        Names::of(&answer).unwrap()
    }

    #[test]
    fn the_store_evicts_by_bytes_and_stays_under_its_bound() {
        let bound = 64 * 1024;
        let store = store(bound, &CacheMetrics::default()).0;
        let hour = Duration::from_secs(3600);
        // Twenty answers of 8 KiB: 160 KiB offered to a store of 64 KiB.
        for n in 0..20 {
            store.insert(
                key(n),
                sized(hour, 8 * 1024, &Names::default(), &HeaderMap::new()),
            );
            assert!(
                store.weighted_bytes() <= bound,
                "after {n}: {} bytes held",
                store.weighted_bytes()
            );
        }
        let kept = (0..20)
            .filter(|n| store.lookup(&key(*n), &HeaderMap::new()).entry.is_some())
            .count();
        assert!((1..=7).contains(&kept), "some go, some stay: {kept} kept");
        assert!(
            store.weighted_bytes() > bound / 2,
            "the bound is used, not emptied"
        );

        // One answer larger than the whole bound is never held.
        store.insert(
            key(99),
            sized(hour, 128 * 1024, &Names::default(), &HeaderMap::new()),
        );
        assert!(store.weighted_bytes() <= bound);
        assert!(store.lookup(&key(99), &HeaderMap::new()).entry.is_none());
    }

    /// What the map holds at this moment, inserts moka has not yet accounted for included.
    fn held(store: &MemoryStore) -> u64 {
        store
            .entries
            .iter()
            .map(|(_, variants)| u64::from(variants.weight()))
            .sum()
    }

    #[test]
    fn the_bound_holds_between_mokas_batches_and_evictions_are_counted() {
        let bound = 64 * 1024;
        let metrics = CacheMetrics::default();
        let (store, _time) = store(bound, &metrics);
        let hour = Duration::from_secs(3600);
        let one = u64::from(sized(hour, 8 * 1024, &Names::default(), &HeaderMap::new()).weight());
        // Twenty inserts in a row: fewer than moka's batch of 64 writes, within its 300 ms.
        for n in 0..20 {
            store.insert(
                key(n),
                sized(hour, 8 * 1024, &Names::default(), &HeaderMap::new()),
            );
            assert!(
                held(&store) <= bound + one,
                "after {n}: {} bytes in the map, past the bound by more than the entry being stored",
                held(&store)
            );
        }
        assert!(
            metrics.evictions("size").get() >= 12,
            "what did not fit was counted: {}",
            metrics.evictions("size").get()
        );
        assert_eq!(metrics.evictions("expired").get(), 0);
    }

    /// The one test that waits in real time: moka's expiry runs on moka's clock, which takes no
    /// other (see the module docs), so the 20 ms are waited out by polling, not moved.
    #[test]
    fn an_expired_answer_is_counted_as_such() {
        let metrics = CacheMetrics::default();
        let (store, _time) = store(1 << 20, &metrics);
        store.insert(key(1), entry(Duration::from_millis(20)));
        kit::testing::wait::wait_for_blocking("the expiry counted", || {
            store.weighted_bytes();
            (metrics.evictions("expired").get() == 1).then_some(())
        });
        assert_eq!(store.keys(), 0);
        assert_eq!(metrics.evictions("size").get(), 0);
    }

    #[test]
    fn each_variant_of_a_key_is_kept_and_a_new_one_evicts_only_the_oldest_past_the_bound() {
        let store = store(1 << 20, &CacheMetrics::default()).0;
        let hour = Duration::from_secs(3600);
        let names = by_language();
        let languages: Vec<String> = (0..=MAX_VARIANTS).map(|n| format!("l{n}")).collect();
        for language in &languages[..2] {
            store.insert(key(1), sized(hour, 10, &names, &asking(language)));
        }
        for language in &languages[..2] {
            assert!(
                store.lookup(&key(1), &asking(language)).entry.is_some(),
                "{language}: a new variant does not evict the others"
            );
        }
        let other = store.lookup(&key(1), &asking("zz"));
        assert!(other.entry.is_none() && other.vary_miss);
        assert_ne!(
            other.flight,
            store.lookup(&key(1), &asking("l0")).flight,
            "misses for different variants do not wait on each other"
        );

        for language in &languages[2..] {
            store.insert(key(1), sized(hour, 10, &names, &asking(language)));
        }
        assert!(
            store.lookup(&key(1), &asking("l0")).entry.is_none(),
            "past {MAX_VARIANTS} the least recently stored goes"
        );
        for language in &languages[1..] {
            assert!(store.lookup(&key(1), &asking(language)).entry.is_some());
        }

        // The service stops varying: the answer that does not vary replaces them all.
        store.insert(
            key(1),
            sized(hour, 10, &Names::default(), &HeaderMap::new()),
        );
        assert!(store.lookup(&key(1), &asking("l5")).entry.is_some());
        assert_eq!(store.lookup(&key(1), &asking("l5")).flight, key(1).entry);
    }

    #[test]
    fn an_answer_is_served_until_the_apps_clock_passes_its_lifetime_whatever_moka_holds() {
        let (store, time) = store(1 << 20, &CacheMetrics::default());
        let request = HeaderMap::new();
        store.insert(key(1), entry(Duration::from_secs(60)));

        time.advance(Duration::from_millis(59_999));
        assert!(store.lookup(&key(1), &request).entry.is_some());

        time.advance(Duration::from_millis(1));
        assert!(
            store.lookup(&key(1), &request).entry.is_none(),
            "its minute is over on the app's clock, though moka's has barely moved"
        );
        assert_eq!(
            store.keys(),
            1,
            "moka still holds it: memory, not an answer"
        );
    }

    #[test]
    fn a_replaced_entry_lives_as_long_as_the_new_answer_may() {
        let (store, time) = store(1 << 20, &CacheMetrics::default());
        let key = CacheKey {
            entry: [7; 32],
            path: [8; 32],
        };
        store.insert(key, entry(Duration::from_millis(20)));
        store.insert(key, entry(Duration::from_secs(3600)));

        time.advance(Duration::from_millis(21));
        assert!(
            store.lookup(&key, &HeaderMap::new()).entry.is_some(),
            "the new answer keeps its own hour, not the old one's 20 ms"
        );
    }

    #[test]
    fn moka_frees_a_replaced_key_when_the_new_answer_ends_not_when_the_old_one_would_have() {
        let time = ManualClock::starting_now();
        let expiry = UntilStale((&time).into());
        let replaced = Arc::new(Variants {
            names: Names::default(),
            answers: vec![entry(Duration::from_secs(3600))],
        });
        time.advance(Duration::from_secs(600));

        let old_deadline = Some(Duration::from_millis(20));
        assert_eq!(
            expiry.expire_after_update(&[7; 32], &replaced, Instant::now(), old_deadline),
            Some(Duration::from_secs(3000)),
            "what the new answer has left on the app's clock"
        );
    }
}
