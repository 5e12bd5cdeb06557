//! Who waits on a revocation: the open WebSockets (issue 16), each registered under its token's
//! id, its session and its subject, and woken when a revocation names one of them. A woken
//! socket asks the [`super::Mirror`] whether its token is now refused (a cut-off names a subject
//! but refuses only the tokens issued before it), so a wake-up that turns out not to concern it
//! costs a look-up and nothing else.
//!
//! Revocations reach the mirror on every path (this replica's own logout, Redis pub/sub from the
//! others, the store's periodic sync), and the mirror wakes the registry from each: an open
//! socket is closed within the same delay a new request would be refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// What a revocation can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Named {
    Token(String),
    Session(String),
    Subject(String),
}

/// The open sockets by what may revoke them. Empty (no WebSocket open) it costs a revocation one
/// uncontended lock.
#[derive(Default)]
pub struct Watchers {
    next: AtomicU64,
    by_name: Mutex<HashMap<Named, HashMap<u64, Arc<Notify>>>>,
}

/// One socket's registration, removed when dropped. [`Watch::revoked`] resolves at the first
/// revocation naming any of its names after registration (a permit is kept, so a revocation
/// that lands between two waits is not lost).
pub struct Watch {
    watchers: Arc<Watchers>,
    id: u64,
    names: Vec<Named>,
    notify: Arc<Notify>,
}

impl Watchers {
    /// Registers a socket under `names`.
    pub fn watch(self: &Arc<Self>, names: Vec<Named>) -> Watch {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let mut by_name = self.lock();
        for name in &names {
            by_name
                .entry(name.clone())
                .or_default()
                .insert(id, Arc::clone(&notify));
        }
        drop(by_name);
        Watch {
            watchers: Arc::clone(self),
            id,
            names,
            notify,
        }
    }

    /// Wakes every socket registered under `name`.
    pub fn wake(&self, name: &Named) {
        let by_name = self.lock();
        if let Some(sockets) = by_name.get(name) {
            for notify in sockets.values() {
                notify.notify_one();
            }
        }
    }

    /// Sockets registered now (for tests and the gauge's sanity).
    pub fn len(&self) -> usize {
        let by_name = self.lock();
        let mut ids: Vec<u64> = by_name.values().flat_map(|s| s.keys().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Named, HashMap<u64, Arc<Notify>>>> {
        self.by_name.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Watch {
    /// Resolves when a revocation named this socket (which may or may not refuse its token).
    pub async fn revoked(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut by_name = self.watchers.lock();
        for name in &self.names {
            if let Some(sockets) = by_name.get_mut(name) {
                sockets.remove(&self.id);
                if sockets.is_empty() {
                    by_name.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_revocation_wakes_only_the_sockets_it_names() {
        let watchers = Arc::new(Watchers::default());
        let alice = watchers.watch(vec![Named::Session("s-alice".into())]);
        let bob = watchers.watch(vec![Named::Session("s-bob".into())]);
        watchers.wake(&Named::Session("s-alice".into()));
        // The permit is kept: the wait that starts after the wake-up returns at once.
        alice.revoked().await;
        let bob_woken = tokio::time::timeout(std::time::Duration::ZERO, bob.revoked()).await;
        assert!(bob_woken.is_err(), "bob's session was not named");
    }

    #[test]
    fn a_closed_socket_leaves_the_registry() {
        let watchers = Arc::new(Watchers::default());
        let watch = watchers.watch(vec![
            Named::Token("jti".into()),
            Named::Subject("alice".into()),
        ]);
        assert_eq!(watchers.len(), 1);
        drop(watch);
        assert!(watchers.is_empty());
    }
}
