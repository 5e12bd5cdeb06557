//! The response cache: answers to GET (and HEAD) on routes that opt in (`cache:`), stored and
//! served under RFC 9111's rules for a shared cache, in this process (bounded by bytes) or in
//! Redis (shared by the replicas) when the state is Redis. The pipeline's `cache` phase
//! (`pipeline/cache.rs`) is the only caller.
//!
//! # Layout
//! - [`key`]: what makes two requests the same (per caller on routes that are not public).
//! - [`policy`]: whether an answer may be stored, and for how long it is fresh.
//! - [`memory`], [`shared`]: the two stores, with the same [`Generation`] scheme for
//!   invalidation (an unsafe request on a path moves the path's generation; entries stored under
//!   another generation are never served).
//! - [`vary`]: several answers per key, one per set of values of the headers `Vary` names.
//! - [`flight`]: request coalescing, so concurrent misses for one key make one upstream call.
//! - [`record`]: the answer's body streamed to the client while it is recorded for the store.
//! - [`location`]: the other URIs a write's answer names (`Location`, `Content-Location`).
//! - [`metrics`]: what the store holds and lets go of, and how background refreshes went.
//!
//! # Time
//! Whether an entry is fresh, may stand in, may be revalidated or is kept at all, and the `Age`
//! it is served with, are measured on the app's [`Clock`] (monotonic), read by the stores and
//! the cache phase and handed to [`Entry`]'s methods as `now`: a test moves a manual clock past
//! a lifetime instead of waiting it out. moka's own expiry, which reads moka's clock and cannot
//! be handed another, only frees memory (see [`memory`]); it never decides what is served.

pub mod flight;
pub mod key;
pub mod location;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod record;
pub mod shared;
pub mod vary;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::StatusCode;

use crate::clock::Clock;
use crate::config::CacheSettings;
use crate::state::Replicated;
pub use flight::{Flights, Landing, Seat};
pub use key::CacheKey;
pub use policy::{Freshness, NotStored};

/// RFC 9211's header, naming the gateway as the cache.
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Which writes an entry has seen: the store's epoch (moved when the store had to forget
/// invalidation marks, which invalidates everything) and its path's generation (moved by each
/// unsafe request on the path). An entry is served only under the generation it was stored at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    pub epoch: u64,
    pub path: u64,
}

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    pub status: StatusCode,
    /// The service's headers, less the hop-by-hop ones and its `Age` (recomputed when served).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The request headers the answer's `Vary` names, and the request's values for them as a
    /// digest (its secondary key): only a request with the same values is served from it.
    pub vary: vary::Names,
    pub variant: key::Digest32,
    pub generation: Generation,
    pub freshness: Freshness,
    /// Since when it has been stored, on the app's clock.
    pub stored: Stored,
}

/// Since when an entry has been stored, as readings of the app's monotonic clock (ms,
/// [`Clock::monotonic_ms`]). An entry read from Redis was stored by any replica, at a time this
/// one's clock never read: it carries how long Redis had held it when it was read, and the
/// reading of this clock then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored {
    /// The clock's reading when the entry was stored, or read from a shared store.
    at: u64,
    /// How long it had been stored by then (zero for an entry stored by this replica).
    before: Duration,
}

impl Stored {
    /// Stored at `now`.
    pub fn at(now: u64) -> Self {
        Self {
            at: now,
            before: Duration::ZERO,
        }
    }

    /// Read at `now` from a store that had held it for `resident`.
    pub fn read(now: u64, resident: Duration) -> Self {
        Self {
            at: now,
            before: resident,
        }
    }

    /// Time in the store at `now`.
    fn resident(self, now: u64) -> Duration {
        self.before + Duration::from_millis(now.saturating_sub(self.at))
    }
}

impl Entry {
    /// What the store counts against its bound.
    pub fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        u32::try_from(self.body.len() + headers + 256).unwrap_or(u32::MAX)
    }

    /// Whether `request` sends the values this entry's `Vary` names as the request that got it.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.vary.variant(request) == self.variant
    }

    /// Time in the store at `now` (a reading of the app's monotonic clock, ms).
    pub fn resident(&self, now: u64) -> Duration {
        self.stored.resident(now)
    }

    pub fn is_fresh(&self, now: u64) -> bool {
        self.resident(now) < self.freshness.fresh_for
    }

    /// Still allowed to stand in for a failing service.
    pub fn may_stand_in(&self, now: u64) -> bool {
        self.resident(now) < self.freshness.fresh_for + self.freshness.stale_for
    }

    /// Still kept: fresh, or stale within one of its windows.
    pub fn is_kept(&self, now: u64) -> bool {
        self.resident(now) < self.freshness.keep()
    }

    /// Stale, but still allowed to answer at once while it is refreshed (RFC 5861).
    pub fn may_revalidate(&self, now: u64) -> bool {
        self.resident(now) < self.freshness.fresh_for + self.freshness.revalidate_for
    }

    /// The `Age` to answer with (RFC 9111 §4.2.3): the service's plus the time in the store.
    pub fn age(&self, now: u64) -> Duration {
        self.freshness.age + self.resident(now)
    }

    /// Seconds of freshness left; negative once stale (RFC 9211 `ttl`).
    pub fn ttl_seconds(&self, now: u64) -> i64 {
        let fresh = self.freshness.fresh_for.as_secs_f64();
        let resident = self.resident(now).as_secs_f64();
        (fresh - resident).floor() as i64
    }
}

/// What a lookup found: an entry for the key (fresh or not, its generation checked), and the
/// generation an answer fetched now would be stored under.
pub struct Found {
    /// The answer stored for the request's values of the headers its `Vary` names.
    pub entry: Option<Arc<Entry>>,
    /// Answers are stored for the key, none of them for the request's values (RFC 9211
    /// `vary-miss`).
    pub vary_miss: bool,
    /// What concurrent misses for the same answer wait on together: the key, and the request's
    /// values when the stored `Vary` names them.
    pub flight: key::Digest32,
    pub generation: Generation,
    /// The store could not be asked (Redis down): nothing is stored either, the request goes
    /// to the service.
    pub unavailable: bool,
}

impl Found {
    /// Nothing stored for `key` under `generation` (the store answered).
    pub fn nothing(key: &CacheKey, generation: Generation) -> Self {
        Self {
            entry: None,
            vary_miss: false,
            flight: key.entry,
            generation,
            unavailable: false,
        }
    }
}

/// A map of `pairs`, for tests.
#[cfg(test)]
pub fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// Where entries live.
pub enum Store {
    Memory(memory::MemoryStore),
    Redis(shared::SharedStore),
}

/// The cache: its store and the requests in flight per key.
pub struct ResponseCache {
    store: Store,
    pub flights: Flights,
    /// What the answers being recorded may hold at once, in bytes (the memory bound).
    pub recording: record::Budget,
    pub metrics: metrics::CacheMetrics,
    /// The app's: what the cache phase measures its entries' time in the store on.
    pub clock: Clock,
}

impl ResponseCache {
    /// In memory, or in Redis when the state is Redis (`redis`); its families registered in
    /// `registry`; its entries' time in the store measured on `clock` (see # Time above).
    pub fn new(
        settings: &CacheSettings,
        redis: bool,
        registry: &kit::observe::Metrics,
        clock: Clock,
    ) -> Self {
        let metrics = metrics::CacheMetrics::default();
        let store = if redis {
            metrics.register(registry, None);
            Store::Redis(shared::SharedStore::new(clock.clone()))
        } else {
            let memory = memory::MemoryStore::new(settings.memory_bytes, &metrics, clock.clone());
            metrics.register(registry, Some((&memory, settings.memory_bytes)));
            Store::Memory(memory)
        };
        Self {
            store,
            flights: Flights::default(),
            recording: record::Budget::new(settings.memory_bytes),
            metrics,
            clock,
        }
    }

    /// The answer stored for `key` that `request` may be served (see [`vary`]).
    pub async fn lookup(&self, state: &Replicated, key: &CacheKey, request: &HeaderMap) -> Found {
        match &self.store {
            Store::Memory(memory) => memory.lookup(key, request),
            Store::Redis(redis) => redis.lookup(state, key, request).await,
        }
    }

    /// Stores `entry` under `key` (in Redis, in the background: the answer does not wait).
    pub fn store(&self, state: &Arc<crate::app::AppState>, key: CacheKey, entry: Arc<Entry>) {
        match &self.store {
            Store::Memory(memory) => memory.insert(key, entry),
            Store::Redis(_) => {
                let app = Arc::clone(state);
                tokio::spawn(async move {
                    if let Store::Redis(redis) = &app.cache.store {
                        redis.insert(&app.shared, &key, &entry).await;
                    }
                });
            }
        }
    }

    /// Every entry of the path `path_key`, for every query and caller, is no longer served.
    pub async fn invalidate(&self, state: &Replicated, path_key: &key::Digest32) {
        match &self.store {
            Store::Memory(memory) => memory.invalidate(path_key),
            Store::Redis(redis) => redis.invalidate(state, path_key).await,
        }
    }
}
