//! The Redis backend: revocations written to Redis and published on one channel; every
//! replica listens, applies them to its mirror, and resyncs the whole set (from Redis and from
//! the store) after a reconnect.
//!
//! Redis sits behind short timeouts and a breaker: a command that fails (a refused or broken
//! connection, an error instead of an answer) marks it down at once; one that only times out
//! marks it down after [`TIMEOUTS_TO_TRIP`] in a row, so a gateway starved of CPU under a login
//! flood, whose answers arrive late now and then, does not flip itself onto local counters. While
//! it is down no request touches it (throttling counts locally, revocations go to the
//! mirror and the store) until a background probe finds it back; the probe then republishes the
//! revocations Redis missed, and the listener reloads what other replicas recorded meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};

use super::mirror::Mirror;
use super::throttle::Attempts;
use super::{RedisOptions, Revocation, StateError};
use crate::store::Store;

/// Revocations kept for republishing while Redis is down; beyond this the oldest are left to
/// the store (every replica reloads from it when Redis returns).
const MAX_UNPUBLISHED: usize = 100_000;

/// Commands that time out in a row before Redis is taken as down; any answer in between starts
/// the count again. A failed connection trips the breaker at once.
pub const TIMEOUTS_TO_TRIP: u32 = 3;

/// Announces a replica in the sorted set `KEYS[1]` (member `ARGV[1]`, scored by when its
/// announcement lapses: Redis's clock plus `ARGV[2]` ms), forgets the lapsed ones, and answers
/// how many are live. Redis's own clock, so replicas' clocks apart do not matter.
const ANNOUNCE: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
";

/// Whether Redis answers, and what it missed while it did not.
struct Breaker {
    up: AtomicBool,
    probing: AtomicBool,
    /// Commands timed out in a row since the last answer.
    timeouts: AtomicU32,
    unpublished: Mutex<Vec<Revocation>>,
}

pub struct RedisState {
    /// Set once Redis first answers: at start, or later by the probe when it started down.
    manager: Arc<OnceLock<ConnectionManager>>,
    client: redis::Client,
    prefix: String,
    options: RedisOptions,
    breaker: Arc<Breaker>,
    /// The live replicas (this one included) Redis last counted; 0 until it first answered.
    replicas: Arc<AtomicU64>,
    listener: tokio::task::JoinHandle<()>,
    announcer: tokio::task::JoinHandle<()>,
}

impl Drop for RedisState {
    fn drop(&mut self) {
        self.listener.abort();
        self.announcer.abort();
    }
}

fn state_error(error: &redis::RedisError) -> StateError {
    StateError(error.to_string())
}

impl RedisState {
    /// Connects, loads every live revocation into `mirror`, and keeps it current. A URL that
    /// cannot be parsed is an error; a Redis that does not answer is not: the replica starts
    /// with the breaker tripped (local throttle counters, revocations through the store), and
    /// the probe and the listener connect and subscribe once Redis answers, so a replica
    /// restarted during the outage the breaker is for serves instead of crash-looping.
    pub async fn connect(
        url: &str,
        prefix: &str,
        options: RedisOptions,
        mirror: Arc<Mirror>,
        store: Option<Store>,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .with_context(|| format!("invalid Redis URL {}", kit::db::redact(url)))?;
        let prefix = prefix.to_owned();
        let manager = Arc::new(OnceLock::new());
        let probe = Probe {
            manager: Arc::clone(&manager),
            client: client.clone(),
            prefix: prefix.clone(),
            options,
            breaker: Arc::new(Breaker {
                up: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                timeouts: AtomicU32::new(0),
                unpublished: Mutex::new(Vec::new()),
            }),
        };
        let pubsub = match open_manager(&client, options).await {
            Ok(opened) => {
                let _ = manager.set(opened);
                // Subscribe before loading, so nothing published in between is missed.
                subscribe_and_load(&client, &prefix, options, &mirror).await
            }
            Err(error) => Err(error),
        };
        let pubsub = match pubsub {
            Ok(pubsub) => {
                probe.breaker.up.store(true, Ordering::Release);
                Some(pubsub)
            }
            Err(error) => {
                tracing::warn!(
                    url = %kit::db::redact(url),
                    error = %format!("{error:#}"),
                    "Redis does not answer at start: serving degraded (local throttle counters, revocations through the store) and connecting once it answers"
                );
                probe.trip("Redis did not answer at start");
                None
            }
        };
        let breaker = Arc::clone(&probe.breaker);
        let replicas = Arc::new(AtomicU64::new(0));
        let announcer = Announcer {
            manager: Arc::clone(&manager),
            breaker: Arc::clone(&breaker),
            key: format!("{prefix}:replicas"),
            id: uuid::Uuid::new_v4().simple().to_string(),
            options,
            replicas: Arc::clone(&replicas),
        };
        if breaker.up.load(Ordering::Acquire) {
            announcer.once().await;
        }
        let announcer = tokio::spawn(announcer.run());
        let listener = tokio::spawn(listen(client.clone(), probe, mirror, store, pubsub));
        Ok(Self {
            manager,
            client,
            prefix,
            options,
            breaker,
            replicas,
            listener,
            announcer,
        })
    }

    /// What the listener needs to trip the breaker and start the probe.
    fn probe(&self) -> Probe {
        Probe {
            manager: Arc::clone(&self.manager),
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            options: self.options,
            breaker: Arc::clone(&self.breaker),
        }
    }

    /// The shared connection; none until Redis first answered (the breaker is tripped till then).
    fn connection(&self) -> Result<ConnectionManager, StateError> {
        self.manager.get().cloned().ok_or_else(|| {
            StateError("Redis has not answered since start; skipped until it does".to_owned())
        })
    }

    pub fn options(&self) -> RedisOptions {
        self.options
    }

    /// How many replicas were live when Redis last answered (this one included), never fewer
    /// than the configured `expected_replicas` (nor 1): a replica that has not seen Redis
    /// answer since start takes the configured fleet.
    pub fn replicas(&self) -> u64 {
        self.replicas
            .load(Ordering::Acquire)
            .max(self.options.expected_replicas)
            .max(1)
    }

    /// Whether Redis is taken as answering; while not, no request waits on it.
    pub fn is_up(&self) -> bool {
        self.breaker.up.load(Ordering::Acquire)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    /// Runs `command` within the command timeout; a failure trips the breaker at once, a timeout
    /// only as the [`TIMEOUTS_TO_TRIP`]th in a row.
    async fn run<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        if !self.is_up() {
            return Err(StateError(
                "Redis is down; skipped until it answers again".to_owned(),
            ));
        }
        let (error, timed_out) = match tokio::time::timeout(self.options.command, command).await {
            Ok(Ok(value)) => {
                self.breaker.timeouts.store(0, Ordering::Release);
                return Ok(value);
            }
            Ok(Err(error)) => (state_error(&error), error.is_timeout()),
            Err(_) => (
                StateError(format!("no answer within {:?}", self.options.command)),
                true,
            ),
        };
        let in_a_row = if timed_out {
            self.breaker.timeouts.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            TIMEOUTS_TO_TRIP
        };
        if in_a_row >= TIMEOUTS_TO_TRIP {
            self.probe().trip(&error.0);
        }
        Err(error)
    }

    /// The prefix of this gateway's keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `script` (EVALSHA, loading it when Redis does not know it) within the command
    /// timeout and through the breaker, like every command on the request path.
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        let mut connection = self.connection()?;
        self.run(script.invoke_async(&mut connection)).await
    }

    /// Stores `revocation` in Redis and tells every replica; while Redis is down it is kept to
    /// be republished when Redis is back.
    pub async fn publish(&self, revocation: &Revocation) -> Result<(), StateError> {
        let result = match self.connection() {
            Ok(mut connection) => {
                self.run(publication(&self.prefix, revocation).query_async::<()>(&mut connection))
                    .await
            }
            Err(error) => Err(error),
        };
        if result.is_err() {
            let mut unpublished = self
                .breaker
                .unpublished
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if unpublished.len() < MAX_UNPUBLISHED {
                unpublished.push(revocation.clone());
            }
        }
        result
    }

    /// Runs `pipeline` like any other command: within the command timeout, behind the breaker
    /// (the response cache's reads and writes).
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, StateError> {
        let mut connection = self.connection()?;
        self.run(pipeline.query_async(&mut connection)).await
    }

    pub async fn increment(&self, key: &str, window: Duration) -> Result<Attempts, StateError> {
        let mut connection = self.connection()?;
        let key = self.key("throttle", key);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let (count, ttl_ms): (u64, i64) = self
            .run(
                redis::pipe()
                    .cmd("INCR")
                    .arg(&key)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(window_ms)
                    .arg("NX")
                    .ignore()
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut connection),
            )
            .await?;
        Ok(Attempts {
            count,
            resets_in: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
            counted_by: 1,
        })
    }

    pub async fn count(&self, key: &str) -> Result<Attempts, StateError> {
        let mut connection = self.connection()?;
        let key = self.key("throttle", key);
        let (count, ttl_ms): (Option<u64>, i64) = self
            .run(
                redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut connection),
            )
            .await?;
        Ok(Attempts {
            count: count.unwrap_or(0),
            resets_in: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
            counted_by: 1,
        })
    }

    /// One less, never below zero, keeping the window's expiry.
    pub async fn decrement(&self, key: &str) -> Result<(), StateError> {
        let mut connection = self.connection()?;
        self.run(
            redis::cmd("EVAL")
                .arg("local v = redis.call('GET', KEYS[1]) if v and tonumber(v) > 0 then redis.call('DECR', KEYS[1]) end return 0")
                .arg(1)
                .arg(self.key("throttle", key))
                .query_async::<i64>(&mut connection),
        )
        .await
        .map(|_| ())
    }

    pub async fn clear(&self, key: &str) -> Result<(), StateError> {
        let mut connection = self.connection()?;
        self.run(
            redis::cmd("DEL")
                .arg(self.key("throttle", key))
                .query_async::<()>(&mut connection),
        )
        .await
    }
}

fn channel(prefix: &str) -> String {
    format!("{prefix}:revocations")
}

/// `SET prefix:kind:name value EXAT expires_at` and `PUBLISH` it, as one pipeline.
fn publication(prefix: &str, revocation: &Revocation) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    append_publication(&mut pipe, prefix, revocation);
    pipe
}

/// Adds the `SET` and `PUBLISH` of `revocation` to `pipe`.
fn append_publication(pipe: &mut redis::Pipeline, prefix: &str, revocation: &Revocation) {
    let (kind, name, value, expires_at) = revocation.parts();
    pipe.cmd("SET")
        .arg(format!("{prefix}:{kind}:{name}"))
        .arg(value)
        .arg("EXAT")
        .arg(expires_at.max(1))
        .ignore()
        .cmd("PUBLISH")
        .arg(channel(prefix))
        .arg(format!("{kind} {name} {value}"))
        .ignore();
}

/// Keeps this replica announced in Redis and learns how many are live, every `probe_interval`
/// while Redis is up: what a replica's share of a throttle limit is while Redis is down.
struct Announcer {
    manager: Arc<OnceLock<ConnectionManager>>,
    breaker: Arc<Breaker>,
    key: String,
    id: String,
    options: RedisOptions,
    replicas: Arc<AtomicU64>,
}

impl Announcer {
    async fn run(self) {
        loop {
            tokio::time::sleep(self.options.probe_interval).await;
            if self.breaker.up.load(Ordering::Acquire) {
                self.once().await;
            }
        }
    }

    /// One announcement. It lapses after three missed ones, so a replica that stopped is
    /// counted a little longer (its peers' shares are smaller meanwhile: stricter, not looser).
    /// A failure is left to the requests' breaker: the count stays as last known.
    async fn once(&self) {
        let Some(manager) = self.manager.get() else {
            return;
        };
        let mut connection = manager.clone();
        let lapse = self.options.probe_interval * 3 + self.options.command;
        let lapse_ms = u64::try_from(lapse.as_millis()).unwrap_or(u64::MAX).max(1);
        let announce = redis::cmd("EVAL")
            .arg(ANNOUNCE)
            .arg(1)
            .arg(&self.key)
            .arg(&self.id)
            .arg(lapse_ms)
            .to_owned();
        match tokio::time::timeout(
            self.options.command,
            announce.query_async::<u64>(&mut connection),
        )
        .await
        {
            Ok(Ok(live)) => self.replicas.store(live.max(1), Ordering::Release),
            Ok(Err(error)) => tracing::debug!(%error, "cannot announce this replica in Redis"),
            Err(_) => tracing::debug!("announcing this replica in Redis timed out"),
        }
    }
}

/// Opens a connection manager within the connect timeout (its own retries included).
async fn open_manager(
    client: &redis::Client,
    options: RedisOptions,
) -> anyhow::Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect))
        .set_response_timeout(Some(options.command))
        // The breaker decides when to try again; the manager should not retry for long.
        .set_number_of_retries(1);
    tokio::time::timeout(
        options.connect * 4,
        client.get_connection_manager_with_config(config),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no connection to Redis within {:?}", options.connect * 4))?
    .context("connecting to Redis")
}

/// Trips the breaker and probes Redis in the background until it answers again.
#[derive(Clone)]
struct Probe {
    manager: Arc<OnceLock<ConnectionManager>>,
    client: redis::Client,
    prefix: String,
    options: RedisOptions,
    breaker: Arc<Breaker>,
}

impl Probe {
    fn trip(&self, why: &str) {
        self.breaker.timeouts.store(0, Ordering::Release);
        if self.breaker.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %why, "Redis is down: serving on with local throttle counters; revocations go through the store");
        }
        if !self.breaker.probing.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().until_back());
        }
    }

    /// Pings every `probe_interval`; once Redis answers, lets requests use it again and
    /// republishes what it missed, in batches. A batch that fails is left to the store (every
    /// replica reloads from it when its subscription returns, and reads it every `store_sync`),
    /// so a large backlog can never keep Redis marked down. Stops when the state is dropped.
    async fn until_back(self) {
        const BATCH: usize = 1000;
        loop {
            tokio::time::sleep(self.options.probe_interval).await;
            if Arc::strong_count(&self.breaker) == 1 {
                return;
            }
            let mut connection = match self.manager.get() {
                Some(manager) => manager.clone(),
                None => match open_manager(&self.client, self.options).await {
                    Ok(manager) => self.manager.get_or_init(|| manager).clone(),
                    Err(_) => continue,
                },
            };
            let ping = redis::cmd("PING");
            let answered = tokio::time::timeout(
                self.options.command,
                ping.query_async::<String>(&mut connection),
            )
            .await;
            if !matches!(answered, Ok(Ok(_))) {
                continue;
            }
            self.breaker.probing.store(false, Ordering::Release);
            self.breaker.up.store(true, Ordering::Release);
            let missed = std::mem::take(
                &mut *self
                    .breaker
                    .unpublished
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            let mut republished = 0;
            for batch in missed.chunks(BATCH) {
                let mut pipe = redis::pipe();
                for revocation in batch {
                    append_publication(&mut pipe, &self.prefix, revocation);
                }
                match tokio::time::timeout(
                    self.options.command * 4,
                    pipe.query_async::<()>(&mut connection),
                )
                .await
                {
                    Ok(Ok(())) => republished += batch.len(),
                    _ => {
                        tracing::warn!(
                            left = missed.len() - republished,
                            "cannot republish every missed revocation; the store carries the rest"
                        );
                        break;
                    }
                }
            }
            tracing::info!(republished, "Redis is back");
            return;
        }
    }
}

async fn subscribe_and_load(
    client: &redis::Client,
    prefix: &str,
    options: RedisOptions,
    mirror: &Mirror,
) -> anyhow::Result<PubSub> {
    let mut pubsub = tokio::time::timeout(options.connect, client.get_async_pubsub())
        .await
        .map_err(|_| anyhow::anyhow!("no connection to Redis within {:?}", options.connect))?
        .context("opening a Redis subscription")?;
    tokio::time::timeout(options.command, pubsub.subscribe(channel(prefix)))
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not confirm the subscription in time"))?
        .context("subscribing to revocations")?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect))
        .set_response_timeout(Some(options.command));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting to Redis")?;
    for kind in ["deny", "session", "cutoff"] {
        let pattern = format!("{prefix}:{kind}:*");
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .context("loading revocations")?;
            if !keys.is_empty() {
                let values: Vec<Option<u64>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .context("loading revocations")?;
                for (key, value) in keys.iter().zip(values) {
                    if let (Some(name), Some(value)) =
                        (key.strip_prefix(&pattern[..pattern.len() - 1]), value)
                    {
                        apply(mirror, kind, name, value);
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(pubsub)
}

/// Applies a revocation as Redis carries it (`kind name value`) to the mirror.
fn apply(mirror: &Mirror, kind: &str, name: &str, value: u64) -> bool {
    match Revocation::from_parts(kind, name.to_owned(), value, value) {
        Some(revocation) => {
            mirror.apply(&revocation);
            true
        }
        None => false,
    }
}

/// Applies published revocations to the mirror for as long as the gateway runs. When the
/// subscription breaks, Redis is marked down; once subscribed again, the mirror is reloaded
/// from Redis and from the store, which holds what other replicas recorded while Redis was out.
async fn listen(
    client: redis::Client,
    probe: Probe,
    mirror: Arc<Mirror>,
    store: Option<Store>,
    mut pubsub: Option<PubSub>,
) {
    loop {
        if let Some(subscribed) = pubsub.take() {
            follow(subscribed, &mirror).await;
            probe.trip("the Redis subscription ended");
        }
        let subscribed = loop {
            tokio::time::sleep(probe.options.probe_interval).await;
            match subscribe_and_load(&client, &probe.prefix, probe.options, &mirror).await {
                Ok(subscribed) => break subscribed,
                Err(error) => {
                    tracing::debug!(error = %format!("{error:#}"), "Redis is still unreachable")
                }
            }
        };
        if let Some(store) = &store {
            match super::load_from_store(store, &mirror).await {
                Ok(count) => tracing::info!(count, "revocations reloaded from the store"),
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "cannot reload revocations from the store")
                }
            }
        }
        tracing::info!("the Redis subscription is back; revocations resynced");
        pubsub = Some(subscribed);
    }
}

/// Applies the revocations published on `pubsub` to the mirror until the subscription ends.
async fn follow(pubsub: PubSub, mirror: &Mirror) {
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        let Ok(text) = message.get_payload::<String>() else {
            continue;
        };
        let mut parts = text.split_ascii_whitespace();
        let applied = match (
            parts.next(),
            parts.next(),
            parts.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some(kind), Some(name), Some(value)) => apply(mirror, kind, name, value),
            _ => false,
        };
        if !applied {
            tracing::warn!(message = %text, "ignoring a malformed revocation message");
        }
    }
}
