//! The upstream side of a WebSocket (issue 16): the upgrade request on a connection of its own,
//! never one of the pool's (an upgraded connection stops being HTTP and never goes back), to an
//! instance picked like any request's, with the same failure mapping as [`super::forward`]: no
//! connection → 503, no answer in time → 504, an answer that is not HTTP → 502.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{header, Request, StatusCode};
use hyper::client::conn::http1;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use super::headers;
use super::instance::{InFlight, Outcome};
use super::pool::ExchangeError;
use super::upstream::Upstream;
use crate::error::{GatewayError, Unavailability};

/// What the instance made of the upgrade.
pub enum Opened {
    /// It switched protocols: its answer's head, and the connection, now a byte stream.
    Switched {
        head: http::response::Parts,
        io: TokioIo<Upgraded>,
        /// Keeps the socket counted on its instance (for `least_requests`) while it is open.
        flight: Option<InFlight>,
        instance: Arc<str>,
    },
    /// It answered something else (a refusal, a redirect…): the client gets that answer.
    Answered {
        response: Response,
        instance: Arc<str>,
    },
}

/// Sends `request` (an upgrade, its headers ready) to an instance of `upstream`, waiting at most
/// `timeout` for the answer. Never retried: an upgrade is a GET, but a second socket opened for
/// a client that got none is one the instance did not ask for.
pub async fn open(
    upstream: &Upstream,
    mut request: Request<Body>,
    timeout: Duration,
) -> Result<Opened, GatewayError> {
    let pick = upstream.pick(&[])?;
    let (Some(instance), Some(pool)) = (
        pick.instance().map(|i| Arc::clone(&i.name)),
        upstream.pool(pick.index),
    ) else {
        return Err(GatewayError::Internal(anyhow::anyhow!(
            "a pick without instance"
        )));
    };
    if let Some(host) = upstream.host_header(pick.index) {
        request.headers_mut().insert(header::HOST, host.clone());
    }
    let exchange = async {
        let stream = pool.open_upgrade_stream().await?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ExchangeError::Http)?;
        tokio::spawn(async move {
            // Runs until the answer is read, or for as long as the upgraded socket is open.
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream WebSocket connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(ExchangeError::Http)
    };
    let failed = |outcome: &'static str, error: GatewayError| {
        tracing::warn!(service = %upstream.name, %instance, reason = outcome, "WebSocket upgrade failed");
        error
    };
    let mut response = match tokio::time::timeout(timeout, exchange).await {
        Err(_) | Ok(Err(ExchangeError::TimedOut)) => {
            pick.report(Outcome::Failure("timeout"));
            return Err(failed(
                "timeout",
                GatewayError::Timeout {
                    service: upstream.name.to_string(),
                },
            ));
        }
        Ok(Err(ExchangeError::Connect(error))) => {
            pick.report(Outcome::Failure("connection failed"));
            tracing::debug!(%error, "no connection for a WebSocket");
            return Err(failed(
                "connection failed",
                GatewayError::Unavailable {
                    service: upstream.name.to_string(),
                    retry_after: Duration::from_secs(1),
                    why: Unavailability::Unreachable,
                },
            ));
        }
        Ok(Err(ExchangeError::Tls(error))) => {
            pick.report(Outcome::Failure("tls"));
            tracing::warn!(%error, "the instance's TLS handshake failed for a WebSocket");
            return Err(failed(
                "tls",
                GatewayError::UpstreamTls {
                    service: upstream.name.to_string(),
                },
            ));
        }
        Ok(Err(ExchangeError::Http(error))) => {
            pick.report(Outcome::Failure("broken answer"));
            tracing::debug!(%error, "a broken answer to a WebSocket upgrade");
            return Err(failed(
                "broken answer",
                GatewayError::BadGateway {
                    service: upstream.name.to_string(),
                },
            ));
        }
        Ok(Ok(response)) => response,
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let outcome = if response.status().is_server_error() {
            Outcome::Failure("5xx answer")
        } else {
            Outcome::Success
        };
        pick.report(outcome);
        headers::sanitize_response(response.headers_mut());
        return Ok(Opened::Answered {
            response: response.map(Body::new),
            instance,
        });
    }
    // Only a switch to WebSocket is spliced: anything else on the other end would be a
    // protocol the client did not ask for.
    let to_websocket = response
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"));
    if !to_websocket {
        pick.report(Outcome::Failure("broken answer"));
        return Err(failed(
            "switched to another protocol",
            GatewayError::BadGateway {
                service: upstream.name.to_string(),
            },
        ));
    }
    let upgraded = match tokio::time::timeout(timeout, hyper::upgrade::on(&mut response)).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(_)) | Err(_) => {
            pick.report(Outcome::Failure("broken answer"));
            return Err(failed(
                "upgrade not completed",
                GatewayError::BadGateway {
                    service: upstream.name.to_string(),
                },
            ));
        }
    };
    let flight = pick.report(Outcome::Success);
    let (head, _empty) = response.into_parts();
    Ok(Opened::Switched {
        head,
        io: TokioIo::new(upgraded),
        flight,
        instance,
    })
}
