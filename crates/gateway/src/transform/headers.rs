//! Header edits a route makes: on the request before it is forwarded (set, add, remove,
//! rename), on the service's answer (set, remove). A route may only name headers the gateway
//! does not own: the names are checked as the configuration is read ([`RequestHeader`],
//! [`ResponseHeader`] are made only by their `parse`), and the request's edits run before the forward
//! phase strips what only the gateway may assert and adds the caller's identity, so even a
//! rename of a client's header cannot end up speaking for the gateway.

use std::fmt;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::proxy::headers::{is_asserted_by_gateway, is_hop_by_hop};

/// Headers whose value the gateway decides on every request it forwards.
const OWNED_ON_REQUESTS: [HeaderName; 7] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    // Replaced by the caller's identity on authenticated routes.
    header::AUTHORIZATION,
    // Negotiated by the gateway where it rewrites answers (see `transform::coding`).
    header::ACCEPT_ENCODING,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("keep-alive"),
];

/// Headers whose value the gateway decides on the answers it sends.
const OWNED_ON_RESPONSES: [HeaderName; 9] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    // The cache keys entries by it, and a transform adds `Accept-Encoding` to it.
    header::VARY,
    header::AGE,
    HeaderName::from_static("cache-status"),
    HeaderName::from_static("ratelimit"),
    HeaderName::from_static("ratelimit-policy"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("keep-alive"),
];

fn owned(name: &HeaderName, by_side: &[HeaderName]) -> bool {
    is_hop_by_hop(name) || is_asserted_by_gateway(name) || by_side.contains(name)
}

fn parse_name(text: &str, by_side: &[HeaderName]) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("{text:?} is not a header name"))?;
    if owned(&name, by_side) {
        return Err(format!(
            "`{name}` is set by the gateway itself (identity, forwarding, hop-by-hop, framing): a route cannot change it"
        ));
    }
    Ok(name)
}

/// A header a route may edit on the request it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader(HeaderName);

/// A header a route may edit on the answer it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader(HeaderName);

macro_rules! header_rule_name {
    ($type:ident, $owned:expr) => {
        impl $type {
            pub fn parse(text: &str) -> Result<Self, String> {
                parse_name(text, &$owned).map(Self)
            }

            pub fn into_name(self) -> HeaderName {
                self.0
            }
        }

        impl From<$type> for HeaderName {
            fn from(rule: $type) -> Self {
                rule.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.0.as_str())
            }
        }
    };
}

header_rule_name!(RequestHeader, OWNED_ON_REQUESTS);
header_rule_name!(ResponseHeader, OWNED_ON_RESPONSES);

/// What a route does to a request's headers, in this order: remove, rename, set, add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaderEdits {
    pub remove: Vec<HeaderName>,
    /// Every value of the first name moves to the second (after any it already has).
    pub rename: Vec<(HeaderName, HeaderName)>,
    /// Replaces whatever the client sent.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Added beside whatever the client sent.
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl RequestHeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (from, to) in &self.rename {
            if let header::Entry::Occupied(entry) = headers.entry(from) {
                let (_, values) = entry.remove_entry_mult();
                let values: Vec<HeaderValue> = values.collect();
                for value in values {
                    headers.append(to, value);
                }
            }
        }
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
    }
}

/// What a route does to its answers' headers: remove, then set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHeaderEdits {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl ResponseHeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_the_gateway_owns_cannot_be_named_by_a_route() {
        for name in [
            "X-Gatehouse-Identity",
            "x-user-id",
            "X-User-Roles",
            "x-forwarded-for",
            "Forwarded",
            "X-Real-IP",
            "Host",
            "Authorization",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
            "TE",
            "Proxy-Authorization",
            "X-Request-Id",
            "Accept-Encoding",
        ] {
            let refused = RequestHeader::parse(name).unwrap_err();
            assert!(refused.contains("gateway"), "{name}: {refused}");
        }
        for name in [
            "Content-Encoding",
            "Content-Length",
            "Vary",
            "Cache-Status",
            "RateLimit",
            "RateLimit-Policy",
            "X-Gatehouse-Identity",
            "Transfer-Encoding",
        ] {
            assert!(ResponseHeader::parse(name).is_err(), "{name}");
        }
        for bad in ["", "a b", "x:y", "é", "x\r\ny"] {
            assert!(RequestHeader::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            RequestHeader::parse("X-Api-Version").unwrap().to_string(),
            "x-api-version"
        );
        assert!(ResponseHeader::parse("Server").is_ok());
    }

    #[test]
    fn request_edits_remove_rename_set_then_add() {
        let name = |n: &'static str| HeaderName::from_static(n);
        let value = |v: &'static str| HeaderValue::from_static(v);
        let edits = RequestHeaderEdits {
            remove: vec![name("x-debug")],
            rename: vec![(name("x-old"), name("x-new"))],
            set: vec![(name("x-tenant"), value("acme"))],
            add: vec![(name("x-new"), value("added")), (name("x-tag"), value("t"))],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-debug", value("1"));
        headers.append("x-old", value("a"));
        headers.append("x-old", value("b"));
        headers.insert("x-tenant", value("evil"));
        edits.apply(&mut headers);
        let all = |n: &str| {
            headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(all("x-debug").is_empty());
        assert!(all("x-old").is_empty());
        assert_eq!(all("x-new"), ["a", "b", "added"]);
        assert_eq!(all("x-tenant"), ["acme"], "set replaces the client's");
        assert_eq!(all("x-tag"), ["t"]);
    }
}
