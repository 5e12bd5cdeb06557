//! `?limit=&offset=` for every list, read and bounded in one place: the [`Pagination`]
//! extractor and its OpenAPI parameters.
//!
//! A value that is not a whole number at all (`limit=ten`, `offset=1.5`) is a malformed query:
//! 400. A whole number out of range (`limit=0`, `limit=201`, `offset=-1`, or one past 64 bits)
//! is a well-formed request the list cannot take: 422. Either way every bad parameter is listed
//! in `errors`, so a client fixes them all in one round.

use std::num::IntErrorKind;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::problem::{FieldError, Problem};

/// How many items a page holds when the request does not say.
pub const DEFAULT_LIMIT: i64 = 50;
/// The most items a page may hold.
pub const MAX_LIMIT: i64 = 200;

/// Which page of a list to answer.
// The `param` bounds repeat the constants: utoipa takes literals only; a test pins them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// How many items to answer, 1 to 200.
    #[param(required = false, minimum = 1, maximum = 200, default = 50)]
    pub limit: i64,
    /// How many items to skip, from the first.
    #[param(required = false, minimum = 0, default = 0)]
    pub offset: i64,
}

impl Default for Pagination {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl Pagination {
    /// The parameters as sent (`None`: left out), each checked, every bad one listed.
    pub fn parse(limit: Option<&str>, offset: Option<&str>) -> Result<Self, Problem> {
        let mut errors = Vec::new();
        let mut malformed = false;
        let mut read = |name: &str, text: Option<&str>, default: i64, range: Bounds| {
            let Some(text) = text else {
                return default;
            };
            match range.check(text) {
                Ok(value) => value,
                Err(Bad::Malformed) => {
                    malformed = true;
                    errors.push(FieldError::new(name, "must be a whole number"));
                    default
                }
                Err(Bad::OutOfRange(message)) => {
                    errors.push(FieldError::new(name, message));
                    default
                }
            }
        };
        let limit = read("limit", limit, DEFAULT_LIMIT, Bounds::LIMIT);
        let offset = read("offset", offset, 0, Bounds::OFFSET);
        match (errors.is_empty(), malformed) {
            (true, _) => Ok(Self { limit, offset }),
            // A value that is not a number at all makes the query malformed; the range errors
            // beside it are listed too, so one round fixes everything.
            (false, true) => Err(Problem::malformed_fields(errors)),
            (false, false) => Err(Problem::invalid_fields(errors)),
        }
    }
}

/// The two parameters as the query string has them; any other parameter is the handler's.
#[derive(Deserialize)]
struct Raw {
    limit: Option<String>,
    offset: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Read as text first: a malformed value is told apart from one out of range, and a
        // query string that does not decode (a parameter given twice) is a 400 from the kit's
        // `Query`.
        let crate::extract::Query(raw) =
            crate::extract::Query::<Raw>::from_request_parts(parts, state).await?;
        Self::parse(raw.limit.as_deref(), raw.offset.as_deref())
    }
}

#[derive(Clone, Copy)]
struct Bounds {
    least: i64,
    most: i64,
}

enum Bad {
    Malformed,
    OutOfRange(String),
}

impl Bounds {
    const LIMIT: Self = Self {
        least: 1,
        most: MAX_LIMIT,
    };
    const OFFSET: Self = Self {
        least: 0,
        most: i64::MAX,
    };

    fn check(self, text: &str) -> Result<i64, Bad> {
        let value = match text.parse::<i64>() {
            Ok(value) => Some(value),
            // Digits past the 64-bit range are a number, just far out of range.
            Err(error) if matches!(error.kind(), IntErrorKind::PosOverflow) => None,
            Err(error) if matches!(error.kind(), IntErrorKind::NegOverflow) => Some(i64::MIN),
            Err(_) => return Err(Bad::Malformed),
        };
        match value {
            Some(value) if (self.least..=self.most).contains(&value) => Ok(value),
            _ => Err(Bad::OutOfRange(self.describe())),
        }
    }

    fn describe(self) -> String {
        if self.most == i64::MAX {
            format!("must be at least {}", self.least)
        } else {
            format!("must be between {} and {}", self.least, self.most)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn fields_of(problem: &Problem) -> Vec<&str> {
        problem.errors().iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn left_out_parameters_take_their_defaults() {
        assert_eq!(
            Pagination::parse(None, None).unwrap(),
            Pagination::default()
        );
        assert_eq!(
            Pagination::parse(Some("200"), Some("9223372036854775807")).unwrap(),
            Pagination {
                limit: 200,
                offset: i64::MAX
            },
            "the bounds themselves are accepted"
        );
        assert_eq!(
            Pagination::parse(Some("1"), Some("0")).unwrap(),
            Pagination {
                limit: 1,
                offset: 0
            }
        );
    }

    #[test]
    fn whole_numbers_out_of_range_are_422_naming_each_parameter() {
        for (limit, offset, fields, reason) in [
            (Some("0"), None, vec!["limit"], "a limit of 0"),
            (Some("201"), None, vec!["limit"], "a limit past the most"),
            (Some("-5"), None, vec!["limit"], "a negative limit"),
            (None, Some("-1"), vec!["offset"], "a negative offset"),
            (Some("0"), Some("-1"), vec!["limit", "offset"], "both"),
            (
                Some("99999999999999999999999"),
                None,
                vec!["limit"],
                "a huge limit",
            ),
            (
                None,
                Some("9223372036854775808"),
                vec!["offset"],
                "an offset one past 64 bits",
            ),
            (
                None,
                Some("-99999999999999999999999"),
                vec!["offset"],
                "a hugely negative offset",
            ),
        ] {
            let problem = Pagination::parse(limit, offset).expect_err(reason);
            assert_eq!(
                problem.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{reason}"
            );
            assert_eq!(fields_of(&problem), fields, "{reason}");
        }
    }

    #[test]
    fn values_that_are_not_whole_numbers_are_400_listing_every_bad_parameter() {
        for (limit, offset, fields, reason) in [
            (Some("ten"), None, vec!["limit"], "a word"),
            (None, Some("1.5"), vec!["offset"], "a fraction"),
            (Some(""), None, vec!["limit"], "an empty value"),
            (Some("0x10"), None, vec!["limit"], "hexadecimal"),
            (Some(" 5"), None, vec!["limit"], "a leading space"),
            (Some("5;DROP TABLE users"), None, vec!["limit"], "SQL"),
            (
                Some("ten"),
                Some("-1"),
                vec!["limit", "offset"],
                "malformed beside out of range: both listed",
            ),
        ] {
            let problem = Pagination::parse(limit, offset).expect_err(reason);
            assert_eq!(problem.status(), StatusCode::BAD_REQUEST, "{reason}");
            assert_eq!(fields_of(&problem), fields, "{reason}");
        }
    }

    #[test]
    fn the_documented_bounds_are_the_enforced_ones() {
        let parameters = Pagination::into_params(|| None);
        let schema_of = |name: &str| {
            let parameter = parameters
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no {name} parameter"));
            serde_json::to_value(&parameter.schema).unwrap()
        };
        let limit = schema_of("limit");
        assert_eq!(limit["minimum"], Bounds::LIMIT.least);
        assert_eq!(limit["maximum"], MAX_LIMIT);
        assert_eq!(limit["default"], DEFAULT_LIMIT);
        let offset = schema_of("offset");
        assert_eq!(offset["minimum"], Bounds::OFFSET.least);
        assert_eq!(offset["default"], 0);
    }

    #[tokio::test]
    async fn the_extractor_reads_the_query_and_leaves_other_parameters_alone() {
        let extract = |uri: &'static str| async move {
            let (mut parts, ()) = axum::http::Request::get(uri).body(()).unwrap().into_parts();
            Pagination::from_request_parts(&mut parts, &()).await
        };
        assert_eq!(
            extract("/x?user_id=abc&limit=2&offset=4").await.unwrap(),
            Pagination {
                limit: 2,
                offset: 4
            }
        );
        assert_eq!(
            extract("/x?limit=1&limit=2").await.unwrap_err().status(),
            StatusCode::BAD_REQUEST,
            "a parameter given twice"
        );
        assert_eq!(
            extract("/x?limit=%FF").await.unwrap_err().status(),
            StatusCode::BAD_REQUEST,
            "not UTF-8"
        );
    }
}
