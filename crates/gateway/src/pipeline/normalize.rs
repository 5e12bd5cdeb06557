//! The request as the gateway accepts it, checked before anything reads it (the "normalize"
//! phase): where it is addressed, how its body is framed, that its path cannot climb out of a
//! route, and that its declared body fits the limit.
//!
//! hyper already refuses what breaks framing outright (two different `Content-Length`s, a
//! `Transfer-Encoding` whose last coding is not `chunked`, a malformed request line); what it lets
//! through, and is refused here:
//! - **Host** (RFC 9112 §3.2): an HTTP/1.1 request without `Host`, with two, or with one that is
//!   not a valid authority → 400. In absolute form (`GET http://host/path`) the target's authority
//!   wins over `Host` (§3.2.2) and must be valid itself. The result is the host the upstream is told
//!   (`X-Forwarded-Host`, `Forwarded: host=`), so only a validated one is ever forwarded.
//! - **Transfer-Encoding** other than exactly `chunked` (`gzip, chunked`, `chunked, chunked`) →
//!   501: hyper decodes the chunked framing, and forwarding the rest would silently drop the
//!   other codings (RFC 9112 §6.1: a server that does not understand a coding answers 501).
//!
//! Every request passes [`request`]; a proxied one then [`path`] and [`declared_body`] (the own
//! endpoints match exact paths and read their bodies within their own, smaller limit). A request that passes costs a few header look-ups and no allocation, save
//! one on the proxy path when the authority comes from the target (HTTP/2's `:authority`, the
//! absolute form): `http`'s `Authority` does not lend out its bytes, so the value forwarded as
//! `X-Forwarded-Host` is a copy. The own endpoints only check, and never make that copy.

use http::header::{HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::Version;

use crate::error::GatewayError;

/// Longest host name (RFC 1035 §2.3.4) plus a port.
const MAX_AUTHORITY: usize = 255 + 6;

/// Checks `parts` (see the module docs); returns the validated authority the client addressed,
/// `None` for an HTTP/1.0 request without `Host`.
pub fn request(parts: &Parts) -> Result<Option<HeaderValue>, GatewayError> {
    transfer_encoding(parts)?;
    Ok(authority(parts)?.and_then(|addressed| match addressed {
        Addressed::Host(host) => Some(host.clone()),
        // Valid already (`is_authority`), so this does not fail.
        Addressed::Target(target) => HeaderValue::from_str(target).ok(),
    }))
}

/// `.` and `..` segments (also percent-encoded) could climb out of a route's prefix upstream.
///
/// An upstream may decode `%2F` or `%5C` into a separator, or take `\` for one, before it
/// resolves dot segments, so those count as separators here: `a%2F..%2Fb` is refused while
/// `a%2Fb` (an encoded slash inside a segment) passes. One pass over the bytes, no allocation.
pub fn path(path: &str) -> Result<(), GatewayError> {
    if has_dot_segments(path) {
        return Err(GatewayError::BadRequest(
            "Paths with `.` or `..` segments are not accepted.".to_owned(),
        ));
    }
    Ok(())
}

/// A declared `Content-Length` over `limit` is refused before a byte of the body is read.
pub fn declared_body(parts: &Parts, limit: u64) -> Result<(), GatewayError> {
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    Ok(())
}

fn has_dot_segments(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut at = 0;
    // Each segment: the bytes between separators (`/`, `\`, `%2F`, `%5C`), where `%2E` is a dot.
    let mut dots = 0usize;
    let mut other = false;
    loop {
        let (separator, width) = match bytes.get(at) {
            None => (true, 0),
            Some(b'/' | b'\\') => (true, 1),
            Some(b'%') => match (bytes.get(at + 1), bytes.get(at + 2)) {
                (Some(b'2'), Some(b'f' | b'F')) | (Some(b'5'), Some(b'c' | b'C')) => (true, 3),
                (Some(b'2'), Some(b'e' | b'E')) => {
                    dots += 1;
                    at += 3;
                    continue;
                }
                _ => {
                    other = true;
                    at += 1;
                    continue;
                }
            },
            Some(b'.') => {
                dots += 1;
                at += 1;
                continue;
            }
            Some(_) => {
                other = true;
                at += 1;
                continue;
            }
        };
        if separator {
            if !other && (dots == 1 || dots == 2) {
                return true;
            }
            if at >= bytes.len() {
                return false;
            }
            dots = 0;
            other = false;
            at += width;
        }
    }
}

/// Where a valid request is addressed, borrowed from it.
enum Addressed<'a> {
    Host(&'a HeaderValue),
    /// The request target's authority (absolute form, HTTP/2's `:authority`).
    Target(&'a str),
}

fn transfer_encoding(parts: &Parts) -> Result<(), GatewayError> {
    let mut codings = parts.headers.get_all(TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok(());
    };
    let only_chunked = codings.next().is_none()
        && first
            .to_str()
            .is_ok_and(|value| value.trim().eq_ignore_ascii_case("chunked"));
    if only_chunked {
        return Ok(());
    }
    let named = parts
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    Err(GatewayError::UnsupportedTransferEncoding(named))
}

fn authority(parts: &Parts) -> Result<Option<Addressed<'_>>, GatewayError> {
    let bad = |detail: &str| Err(GatewayError::BadRequest(detail.to_owned()));
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return bad("The request has more than one Host header.");
    }
    if let Some(host) = host {
        if !is_authority(host.as_bytes()) {
            return bad("The Host header is not a valid host[:port].");
        }
    }
    // Absolute form, or HTTP/2's :authority: the target's authority wins over Host.
    if let Some(target) = parts.uri.authority() {
        if !is_authority(target.as_str().as_bytes()) {
            return bad("The request target's authority is not a valid host[:port].");
        }
        return Ok(Some(Addressed::Target(target.as_str())));
    }
    match host {
        Some(host) => Ok(Some(Addressed::Host(host))),
        None if parts.version == Version::HTTP_10 || parts.version == Version::HTTP_09 => Ok(None),
        None => bad("An HTTP/1.1 request must carry a Host header."),
    }
}

/// `host[:port]`: a name of letters, digits, `-`, `.`, `_`, `~` (no user info, no percent
/// escapes), or an IPv6 literal in brackets; a port of at most five digits up to 65535.
fn is_authority(raw: &[u8]) -> bool {
    if raw.is_empty() || raw.len() > MAX_AUTHORITY {
        return false;
    }
    let (host, port) = if raw[0] == b'[' {
        let Some(close) = raw.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &raw[1..close];
        let valid_literal = literal.len() >= 2
            && literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
            && literal.contains(&b':');
        if !valid_literal {
            return false;
        }
        (&raw[..=close], &raw[close + 1..])
    } else {
        match raw.iter().position(|&b| b == b':') {
            Some(colon) => (&raw[..colon], &raw[colon..]),
            None => (raw, &raw[raw.len()..]),
        }
    };
    let name_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')));
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            !digits.is_empty()
                && digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|digits| digits.parse::<u32>().ok())
                    .is_some_and(|port| port <= 65_535)
        }
        _ => false,
    };
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_even_when_encoded() {
        assert!(has_dot_segments("/api/users/../internal"));
        assert!(has_dot_segments("/api/%2E%2e/x"));
        assert!(has_dot_segments("/api/."));
        assert!(has_dot_segments("/api/.."));
        assert!(has_dot_segments("./x"));
        assert!(has_dot_segments(".."));
        assert!(!has_dot_segments("/api/users/a.b"));
        assert!(!has_dot_segments("/api/users/..."));
        assert!(!has_dot_segments("/api/users/.hidden"));
        assert!(!has_dot_segments("/api/users/a.."));
        assert!(!has_dot_segments("/"));
        assert!(!has_dot_segments(""));
        assert!(has_dot_segments(
            "/files/a%2F..%2F..%2Finternal%2Fcredentials"
        ));
        assert!(has_dot_segments("/files/..%5C..%5Cinternal"));
        assert!(has_dot_segments("/files/a\\..\\b"));
        assert!(has_dot_segments("/files/a%2f.%2fb"));
        assert!(
            !has_dot_segments("/files/a%2Fb"),
            "an encoded slash alone is data"
        );
        assert!(!has_dot_segments("/files/%2"), "a cut escape is data");
        assert!(!has_dot_segments("/files/%"), "a lone percent is data");
        assert!(
            !has_dot_segments("/files/%252e%252e"),
            "an escaped percent is data"
        );
    }

    #[test]
    fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
        let request = |length: &str| {
            http::Request::builder()
                .header(CONTENT_LENGTH, length)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert!(declared_body(&request("10"), 10).is_ok());
        assert!(matches!(
            declared_body(&request("11"), 10),
            Err(GatewayError::PayloadTooLarge { limit: 10 })
        ));
        // Unparsable lengths are hyper's to refuse (it already did by the time we run).
        assert!(declared_body(&request("ten"), 10).is_ok());
    }

    fn parts(request: http::Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn valid_authorities_pass_and_others_do_not() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:8001",
            "[::1]:8001",
            "[2001:db8::1]",
            "under_score.local",
        ] {
            assert!(is_authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "user@example.com",
            "exa mple.com",
            "example.com:",
            "example.com:99999",
            "example.com:80:80",
            "example.com/path",
            "[::1",
            "[zz]:80",
            "%65xample.com",
            "a\"b",
        ] {
            assert!(!is_authority(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn the_target_authority_wins_over_host_in_absolute_form() {
        let absolute = http::Request::get("http://public.example/api/x")
            .header(HOST, "other.example")
            .body(())
            .unwrap();
        let host = request(&parts(absolute));
        assert_eq!(host.unwrap().unwrap(), "public.example");
    }

    #[test]
    fn host_is_required_once_in_http_1_1_but_not_in_http_1_0() {
        let missing = http::Request::get("/x").body(()).unwrap();
        assert!(request(&parts(missing)).is_err());
        let twice = http::Request::get("/x")
            .header(HOST, "a.example")
            .header(HOST, "a.example")
            .body(())
            .unwrap();
        assert!(request(&parts(twice)).is_err());
        let old = http::Request::get("/x")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        assert_eq!(request(&parts(old)).unwrap(), None);
    }

    #[test]
    fn only_chunked_alone_is_an_accepted_transfer_encoding() {
        for (codings, accepted) in [
            (&["chunked"][..], true),
            (&["Chunked "][..], true),
            (&["gzip, chunked"][..], false),
            (&["chunked, chunked"][..], false),
            (&["gzip", "chunked"][..], false),
        ] {
            let mut post = http::Request::post("/x").header(HOST, "a.example");
            for coding in codings {
                post = post.header(TRANSFER_ENCODING, *coding);
            }
            let parts = parts(post.body(()).unwrap());
            assert_eq!(transfer_encoding(&parts).is_ok(), accepted, "{codings:?}");
        }
    }
}
