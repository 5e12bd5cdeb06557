//! RFC 9111's rules for a shared cache, as one decision per answer: may it be stored, and for how
//! long is it fresh (and usable past that when the service fails). Kept apart from the stores so
//! the rules read as a table (see the tests) rather than as branches spread over the request path.

use std::time::{Duration, SystemTime};

use headers::{
    CacheControl, Date, ETag, Expires, HeaderMapExt, IfModifiedSince, IfNoneMatch, LastModified,
};
use http::header::{self, HeaderMap};
use http::StatusCode;

use super::vary::{self, Names};
use crate::config::{CacheRule, MAX_STALE_IF_ERROR};

/// How long a stored answer serves: `fresh_for` from when it is stored, then up to `stale_for`
/// more in place of a failing service, and up to `revalidate_for` more at once while it is
/// refreshed in the background (RFC 5861 `stale-while-revalidate`); `age` is what the service
/// said it already had (`Age`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub fresh_for: Duration,
    pub stale_for: Duration,
    pub revalidate_for: Duration,
    pub age: Duration,
}

impl Freshness {
    /// How long the store keeps it: fresh, then stale for the longer of its two windows.
    pub fn keep(&self) -> Duration {
        self.fresh_for + self.stale_for.max(self.revalidate_for)
    }
}

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31 seconds (68 years:
/// the route's ttl caps it anyway), not as garbage.
const DELTA_SECONDS_CAP: u64 = 2_147_483_648;

/// Why an answer is not stored; each names the rule, and is the `detail` of its `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// RFC 9111 §3: only statuses cacheable by default (RFC 9110 §15.1), less 206: the gateway
    /// does not assemble ranges.
    Status,
    /// `Cache-Control` that cannot be read: when in doubt, the answer is not shared.
    Unreadable,
    /// `no-store` (§5.2.2.5).
    NoStore,
    /// `no-cache` (§5.2.2.4): it would have to be revalidated on every use, which the gateway
    /// does not do, so storing it buys nothing.
    NoCache,
    /// `private` (§5.2.2.7) on a route whose key is not per caller.
    Private,
    /// `Set-Cookie`: one client's session must never be handed to another.
    SetCookie,
    /// A `Vary` the cache cannot select by (`*`, §4.1; see [`vary::Unusable`]).
    Vary(vary::Unusable),
    /// A request with `Authorization` on a public route (§3.5), without `public`, `s-maxage` or
    /// `must-revalidate` allowing it to be shared.
    Authorization,
    /// Fresh for no time at all (`max-age=0`, an `Age` past its lifetime, an `Expires` in the
    /// past).
    Stale,
    /// The client asked for it not to be stored (`Cache-Control: no-store` on the request).
    RequestNoStore,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Unreadable => "cache-control-unreadable",
            Self::NoStore => "no-store",
            Self::NoCache => "no-cache",
            Self::Private => "private",
            Self::SetCookie => "set-cookie",
            Self::Vary(why) => why.as_str(),
            Self::Authorization => "authorization",
            Self::Stale => "stale-on-arrival",
            Self::RequestNoStore => "request-no-store",
        }
    }
}

/// Statuses RFC 9110 §15.1 makes cacheable by default, less 206 (partial content).
const CACHEABLE_BY_DEFAULT: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// What the request said that matters to storing its answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTerms {
    /// The key holds the verified caller: a `private` answer may be stored in that caller's
    /// entry, and `Authorization` is the caller's own (§3.5 is about sharing across callers).
    pub per_caller: bool,
    /// It carried `Authorization` (on a public route the service sees it).
    pub authorization: bool,
    /// `Cache-Control: no-store` (§5.2.1.5).
    pub no_store: bool,
}

impl RequestTerms {
    pub fn of(headers: &HeaderMap, per_caller: bool) -> Self {
        let no_store = cache_control(headers).is_ok_and(|cc| cc.is_some_and(|cc| cc.no_store()));
        Self {
            per_caller,
            authorization: headers.contains_key(header::AUTHORIZATION),
            no_store,
        }
    }
}

/// What may be stored: for how long, and selected by which request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub freshness: Freshness,
    pub vary: Names,
}

/// Whether the answer (`status`, `headers`) to a request with `terms` may be stored under a
/// route's `rule`, for how long it is fresh, and what it varies on. `now` is when it arrived.
pub fn decide(
    terms: RequestTerms,
    status: StatusCode,
    headers: &HeaderMap,
    rule: &CacheRule,
    now: SystemTime,
) -> Result<Admitted, NotStored> {
    if terms.no_store {
        return Err(NotStored::RequestNoStore);
    }
    if !CACHEABLE_BY_DEFAULT.contains(&status.as_u16()) {
        return Err(NotStored::Status);
    }
    let control = cache_control(headers).map_err(|()| NotStored::Unreadable)?;
    // A `Cache-Control` line the typed header skipped (it ignores what it does not know) is
    // looked at once more for the two directives whose qualified forms it drops.
    let raw_directive = |name: &str| {
        headers.get_all(header::CACHE_CONTROL).iter().any(|value| {
            value.to_str().map_or(true, |text| {
                text.split(',')
                    .any(|d| d.trim().to_ascii_lowercase().starts_with(name))
            })
        })
    };
    let control = control.unwrap_or_else(CacheControl::new);
    if control.no_store() {
        return Err(NotStored::NoStore);
    }
    if control.no_cache() || raw_directive("no-cache") {
        return Err(NotStored::NoCache);
    }
    if (control.private() || raw_directive("private")) && !terms.per_caller {
        return Err(NotStored::Private);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let vary = Names::of(headers).map_err(NotStored::Vary)?;
    if terms.authorization
        && !terms.per_caller
        && !(control.public() || control.s_max_age().is_some() || control.must_revalidate())
    {
        return Err(NotStored::Authorization);
    }

    // §4.2.1: s-maxage over max-age over Expires; the route's ttl caps each.
    let lifetime = control
        .s_max_age()
        .or_else(|| control.max_age())
        .or_else(|| expires_in(headers, now))
        .map_or(rule.ttl, |said| said.min(rule.ttl));
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(v.trim()))
        .map_or(Duration::ZERO, Duration::from_secs);
    let fresh_for = lifetime.saturating_sub(age);
    if fresh_for.is_zero() {
        return Err(NotStored::Stale);
    }
    // §4.2.4: must-revalidate and proxy-revalidate forbid serving it stale, and s-maxage implies
    // proxy-revalidate (§5.2.2.10).
    let revalidate = control.must_revalidate()
        || control.s_max_age().is_some()
        || raw_directive("proxy-revalidate");
    let (stale_for, revalidate_for) = if revalidate {
        (Duration::ZERO, Duration::ZERO)
    } else {
        // The service's own `stale-while-revalidate` wins over the route's: it knows how long
        // its data may lag; both are capped like `stale_if_error`.
        let said = directive_seconds(headers, "stale-while-revalidate").map(Duration::from_secs);
        let revalidate_for = said.unwrap_or(rule.stale_while_revalidate);
        (rule.stale_if_error, revalidate_for.min(MAX_STALE_IF_ERROR))
    };
    Ok(Admitted {
        freshness: Freshness {
            fresh_for,
            stale_for,
            revalidate_for,
            age,
        },
        vary,
    })
}

/// A delta-seconds value (RFC 9111 §1.2.2): digits only; too many of them is the cap.
fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .map_or(DELTA_SECONDS_CAP, |n| n.min(DELTA_SECONDS_CAP)),
    )
}

/// The seconds of a `Cache-Control` directive the typed header does not know (`name=N`, or
/// `name="N"`), on any line; `None` without it or with a value that is not delta-seconds.
fn directive_seconds(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(','))
        .find_map(|directive| {
            let (key, value) = directive.split_once('=')?;
            if !key.trim().eq_ignore_ascii_case(name) {
                return None;
            }
            delta_seconds(value.trim().trim_matches('"'))
        })
}

/// The `Cache-Control` lines of `headers`, read case-insensitively (directives are, §5.2; the
/// typed header only knows them in lower case). Unknown directives are skipped; a known one with
/// a value that is not a number makes the whole field unreadable.
fn cache_control(headers: &HeaderMap) -> Result<Option<CacheControl>, ()> {
    let mut lowered = HeaderMap::new();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let text = value.to_str().map_err(|_| ())?.to_ascii_lowercase();
        // A lifetime that is not delta-seconds (`max-age=`, `max-age=soon`, `max-age`) is a
        // field the cache cannot read: the answer is not stored, whatever else the line says.
        let lifetime_unreadable = text.split(',').any(|directive| {
            let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
            matches!(name.trim(), "max-age" | "s-maxage")
                && delta_seconds(value.trim().trim_matches('"')).is_none()
        });
        if lifetime_unreadable {
            return Err(());
        }
        let text = capped(&text);
        let value = http::HeaderValue::from_str(&text).map_err(|_| ())?;
        lowered.append(header::CACHE_CONTROL, value);
    }
    lowered.typed_try_get::<CacheControl>().map_err(|_| ())
}

/// `line` with each directive's delta-seconds that overflows replaced by the cap (§1.2.2), so
/// `max-age=99999999999999999999` is a long lifetime rather than an unreadable field.
fn capped(line: &str) -> String {
    line.split(',')
        .map(|directive| match directive.split_once('=') {
            Some((key, value))
                if value.trim().len() > 10 && delta_seconds(value.trim()).is_some() =>
            {
                format!("{key}={DELTA_SECONDS_CAP}")
            }
            _ => directive.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `Expires` minus `Date` (or now): how long the service says the answer is fresh. An `Expires`
/// that cannot be read is in the past (§5.3).
fn expires_in(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if !headers.contains_key(header::EXPIRES) {
        return None;
    }
    let Ok(Some(expires)) = headers.typed_try_get::<Expires>() else {
        return Some(Duration::ZERO);
    };
    let date = headers
        .typed_try_get::<Date>()
        .ok()
        .flatten()
        .map_or(now, SystemTime::from);
    Some(
        SystemTime::from(expires)
            .duration_since(date)
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether a request's conditions say the client's copy of a stored answer with `stored`
/// headers is current, so a hit is a 304 (RFC 9111 §4.3.2, RFC 9110 §13.2.2): `If-None-Match`
/// against the stored `ETag` (weak comparison), else `If-Modified-Since` against the stored
/// `Last-Modified`. A condition that cannot be read, or a stored answer without the validator
/// it names, is the full answer: never a wrong 304.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let (Ok(Some(condition)), Ok(Some(etag))) = (
            request.typed_try_get::<IfNoneMatch>(),
            stored.typed_try_get::<ETag>(),
        ) else {
            return false;
        };
        return !condition.precondition_passes(&etag);
    }
    if request.contains_key(header::IF_MODIFIED_SINCE) {
        let (Ok(Some(condition)), Ok(Some(modified))) = (
            request.typed_try_get::<IfModifiedSince>(),
            stored.typed_try_get::<LastModified>(),
        ) else {
            return false;
        };
        return !condition.is_modified(SystemTime::from(modified));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> CacheRule {
        CacheRule {
            ttl: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(300),
            stale_while_revalidate: Duration::ZERO,
            max_body_bytes: 1024,
        }
    }

    use crate::cache::header_map as headers;

    type Headers = &'static [(&'static str, &'static str)];
    /// Why, the request's terms, the status, the answer's headers, the verdict.
    type Refusal = (&'static str, RequestTerms, u16, Headers, NotStored);
    /// Why, the request's terms, the status, the answer's headers, seconds fresh and stale.
    type Admission = (&'static str, RequestTerms, u16, Headers, u64, u64);

    const PUBLIC: RequestTerms = RequestTerms {
        per_caller: false,
        authorization: false,
        no_store: false,
    };
    const PER_CALLER: RequestTerms = RequestTerms {
        per_caller: true,
        authorization: false,
        no_store: false,
    };

    #[test]
    fn answers_that_must_not_be_stored_are_refused_each_for_its_rule() {
        // One case a line: the table is the specification.
        #[rustfmt::skip]
        let cases: [Refusal; 23] = [
            ("no-store", PUBLIC, 200, &[("cache-control", "no-store")], NotStored::NoStore),
            ("no-store among others", PUBLIC, 200, &[("cache-control", "public, max-age=60, no-store")], NotStored::NoStore),
            ("no-store on a second line", PUBLIC, 200, &[("cache-control", "max-age=60"), ("cache-control", "no-store")], NotStored::NoStore),
            ("no-cache needs revalidation we do not do", PUBLIC, 200, &[("cache-control", "no-cache")], NotStored::NoCache),
            ("qualified no-cache", PUBLIC, 200, &[("cache-control", "no-cache=\"set-cookie\"")], NotStored::NoCache),
            ("private on a shared key", PUBLIC, 200, &[("cache-control", "private, max-age=60")], NotStored::Private),
            ("qualified private on a shared key", PUBLIC, 200, &[("cache-control", "private=\"x-user\"")], NotStored::Private),
            ("Set-Cookie", PUBLIC, 200, &[("set-cookie", "session=abc")], NotStored::SetCookie),
            ("Set-Cookie even per caller", PER_CALLER, 200, &[("set-cookie", "session=abc")], NotStored::SetCookie),
            ("Vary: *", PUBLIC, 200, &[("vary", "accept, *")], NotStored::Vary(vary::Unusable::All)),
            ("Vary on what the gateway writes", PUBLIC, 200, &[("vary", "X-Forwarded-For")], NotStored::Vary(vary::Unusable::GatewayHeader)),
            ("garbage max-age", PUBLIC, 200, &[("cache-control", "max-age=soon")], NotStored::Unreadable),
            ("negative max-age", PUBLIC, 200, &[("cache-control", "max-age=-5")], NotStored::Unreadable),
            ("max-age with no value", PUBLIC, 200, &[("cache-control", "max-age=")], NotStored::Unreadable),
            ("s-maxage with no value at all", PUBLIC, 200, &[("cache-control", "public, s-maxage")], NotStored::Unreadable),
            ("an Age past any lifetime", PUBLIC, 200, &[("age", "99999999999999999999999")], NotStored::Stale),
            ("201 is not cacheable by default", PUBLIC, 201, &[("cache-control", "max-age=60")], NotStored::Status),
            ("206: ranges are not assembled", PUBLIC, 206, &[], NotStored::Status),
            ("5xx", PUBLIC, 503, &[("cache-control", "max-age=60")], NotStored::Status),
            ("max-age=0", PUBLIC, 200, &[("cache-control", "max-age=0")], NotStored::Stale),
            ("Age past max-age", PUBLIC, 200, &[("cache-control", "max-age=10"), ("age", "11")], NotStored::Stale),
            ("Expires in the past", PUBLIC, 200, &[("date", "Sun, 29 Nov 2026 12:00:00 GMT"), ("expires", "Sun, 29 Nov 2026 11:00:00 GMT")], NotStored::Stale),
            ("Cache-Control bytes that are not text", PUBLIC, 200, &[], NotStored::Unreadable),
        ];
        for (why, terms, status, pairs, expected) in cases {
            let mut answer = headers(pairs);
            if why.starts_with("Cache-Control bytes") {
                answer.insert(
                    header::CACHE_CONTROL,
                    http::HeaderValue::from_bytes(b"max-age=\xff60").unwrap(),
                );
            }
            let verdict = decide(
                terms,
                StatusCode::from_u16(status).unwrap(),
                &answer,
                &rule(),
                SystemTime::now(),
            );
            assert_eq!(verdict, Err(expected), "{why}");
        }
    }

    #[test]
    fn requests_that_limit_sharing_are_honoured() {
        let authorized = RequestTerms {
            authorization: true,
            ..PUBLIC
        };
        assert_eq!(
            decide(authorized, StatusCode::OK, &headers(&[]), &rule(), SystemTime::now()),
            Err(NotStored::Authorization),
            "§3.5: an answer to a request with credentials is not shared unless the service says so"
        );
        for allowing in ["public", "s-maxage=10", "must-revalidate"] {
            let verdict = decide(
                authorized,
                StatusCode::OK,
                &headers(&[("cache-control", allowing)]),
                &rule(),
                SystemTime::now(),
            );
            assert!(verdict.is_ok(), "{allowing} allows sharing it: {verdict:?}");
        }
        let no_store = RequestTerms {
            no_store: true,
            ..PUBLIC
        };
        assert_eq!(
            decide(
                no_store,
                StatusCode::OK,
                &headers(&[]),
                &rule(),
                SystemTime::now()
            ),
            Err(NotStored::RequestNoStore)
        );
    }

    #[test]
    fn storable_answers_get_the_shorter_of_the_services_lifetime_and_the_routes_ttl() {
        let now = SystemTime::now();
        #[rustfmt::skip]
        let cases: [Admission; 12] = [
            ("no freshness said: the route's ttl", PUBLIC, 200, &[], 30, 300),
            ("max-age shorter than ttl wins", PUBLIC, 200, &[("cache-control", "max-age=5")], 5, 300),
            ("max-age longer than ttl is capped", PUBLIC, 200, &[("cache-control", "max-age=3600")], 30, 300),
            ("s-maxage over max-age, and no stale use", PUBLIC, 200, &[("cache-control", "max-age=20, s-maxage=7")], 7, 0),
            ("Age is subtracted", PUBLIC, 200, &[("cache-control", "max-age=20"), ("age", "15")], 5, 300),
            ("must-revalidate: never stale", PUBLIC, 200, &[("cache-control", "max-age=20, must-revalidate")], 20, 0),
            ("proxy-revalidate: never stale", PUBLIC, 200, &[("cache-control", "max-age=20, proxy-revalidate")], 20, 0),
            ("Expires minus Date", PUBLIC, 200, &[("date", "Sun, 29 Nov 2026 12:00:00 GMT"), ("expires", "Sun, 29 Nov 2026 12:00:10 GMT")], 10, 300),
            ("private in the caller's own entry", PER_CALLER, 200, &[("cache-control", "private, max-age=12")], 12, 300),
            ("404 is cacheable by default", PUBLIC, 404, &[], 30, 300),
            ("an overflowing max-age is 2^31 s, capped by the ttl", PUBLIC, 200, &[("cache-control", "max-age=99999999999999999999999")], 30, 300),
            ("unknown directives are skipped", PUBLIC, 200, &[("cache-control", "max-age=10, x-weird=1, flavour")], 10, 300),
        ];
        for (why, terms, status, pairs, fresh, stale) in cases {
            let verdict = decide(
                terms,
                StatusCode::from_u16(status).unwrap(),
                &headers(pairs),
                &rule(),
                now,
            )
            .unwrap_or_else(|reason| panic!("{why}: refused as {reason:?}"))
            .freshness;
            assert_eq!(verdict.fresh_for, Duration::from_secs(fresh), "{why}");
            assert_eq!(verdict.stale_for, Duration::from_secs(stale), "{why}");
        }
    }

    #[test]
    fn stale_while_revalidate_comes_from_the_service_else_the_route_and_never_past_revalidation() {
        let route = CacheRule {
            stale_while_revalidate: Duration::from_secs(10),
            ..rule()
        };
        #[rustfmt::skip]
        let cases: [(&str, Headers, u64); 6] = [
            ("the route's window", &[], 10),
            ("the service's wins", &[("cache-control", "max-age=5, stale-while-revalidate=30")], 30),
            ("quoted, any case", &[("cache-control", "max-age=5, Stale-While-Revalidate=\"7\"")], 7),
            ("garbage is not a window: the route's", &[("cache-control", "max-age=5, stale-while-revalidate=soon")], 10),
            ("an overflow is capped at a day", &[("cache-control", "stale-while-revalidate=99999999999999999999")], 24 * 3600),
            ("must-revalidate forbids serving stale", &[("cache-control", "max-age=5, must-revalidate, stale-while-revalidate=30")], 0),
        ];
        for (why, pairs, seconds) in cases {
            let verdict = decide(
                PUBLIC,
                StatusCode::OK,
                &headers(pairs),
                &route,
                SystemTime::now(),
            )
            .unwrap_or_else(|reason| panic!("{why}: refused as {reason:?}"));
            assert_eq!(
                verdict.freshness.revalidate_for,
                Duration::from_secs(seconds),
                "{why}"
            );
        }
    }

    #[test]
    fn a_conditional_request_matching_the_stored_validators_is_not_modified() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 29 Nov 2026 10:00:00 GMT"),
        ]);
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a str);
        let cases: &[Case] = &[
            (&[("if-none-match", "\"v1\"")], true, "the same tag"),
            (&[("if-none-match", "W/\"v1\"")], true, "weak comparison"),
            (
                &[("if-none-match", "\"v0\", \"v1\"")],
                true,
                "one of a list",
            ),
            (&[("if-none-match", "*")], true, "any current answer"),
            (&[("if-none-match", "\"v2\"")], false, "another tag"),
            (
                &[("if-none-match", "v1")],
                false,
                "an unquoted tag is unreadable",
            ),
            (
                &[
                    ("if-none-match", "\"v2\""),
                    ("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT"),
                ],
                false,
                "If-None-Match wins over If-Modified-Since",
            ),
            (
                &[("if-modified-since", "Sun, 29 Nov 2026 10:00:00 GMT")],
                true,
                "not since",
            ),
            (
                &[("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT")],
                true,
                "later",
            ),
            (
                &[("if-modified-since", "Sat, 28 Nov 2026 10:00:00 GMT")],
                false,
                "modified since",
            ),
            (
                &[("if-modified-since", "yesterday")],
                false,
                "an unreadable date",
            ),
            (&[], false, "no condition"),
        ];
        for (request, expected, why) in cases {
            assert_eq!(not_modified(&headers(request), &stored), *expected, "{why}");
        }
        let bare = headers(&[]);
        assert!(
            !not_modified(&headers(&[("if-none-match", "\"v1\"")]), &bare),
            "no stored ETag, no 304"
        );
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT")]),
            &bare
        ));
    }
}
