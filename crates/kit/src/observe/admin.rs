//! The admin listener's router: what operators and Prometheus read, kept off the public port.

use axum::http::header;
use axum::routing::get;
use axum::Router;

use super::metrics::{Metrics, EXPOSITION_CONTENT_TYPE};

/// `GET /metrics`: the exposition of `metrics`. The caller may merge more routes into it (the
/// gateway's detailed readiness) and give it a fallback.
pub fn admin_router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, EXPOSITION_CONTENT_TYPE)],
                    metrics.render(),
                )
            }
        }),
    )
}
