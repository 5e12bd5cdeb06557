//! State every gateway replica must agree on: revoked access tokens (`jti` denylist), ended
//! sessions, per-user revocation cut-offs, and login-throttle counters.
//!
//! Checks on the hot path never leave the process: each replica keeps a local [`Mirror`] of the
//! revocations. A revocation is applied to the mirror first (it holds on this replica at once),
//! then published through Redis (the fast channel to the other replicas) and recorded in the
//! store (the source of truth: a replica loads the live revocations from it at start and after
//! Redis comes back, so a Redis restarted without persistence forgets nothing). A store write
//! that meets an outage is queued and retried until it lands.
//!
//! Redis is behind short timeouts and a breaker (`redis_state.rs`): after a failure it is
//! skipped, so no request waits on it, until a background probe finds it back. Meanwhile
//! throttle counts are this replica's own shadow counts, which it keeps all the time (so a trip
//! resets nobody), against its share of each limit (the limit divided by the replicas last known
//! to be live, at least 1: together no more than the limit), and revocations reach the other
//! replicas through the store when Redis returns.

pub mod mirror;
mod redis_state;
mod throttle;
pub mod watchers;

use std::sync::Arc;
use std::time::Duration;

pub use mirror::Mirror;
pub use redis_state::TIMEOUTS_TO_TRIP;
pub use throttle::Attempts;

use self::redis_state::RedisState;
use self::throttle::LocalCounters;
use crate::clock::Clock;
use crate::store::{Store, StoreWrite, WriteError, Written};

/// Where shared state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSettings {
    Memory,
    Redis {
        /// May hold a password: `Debug` masks it.
        url: kit::config::SecretUrl,
        prefix: String,
        options: RedisOptions,
    },
}

/// How the gateway uses Redis: short waits, so an outage costs a request at most one short
/// wait, and how often it looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisOptions {
    /// Opening a connection.
    pub connect: Duration,
    /// One command (or pipeline) waiting for its answer.
    pub command: Duration,
    /// While Redis is down, how often a background probe checks whether it is back.
    pub probe_interval: Duration,
    /// How often the store is read for revocations recorded since the last look: the safety net
    /// for a replica whose subscription stayed up while the revoking replica could not reach
    /// Redis (a partition between them).
    pub store_sync: Duration,
    /// The fewest replicas the fleet is taken to have while Redis is down (`state.replicas`,
    /// default 1): a replica started during an outage has never learnt how many are live, and
    /// one that last saw fewer than the deployment runs would allow more than its share.
    pub expected_replicas: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            connect: Duration::from_millis(250),
            command: Duration::from_millis(250),
            probe_interval: Duration::from_secs(1),
            store_sync: Duration::from_secs(5),
            expected_replicas: 1,
        }
    }
}

/// A revocation, as the mirror, Redis and the store hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The access token `jti` is refused until `until` (Unix seconds).
    Token { jti: String, until: u64 },
    /// Every access token of the sign-in session `sid` is refused until `until`.
    Session { sid: String, until: u64 },
    /// Tokens of `subject` issued before `cutoff_ms` are refused; kept until `until`.
    Cutoff {
        subject: String,
        cutoff_ms: u64,
        until: u64,
    },
}

impl Revocation {
    /// `(kind, name, value, expires_at)`: the value only grows for one name (a later expiry, a
    /// later cut-off), so the larger one wins wherever two meet.
    pub fn parts(&self) -> (&'static str, &str, u64, u64) {
        match self {
            Self::Token { jti, until } => ("deny", jti, *until, *until),
            Self::Session { sid, until } => ("session", sid, *until, *until),
            Self::Cutoff {
                subject,
                cutoff_ms,
                until,
            } => ("cutoff", subject, *cutoff_ms, *until),
        }
    }

    pub fn from_parts(kind: &str, name: String, value: u64, expires_at: u64) -> Option<Self> {
        match kind {
            "deny" => Some(Self::Token {
                jti: name,
                until: value,
            }),
            "session" => Some(Self::Session {
                sid: name,
                until: value,
            }),
            "cutoff" => Some(Self::Cutoff {
                subject: name,
                cutoff_ms: value,
                until: expires_at,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the shared state (Redis) cannot be written: {0}")]
pub struct StateError(pub String);

/// How far a revocation got beyond this replica (which applies it at once in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The other replicas have it now: published through Redis, or there are no others (memory).
    pub published: bool,
    /// In the store, or queued for it (the store was down).
    pub durable: Written,
}

impl Reach {
    /// Whether every replica refuses it now or will once it (re)loads from the store: the store
    /// holds it, or Redis carried it.
    pub fn shared(&self) -> bool {
        self.published || self.durable == Written::Stored
    }
}

/// What `/readyz` tells about the shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateHealth {
    Memory,
    RedisUp,
    /// Redis does not answer: the gateway serves on, with local throttle counters and
    /// revocations carried by the store.
    RedisDown,
}

impl StateHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::RedisUp => "up",
            Self::RedisDown => "down-degraded",
        }
    }
}

pub struct Replicated {
    mirror: Arc<Mirror>,
    local: LocalCounters,
    /// What the local throttle counters measure their windows on (the app's clock).
    clock: Clock,
    redis: Option<RedisState>,
    /// The source of truth for revocations; `None` only in tests of the state alone.
    store: Option<Store>,
}

impl Replicated {
    /// Shared state without a store: revocations live in the mirror and Redis only.
    pub async fn connect(settings: &StateSettings) -> anyhow::Result<Self> {
        Self::open(settings, None).await
    }

    /// Shared state whose revocations are recorded in `store` and loaded from it now and
    /// whenever Redis comes back.
    pub async fn connect_with_store(
        settings: &StateSettings,
        store: Store,
    ) -> anyhow::Result<Self> {
        Self::open(settings, Some(store)).await
    }

    async fn open(settings: &StateSettings, store: Option<Store>) -> anyhow::Result<Self> {
        let mirror = Arc::new(Mirror::default());
        if let Some(store) = &store {
            load_from_store(store, &mirror).await?;
        }
        let redis = match settings {
            StateSettings::Memory => None,
            StateSettings::Redis {
                url,
                prefix,
                options,
            } => Some(
                RedisState::connect(
                    url.expose_secret(),
                    prefix,
                    *options,
                    Arc::clone(&mirror),
                    store.clone(),
                )
                .await?,
            ),
        };
        Ok(Self {
            mirror,
            local: LocalCounters::default(),
            clock: Clock::System,
            redis,
            store,
        })
    }

    /// The same state, its local throttle windows measured on `clock` (the app's; the
    /// system's until then), so a test crosses a window's end by moving a manual clock.
    pub fn on_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// The local view of revocations, for the hot path.
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    pub fn health(&self) -> StateHealth {
        match &self.redis {
            None => StateHealth::Memory,
            Some(redis) if redis.is_up() => StateHealth::RedisUp,
            Some(_) => StateHealth::RedisDown,
        }
    }

    /// Applies `revocation` here at once, publishes it through Redis when Redis is up, and
    /// records it in the store (or queues it while the store is down).
    pub async fn revoke(&self, revocation: Revocation) -> Result<Reach, WriteError> {
        self.mirror.apply(&revocation);
        let published = match &self.redis {
            None => true,
            Some(redis) => match redis.publish(&revocation).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, "revocation not published (Redis down): the store carries it");
                    false
                }
            },
        };
        let durable = match &self.store {
            None => Written::Stored,
            Some(store) => {
                store
                    .write_or_queue(StoreWrite::Revocation(revocation))
                    .await?
            }
        };
        Ok(Reach { published, durable })
    }

    /// Refuses the access token `jti` everywhere until `expires_at` (Unix seconds).
    pub async fn deny(&self, jti: &str, expires_at: u64) -> Result<(), StateError> {
        self.revoke_shared(Revocation::Token {
            jti: jti.to_owned(),
            until: expires_at,
        })
        .await
    }

    /// Refuses every access token of the sign-in session `sid` until `until` (Unix seconds).
    pub async fn deny_session(&self, sid: &str, until: u64) -> Result<(), StateError> {
        self.revoke_shared(Revocation::Session {
            sid: sid.to_owned(),
            until,
        })
        .await
    }

    /// Refuses every token of `subject` issued before `cutoff_ms` (Unix milliseconds); kept for
    /// `keep`, the longest a token issued before it could live.
    pub async fn cut_off(
        &self,
        subject: &str,
        cutoff_ms: u64,
        keep: Duration,
    ) -> Result<(), StateError> {
        self.revoke_shared(Revocation::Cutoff {
            subject: subject.to_owned(),
            cutoff_ms,
            until: crate::clock::unix_seconds() + keep.as_secs().max(1),
        })
        .await
    }

    /// [`Replicated::revoke`], an error when no other replica can learn of it (neither Redis
    /// nor the store took it; it holds on this replica and is queued for the store).
    async fn revoke_shared(&self, revocation: Revocation) -> Result<(), StateError> {
        let reach = self
            .revoke(revocation)
            .await
            .map_err(|e| StateError(e.to_string()))?;
        if reach.shared() {
            Ok(())
        } else {
            Err(StateError(
                "neither Redis nor the store answered; the revocation holds on this replica and is queued for the store".to_owned(),
            ))
        }
    }

    /// Counts one more failure under `key` in a fixed window; returns the count and the time
    /// left in the window. Counted in Redis while it answers, and always in this replica's
    /// shadow too, so that when Redis goes down the replica carries on from the count it last
    /// saw instead of from zero; while down, the count is this replica's alone and says so
    /// (`counted_by`: the live replicas last known), so each allows only its share of a limit.
    pub async fn record_failure(&self, key: &str, window: Duration) -> Attempts {
        if let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) {
            match redis.increment(key, window).await {
                Ok(attempts) => {
                    self.local.observe(key, attempts, self.clock.monotonic_ms());
                    return attempts;
                }
                Err(error) => {
                    tracing::warn!(%error, "throttle counter falls back to this replica")
                }
            }
        }
        let now = self.clock.monotonic_ms();
        self.local_share(self.local.increment(key, window, now))
    }

    /// The failures counted under `key` in its current window.
    pub async fn failures(&self, key: &str) -> Attempts {
        if let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) {
            match redis.count(key).await {
                Ok(attempts) => return attempts,
                Err(error) => {
                    tracing::warn!(%error, "throttle counter falls back to this replica")
                }
            }
        }
        self.local_share(self.local.count(key, self.clock.monotonic_ms()))
    }

    /// A count of this replica's own, marked as counted by every live replica on its own (with
    /// Redis; the memory state has one replica).
    fn local_share(&self, attempts: Attempts) -> Attempts {
        Attempts {
            counted_by: self.redis.as_ref().map_or(1, RedisState::replicas),
            ..attempts
        }
    }

    /// How many replicas were live when Redis last answered, at least `state.replicas` (1 with
    /// the memory state): while Redis is down each allows this share of a throttle limit and of
    /// a rate limit.
    pub fn replicas(&self) -> u64 {
        self.redis.as_ref().map_or(1, RedisState::replicas)
    }

    /// Runs `script` on Redis (rate limits: one atomic decision per request), within the
    /// command timeout and through the breaker; an error at once while Redis is down, and with
    /// the memory state, which has no Redis.
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        match self.redis.as_ref() {
            Some(redis) => redis.script(script).await,
            None => Err(StateError("the memory state has no Redis".to_owned())),
        }
    }

    /// The prefix of the gateway's Redis keys; `None` with the memory state.
    pub fn redis_prefix(&self) -> Option<&str> {
        self.redis.as_ref().map(RedisState::prefix)
    }

    /// Takes one counted failure back (a counted attempt that succeeded), in Redis and in the
    /// shadow.
    pub async fn forgive_failure(&self, key: &str) {
        if let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) {
            if let Err(error) = redis.decrement(key).await {
                tracing::warn!(%error, "cannot take back a throttle count in Redis");
            }
        }
        self.local.decrement(key);
    }

    pub async fn clear_failures(&self, key: &str) {
        if let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) {
            if let Err(error) = redis.clear(key).await {
                tracing::warn!(%error, "cannot clear a throttle counter in Redis");
            }
        }
        self.local.clear(key);
    }
}

// --- response cache (issue 13) ---
impl Replicated {
    /// Runs `pipeline` on Redis for the response cache, within the command timeout and behind
    /// the breaker like every command; `None` with the memory state.
    pub async fn cache_query<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Option<Result<T, StateError>> {
        let redis = self.redis.as_ref()?;
        Some(redis.query(pipeline).await)
    }

    /// Whether the state is kept in Redis (the response cache is, then, too).
    pub fn is_redis(&self) -> bool {
        self.redis.is_some()
    }
}
// --- end of response cache ---

impl Replicated {
    /// Applies the revocations other replicas record in the store, every `store_sync`, for as
    /// long as the gateway runs. Only with Redis: with the memory state there is one replica.
    /// The position is the store's own clock (rows are stamped with it), so a replica whose
    /// clock runs ahead cannot make the others skip rows; reads overlap a minute.
    pub async fn follow_store(&self) {
        let (Some(store), Some(redis)) = (&self.store, &self.redis) else {
            return std::future::pending().await;
        };
        // Rows from a minute before this are read again: the load at start-up is covered.
        let mut cursor = store.revocation_cursor().await.ok();
        loop {
            tokio::time::sleep(redis.options().store_sync).await;
            let read = match cursor {
                Some(at) => {
                    store
                        .revocations_since(crate::clock::unix_seconds(), at)
                        .await
                }
                // The store was down when following began: every live row, then from there.
                None => {
                    async {
                        let at = store.revocation_cursor().await?;
                        Ok((
                            store.live_revocations(crate::clock::unix_seconds()).await?,
                            at,
                        ))
                    }
                    .await
                }
            };
            match read {
                Ok((revocations, next)) => {
                    for revocation in &revocations {
                        self.mirror.apply(revocation);
                    }
                    cursor = Some(next);
                }
                Err(error) => {
                    tracing::debug!(error = %format!("{error:#}"), "cannot read revocations from the store; trying again")
                }
            }
        }
    }
}

/// Applies every live revocation in `store` to `mirror`.
async fn load_from_store(store: &Store, mirror: &Mirror) -> anyhow::Result<usize> {
    let live = store.live_revocations(crate::clock::unix_seconds()).await?;
    for revocation in &live {
        mirror.apply(revocation);
    }
    Ok(live.len())
}
