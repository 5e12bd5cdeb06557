//! Fixed-window attempt counters in the service's database, shared by its replicas: how many
//! password guesses a key (an account, or a caller and a username) made in the current window.
//! One statement counts an attempt and reads the count, so concurrent guesses are counted like
//! a sequence.

use std::time::Duration;

use anyhow::Context;
use kit::db::Database;

use crate::error::Error;

/// The attempts counted under a key in its current window.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    pub count: u64,
    /// Until the window ends and the count starts again.
    pub resets_in: Duration,
}

#[derive(Clone, Debug)]
pub struct AttemptStore {
    db: Database,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl AttemptStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Counts one more attempt under `key`, in a window of `window` that starts with the first.
    pub async fn count(&self, key: &str, window: Duration) -> Result<Counted, Error> {
        let now_ms = kit::time::now().timestamp_millis();
        // Counters whose window is over are forgotten as others are counted (an indexed
        // range delete), so the table holds only live windows.
        sqlx::query("DELETE FROM attempt_counters WHERE window_ends_ms <= $1")
            .bind(now_ms)
            .execute(self.db.pool())
            .await
            .context("forgetting ended attempt windows")?;
        let (count, window_ends_ms): (i64, i64) = sqlx::query_as(
            "INSERT INTO attempt_counters (key, count, window_ends_ms) VALUES ($1, 1, $3) \
             ON CONFLICT (key) DO UPDATE SET \
               count = CASE WHEN attempt_counters.window_ends_ms <= $2 THEN 1 \
                            ELSE attempt_counters.count + 1 END, \
               window_ends_ms = CASE WHEN attempt_counters.window_ends_ms <= $2 THEN $3 \
                                     ELSE attempt_counters.window_ends_ms END \
             RETURNING count, window_ends_ms",
        )
        .bind(key)
        .bind(now_ms)
        .bind(now_ms.saturating_add(millis(window)))
        .fetch_one(self.db.pool())
        .await
        .context("counting an attempt")?;
        Ok(Counted {
            count: u64::try_from(count).unwrap_or(0),
            resets_in: Duration::from_millis(
                u64::try_from(window_ends_ms.saturating_sub(now_ms)).unwrap_or(0),
            ),
        })
    }

    /// Takes one counted attempt back: one whose check could not be made.
    pub async fn forgive(&self, key: &str) -> Result<(), Error> {
        sqlx::query("UPDATE attempt_counters SET count = count - 1 WHERE key = $1 AND count > 0")
            .bind(key)
            .execute(self.db.pool())
            .await
            .context("forgiving an attempt")?;
        Ok(())
    }

    /// Forgets the count under `key`: the right password was given.
    pub async fn clear(&self, key: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM attempt_counters WHERE key = $1")
            .bind(key)
            .execute(self.db.pool())
            .await
            .context("clearing an attempt counter")?;
        Ok(())
    }
}
