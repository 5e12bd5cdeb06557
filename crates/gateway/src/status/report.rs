//! The document of `/status.json`: the fleet, the routes' last minute, the configuration and
//! the signing keys, read where each lives at the moment of the request.
//!
//! What it may hold is decided here, field by field: names from the configuration, states,
//! counts and times. Never a key's material, a token, a user or the raw path of a request (the
//! routes are their templates), so the document can be shown on a wall screen.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::auth::keys::{KeyInfo, KeyStatus};
use crate::clock::Clock;
use crate::proxy::instance::{BreakerState, Instance};
use crate::proxy::upstream::Upstreams;
use crate::reload::{LastReload, ReloadStatus};
use crate::router::{Route, RouteTable};
use crate::status::window::{Summary, SLOT_MS, WINDOW_SLOTS};

#[derive(Debug, Serialize)]
pub struct Report {
    /// When the document was made (RFC 3339).
    pub generated_at: String,
    /// The seconds the routes' numbers are over at most ("the last minute").
    pub window_seconds: u64,
    pub config: ConfigView,
    pub services: Vec<ServiceView>,
    pub routes: Vec<RouteView>,
    pub keys: KeysView,
}

#[derive(Debug, Serialize)]
pub struct ConfigView {
    /// 1 for the configuration the gateway started with, one more per applied reload.
    pub generation: u64,
    pub reloads_refused: u64,
    /// None before the first reload.
    pub last_reload: Option<ReloadView>,
    /// Settings changed in the file that wait for a restart.
    pub needs_restart: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ReloadView {
    pub at: String,
    /// `applied` or `refused`.
    pub outcome: &'static str,
    /// Why it was refused: the file, the field and the reason.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    /// Instances that may take requests now.
    pub available: usize,
    pub instances: Vec<InstanceView>,
}

#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// `host:port`, never the address's user info.
    pub instance: String,
    /// `healthy`, `ejected` (its breaker is open or half-open) or `unhealthy` (failing its
    /// active health checks).
    pub state: &'static str,
    /// When it entered `state` (RFC 3339).
    pub since: String,
    /// `closed`, `open` or `half-open`.
    pub breaker: &'static str,
    pub breaker_since: String,
    /// The active health checks' verdict (true without checks).
    pub healthy: bool,
    pub health_since: String,
    pub in_flight: usize,
}

#[derive(Debug, Serialize)]
pub struct RouteView {
    /// The public path template, as configured.
    pub template: String,
    pub methods: Vec<String>,
    /// The service it forwards to; None on a composition route.
    pub service: Option<String>,
    /// A composition's parts, in order; None on a plain route.
    pub composition: Option<Vec<PartView>>,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Answers 5xx, whoever made them.
    pub server_errors: u64,
    pub error_rate: f64,
    /// 4xx answers the gateway made itself (no token, forbidden, rate limited…).
    pub refused: u64,
    pub refusal_rate: f64,
    /// None without requests in the window.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub series: SeriesView,
}

#[derive(Debug, Serialize)]
pub struct PartView {
    pub name: String,
    pub service: String,
}

/// The sparkline: requests and 5xx per step, the oldest first.
#[derive(Debug, Serialize)]
pub struct SeriesView {
    pub step_seconds: u64,
    pub requests: Vec<u64>,
    pub server_errors: Vec<u64>,
}

/// The signing keys as last read from the store.
#[derive(Debug, Serialize)]
pub struct KeysView {
    /// When the list was read (RFC 3339); None if it never could be.
    pub read_at: Option<String>,
    /// Why the latest read failed, when it did (the list is then the last one read).
    pub error: Option<String>,
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub kid: String,
    pub algorithm: String,
    /// `active` (signs), `next` (published, signs from `signs_from`), `retiring` (verifies
    /// until `verifies_until`) or `retired`.
    pub state: &'static str,
    pub created_at: String,
    pub signs_from: Option<String>,
    pub verifies_until: Option<String>,
}

impl From<KeyInfo> for KeyView {
    fn from(info: KeyInfo) -> Self {
        let (state, signs_from, verifies_until) = match info.status {
            KeyStatus::Signing => ("active", None, None),
            KeyStatus::Pending { from } => ("next", Some(rfc3339(from)), None),
            KeyStatus::Verifying { until } => ("retiring", None, Some(rfc3339(until))),
            KeyStatus::Retired => ("retired", None, None),
        };
        Self {
            kid: info.kid,
            algorithm: info.algorithm,
            state,
            created_at: info.created_at,
            signs_from,
            verifies_until,
        }
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn rfc3339_ms(unix_ms: u64) -> String {
    let time = i64::try_from(unix_ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    rfc3339(time)
}

/// Turns instants of the monotonic clock into wall-clock times, as of one reading of both.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    pub unix_ms: u64,
    pub monotonic_ms: u64,
}

impl Clocks {
    /// Both readings of `clock` now: the app's, which the proxy's breakers read.
    pub fn of(clock: &Clock) -> Self {
        Self {
            unix_ms: clock.unix_ms(),
            monotonic_ms: clock.monotonic_ms(),
        }
    }

    fn wall(&self, monotonic_ms: u64) -> String {
        let ago = self.monotonic_ms.saturating_sub(monotonic_ms);
        rfc3339_ms(self.unix_ms.saturating_sub(ago))
    }
}

pub fn config(reloads: &ReloadStatus) -> ConfigView {
    ConfigView {
        generation: reloads.generation(),
        reloads_refused: reloads.refused(),
        last_reload: reloads.last().map(|last: LastReload| ReloadView {
            at: rfc3339_ms(last.at_unix_ms),
            outcome: if last.applied { "applied" } else { "refused" },
            error: last.error,
        }),
        needs_restart: reloads.needs_restart(),
    }
}

/// Every service, by name, each instance in its configured order.
pub fn services(upstreams: &Upstreams, clocks: Clocks) -> Vec<ServiceView> {
    let mut services: Vec<ServiceView> = upstreams
        .iter()
        .map(|(name, upstream)| ServiceView {
            name: name.clone(),
            available: upstream.headcount().healthy,
            instances: upstream
                .instances()
                .iter()
                .map(|instance| instance_view(instance, clocks))
                .collect(),
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    services
}

fn instance_view(instance: &Instance, clocks: Clocks) -> InstanceView {
    let (breaker, breaker_since) = instance.breaker(clocks.monotonic_ms);
    let healthy = instance.is_healthy();
    let health_since = instance.health_since();
    // Failing health checks take it out whatever the breaker says, so they name the state.
    let (state, since) = match (healthy, breaker) {
        (false, _) => ("unhealthy", health_since),
        (true, BreakerState::Closed) => ("healthy", breaker_since.max(health_since)),
        // Ejected since the breaker opened, not since its back-off ended.
        (true, BreakerState::Open | BreakerState::HalfOpen) => {
            ("ejected", instance.ejected_since().unwrap_or(breaker_since))
        }
    };
    InstanceView {
        instance: instance.name.to_string(),
        state,
        since: clocks.wall(since),
        breaker: breaker.as_str(),
        breaker_since: clocks.wall(breaker_since),
        healthy,
        health_since: clocks.wall(health_since),
        in_flight: instance.in_flight(),
    }
}

/// Every route of `table` with its last minute as of `now_ms` (the clock the observe phase
/// records with).
pub fn routes(table: &RouteTable, now_ms: u64) -> Vec<RouteView> {
    table
        .routes()
        .iter()
        .map(|route| route_view(route, &route.window.summary(now_ms)))
        .collect()
}

fn millis(duration: Duration) -> f64 {
    // Three decimals: microseconds are below what the buckets can tell apart.
    (duration.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

fn route_view(route: &Route, summary: &Summary) -> RouteView {
    let settings = &route.settings;
    let composition = settings.compose.as_ref().map(|plan| {
        plan.parts
            .iter()
            .map(|part| PartView {
                name: part.name.to_string(),
                service: part.service.to_string(),
            })
            .collect()
    });
    RouteView {
        template: route.template.to_string(),
        methods: settings.methods.iter().map(ToString::to_string).collect(),
        service: (composition.is_none() && !settings.service.is_empty())
            .then(|| settings.service.clone()),
        composition,
        requests: summary.requests,
        requests_per_second: summary.rate(),
        server_errors: summary.server_errors,
        error_rate: summary.error_rate(),
        refused: summary.refused,
        refusal_rate: summary.refusal_rate(),
        p50_ms: summary.p50.map(millis),
        p99_ms: summary.p99.map(millis),
        series: SeriesView {
            step_seconds: SLOT_MS / 1_000,
            requests: summary.series.iter().map(|point| point.requests).collect(),
            server_errors: summary.series.iter().map(|point| point.errors).collect(),
        },
    }
}

/// The window's length (s).
pub fn window_seconds() -> u64 {
    WINDOW_SLOTS * SLOT_MS / 1_000
}

pub fn now_rfc3339(unix_ms: u64) -> String {
    rfc3339_ms(unix_ms)
}
