//! The local, in-process view of revocations: what the hot path checks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::watchers::{Named, Watchers};

/// Denied token ids and sessions (until their tokens' expiry) and per-subject cut-offs.
#[derive(Default)]
pub struct Mirror {
    denied: RwLock<HashMap<String, u64>>,
    sessions: RwLock<HashMap<String, u64>>,
    cutoffs: RwLock<HashMap<String, u64>>,
    /// The open WebSockets, woken by every revocation that names them (after it is in force
    /// here, so a woken socket that looks finds it).
    watchers: Arc<Watchers>,
}

/// Inserts `key` until `expiry`, pruning expired entries as new ones arrive, so the map holds
/// only what is still in force.
fn insert_pruned(map: &RwLock<HashMap<String, u64>>, key: &str, expiry: u64) {
    let mut map = map
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if map.len() % 1024 == 1023 {
        let now = crate::clock::unix_seconds();
        map.retain(|_, until| *until > now);
    }
    // The later expiry wins: a retried or reloaded revocation never shortens one in force.
    let until = map.entry(key.to_owned()).or_insert(expiry);
    *until = (*until).max(expiry);
}

impl Mirror {
    /// Applies `revocation` here.
    pub fn apply(&self, revocation: &super::Revocation) {
        match revocation {
            super::Revocation::Token { jti, until } => self.deny(jti, *until),
            super::Revocation::Session { sid, until } => self.deny_session(sid, *until),
            super::Revocation::Cutoff {
                subject, cutoff_ms, ..
            } => self.cut_off(subject, *cutoff_ms),
        }
    }

    pub fn deny(&self, jti: &str, expires_at: u64) {
        insert_pruned(&self.denied, jti, expires_at);
        self.watchers.wake(&Named::Token(jti.to_owned()));
    }

    /// Refuses every token of the sign-in session `sid` until `until` (Unix seconds).
    pub fn deny_session(&self, sid: &str, until: u64) {
        insert_pruned(&self.sessions, sid, until);
        self.watchers.wake(&Named::Session(sid.to_owned()));
    }

    pub fn cut_off(&self, subject: &str, cutoff_ms: u64) {
        let mut cutoffs = self
            .cutoffs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = cutoffs.entry(subject.to_owned()).or_insert(cutoff_ms);
        *entry = (*entry).max(cutoff_ms);
        drop(cutoffs);
        self.watchers.wake(&Named::Subject(subject.to_owned()));
    }

    /// The registry of open WebSockets this mirror wakes.
    pub fn watchers(&self) -> &Arc<Watchers> {
        &self.watchers
    }

    pub fn is_denied(&self, jti: &str) -> bool {
        self.denied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(jti)
    }

    /// The moment before which `subject`'s tokens are refused, if any.
    pub fn cutoff(&self, subject: &str) -> Option<u64> {
        self.cutoffs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(subject)
            .copied()
    }

    pub fn is_session_denied(&self, sid: &str) -> bool {
        self.sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(sid)
    }

    /// Whether a token with id `jti`, of session `sid`, of `subject`, issued at `issued_ms`, is
    /// revoked.
    pub fn is_revoked(&self, jti: &str, sid: Option<&str>, subject: &str, issued_ms: u64) -> bool {
        self.is_denied(jti)
            || sid.is_some_and(|sid| self.is_session_denied(sid))
            || self
                .cutoff(subject)
                .is_some_and(|cutoff| issued_ms < cutoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_refuses_only_tokens_issued_before_it() {
        let mirror = Mirror::default();
        mirror.cut_off("alice", 1_000);
        assert!(mirror.is_revoked("a", None, "alice", 999));
        assert!(!mirror.is_revoked("b", None, "alice", 1_000));
        assert!(!mirror.is_revoked("c", None, "bob", 1));
        mirror.cut_off("alice", 500);
        assert!(
            mirror.is_revoked("a", None, "alice", 999),
            "a cut-off never moves back"
        );
    }

    #[test]
    fn a_denied_token_is_revoked() {
        let mirror = Mirror::default();
        mirror.deny("jti-1", crate::clock::unix_seconds() + 60);
        assert!(mirror.is_revoked("jti-1", None, "alice", u64::MAX));
        mirror.deny_session("s-1", crate::clock::unix_seconds() + 60);
        assert!(
            mirror.is_revoked("jti-3", Some("s-1"), "alice", u64::MAX),
            "a denied session refuses all its tokens"
        );
        assert!(!mirror.is_revoked("jti-2", Some("s-2"), "alice", u64::MAX));
    }
}
