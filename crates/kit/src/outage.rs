//! A database that cannot be reached is an outage, not a bug: this tells the two apart, so every
//! service (and the gateway) answers 503 with `Retry-After` for the first and keeps 500 for the
//! second.
//!
//! What counts as an outage: no connection within the pool's acquire timeout, a closed pool, a
//! broken or refused connection (I/O, TLS, protocol), PostgreSQL's connection-exception class
//! (`08…`), `admin_shutdown` / `crash_shutdown` / `cannot_connect_now` (`57P01`–`57P03`) and
//! `too_many_connections` (`53300`), SQLite's `BUSY` / `LOCKED` after the busy timeout
//! (another process holds the file), and PostgreSQL's `serialization_failure` (`40001`) and
//! `deadlock_detected` (`40P01`) once [`crate::db::Database::retrying`] has tried the work
//! again and again (the database stayed too busy to take it now). Constraint violations, bad
//! SQL or undecodable rows stay bugs.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};

use crate::Problem;

/// How long a client should wait before retrying after an outage answer: long enough for a
/// restarted database or a failover, short enough that a client is back soon after.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Whether `error` says the database is unreachable or unavailable, rather than that the
/// request or our SQL is wrong.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(database) => {
            database.code().is_some_and(|code| unavailable_code(&code))
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes that mean "not now", not "not so".
fn unavailable_code(code: &str) -> bool {
    if code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
        )
    {
        return true;
    }
    // SQLite gives extended result codes as numbers; the low byte is the primary code:
    // SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_CANTOPEN (14), SQLITE_IOERR (10).
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 14))
}

/// Whether any cause in `error`'s chain is a database outage (see [`is_unavailable`]).
pub fn caused_by_outage(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<sqlx::Error>())
        .any(is_unavailable)
}

/// The answer to a request that met a database outage: 503 with `Retry-After`, the cause logged
/// once (as a warning: it is the database's state, not our fault).
pub fn unavailable(cause: &anyhow::Error) -> Problem {
    tracing::warn!(error = %format!("{cause:#}"), "database unavailable");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE)
        .with_detail("The database is unavailable; try again shortly.")
        .with_reason("store_unavailable")
        .with_header(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        )
}

/// The answer to an error no more specific variant took: 503 when a database outage caused it,
/// else the generic 500. Services map their `Unexpected(anyhow::Error)` through this.
pub fn unexpected(cause: &anyhow::Error) -> Problem {
    if caused_by_outage(cause) {
        unavailable(cause)
    } else {
        Problem::internal(&format!("{cause:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_unreachable_database_is_an_outage_and_a_bad_row_is_not() {
        let timed_out: Result<(), sqlx::Error> = Err(sqlx::Error::PoolTimedOut);
        let error = timed_out.context("reading a user").unwrap_err();
        assert!(caused_by_outage(&error));
        assert_eq!(unexpected(&error).status(), StatusCode::SERVICE_UNAVAILABLE);

        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_unavailable(&refused));

        let bad_row = anyhow::Error::new(sqlx::Error::RowNotFound).context("reading a user");
        assert!(!caused_by_outage(&bad_row));
        assert_eq!(
            unexpected(&bad_row).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert!(!caused_by_outage(&anyhow::anyhow!("a plain bug")));
    }

    #[test]
    fn busy_and_connection_codes_are_outages_and_constraints_are_not() {
        assert!(unavailable_code("5"), "SQLITE_BUSY");
        assert!(unavailable_code("517"), "SQLITE_BUSY_SNAPSHOT");
        assert!(unavailable_code("08006"), "connection_failure");
        assert!(unavailable_code("57P01"), "admin_shutdown");
        assert!(
            unavailable_code("40001"),
            "serialization_failure, after the retries"
        );
        assert!(
            unavailable_code("40P01"),
            "deadlock_detected, after the retries"
        );
        assert!(!unavailable_code("23505"), "unique_violation");
        assert!(!unavailable_code("2067"), "SQLITE_CONSTRAINT_UNIQUE");
    }
}
