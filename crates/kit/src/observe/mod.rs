//! Watching the requests a server answers: Prometheus metrics and the access log.
//!
//! The gateway and every service built with the kit use the same metric names and the same
//! access-log line, so one scrape configuration and one log pipeline cover the fleet.
//!
//! # Layout
//! - [`metrics`]: [`Metrics`], one explicit registry, and the HTTP families with their labels.
//! - [`reason`]: [`Reason`], the response extension naming why a server answered as it did.
//! - [`access_log`]: [`AccessLog`], JSON lines written by a thread of their own; its target.
//! - [`body`]: [`Observed`], a body that reports its bytes and its end, to measure an answer
//!   when it has gone out.
//! - [`layer()`]: the tower layer a kit service records every request with.
//! - [`admin_router`]: `GET /metrics`, for a listener that is not the public one.
//! - [`sharded`]: the counter and histogram every request records into, one shard per serving
//!   worker, so the workers never write the same cache line.
//!
//! A server records an answer when its body ends (or the client goes away): `Metrics::http()`
//! counts it and observes its duration, and `AccessLog::record` queues its line.

pub mod access_log;
mod admin;
pub mod body;
mod layer;
pub mod metrics;
pub mod reason;
pub mod sharded;

pub use access_log::{AccessLog, AccessLogTarget, AccessRecord};
pub use admin::admin_router;
pub use body::Observed;
pub use layer::{layer, note_principal, ObserveLayer, ObserveService};
pub use metrics::{
    HttpMetrics, MethodLabel, Metrics, RequestLabels, RouteLabel, RouteLabels, RouteSeries,
    StatusClass, EXPOSITION_CONTENT_TYPE,
};
pub use reason::Reason;
