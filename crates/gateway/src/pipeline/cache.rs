//! Cache: between authorize and forward. On a route with `cache:`, a GET or HEAD with a fresh
//! stored answer ends here (`Cache-Status: gatehouse; hit`); a miss joins the request already
//! at the service for its key, if any (coalescing), or goes there itself and its answer is
//! stored on the way back when RFC 9111 allows (see [`crate::cache`]). When the service fails
//! (5xx, or no answer) and an entry is still within its `stale_if_error` window, the entry
//! answers instead (`fwd=stale`), for the request that went and for those that waited on it.
//! Within its `stale-while-revalidate` window a stale entry answers at once and one request
//! refreshes it in the background. An unsafe request on a path a cached route serves
//! invalidates the path's entries, for every query and caller: before it is forwarded, and
//! again after a non-error answer (for a GET that filled the entry while the write was on its
//! way), with the paths its `Location` and `Content-Location` name on the same host.
//!
//! The client's own `Cache-Control` does not bypass the cache (`no-cache`, `max-age=0`): the
//! cache is the operator's, there to shield the services, and a directive any client can send
//! would let any client take that shield down. `no-store` is honoured (its answer is not
//! stored), as it costs the services nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::Method;
use kit::observe::{AccessRecord, Reason};
use kit::request_id;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::forward;
use super::observe::{self, ServiceLabels};
use crate::app::App;
use crate::auth::tokens::AccessClaims;
use crate::cache::flight::{Landing, Waiter};
use crate::cache::key::{self, Digest32};
use crate::cache::location;
use crate::cache::metrics::RefreshOutcome;
use crate::cache::policy::{self, Admitted, RequestTerms};
use crate::cache::record::{self, Pending};
use crate::cache::{CacheKey, Entry, Generation, Seat, Stored, CACHE_STATUS};
use crate::config::CacheRule;
use crate::error::GatewayError;
use crate::router::{Lookup, Route};
use crate::routing::Routing;

/// What the cache made of a request.
pub enum Consulted {
    /// Answered from the store.
    Answer(Response),
    /// Answered from the store with a stale entry (`stale-while-revalidate`), which this
    /// request is the one to refresh: [`refresh_in_background`] with the plan.
    Refresh(Response, Plan),
    /// To the service, with what to do with its answer.
    Forward(Plan),
}

pub enum Plan {
    /// Not the cache's business.
    Pass,
    /// An unsafe request on a path a cached route serves.
    Invalidate(Box<Invalidation>),
    /// A GET or HEAD the store could not answer.
    Fill(Box<Fill>),
}

/// The write whose successful answer invalidates its path again, and what it names.
pub struct Invalidation {
    path: Digest32,
    /// The request's path and the host it addressed, to resolve `Location` against.
    target: String,
    authority: Option<HeaderValue>,
}

pub struct Fill {
    key: CacheKey,
    rule: CacheRule,
    generation: Generation,
    terms: RequestTerms,
    /// The request's headers, for the answer's `Vary`.
    request: HeaderMap,
    /// An entry past its freshness that may stand in if the service fails.
    stale: Option<Arc<Entry>>,
    leader: Option<crate::cache::flight::Leader>,
    /// Whether the answer may be recorded (not for HEAD, nor when the client said `no-store`):
    /// for the store, and for the requests waiting on this one.
    store: bool,
    /// Whether the store can take it: not while Redis does not answer (the answer is then only
    /// handed to the requests waiting on this one, so an outage is no stampede).
    persist: bool,
    head: bool,
    /// RFC 9211's `fwd`: why the request went to the service.
    forwarded: &'static str,
    /// How long the answer's body is read apart from the client, for the waiters: as long as
    /// they wait.
    within: Duration,
    /// Told when the answer reaches the store (a background refresh's outcome).
    stored: Option<oneshot::Sender<()>>,
}

/// Looks `parts` up in the cache when its route has one: the stored answer, or the plan for
/// the service's.
pub async fn consult(
    app: &App,
    routing: &Routing,
    route: &Arc<Route>,
    parts: &Parts,
    host: Option<&HeaderValue>,
    caller: Option<&AccessClaims>,
) -> Consulted {
    let path = parts.uri.path();
    if !parts.method.is_safe() {
        if !cached_for_get(routing, path) {
            return Consulted::Forward(Plan::Pass);
        }
        let invalidation = Invalidation {
            path: key::path_key(path),
            target: path.to_owned(),
            authority: host.cloned(),
        };
        // Before the write reaches the service, and awaited before it is forwarded: a client
        // that hangs up while the service applies it (the request dropped, `settle` never
        // reached) cannot leave pre-write entries behind. Dropped here, nothing was forwarded.
        app.cache.invalidate(&app.shared, &invalidation.path).await;
        return Consulted::Forward(Plan::Invalidate(Box::new(invalidation)));
    }
    let Some(rule) = route.settings.cache else {
        return Consulted::Forward(Plan::Pass);
    };
    let head = parts.method == Method::HEAD;
    // Ranges are not assembled from stored answers: such a request is the service's.
    if !(parts.method == Method::GET || head) || parts.headers.contains_key(header::RANGE) {
        return Consulted::Forward(Plan::Pass);
    }
    let per_caller = route.settings.auth.needs_identity() && caller.is_some();
    let key = key::of(
        host.map(HeaderValue::as_bytes),
        route,
        path,
        parts.uri.query(),
        caller,
    );
    let found = app.cache.lookup(&app.shared, &key, &parts.headers).await;
    let mut forwarded = if found.vary_miss {
        "vary-miss"
    } else {
        "uri-miss"
    };
    let mut stale = None;
    let mut revalidate = false;
    if let Some(entry) = found.entry {
        let now = app.cache.clock.monotonic_ms();
        if entry.is_fresh(now) {
            app.observe.gateway.cache("hit");
            let status = format!("gatehouse; hit; ttl={}", entry.ttl_seconds(now).max(0));
            return Consulted::Answer(hit(&entry, &parts.headers, head, &status, now));
        }
        forwarded = "stale";
        revalidate = entry.may_revalidate(now);
        stale = Some(entry);
    }
    let terms = RequestTerms::of(&parts.headers, per_caller);
    let mut fill = Fill {
        key,
        rule,
        generation: found.generation,
        terms,
        request: HeaderMap::new(),
        stale,
        leader: None,
        store: !head && !terms.no_store,
        persist: !found.unavailable,
        head,
        forwarded,
        within: wait_bound(routing, route),
        stored: None,
    };
    if revalidate {
        return stale_while_revalidate(app, fill, found.flight, parts);
    }
    if !fill.store {
        // Its own answer is not recorded, but the one a request already at the service
        // fetches may serve it: it waits for that, and never leads.
        if let Some(waiter) = app.cache.flights.join(found.flight) {
            if let Some(answer) = wait_for_leader(app, waiter, &fill, &parts.headers).await {
                return Consulted::Answer(answer);
            }
        }
        app.observe.gateway.cache("miss");
        return Consulted::Forward(Plan::Fill(Box::new(fill)));
    }
    fill.request = parts.headers.clone();
    match app.cache.flights.board(found.flight) {
        Seat::Leader(leader) => {
            // Stored between the lookup and boarding: the leader before us has just landed.
            let again = app.cache.lookup(&app.shared, &key, &parts.headers).await;
            // A write may have moved the generation since the first look.
            fill.generation = again.generation;
            fill.persist = !again.unavailable;
            let now = app.cache.clock.monotonic_ms();
            if let Some(entry) = again.entry.filter(|e| e.is_fresh(now)) {
                leader.land(Arc::clone(&entry));
                app.observe.gateway.cache("hit");
                let status = format!("gatehouse; hit; ttl={}", entry.ttl_seconds(now).max(0));
                return Consulted::Answer(hit(&entry, &parts.headers, head, &status, now));
            }
            fill.leader = Some(leader);
        }
        Seat::Waiter(waiter) => {
            if let Some(answer) = wait_for_leader(app, waiter, &fill, &parts.headers).await {
                return Consulted::Answer(answer);
            }
        }
    }
    app.observe.gateway.cache("miss");
    Consulted::Forward(Plan::Fill(Box::new(fill)))
}

/// What a request waiting on the one at the service for its key is answered: that request's
/// entry when it matches, the stale entry `fill` holds when the service failed and it may
/// stand in; `None` to go to the service itself.
async fn wait_for_leader(
    app: &App,
    waiter: Waiter,
    fill: &Fill,
    request: &HeaderMap,
) -> Option<Response> {
    let landing = waiter.wait(fill.within).await;
    let now = app.cache.clock.monotonic_ms();
    match landing {
        Landing::Stored(entry) if entry.matches(request) => {
            app.observe.gateway.cache("collapsed");
            let status = format!("gatehouse; fwd={}; collapsed", fill.forwarded);
            Some(serve(&entry, fill.head, &status, now))
        }
        Landing::Failed(failure) => {
            let stale = fill
                .stale
                .as_ref()
                .filter(|stale| stale.may_stand_in(now))?;
            Some(stale_for_failure(
                app,
                stale,
                fill.head,
                &failure,
                "; collapsed",
            ))
        }
        Landing::Stored(_) | Landing::InFlight | Landing::Abandoned => None,
    }
}

/// RFC 5861: the stale entry `fill` holds answers at once; the first request to find it so
/// refreshes it in the background, the others find that refresh in flight and only answer.
fn stale_while_revalidate(app: &App, mut fill: Fill, flight: Digest32, parts: &Parts) -> Consulted {
    let Some(stale) = fill.stale.clone() else {
        return Consulted::Forward(Plan::Fill(Box::new(fill)));
    };
    // RFC 9211: the answer came from the cache without going forward (`hit`), stale (a
    // negative `ttl`); the refresh is this cache's own request, not this answer's.
    let now = app.cache.clock.monotonic_ms();
    let status = format!(
        "gatehouse; hit; ttl={}; detail=stale-while-revalidate",
        stale.ttl_seconds(now)
    );
    let answer = hit(&stale, &parts.headers, fill.head, &status, now);
    app.observe.gateway.cache("stale_while_revalidate");
    let Seat::Leader(leader) = app.cache.flights.board(flight) else {
        return Consulted::Answer(answer);
    };
    // The refresh is a GET of its own, recorded whatever this request was (a HEAD, a client's
    // `no-store`): it is the gateway's request.
    fill.leader = Some(leader);
    fill.head = false;
    fill.store = true;
    fill.terms.no_store = false;
    fill.request = refresh_headers(&parts.headers);
    Consulted::Refresh(answer, Plan::Fill(Box::new(fill)))
}

/// The request's headers for a refresh: without its conditions (the refresh wants the whole
/// answer, not a 304 for the client's copy) or its own `Cache-Control`.
fn refresh_headers(request: &HeaderMap) -> HeaderMap {
    let mut headers = request.clone();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::CACHE_CONTROL,
        header::PRAGMA,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    headers
}

/// Where a background refresh goes: where the request that found the entry stale went.
pub struct Refresh {
    pub route: Arc<Route>,
    pub target: String,
    pub host: Option<HeaderValue>,
    pub client_ip: IpAddr,
    pub caller: Option<Arc<AccessClaims>>,
}

/// Sends the refresh `plan` was made for (see [`Consulted::Refresh`]) to the service in a task
/// of its own, and stores its answer as any fill's. Its failure is no one's: the stale entry
/// keeps answering until its windows end. How it ended is counted
/// (`gatehouse_cache_refreshes_total`) and logged on an access-log line of its own, once the
/// answer is stored or known not to be.
pub fn refresh_in_background(
    app: &App,
    routing: Arc<Routing>,
    parts: &Parts,
    refresh: Refresh,
    mut plan: Plan,
) {
    let Plan::Fill(fill) = &mut plan else {
        return;
    };
    let (stored, recorded) = oneshot::channel();
    fill.stored = Some(stored);
    let (mut outbound, ()) = http::Request::new(()).into_parts();
    outbound.method = Method::GET;
    outbound.uri = parts.uri.clone();
    outbound.version = parts.version;
    outbound.headers = fill.request.clone();
    // The request that found the entry stale: the service logs the refresh under its id too.
    let request_id = fill
        .request
        .get(request_id::HEADER)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // The trace the request continued, when its client sent one (a trace the gateway started
    // for it is not in these headers: the refresh's line then has none).
    let trace_id = kit::trace::context::Parent::from_headers(&fill.request).map(|p| p.trace_id);
    let app = Arc::clone(app);
    tokio::spawn(async move {
        let started = Instant::now();
        let route = Arc::clone(&refresh.route);
        let principal = refresh.caller.as_ref().map(|caller| caller.sub.clone());
        let request = forward::Forwardable {
            route: &refresh.route,
            target: refresh.target,
            parts: outbound,
            body: Body::empty(),
            host: refresh.host,
            client_ip: refresh.client_ip,
            caller: refresh.caller,
        };
        let mut attempted = crate::proxy::forward::Attempted::default();
        let answer = forward::to_service(&app, &routing, request, &mut attempted).await;
        let status = match &answer {
            Ok(response) => response.status(),
            Err(error) => error.status(),
        };
        // The answer's body is recorded by a task of its own (`cache::record`): nothing
        // reads the copy meant for a client.
        drop(settle(&app, plan, answer).await);
        let outcome = if status.is_server_error() {
            RefreshOutcome::Failed
        } else if recorded.await.is_ok() {
            RefreshOutcome::Refreshed
        } else {
            RefreshOutcome::NotStorable
        };
        app.cache.metrics.refresh(outcome);
        if let Some(upstream) = attempted.upstream {
            let service = Arc::clone(&route.service);
            app.observe
                .gateway
                .upstream_duration
                .get_or_create(&ServiceLabels { service })
                .observe(upstream.as_secs_f64());
        }
        // No client's line: no path, no query, no header value (see `kit::observe::access_log`).
        app.observe.access_log.record(AccessRecord {
            request_id,
            trace_id,
            server: observe::SERVER,
            route: Some(Arc::clone(&route.template)),
            method: Method::GET,
            status: status.as_u16(),
            reason: Some(BACKGROUND_REFRESH),
            principal,
            instance: attempted.instance,
            duration: started.elapsed(),
            upstream_duration: attempted.upstream,
            bytes_in: 0,
            bytes_out: 0,
        });
    });
}

/// The `reason` of a background refresh's access-log line: no client asked for it.
pub const BACKGROUND_REFRESH: &str = "background_refresh";

/// The service's answer (or failure) to a request `plan` was made for, as the client gets it.
pub async fn settle(
    app: &App,
    plan: Plan,
    answer: Result<Response, GatewayError>,
) -> Result<Response, GatewayError> {
    let fill = match plan {
        Plan::Pass => return answer,
        Plan::Invalidate(invalidation) => {
            // Again after a success (RFC 9111 §4.4: a non-error status), for a GET that filled
            // the entry from the service while the write was on its way. Not after an error: the
            // invalidation before forwarding covers a write that may have been applied, and a
            // second one would let anyone flush a public path by provoking errors.
            if let Some(response) = answer
                .as_ref()
                .ok()
                .filter(|r| r.status().is_success() || r.status().is_redirection())
            {
                invalidate_after(app, &invalidation, response.headers()).await;
            }
            return answer;
        }
        Plan::Fill(fill) => *fill,
    };
    let mut fill = fill;
    let failed: Option<Arc<str>> = match &answer {
        Ok(response) => response
            .status()
            .is_server_error()
            .then(|| format!("fwd-status={}", response.status().as_u16()).into()),
        Err(error) => Some(format!("detail={}", error.reason()).into()),
    };
    if let Some(failure) = failed {
        // The waiters learn how it failed: those holding a stale entry answer with it.
        if let Some(leader) = fill.leader.take() {
            leader.fail(Arc::clone(&failure));
        }
        let now = app.cache.clock.monotonic_ms();
        if let Some(stale) = fill.stale.as_ref().filter(|stale| stale.may_stand_in(now)) {
            return Ok(stale_for_failure(app, stale, fill.head, &failure, ""));
        }
    }
    let response = answer?;
    Ok(admit(app, fill, response))
}

/// A stale `entry` standing in for a service that failed as `failure` says; `collapsed` when
/// the request waited on another that went to the service.
fn stale_for_failure(
    app: &App,
    entry: &Entry,
    head: bool,
    failure: &str,
    collapsed: &str,
) -> Response {
    app.observe.gateway.cache("stale_served");
    let now = app.cache.clock.monotonic_ms();
    let status = format!(
        "gatehouse; fwd=stale; {failure}; ttl={}{collapsed}",
        entry.ttl_seconds(now)
    );
    let mut response = serve(entry, head, &status, now);
    response.extensions_mut().insert(Reason("served_stale"));
    response
}

/// After a write's successful answer: its path once more, and the paths its `Location` and
/// `Content-Location` name on the host it addressed, where a cached route serves them.
async fn invalidate_after(app: &App, invalidation: &Invalidation, answer: &HeaderMap) {
    app.cache.invalidate(&app.shared, &invalidation.path).await;
    let authority = invalidation.authority.as_ref().map(HeaderValue::as_bytes);
    let named = location::named_paths(authority, &invalidation.target, answer);
    if named.is_empty() {
        return;
    }
    let routing = app.routing();
    for path in named.iter().filter(|path| cached_for_get(&routing, path)) {
        app.cache
            .invalidate(&app.shared, &key::path_key(path))
            .await;
    }
}

/// The service's answer, stored on its way to the client when it may be.
fn admit(app: &App, fill: Fill, mut response: Response) -> Response {
    let forwarded = fill.forwarded;
    let within = fill.within;
    let verdict = if fill.store {
        decide(&fill, &response, app.cache.clock.unix_ms())
    } else {
        Err("not-stored")
    };
    let status = match verdict {
        Ok(Admitted { freshness, vary }) => {
            let mut headers = response.headers().clone();
            headers.remove(header::AGE);
            let entry = Entry {
                status: response.status(),
                headers,
                body: bytes::Bytes::new(),
                variant: vary.variant(&fill.request),
                vary,
                generation: fill.generation,
                freshness,
                stored: Stored::default(),
            };
            let pending = Pending {
                app: Arc::clone(app),
                key: fill.key,
                entry,
                max_body: fill.rule.max_body_bytes,
                leader: fill.leader,
                persist: fill.persist,
                budget: app.cache.recording.clone(),
                stored: fill.stored,
            };
            response = response.map(|body| record::relay(body, pending, within));
            // Counted `stored` once the body is complete and in the store (`cache::record`).
            if fill.persist {
                format!("gatehouse; fwd={forwarded}; stored")
            } else {
                format!("gatehouse; fwd={forwarded}; detail=not-stored")
            }
        }
        Err(detail) => {
            if detail == TOO_LARGE {
                app.observe.gateway.cache("too_large");
            }
            format!("gatehouse; fwd={forwarded}; detail={detail}")
        }
    };
    append_status(response.headers_mut(), &status);
    response
}

/// RFC 9211 `detail` of an answer whose declared length is over the route's `max_body`.
const TOO_LARGE: &str = "too-large";

/// Whether `response` may be stored under `fill`, with its freshness and `Vary` names, its
/// `Expires` and `Date` read against `unix_ms` (the app's wall clock).
fn decide(fill: &Fill, response: &Response, unix_ms: u64) -> Result<Admitted, &'static str> {
    let headers = response.headers();
    // An event stream has no end to store, and requests collapsed onto it would wait for one:
    // it goes through, and the requests waiting on it go to the service themselves.
    if is_event_stream(headers) {
        return Err("event-stream");
    }
    let admitted = policy::decide(
        fill.terms,
        response.status(),
        headers,
        &fill.rule,
        UNIX_EPOCH + Duration::from_millis(unix_ms),
    )
    .map_err(|reason| reason.as_str())?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > fill.rule.max_body_bytes) {
        return Err(TOO_LARGE);
    }
    Ok(admitted)
}

/// Whether the answer is server-sent events (`text/event-stream`, WHATWG HTML §9.2).
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// `entry` as an answer at `now` (the app's clock): its headers with `Age` and `Cache-Status`;
/// no body for HEAD.
fn serve(entry: &Entry, head: bool, status: &str, now: u64) -> Response {
    let body = if head {
        Body::empty()
    } else {
        Body::from(entry.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = entry.status;
    *response.headers_mut() = entry.headers.clone();
    response
        .headers_mut()
        .insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
    append_status(response.headers_mut(), status);
    response
}

/// `entry` as the answer to `request` without going to the service (fresh, or stale while it
/// is refreshed) at `now`: 304 when the client's copy is current.
fn hit(entry: &Entry, request: &HeaderMap, head: bool, status: &str, now: u64) -> Response {
    if entry.status != http::StatusCode::OK || !policy::not_modified(request, &entry.headers) {
        return serve(entry, head, status, now);
    }
    // RFC 9110 §15.4.5: the headers a 200 would carry that describe the representation's
    // identity and caching, and no content.
    let mut response = Response::new(Body::empty());
    *response.status_mut() = http::StatusCode::NOT_MODIFIED;
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::VARY,
    ] {
        for value in entry.headers.get_all(&name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
        .headers_mut()
        .insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
    append_status(response.headers_mut(), status);
    response
}

/// RFC 9211: each cache adds its member after those of the caches nearer the service.
fn append_status(headers: &mut HeaderMap, status: &str) {
    if let Ok(value) = HeaderValue::from_str(status) {
        headers.append(CACHE_STATUS.clone(), value);
    }
}

/// Whether some route caches GET answers of `path` (an unsafe request on it then invalidates).
fn cached_for_get(routing: &Routing, path: &str) -> bool {
    matches!(
        routing.table.lookup(&Method::GET, path),
        Lookup::Found { route, .. } if route.settings.cache.is_some()
    )
}

/// How long a waiter waits for its leader: as long as the leader may wait for the service.
fn wait_bound(routing: &Routing, route: &Route) -> Duration {
    route.settings.timeout.unwrap_or_else(|| {
        routing
            .config
            .services
            .get(&route.settings.service)
            .map_or(Duration::from_secs(30), |service| service.timeout)
    })
}
