//! One pool type for SQLite and PostgreSQL. Services write portable SQL (`$1` placeholders,
//! TEXT ids and timestamps) against [`Database`], keep one migrations folder per backend, and
//! the right one runs at start.
//!
//! Work that writes more than one row runs in one transaction from [`Database::begin_write`],
//! inside [`Database::retrying`]: a database busy with other work (SQLite's lock, PostgreSQL's
//! serialization failures and deadlocks) is tried again a few times with a growing, jittered
//! pause, and only what stays busy through all of them reaches the client (as a 503, see
//! [`crate::outage`]).

use std::future::Future;
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};

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

    /// A transaction for work that writes. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that read first could not upgrade its lock
    /// while another writer held it, and would fail instead of waiting.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Runs `work` until it succeeds, fails for a reason other than contention
    /// ([`is_contention`]), or has been tried [`BUSY_ATTEMPTS`] times; answers its last result.
    /// `work` starts its own transaction each time (see [`Database::begin_write`]), so a retry
    /// never sees half of an earlier attempt. `doing` names the work in the log.
    ///
    /// Contention is retried, an outage is not waited out: once the pool's acquire timeout has
    /// passed (a lock held for good, say) the error is answered, so the client gets its 503
    /// within the request's deadline.
    pub async fn retrying<T, F, Fut>(&self, doing: &'static str, work: F) -> Result<T, sqlx::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        retry_contention(self.backend, self.options.acquire_timeout, doing, work).await
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

/// Attempts at one unit of work while the database is busy, the first included.
pub const BUSY_ATTEMPTS: usize = 8;

/// The pause before a retry: 10 ms doubling up to 640 ms, plus up to as much again at random,
/// so that waiters do not retry in step.
fn busy_backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(10))
        .with_factor(2.0)
        .with_max_delay(Duration::from_millis(640))
        .with_max_times(BUSY_ATTEMPTS - 1)
        .with_jitter()
}

async fn retry_contention<T, F, Fut>(
    backend: Backend,
    deadline: Duration,
    doing: &'static str,
    work: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let started = Instant::now();
    work.retry(busy_backoff())
        .when(|error| is_contention(backend, error) && started.elapsed() < deadline)
        .notify(|error, pause| {
            tracing::debug!(%error, doing, pause_ms = pause.as_millis(), "database busy; retrying");
        })
        .await
}

/// Whether `error` means only that other work held the database: worth another try.
pub fn is_contention(backend: Backend, error: &sqlx::Error) -> bool {
    let Some(code) = error.as_database_error().and_then(|e| e.code()) else {
        return false;
    };
    match backend {
        // Extended result codes; the low byte is the primary code: SQLITE_BUSY (5) or
        // SQLITE_LOCKED (6).
        Backend::Sqlite => code
            .parse::<i32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
        // serialization_failure, deadlock_detected.
        Backend::Postgres => matches!(&*code, "40001" | "40P01"),
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

    /// A database error with `code`, as a driver reports it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code)))
    }

    /// Runs work that fails with `errors` in turn, then succeeds; answers its result and how
    /// many times it ran.
    async fn run(
        backend: Backend,
        errors: Vec<sqlx::Error>,
    ) -> (Result<&'static str, sqlx::Error>, usize) {
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let errors = std::sync::Mutex::new(errors.into_iter());
        let (counted, failing) = (&attempts, &errors);
        let result = retry_contention(
            backend,
            Duration::from_secs(60),
            "testing",
            move || async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match failing.lock().unwrap().next() {
                    Some(error) => Err(error),
                    None => Ok("done"),
                }
            },
        )
        .await;
        (result, attempts.into_inner())
    }

    #[tokio::test]
    async fn work_the_database_was_too_busy_for_is_retried_until_it_succeeds() {
        let (result, attempts) = run(Backend::Sqlite, vec![coded("5"), coded("517")]).await;
        assert_eq!(result.unwrap(), "done");
        assert_eq!(
            attempts, 3,
            "SQLITE_BUSY, then SQLITE_BUSY_SNAPSHOT, then success"
        );

        let (result, attempts) = run(Backend::Postgres, vec![coded("40001"), coded("40P01")]).await;
        assert_eq!(result.unwrap(), "done");
        assert_eq!(
            attempts, 3,
            "a serialization failure, then a deadlock, then success"
        );
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        for (backend, error, reason) in [
            (Backend::Postgres, coded("23505"), "a unique violation"),
            (Backend::Sqlite, coded("2067"), "SQLite's unique violation"),
            (
                Backend::Postgres,
                coded("5"),
                "SQLite's busy code from PostgreSQL",
            ),
            (Backend::Sqlite, sqlx::Error::RowNotFound, "no row"),
            (
                Backend::Sqlite,
                sqlx::Error::PoolTimedOut,
                "an outage, not contention",
            ),
        ] {
            let (result, attempts) = run(backend, vec![error]).await;
            assert!(result.is_err(), "{reason}");
            assert_eq!(attempts, 1, "{reason} is answered at once");
        }
    }

    #[tokio::test]
    async fn a_database_that_stays_busy_is_tried_a_bounded_number_of_times() {
        let busy = (0..BUSY_ATTEMPTS + 5).map(|_| coded("40001")).collect();
        let (result, attempts) = run(Backend::Postgres, busy).await;
        let error = result.unwrap_err();
        assert!(
            is_contention(Backend::Postgres, &error),
            "the last error is answered"
        );
        assert_eq!(attempts, BUSY_ATTEMPTS);
    }

    #[tokio::test]
    async fn contention_past_the_deadline_is_answered_not_waited_out() {
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let result: Result<(), _> =
            retry_contention(Backend::Sqlite, Duration::ZERO, "testing", || {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { Err(coded("5")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(attempts.into_inner(), 1);
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
