//! Header rewriting. Hop-by-hop headers belong to one connection and never cross the proxy;
//! headers the gateway itself asserts (identity, forwarding) are removed from whatever the
//! client sent, so a client can never speak for the gateway.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 §7.6.1 plus the de facto ones.
const HOP_BY_HOP: [HeaderName; 8] = [
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

fn is_asserted_by_gateway(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-user-")
        || name.starts_with("x-gatehouse-")
        || name.starts_with("x-forwarded-")
        || name == "forwarded"
        || name == "x-real-ip"
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Prepares a client's headers for the upstream: see the module documentation.
pub fn sanitize_request(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
    let asserted: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_asserted_by_gateway(n))
        .cloned()
        .collect();
    for name in asserted {
        headers.remove(name);
    }
    // The upstream's Host is its own; the client's travels as X-Forwarded-Host.
    headers.remove(header::HOST);
}

/// What the upstream learns about the original request.
pub struct Forwarding<'a> {
    pub client_ip: std::net::IpAddr,
    pub host: Option<&'a HeaderValue>,
    pub proto: &'static str,
}

pub fn add_forwarding(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    let ip = forwarding.client_ip.to_string();
    if let Ok(value) = HeaderValue::from_str(&ip) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(forwarding.proto),
    );
    let mut forwarded = match forwarding.client_ip {
        std::net::IpAddr::V4(_) => format!("for={ip};proto={}", forwarding.proto),
        std::net::IpAddr::V6(_) => format!("for=\"[{ip}]\";proto={}", forwarding.proto),
    };
    if let Some(host) = forwarding.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
        if let Ok(host) = host.to_str() {
            if host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
            {
                forwarded.push_str(";host=");
                forwarded.push_str(host);
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
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
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["x-kept"]
        );
    }
}
