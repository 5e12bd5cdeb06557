//! Why a server answered as it did, in a word a machine can count: the `reason` of the metrics
//! and the access log.

use http::StatusCode;

/// A response extension naming why the server answered as it did (`no_route`, `token_expired`,
/// `validation_failed`, `not_found`, `store_unavailable`, …): snake_case, from a fixed set the
/// code names, so it can be a metric label. [`crate::Problem`] puts one on every response it
/// makes; the observe layer reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reason(pub &'static str);

impl Reason {
    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// The reason of an error answer whose maker named none: the status's meaning. `None` below
    /// 400, where nothing went wrong.
    pub fn for_status(status: StatusCode) -> Option<Self> {
        let reason = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::NOT_ACCEPTABLE => "not_acceptable",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::CONFLICT => "conflict",
            StatusCode::GONE => "gone",
            StatusCode::LENGTH_REQUIRED => "length_required",
            StatusCode::PRECONDITION_FAILED => "precondition_failed",
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::URI_TOO_LONG => "uri_too_long",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
            StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
            StatusCode::INTERNAL_SERVER_ERROR => "internal_error",
            StatusCode::NOT_IMPLEMENTED => "not_implemented",
            StatusCode::BAD_GATEWAY => "bad_gateway",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT => "gateway_timeout",
            other if other.is_client_error() => "client_error",
            other if other.as_u16() >= 500 => "server_error",
            _ => return None,
        };
        Some(Self(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_status_has_a_reason_and_no_success_has_one() {
        for code in 400..1000 {
            let status = StatusCode::from_u16(code).unwrap();
            let reason = Reason::for_status(status).expect("an error has a reason");
            assert!(
                reason
                    .as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}: {reason:?}"
            );
        }
        for code in [100, 200, 201, 204, 301, 304, 399] {
            assert_eq!(
                Reason::for_status(StatusCode::from_u16(code).unwrap()),
                None
            );
        }
    }
}
