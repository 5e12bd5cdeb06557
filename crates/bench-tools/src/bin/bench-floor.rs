//! The floor of the gateway's stack: the least a reverse proxy built on tokio and hyper can do
//! per request, so the benchmarks can say what the gateway's own work costs above the crates it
//! is built on, and what no change inside the gateway can win back.
//!
//! Every request is forwarded as it came (method, path, headers, body) over a kept-alive HTTP/1
//! connection to `--upstream`, and the answer is passed back as it came: no routing, no header
//! rewriting, no limits, no log, no metrics. One single-threaded tokio runtime per core, each
//! with its own `SO_REUSEPORT` listener and its own idle upstream connections, so nothing is
//! shared between cores. Not a proxy anyone should deploy: it trusts every request.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
#[command(about = "A bare tokio + hyper reverse proxy: the floor under the gateway's numbers")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream every request goes to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Serving threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

type Answer = Response<BoxBody<Bytes, hyper::Error>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The first worker to stop (it could not listen, say) ends the process with its reason.
    let (ended, first_end) = std::sync::mpsc::channel();
    for _ in 0..workers.max(1) {
        let (listen, upstream, ended) = (args.listen, args.upstream, ended.clone());
        std::thread::spawn(move || {
            let _ = ended.send(worker(listen, upstream));
        });
    }
    println!("bench-floor listening on {}", args.listen);
    first_end
        .recv()
        .map_err(|_| anyhow::anyhow!("every worker is gone"))?
}

/// Idle upstream connections a worker keeps at most; more are closed as they come back.
const MAX_IDLE: usize = 256;

/// One core's share: its own listener on the shared port, its own upstream connections.
fn worker(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(1024)?;
        let idle: Rc<RefCell<Vec<SendRequest<Incoming>>>> = Rc::default();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors, say: a moment for connections to close, not a busy loop.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let idle = Rc::clone(&idle);
            tokio::task::spawn_local(async move {
                let service = service_fn(move |request| forward(request, upstream, idle.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The request to the upstream on an idle connection (a new one when none is ready), and the
/// connection back among the idle ones once it has sent the request.
async fn forward(
    request: Request<Incoming>,
    upstream: SocketAddr,
    idle: Rc<RefCell<Vec<SendRequest<Incoming>>>>,
) -> Result<Answer, Infallible> {
    let ready = {
        let mut idle = idle.borrow_mut();
        // Connections the upstream closed are dropped rather than scanned again and again.
        idle.retain(|sender| !sender.is_closed());
        let at = idle.iter().position(SendRequest::is_ready);
        at.map(|at| idle.swap_remove(at))
    };
    let mut sender = match ready {
        Some(sender) => sender,
        None => match connect(upstream).await {
            Ok(sender) => sender,
            Err(_) => return Ok(bad_gateway()),
        },
    };
    let answer = sender.send_request(request);
    // An HTTP/1 connection takes its next request once this answer's body is read; until then
    // `is_ready` says no and the next request opens another.
    {
        let mut kept = idle.borrow_mut();
        if kept.len() < MAX_IDLE {
            kept.push(sender);
        }
    }
    Ok(match answer.await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => bad_gateway(),
    })
}

async fn connect(upstream: SocketAddr) -> anyhow::Result<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(connection);
    Ok(sender)
}

fn bad_gateway() -> Answer {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
