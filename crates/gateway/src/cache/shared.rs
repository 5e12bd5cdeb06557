//! The Redis store, shared by the replicas: each primary key one hash, holding `n` (the names
//! its answers vary on, as JSON), `o` (its variants, the most recently stored first, at most
//! [`MAX_VARIANTS`]), `g` (the generation they were stored under) and per variant `m:<id>` (what
//! the answer was, as JSON), `b:<id>` (its body, raw) and `t:<id>` (when it was stored, by
//! Redis's `TIME`); the hash expires with Redis's own TTL when its last answer's stale window
//! ends. Redis's clock, not the replicas', says how old an answer is when it is read; the app's
//! [`Clock`] measures the time since (see the cache's # Time). Invalidation marks are unique
//! numbers from one counter (a mark that expired and is set again never repeats an old value).
//! A path without a
//! mark gets a new one on lookup, and an entry is stored only under its path's current mark,
//! which lives at least as long as the entry: a mark Redis evicted brings back no entry from
//! before a write.
//!
//! Each operation is one Lua script, sent by EVALSHA (`redis::Script`: the text only goes over
//! the wire again when Redis answers NOSCRIPT, after a restart or `SCRIPT FLUSH`). A lookup is
//! one round trip when the replica knows the names its key varies on (it remembers them per
//! key, bounded), two the first time it meets a key whose answers vary.
//!
//! Every command goes through the state's breaker and command timeout: while Redis does not
//! answer, lookups are misses and the request goes to the service (never a 500). A write whose
//! invalidation could not reach Redis is owed: the next command that reaches it moves the epoch
//! first, so no replica serves an entry from before that write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::key::{hex, CacheKey, Digest32};
use super::vary::{Names, MAX_VARIANTS};
use super::{Entry, Found, Freshness, Generation, Stored};
use crate::clock::Clock;
use crate::config::{MAX_CACHE_TTL, MAX_STALE_IF_ERROR};
use crate::state::Replicated;

/// Sets `KEYS[2]` (a path's mark) to the next value of the counter `KEYS[1]`, kept as long as
/// any entry may live (`ARGV[1]` ms).
static INVALIDATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local generation = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], generation, 'PX', ARGV[1])
return generation
",
    )
});

/// Reads what a request needs: the epoch `KEYS[1]`; the mark of its path `KEYS[3]`, created
/// from the counter `KEYS[2]` when Redis has none (never set, expired, or evicted under
/// `maxmemory`; read as "no write yet", a missing mark would bring back entries stored before
/// a write whose mark was evicted, while a new number matches no entry stored before), kept
/// `ARGV[1]` ms; Redis's time in ms; and from the key's hash `KEYS[4]` its names, and, when
/// they are the names the replica guessed (`ARGV[2]`), the variant `ARGV[3]`: meta, body and
/// when it was stored. Always seven values, `false` (nil) for what is not there.
static LOOKUP: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local epoch = tonumber(redis.call('GET', KEYS[1]) or '0')
local mark = redis.call('GET', KEYS[3])
if not mark then
  mark = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[3], mark, 'PX', ARGV[1])
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local names = redis.call('HGET', KEYS[4], 'n')
if names ~= ARGV[2] then
  return {epoch, tonumber(mark), now, names, false, false, false}
end
local v = ARGV[3]
local found = redis.call('HMGET', KEYS[4], 'm:' .. v, 'b:' .. v, 't:' .. v)
return {epoch, tonumber(mark), now, names, found[1], found[2], found[3]}
",
    )
});

/// Stores variant `ARGV[6]` of the key's hash `KEYS[2]` (meta `ARGV[1]`, body `ARGV[2]`, for
/// `ARGV[3]` ms) only while its path's mark `KEYS[1]` is still the generation it was fetched
/// under (`ARGV[4]`): not after a write meanwhile, nor once the mark is gone. The other
/// variants stay when they vary on the same names (`ARGV[5]`) and were stored under the same
/// generation (`ARGV[8]`, epoch and mark), the most recent `ARGV[7]` in all; else the hash
/// starts anew. The mark and the hash are kept at least as long as the new answer, so no
/// answer outlives the mark that guards it.
static INSERT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[4] then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local v = ARGV[6]
local order = {}
local same = redis.call('HMGET', KEYS[2], 'n', 'g', 'o')
if same[1] == ARGV[5] and same[2] == ARGV[8] and same[3] then
  order = cjson.decode(same[3])
else
  redis.call('DEL', KEYS[2])
end
local kept = {v}
for _, other in ipairs(order) do
  if other ~= v then
    if #kept < tonumber(ARGV[7]) then
      table.insert(kept, other)
    else
      redis.call('HDEL', KEYS[2], 'm:' .. other, 'b:' .. other, 't:' .. other)
    end
  end
end
redis.call('HSET', KEYS[2], 'n', ARGV[5], 'g', ARGV[8], 'o', cjson.encode(kept),
  'm:' .. v, ARGV[1], 'b:' .. v, ARGV[2], 't:' .. v, now)
local keep = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[2]) < keep then redis.call('PEXPIRE', KEYS[2], keep) end
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 1
",
    )
});

/// Keys whose names a replica remembers at once (a name list each: a few hundred bytes).
const REMEMBERED_NAMES: u64 = 100_000;

pub struct SharedStore {
    /// A write's invalidation did not reach Redis: move the epoch before trusting it again.
    owed: AtomicBool,
    /// The names each key's answers vary on, as last read: the lookup's guess, so a varied
    /// key is one round trip too once met.
    names: moka::sync::Cache<Digest32, Arc<(String, Names)>>,
    /// The app's: the entries it reads are stamped with its reading (see [`Stored::read`]).
    clock: Clock,
}

impl SharedStore {
    /// A store whose entries' time since they were read is measured on `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            owed: AtomicBool::new(false),
            names: moka::sync::Cache::new(REMEMBERED_NAMES),
            clock,
        }
    }
}

/// A variant's `m` field.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    status: u16,
    /// Names and base64 values (a value may hold bytes that are not text).
    headers: Vec<(String, String)>,
    generation: Generation,
    fresh_ms: u64,
    stale_ms: u64,
    #[serde(default)]
    revalidate_ms: u64,
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

/// A name list as the hash's `n` holds it: one spelling per list, so Redis compares strings.
fn names_json(names: &Names) -> String {
    serde_json::to_string(&names.to_strings()).unwrap_or_else(|_| "[]".to_owned())
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
            generation: entry.generation,
            fresh_ms: millis(entry.freshness.fresh_for),
            stale_ms: millis(entry.freshness.stale_for),
            revalidate_ms: millis(entry.freshness.revalidate_for),
            age_s: entry.freshness.age.as_secs(),
        }
    }

    /// The entry, as `stored`; `None` when it does not read back.
    fn into_entry(
        self,
        body: Vec<u8>,
        vary: Names,
        variant: Digest32,
        stored: Stored,
    ) -> Option<Entry> {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                decode(value)?,
            );
        }
        let freshness = Freshness {
            fresh_for: Duration::from_millis(self.fresh_ms),
            stale_for: Duration::from_millis(self.stale_ms),
            revalidate_for: Duration::from_millis(self.revalidate_ms),
            age: Duration::from_secs(self.age_s),
        };
        Some(Entry {
            status: StatusCode::from_u16(self.status).ok()?,
            headers,
            body: Bytes::from(body),
            vary,
            variant,
            generation: self.generation,
            freshness,
            stored,
        })
    }
}

/// What one lookup reads: the epoch, the path's mark, Redis's time (ms), the key's names, and
/// the variant's meta, body and time stored (ms).
type Read = (
    u64,
    u64,
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<u64>,
);

impl SharedStore {
    fn keys(prefix: &str) -> Keys<'_> {
        Keys { prefix }
    }

    /// The answer for `request`'s values of the names `key`'s answers vary on.
    pub async fn lookup(&self, state: &Replicated, key: &CacheKey, request: &HeaderMap) -> Found {
        let miss = Found {
            unavailable: true,
            ..Found::nothing(key, Generation::default())
        };
        let Some(prefix) = state.redis_prefix() else {
            return miss;
        };
        if !self.settle_debt(state, prefix).await {
            return miss;
        }
        let keys = Self::keys(prefix);
        let mut guess = self
            .names
            .get(&key.entry)
            .unwrap_or_else(|| Arc::new(("[]".to_owned(), Names::default())));
        // A second try at most: with the names Redis holds, when the guess was not them.
        for _ in 0..2 {
            let (json, names) = &*guess;
            let variant = names.variant(request);
            let mut invocation = LOOKUP.prepare_invoke();
            invocation
                .key(keys.epoch())
                .key(keys.counter())
                .key(keys.mark(&key.path))
                .key(keys.entry(&key.entry))
                .arg(millis(MAX_CACHE_TTL + MAX_STALE_IF_ERROR))
                .arg(json.as_str())
                .arg(hex(&variant));
            let read: Read = match state.run_script(&invocation).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::debug!(%error, "cache lookup skipped: Redis does not answer");
                    return miss;
                }
            };
            let (epoch, mark, now_ms, stored_names, meta, body, stored_ms) = read;
            let generation = Generation { epoch, path: mark };
            let mut found = Found::nothing(key, generation);
            let Some(stored_names) = stored_names else {
                return found;
            };
            if stored_names != *json {
                let Some(names) = serde_json::from_str::<Vec<String>>(&stored_names)
                    .ok()
                    .and_then(|names| Names::from_strings(&names))
                else {
                    return found;
                };
                guess = Arc::new((stored_names, names));
                self.names.insert(key.entry, Arc::clone(&guess));
                continue;
            }
            found.flight = names.flight(&key.entry, &variant);
            found.entry = match (meta, body, stored_ms) {
                (Some(meta), Some(body), Some(stored_ms)) => {
                    let resident = Duration::from_millis(now_ms.saturating_sub(stored_ms));
                    let now = self.clock.monotonic_ms();
                    let stored = Stored::read(now, resident);
                    serde_json::from_str::<Meta>(&meta)
                        .ok()
                        .and_then(|meta| meta.into_entry(body, names.clone(), variant, stored))
                        .filter(|entry| entry.generation == generation && entry.is_kept(now))
                        .map(Arc::new)
                }
                _ => None,
            };
            found.vary_miss = found.entry.is_none() && !names.is_empty();
            return found;
        }
        Found {
            unavailable: false,
            ..miss
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
        let generation = format!("{}:{}", entry.generation.epoch, entry.generation.path);
        let mut invocation = INSERT.prepare_invoke();
        invocation
            .key(keys.mark(&key.path))
            .key(keys.entry(&key.entry))
            .arg(meta)
            .arg(entry.body.as_ref())
            .arg(millis(entry.freshness.keep()).max(1))
            .arg(entry.generation.path)
            .arg(names_json(&entry.vary))
            .arg(hex(&entry.variant))
            .arg(MAX_VARIANTS)
            .arg(generation);
        if let Err(error) = state.run_script::<u64>(&invocation).await {
            tracing::debug!(%error, "answer not stored: Redis does not answer");
        }
    }

    pub async fn invalidate(&self, state: &Replicated, path: &Digest32) {
        let Some(prefix) = state.redis_prefix() else {
            return;
        };
        let keys = Self::keys(prefix);
        let mut invocation = INVALIDATE.prepare_invoke();
        invocation
            .key(keys.counter())
            .key(keys.mark(path))
            .arg(millis(MAX_CACHE_TTL + MAX_STALE_IF_ERROR));
        if let Err(error) = state.run_script::<u64>(&invocation).await {
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
