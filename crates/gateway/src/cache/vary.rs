//! `Vary` (RFC 9111 §4.1): one request URI can have several stored answers, each for the values
//! the request that got it sent for the headers the answer's `Vary` names. The stores keep, per
//! primary key ([`super::CacheKey::entry`]), the names the latest answer varies on and up to
//! [`MAX_VARIANTS`] answers, each under a secondary key: a digest of the request's values for
//! those names (never the values: `Vary: Authorization` or `Cookie` must not put credentials in
//! Redis). A request's own secondary key under the stored names finds its answer at once.
//!
//! The values are the ones the SERVICE saw: a hop-by-hop header (or one the request's
//! `Connection` names) never reaches it, so it is absent whatever the client sent (and a client
//! cannot split the cache by sending them). An answer that varies on a header the gateway writes
//! itself (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, `X-User-*`, `X-Gatehouse-*`,
//! `X-Request-Id`) is not stored: the values the service saw are not the client's, and an answer
//! built for one client address must not be served for another's.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::key::Digest32;
// What the proxy strips on the way to the service: the same list, so "never reaches it" holds.
use crate::proxy::headers::HOP_BY_HOP;

/// Answers kept per primary key at most; a new one past this evicts the least recently stored.
pub const MAX_VARIANTS: usize = 8;

/// Names one `Vary` may list before the answer is refused: a real one names a handful, and each
/// name costs a digest on every lookup of its key.
pub const MAX_NAMES: usize = 16;

/// The names an answer's `Vary` lists: lower-cased, without repeats, in order (so one list of
/// names has one spelling, in memory and in Redis).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names(Arc<[HeaderName]>);

/// Why an answer's `Vary` keeps it out of the store (the `detail` of its `Cache-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// `*`: no later request can match (§4.1).
    All,
    /// Not a list of header names.
    Unreadable,
    /// More than [`MAX_NAMES`].
    TooMany,
    /// A header the gateway writes for the service (see the module docs).
    GatewayHeader,
}

impl Unusable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "vary-star",
            Self::Unreadable => "vary-unreadable",
            Self::TooMany => "vary-too-many",
            Self::GatewayHeader => "vary-gateway-header",
        }
    }
}

impl Names {
    /// The names `answer`'s `Vary` lines list.
    pub fn of(answer: &HeaderMap) -> Result<Self, Unusable> {
        let mut names: Vec<HeaderName> = Vec::new();
        for line in answer.get_all(header::VARY) {
            let text = line.to_str().map_err(|_| Unusable::Unreadable)?;
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return Err(Unusable::All);
                }
                // Counted before parsing, so a list of ten thousand names costs no more.
                if names.len() >= MAX_NAMES {
                    return Err(Unusable::TooMany);
                }
                let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| Unusable::Unreadable)?;
                if written_by_gateway(&name) {
                    return Err(Unusable::GatewayHeader);
                }
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        Ok(Self(names.into()))
    }

    /// Read back from a store; `None` if a name is not one.
    pub fn from_strings(names: &[String]) -> Option<Self> {
        let names: Option<Vec<HeaderName>> = names
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        names.map(|names| Self(names.into()))
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|n| n.as_str().to_owned()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secondary key of `request` under these names: a digest of the values the service
    /// saw for each (see the module docs), length-prefixed like the primary key's parts.
    pub fn variant(&self, request: &HeaderMap) -> Digest32 {
        // The common case, on every hit of an answer without `Vary`: no digest to compute.
        if self.is_empty() {
            return [0; 32];
        }
        let mut digest = Sha256::new();
        digest.update(b"gatehouse-variant-v1");
        for name in self.0.iter() {
            digest.update((name.as_str().len() as u64).to_be_bytes());
            digest.update(name.as_str());
            if !reaches_service(request, name) {
                digest.update([0]);
                continue;
            }
            // Several lines of one header are one list (RFC 9110 §5.3): hashed in order, each
            // prefixed, so `a, b` on one line and `a` then `b` on two still differ only where
            // a service could tell them apart.
            let mut values = request.get_all(name).iter().peekable();
            if values.peek().is_none() {
                digest.update([0]);
                continue;
            }
            digest.update([1]);
            for value in values {
                digest.update((value.len() as u64).to_be_bytes());
                digest.update(value.as_bytes());
            }
        }
        digest.finalize().into()
    }

    /// What concurrent misses for `variant` of `primary` wait on together: the primary key
    /// when the answers vary on nothing (as for a request that found no answer and cannot
    /// know the names yet), else one flight per variant.
    pub fn flight(&self, primary: &Digest32, variant: &Digest32) -> Digest32 {
        if self.is_empty() {
            return *primary;
        }
        let mut digest = Sha256::new();
        digest.update(b"gatehouse-flight-v1");
        digest.update(primary);
        digest.update(variant);
        digest.finalize().into()
    }
}

/// Whether the service gets `name` of `request` as the client sent it.
fn reaches_service(request: &HeaderMap, name: &HeaderName) -> bool {
    if HOP_BY_HOP.contains(name) {
        return false;
    }
    !request.get_all(header::CONNECTION).iter().any(|line| {
        line.as_bytes().split(|&b| b == b',').any(|token| {
            token
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_str().as_bytes())
        })
    })
}

/// Headers the gateway sets on the way to the service, whatever the client sent: those it
/// asserts (see `proxy::headers`) and the request's id.
fn written_by_gateway(name: &HeaderName) -> bool {
    crate::proxy::headers::is_asserted_by_gateway(name) || name.as_str() == "x-request-id"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::header_map as map;

    fn names(vary: &str) -> Result<Names, Unusable> {
        Names::of(&map(&[("vary", vary)]))
    }

    #[test]
    fn vary_lists_are_read_once_each_in_one_spelling_or_refused_for_a_reason() {
        let read = names("Accept-Language, accept-encoding ,ACCEPT-LANGUAGE").unwrap();
        assert_eq!(read.to_strings(), ["accept-language", "accept-encoding"]);
        assert!(Names::of(&HeaderMap::new()).unwrap().is_empty());

        #[rustfmt::skip]
        let refusals: [(&str, Unusable, &str); 7] = [
            ("accept, *", Unusable::All, "no request can match *"),
            ("accept, bad name", Unusable::Unreadable, "not a header name"),
            ("x-forwarded-for", Unusable::GatewayHeader, "the service saw the gateway's value"),
            ("Forwarded", Unusable::GatewayHeader, "the same, any case"),
            ("x-user-id", Unusable::GatewayHeader, "the identity the gateway asserts"),
            ("x-request-id", Unusable::GatewayHeader, "one per request: never reused anyway"),
            ("x-real-ip", Unusable::GatewayHeader, "the client's address"),
        ];
        for (vary, expected, why) in refusals {
            assert_eq!(names(vary), Err(expected), "{why}");
        }
    }

    #[test]
    fn a_huge_vary_list_is_refused_before_it_is_read_whole() {
        let many: Vec<String> = (0..10_000).map(|i| format!("x-h{i}")).collect();
        assert_eq!(names(&many.join(", ")), Err(Unusable::TooMany));
        let enough: Vec<String> = (0..MAX_NAMES).map(|i| format!("x-h{i}")).collect();
        assert!(names(&enough.join(", ")).is_ok());
    }

    #[test]
    fn a_variant_tells_apart_what_the_service_could_tell_apart_and_nothing_else() {
        let by_language = names("accept-language").unwrap();
        let en = by_language.variant(&map(&[("accept-language", "en")]));
        let fr = by_language.variant(&map(&[("accept-language", "fr")]));
        let none = by_language.variant(&HeaderMap::new());
        let empty = by_language.variant(&map(&[("accept-language", "")]));
        assert_ne!(en, fr);
        assert_ne!(none, empty, "absent is not empty");
        assert_eq!(
            en,
            by_language.variant(&map(&[("accept-language", "en"), ("accept", "x")])),
            "headers the answer does not vary on do not matter"
        );
        assert_ne!(
            by_language.variant(&map(&[("accept-language", "en, fr")])),
            by_language.variant(&map(&[
                ("accept-language", "en"),
                ("accept-language", "fr")
            ])),
        );

        let by_hop = names("connection, te, accept").unwrap();
        assert_eq!(
            by_hop.variant(&map(&[("connection", "close"), ("te", "trailers")])),
            by_hop.variant(&HeaderMap::new()),
            "hop-by-hop headers never reach the service: a client cannot split the cache with them"
        );
        assert_eq!(
            by_hop.variant(&map(&[("connection", "Accept"), ("accept", "a/b")])),
            by_hop.variant(&HeaderMap::new()),
            "nor with a header its Connection names"
        );
    }

    #[test]
    fn credentials_are_kept_as_a_digest_that_still_tells_callers_apart() {
        let by_credentials = names("authorization").unwrap();
        let alice = by_credentials.variant(&map(&[("authorization", "Bearer alice-secret")]));
        let bob = by_credentials.variant(&map(&[("authorization", "Bearer bob-secret")]));
        assert_ne!(alice, bob);
        assert!(!alice.windows(6).any(|w| w == b"secret"));
    }
}
