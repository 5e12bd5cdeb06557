//! State every gateway replica must agree on: revoked access tokens (`jti` denylist), per-user
//! revocation cut-offs, and login-throttle counters.
//!
//! Checks on the hot path never leave the process: each replica keeps a local [`Mirror`] of the
//! revocations. With the memory backend the mirror is the state; with Redis, writes go to Redis
//! and are published, and every replica's listener applies them to its mirror (and resyncs from
//! Redis after any reconnect). Throttle counters live in Redis, falling back to local counters
//! while Redis cannot be reached, so a Redis outage degrades limits instead of lifting them.

mod mirror;
mod redis_state;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

pub use mirror::Mirror;
pub use throttle::Attempts;

use self::redis_state::RedisState;
use self::throttle::LocalCounters;

/// Where shared state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSettings {
    Memory,
    Redis { url: String, prefix: String },
}

#[derive(Debug, thiserror::Error)]
#[error("the shared state (Redis) cannot be written: {0}")]
pub struct StateError(pub String);

pub struct SharedState {
    mirror: Arc<Mirror>,
    local: LocalCounters,
    redis: Option<RedisState>,
}

impl SharedState {
    pub async fn connect(settings: &StateSettings) -> anyhow::Result<Self> {
        let mirror = Arc::new(Mirror::default());
        let redis = match settings {
            StateSettings::Memory => None,
            StateSettings::Redis { url, prefix } => {
                Some(RedisState::connect(url, prefix, Arc::clone(&mirror)).await?)
            }
        };
        Ok(Self {
            mirror,
            local: LocalCounters::default(),
            redis,
        })
    }

    /// The local view of revocations, for the hot path.
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// Refuses the access token `jti` everywhere until `expires_at` (Unix seconds).
    pub async fn deny(&self, jti: &str, expires_at: u64) -> Result<(), StateError> {
        if let Some(redis) = &self.redis {
            redis.deny(jti, expires_at).await?;
        }
        self.mirror.deny(jti, expires_at);
        Ok(())
    }

    /// Refuses every access token of the sign-in session `sid` until `until` (Unix seconds).
    pub async fn deny_session(&self, sid: &str, until: u64) -> Result<(), StateError> {
        if let Some(redis) = &self.redis {
            redis.deny_session(sid, until).await?;
        }
        self.mirror.deny_session(sid, until);
        Ok(())
    }

    /// Refuses every token of `subject` issued before `cutoff_ms` (Unix milliseconds); kept for
    /// `keep`, the longest a token issued before it could live.
    pub async fn cut_off(
        &self,
        subject: &str,
        cutoff_ms: u64,
        keep: Duration,
    ) -> Result<(), StateError> {
        if let Some(redis) = &self.redis {
            redis.cut_off(subject, cutoff_ms, keep).await?;
        }
        self.mirror.cut_off(subject, cutoff_ms);
        Ok(())
    }

    /// Counts one more failure under `key` in a fixed window; returns the count and the time
    /// left in the window.
    pub async fn record_failure(&self, key: &str, window: Duration) -> Attempts {
        if let Some(redis) = &self.redis {
            match redis.increment(key, window).await {
                Ok(attempts) => return attempts,
                Err(error) => {
                    tracing::error!(%error, "throttle counter falls back to this replica")
                }
            }
        }
        self.local.increment(key, window)
    }

    /// The failures counted under `key` in its current window.
    pub async fn failures(&self, key: &str) -> Attempts {
        if let Some(redis) = &self.redis {
            match redis.count(key).await {
                Ok(attempts) => return attempts,
                Err(error) => {
                    tracing::error!(%error, "throttle counter falls back to this replica")
                }
            }
        }
        self.local.count(key)
    }

    /// Takes one counted failure back (a counted attempt that succeeded).
    pub async fn forgive_failure(&self, key: &str) {
        if let Some(redis) = &self.redis {
            match redis.decrement(key).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(%error, "throttle counter falls back to this replica")
                }
            }
        }
        self.local.decrement(key);
    }

    pub async fn clear_failures(&self, key: &str) {
        if let Some(redis) = &self.redis {
            if let Err(error) = redis.clear(key).await {
                tracing::error!(%error, "cannot clear a throttle counter in Redis");
            }
        }
        self.local.clear(key);
    }
}
