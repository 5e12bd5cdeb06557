//! The gateway's durable store (SQLite or PostgreSQL): its signing keys. Services keep their
//! own databases; nothing here is shared with them.

use anyhow::Context;
use kit::db::{Database, Migrations};
use sqlx::migrate::Migrator;
use sqlx::Row;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

/// A signing key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    pub private_key: String,
    pub created_at: String,
}

impl Store {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let db = Database::connect(
            url,
            Migrations {
                sqlite: &SQLITE,
                postgres: &POSTGRES,
            },
        )
        .await?;
        Ok(Self { db })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Every key, newest first.
    pub async fn signing_keys(&self) -> anyhow::Result<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_key, created_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(self.db.pool())
        .await
        .context("reading signing keys")?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    kid: row.try_get("kid")?,
                    algorithm: row.try_get("algorithm")?,
                    private_key: row.try_get("private_key")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding signing keys")
    }

    pub async fn insert_signing_key(&self, key: &StoredKey) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(&key.private_key)
            .bind(&key.created_at)
            .execute(self.db.pool())
            .await
            .context("storing a signing key")?;
        Ok(())
    }
}
