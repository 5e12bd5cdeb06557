//! The gateway's durable store (SQLite or PostgreSQL): signing keys, machine clients,
//! refresh-token families, the secret that signs device tokens, revocations
//! (`revocations.rs`), and the writes waiting out an outage (`pending.rs`). Services keep their
//! own databases; nothing here is shared with them.

mod pending;
mod revocations;

pub use pending::{StoreWrite, WriteError, Written};

use anyhow::Context;
use kit::db::{Database, Migrations};
use sqlx::migrate::Migrator;
use sqlx::Row;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    /// Writes that met an outage, retried until they land; shared by every clone.
    pending: std::sync::Arc<pending::Pending>,
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
        Self::connect_with(url, kit::db::PoolOptions::default()).await
    }

    /// [`Store::connect`] with the pool settings of the configuration (`store.acquire_timeout`).
    pub async fn connect_with(url: &str, pool: kit::db::PoolOptions) -> anyhow::Result<Self> {
        let db = Database::connect_with(
            url,
            Migrations {
                sqlite: &SQLITE,
                postgres: &POSTGRES,
            },
            pool,
        )
        .await?;
        Ok(Self {
            db,
            pending: std::sync::Arc::default(),
        })
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

    pub async fn delete_signing_key(&self, kid: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .execute(self.db.pool())
            .await
            .context("deleting a retired signing key")?;
        Ok(())
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

impl Store {
    /// The secret that signs device tokens: `candidate` if none was stored yet, else the one
    /// stored (by this replica earlier, or by another that started at the same moment).
    pub async fn device_secret(&self, candidate: &str) -> anyhow::Result<String> {
        sqlx::query(
            "INSERT INTO device_secret (id, secret, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .bind(kit::time::now_text())
        .execute(self.db.pool())
        .await
        .context("storing the device-token secret")?;
        let (secret,): (String,) = sqlx::query_as("SELECT secret FROM device_secret WHERE id = 1")
            .fetch_one(self.db.pool())
            .await
            .context("reading the device-token secret")?;
        Ok(secret)
    }
}

impl Store {
    /// Starts a family with its first token, in one transaction (a family never stands empty).
    pub async fn start_family(
        &self,
        family_id: &str,
        subject: &str,
        scope: Option<&str>,
        created_ms: u64,
        hash: &str,
        expires_at: u64,
    ) -> anyhow::Result<()> {
        let mut transaction = self
            .db
            .pool()
            .begin()
            .await
            .context("starting a transaction")?;
        sqlx::query(
            "INSERT INTO refresh_families (id, subject, scope, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(family_id)
        .bind(subject)
        .bind(scope)
        .bind(to_i64(created_ms))
        .execute(&mut *transaction)
        .await
        .context("creating a refresh-token family")?;
        sqlx::query("INSERT INTO refresh_tokens (hash, family_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
            .bind(hash)
            .bind(family_id)
            .bind(to_i64(expires_at))
            .bind(kit::time::now_text())
            .execute(&mut *transaction)
            .await
            .context("storing a refresh token")?;
        transaction
            .commit()
            .await
            .context("committing a new refresh-token family")?;
        Ok(())
    }

    pub async fn find_refresh(&self, hash: &str) -> anyhow::Result<Option<RefreshRecord>> {
        let row = sqlx::query(
            "SELECT t.family_id, t.expires_at, t.spent_at, f.subject, f.scope, f.created_ms, f.revoked_at \
             FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.db.pool())
        .await
        .context("reading a refresh token")?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RefreshRecord {
            family_id: row.try_get("family_id")?,
            subject: row.try_get("subject")?,
            scope: row.try_get("scope")?,
            expires_at: from_i64(row.try_get("expires_at")?),
            family_created_ms: from_i64(row.try_get("created_ms")?),
            spent: row.try_get::<Option<String>, _>("spent_at")?.is_some(),
            family_revoked: row.try_get::<Option<String>, _>("revoked_at")?.is_some(),
        }))
    }

    /// Spends `old` and stores `new` in its family, in one transaction; `false` (and nothing
    /// changed) when `old` was already spent.
    pub async fn rotate_refresh(
        &self,
        old: &str,
        new: &str,
        family_id: &str,
        expires_at: u64,
    ) -> anyhow::Result<bool> {
        let mut transaction = self
            .db
            .pool()
            .begin()
            .await
            .context("starting a transaction")?;
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET spent_at = $1 WHERE hash = $2 AND spent_at IS NULL",
        )
        .bind(kit::time::now_text())
        .bind(old)
        .execute(&mut *transaction)
        .await
        .context("spending a refresh token")?;
        if spent.rows_affected() != 1 {
            transaction.rollback().await.context("rolling back")?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO refresh_tokens (hash, family_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
            .bind(new)
            .bind(family_id)
            .bind(to_i64(expires_at))
            .bind(kit::time::now_text())
            .execute(&mut *transaction)
            .await
            .context("storing a refresh token")?;
        transaction.commit().await.context("committing a refresh")?;
        Ok(true)
    }

    pub async fn revoke_family(&self, id: &str, reason: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(kit::time::now_text())
        .bind(reason)
        .bind(id)
        .execute(self.db.pool())
        .await
        .context("revoking a refresh-token family")?;
        Ok(())
    }

    /// Revokes every family of `subject` started before `before_ms`.
    pub async fn revoke_families_before(
        &self,
        subject: &str,
        before_ms: u64,
        reason: &str,
    ) -> anyhow::Result<u64> {
        let result = sqlx::query(
            "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2 \
             WHERE subject = $3 AND created_ms < $4 AND revoked_at IS NULL",
        )
        .bind(kit::time::now_text())
        .bind(reason)
        .bind(subject)
        .bind(to_i64(before_ms))
        .execute(self.db.pool())
        .await
        .context("revoking refresh-token families")?;
        Ok(result.rows_affected())
    }

    /// Forgets refresh tokens that expired before `before` (Unix seconds), and emptied families.
    pub async fn purge_refresh(&self, before: u64) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(to_i64(before))
            .execute(self.db.pool())
            .await
            .context("purging expired refresh tokens")?;
        sqlx::query("DELETE FROM refresh_families WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = refresh_families.id)")
            .execute(self.db.pool())
            .await
            .context("purging empty refresh-token families")?;
        Ok(())
    }
}

/// A refresh token and its family, as stored.
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub family_id: String,
    pub subject: String,
    /// The scopes the session is limited to, when narrower than the account's.
    pub scope: Option<String>,
    pub expires_at: u64,
    pub family_created_ms: u64,
    pub spent: bool,
    pub family_revoked: bool,
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_i64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
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
