//! Revocations kept in the store: the source of truth that every replica's mirror is loaded from
//! at start and after Redis comes back (Redis only carries them fast).

use anyhow::Context;
use kit::db::Backend;
use sqlx::Row;

use super::{from_i64, to_i64, Store};
use crate::state::Revocation;

/// How far back a follower reads before its cursor: a row stamped just before the cursor but
/// committed after it was read (a slow transaction, PostgreSQL) is still seen.
pub const FOLLOW_OVERLAP_MS: u64 = 60_000;

/// Where a follower of the revocations table stands: the database's clock (Unix ms) at its last
/// read. Rows are stamped with that same clock when written, so no replica's clock matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationCursor(u64);

impl Store {
    /// The database's clock in Unix milliseconds, as SQL: one clock for every replica. SQLite
    /// runs in the process, but every replica that shares a SQLite file shares its host's clock.
    fn clock_ms_sql(&self) -> &'static str {
        match self.db.backend() {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }

    /// Records `revocation`; a later, stronger one for the same name wins (the later expiry, the
    /// later cut-off), so a retried or reordered write never weakens what is in force. It is
    /// stamped with the database's clock, which followers use as their cursor.
    pub async fn record_revocation(&self, revocation: &Revocation) -> anyhow::Result<()> {
        let (kind, name, value, expires_at) = revocation.parts();
        sqlx::query(&format!(
            "INSERT INTO revocations (kind, name, value, expires_at, recorded_ms) VALUES ($1, $2, $3, $4, {}) \
             ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, \
             recorded_ms = excluded.recorded_ms WHERE revocations.value < excluded.value",
            self.clock_ms_sql()
        ))
        .bind(kind)
        .bind(name)
        .bind(to_i64(value))
        .bind(to_i64(expires_at))
        .execute(self.db.pool())
        .await
        .context("recording a revocation")?;
        Ok(())
    }

    /// Every revocation still in force at `now` (Unix seconds).
    pub async fn live_revocations(&self, now: u64) -> anyhow::Result<Vec<Revocation>> {
        self.revocations_stamped_since(now, 0).await
    }

    /// A cursor at the database's clock now: a follower starting here sees what is recorded
    /// from now on (and [`FOLLOW_OVERLAP_MS`] before).
    pub async fn revocation_cursor(&self) -> anyhow::Result<RevocationCursor> {
        let now: i64 = sqlx::query_scalar(&format!("SELECT {}", self.clock_ms_sql()))
            .fetch_one(self.db.pool())
            .await
            .context("reading the store's clock")?;
        Ok(RevocationCursor(from_i64(now)))
    }

    /// The revocations in force at `now` recorded since `cursor` (less the overlap), and the
    /// cursor to pass next time. The next cursor is the database's clock before the read, never
    /// a row's stamp, so a row stamped in the future (an old replica's clock) cannot move it.
    pub async fn revocations_since(
        &self,
        now: u64,
        cursor: RevocationCursor,
    ) -> anyhow::Result<(Vec<Revocation>, RevocationCursor)> {
        let next = self.revocation_cursor().await?;
        let since_ms = cursor.0.saturating_sub(FOLLOW_OVERLAP_MS);
        Ok((self.revocations_stamped_since(now, since_ms).await?, next))
    }

    async fn revocations_stamped_since(
        &self,
        now: u64,
        since_ms: u64,
    ) -> anyhow::Result<Vec<Revocation>> {
        let rows = sqlx::query(
            "SELECT kind, name, value, expires_at FROM revocations \
             WHERE expires_at > $1 AND recorded_ms >= $2",
        )
        .bind(to_i64(now))
        .bind(to_i64(since_ms))
        .fetch_all(self.db.pool())
        .await
        .context("loading revocations")?;
        let mut live = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind: String = row.try_get("kind")?;
            let name: String = row.try_get("name")?;
            let value = from_i64(row.try_get("value")?);
            let expires_at = from_i64(row.try_get("expires_at")?);
            match Revocation::from_parts(&kind, name, value, expires_at) {
                Some(revocation) => live.push(revocation),
                None => tracing::warn!(kind = %kind, "ignoring a revocation of unknown kind"),
            }
        }
        Ok(live)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_row_stamped_by_a_clock_running_ahead_does_not_hide_later_rows_from_followers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/data/store.db", dir.path().display()))
            .await
            .unwrap();
        let until = u64::MAX / 4;
        let start = store.revocation_cursor().await.unwrap();
        // As a replica whose clock runs an hour ahead stamped it (or an older gateway did).
        sqlx::query(
            "INSERT INTO revocations (kind, name, value, expires_at, recorded_ms) VALUES ('deny', 'ahead', $1, $1, $2)",
        )
        .bind(to_i64(until))
        .bind(to_i64(start.0 + 3_600_000))
        .execute(store.db.pool())
        .await
        .unwrap();
        let (seen, cursor) = store.revocations_since(1, start).await.unwrap();
        assert_eq!(seen.len(), 1);

        store
            .record_revocation(&Revocation::Token {
                jti: "later".to_owned(),
                until,
            })
            .await
            .unwrap();
        let (seen, _) = store.revocations_since(1, cursor).await.unwrap();
        assert!(
            seen.contains(&Revocation::Token {
                jti: "later".to_owned(),
                until
            }),
            "the row recorded after the read is seen: {seen:?}"
        );
    }
}
