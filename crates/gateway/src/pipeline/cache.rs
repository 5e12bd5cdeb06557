//! Cache: between authorize and forward. On a route with `cache:`, a GET or HEAD with a fresh
//! stored answer ends here (`Cache-Status: gatehouse; hit`); a miss joins the request already
//! at the service for its key, if any (coalescing), or goes there itself and its answer is
//! stored on the way back when RFC 9111 allows (see [`crate::cache`]). When the service fails
//! (5xx, or no answer) and an entry is still within its `stale_if_error` window, the entry
//! answers instead (`fwd=stale`). An unsafe request on a path a cached route serves invalidates
//! the path's entries, for every query and caller: before it is forwarded, and again after a
//! non-error answer (for a GET that filled the entry while the write was on its way).
//!
//! The client's own `Cache-Control` does not bypass the cache (`no-cache`, `max-age=0`): the
//! cache is the operator's, there to shield the services, and a directive any client can send
//! would let any client take that shield down. `no-store` is honoured (its answer is not
//! stored), as it costs the services nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Method;
use kit::observe::Reason;

use crate::app::App;
use crate::auth::tokens::AccessClaims;
use crate::cache::key::{self, Digest32};
use crate::cache::policy::{self, RequestTerms};
use crate::cache::record::{self, Pending};
use crate::cache::{CacheKey, Entry, Generation, Seat, CACHE_STATUS};
use crate::config::CacheRule;
use crate::error::GatewayError;
use crate::router::{Lookup, Route};
use crate::routing::Routing;

/// What the cache made of a request.
pub enum Consulted {
    /// Answered from the store.
    Answer(Response),
    /// To the service, with what to do with its answer.
    Forward(Plan),
}

pub enum Plan {
    /// Not the cache's business.
    Pass,
    /// An unsafe request on a path a cached route serves.
    Invalidate { path: Digest32 },
    /// A GET or HEAD the store could not answer.
    Fill(Box<Fill>),
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
        let path = key::path_key(path);
        // Before the write reaches the service, and awaited before it is forwarded: a client
        // that hangs up while the service applies it (the request dropped, `settle` never
        // reached) cannot leave pre-write entries behind. Dropped here, nothing was forwarded.
        app.cache.invalidate(&app.shared, &path).await;
        return Consulted::Forward(Plan::Invalidate { path });
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
    let found = app.cache.lookup(&app.shared, &key).await;
    let mut forwarded = "uri-miss";
    let mut stale = None;
    if let Some(entry) = found.entry {
        if !entry.matches(&parts.headers) {
            forwarded = "vary-miss";
        } else if entry.is_fresh() {
            app.observe.gateway.cache("hit");
            return Consulted::Answer(hit(&entry, &parts.headers, head));
        } else {
            forwarded = "stale";
            stale = Some(entry);
        }
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
    };
    if !fill.store {
        // Its own answer is not recorded, but the one a request already at the service
        // fetches may serve it: it waits for that, and never leads.
        if let Some(waiter) = app.cache.flights.join(key.entry) {
            if let Some(entry) = waiter
                .wait(fill.within)
                .await
                .filter(|e| e.matches(&parts.headers))
            {
                return Consulted::Answer(collapsed(app, &entry, head, forwarded));
            }
        }
        app.observe.gateway.cache("miss");
        return Consulted::Forward(Plan::Fill(Box::new(fill)));
    }
    fill.request = parts.headers.clone();
    match app.cache.flights.board(key.entry) {
        Seat::Leader(leader) => {
            // Stored between the lookup and boarding: the leader before us has just landed.
            let again = app.cache.lookup(&app.shared, &key).await;
            // A write may have moved the generation since the first look.
            fill.generation = again.generation;
            fill.persist = !again.unavailable;
            if let Some(entry) = again
                .entry
                .filter(|e| e.is_fresh() && e.matches(&parts.headers))
            {
                leader.land(Arc::clone(&entry));
                app.observe.gateway.cache("hit");
                return Consulted::Answer(hit(&entry, &parts.headers, head));
            }
            fill.leader = Some(leader);
        }
        Seat::Waiter(waiter) => {
            if let Some(entry) = waiter
                .wait(fill.within)
                .await
                .filter(|e| e.matches(&parts.headers))
            {
                return Consulted::Answer(collapsed(app, &entry, head, forwarded));
            }
        }
    }
    app.observe.gateway.cache("miss");
    Consulted::Forward(Plan::Fill(Box::new(fill)))
}

/// The service's answer (or failure) to a request `plan` was made for, as the client gets it.
pub async fn settle(
    app: &App,
    plan: Plan,
    answer: Result<Response, GatewayError>,
) -> Result<Response, GatewayError> {
    let fill = match plan {
        Plan::Pass => return answer,
        Plan::Invalidate { path } => {
            // Again after a success (RFC 9111 §4.4: a non-error status), for a GET that filled
            // the entry from the service while the write was on its way. Not after an error: the
            // invalidation before forwarding covers a write that may have been applied, and a
            // second one would let anyone flush a public path by provoking errors.
            let succeeded = answer.as_ref().is_ok_and(|response| {
                response.status().is_success() || response.status().is_redirection()
            });
            if succeeded {
                app.cache.invalidate(&app.shared, &path).await;
            }
            return answer;
        }
        Plan::Fill(fill) => *fill,
    };
    let failed = match &answer {
        Ok(response) => response
            .status()
            .is_server_error()
            .then(|| format!("fwd-status={}", response.status().as_u16())),
        Err(error) => Some(format!("detail={}", error.reason())),
    };
    if let (Some(failure), Some(stale)) = (&failed, &fill.stale) {
        if stale.may_stand_in() {
            app.observe.gateway.cache("stale_served");
            let status = format!(
                "gatehouse; fwd=stale; {failure}; ttl={}",
                stale.ttl_seconds()
            );
            let mut response = serve(stale, fill.head, &status);
            response.extensions_mut().insert(Reason("served_stale"));
            return Ok(response);
        }
    }
    let response = answer?;
    Ok(admit(app, fill, response))
}

/// The service's answer, stored on its way to the client when it may be.
fn admit(app: &App, fill: Fill, mut response: Response) -> Response {
    let forwarded = fill.forwarded;
    let within = fill.within;
    let verdict = if fill.store {
        decide(&fill, &response)
    } else {
        Err("not-stored")
    };
    let status = match verdict {
        Ok((freshness, vary)) => {
            let mut headers = response.headers().clone();
            headers.remove(header::AGE);
            let entry = Entry {
                status: response.status(),
                headers,
                body: bytes::Bytes::new(),
                vary,
                generation: fill.generation,
                freshness,
                stored_at: tokio::time::Instant::now(),
            };
            let pending = Pending {
                app: Arc::clone(app),
                key: fill.key,
                entry,
                max_body: fill.rule.max_body_bytes,
                leader: fill.leader,
                persist: fill.persist,
                budget: app.cache.recording.clone(),
            };
            response = response.map(|body| record::relay(body, pending, within));
            if fill.persist {
                app.observe.gateway.cache("stored");
                format!("gatehouse; fwd={forwarded}; stored")
            } else {
                format!("gatehouse; fwd={forwarded}; detail=not-stored")
            }
        }
        Err(detail) => format!("gatehouse; fwd={forwarded}; detail={detail}"),
    };
    append_status(response.headers_mut(), &status);
    response
}

type Admitted = (crate::cache::Freshness, Vec<(HeaderName, Option<Digest32>)>);

/// Whether `response` may be stored under `fill`, with its freshness and `Vary` values.
fn decide(fill: &Fill, response: &Response) -> Result<Admitted, &'static str> {
    let headers = response.headers();
    let freshness = policy::decide(
        fill.terms,
        response.status(),
        headers,
        &fill.rule,
        SystemTime::now(),
    )
    .map_err(|reason| reason.as_str())?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > fill.rule.max_body_bytes) {
        return Err("too-large");
    }
    let mut vary = Vec::new();
    for value in headers.get_all(header::VARY) {
        let text = value.to_str().map_err(|_| "vary-unreadable")?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| "vary-unreadable")?;
            let digest = crate::cache::vary_digest(&fill.request, &name);
            vary.push((name, digest));
        }
    }
    Ok((freshness, vary))
}

/// `entry` as an answer: its headers with `Age` and `Cache-Status`; no body for HEAD.
fn serve(entry: &Entry, head: bool, status: &str) -> Response {
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
        .insert(header::AGE, HeaderValue::from(entry.age().as_secs()));
    append_status(response.headers_mut(), status);
    response
}

/// `entry`, fetched by the request this one waited on.
fn collapsed(app: &App, entry: &Entry, head: bool, forwarded: &str) -> Response {
    app.observe.gateway.cache("collapsed");
    serve(
        entry,
        head,
        &format!("gatehouse; fwd={forwarded}; collapsed"),
    )
}

/// A fresh `entry` as the answer to `request`: 304 when the client's copy is current.
fn hit(entry: &Entry, request: &HeaderMap, head: bool) -> Response {
    let status = format!("gatehouse; hit; ttl={}", entry.ttl_seconds().max(0));
    if entry.status != http::StatusCode::OK || !policy::not_modified(request, &entry.headers) {
        return serve(entry, head, &status);
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
        .insert(header::AGE, HeaderValue::from(entry.age().as_secs()));
    append_status(response.headers_mut(), &status);
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
