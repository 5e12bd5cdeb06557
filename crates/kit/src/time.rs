//! Timestamps as gatehouse writes them, in one place: RFC 3339 in UTC with a `Z`, and a fixed
//! number of fractional digits, so that text order is time order (the stores compare and sort
//! timestamps as TEXT, on SQLite and PostgreSQL alike).
//!
//! What is stored and what a response shows is to the microsecond ([`format`], [`now`]), so a
//! value read back equals the value written; the clock service's answer is to the millisecond
//! ([`format_millis`]), its documented contract.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::Serializer;

/// Now, to the microsecond: the precision timestamps are stored and shown with.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// `2026-12-01T10:00:00.000000Z`: six fractional digits, always.
pub fn format(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `2026-12-01T10:00:00.000Z`: three fractional digits, always.
pub fn format_millis(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, as [`format`] writes it.
pub fn now_text() -> String {
    format(&now())
}

/// A timestamp [`format`] wrote (any RFC 3339 offset is accepted and converted to UTC).
pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|at| at.to_utc())
}

/// For `#[serde(serialize_with = "kit::time::serialize")]`: a response shows a timestamp as it
/// is stored.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse(text).unwrap()
    }

    #[test]
    fn timestamps_have_a_fixed_width_in_utc_with_a_z() {
        assert_eq!(
            format(&at("2026-12-01T10:00:00Z")),
            "2026-12-01T10:00:00.000000Z"
        );
        assert_eq!(
            format(&at("2026-12-01T12:00:00.5+02:00")),
            "2026-12-01T10:00:00.500000Z",
            "an offset is converted to UTC"
        );
        assert_eq!(
            format_millis(&at("2026-12-01T10:00:00.123456Z")),
            "2026-12-01T10:00:00.123Z"
        );
    }

    #[test]
    fn text_order_is_time_order() {
        let earlier = format(&at("2026-12-01T10:00:00.999999Z"));
        let later = format(&at("2026-12-01T10:00:01Z"));
        assert!(earlier < later, "{earlier} < {later}");
    }

    #[test]
    fn now_reads_back_as_written() {
        let now = now();
        assert_eq!(parse(&format(&now)).unwrap(), now);
    }

    #[test]
    fn what_is_not_a_timestamp_is_refused() {
        for text in ["", "yesterday", "2026-12-01", "2026-13-01T00:00:00Z"] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
