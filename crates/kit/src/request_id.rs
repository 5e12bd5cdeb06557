//! Request ids: keep a well-formed incoming `X-Request-Id`, else make a UUID v7; echo it on the
//! response; and scope it (with the path) over the handler so problems and logs can name it.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::trace::Trace;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What a problem body needs to know about the request it answers.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub id: String,
    pub path: String,
    /// The request's trace ([`crate::trace`]): its id goes into problems, and requests made
    /// while handling it continue it.
    pub trace: Option<Trace>,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// The context of the request being handled on this task, if any.
pub fn current() -> Option<RequestContext> {
    CONTEXT.try_with(Clone::clone).ok()
}

/// An incoming id is kept only if it is short and plain: it ends up in logs and other services'
/// headers, so anything that could forge a log line or smuggle a header is replaced.
pub fn is_acceptable(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub fn new_id() -> String {
    fresh().to_string()
}

/// A fresh UUID v7: the time in milliseconds, then 74 random bits from the thread's CSPRNG
/// (`rand::thread_rng`, seeded once per thread from the OS). `Uuid::now_v7` asks the OS for its
/// random bits on every call, a system call on every request that arrives without an id. Ids
/// made in the same millisecond are unique but not ordered among themselves, which nothing
/// here relies on (they name a request; they are never sorted).
fn fresh() -> uuid::Uuid {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random::<[u8; 10]>()).into_uuid()
}

/// The id to use for a request: its own when acceptable, else a fresh one.
pub fn from_headers(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable(v))
        .map_or_else(new_id, str::to_owned)
}

/// The id of a request as a header value: its own `X-Request-Id` when acceptable (shared, not
/// copied), else a fresh UUID v7 (formatted on the stack, one copy into the value).
pub fn header_value(headers: &axum::http::HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(HEADER) {
        if value.to_str().is_ok_and(is_acceptable) {
            return value.clone();
        }
    }
    let mut buffer = uuid::Uuid::encode_buffer();
    let id = fresh().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Runs `answer` with `context` as the current request's, for code that is not async: a
/// problem built inside it carries the id.
pub fn within<T>(context: RequestContext, answer: impl FnOnce() -> T) -> T {
    CONTEXT.sync_scope(context, answer)
}

/// Runs `future` with `context` as the current request's; problems built inside it carry the id.
pub async fn scope<F: std::future::Future>(context: RequestContext, future: F) -> F::Output {
    CONTEXT.scope(context, future).await
}

/// axum middleware: see the module documentation. Inside [`crate::trace::middleware`], so the
/// context carries the request's trace.
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = from_headers(request.headers());
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(HEADER, value);
    }
    let context = RequestContext {
        id: id.clone(),
        path: request.uri().path().to_owned(),
        // Set by the trace middleware outside this one (`trace::middleware`), when present.
        trace: request.extensions().get::<Trace>().cloned(),
    };
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %context.path);
    let mut response =
        tracing::Instrument::instrument(scope(context, next.run(request)), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fresh_id_is_a_uuid_v7_of_now_and_differs_every_time() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let ids: Vec<uuid::Uuid> = (0..1000).map(|_| fresh()).collect();
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
            let millis = u128::from(seconds) * 1000 + u128::from(nanos) / 1_000_000;
            assert!(millis >= before && millis <= before + 60_000, "{id}");
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    use super::*;

    #[test]
    fn plain_ids_are_kept_and_hostile_ones_replaced() {
        assert!(is_acceptable("abc-123_x.y:z"));
        assert!(!is_acceptable(""));
        assert!(!is_acceptable("a\r\nX-Injected: 1"));
        assert!(!is_acceptable("<script>"));
        assert!(!is_acceptable(&"a".repeat(129)));
    }

    #[test]
    fn a_plain_incoming_id_is_kept_and_a_hostile_one_replaced_by_a_uuid() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("trace-42"));
        assert_eq!(header_value(&headers), "trace-42");
        headers.insert(HEADER, HeaderValue::from_static("<script>"));
        let fresh = header_value(&headers);
        let fresh = fresh.to_str().unwrap();
        assert!(uuid::Uuid::parse_str(fresh).is_ok(), "{fresh}");
        assert!(uuid::Uuid::parse_str(
            header_value(&axum::http::HeaderMap::new())
                .to_str()
                .unwrap()
        )
        .is_ok());
    }
}
