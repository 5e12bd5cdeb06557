//! Header rewriting. Hop-by-hop headers belong to one connection and never cross the proxy;
//! headers the gateway itself asserts (identity, forwarding) are removed from whatever the
//! client sent, so a client can never speak for the gateway.
//!
//! This runs twice per proxied request (the request's headers and the response's), so it looks
//! at the map once and removes only what is there: a request that carries no hop-by-hop or
//! asserted header costs one pass over its names and no allocation. The forwarding headers are
//! written without formatting machinery that allocates: the client's address is printed into a
//! stack buffer, and each new value is one allocation (the bytes a `HeaderValue` owns).

use std::io::Write as _;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 §7.6.1 plus the de facto ones. At most 8, so a `u8` says which a map holds.
/// A `const`, though each use builds and drops the array (~190 instructions a request): the
/// compiler then knows the names and compares a header's against them as constants. As a
/// `static` (interior mutability inside `HeaderName` keeps it out of read-only memory) every
/// comparison loads and matches each name: ~420 instructions a request more than the drops it
/// saves (callgrind, docs/BENCHMARKS.md, "Small cuts, measured one by one").
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether `name` is one of the [`HOP_BY_HOP`] headers (those `Connection` lists are not known
/// here: they are named per message).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Whether `name` is a header only the gateway may assert to a service (identity, forwarding).
pub fn is_asserted_by_gateway(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-user-")
        || name.starts_with("x-gatehouse-")
        || name.starts_with("x-forwarded-")
        || name == "forwarded"
        || name == "x-real-ip"
}

/// What one pass over a map's names found: which [`HOP_BY_HOP`] headers (a bit each) and how
/// many names the gateway asserts.
struct Found {
    hop_by_hop: u8,
    asserted: usize,
}

impl Found {
    fn in_map(headers: &HeaderMap, asserted_too: bool) -> Self {
        let mut found = Self {
            hop_by_hop: 0,
            asserted: 0,
        };
        // `keys` yields each name once, however often it is repeated.
        for name in headers.keys() {
            if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
                found.hop_by_hop |= 1 << index;
            } else if asserted_too && is_asserted_by_gateway(name) {
                found.asserted += 1;
            }
        }
        found
    }

    fn has_connection(&self) -> bool {
        self.hop_by_hop & 1 != 0
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let found = Found::in_map(headers, false);
    remove_found_hop_by_hop(headers, &found);
}

fn remove_found_hop_by_hop(headers: &mut HeaderMap, found: &Found) {
    if found.hop_by_hop == 0 {
        return;
    }
    if found.has_connection() {
        remove_named_by_connection(headers);
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if found.hop_by_hop & (1 << index) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes the headers the `Connection` header lists (every one of its lines, each a list of
/// names). Tokens are read as bytes, so a line with a byte that is not visible ASCII still has
/// its well-formed names removed; a token that is no header name names nothing.
fn remove_named_by_connection(headers: &mut HeaderMap) {
    let lines = headers.get_all(header::CONNECTION).iter().count();
    for line in 0..lines {
        // A clone of the line (a reference count, not a copy) so the map can change meanwhile.
        let Some(value) = headers
            .get_all(header::CONNECTION)
            .iter()
            .nth(line)
            .cloned()
        else {
            break;
        };
        for token in value.as_bytes().split(|&b| b == b',') {
            let Ok(token) = std::str::from_utf8(token.trim_ascii()) else {
                continue;
            };
            // `Connection` itself goes last, with the other hop-by-hop headers: removing it
            // here would lose the lines not read yet.
            if token.is_empty() || token.eq_ignore_ascii_case("connection") {
                continue;
            }
            // A look-up by `&str` lower-cases on the stack and finds nothing for a bad name.
            headers.remove(token);
        }
    }
}

/// Prepares a client's headers for the upstream: see the module documentation.
pub fn sanitize_request(headers: &mut HeaderMap) {
    let found = Found::in_map(headers, true);
    remove_found_hop_by_hop(headers, &found);
    // Rare (a client pretending to be the gateway, or a misbehaving one); each removal changes
    // the map, so the next name is looked for again rather than collected first.
    for _ in 0..found.asserted {
        let Some(name) = headers.keys().find(|n| is_asserted_by_gateway(n)).cloned() else {
            break;
        };
        headers.remove(name);
    }
    // The upstream's Host is its own; the client's travels as X-Forwarded-Host.
    headers.remove(header::HOST);
}

/// What the upstream learns about the original request.
pub struct Forwarding<'a> {
    pub client_ip: IpAddr,
    pub host: Option<&'a HeaderValue>,
    pub proto: &'static str,
}

/// An IP address's text in a stack buffer, written without allocating.
struct IpText {
    // The longest text is an IPv4-mapped IPv6 address: 45 bytes.
    bytes: [u8; 48],
    len: usize,
}

impl IpText {
    fn of(ip: IpAddr) -> Self {
        let mut text = Self {
            bytes: [0; 48],
            len: 0,
        };
        match ip {
            // The common case, digit by digit: `Display` goes through the formatting machinery,
            // which cost more than all the rest of the header rewriting (bench/profile).
            IpAddr::V4(ip) => {
                for (index, octet) in ip.octets().into_iter().enumerate() {
                    if index > 0 {
                        text.push(b'.');
                    }
                    text.push_decimal(octet);
                }
            }
            // IPv6's text has rules (RFC 5952's zero compression): `Display` knows them.
            IpAddr::V6(ip) => {
                let mut rest = &mut text.bytes[..];
                // Cannot fail: every address fits (see the field); `&mut [u8]` fails only when full.
                let _ = write!(rest, "{ip}");
                text.len = 48 - rest.len();
            }
        }
        text
    }

    fn push_decimal(&mut self, n: u8) {
        if n >= 100 {
            self.push(b'0' + n / 100);
        }
        if n >= 10 {
            self.push(b'0' + n / 10 % 10);
        }
        self.push(b'0' + n % 10);
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Whether a `Host` value can go into `Forwarded` as a bare token (RFC 7239 `host=`): anything
/// else would need quoting, and a client's odd Host is not worth it (X-Forwarded-Host has it).
fn is_plain_host(host: &[u8]) -> bool {
    host.iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

pub fn add_forwarding(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    let ip = IpText::of(forwarding.client_ip);
    // An address's text is always a valid header value.
    if let Ok(value) = HeaderValue::from_bytes(ip.as_bytes()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(forwarding.proto),
    );
    let host = forwarding
        .host
        .filter(|host| is_plain_host(host.as_bytes()));
    let (open, close): (&[u8], &[u8]) = match forwarding.client_ip {
        IpAddr::V4(_) => (b"for=", b""),
        IpAddr::V6(_) => (b"for=\"[", b"]\""),
    };
    let mut forwarded = BytesMut::with_capacity(
        open.len()
            + ip.len
            + close.len()
            + ";proto=".len()
            + forwarding.proto.len()
            + host.map_or(0, |host| ";host=".len() + host.len()),
    );
    forwarded.put_slice(open);
    forwarded.put_slice(ip.as_bytes());
    forwarded.put_slice(close);
    forwarded.put_slice(b";proto=");
    forwarded.put_slice(forwarding.proto.as_bytes());
    if let Some(host) = host {
        forwarded.put_slice(b";host=");
        forwarded.put_slice(host.as_bytes());
    }
    if let Some(host) = forwarding.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    // Takes the buffer over without copying it.
    if let Ok(value) = HeaderValue::from_maybe_shared(forwarded.freeze()) {
        headers.insert(header::FORWARDED, value);
    }
}

/// Prepares an upstream's response headers for the client.
pub fn sanitize_response(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
    headers.remove(kit::identity::HEADER);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names left, sorted: a removal may move the map's last entry into its place.
    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn client_sent_identity_and_forwarding_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        for name in [
            "x-user-id",
            "X-User-Role",
            "x-gatehouse-identity",
            "x-forwarded-for",
            "forwarded",
            "x-real-ip",
        ] {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
        }
        headers.insert("accept", HeaderValue::from_static("application/json"));
        sanitize_request(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("accept"));
    }

    #[test]
    fn headers_named_by_connection_are_hop_by_hop() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(names(&headers), vec!["x-kept"]);
    }

    #[test]
    fn every_hop_by_hop_header_is_removed_and_nothing_else() {
        let mut headers = HeaderMap::new();
        for name in &HOP_BY_HOP {
            headers.insert(name.clone(), HeaderValue::from_static("x"));
        }
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(names(&headers), vec!["x-kept"]);
    }

    #[test]
    fn a_map_without_anything_to_remove_is_left_as_it_was() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        let before = headers.clone();
        remove_hop_by_hop(&mut headers);
        sanitize_response(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn a_connection_header_listing_thousands_of_names_removes_each_one_present() {
        let mut headers = HeaderMap::new();
        let listed: Vec<String> = (0..5_000).map(|i| format!("x-h{i}")).collect();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_str(&listed.join(", ")).unwrap(),
        );
        for name in ["x-h0", "x-h2500", "x-h4999"] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        headers.insert("x-h5000", HeaderValue::from_static("not listed"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(names(&headers), vec!["x-h5000"]);
    }

    #[test]
    fn every_line_of_a_repeated_connection_header_counts_even_one_naming_connection() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("Connection, X-First"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-second"));
        headers.insert("x-first", HeaderValue::from_static("1"));
        headers.insert("x-second", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(names(&headers), vec!["x-kept"]);
    }

    #[test]
    fn a_connection_line_with_bytes_that_are_not_text_still_has_its_names_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, \xff\xfe, caf\xc3\xa9, x-other").unwrap(),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(names(&headers), vec!["x-kept"]);
    }

    #[test]
    fn connection_tokens_that_name_no_header_are_ignored() {
        let bad_tokens: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b" ,, ,\t,", "only separators"),
            (b"x a, b\"c, (d)", "characters no header name has"),
            (&[b'x'; 4096], "a name longer than any stack buffer"),
        ];
        for (value, reason) in bad_tokens {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONNECTION, HeaderValue::from_bytes(value).unwrap());
            headers.insert("x-kept", HeaderValue::from_static("1"));
            remove_hop_by_hop(&mut headers);
            assert_eq!(names(&headers), vec!["x-kept"], "{reason}");
        }
    }

    #[test]
    fn repeated_and_mixed_case_asserted_headers_are_all_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-user-id", "alice"),
            ("X-User-Id", "mallory"),
            ("x-user-roles", "admin"),
            ("Forwarded", "for=10.0.0.1"),
            ("forwarded", "for=10.0.0.2"),
            ("x-forwarded-host", "evil.example"),
            ("x-gatehouse-identity", "forged"),
            ("host", "api.example.com"),
            ("accept", "*/*"),
            ("x-user", "not a gateway header"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        sanitize_request(&mut headers);
        assert_eq!(names(&headers), vec!["accept", "x-user"]);
    }

    #[test]
    fn a_client_cannot_keep_an_asserted_header_by_naming_it_in_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-user-id"));
        headers.append("x-user-id", HeaderValue::from_static("1"));
        headers.append("x-user-id", HeaderValue::from_static("2"));
        headers.insert("x-real-ip", HeaderValue::from_static("10.0.0.1"));
        sanitize_request(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }

    fn forwarded(client_ip: &str, host: Option<HeaderValue>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        add_forwarding(
            &mut headers,
            &Forwarding {
                client_ip: client_ip.parse().unwrap(),
                host: host.as_ref(),
                proto: "http",
            },
        );
        headers
    }

    #[test]
    fn forwarding_headers_name_an_ipv4_client_and_its_host() {
        let headers = forwarded(
            "192.168.100.200",
            Some(HeaderValue::from_static("api.example.com:8080")),
        );
        assert_eq!(headers[X_FORWARDED_FOR], "192.168.100.200");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "api.example.com:8080");
        assert_eq!(
            headers[header::FORWARDED],
            "for=192.168.100.200;proto=http;host=api.example.com:8080"
        );
    }

    #[test]
    fn an_address_is_written_as_its_display_text() {
        let mut addresses: Vec<IpAddr> = (0..=255u8)
            .map(|n| std::net::Ipv4Addr::new(n, 255 - n, n / 10, 7).into())
            .collect();
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1:2",
            "::ffff:1.2.3.4",
        ] {
            addresses.push(text.parse().unwrap());
        }
        for ip in addresses {
            assert_eq!(IpText::of(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn an_ipv6_client_is_quoted_in_forwarded_as_rfc_7239_requires() {
        let headers = forwarded("::ffff:255.255.255.255", None);
        assert_eq!(headers[X_FORWARDED_FOR], "::ffff:255.255.255.255");
        assert_eq!(
            headers[header::FORWARDED],
            "for=\"[::ffff:255.255.255.255]\";proto=http"
        );
        assert!(!headers.contains_key(X_FORWARDED_HOST));

        let longest = "1111:2222:3333:4444:5555:6666:7777:8888";
        let headers = forwarded(longest, Some(HeaderValue::from_static("[::1]:80")));
        assert_eq!(headers[X_FORWARDED_FOR], longest);
        assert_eq!(
            headers[header::FORWARDED],
            format!("for=\"[{longest}]\";proto=http;host=[::1]:80").as_str()
        );
    }

    #[test]
    fn a_host_that_is_no_plain_token_travels_only_as_x_forwarded_host() {
        for host in [
            HeaderValue::from_static("evil.example;for=10.0.0.1"),
            HeaderValue::from_static("a b"),
            HeaderValue::from_bytes(b"caf\xc3\xa9.example").unwrap(),
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        ] {
            let headers = forwarded("10.1.2.3", Some(host.clone()));
            assert_eq!(headers[header::FORWARDED], "for=10.1.2.3;proto=http");
            assert_eq!(headers[X_FORWARDED_HOST], host);
        }
    }
}
