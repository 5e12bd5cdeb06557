//! One pool type for SQLite and PostgreSQL. Services write portable SQL (`$1` placeholders,
//! TEXT ids and timestamps) against [`Database`], keep one migrations folder per backend, and
//! the right one runs at start.

use std::sync::Once;

use anyhow::Context;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::AnyPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!(
                "unsupported database URL (expected sqlite:// or postgres://): {}",
                redact(url)
            )
        }
    }
}

/// The migrations of a service, one set per backend, embedded with `sqlx::migrate!`.
#[derive(Clone, Copy)]
pub struct Migrations {
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    options: PoolOptions,
}

/// How the pool waits for the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// How long a query waits for a connection (and SQLite for its lock) before it fails as an
    /// outage: well inside a request's deadline, so the client gets a 503 rather than a hang.
    pub acquire_timeout: std::time::Duration,
}

/// The default [`PoolOptions::acquire_timeout`].
pub const DEFAULT_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl Database {
    /// Connects (creating a SQLite file and its folder when missing) and runs the migrations.
    pub async fn connect(url: &str, migrations: Migrations) -> anyhow::Result<Self> {
        Self::connect_with(url, migrations, PoolOptions::default()).await
    }

    /// [`Database::connect`] with pool settings of the caller's choice.
    pub async fn connect_with(
        url: &str,
        migrations: Migrations,
        options: PoolOptions,
    ) -> anyhow::Result<Self> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let max_connections = match backend {
            // SQLite takes one writer at a time; a few readers beside it are all it can use.
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |connection, _| {
                Box::pin(async move { bound_lock_wait(connection, backend, options).await })
            })
            .connect(&url)
            .await
            .with_context(|| format!("connecting to {}", redact(&url)))?;
        if backend == Backend::Sqlite {
            // WAL lets readers proceed beside the writer; the setting stays with the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .context("enabling WAL")?;
            if let Some(path) = sqlite_path(&url) {
                crate::private_files::restrict_companions(std::path::Path::new(&path))?;
            }
        }
        let migrator = match backend {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        migrator.run(&pool).await.context("running migrations")?;
        Ok(Self {
            pool,
            backend,
            options,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool settings it was opened with: work that retries stays within `acquire_timeout`.
    pub fn options(&self) -> PoolOptions {
        self.options
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// A readiness check for [`crate::health`].
    pub fn readiness_check(&self) -> crate::health::Check {
        let database = self.clone();
        std::sync::Arc::new(move || {
            let database = database.clone();
            Box::pin(async move { database.ping().await.map_err(|e| e.to_string()) })
        })
    }
}

/// SQLite waits for another process's lock for its `busy_timeout` (sqlx sets 5 s): bound it by
/// the acquire timeout, so a locked file is an outage answered in time, like an unreachable
/// server.
async fn bound_lock_wait(
    connection: &mut sqlx::AnyConnection,
    backend: Backend,
    options: PoolOptions,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        let millis = options.acquire_timeout.as_millis().max(1);
        sqlx::Executor::execute(
            &mut *connection,
            format!("PRAGMA busy_timeout = {millis}").as_str(),
        )
        .await?;
    }
    Ok(())
}

/// Whether a SQLite database file already existed: `up` seeds demo data only into a new one.
pub fn sqlite_file_exists(url: &str) -> bool {
    sqlite_path(url).is_some_and(|path| std::path::Path::new(&path).exists())
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// The URL to open, once the file and its folder exist and are the owner's alone (see
/// [`crate::private_files`]).
fn prepare_sqlite(url: &str) -> anyhow::Result<String> {
    let url = if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    };
    if let Some(path) = sqlite_path(&url) {
        let creates = url.contains("mode=rwc");
        crate::private_files::prepare(std::path::Path::new(&path), creates)?;
    }
    Ok(url)
}

/// A URL fit for logs: the password, if any, replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The column a unique constraint protected, when `error` is a unique violation on one of
/// `columns`. PostgreSQL names the constraint (`users_email_key`); SQLite names the column
/// (`UNIQUE constraint failed: users.email`); both carry the column's name.
pub fn unique_violation<'a>(error: &sqlx::Error, columns: &[&'a str]) -> Option<&'a str> {
    let database_error = error.as_database_error()?;
    if !matches!(
        database_error.kind(),
        sqlx::error::ErrorKind::UniqueViolation
    ) {
        return None;
    }
    let named =
        database_error.constraint().unwrap_or_default().to_owned() + " " + database_error.message();
    columns
        .iter()
        .copied()
        .find(|column| named.contains(column))
        .or(columns.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(
            sqlite_path("sqlite://data/x.db?mode=rwc").as_deref(),
            Some("data/x.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
