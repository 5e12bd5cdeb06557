//! The listener every gatehouse server runs on (the gateway's public and admin listeners, and each
//! service's): serving HTTP connections until shutdown, then draining them so that no accepted
//! request is lost: stop accepting, take in the connections the kernel had already completed,
//! give a fresh connection a moment to send its first request, let every connection finish the
//! request it has (keep-alive off, idle connections closed), and at the deadline close what is
//! left.
//!
//! axum's own `serve` cancels a connection whose first bytes have not been read when shutdown
//! begins, and waits for stragglers without a deadline; hence this loop.
//!
//! While serving, silent connections cannot pile up: a connection must send a request's headers
//! within `limits.header_read_timeout` of its accept, and of the end of its previous exchange
//! when it is kept alive (a connection that stays silent is closed, and so is one that trickles
//! its headers: only a request whose headers are complete counts). hyper's own header timeout is
//! not used: it would start the same deadline again per request, with a boxed timer armed and
//! disarmed on the timer wheel each time (~1,200 instructions a request, docs/BENCHMARKS.md),
//! and this deadline already covers it. One client
//! address holds at most `limits.max_connections_per_ip` connections (IPv6 by /64; an upgraded
//! connection, a WebSocket, counts until its socket closes): the excess
//! is closed at accept, before a byte is read, so one address cannot crowd out the others; and at
//! most `limits.max_connections` are served at once.
//!
//! Nor can a client that stops reading hold an answer open: a connection whose socket stays
//! full (the server has bytes to write and the client takes none) for `limits.send_timeout` is
//! dropped, and with it the answer's body (for the gateway: its upstream connection and the
//! instance's count of requests in flight). Only a blocked write counts: a streamed answer whose
//! source is merely quiet is the handler's business, and a slow reader that takes some bytes is
//! served.
//!
//! On a TLS listener the same holds, handshake included: the handshake must finish within
//! `limits.header_read_timeout` of accept (a client that opens a connection and never completes
//! its hello is closed, and held its address's slot meanwhile); the send timeout watches the
//! socket under TLS; each request carries the session's [`TlsSession`] (the verified client
//! certificate, if any) in its extensions.
//!
//! The handler is generic ([`Handler`]), not boxed: the gateway's request path is served as a
//! plain hyper service, with nothing added per request but the bookkeeping below.
//!
//! [`serve`] runs one accept loop on the caller's runtime (the services, the admin listeners);
//! [`serve_on_workers`] hands each connection it accepts to the least busy of the
//! [`crate::workers`] (the gateway's public listener), which serves it start to finish.

use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::shutdown::Shutdown;
use crate::tls::{Acceptor, TlsSession};

/// The connection limits of a listener; a server reads them at each accept, so a reload can
/// change them. The defaults are the gateway's and every service's unless configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept (or the end of the previous request on a keep-alive connection) until a
    /// request's headers are complete; past it the connection is closed.
    pub header_read_timeout: Duration,
    /// How long a connection may stay unable to write its answer to a client that does not read
    /// it; past it the connection is dropped, and the answer with it.
    pub send_timeout: Duration,
    /// Connections served at once; past it the listener stops accepting until one closes.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64); past it a new one is
    /// closed at accept.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            max_connections: 16_384,
            max_connections_per_ip: 512,
        }
    }
}

/// How long a connection closed for its silence may take to say goodbye (HTTP/2's GOAWAY).
const SILENT_GOODBYE: Duration = Duration::from_secs(1);
/// How long a connection accepted just before shutdown may take to send its first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// What the listener hands each request to, with the address of the client that sent it.
/// Each request gets its own clone of the handler (a few reference counts).
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(
        self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static;
}

/// An axum application (a service's, an admin listener's, a test's): it gets the client's
/// address as axum's `ConnectInfo`.
impl Handler for Router {
    fn handle(
        self,
        mut request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static {
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer = self.oneshot(request.map(Body::new));
        async move {
            match answer.await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains for at most `drain_timeout()`.
/// With `tls`, every connection is a TLS one (see the module docs for its handshake deadline).
/// `limits()` gives the connection limits in force (read at each accept: a reload changes them).
/// `open` counts the connections being served (a gauge of the caller's metrics, or a fresh one).
/// The handler is cloned per request; `serve` returns once every connection has ended.
pub async fn serve(
    listener: TcpListener,
    app: impl Handler,
    tls: Option<Acceptor>,
    shutdown: Shutdown,
    limits: impl Fn() -> Limits,
    drain_timeout: impl FnOnce() -> Duration,
    open: Gauge,
) -> std::io::Result<()> {
    accept_and_serve(
        listener,
        app,
        tls,
        shutdown,
        limits,
        drain_timeout,
        open,
        Place::Here,
    )
    .await
}

/// [`serve`], each connection served on one of the [`crate::workers`]: one accept loop (here,
/// on the caller's runtime: a connection is accepted once, then kept alive) hands every
/// connection it accepts to the worker serving the fewest, where it is served start to finish,
/// its socket registered with that worker's poller. The limits and the drain are the listener's
/// as a whole, exactly as [`serve`]'s.
///
/// Why not one accept loop per worker on the same socket: the first worker to wake takes the
/// whole burst (a client pool opening its connections at once), and the others sit idle.
pub async fn serve_on_workers(
    listener: TcpListener,
    app: impl Handler,
    tls: Option<Acceptor>,
    shutdown: Shutdown,
    limits: impl Fn() -> Limits,
    drain_timeout: impl FnOnce() -> Duration,
    open: Gauge,
) -> std::io::Result<()> {
    let place = Place::Workers(Arc::new(Workers::new(crate::workers::handles()?)));
    accept_and_serve(
        listener,
        app,
        tls,
        shutdown,
        limits,
        drain_timeout,
        open,
        place,
    )
    .await
}

/// Where accepted connections are served.
enum Place {
    /// On the accept loop's runtime.
    Here,
    /// On the least busy of the workers.
    Workers(Arc<Workers>),
}

/// The workers' runtimes and how many connections each serves now.
struct Workers {
    handles: &'static [tokio::runtime::Handle],
    serving: Box<[AtomicUsize]>,
}

impl Workers {
    fn new(handles: &'static [tokio::runtime::Handle]) -> Self {
        Self {
            handles,
            serving: handles.iter().map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The worker serving the fewest connections, counted as serving one more until the
    /// returned share is dropped (with the connection's task).
    fn least_busy(self: &Arc<Self>) -> Share {
        let index = (0..self.serving.len())
            .min_by_key(|&index| self.serving[index].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.serving[index].fetch_add(1, Ordering::Relaxed);
        Share {
            workers: Arc::clone(self),
            index,
        }
    }
}

/// One connection on a worker.
struct Share {
    workers: Arc<Workers>,
    index: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.workers.serving[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accept loop and the connections it accepted, served at `place`, until shutdown and
/// their drain.
#[allow(clippy::too_many_arguments)] // `serve`'s, and where
async fn accept_and_serve(
    listener: TcpListener,
    app: impl Handler,
    tls: Option<Acceptor>,
    shutdown: Shutdown,
    limits: impl Fn() -> Limits,
    drain_timeout: impl FnOnce() -> Duration,
    open: Gauge,
    place: Place,
) -> std::io::Result<()> {
    let clients = Arc::new(PerClient {
        by_address: Mutex::default(),
        open,
    });
    let (draining, drain_signal) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let limits = limits();
        tokio::select! {
            accepted = listener.accept(), if connections.len() < limits.max_connections => match accepted {
                Ok((stream, peer)) => {
                    // Over its address's share: closed before a byte is read.
                    if let Some(slot) = clients.take(peer.ip(), limits.max_connections_per_ip) {
                        spawn(&mut connections, &place, stream, peer, slot, &app, tls.as_ref(), &drain_signal, &limits);
                    }
                }
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
    let last = limits();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(true)?;
                let stream = TcpStream::from_std(stream)?;
                if let Some(slot) = clients.take(peer.ip(), last.max_connections_per_ip) {
                    spawn(
                        &mut connections,
                        &place,
                        stream,
                        peer,
                        slot,
                        &app,
                        tls.as_ref(),
                        &drain_signal,
                        &last,
                    );
                }
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

#[allow(clippy::too_many_arguments)] // one connection's whole context, passed once
fn spawn(
    connections: &mut JoinSet<()>,
    place: &Place,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ClientSlot,
    app: &impl Handler,
    tls: Option<&Acceptor>,
    drain_signal: &watch::Receiver<bool>,
    limits: &Limits,
) {
    let _ = stream.set_nodelay(true);
    let (app, tls, drain_signal, limits) =
        (app.clone(), tls.cloned(), drain_signal.clone(), *limits);
    let workers = match place {
        Place::Here => {
            connections.spawn(serve_accepted(
                stream,
                peer,
                slot,
                app,
                tls,
                drain_signal,
                limits,
            ));
            return;
        }
        Place::Workers(workers) => workers,
    };
    // Out of this runtime's poller and into the worker's, so that its readiness wakes the
    // worker directly.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => return tracing::debug!(%peer, %error, "connection lost at accept"),
    };
    let share = workers.least_busy();
    let worker = &workers.handles[share.index];
    connections.spawn_on(
        async move {
            let _share = share;
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    serve_accepted(stream, peer, slot, app, tls, drain_signal, limits).await;
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "a serving worker could not take a connection");
                }
            }
        },
        worker,
    );
}

/// Serves one accepted connection until it ends: its TLS handshake first, if any.
async fn serve_accepted(
    stream: TcpStream,
    peer: SocketAddr,
    slot: ClientSlot,
    app: impl Handler,
    tls: Option<Acceptor>,
    drain_signal: watch::Receiver<bool>,
    limits: Limits,
) {
    let activity = Arc::new(Activity::new());
    // The slot goes with the socket (a TLS stream wraps it, an upgrade takes it over), so the
    // address's count goes down when the socket closes, however it ends.
    let io = Watched {
        stream,
        activity: Arc::clone(&activity),
        _slot: slot,
    };
    let connection = Connection {
        app,
        peer,
        activity,
        drain_signal,
        header_read_timeout: limits.header_read_timeout,
        send_timeout: limits.send_timeout,
    };
    let Some(tls) = tls else {
        return connection.serve(io, None).await;
    };
    // The handshake shares the header deadline, counted from accept like the headers are:
    // a client that opens the connection and never finishes its hello is closed then.
    let handshake = tokio::time::timeout(connection.header_read_timeout, tls.accept(io));
    match handshake.await {
        Ok(Ok(stream)) => {
            let session = TlsSession::of(stream.get_ref().1);
            connection.serve(stream, Some(session)).await;
        }
        // Debug: any client can cause these at will, and the closed connection answers.
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time; closed"),
    }
}

/// One accepted connection, ready to be served once its transport is (TLS or not).
struct Connection<H> {
    app: H,
    peer: SocketAddr,
    activity: Arc<Activity>,
    drain_signal: watch::Receiver<bool>,
    header_read_timeout: Duration,
    send_timeout: Duration,
}

impl<H: Handler> Connection<H> {
    /// Serves HTTP/1.1 or HTTP/2 (hyper's `auto`: h2 by its preface, so ALPN's `h2` and h2c with
    /// prior knowledge alike) on `io` until the client closes, the connection falls silent or
    /// stops reading, or the drain closes it. On TLS, every request carries `session`.
    async fn serve<I>(self, io: I, session: Option<TlsSession>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            app,
            peer,
            activity,
            mut drain_signal,
            header_read_timeout,
            send_timeout,
        } = self;
        let spoken = Arc::new(AtomicBool::new(false));
        let first_request = Arc::new(Notify::new());
        let service = {
            let spoken = Arc::clone(&spoken);
            let first_request = Arc::clone(&first_request);
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                if !spoken.swap(true, Ordering::AcqRel) {
                    first_request.notify_one();
                }
                if let Some(session) = &session {
                    request.extensions_mut().insert(session.clone());
                }
                let answering = Answering::start(&activity);
                let response = app.clone().handle(request, peer);
                async move {
                    // Answered when the response's body has gone out, not when its headers are
                    // ready: a long download or stream is an exchange in progress, never silence.
                    let response = response.await;
                    Ok::<_, std::convert::Infallible>(response.map(|body| Answered {
                        body,
                        _answering: answering,
                    }))
                }
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // HTTP/1 gets no timer: the header deadline is `silent_for`'s below (module docs).
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(60));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        // Every wait below ends early when the client stops taking the answer: the connection
        // is dropped, the answer's body and upstream connection with it.
        let stuck = activity.stuck_writing_for(send_timeout);
        tokio::pin!(stuck);
        let silent = tokio::select! {
            result = connection.as_mut() => return finished(result),
            () = stuck.as_mut() => return not_reading(send_timeout),
            _ = drain_signal.wait_for(|draining| *draining) => false,
            () = activity.silent_for(header_read_timeout) => true,
        };
        if silent {
            // No request in time: close. Nothing is being answered (or it would not be silent),
            // so the goodbye gets a moment and no more: an HTTP/2 client that never acknowledges
            // the GOAWAY's ping would otherwise hold the connection until the keep-alive gives up.
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => finished(result),
                () = tokio::time::sleep(SILENT_GOODBYE) => {}
            }
            return;
        } else {
            if !spoken.load(Ordering::Acquire) {
                tokio::select! {
                    result = connection.as_mut() => return finished(result),
                    () = stuck.as_mut() => return not_reading(send_timeout),
                    () = first_request.notified() => {}
                    () = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
                }
            }
            connection.as_mut().graceful_shutdown();
        }
        tokio::select! {
            result = connection.as_mut() => finished(result),
            () = stuck.as_mut() => not_reading(send_timeout),
            // While draining too: a first request whose headers still trickle in when the drain
            // begins is not closed by the graceful shutdown (hyper finishes reading a head it
            // has started), so the header deadline ends it rather than the drain's.
            () = activity.silent_for(header_read_timeout) => {}
        }
    }
}

fn not_reading(send_timeout: Duration) {
    // Debug, not info: a client can cause it at will, and the closed connection is its answer.
    tracing::debug!(
        send_timeout_ms = u64::try_from(send_timeout.as_millis()).unwrap_or(u64::MAX),
        "connection dropped: the client stopped reading its answer"
    );
}

fn finished(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Open connections per client address. IPv6 addresses count by /64: one host commonly holds a
/// whole /64, and would otherwise have an unbounded number of addresses.
#[derive(Default)]
struct PerClient {
    by_address: Mutex<HashMap<IpAddr, usize>>,
    /// All of them: the caller's open-connections gauge.
    open: Gauge,
}

/// One connection counted for its client address, until dropped.
struct ClientSlot {
    clients: Arc<PerClient>,
    address: IpAddr,
}

impl PerClient {
    /// A slot for a connection from `ip`; `None` when the address already holds `cap`.
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<ClientSlot> {
        let address = client_address(ip);
        let mut open = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(address).or_insert(0);
        if *count >= cap {
            tracing::debug!(%address, open = *count, "connection refused: too many from this address");
            return None;
        }
        *count += 1;
        self.open.inc();
        Some(ClientSlot {
            clients: Arc::clone(self),
            address,
        })
    }

    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        let open = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.get(&client_address(ip)).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.open.dec();
        let mut open = self
            .clients
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// The address a connection counts for: IPv4 as is (also when mapped into IPv6), IPv6 by /64.
/// Rate limits `by: ip` count the same way.
pub fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// When a connection last moved bytes, how many of its requests are being answered, and since
/// when its writes have been blocked.
struct Activity {
    born: Instant,
    /// Milliseconds after `born` at which the last request was answered (0: none yet). Only
    /// exchanges count, not bytes: an HTTP/2 client sending nothing but pings, or an HTTP/1
    /// client trickling headers, is as silent as one that sends nothing.
    last_io_ms: AtomicU64,
    answering: AtomicUsize,
    /// One more than the milliseconds after `born` at which a write found the socket full and no
    /// write has succeeded since; 0 while writes go through.
    blocked_since: AtomicU64,
    /// Woken when a write first finds the socket full.
    blocked: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
            blocked_since: AtomicU64::new(0),
            blocked: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// After a write: a full socket starts the blocked clock (once), bytes written stop it.
    /// Costs one atomic load per write while nothing changes.
    fn wrote(&self, poll: &Poll<std::io::Result<usize>>) {
        match poll {
            Poll::Pending => {
                if self.blocked_since.load(Ordering::Relaxed) == 0 {
                    self.blocked_since
                        .store(self.now_ms().saturating_add(1), Ordering::Relaxed);
                    self.blocked.notify_one();
                }
            }
            Poll::Ready(Ok(n)) if *n > 0 => {
                if self.blocked_since.load(Ordering::Relaxed) != 0 {
                    self.blocked_since.store(0, Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => {}
        }
    }

    /// Resolves once a write has stayed blocked for `limit`: the client is not reading.
    async fn stuck_writing_for(&self, limit: Duration) {
        loop {
            let since = self.blocked_since.load(Ordering::Relaxed);
            if since == 0 {
                // A permit is kept if the write blocks between the load and this wait.
                self.blocked.notified().await;
                continue;
            }
            tokio::time::sleep_until(self.born + Duration::from_millis(since - 1) + limit).await;
            if self.blocked_since.load(Ordering::Relaxed) == since {
                return;
            }
        }
    }

    /// Resolves once no request is being answered and none has started for `limit`: from
    /// accept, or from the end of the last exchange.
    async fn silent_for(&self, limit: Duration) {
        loop {
            let wait = if self.answering.load(Ordering::Acquire) > 0 {
                limit
            } else {
                let last =
                    self.born + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
                let quiet = last.elapsed();
                if quiet >= limit {
                    return;
                }
                limit - quiet
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request being answered (from its headers to the response's); the connection is not silent.
struct Answering(Arc<Activity>);

impl Answering {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.answering.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.touch();
        self.0.answering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request [`Answering`] until it ends or is dropped.
struct Answered {
    body: Body,
    _answering: Answering,
}

impl http_body::Body for Answered {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A client's socket that notes when a write finds it full, for [`Activity::stuck_writing_for`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// Held as long as the socket is open, however it ends: the address's count goes down then.
    /// The socket, not the connection's task: an upgraded connection (a WebSocket) leaves the
    /// task with its socket and still counts against its address's cap.
    _slot: ClientSlot,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.activity.wrote(&poll);
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.activity.wrote(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_holds_at_most_its_share_and_a_closed_connection_frees_its_slot() {
        let clients = Arc::new(PerClient::default());
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let first = clients.take(one, 2).unwrap();
        let _second = clients.take(one, 2).unwrap();
        assert!(clients.take(one, 2).is_none(), "the third from one address");
        assert!(
            clients.take(other, 2).is_some(),
            "another address has its own share"
        );
        drop(first);
        assert_eq!(clients.open(one), 1);
        assert!(
            clients.take(one, 2).is_some(),
            "a slot freed by a closed connection"
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let clients = Arc::new(PerClient::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = clients.take(a, 1).unwrap();
        assert!(clients.take(b, 1).is_none(), "the same /64");
        assert!(clients.take(elsewhere, 1).is_some());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let _v4 = clients.take("127.0.0.1".parse().unwrap(), 1).unwrap();
        assert!(
            clients.take(mapped, 1).is_none(),
            "an IPv4-mapped address is that IPv4 address"
        );
    }
}
