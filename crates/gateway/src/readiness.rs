//! `GET /readyz`: whether this replica can serve, for a load balancer or a Kubernetes readiness
//! probe to decide whether to send it traffic.
//!
//! Readiness is the gateway's own ability to serve: its configuration is loaded and its listener
//! is up (or nothing would answer here), and each named [`Check`] holds: the store answers, and
//! the required services have been seen healthy once since start. Upstream health alone is not
//! readiness: when a service goes down every replica sees it at once, and a readiness that
//! failed then would take every replica out of the load balancer together, turning one service's
//! outage into the whole gateway's. The routes of a service that is down already answer
//! honestly (503 at once, with `Retry-After`).
//!
//! The exception is start-up: a required service (the default) with health checks holds a new
//! replica back until one of its instances has passed a check, so a rollout does not send
//! traffic to a replica that has not yet reached its upstreams. Once seen, never again (across
//! reloads too); a service that a reload adds never holds readiness back, as the reload reaches
//! every replica at once. Upstream health stays in the answer's detail, per service.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::routing::Routing;

/// One named condition of readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ok,
    /// Serving, with less than it would like (the reason says what); still ready.
    Degraded(String),
    /// Cannot serve as it should (the reason says why): not ready.
    Failing(String),
}

impl Check {
    fn status(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded(_) => "degraded",
            Self::Failing(_) => "failing",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Self::Ok => None,
            Self::Degraded(reason) | Self::Failing(reason) => Some(reason),
        }
    }
}

/// The named checks, and whether the replica is ready (no check fails).
async fn checks(state: &App, routing: &Routing) -> ([(&'static str, Check); 4], bool) {
    // A new condition of readiness is one more line here.
    let checks = [
        ("shutdown", shutting_down(state)),
        ("store", store(state).await),
        ("state", shared_state(state)),
        ("services", services_seen_healthy(routing)),
    ];
    let ready = !checks
        .iter()
        .any(|(_, check)| matches!(check, Check::Failing(_)));
    (checks, ready)
}

fn status_of(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /readyz` on the public listener: 200 or 503, and nothing more. Which checks fail, which
/// services are down and how the configuration reloaded are for operators (the admin listener),
/// not for whoever can reach the public port.
pub async fn public(State(state): State<App>) -> Response {
    let (_, ready) = checks(&state, &state.routing()).await;
    let body = json!({ "status": if ready { "ready" } else { "not ready" } });
    (status_of(ready), Json(body)).into_response()
}

/// `GET /readyz` on the admin listener: 200 when no check fails, else 503; the body names each
/// check and tells every service's health and the configuration's reloads.
pub async fn detailed(State(state): State<App>) -> Response {
    let routing = state.routing();
    let (checks, ready) = checks(&state, &routing).await;

    let statuses: Map<String, Value> = checks
        .iter()
        .map(|(name, check)| ((*name).to_owned(), json!(check.status())))
        .collect();
    let reasons: Map<String, Value> = checks
        .iter()
        .filter_map(|(name, check)| Some(((*name).to_owned(), json!(check.reason()?))))
        .collect();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": statuses,
        "reasons": reasons,
        "state": state.shared.health().as_str(),
        // What each replica's share of a throttle or rate limit is divided by while Redis is down.
        "replicas": state.shared.replicas(),
        "store_writes_pending": state.store.pending_writes(),
        "services": service_detail(&routing),
        "config": state.reloads.report(),
    });
    (status_of(ready), Json(body)).into_response()
}

/// From the shutdown signal on, not ready: during the configured `shutdown_delay` the listener
/// still serves, so a load balancer (or Kubernetes' endpoints) can stop sending new connections
/// before the gateway stops accepting them.
fn shutting_down(state: &App) -> Check {
    match state.serving.get() {
        Some(shutdown) if shutdown.is_triggered() => {
            Check::Failing("shutting down: draining the requests in flight".to_owned())
        }
        _ => Check::Ok,
    }
}

async fn store(state: &App) -> Check {
    match (state.store.database().readiness_check())().await {
        Ok(()) => Check::Ok,
        Err(error) => {
            tracing::warn!(%error, "readiness: the store does not answer");
            Check::Failing("the store does not answer".to_owned())
        }
    }
}

/// Redis down degrades (local throttle counters, revocations carried by the store) but does not
/// stop the gateway from serving: never a reason to take the replica out.
fn shared_state(state: &App) -> Check {
    match state.shared.health() {
        crate::state::StateHealth::Memory | crate::state::StateHealth::RedisUp => Check::Ok,
        crate::state::StateHealth::RedisDown => Check::Degraded(
            "Redis does not answer: throttle counters and rate limits are local (each replica at its share), revocations reach other replicas through the store".to_owned(),
        ),
    }
}

/// Whether a service that routes use and that is `required` is still awaited since start.
fn services_seen_healthy(routing: &Routing) -> Check {
    let routed = routing.config.routed_services();
    let awaited: Vec<&str> = routing
        .upstreams
        .iter()
        .filter(|(name, upstream)| {
            upstream.settings.required && routed.contains(name.as_str()) && !upstream.is_proven()
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if awaited.is_empty() {
        Check::Ok
    } else {
        Check::Failing(format!(
            "no healthy instance yet since start: {}",
            awaited.join(", ")
        ))
    }
}

/// Every service's health as the proxy sees it now: detail, not a condition of readiness.
fn service_detail(routing: &Routing) -> Map<String, Value> {
    let routed = routing.config.routed_services();
    routing
        .upstreams
        .iter()
        .map(|(name, upstream)| {
            let count = upstream.headcount();
            let required = upstream.settings.required && routed.contains(name.as_str());
            let detail = json!({
                "healthy": count.healthy,
                "instances": count.instances,
                "required": required,
                "seen_healthy": upstream.is_proven(),
            });
            (name.clone(), detail)
        })
        .collect()
}
