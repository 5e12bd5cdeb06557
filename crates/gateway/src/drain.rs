//! Serving HTTP connections until shutdown, then draining them so that no accepted request is
//! lost: stop accepting, take in the connections the kernel had already completed, give a fresh
//! connection a moment to send its first request, let every connection finish the request it
//! has (keep-alive off, idle connections closed), and at the deadline close what is left.
//!
//! axum's own `serve` cancels a connection whose first bytes have not been read when shutdown
//! begins, and waits for stragglers without a deadline; hence this loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use kit::shutdown::Shutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long a connection accepted just before shutdown may take to send its first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);
/// How long a client may take to send a request's headers: a slow trickle (slowloris) holds a
/// connection no longer than this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; past it the gateway stops accepting until one closes (the
/// kernel's backlog holds the rest), so a flood of idle connections cannot exhaust it.
const MAX_CONNECTIONS: usize = 16_384;

/// Serves `app` on `listener` until `shutdown`, then drains for at most `drain_timeout()`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: Shutdown,
    drain_timeout: impl FnOnce() -> Duration,
) -> std::io::Result<()> {
    let (draining, drain_signal) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, peer)) => spawn(&mut connections, stream, peer, &app, &drain_signal),
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::error!(%error, "cannot accept connections");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = shutdown.wait() => break,
        }
    }

    // Connections the kernel completed before the listener closes were accepted by us as far
    // as their clients can tell: take them in rather than resetting them.
    let listener = listener.into_std()?;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(true)?;
                spawn(
                    &mut connections,
                    TcpStream::from_std(stream)?,
                    peer,
                    &app,
                    &drain_signal,
                );
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot take in the last connections");
                break;
            }
        }
    }
    drop(listener);

    let deadline = drain_timeout();
    tracing::info!(
        connections = connections.len(),
        drain_timeout_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        "stopped accepting; finishing the requests in flight"
    );
    draining.send_replace(true);
    let drained = tokio::time::timeout(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "drain deadline passed; closing the connections still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn spawn(
    connections: &mut JoinSet<()>,
    stream: TcpStream,
    peer: SocketAddr,
    app: &Router,
    drain_signal: &watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let spoken = Arc::new(AtomicBool::new(false));
    let first_request = Arc::new(Notify::new());
    let service = {
        let app = app.clone();
        let spoken = Arc::clone(&spoken);
        let first_request = Arc::clone(&first_request);
        hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            if !spoken.swap(true, Ordering::AcqRel) {
                first_request.notify_one();
            }
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(Body::new))
        })
    };
    let mut drain_signal = drain_signal.clone();
    connections.spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(60));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => return finished(result),
            _ = drain_signal.wait_for(|draining| *draining) => {}
        }
        if !spoken.load(Ordering::Acquire) {
            tokio::select! {
                result = connection.as_mut() => return finished(result),
                () = first_request.notified() => {}
                () = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
            }
        }
        connection.as_mut().graceful_shutdown();
        finished(connection.await);
    });
}

fn finished(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Errors that concern one connection only, not the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
