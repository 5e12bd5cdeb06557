//! The in-memory store: moka, weighted by bytes (bodies and headers), each entry expiring when
//! its stale window ends. Invalidation marks (a path's generation) live beside it, bounded too;
//! when one must be forgotten to make room, the epoch moves, which invalidates every entry: the
//! store may forget that a path was written, but never serve an entry from before the write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

use super::key::{CacheKey, Digest32};
use super::{Entry, Found, Generation};
use crate::config::{MAX_CACHE_TTL, MAX_STALE_IF_ERROR};

/// Paths with an invalidation mark at once, at most.
const MAX_MARKS: u64 = 1_000_000;

pub struct MemoryStore {
    entries: Cache<Digest32, Arc<Entry>>,
    /// Each written path's generation; kept as long as any entry can live.
    marks: Cache<Digest32, u64>,
    /// Generations handed out, so a mark forgotten and set again never repeats a value.
    next: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
}

/// Each entry expires when it may no longer stand in for a failing service.
struct UntilStale;

impl Expiry<Digest32, Arc<Entry>> for UntilStale {
    fn expire_after_create(
        &self,
        _key: &Digest32,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.freshness.keep())
    }

    /// A replaced entry (a stale one answered anew, a vary-miss) lives as long as the new
    /// answer may: without this moka keeps the first entry's deadline, and the new one's
    /// `stale_if_error` window would be cut short by the old one's.
    fn expire_after_update(
        &self,
        _key: &Digest32,
        entry: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.freshness.keep())
    }
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> Self {
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
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Digest32, entry: &Arc<Entry>| entry.weight())
            .expire_after(UntilStale)
            .build();
        Self {
            entries,
            marks,
            next: Arc::new(AtomicU64::new(1)),
            epoch,
        }
    }

    fn generation(&self, path: &Digest32) -> Generation {
        Generation {
            epoch: self.epoch.load(Ordering::Acquire),
            path: self.marks.get(path).unwrap_or(0),
        }
    }

    pub fn lookup(&self, key: &CacheKey) -> Found {
        let generation = self.generation(&key.path);
        let entry = self
            .entries
            .get(&key.entry)
            .filter(|entry| entry.generation == generation && entry.may_stand_in());
        Found {
            entry,
            generation,
            unavailable: false,
        }
    }

    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        // Written meanwhile: the answer may predate the write, so it is not kept.
        if entry.generation != self.generation(&key.path) {
            return;
        }
        self.entries.insert(key.entry, entry);
    }

    pub fn invalidate(&self, path: &Digest32) {
        let generation = self.next.fetch_add(1, Ordering::AcqRel);
        self.marks.insert(*path, generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Freshness;

    fn entry(keep: Duration) -> Arc<Entry> {
        Arc::new(Entry {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(b"answer"),
            vary: Vec::new(),
            generation: Generation::default(),
            freshness: Freshness {
                fresh_for: keep,
                stale_for: Duration::ZERO,
                age: Duration::ZERO,
            },
            stored_at: tokio::time::Instant::now(),
        })
    }

    #[test]
    fn a_replaced_entry_lives_as_long_as_the_new_answer_may() {
        let store = MemoryStore::new(1 << 20);
        let key = CacheKey {
            entry: [7; 32],
            path: [8; 32],
        };
        let first_deadline = Instant::now() + Duration::from_millis(20);
        store.insert(key, entry(Duration::from_millis(20)));
        store.insert(key, entry(Duration::from_secs(3600)));
        // Past the first entry's deadline (a deadline passed, not a timed assertion: with the
        // replaced deadline the entry is there whatever the load, for an hour).
        while Instant::now() <= first_deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            store.lookup(&key).entry.is_some(),
            "the new answer keeps its own hour, not the old one's 20 ms"
        );
    }
}
