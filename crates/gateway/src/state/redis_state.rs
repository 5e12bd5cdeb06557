//! The Redis backend: revocations written to Redis and published on one channel; every
//! replica listens, applies them to its mirror, and resyncs the whole set after a reconnect.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub};

use super::mirror::Mirror;
use super::throttle::Attempts;
use super::StateError;

pub struct RedisState {
    manager: ConnectionManager,
    prefix: String,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for RedisState {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn state_error(error: redis::RedisError) -> StateError {
    StateError(error.to_string())
}

impl RedisState {
    /// Connects, loads every live revocation into `mirror`, and keeps it current.
    pub async fn connect(url: &str, prefix: &str, mirror: Arc<Mirror>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .with_context(|| format!("invalid Redis URL {}", kit::db::redact(url)))?;
        let manager = client
            .get_connection_manager()
            .await
            .with_context(|| format!("connecting to Redis at {}", kit::db::redact(url)))?;
        let prefix = prefix.to_owned();
        // Subscribe before loading, so nothing published in between is missed.
        let pubsub = subscribe_and_load(&client, &prefix, &mirror).await?;
        let listener = tokio::spawn(listen(client, prefix.clone(), mirror, pubsub));
        Ok(Self {
            manager,
            prefix,
            listener,
        })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    pub async fn deny(&self, jti: &str, expires_at: u64) -> Result<(), StateError> {
        self.publish_until("deny", jti, expires_at).await
    }

    pub async fn deny_session(&self, sid: &str, until: u64) -> Result<(), StateError> {
        self.publish_until("session", sid, until).await
    }

    /// Stores `kind:name` until `until` (Unix seconds) and tells every replica.
    async fn publish_until(&self, kind: &str, name: &str, until: u64) -> Result<(), StateError> {
        let mut connection = self.manager.clone();
        redis::pipe()
            .cmd("SET")
            .arg(self.key(kind, name))
            .arg(until)
            .arg("EXAT")
            .arg(until.max(1))
            .ignore()
            .cmd("PUBLISH")
            .arg(channel(&self.prefix))
            .arg(format!("{kind} {name} {until}"))
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(state_error)
    }

    pub async fn cut_off(
        &self,
        subject: &str,
        cutoff_ms: u64,
        keep: Duration,
    ) -> Result<(), StateError> {
        let mut connection = self.manager.clone();
        redis::pipe()
            .cmd("SET")
            .arg(self.key("cutoff", subject))
            .arg(cutoff_ms)
            .arg("EX")
            .arg(keep.as_secs().max(1))
            .ignore()
            .cmd("PUBLISH")
            .arg(channel(&self.prefix))
            .arg(format!("cutoff {subject} {cutoff_ms}"))
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(state_error)
    }

    pub async fn increment(&self, key: &str, window: Duration) -> Result<Attempts, StateError> {
        let mut connection = self.manager.clone();
        let key = self.key("throttle", key);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let (count, ttl_ms): (u64, i64) = redis::pipe()
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(state_error)?;
        Ok(Attempts {
            count,
            resets_in: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
        })
    }

    pub async fn count(&self, key: &str) -> Result<Attempts, StateError> {
        let mut connection = self.manager.clone();
        let key = self.key("throttle", key);
        let (count, ttl_ms): (Option<u64>, i64) = redis::pipe()
            .cmd("GET")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(state_error)?;
        Ok(Attempts {
            count: count.unwrap_or(0),
            resets_in: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
        })
    }

    /// One less, never below zero, keeping the window's expiry.
    pub async fn decrement(&self, key: &str) -> Result<(), StateError> {
        let mut connection = self.manager.clone();
        redis::cmd("EVAL")
            .arg("local v = redis.call('GET', KEYS[1]) if v and tonumber(v) > 0 then redis.call('DECR', KEYS[1]) end return 0")
            .arg(1)
            .arg(self.key("throttle", key))
            .query_async::<i64>(&mut connection)
            .await
            .map(|_| ())
            .map_err(state_error)
    }

    pub async fn clear(&self, key: &str) -> Result<(), StateError> {
        let mut connection = self.manager.clone();
        redis::cmd("DEL")
            .arg(self.key("throttle", key))
            .query_async::<()>(&mut connection)
            .await
            .map_err(state_error)
    }
}

fn channel(prefix: &str) -> String {
    format!("{prefix}:revocations")
}

async fn subscribe_and_load(
    client: &redis::Client,
    prefix: &str,
    mirror: &Mirror,
) -> anyhow::Result<PubSub> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("opening a Redis subscription")?;
    pubsub
        .subscribe(channel(prefix))
        .await
        .context("subscribing to revocations")?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    for (kind, apply) in [
        ("deny", apply_deny as fn(&Mirror, &str, u64)),
        ("session", apply_session),
        ("cutoff", apply_cutoff),
    ] {
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
                        apply(mirror, name, value);
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

fn apply_deny(mirror: &Mirror, jti: &str, expires_at: u64) {
    mirror.deny(jti, expires_at);
}

fn apply_session(mirror: &Mirror, sid: &str, until: u64) {
    mirror.deny_session(sid, until);
}

fn apply_cutoff(mirror: &Mirror, subject: &str, cutoff_ms: u64) {
    mirror.cut_off(subject, cutoff_ms);
}

/// Applies published revocations to the mirror for as long as the gateway runs.
async fn listen(client: redis::Client, prefix: String, mirror: Arc<Mirror>, mut pubsub: PubSub) {
    loop {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            let mut parts = text.split_ascii_whitespace();
            match (
                parts.next(),
                parts.next(),
                parts.next().and_then(|v| v.parse::<u64>().ok()),
            ) {
                (Some("deny"), Some(jti), Some(expires_at)) => apply_deny(&mirror, jti, expires_at),
                (Some("session"), Some(sid), Some(until)) => apply_session(&mirror, sid, until),
                (Some("cutoff"), Some(subject), Some(cutoff_ms)) => {
                    apply_cutoff(&mirror, subject, cutoff_ms)
                }
                _ => tracing::warn!(message = %text, "ignoring a malformed revocation message"),
            }
        }
        tracing::warn!("the Redis subscription ended; reconnecting");
        pubsub = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match subscribe_and_load(&client, &prefix, &mirror).await {
                Ok(pubsub) => break pubsub,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "Redis is still unreachable")
                }
            }
        };
        tracing::info!("the Redis subscription is back; revocations resynced");
    }
}
