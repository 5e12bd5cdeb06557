//! The composed answer: one JSON object with one member per part, by the part's name (names are
//! the keys, so no part can overwrite another's), plus `errors` naming every optional part that
//! failed and why. A failed part is never dropped silently: its member is `null`, `errors` has
//! its problem, and `Gatehouse-Partial` lists it for clients that only read headers.

use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::plan::Plan;
use super::PartFailure;

/// The optional parts that failed, comma-separated, on a partial answer.
pub const GATEHOUSE_PARTIAL: HeaderName = HeaderName::from_static("gatehouse-partial");

/// The 200 answer of a composition none of whose required parts failed.
pub fn composed(plan: &Plan, outcomes: Vec<Result<Value, PartFailure>>) -> Response {
    let mut members = Map::with_capacity(plan.parts.len() + 1);
    let mut errors = Map::new();
    let mut failed: Vec<&str> = Vec::new();
    for (part, outcome) in plan.parts.iter().zip(outcomes) {
        match outcome {
            Ok(value) => {
                members.insert(part.name.to_string(), value);
            }
            Err(failure) => {
                members.insert(part.name.to_string(), Value::Null);
                errors.insert(part.name.to_string(), failure.entry());
                failed.push(&part.name);
            }
        }
    }
    let partial = (!failed.is_empty()).then(|| {
        failed.sort_unstable();
        failed.join(", ")
    });
    if !errors.is_empty() {
        members.insert("errors".to_owned(), Value::Object(errors));
    }
    // A map of JSON values always serializes.
    let body = serde_json::to_vec(&Value::Object(members)).unwrap_or_default();
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Part names are plain names (letters, digits, `-`, `_`), always a valid header value.
    if let Some(value) = partial.and_then(|names| HeaderValue::from_str(&names).ok()) {
        headers.insert(GATEHOUSE_PARTIAL, value);
    }
    response
}

impl PartFailure {
    /// The part's problem as its `errors` entry: the members of an RFC 9457 problem (the type
    /// is `about:blank`, its title the status's phrase) and the gateway's `reason`.
    pub fn entry(&self) -> Value {
        json!({
            "status": self.status.as_u16(),
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "reason": self.reason,
            "detail": self.detail,
        })
    }
}
