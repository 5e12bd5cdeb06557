//! Revocations kept in the store: the source of truth that every replica's mirror is loaded from
//! at start and after Redis comes back (Redis only carries them fast).

use anyhow::Context;
use sqlx::Row;

use super::{from_i64, to_i64, Store};
use crate::state::Revocation;

impl Store {
    /// Records `revocation`; a later, stronger one for the same name wins (the later expiry, the
    /// later cut-off), so a retried or reordered write never weakens what is in force.
    pub async fn record_revocation(&self, revocation: &Revocation) -> anyhow::Result<()> {
        let (kind, name, value, expires_at) = revocation.parts();
        sqlx::query(
            "INSERT INTO revocations (kind, name, value, expires_at, recorded_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, \
             recorded_ms = excluded.recorded_ms WHERE revocations.value < excluded.value",
        )
        .bind(kind)
        .bind(name)
        .bind(to_i64(value))
        .bind(to_i64(expires_at))
        .bind(to_i64(crate::auth::tokens::now_ms()))
        .execute(self.db.pool())
        .await
        .context("recording a revocation")?;
        Ok(())
    }

    /// Every revocation still in force at `now` (Unix seconds).
    pub async fn live_revocations(&self, now: u64) -> anyhow::Result<Vec<Revocation>> {
        Ok(self.revocations_recorded_since(now, 0).await?.0)
    }

    /// The revocations in force at `now` recorded at or after `since_ms`, and the latest
    /// `recorded_ms` among them (or `since_ms`).
    pub async fn revocations_recorded_since(
        &self,
        now: u64,
        since_ms: u64,
    ) -> anyhow::Result<(Vec<Revocation>, u64)> {
        let rows = sqlx::query(
            "SELECT kind, name, value, expires_at, recorded_ms FROM revocations \
             WHERE expires_at > $1 AND recorded_ms >= $2",
        )
        .bind(to_i64(now))
        .bind(to_i64(since_ms))
        .fetch_all(self.db.pool())
        .await
        .context("loading revocations")?;
        let mut latest = since_ms;
        let mut live = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind: String = row.try_get("kind")?;
            let name: String = row.try_get("name")?;
            let value = from_i64(row.try_get("value")?);
            let expires_at = from_i64(row.try_get("expires_at")?);
            latest = latest.max(from_i64(row.try_get("recorded_ms")?));
            match Revocation::from_parts(&kind, name, value, expires_at) {
                Some(revocation) => live.push(revocation),
                None => tracing::warn!(kind = %kind, "ignoring a revocation of unknown kind"),
            }
        }
        Ok((live, latest))
    }

    /// Forgets revocations that expired before `now` (Unix seconds); they refuse nothing more.
    pub async fn purge_revocations(&self, now: u64) -> anyhow::Result<u64> {
        let result = sqlx::query("DELETE FROM revocations WHERE expires_at <= $1")
            .bind(to_i64(now))
            .execute(self.db.pool())
            .await
            .context("purging expired revocations")?;
        Ok(result.rows_affected())
    }
}
