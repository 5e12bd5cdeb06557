//! The local, in-process view of revocations: what the hot path checks.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Denied token ids (until their expiry) and per-subject cut-offs.
#[derive(Default)]
pub struct Mirror {
    denied: RwLock<HashMap<String, u64>>,
    cutoffs: RwLock<HashMap<String, u64>>,
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Mirror {
    pub fn deny(&self, jti: &str, expires_at: u64) {
        let mut denied = self
            .denied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Expired entries are pruned as new ones arrive, so the map holds only live tokens.
        if denied.len() % 1024 == 1023 {
            let now = now_seconds();
            denied.retain(|_, expiry| *expiry > now);
        }
        denied.insert(jti.to_owned(), expires_at);
    }

    pub fn cut_off(&self, subject: &str, cutoff_ms: u64) {
        let mut cutoffs = self
            .cutoffs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = cutoffs.entry(subject.to_owned()).or_insert(cutoff_ms);
        *entry = (*entry).max(cutoff_ms);
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

    /// Whether a token of `subject`, with id `jti`, issued at `issued_ms`, is revoked.
    pub fn is_revoked(&self, jti: &str, subject: &str, issued_ms: u64) -> bool {
        self.is_denied(jti)
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
        assert!(mirror.is_revoked("a", "alice", 999));
        assert!(!mirror.is_revoked("b", "alice", 1_000));
        assert!(!mirror.is_revoked("c", "bob", 1));
        mirror.cut_off("alice", 500);
        assert!(
            mirror.is_revoked("a", "alice", 999),
            "a cut-off never moves back"
        );
    }

    #[test]
    fn a_denied_token_is_revoked() {
        let mirror = Mirror::default();
        mirror.deny("jti-1", now_seconds() + 60);
        assert!(mirror.is_revoked("jti-1", "alice", u64::MAX));
        assert!(!mirror.is_revoked("jti-2", "alice", u64::MAX));
    }
}
