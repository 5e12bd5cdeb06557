//! The time as a caller may read it: `time:read` gives the instant in RFC 3339, `time:precise`
//! adds the Unix time in milliseconds.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kit::Identity;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// How much of the clock a caller may read, decided by its scopes alone (users and machine
/// clients are treated alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// `time:read`: the instant, to the millisecond.
    Instant,
    /// `time:read` and `time:precise`: the instant and the Unix time in milliseconds.
    Precise,
}

impl Reading {
    /// The reading `identity` may have. `time:precise` refines `time:read` and does not
    /// replace it: with only `time:precise` the caller is refused like one with no scope.
    pub fn allowed_to(identity: &Identity) -> Result<Self, Error> {
        identity.require_scope("time:read")?;
        Ok(if identity.has_scope("time:precise") {
            Self::Precise
        } else {
            Self::Instant
        })
    }
}

/// The current time.
#[derive(Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Time {
    /// RFC 3339 in UTC, to the millisecond.
    #[schema(format = DateTime, example = "2026-11-26T12:00:00.123Z")]
    pub iso: String,
    /// Milliseconds since the Unix epoch, the same instant as `iso`; only with `time:precise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = 1_795_694_400_123_i64)]
    pub unix_ms: Option<i64>,
}

impl Time {
    /// The instant `now` as `reading` allows.
    pub fn read(now: DateTime<Utc>, reading: Reading) -> Self {
        Self {
            iso: kit::time::format_millis(&now),
            unix_ms: (reading == Reading::Precise).then(|| now.timestamp_millis()),
        }
    }
}

/// Where the time comes from: the system clock, or (in tests) a fixed instant, so what an
/// answer says can be checked exactly rather than within a tolerance.
#[derive(Clone)]
pub struct Now(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Now {
    pub fn system() -> Self {
        Self(Arc::new(Utc::now))
    }

    /// Always `at`.
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Arc::new(move || at))
    }

    pub fn get(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for Now {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Now {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Now")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_precise_reading_adds_the_unix_milliseconds_of_the_same_instant() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T12:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);

        assert_eq!(
            Time::read(at, Reading::Instant),
            Time {
                iso: "2026-11-26T12:00:00.123Z".to_owned(),
                unix_ms: None
            }
        );
        assert_eq!(
            Time::read(at, Reading::Precise).unix_ms,
            Some(1_795_694_400_123)
        );
    }
}
