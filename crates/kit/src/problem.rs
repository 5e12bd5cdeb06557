//! RFC 9457 problem details: the only error body a gatehouse service sends.
//!
//! Each crate keeps its own error enum and maps it to a [`Problem`] in one place; the problem
//! then carries the request id of the request it answers, so a user's report can be traced.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::observe::Reason;
use crate::request_id;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// The `type` of a credential check that failed (wrong password, unknown or inactive user), so
/// the gateway tells it apart from a 401 for its own identity token.
pub const INVALID_CREDENTIALS: &str = "urn:gatehouse:problem:invalid-credentials";

/// The `type` of a request refused by a rate limit: the problem type that
/// draft-ietf-httpapi-ratelimit-headers defines (with its `violated-policies` member), under the
/// URI it registers, so a client that knows the draft recognises it.
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// One invalid input field and what is wrong with it, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error response as RFC 9457 describes it, with gatehouse's `request_id` and `errors` members.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    title: String,
    detail: Option<String>,
    /// Boxed: rarely set, and a thinner `Problem` keeps `Result<_, Problem>` under clippy's
    /// `result_large_err` limit (128 bytes).
    class: Option<Box<Class>>,
    errors: Vec<FieldError>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// What kind of problem it is: for clients (`type`) and for operators (the reason).
#[derive(Debug, Clone, Default)]
struct Class {
    kind: Option<Box<str>>,
    /// Why it was answered, for the metrics and the access log; `None` means the status's.
    reason: Option<Reason>,
    /// Extension members the problem type defines (RFC 9457 §3.2), such as `violated-policies`.
    members: Vec<(&'static str, serde_json::Value)>,
}

/// Extension members, serialized beside the standard ones.
struct Members<'a>(&'a [(&'static str, serde_json::Value)]);

impl Serialize for Members<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    /// The W3C trace id, so one failed request can be followed across the fleet's logs and spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    /// The same word the metrics and the access log carry, so a client's report can be matched
    /// to an operator's graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
    #[serde(flatten)]
    members: Members<'a>,
}

impl Problem {
    /// A problem whose title is the status's reason phrase.
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            detail: None,
            class: None,
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST).with_detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND).with_detail(detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT).with_detail(detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN).with_detail(detail)
    }

    /// 401 with the RFC 6750 challenge, so clients know a bearer token is what is missing.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED)
            .with_detail(detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 422 listing every invalid field at once, so a client can fix them in one round.
    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        Self::listing(StatusCode::UNPROCESSABLE_ENTITY, errors).with_title("Invalid request fields")
    }

    /// 400 listing every field whose value could not be read at all (a query parameter that is
    /// not a number, say), with any invalid ones beside them.
    pub fn malformed_fields(errors: Vec<FieldError>) -> Self {
        Self::listing(StatusCode::BAD_REQUEST, errors).with_title("Malformed request fields")
    }

    fn listing(status: StatusCode, errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut problem = Self::new(status).with_detail(detail);
        problem.errors = errors;
        problem
    }

    /// 500 with a generic body: the cause is logged once here, never sent to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR)
            .with_detail("An unexpected error occurred; the request id identifies it in the logs.")
    }

    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the `type` member: a URI naming the kind of problem (default `about:blank`).
    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.class.get_or_insert_default().kind = Some(kind.into().into_boxed_str());
        self
    }

    /// Names why the server answers so (`token_expired`, `store_unavailable`, …): a snake_case
    /// word from a fixed set, as it becomes a metric label. Without one the status's meaning is
    /// used ([`Reason::for_status`]).
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.class.get_or_insert_default().reason = Some(Reason(reason));
        self
    }

    /// Adds an extension member of the problem's type (RFC 9457 §3.2), such as the rate-limit
    /// draft's `violated-policies`. `name` is never one of the standard members.
    pub fn with_member(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.class
            .get_or_insert_default()
            .members
            .push((name, value));
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// The reason the response will carry.
    pub fn reason(&self) -> Option<Reason> {
        self.class
            .as_ref()
            .and_then(|class| class.reason)
            .or_else(|| Reason::for_status(self.status))
    }

    /// The JSON body as it would be sent, for callers that build responses by hand.
    pub fn to_json(&self) -> Vec<u8> {
        let context = request_id::current();
        let body = Body {
            kind: self
                .class
                .as_ref()
                .and_then(|class| class.kind.as_deref())
                .unwrap_or("about:blank"),
            title: &self.title,
            status: self.status.as_u16(),
            detail: self.detail.as_deref(),
            instance: context.as_ref().map(|c| c.path.clone()),
            trace_id: context
                .as_ref()
                .and_then(|c| c.trace.as_ref())
                .map(|trace| trace.trace_id.to_string()),
            request_id: context.map(|c| c.id),
            reason: self.reason().map(Reason::as_str),
            errors: &self.errors,
            members: Members(
                self.class
                    .as_ref()
                    .map_or(&[][..], |class| class.members.as_slice()),
            ),
        };
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_json();
        let reason = self.reason();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if let Some(reason) = reason {
            response.extensions_mut().insert(reason);
        }
        response
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(problem: Problem) -> Option<Reason> {
        problem
            .into_response()
            .extensions()
            .get::<Reason>()
            .copied()
    }

    #[test]
    fn a_problem_tells_the_observe_layer_why_it_was_answered() {
        assert_eq!(
            reason_of(Problem::not_found("No such order.")),
            Some(Reason("not_found"))
        );
        assert_eq!(
            reason_of(Problem::invalid_fields(vec![FieldError::new(
                "items", "empty"
            )])),
            Some(Reason("validation_failed"))
        );
        assert_eq!(
            reason_of(Problem::unauthorized("expired").with_reason("token_expired")),
            Some(Reason("token_expired")),
            "a reason the maker names wins over the status's"
        );
    }

    #[test]
    fn a_typed_problem_keeps_its_type_beside_its_reason() {
        let problem = Problem::unauthorized("wrong password")
            .with_type(INVALID_CREDENTIALS)
            .with_reason("invalid_credentials");
        let body: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(body["type"], INVALID_CREDENTIALS);
        assert_eq!(problem.reason(), Some(Reason("invalid_credentials")));
    }

    #[test]
    fn extension_members_of_the_type_sit_beside_the_standard_ones() {
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS)
            .with_type(QUOTA_EXCEEDED)
            .with_member("violated-policies", serde_json::json!(["per-user"]));
        let body: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(body["type"], QUOTA_EXCEEDED);
        assert_eq!(body["status"], 429);
        assert_eq!(body["violated-policies"], serde_json::json!(["per-user"]));
    }
}
