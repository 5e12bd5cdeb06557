//! Every answer the gateway makes itself, mapped to a status and a problem in one place.
//! Upstream failures name the service, never its address: no connection, no healthy instance or
//! every instance ejected → 503 with `Retry-After`; no answer in time → 504; an answer that is not
//! HTTP or a connection broken before the answer → 502; a TLS handshake that failed → 502
//! (`upstream_tls`). A store outage → 503 with `Retry-After`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kit::Problem;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no route matches this path")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed { allow: HeaderValue },
    #[error("{0}")]
    BadRequest(String),
    /// A WebSocket upgrade on a route that takes them, malformed (RFC 6455 §4.2.1): refused
    /// before anything else is done with it.
    #[error("{0}")]
    BadHandshake(&'static str),
    #[error("a bearer token is required")]
    MissingToken,
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// The route asks for a client certificate (mTLS) and the connection came without one.
    #[error(
        "this route requires a client certificate: connect with one the gateway's client CA signed"
    )]
    ClientCertificateMissing,
    /// The client certificate is valid but not one the route admits.
    #[error("this route does not admit the client certificate presented")]
    ClientCertificateRefused,
    #[error("this route requires the scope `{0}`")]
    InsufficientScope(String),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("too many failed sign-ins; try again later")]
    TooManyAttempts { retry_after: std::time::Duration },
    #[error("too many sign-ins at once; try again in a moment")]
    Busy,
    #[error("the revocation could not be recorded: {0}")]
    StateUnavailable(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// The client stopped sending its request body: its fault, never the instance's.
    #[error("the client sent no part of the request body for {idle:?}")]
    BodyStalled { idle: std::time::Duration },
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// The body does not match the operation's schema (a route's `validate_body`).
    #[error("the body does not match the operation's schema")]
    InvalidBody(Vec<kit::problem::FieldError>),
    /// A transfer coding other than `chunked`: the gateway would have to drop or decode it.
    #[error("the transfer coding `{0}` is not supported; send `chunked` or a Content-Length")]
    UnsupportedTransferEncoding(String),
    /// No connection, or no instance that is healthy and not ejected; `retry_after` is when
    /// one may be again.
    #[error("the service `{service}` is unavailable")]
    Unavailable {
        service: String,
        retry_after: std::time::Duration,
        why: Unavailability,
    },
    #[error("the service `{service}` did not answer in time")]
    Timeout { service: String },
    #[error("the service `{service}` answered with an invalid response")]
    BadGateway { service: String },
    /// The TLS handshake with the service's instance failed (its certificate did not verify,
    /// or it refused the gateway's): a configuration or certificate problem, never the client's.
    #[error("the service `{service}` could not be reached over TLS: its certificate was not accepted, or it refused the gateway's")]
    UpstreamTls { service: String },
    /// The store did not answer (no connection within the pool's acquire timeout, connection
    /// refused or broken, file locked): an outage, not our bug.
    #[error("the store is unavailable")]
    StoreUnavailable(anyhow::Error),
    /// A rate-limit policy of the route refused the request (issue 13).
    #[error("rate limit exceeded: {}", .0.violated.join(", "))]
    RateLimited(Box<RateLimited>),
    /// A required part of a composition failed (issue 14): the whole answer is that part's
    /// failure, naming it.
    #[error("the part `{part}` failed: {}", failure.detail)]
    PartFailed {
        part: std::sync::Arc<str>,
        failure: crate::compose::PartFailure,
    },
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// A refusal by the route's rate limits, with what its answer tells the client.
#[derive(Debug)]
pub struct RateLimited {
    /// The policies that refused it.
    pub violated: Vec<String>,
    /// When the request would pass (every refusing policy allowing it), in whole seconds.
    pub retry_after_secs: u64,
    /// `RateLimit-Policy` and `RateLimit`, as every answer on the route carries them.
    pub policy: HeaderValue,
    pub limit: HeaderValue,
}

/// Why a service is unavailable, for operators (the client is told the same 503 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// No connection could be opened (refused, unreachable, connect timeout).
    Unreachable,
    /// Every instance that passes its health checks is ejected by its breaker.
    BreakerOpen,
    /// No instance passes its health checks.
    NoHealthyInstance,
    /// The service answered 503 itself (its own dependency is down).
    SaysUnavailable,
}

/// A store write that could neither land nor wait (the queue is full), or that failed.
impl From<crate::store::WriteError> for GatewayError {
    fn from(error: crate::store::WriteError) -> Self {
        match error {
            crate::store::WriteError::QueueFull => {
                Self::StoreUnavailable(anyhow::Error::new(crate::store::WriteError::QueueFull))
            }
            crate::store::WriteError::Failed(error) => Self::from(error),
        }
    }
}

/// Every unexpected error passes here, so a store outage becomes 503 wherever it surfaces.
impl From<anyhow::Error> for GatewayError {
    fn from(error: anyhow::Error) -> Self {
        if kit::outage::caused_by_outage(&error) {
            Self::StoreUnavailable(error)
        } else {
            Self::Internal(error)
        }
    }
}

/// Why an access token was refused, when it matters to an operator which way: the texts are the
/// problem's detail, and [`GatewayError::reason`] tells them apart by these constants.
pub const TOKEN_EXPIRED: &str = "the token has expired";
pub const TOKEN_REVOKED: &str = "the token has been revoked";

impl GatewayError {
    /// A short, stable, machine-readable name for why the gateway answered as it did: in the
    /// problem body, the access log and the `reason` label of `gatehouse_requests_total`. The
    /// set is closed (one per variant, a few per token refusal), so the label stays bounded.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::BadRequest(_) => "bad_request",
            Self::BadHandshake(_) => "websocket_handshake_invalid",
            Self::MissingToken => "token_missing",
            Self::InvalidToken(detail) if *detail == TOKEN_EXPIRED => "token_expired",
            Self::InvalidToken(detail) if *detail == TOKEN_REVOKED => "token_revoked",
            Self::InvalidToken(_) => "token_invalid",
            Self::Forbidden(_) => "role_missing",
            Self::ClientCertificateMissing => "client_cert_missing",
            Self::ClientCertificateRefused => "client_cert_refused",
            Self::InsufficientScope(_) => "scope_missing",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TooManyAttempts { .. } => "sign_in_throttled",
            Self::Busy => "sign_in_busy",
            Self::StateUnavailable(_) => "state_unavailable",
            Self::PayloadTooLarge { .. } => "body_too_large",
            Self::BodyStalled { .. } => "body_timeout",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::InvalidBody(_) => "body_invalid",
            Self::UnsupportedTransferEncoding(_) => "unsupported_transfer_encoding",
            Self::Unavailable { why, .. } => match why {
                Unavailability::Unreachable => "upstream_unreachable",
                Unavailability::BreakerOpen => "breaker_open",
                Unavailability::NoHealthyInstance => "no_healthy_instance",
                Unavailability::SaysUnavailable => "upstream_unavailable",
            },
            Self::Timeout { .. } => "upstream_timeout",
            Self::BadGateway { .. } => "upstream_bad_response",
            Self::UpstreamTls { .. } => "upstream_tls",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::RateLimited(_) => "rate_limited",
            Self::PartFailed { failure, .. } => failure.reason,
            Self::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest(_) | Self::BadHandshake(_) => StatusCode::BAD_REQUEST,
            Self::MissingToken
            | Self::InvalidToken(_)
            | Self::InvalidCredentials
            | Self::ClientCertificateMissing => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::InsufficientScope(_) | Self::ClientCertificateRefused => {
                StatusCode::FORBIDDEN
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedTransferEncoding(_) => StatusCode::NOT_IMPLEMENTED,
            Self::TooManyAttempts { .. } | Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::StateUnavailable(_) | Self::Busy | Self::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway { .. } | Self::UpstreamTls { .. } => StatusCode::BAD_GATEWAY,
            Self::PartFailed { failure, .. } => failure.status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_problem(self) -> Problem {
        let reason = self.reason();
        self.into_problem_body().with_reason(reason)
    }

    fn into_problem_body(self) -> Problem {
        let status = self.status();
        match self {
            Self::Internal(cause) => Problem::internal(&format!("{cause:#}")),
            Self::StoreUnavailable(cause) => kit::outage::unavailable(&cause),
            Self::MethodNotAllowed { allow } => {
                Problem::new(status).with_detail("The path exists but not for this method.").with_header(header::ALLOW, allow)
            }
            // RFC 6750 §3: a request without credentials gets the bare challenge.
            Self::MissingToken => Problem::new(status)
                .with_detail("A bearer token is required: sign in and send `Authorization: Bearer <token>`.")
                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gatehouse\"")),
            Self::InvalidToken(reason) => Problem::new(status).with_detail(reason).with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&format!("Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"{reason}\""))
                    .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
            ),
            Self::InsufficientScope(ref scope) => {
                let challenge = format!("Bearer realm=\"gatehouse\", error=\"insufficient_scope\", scope=\"{scope}\"");
                Problem::new(status).with_detail(self.to_string()).with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer error=\"insufficient_scope\"")),
                )
            }
            Self::InvalidCredentials => Problem::new(status)
                .with_detail("Invalid username or password.")
                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gatehouse\"")),
            Self::TooManyAttempts { retry_after } => Problem::new(status)
                .with_detail("Too many failed sign-ins; try again later.")
                .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1))),
            Self::Busy => Problem::new(status)
                .with_detail(self.to_string())
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            Self::StateUnavailable(cause) => {
                tracing::error!(%cause, "shared state unavailable");
                Problem::new(status)
                    .with_detail("The request could not be recorded by every gateway replica; try again.")
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            Self::BodyStalled { idle } => Problem::new(status).with_detail(format!(
                "The request body stopped arriving: nothing came for {} ms.",
                idle.as_millis()
            )),
            Self::Unavailable { retry_after, .. } => Problem::new(status)
                .with_detail(self.to_string())
                .with_header(header::RETRY_AFTER, retry_after_header(retry_after)),
            // draft-ietf-httpapi-ratelimit-headers-11 §5.1; `Retry-After` is never earlier
            // than the `RateLimit` window (§6): both are the same wait.
            Self::RateLimited(refusal) => Problem::new(status)
                .with_type(kit::problem::QUOTA_EXCEEDED)
                .with_title("Request cannot be satisfied as assigned quota has been exceeded")
                .with_detail(format!(
                    "Rate limit exceeded ({}); retry in {} s.",
                    refusal.violated.join(", "),
                    refusal.retry_after_secs
                ))
                .with_member("violated-policies", serde_json::json!(refusal.violated))
                .with_header(header::RETRY_AFTER, HeaderValue::from(refusal.retry_after_secs.max(1)))
                .with_header(crate::pipeline::limit::RATELIMIT_POLICY, refusal.policy)
                .with_header(crate::pipeline::limit::RATELIMIT, refusal.limit),
            Self::InvalidBody(errors) => Problem::invalid_fields(errors).with_detail(
                "The body does not match the operation's schema: `errors` lists each field (checked at the gateway).",
            ),
            Self::PartFailed { ref part, ref failure } => {
                let problem = Problem::new(status)
                    .with_detail(self.to_string())
                    .with_member("part", serde_json::json!(&**part));
                match failure.retry_after {
                    Some(wait) => problem.with_header(header::RETRY_AFTER, retry_after_header(wait)),
                    None => problem,
                }
            }
            // RFC 6455 §4.4: the version the gateway speaks, for a client that sent another.
            Self::BadHandshake(detail) => Problem::new(status).with_detail(detail).with_header(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static(crate::pipeline::upgrade::VERSION),
            ),
            other => Problem::new(status).with_detail(other.to_string()),
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_header(wait: std::time::Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

impl GatewayError {
    /// Whether the answer leaves the rest of the request body unread (too large, or stalled:
    /// RFC 9110 §15.5.9 and §15.5.14). The connection then cannot carry another request (RFC
    /// 9112 §9.6), and the answer says `Connection: close`: a client that reused it would
    /// have its next request cut off by the close.
    pub fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            Self::BodyStalled { .. } | Self::PayloadTooLarge { .. }
        )
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let closes = self.leaves_body_unread();
        let mut response = self.into_problem().into_response();
        if closes {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
