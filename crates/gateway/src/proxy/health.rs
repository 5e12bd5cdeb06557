//! Active health checks: `GET path` on every instance of a service each `interval`. An instance
//! that fails `unhealthy` checks in a row gets no requests until it passes `healthy` in a row;
//! passing also ends a passive ejection, so a restarted instance rejoins without waiting out its
//! back-off. Services without `health` are judged by their traffic alone (the breaker).
//!
//! A check that gets no 2xx within its `timeout` fails, so a frozen instance (stopped, or
//! swapping) fails its checks as a dead one does. Once a healthy instance fails a check, the
//! next rounds come `interval / unhealthy` apart rather than `interval`: the failures in a row
//! that take it out then add up to about one interval, not `unhealthy` intervals.
//!
//! The first passing check of a service also tells readiness the service has been seen healthy
//! since the gateway started (see `crate::readiness`).

use std::sync::Arc;
use std::time::Duration;

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
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.wait() => break,
            }
            let Some(upstream) = service.upgrade() else {
                break;
            };
            if upstream.is_retired() {
                break;
            }
            let round = tokio::time::Instant::now();
            let suspect = check_all(&upstream, &health).await;
            pause = pause_after(&health, suspect, round.elapsed());
        }
    });
}

/// How long to wait after a round that took `took`: the next round starts `interval` after
/// this one started, or `interval / unhealthy` after while a failure is being confirmed (the
/// `unhealthy` failures in a row then add up to about one interval); a round that took longer
/// is followed at once.
fn pause_after(health: &HealthCheck, suspect: bool, took: Duration) -> Duration {
    let wait = if suspect {
        health.interval / health.unhealthy_threshold.max(1)
    } else {
        health.interval
    };
    wait.saturating_sub(took)
}

/// One round of checks on every instance at once; true when an instance in rotation failed its
/// check (a failure being confirmed).
async fn check_all(upstream: &Upstream, health: &HealthCheck) -> bool {
    let checks = upstream.instances().iter().map(|instance| async move {
        let passed = probe(upstream, instance, health).await;
        let now = upstream.now();
        let verdict = instance.record_check(
            now,
            passed,
            health.healthy_threshold,
            health.unhealthy_threshold,
        );
        if passed && instance.is_available(now) {
            upstream.seen_healthy();
        }
        match verdict {
            Some(true) => {
                tracing::info!(service = %upstream.name, instance = %instance.authority, "instance passes its health checks; back in rotation")
            }
            Some(false) => {
                tracing::warn!(service = %upstream.name, instance = %instance.authority, "instance fails its health checks; taken out of rotation")
            }
            None => {}
        }
        instance.failing_checks()
    });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .any(|suspect| suspect)
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
        let pool = upstream.pool_at(&instance.authority)?;
        let response = pool.send(request).await.ok()?;
        let passed = response.status().is_success();
        response.into_body().collect().await.ok()?;
        Some(passed)
    };
    matches!(
        tokio::time::timeout(health.timeout, check).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, BreakerSettings, RetrySettings, ServiceSettings};

    fn checks(interval: Duration, unhealthy_threshold: u32) -> HealthCheck {
        HealthCheck {
            path: "/healthz".to_owned(),
            interval,
            timeout: Duration::from_millis(100),
            healthy_threshold: 1,
            unhealthy_threshold,
        }
    }

    #[test]
    fn rounds_come_an_interval_apart_and_failures_are_confirmed_within_about_one() {
        let health = checks(Duration::from_secs(3), 3);
        let took = Duration::from_millis(100);
        assert_eq!(
            pause_after(&health, false, took),
            Duration::from_millis(2900),
            "the next round starts an interval after this one started"
        );
        assert_eq!(
            pause_after(&health, true, took),
            Duration::from_millis(900),
            "three checks to confirm a failure: a third of the interval apart"
        );
        assert_eq!(
            pause_after(&health, false, Duration::from_secs(4)),
            Duration::ZERO,
            "a round that took longer than the interval is followed at once"
        );
        assert_eq!(
            pause_after(&checks(Duration::from_secs(3), 0), true, took),
            Duration::from_millis(2900),
            "a threshold of 0 is read as 1, never a division by zero"
        );
    }

    /// A listener that accepts connections and never answers: a frozen instance.
    async fn frozen_instance() -> (tokio::net::TcpListener, http::Uri) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        (listener, uri)
    }

    #[tokio::test]
    async fn a_frozen_instance_fails_its_checks_and_is_taken_out_of_rotation() {
        let (listener, uri) = frozen_instance().await;
        // Keep the accepted connections open, unanswered.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let settings = ServiceSettings {
            upstreams: vec![uri],
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            balance: Balance::LeastRequests,
            health: Some(checks(Duration::from_millis(300), 3)),
            protocol: crate::config::UpstreamProtocol::Http1,
            tls: None,
            breaker: BreakerSettings {
                failures: 5,
                backoff: Duration::from_secs(10),
                max_backoff: Duration::from_secs(60),
                decay: None,
            },
            retries: RetrySettings {
                attempts: 2,
                budget_percent: 20,
            },
            required: true,
        };
        let upstream = Arc::new(Upstream::new("s", &settings, crate::clock::Clock::System));
        let shutdown = Shutdown::new();
        start(&upstream, &shutdown);

        kit::testing::wait_until("the frozen instance to be taken out", || async {
            upstream.headcount().healthy == 0
        })
        .await;
        assert!(!upstream.is_proven(), "it never passed a check");
        shutdown.trigger();
        held.abort();
    }
}
