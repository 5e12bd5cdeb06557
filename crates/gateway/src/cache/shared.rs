//! The Redis store, shared by the replicas: each entry one hash (`m`: what the answer was, as
//! JSON; `b`: its body, raw) expiring with Redis's own TTL when its stale window ends, so Redis's
//! clock, not the replicas', says how old it is. Invalidation marks are unique numbers from one
//! counter (a mark that expired and is set again never repeats an old value). A path without a
//! mark gets a new one on lookup, and an entry is stored only under its path's current mark,
//! which lives at least as long as the entry: a mark Redis evicted brings back no entry from
//! before a write.
//!
//! Every command goes through the state's breaker and command timeout: while Redis does not
//! answer, lookups are misses and the request goes to the service (never a 500). A write whose
//! invalidation could not reach Redis is owed: the next command that reaches it moves the epoch
//! first, so no replica serves an entry from before that write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use tokio::time::Instant;

use super::key::{hex, CacheKey, Digest32};
use super::{Entry, Found, Freshness, Generation};
use crate::config::{MAX_CACHE_TTL, MAX_STALE_IF_ERROR};
use crate::state::Replicated;

/// Sets `KEYS[2]` (a path's mark) to the next value of the counter `KEYS[1]`, kept as long as
/// any entry may live (`ARGV[1]` ms).
const INVALIDATE: &str = r"
local generation = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], generation, 'PX', ARGV[1])
return generation
";

/// The mark of the path `KEYS[2]`, created from the counter `KEYS[1]` when Redis has none (never
/// set, expired, or evicted under `maxmemory`), kept `ARGV[1]` ms. Read as "no write yet" (0), a
/// missing mark would bring back entries stored before a write whose mark was evicted; a new
/// number matches no entry stored before.
const MARK: &str = r"
local mark = redis.call('GET', KEYS[2])
if mark then return tonumber(mark) end
local generation = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], generation, 'PX', ARGV[1])
return generation
";

/// Stores the entry `KEYS[2]` (fields `m` = `ARGV[1]`, `b` = `ARGV[2]`, for `ARGV[3]` ms) only
/// while its path's mark `KEYS[1]` is still the generation it was fetched under (`ARGV[4]`):
/// not after a write meanwhile, nor once the mark is gone. The mark is kept at least as long as
/// the entry, so the entry cannot outlive the mark that guards it.
const INSERT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[2], 'm', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
";

#[derive(Default)]
pub struct SharedStore {
    /// A write's invalidation did not reach Redis: move the epoch before trusting it again.
    owed: AtomicBool,
}

/// An entry as its `m` field holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    status: u16,
    /// Names and base64 values (a value may hold bytes that are not text).
    headers: Vec<(String, String)>,
    /// Names and digests of the request's values (never the values: credentials stay out).
    vary: Vec<(String, Option<Digest32>)>,
    generation: Generation,
    fresh_ms: u64,
    stale_ms: u64,
    age_s: u64,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn encode(value: &HeaderValue) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
}

fn decode(text: &str) -> Option<HeaderValue> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    HeaderValue::from_bytes(&bytes).ok()
}

impl Meta {
    fn of(entry: &Entry) -> Self {
        Self {
            status: entry.status.as_u16(),
            headers: entry
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), encode(value)))
                .collect(),
            vary: entry
                .vary
                .iter()
                .map(|(name, digest)| (name.as_str().to_owned(), *digest))
                .collect(),
            generation: entry.generation,
            fresh_ms: millis(entry.freshness.fresh_for),
            stale_ms: millis(entry.freshness.stale_for),
            age_s: entry.freshness.age.as_secs(),
        }
    }

    /// The entry, `remaining` before Redis expires it; `None` when it does not read back.
    fn into_entry(self, body: Vec<u8>, remaining: Duration) -> Option<Entry> {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                decode(value)?,
            );
        }
        let mut vary = Vec::with_capacity(self.vary.len());
        for (name, digest) in &self.vary {
            vary.push((HeaderName::from_bytes(name.as_bytes()).ok()?, *digest));
        }
        let freshness = Freshness {
            fresh_for: Duration::from_millis(self.fresh_ms),
            stale_for: Duration::from_millis(self.stale_ms),
            age: Duration::from_secs(self.age_s),
        };
        let resident = freshness.keep().saturating_sub(remaining);
        let now = Instant::now();
        Some(Entry {
            status: StatusCode::from_u16(self.status).ok()?,
            headers,
            body: Bytes::from(body),
            vary,
            generation: self.generation,
            freshness,
            stored_at: now.checked_sub(resident).unwrap_or(now),
        })
    }
}

/// What one lookup reads: the epoch, the path's mark, the entry's two fields, its TTL (ms).
type Read = (Option<u64>, u64, (Option<String>, Option<Vec<u8>>), i64);

impl SharedStore {
    fn keys(prefix: &str) -> Keys<'_> {
        Keys { prefix }
    }

    pub async fn lookup(&self, state: &Replicated, key: &CacheKey) -> Found {
        let miss = |generation| Found {
            entry: None,
            generation,
            unavailable: true,
        };
        let Some(prefix) = state.redis_prefix() else {
            return miss(Generation::default());
        };
        if !self.settle_debt(state, prefix).await {
            return miss(Generation::default());
        }
        let keys = Self::keys(prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(keys.epoch())
            .cmd("EVAL")
            .arg(MARK)
            .arg(2)
            .arg(keys.counter())
            .arg(keys.mark(&key.path))
            .arg(millis(MAX_CACHE_TTL + MAX_STALE_IF_ERROR))
            .cmd("HMGET")
            .arg(keys.entry(&key.entry))
            .arg("m")
            .arg("b")
            .cmd("PTTL")
            .arg(keys.entry(&key.entry));
        let read: Read = match state.cache_query(&pipe).await {
            Some(Ok(read)) => read,
            Some(Err(error)) => {
                tracing::debug!(%error, "cache lookup skipped: Redis does not answer");
                return miss(Generation::default());
            }
            None => return miss(Generation::default()),
        };
        let (epoch, mark, (meta, body), ttl_ms) = read;
        let generation = Generation {
            epoch: epoch.unwrap_or(0),
            path: mark,
        };
        let entry = match (meta, body) {
            (Some(meta), Some(body)) if ttl_ms > 0 => serde_json::from_str::<Meta>(&meta)
                .ok()
                .and_then(|meta| {
                    let remaining = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
                    meta.into_entry(body, remaining)
                })
                .filter(|entry| entry.generation == generation && entry.may_stand_in())
                .map(Arc::new),
            _ => None,
        };
        Found {
            entry,
            generation,
            unavailable: false,
        }
    }

    pub async fn insert(&self, state: &Replicated, key: &CacheKey, entry: &Entry) {
        let Some(prefix) = state.redis_prefix() else {
            return;
        };
        let Ok(meta) = serde_json::to_string(&Meta::of(entry)) else {
            return;
        };
        let keys = Self::keys(prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(INSERT)
            .arg(2)
            .arg(keys.mark(&key.path))
            .arg(keys.entry(&key.entry))
            .arg(meta)
            .arg(entry.body.as_ref())
            .arg(millis(entry.freshness.keep()).max(1))
            .arg(entry.generation.path);
        if let Some(Err(error)) = state.cache_query::<(u64,)>(&pipe).await {
            tracing::debug!(%error, "answer not stored: Redis does not answer");
        }
    }

    pub async fn invalidate(&self, state: &Replicated, path: &Digest32) {
        let Some(prefix) = state.redis_prefix() else {
            return;
        };
        let keys = Self::keys(prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(INVALIDATE)
            .arg(2)
            .arg(keys.counter())
            .arg(keys.mark(path))
            .arg(millis(MAX_CACHE_TTL + MAX_STALE_IF_ERROR));
        if let Some(Err(error)) = state.cache_query::<(u64,)>(&pipe).await {
            self.owed.store(true, Ordering::Release);
            tracing::warn!(%error, "cache invalidation owed: Redis does not answer; every entry is dropped when it does");
        }
    }

    /// Moves the epoch if an invalidation is owed; whether Redis may be trusted now.
    async fn settle_debt(&self, state: &Replicated, prefix: &str) -> bool {
        if !self.owed.load(Ordering::Acquire) {
            return true;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(Self::keys(prefix).epoch());
        match state.cache_query::<(u64,)>(&pipe).await {
            Some(Ok(_)) => {
                self.owed.store(false, Ordering::Release);
                tracing::info!("owed cache invalidation settled: every shared entry dropped");
                true
            }
            _ => false,
        }
    }
}

/// The store's key names, under the state's prefix.
struct Keys<'a> {
    prefix: &'a str,
}

impl Keys<'_> {
    fn epoch(&self) -> String {
        format!("{}:cache:epoch", self.prefix)
    }

    fn counter(&self) -> String {
        format!("{}:cache:generations", self.prefix)
    }

    fn mark(&self, path: &Digest32) -> String {
        format!("{}:cache:path:{}", self.prefix, hex(path))
    }

    fn entry(&self, entry: &Digest32) -> String {
        format!("{}:cache:entry:{}", self.prefix, hex(entry))
    }
}
