//! Cache keys: what makes two requests the same for the cache. A key is a SHA-256 digest of
//! its parts, each length-prefixed (so no two different sets of parts can run together into one),
//! so a hostile query of kilobytes is 32 bytes in memory and in Redis like any other.
//!
//! The parts: GET (HEAD is answered from the GET entry), the authority the client addressed
//! (lower-cased `host[:port]`: RFC 9111 §2 keys by the target URI, and the service is told the
//! host as `X-Forwarded-Host`, so an answer built from one host must not be served to another),
//! the route (its template, service and target), the path, the query's parameters ordered by
//! name (the values of one name keep their order: `?id=2&id=1` is not `?id=1&id=2`), and, on every route that is not `public`,
//! the verified caller (its kind and id) with its granted scopes and roles: one caller's answer is
//! never another's, even when the service forgets `Cache-Control: private`. `Vary` is not in the
//! key: the names are only known from the answer, so the entry records them with the request's
//! values, and a request whose values differ is a miss (see [`super::Entry::matches`]).

use sha2::{Digest, Sha256};

use crate::auth::tokens::AccessClaims;
use crate::router::Route;

/// A 32-byte digest: what the stores index by.
pub type Digest32 = [u8; 32];

/// The two keys of a cacheable request: its entry, and its path (what an unsafe request on the
/// same path invalidates, whatever the query or the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub entry: Digest32,
    pub path: Digest32,
}

struct Parts(Sha256);

impl Parts {
    fn new(kind: &str) -> Self {
        let mut parts = Self(Sha256::new());
        parts.add(kind.as_bytes());
        parts
    }

    fn add(&mut self, part: &[u8]) {
        self.0.update((part.len() as u64).to_be_bytes());
        self.0.update(part);
    }

    fn finish(self) -> Digest32 {
        self.0.finalize().into()
    }
}

/// The key of a GET or HEAD of `path?query` addressed to `authority` (the validated host the
/// normalize phase returned; `None` for an HTTP/1.0 request without one) on `route` by `caller`
/// (`None` on a public route).
pub fn of(
    authority: Option<&[u8]>,
    route: &Route,
    path: &str,
    query: Option<&str>,
    caller: Option<&AccessClaims>,
) -> CacheKey {
    let mut entry = Parts::new("gatehouse-cache-v2");
    entry.add(b"GET");
    match authority {
        // Host names are case-insensitive (RFC 3986 §3.2.2): `API.example` is `api.example`.
        Some(authority) => entry.add(&authority.to_ascii_lowercase()),
        None => entry.add(b"no-authority"),
    }
    entry.add(route.template.as_bytes());
    entry.add(route.service.as_bytes());
    entry.add(route.settings.to.as_bytes());
    entry.add(path.as_bytes());
    // Ordered by name as sent (not decoded), so `?b=2&a=1` and `?a=1&b=2` meet, while values
    // the service could tell apart (`%2B` and `+`) stay apart. The sort is stable and by name
    // only: a repeated parameter is a list whose order the service may read (`?id=2&id=1`).
    let mut pairs: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .collect();
    pairs.sort_by_key(|pair| pair.split_once('=').map_or(*pair, |(name, _)| name));
    entry.add(&(pairs.len() as u64).to_be_bytes());
    for pair in pairs {
        entry.add(pair.as_bytes());
    }
    match caller.filter(|_| route.settings.auth.needs_identity()) {
        None => entry.add(b"anyone"),
        Some(claims) => {
            entry.add(b"caller");
            entry.add(format!("{:?}", claims.kind).as_bytes());
            entry.add(claims.sub.as_bytes());
            let mut scopes: Vec<&str> = claims.scope.split_whitespace().collect();
            scopes.sort_unstable();
            entry.add(scopes.join(" ").as_bytes());
            let mut roles: Vec<&str> = claims.roles.iter().map(String::as_str).collect();
            roles.sort_unstable();
            entry.add(roles.join(" ").as_bytes());
        }
    }
    CacheKey {
        entry: entry.finish(),
        path: path_key(path),
    }
}

/// The key an unsafe request on `path` invalidates.
pub fn path_key(path: &str) -> Digest32 {
    let mut key = Parts::new("gatehouse-cache-path-v1");
    key.add(path.as_bytes());
    key.finish()
}

/// Lower-case hex, for Redis key names.
pub fn hex(digest: &Digest32) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthPolicy, RouteSettings};
    use crate::router::RouteTable;
    use kit::identity::PrincipalKind;

    fn route(auth: AuthPolicy) -> std::sync::Arc<Route> {
        let settings = RouteSettings {
            path: "/api/items".into(),
            methods: vec![http::Method::GET],
            service: "items".into(),
            to: "/items".into(),
            auth,
            timeout: None,
            rate_limit: Vec::new(),
            cache: None,
            request_checks: Default::default(),
            transform: Default::default(),
            compose: None,
            client_cert: None,
            websocket: None,
        };
        let table = RouteTable::build(&[settings]).unwrap();
        match table.lookup(&http::Method::GET, "/api/items") {
            crate::router::Lookup::Found { route, .. } => std::sync::Arc::clone(route),
            _ => panic!("the route is in its table"),
        }
    }

    const HOST: Option<&[u8]> = Some(b"api.example");

    fn claims(sub: &str, scope: &str) -> AccessClaims {
        AccessClaims {
            iss: "gatehouse".into(),
            aud: "gatehouse-api".into(),
            sub: sub.into(),
            kind: PrincipalKind::User,
            username: None,
            roles: vec![],
            scope: scope.into(),
            iat: 0,
            nbf: 0,
            exp: 0,
            jti: "j".into(),
            sid: None,
            iat_ms: 0,
            minted: Default::default(),
        }
    }

    #[test]
    fn the_order_of_query_parameters_does_not_matter_but_their_values_do() {
        let route = route(AuthPolicy::Public);
        let a = of(HOST, &route, "/api/items", Some("b=2&a=1"), None);
        let b = of(HOST, &route, "/api/items", Some("a=1&b=2"), None);
        let c = of(HOST, &route, "/api/items", Some("a=1&b=3"), None);
        let d = of(HOST, &route, "/api/items", Some("a=1%2B&b=2"), None);
        let e = of(HOST, &route, "/api/items", Some("a=1+&b=2"), None);
        assert_eq!(a, b);
        assert_ne!(a.entry, c.entry);
        assert_ne!(
            d.entry, e.entry,
            "encodings the service can tell apart stay apart"
        );
        assert_eq!(a.path, c.path, "one path, one invalidation key");
    }

    #[test]
    fn repeated_parameters_keep_the_order_of_their_values() {
        let route = route(AuthPolicy::Public);
        let two_then_one = of(HOST, &route, "/api/items", Some("id=2&id=1"), None);
        let one_then_two = of(HOST, &route, "/api/items", Some("id=1&id=2"), None);
        assert_ne!(
            two_then_one.entry, one_then_two.entry,
            "a list the service may read in order is not reordered"
        );
        assert_eq!(
            of(HOST, &route, "/api/items", Some("id=2&b=x&id=1"), None),
            of(HOST, &route, "/api/items", Some("b=x&id=2&id=1"), None),
            "other names still move freely around it"
        );
    }

    #[test]
    fn each_addressed_host_has_its_own_key_whatever_its_case() {
        let route = route(AuthPolicy::Public);
        let ours = of(Some(b"api.example"), &route, "/api/items", None, None);
        let shouting = of(Some(b"API.Example"), &route, "/api/items", None, None);
        let evil = of(Some(b"evil.example"), &route, "/api/items", None, None);
        let other_port = of(Some(b"api.example:8443"), &route, "/api/items", None, None);
        assert_eq!(ours, shouting, "host names are case-insensitive");
        assert_ne!(
            ours.entry, evil.entry,
            "an answer built from another Host is not served for ours"
        );
        assert_ne!(ours.entry, other_port.entry);
        assert_eq!(
            ours.path, evil.path,
            "a write invalidates every host's entry"
        );
    }

    #[test]
    fn parts_cannot_run_together_into_another_key() {
        let route = route(AuthPolicy::Public);
        assert_ne!(
            of(HOST, &route, "/api/items", Some("ab"), None).entry,
            of(HOST, &route, "/api/items", Some("a&b"), None).entry
        );
    }

    #[test]
    fn on_a_route_that_is_not_public_each_caller_and_grant_has_its_own_key() {
        let route = route(AuthPolicy::Authenticated);
        let alice = of(
            HOST,
            &route,
            "/api/items",
            None,
            Some(&claims("alice", "a b")),
        );
        let alice_reordered = of(
            HOST,
            &route,
            "/api/items",
            None,
            Some(&claims("alice", "b a")),
        );
        let alice_fewer = of(
            HOST,
            &route,
            "/api/items",
            None,
            Some(&claims("alice", "a")),
        );
        let bob = of(
            HOST,
            &route,
            "/api/items",
            None,
            Some(&claims("bob", "a b")),
        );
        assert_eq!(alice, alice_reordered);
        assert_ne!(alice.entry, alice_fewer.entry, "another grant, another key");
        assert_ne!(alice.entry, bob.entry, "another caller, another key");
        assert_eq!(
            alice.path, bob.path,
            "a write invalidates every caller's entry"
        );
    }

    #[test]
    fn a_huge_query_is_a_key_of_32_bytes() {
        let route = route(AuthPolicy::Public);
        let query = "x=".to_owned() + &"y".repeat(64 * 1024);
        let key = of(HOST, &route, "/api/items", Some(&query), None);
        assert_eq!(hex(&key.entry).len(), 64);
    }
}
