//! The fixed upstream of the benchmarks: a bare tokio + hyper HTTP/1.1 server with keep-alive,
//! doing as little as a server can, so that what the scenarios measure is the proxy in front.
//!
//! `GET /small` → a small JSON body, `GET /large` → 64 KiB, `GET /healthz` → 200, and
//! `GET /internal/token-cutoffs` → none (the gateway's background poll); anything else → 404.
//! Runs until SIGINT or SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use bench_tools::bodies;

#[derive(Parser)]
#[command(about = "The fixed upstream of the gatehouse benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Runtime worker threads (the harness pins this so every scenario's upstream is the same).
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()
        .context("building the runtime")?
        .block_on(serve(args.listen))
}

async fn serve(address: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let large = bodies::large();
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    println!("bench-upstream listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors or a connection reset before accept: keep serving.
                Err(_) => continue,
            },
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        };
        // Small answers must not wait for Nagle; every proxy in front sets this too.
        let _ = stream.set_nodelay(true);
        let large = large.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, large.clone()));
            // A client closing its connection mid-request is normal at the end of a wrk run.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    large: Bytes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match request.uri().path() {
        "/small" => (StatusCode::OK, Bytes::from_static(bodies::SMALL)),
        "/large" => (StatusCode::OK, large),
        "/internal/token-cutoffs" => (StatusCode::OK, Bytes::from_static(bodies::NO_CUTOFFS)),
        "/healthz" => (StatusCode::OK, Bytes::from_static(b"{}")),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"{}")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
