//! Active health checks: `GET path` on every instance of a service each `interval`. An instance
//! that fails `unhealthy` checks in a row gets no requests until it passes `healthy` in a row;
//! passing also ends a passive ejection, so a restarted instance rejoins without waiting out its
//! back-off. Services without `health` are judged by their traffic alone (the breaker).

use std::sync::Arc;

use axum::body::Body;
use http::{header, HeaderValue, Request};
use http_body_util::BodyExt;
use kit::shutdown::Shutdown;

use super::instance::Instance;
use super::upstream::Upstream;
use crate::config::HealthCheck;

/// Starts the checks of `upstream` if it has any and they are not running yet. They stop at
/// `shutdown`, or once a reload retired the service.
pub fn start(upstream: &Arc<Upstream>, shutdown: &Shutdown) {
    let Some(health) = upstream.settings.health.clone() else {
        return;
    };
    if !upstream.claim_health_checks() {
        return;
    }
    let service = Arc::downgrade(upstream);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(health.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.wait() => break,
            }
            let Some(upstream) = service.upgrade() else {
                break;
            };
            if upstream.is_retired() {
                break;
            }
            check_all(&upstream, &health).await;
        }
    });
}

async fn check_all(upstream: &Upstream, health: &HealthCheck) {
    let checks = upstream.instances().iter().map(|instance| async move {
        let passed = probe(upstream, instance, health).await;
        match instance.record_check(passed, health.healthy_threshold, health.unhealthy_threshold)
        {
            Some(true) => {
                tracing::info!(service = %upstream.name, instance = %instance.authority, "instance passes its health checks; back in rotation")
            }
            Some(false) => {
                tracing::warn!(service = %upstream.name, instance = %instance.authority, "instance fails its health checks; taken out of rotation")
            }
            None => {}
        }
    });
    futures_util::future::join_all(checks).await;
}

/// One check: a 2xx, headers and body, within the timeout.
async fn probe(upstream: &Upstream, instance: &Instance, health: &HealthCheck) -> bool {
    let Ok(uri) = upstream.uri_on(&instance.authority, &health.path) else {
        return false;
    };
    let Ok(request) = Request::get(uri)
        .header(
            header::USER_AGENT,
            HeaderValue::from_static("gatehouse-health-check"),
        )
        .body(Body::empty())
    else {
        return false;
    };
    let check = async {
        let response = upstream.client.request(request).await.ok()?;
        let passed = response.status().is_success();
        response.into_body().collect().await.ok()?;
        Some(passed)
    };
    matches!(
        tokio::time::timeout(health.timeout, check).await,
        Ok(Some(true))
    )
}
