//! Writes that must reach the store but met an outage: queued in order and retried in the
//! background until they land, so a logout during a store outage still ends its session in the
//! store once it is back (the shared state refuses the session meanwhile).
//!
//! While anything is queued the store is taken as down: new writes join the queue at once
//! instead of each waiting out the pool's acquire timeout, and keep their order behind it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::Store;
use crate::state::Revocation;

/// At most this many writes wait; past it a write is refused (the caller answers 503), so an
/// endless outage cannot grow memory without bound.
pub const MAX_PENDING: usize = 100_000;
/// How often the queue is retried while the store is down.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// A store write that can wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreWrite {
    Revocation(Revocation),
    /// Ends a refresh-token family (a session).
    RevokeFamily {
        family: String,
        reason: String,
    },
    /// Ends the family of the refresh token hashed `hash`, when it belongs to `subject`.
    RevokeFamilyOfToken {
        hash: String,
        subject: String,
        reason: String,
    },
}

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// It is in the store.
    Stored,
    /// The store is unavailable; it is queued and will be retried until it lands.
    Queued,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the store is unavailable and {MAX_PENDING} writes already wait for it")]
    QueueFull,
    /// Not an outage: the write itself failed (a bug); it is not retried.
    #[error(transparent)]
    Failed(anyhow::Error),
}

#[derive(Debug, Default)]
pub struct Pending {
    queue: Mutex<VecDeque<StoreWrite>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<StoreWrite>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn push(&self, write: StoreWrite) -> Result<Written, WriteError> {
        let mut queue = self.lock();
        if queue.len() >= MAX_PENDING {
            return Err(WriteError::QueueFull);
        }
        queue.push_back(write);
        Ok(Written::Queued)
    }
}

impl Store {
    /// Writes now, or queues the write when the store is unavailable (or writes already wait).
    pub async fn write_or_queue(&self, write: StoreWrite) -> Result<Written, WriteError> {
        if self.pending.len() > 0 {
            return self.pending.push(write);
        }
        match self.apply(&write).await {
            Ok(()) => Ok(Written::Stored),
            Err(error) if kit::outage::caused_by_outage(&error) => {
                tracing::warn!(error = %format!("{error:#}"), "store unavailable: the write is queued and retried");
                self.pending.push(write)
            }
            Err(error) => Err(WriteError::Failed(error)),
        }
    }

    /// Writes waiting for the store.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// Whether ending the refresh-token family `family` waits in the queue: the store's row
    /// still says it lives, but it does not.
    pub fn family_revocation_pending(&self, family: &str) -> bool {
        self.pending.lock().iter().any(|write| {
            matches!(write, StoreWrite::RevokeFamily { family: queued, .. } if queued == family)
        })
    }

    async fn apply(&self, write: &StoreWrite) -> anyhow::Result<()> {
        match write {
            StoreWrite::Revocation(revocation) => self.record_revocation(revocation).await,
            StoreWrite::RevokeFamily { family, reason } => self.revoke_family(family, reason).await,
            StoreWrite::RevokeFamilyOfToken {
                hash,
                subject,
                reason,
            } => match self.find_refresh(hash).await? {
                Some(record) if &record.subject == subject => {
                    self.revoke_family(&record.family_id, reason).await
                }
                _ => Ok(()),
            },
        }
    }

    /// Retries the queued writes in order, forever: run it beside the server.
    pub async fn retry_pending(&self) {
        loop {
            tokio::time::sleep(RETRY_INTERVAL).await;
            self.drain_pending().await;
        }
    }

    /// Writes what is queued, in order, until the queue is empty or the store fails again.
    async fn drain_pending(&self) {
        let mut landed = 0usize;
        loop {
            // Peek, write, then pop: a write is never lost between the two.
            let Some(write) = self.pending.lock().front().cloned() else {
                break;
            };
            match self.apply(&write).await {
                Ok(()) => {}
                Err(error) if kit::outage::caused_by_outage(&error) => {
                    if landed > 0 {
                        tracing::info!(
                            landed,
                            "some queued store writes landed; the store failed again"
                        );
                    }
                    return;
                }
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), ?write, "a queued store write failed; dropping it");
                }
            }
            self.pending.lock().pop_front();
            landed += 1;
        }
        if landed > 0 {
            tracing::info!(landed, "the store is back: every queued write landed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_writes_keep_their_order_hold_back_new_ones_and_land_when_drained() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/data/store.db", dir.path().display()))
            .await
            .unwrap();
        store
            .start_family("family-1", "alice", None, 1, "hash-1", u64::MAX / 2)
            .await
            .unwrap();
        // As if the store had failed a moment ago.
        store
            .pending
            .push(StoreWrite::RevokeFamily {
                family: "family-1".to_owned(),
                reason: "logout".to_owned(),
            })
            .unwrap();
        assert!(store.family_revocation_pending("family-1"));
        assert!(!store.family_revocation_pending("family-2"));
        let later = store
            .write_or_queue(StoreWrite::Revocation(Revocation::Token {
                jti: "jti-1".to_owned(),
                until: u64::MAX / 2,
            }))
            .await
            .unwrap();
        assert_eq!(later, Written::Queued, "queued behind the earlier write");

        store.drain_pending().await;
        assert_eq!(store.pending_writes(), 0);
        assert!(
            store
                .find_refresh("hash-1")
                .await
                .unwrap()
                .unwrap()
                .family_revoked
        );
        assert_eq!(store.live_revocations(0).await.unwrap().len(), 1);
        assert_eq!(
            store
                .write_or_queue(StoreWrite::RevokeFamily {
                    family: "family-1".to_owned(),
                    reason: "again".to_owned()
                })
                .await
                .unwrap(),
            Written::Stored,
            "with nothing queued, a write goes straight to the store"
        );
    }
}
