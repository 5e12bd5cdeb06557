//! The gateway's durable store (SQLite or PostgreSQL): its signing keys and machine clients. Services keep their
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

    pub async fn insert_client(&self, client: &StoredClient) -> Result<(), InsertError> {
        let result = sqlx::query(
            "INSERT INTO clients (id, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&client.id)
        .bind(&client.secret_hash)
        .bind(&client.scopes)
        .bind(&client.created_at)
        .execute(self.db.pool())
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if kit::db::unique_violation(&error, &["id"]).is_some() => {
                Err(InsertError::Exists)
            }
            Err(error) => Err(InsertError::Database(
                anyhow::Error::new(error).context("storing a client"),
            )),
        }
    }

    pub async fn client(&self, id: &str) -> anyhow::Result<Option<StoredClient>> {
        let row =
            sqlx::query("SELECT id, secret_hash, scopes, created_at FROM clients WHERE id = $1")
                .bind(id)
                .fetch_optional(self.db.pool())
                .await
                .context("reading a client")?;
        row.as_ref().map(client_from_row).transpose()
    }

    pub async fn clients(&self) -> anyhow::Result<Vec<StoredClient>> {
        let rows =
            sqlx::query("SELECT id, secret_hash, scopes, created_at FROM clients ORDER BY id")
                .fetch_all(self.db.pool())
                .await
                .context("listing clients")?;
        rows.iter().map(client_from_row).collect()
    }

    /// Whether a client by that id existed.
    pub async fn remove_client(&self, id: &str) -> anyhow::Result<bool> {
        let result = sqlx::query("DELETE FROM clients WHERE id = $1")
            .bind(id)
            .execute(self.db.pool())
            .await
            .context("removing a client")?;
        Ok(result.rows_affected() > 0)
    }
}

/// A machine client as stored: never its secret, only the secret's hash.
#[derive(Debug, Clone)]
pub struct StoredClient {
    pub id: String,
    pub secret_hash: String,
    /// Space-separated.
    pub scopes: String,
    pub created_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("it exists already")]
    Exists,
    #[error(transparent)]
    Database(anyhow::Error),
}

fn client_from_row(row: &sqlx::any::AnyRow) -> anyhow::Result<StoredClient> {
    Ok(StoredClient {
        id: row.try_get("id")?,
        secret_hash: row.try_get("secret_hash")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
    })
}
