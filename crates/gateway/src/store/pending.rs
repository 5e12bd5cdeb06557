//! Writes that must reach the store but met an outage: queued in order and retried in the
//! background until they land, so a logout during a store outage still ends its session in the
//! store once it is back (the shared state refuses the session meanwhile).
//!
//! While anything is queued the store is taken as down: new writes join the queue at once
//! instead of each waiting out the pool's acquire timeout, and keep their order behind it.

use std::collections::{HashMap, VecDeque};
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

/// What a queued write changes: two writes with the same key are one write (the stronger kept),
/// so repeating a request during an outage cannot grow the queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Revocation(&'static str, String),
    Family(String),
    FamilyOfToken(String, String),
}

impl StoreWrite {
    fn key(&self) -> Key {
        match self {
            Self::Revocation(revocation) => {
                let (kind, name, ..) = revocation.parts();
                Key::Revocation(kind, name.to_owned())
            }
            Self::RevokeFamily { family, .. } => Key::Family(family.clone()),
            Self::RevokeFamilyOfToken { hash, subject, .. } => {
                Key::FamilyOfToken(hash.clone(), subject.clone())
            }
        }
    }

    /// Folds `later` (same key) into `self`: a revocation keeps the larger value (the later
    /// expiry or cut-off, as the store does); a family keeps its first reason.
    fn absorb(&mut self, later: Self) {
        if let (Self::Revocation(kept), Self::Revocation(new)) = (&*self, &later) {
            if new.parts().2 > kept.parts().2 {
                *self = later;
            }
        }
    }

    /// What the write is about, for the logs: kind and id, never a token or its hash.
    pub fn describe(&self) -> String {
        match self {
            Self::Revocation(revocation) => {
                let (kind, name, value, _) = revocation.parts();
                format!("revocation {kind} {name} (value {value})")
            }
            Self::RevokeFamily { family, reason } => {
                format!("end of session family {family} ({reason})")
            }
            Self::RevokeFamilyOfToken {
                subject, reason, ..
            } => {
                format!("end of the session of a refresh token of subject {subject} ({reason})")
            }
        }
    }
}

/// The queue: keys in the order they first met the outage, and the write of each key.
#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<Key>,
    writes: HashMap<Key, StoreWrite>,
}

#[derive(Debug, Default)]
pub struct Pending {
    queue: Mutex<Queue>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    fn push(&self, write: StoreWrite) -> Result<Written, WriteError> {
        let mut queue = self.lock();
        let key = write.key();
        if let Some(queued) = queue.writes.get_mut(&key) {
            queued.absorb(write);
            return Ok(Written::Queued);
        }
        if queue.order.len() >= MAX_PENDING {
            return Err(WriteError::QueueFull);
        }
        queue.order.push_back(key.clone());
        queue.writes.insert(key, write);
        Ok(Written::Queued)
    }

    /// The oldest write, left in the queue.
    fn front(&self) -> Option<StoreWrite> {
        let queue = self.lock();
        let key = queue.order.front()?;
        queue.writes.get(key).cloned()
    }

    /// Removes the oldest write once `landed` is in the store, unless a stronger one was folded
    /// into it meanwhile (that one is written next).
    fn landed(&self, landed: &StoreWrite) {
        let mut queue = self.lock();
        let Some(key) = queue.order.front().cloned() else {
            return;
        };
        if queue.writes.get(&key) == Some(landed) {
            queue.order.pop_front();
            queue.writes.remove(&key);
        }
    }

    /// Empties the queue, handing back what was in it, oldest first.
    fn take_all(&self) -> Vec<StoreWrite> {
        let mut queue = self.lock();
        let Queue { order, writes } = std::mem::take(&mut *queue);
        let mut writes = writes;
        order
            .into_iter()
            .filter_map(|key| writes.remove(&key))
            .collect()
    }

    fn contains(&self, key: &Key) -> bool {
        self.lock().writes.contains_key(key)
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
        self.pending.contains(&Key::Family(family.to_owned()))
    }

    /// Whether the denial of the access token `jti` waits in the queue.
    pub fn token_denial_pending(&self, jti: &str) -> bool {
        self.pending
            .contains(&Key::Revocation("deny", jti.to_owned()))
    }

    /// Whether ending the family of the refresh token hashed `hash` (for `subject`) waits in the
    /// queue.
    pub fn family_of_token_pending(&self, hash: &str, subject: &str) -> bool {
        self.pending
            .contains(&Key::FamilyOfToken(hash.to_owned(), subject.to_owned()))
    }

    /// At shutdown: keeps trying to land what is queued for at most `within`, then logs at
    /// error level every write still queued, by kind and id: the queue lives in memory and is
    /// lost with the process (see docs/ARCHITECTURE.md, "Store outage").
    pub async fn flush_pending(&self, within: Duration) {
        if self.pending.len() == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // A write cut short by the deadline may or may not have landed; it is reported below.
            if tokio::time::timeout_at(deadline, self.drain_pending())
                .await
                .is_err()
                || self.pending.len() == 0
                || tokio::time::Instant::now() + RETRY_INTERVAL >= deadline
            {
                break;
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
        let lost = self.pending.take_all();
        if lost.is_empty() {
            return;
        }
        tracing::error!(
            writes = lost.len(),
            "the gateway stops while the store is unavailable: queued store writes are lost"
        );
        for write in &lost {
            tracing::error!(write = %write.describe(), "store write lost at shutdown");
        }
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
        // Peek, write, then pop: a write is never lost between the two.
        while let Some(write) = self.pending.front() {
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
                    tracing::error!(error = %format!("{error:#}"), write = %write.describe(), "a queued store write failed; dropping it");
                }
            }
            self.pending.landed(&write);
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

    /// A store of its own in a private folder (kept while the folder lives).
    async fn fresh_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/data/store.db", dir.path().display()))
            .await
            .unwrap();
        (dir, store)
    }

    /// Queues ending `family` by logout, as a write that met an outage is.
    fn queue_family_end(store: &Store, family: &str) {
        store
            .pending
            .push(StoreWrite::RevokeFamily {
                family: family.to_owned(),
                reason: "logout".to_owned(),
            })
            .unwrap();
    }

    #[tokio::test]
    async fn queued_writes_keep_their_order_hold_back_new_ones_and_land_when_drained() {
        let (_dir, store) = fresh_store().await;
        store
            .start_family("family-1", "alice", None, 1, "hash-1", u64::MAX / 2)
            .await
            .unwrap();
        // As if the store had failed a moment ago.
        queue_family_end(&store, "family-1");
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

    #[tokio::test]
    async fn a_repeated_write_is_folded_into_the_queued_one_keeping_the_stronger() {
        let (_dir, store) = fresh_store().await;
        let session = |until| {
            StoreWrite::Revocation(Revocation::Session {
                sid: "family-1".to_owned(),
                until,
            })
        };
        for until in [200, 300, 100] {
            store.pending.push(session(until)).unwrap();
        }
        for reason in ["logout", "session ended"] {
            store
                .pending
                .push(StoreWrite::RevokeFamily {
                    family: "family-1".to_owned(),
                    reason: reason.to_owned(),
                })
                .unwrap();
        }
        assert_eq!(
            store.pending_writes(),
            2,
            "one write per session, one per family"
        );
        assert_eq!(
            store.pending.front(),
            Some(session(300)),
            "the later expiry kept"
        );
        assert!(store.family_revocation_pending("family-1"));
        let kept = store.pending.take_all();
        assert_eq!(
            kept[1],
            StoreWrite::RevokeFamily {
                family: "family-1".to_owned(),
                reason: "logout".to_owned()
            },
            "a family keeps its first reason"
        );
        assert!(!store.family_revocation_pending("family-1"));
    }

    #[tokio::test]
    async fn a_write_folded_in_while_the_older_one_was_written_is_written_too() {
        let (_dir, store) = fresh_store().await;
        let token = |until| {
            StoreWrite::Revocation(Revocation::Token {
                jti: "jti-1".to_owned(),
                until,
            })
        };
        store.pending.push(token(1)).unwrap();
        let written = store.pending.front().unwrap();
        store.pending.push(token(u64::MAX / 2)).unwrap();
        store.pending.landed(&written);
        assert_eq!(store.pending.front(), Some(token(u64::MAX / 2)));
        store.drain_pending().await;
        assert_eq!(store.pending_writes(), 0);
        assert_eq!(store.live_revocations(1000).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn at_shutdown_what_cannot_land_in_time_is_given_up() {
        let (_dir, store) = fresh_store().await;
        queue_family_end(&store, "family-1");
        store.flush_pending(Duration::from_secs(5)).await;
        assert_eq!(store.pending_writes(), 0, "the store answers: it landed");

        store.database().pool().close().await;
        store
            .pending
            .push(StoreWrite::RevokeFamily {
                family: "family-2".to_owned(),
                reason: "logout".to_owned(),
            })
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            store.flush_pending(Duration::from_millis(200)),
        )
        .await
        .expect("gives up within its time");
        assert_eq!(store.pending_writes(), 0, "logged and dropped");
    }
}
