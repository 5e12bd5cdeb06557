//! Transform: after forward and before the cache stores the answer (so a hit is already
//! transformed, and the rate-limit headers, added later, are never the route's to edit), the
//! route's edits to its service's answer (`response:` in the routes file).
//!
//! Header edits apply to every answer of the service. A body is rewritten only when the route
//! has `response.json`, the answer has one (not HEAD, 204, 206 or 304) and it is JSON: never a
//! problem+json error (the service's account of a failure reaches the client as written),
//! never another media type. Such a body is read whole, up to the route's `max_body`: a larger
//! one, as it comes or once decoded (a compression bomb is one), goes out untouched and is
//! counted (`gatehouse_transform_skipped_total{route, reason}`); memory stays bounded by
//! `max_body` either way. A body in a coding the gateway cannot undo, one that is not what its
//! `Content-Encoding` says, or one that is not JSON is the service's failure: 502, because
//! passing it on would pass on what `deny` exists to remove.
//!
//! A rewritten body goes out in the coding it came in when the client takes it, else as
//! identity, with its `Content-Length`, `Content-Encoding`, a weakened `ETag` (the bytes differ,
//! the meaning does not), no digest of the old bytes, and `Vary: Accept-Encoding` when the
//! coding depended on the client.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use http_body_util::BodyExt;

use super::observe::SkipLabels;
use super::prepare::ClientTerms;
use crate::app::App;
use crate::error::GatewayError;
use crate::router::Route;
use crate::transform::body::{self, Rewritten, Skip};
use crate::transform::coding::Coding;
use crate::transform::{JsonRules, ResponseRules};

/// Bodies up to this size are rewritten on the request's own task; larger ones (or coded ones)
/// on the blocking pool, so a megabyte of brotli never holds up the connections sharing a
/// worker thread.
const INLINE_BYTES: usize = 32 * 1024;

/// `answer` as `route`'s rules make it; `terms` is what prepare learned of the client (`None`
/// when the route does not rewrite bodies).
pub async fn answer(
    app: &App,
    route: &Route,
    terms: Option<ClientTerms>,
    answer: Result<Response, GatewayError>,
) -> Result<Response, GatewayError> {
    let Some(rules) = route.settings.transform.response.as_deref() else {
        return answer;
    };
    let mut response = answer?;
    rules.headers.apply(response.headers_mut());
    let (Some(json), Some(terms)) = (&rules.json, terms) else {
        return Ok(response);
    };
    if terms.head || !has_body(response.status()) || !is_json(response.headers()) {
        return Ok(response);
    }
    rewrite(app, route, rules, json, terms, response).await
}

async fn rewrite(
    app: &App,
    route: &Route,
    rules: &ResponseRules,
    json: &JsonRules,
    terms: ClientTerms,
    response: Response,
) -> Result<Response, GatewayError> {
    let skipped = |skip: Skip| {
        app.observe
            .gateway
            .transform_skipped
            .get_or_create(&SkipLabels {
                route: Arc::clone(&route.template),
                reason: skip.reason(),
            })
            .inc();
    };
    let broken = || GatewayError::BadGateway {
        service: route.settings.service.clone(),
    };
    let coding = Coding::of_response(response.headers()).map_err(|unknown| {
        tracing::warn!(service = %route.service, error = %unknown, "answer in a coding the transform cannot undo");
        broken()
    })?;
    if declared_length(response.headers()).is_some_and(|length| length > rules.max_body) {
        skipped(Skip::TooLarge);
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match read_within(body, rules.max_body).await {
        Ok(Read::Whole(bytes)) => bytes,
        Ok(Read::Over(body)) => {
            skipped(Skip::TooLarge);
            return Ok(Response::from_parts(parts, body));
        }
        Err(error) => {
            tracing::warn!(service = %route.service, error = %error, "the answer's body broke off before it could be rewritten");
            return Err(broken());
        }
    };
    if bytes.is_empty() {
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let accept = terms.accept_encoding;
    let max_body = rules.max_body;
    let outcome = if bytes.len() <= INLINE_BYTES && coding == Coding::Identity {
        body::rewrite(json, coding, &bytes, accept.as_ref(), max_body)
    } else {
        let json = json.clone();
        let input = bytes.clone();
        tokio::task::spawn_blocking(move || {
            body::rewrite(&json, coding, &input, accept.as_ref(), max_body)
        })
        .await
        .map_err(|error| GatewayError::Internal(anyhow::anyhow!("rewriting an answer: {error}")))?
    };
    match outcome {
        Ok(Rewritten::Body { bytes, coding: out }) => {
            fix_headers(&mut parts.headers, bytes.len(), coding, out);
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
        Ok(Rewritten::Untouched(skip)) => {
            skipped(skip);
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
        Err(error) => {
            tracing::warn!(service = %route.service, error = %error, "the answer cannot be rewritten");
            Err(broken())
        }
    }
}

/// Statuses whose answers carry content (RFC 9110 §6.4.1), less 206: a slice of a document.
fn has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT)
}

/// `application/json` or `application/…+json`, but not `application/problem+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = value.split(';').next().unwrap_or_default().trim();
    let Some(subtype) = media
        .split_once('/')
        .filter(|(kind, _)| kind.eq_ignore_ascii_case("application"))
        .map(|(_, subtype)| subtype.to_ascii_lowercase())
    else {
        return false;
    };
    subtype == "json" || (subtype.ends_with("+json") && subtype != "problem+json")
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

enum Read {
    Whole(Bytes),
    /// Past the limit: a body giving the bytes read so far, then the rest as it comes.
    Over(Body),
}

/// Reads `body` whole when it holds at most `limit` bytes; past that, stops reading and hands
/// back the body as it was. Trailers of a body read whole are dropped (JSON answers have none
/// worth a rewritten body's keeping).
async fn read_within(mut body: Body, limit: u64) -> Result<Read, axum::Error> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        read.extend_from_slice(&data);
        if read.len() as u64 > limit {
            let head = futures_util::stream::once(async move { Ok(read.freeze()) });
            return Ok(Read::Over(Body::from_stream(
                head.chain(body.into_data_stream()),
            )));
        }
    }
    Ok(Read::Whole(read.freeze()))
}

fn fix_headers(headers: &mut HeaderMap, length: usize, came_in: Coding, goes_out: Coding) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    match goes_out {
        Coding::Identity => {
            headers.remove(header::CONTENT_ENCODING);
        }
        coded => {
            headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(coded.token()),
            );
        }
    }
    if let Some(strong) = headers
        .get(header::ETAG)
        .filter(|etag| !etag.as_bytes().starts_with(b"W/"))
    {
        let mut weak = Vec::with_capacity(strong.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(strong.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, weak);
        }
    }
    for digest in ["content-md5", "digest", "content-digest", "repr-digest"] {
        headers.remove(digest);
    }
    // The service's ranges were of its bytes, not these.
    headers.remove(header::ACCEPT_RANGES);
    if came_in != Coding::Identity && !varies_on_accept_encoding(headers) {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

fn varies_on_accept_encoding(headers: &HeaderMap) -> bool {
    headers.get_all(header::VARY).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .map(str::trim)
                .any(|name| name == "*" || name.eq_ignore_ascii_case("accept-encoding"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn json_is_told_from_problems_and_other_media() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "application/hal+json;profile=x",
        ] {
            assert!(is_json(&headers(&[("content-type", json)])), "{json}");
        }
        for other in [
            "application/problem+json",
            "application/Problem+JSON; charset=utf-8",
            "text/json",
            "text/html",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json(&headers(&[("content-type", other)])), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn a_rewritten_body_says_what_it_now_is() {
        let mut fixed = headers(&[
            ("content-length", "999"),
            ("content-encoding", "gzip"),
            ("etag", "\"v1\""),
            ("digest", "sha-256=abc"),
            ("accept-ranges", "bytes"),
            ("vary", "Accept-Language"),
        ]);
        fix_headers(&mut fixed, 42, Coding::Gzip, Coding::Identity);
        assert_eq!(fixed["content-length"], "42");
        assert!(!fixed.contains_key("content-encoding"));
        assert_eq!(fixed["etag"], "W/\"v1\"");
        assert!(!fixed.contains_key("digest"));
        assert!(!fixed.contains_key("accept-ranges"));
        let vary: Vec<_> = fixed.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Language", "accept-encoding"]);

        let mut kept = headers(&[("etag", "W/\"v1\""), ("vary", "accept-encoding")]);
        fix_headers(&mut kept, 1, Coding::Br, Coding::Br);
        assert_eq!(kept["etag"], "W/\"v1\"");
        assert_eq!(kept["content-encoding"], "br");
        assert_eq!(kept.get_all("vary").iter().count(), 1);
    }
}
