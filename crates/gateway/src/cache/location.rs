//! The other URIs a write's answer says it changed (RFC 9111 §4.4): after a successful unsafe
//! request, the entries of its `Location` and `Content-Location` are invalidated too, but only
//! on the host the request addressed. Another host's are never touched: the answer is the
//! service's word, and a service echoing a client's input (`Location: //other.example/…`) must
//! not let that client flush what another origin's clients are served.
//!
//! The references are resolved against the request's URI by `url` (RFC 3986 §5: relative paths,
//! dot segments, network-path references); a reference that does not parse names nothing.

use http::header::{self, HeaderMap};
use url::Url;

/// The paths on the addressed host (`authority`, the request's validated `host[:port]`) that
/// the answer's `Location` and `Content-Location` name, other than `path` itself.
pub fn named_paths(authority: Option<&[u8]>, path: &str, answer: &HeaderMap) -> Vec<String> {
    // Without a Host (HTTP/1.0), only references relative to the request can be on its host.
    let authority = authority
        .and_then(|a| std::str::from_utf8(a).ok())
        .unwrap_or("no-authority.invalid");
    let Ok(base) = Url::parse(&format!("http://{authority}{path}")) else {
        return Vec::new();
    };
    let mut paths: Vec<String> = Vec::new();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        // One of each is meaningful; a repeated one is ambiguous and names nothing.
        let mut values = answer.get_all(&name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            continue;
        };
        let Some(named) = value.to_str().ok().and_then(|v| base.join(v.trim()).ok()) else {
            continue;
        };
        let web = matches!(named.scheme(), "http" | "https");
        // Host names compare case-insensitively; `url` has lower-cased both.
        if !web || named.host_str() != base.host_str() {
            continue;
        }
        let named = named.path();
        if named != path && !paths.iter().any(|p| p == named) {
            paths.push(named.to_owned());
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::header_map as answer;

    /// Why, the answer's headers, the paths named.
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );

    #[test]
    fn locations_on_the_addressed_host_are_named_and_no_other_hosts() {
        let host = Some(&b"API.example:8080"[..]);
        #[rustfmt::skip]
        let cases: [Case; 12] = [
            ("an absolute path", &[("location", "/items/7")], &["/items/7"]),
            ("both headers", &[("location", "/items/7"), ("content-location", "/items/7/v2")], &["/items/7", "/items/7/v2"]),
            ("relative to the request", &[("location", "7?x=1")], &["/items/7"]),
            ("dot segments resolved", &[("location", "../other/./x")], &["/other/x"]),
            ("the same host, any case, absolute", &[("location", "http://api.EXAMPLE:8080/items/8")], &["/items/8"]),
            ("the same host over https", &[("location", "https://api.example/items/9")], &["/items/9"]),
            ("another host", &[("location", "http://evil.example/items/7")], &[]),
            ("another host, network-path", &[("content-location", "//evil.example/items/7")], &[]),
            ("not the web", &[("location", "mailto:a@api.example")], &[]),
            ("the request's own path", &[("location", "/items/new")], &[]),
            ("unparseable", &[("location", "http://[::1")], &[]),
            ("repeated: ambiguous", &[("location", "/a"), ("location", "/b")], &[]),
        ];
        for (why, pairs, expected) in cases {
            assert_eq!(
                named_paths(host, "/items/new", &answer(pairs)),
                expected,
                "{why}"
            );
        }
    }

    #[test]
    fn without_a_host_only_relative_references_count() {
        let named = named_paths(None, "/items/new", &answer(&[("location", "/items/7")]));
        assert_eq!(named, ["/items/7"]);
        let named = named_paths(
            None,
            "/items/new",
            &answer(&[("location", "http://x.example/a")]),
        );
        assert!(named.is_empty());
    }
}
