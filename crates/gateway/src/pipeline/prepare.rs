//! Prepare: between the cache and forward, the route's edits to the request (`request:` in the
//! routes file: headers, then query; see [`crate::transform`]). They run on the client's
//! headers before the forward phase strips the ones only the gateway asserts and adds the
//! caller's identity, so no edit can speak for the gateway, whatever a client sends.
//!
//! On a route that rewrites JSON answers (`response.json`), the request is also made into one
//! whose answer the transform phase can read: the service is offered only the codings the
//! gateway decodes (among those the client takes), and no `Range`, since a slice of a JSON
//! document cannot be filtered and would hand out the very fields `deny` removes.
//!
//! Body validation against the service's OpenAPI schema (`request: { validate_body: true }`)
//! belongs here too, after the edits: it reads the body as the service will get it.

use http::header::{self, HeaderMap, HeaderValue};

use crate::router::Route;
use crate::transform::coding::{Coding, DECODABLE};

/// What the transform phase needs to know of the client's request.
pub struct ClientTerms {
    /// The client's `Accept-Encoding`, as it sent it.
    pub accept_encoding: Option<HeaderValue>,
    /// A HEAD request: its answer has no body to rewrite.
    pub head: bool,
}

/// Applies `route`'s request edits to `headers` and `target` (the path and query on the
/// service); `Some` when its answers will be rewritten.
pub fn request(
    route: &Route,
    method: &http::Method,
    headers: &mut HeaderMap,
    target: &mut String,
) -> Option<ClientTerms> {
    let transform = &route.settings.transform;
    if let Some(rules) = &transform.request {
        rules.headers.apply(headers);
        if !rules.query.is_empty() {
            rules.query.apply(target);
        }
    }
    transform
        .response
        .as_ref()
        .filter(|rules| rules.json.is_some())?;
    let accept_encoding = headers.get(header::ACCEPT_ENCODING).cloned();
    headers.insert(header::ACCEPT_ENCODING, offered(accept_encoding.as_ref()));
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
    Some(ClientTerms {
        accept_encoding,
        head: method == http::Method::HEAD,
    })
}

/// The codings the service may use: those the gateway decodes that the client takes too (so
/// the answer goes back in the coding it came in), or `identity` alone. No header at all would
/// mean any coding (RFC 9110 §12.5.3).
fn offered(client: Option<&HeaderValue>) -> HeaderValue {
    let taken: Vec<&str> = DECODABLE
        .into_iter()
        .filter(|coding| coding.accepted_by(client))
        .map(Coding::token)
        .collect();
    if taken.is_empty() {
        return HeaderValue::from_static("identity");
    }
    HeaderValue::from_str(&taken.join(", ")).unwrap_or(HeaderValue::from_static("identity"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_offered_only_codings_both_sides_understand() {
        let offer = |client: Option<&'static str>| {
            offered(client.map(HeaderValue::from_static).as_ref())
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(offer(Some("gzip, deflate, br")), "gzip, br");
        assert_eq!(offer(Some("*")), "gzip, br, zstd");
        assert_eq!(offer(Some("deflate")), "identity");
        assert_eq!(offer(Some("gzip;q=0, zstd")), "zstd");
        assert_eq!(offer(None), "identity");
    }
}
