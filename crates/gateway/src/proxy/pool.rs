//! The upstream client: for each instance, a pool of HTTP/1.1 connections on hyper's connection
//! API (`hyper::client::conn::http1`), or one shared HTTP/2 connection (`http2`), plain or TLS.
//!
//! hyper-util's general client did the same job with a boxed future, a lock on one pool for every
//! host, and a task spawned for every request to put the connection back once its answer was
//! read (about 8,400 instructions a request, docs/BENCHMARKS.md). Here each instance has its own
//! short list of idle connections; a connection's task is spawned once, when it is opened, and a
//! connection goes back to the list in the same poll that reads the last byte of its answer.
//!
//! - **One request per connection at a time.** HTTP/1.1 pipelining is not used (few servers
//!   handle it well, and a slow answer would hold up the ones behind it): a connection is either
//!   in the idle list or leased to exactly one exchange.
//! - **Reuse.** The most recently used connection is taken first (it is the least likely to have
//!   been closed by the instance's own idle timeout); one that is closed, not ready or idle for
//!   longer than the idle timeout is dropped instead. A request that a reused connection never
//!   started to send (the instance closed it at that moment) goes on another connection; once
//!   any byte of it may have been sent, the failure is the exchange's.
//! - **Not reused.** A connection whose exchange failed, was abandoned (a timeout, a client that
//!   went away before the whole answer was read) or ended with `Connection: close` is closed.
//! - **Sized to the load.** A request that finds no idle connection opens one; connections are
//!   never shared, so the number open follows the number of requests in flight. At most
//!   `max_idle` are kept per idle list (each serving worker's, and the one off the workers) once
//!   the load falls; the rest are closed as they
//!   come back, and idle ones are closed after the idle timeout by a task the pool runs while it
//!   has connections.
//! - **One timer per connection.** The answer's deadline ([`ConnectionPool::send_by`]) is a
//!   timer the connection keeps from one exchange to the next and resets: a deadline later than
//!   the one it holds is an atomic store, not a removal from and insertion into tokio's timer
//!   wheel as a new `timeout` per request is (docs/BENCHMARKS.md). Only connections opened on a
//!   serving worker keep theirs: a timer belongs to the runtime it was made on, and the workers'
//!   live as long as the process.
//! - **Per worker.** Each of the gateway's serving threads ([`kit::workers`]) has its own idle
//!   list, as each nginx worker has its own `keepalive` cache: a connection's task runs on the
//!   worker that opened it, and a request taking it from that worker's list sends and is answered
//!   without a wake crossing threads. Off the workers (a test's runtime, a health check or a
//!   background refresh on the main runtime) requests use a last list of their own: a connection
//!   opened there has its task on the main runtime, and lent to a worker it would make each of
//!   that worker's requests on it wake the main runtime's threads and be woken back.
//!
//! **HTTP/2** (`protocol: http2`) multiplexes: every request is a stream on the instance's one
//! connection, opened by the first request (the others wait for it rather than each opening
//! their own) and opened again by the first request after it closed. Pings every
//! [`H2_KEEP_ALIVE`] find a connection whose instance vanished without closing it.
//!
//! **TLS** (`https://` instances): the TCP connection and the handshake both fit in the connect
//! timeout; a handshake that fails (a certificate that does not verify, a refused client
//! certificate, no agreement on `h2`) is [`ExchangeError::Tls`], which the proxy answers 502
//! naming TLS. The plain HTTP/1.1 path hands the `TcpStream` to hyper as before: each kind of
//! stream gets its own connection task, with no dispatch between them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;

use super::tls::{Alpn, TlsClient};
use super::transport::{open_tcp, UpstreamStream};
use crate::config::UpstreamProtocol;

/// Idle keep-alive connections kept per instance and serving worker. The gateway's concurrency towards one instance
/// is its clients' (nginx's `keepalive` is per worker); 256 covers the connection counts we
/// benchmark and deploy with, and a burst beyond it only opens connections that are then closed.
pub const MAX_IDLE_PER_INSTANCE: usize = 256;

/// How long a connection may sit idle before the pool closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often an HTTP/2 connection is pinged, and how long its answer may take before the
/// connection is given up: an instance that vanished without closing it is found within both.
pub const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How the pool of one instance behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// No connection is opened for longer than this (name resolution and TLS handshake included).
    pub connect_timeout: Duration,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub protocol: UpstreamProtocol,
    /// Set for `https://` instances.
    pub tls: Option<Arc<TlsClient>>,
}

impl PoolSettings {
    /// Plain HTTP/1.1 with the connect timeout given.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            max_idle: MAX_IDLE_PER_INSTANCE,
            idle_timeout: IDLE_TIMEOUT,
            protocol: UpstreamProtocol::Http1,
            tls: None,
        }
    }

    /// These settings speaking `protocol`, over TLS when `tls` is set.
    pub fn speaking(self, protocol: UpstreamProtocol, tls: Option<Arc<TlsClient>>) -> Self {
        Self {
            protocol,
            tls,
            ..self
        }
    }
}

/// Why an exchange with an instance failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// No connection: refused, unreachable, unresolvable, or the connect timeout passed.
    /// Nothing was sent.
    Connect(std::io::Error),
    /// A TCP connection, but the TLS handshake failed (the certificate did not verify, the
    /// instance refused ours, no agreement on `h2`). Nothing was sent.
    Tls(std::io::Error),
    /// The exchange on an open connection failed: hyper says how (its causes include the
    /// request body's own error when that was the reason).
    Http(hyper::Error),
    /// The answer's head did not come by the deadline ([`ConnectionPool::send_by`]): the
    /// exchange was abandoned, its connection closed. Part of the request may have been sent.
    TimedOut,
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(error) => write!(f, "connecting: {error}"),
            Self::Tls(error) => write!(f, "TLS handshake: {error}"),
            Self::Http(error) => error.fmt(f),
            Self::TimedOut => f.write_str("no answer by the deadline"),
        }
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(error) | Self::Tls(error) => Some(error),
            Self::Http(error) => Some(error),
            Self::TimedOut => None,
        }
    }
}

/// The connections to one instance.
pub struct ConnectionPool {
    authority: Authority,
    /// The `Host` header a request without one gets (how hyper's client would write it).
    host: Option<HeaderValue>,
    settings: PoolSettings,
    /// Idle connections, one list per serving worker ([`kit::workers`]; a connection's task runs
    /// on the worker that opened it, so a request on that worker reaches it without waking
    /// another thread) and a last one for those opened off the workers (health checks, the
    /// gateway's background calls), the most recently used last. A lock held for a push or a
    /// pop only.
    idle: Box<[IdleList]>,
    /// Connections open now (idle or leased), for the tests and the idle reaper.
    open: Arc<AtomicUsize>,
    /// Set while a reaper task runs for this pool.
    reaping: AtomicBool,
    /// With `protocol: http2`, the instance's one connection.
    h2: Option<SharedConnection>,
}

/// One idle list, alone on its cache lines: each worker locks its own twice a request (to take
/// a connection and to give it back), and lists side by side in one line would have the workers
/// write that line in turns (128 bytes: adjacent lines are fetched in pairs).
#[repr(align(128))]
struct IdleList(Mutex<Vec<Idle>>);

/// The HTTP/2 connection every request to an instance shares.
struct SharedConnection {
    /// The connection as it last was; a lock held to clone or replace the sender only.
    sender: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held while one request opens the connection, so the others wait for it instead of each
    /// opening their own.
    opening: tokio::sync::Mutex<()>,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
    timer: Option<AnswerTimer>,
}

/// The timer a connection keeps for its answers' deadlines (see the module docs).
type AnswerTimer = std::pin::Pin<Box<Sleep>>;

impl ConnectionPool {
    pub fn new(authority: Authority, host: Option<HeaderValue>, settings: PoolSettings) -> Self {
        let h2 = (settings.protocol == UpstreamProtocol::Http2).then(|| SharedConnection {
            sender: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        });
        Self {
            authority,
            host,
            settings,
            idle: (0..kit::workers::count().max(1) + 1)
                .map(|_| IdleList(Mutex::new(Vec::new())))
                .collect(),
            open: Arc::new(AtomicUsize::new(0)),
            reaping: AtomicBool::new(false),
            h2,
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Connections open now, idle or in use.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections waiting in the pool now.
    pub fn idle_connections(&self) -> usize {
        (0..self.idle.len())
            .map(|list| self.lock_idle(list).len())
            .sum()
    }

    /// Sends `request` (an absolute URI on this instance, or only its path and query) and
    /// returns the answer's head; its body, read to the end, gives the connection back.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> Result<Response<PooledBody>, ExchangeError> {
        self.exchange(request, None).await
    }

    /// [`Self::send`], with the answer's head due by `deadline` (a new connection's opening
    /// included): past it, [`ExchangeError::TimedOut`], the exchange abandoned with its
    /// connection.
    pub async fn send_by(
        self: &Arc<Self>,
        request: Request<Body>,
        deadline: Instant,
    ) -> Result<Response<PooledBody>, ExchangeError> {
        self.exchange(request, Some(deadline)).await
    }

    async fn exchange(
        self: &Arc<Self>,
        mut request: Request<Body>,
        deadline: Option<Instant>,
    ) -> Result<Response<PooledBody>, ExchangeError> {
        // The HTTP/2 exchange and the connection's opening (TCP, TLS, the handshake) are
        // boxed: their futures are large and this one is inlined into every request's, which
        // hyper moves as a whole (BENCHMARKS.md, "Session end: the request future").
        if let Some(shared) = &self.h2 {
            let sending = Box::pin(self.send_h2(shared, request));
            return match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, sending)
                    .await
                    .unwrap_or(Err(ExchangeError::TimedOut)),
                None => sending.await,
            };
        }
        // HTTP/1.1 to an origin server: the target in origin form, the authority in `Host`.
        if request.uri().authority().is_some() {
            let path = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(path);
        }
        if !request.headers().contains_key(header::HOST) {
            if let Some(host) = &self.host {
                request.headers_mut().insert(header::HOST, host.clone());
            }
        }
        let list = self.own_list();
        loop {
            let (mut sender, mut timer, reused) = match self.take_idle(list) {
                Some(idle) => (idle.sender, idle.timer, true),
                None => {
                    let mut timer = None;
                    let opening = Box::pin(self.connect());
                    (within(opening, deadline, &mut timer).await??, timer, false)
                }
            };
            match within(sender.try_send_request(request), deadline, &mut timer).await? {
                Ok(response) => {
                    // The instance says it closes the connection after this answer.
                    let closing = response
                        .headers()
                        .get(header::CONNECTION)
                        .is_some_and(|value| has_close(value.as_bytes()));
                    let lease = Lease {
                        sender,
                        // A timer made off the workers is not kept (the module docs say why).
                        timer: timer.filter(|_| kit::workers::current().is_some()),
                        list,
                        pool: Arc::clone(self),
                    };
                    return Ok(response.map(|body| PooledBody::new(body, lease, !closing)));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never started on a connection that was idle: the instance closed it as
                    // we took it. Nothing was sent, so the request goes on another.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(ExchangeError::Http(failed.into_error())),
                },
            }
        }
    }

    /// The idle list of the calling thread's worker, or the last one off the workers. Never
    /// a worker's list off the workers: a connection opened there (its task on the shared
    /// runtime) would have every request of that worker's on it wake the shared runtime's
    /// threads and be woken back, two cross-thread wake-ups an exchange (docs/BENCHMARKS.md).
    fn own_list(&self) -> usize {
        kit::workers::slot(self.idle.len())
    }

    /// The most recently used idle connection of `list` that can take a request now.
    fn take_idle(&self, list: usize) -> Option<Idle> {
        let mut idle = self.lock_idle(list);
        while let Some(entry) = idle.pop() {
            if entry.sender.is_ready() && entry.since.elapsed() < self.settings.idle_timeout {
                return Some(entry);
            }
            // Closed by the instance, or idle too long: dropping the sender closes it.
        }
        None
    }

    /// A new HTTP/1.1 connection, its task spawned.
    async fn connect(self: &Arc<Self>) -> Result<http1::SendRequest<Body>, ExchangeError> {
        match &self.settings.tls {
            None => {
                let stream = self.within_connect_timeout(self.open_plain()).await?;
                self.handshake_http1(stream).await
            }
            Some(tls) => {
                let stream = self
                    .within_connect_timeout(self.open_tls(tls, Alpn::Http1))
                    .await?;
                self.handshake_http1(stream).await
            }
        }
    }

    /// HTTP/1.1 on `stream`: its connection task spawned (one per kind of stream, so the plain
    /// one reads and writes the socket directly).
    async fn handshake_http1<S>(
        self: &Arc<Self>,
        stream: S,
    ) -> Result<http1::SendRequest<Body>, ExchangeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ExchangeError::Http)?;
        self.run_connection(connection);
        self.reap_idle();
        Ok(sender)
    }

    /// Drives a connection until it ends, counted as open meanwhile.
    fn run_connection<C>(&self, connection: C)
    where
        C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let open = Arc::clone(&self.open);
        open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// `opening` within the connect timeout; past it, a connect error (nothing was sent).
    async fn within_connect_timeout<T>(
        &self,
        opening: impl std::future::Future<Output = Result<T, ExchangeError>>,
    ) -> Result<T, ExchangeError> {
        tokio::time::timeout(self.settings.connect_timeout, opening)
            .await
            .map_err(|_elapsed| {
                ExchangeError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection to {} within {:?}",
                        self.authority, self.settings.connect_timeout
                    ),
                ))
            })?
    }

    /// A TCP connection to the instance.
    async fn open_plain(&self) -> Result<tokio::net::TcpStream, ExchangeError> {
        open_tcp(&self.authority, self.default_port())
            .await
            .map_err(ExchangeError::Connect)
    }

    /// A TCP connection to the instance and a TLS handshake on it asking for `alpn`.
    async fn open_tls(
        &self,
        tls: &TlsClient,
        alpn: Alpn,
    ) -> Result<TlsStream<tokio::net::TcpStream>, ExchangeError> {
        let name = tls
            .name_for(self.authority.host())
            .map_err(ExchangeError::Tls)?;
        let tcp = self.open_plain().await?;
        tls.handshake(tcp, name, alpn)
            .await
            .map_err(ExchangeError::Tls)
    }

    /// The port of an instance URL that names none: 443 over TLS, else 80.
    fn default_port(&self) -> u16 {
        if self.settings.tls.is_some() {
            443
        } else {
            80
        }
    }

    /// A connection of its own to the instance (plain or TLS, HTTP/1.1 offered in the
    /// handshake), outside the pool: for an exchange that takes the connection over, such as a
    /// WebSocket upgrade. Opened within the connect timeout; failures as [`Self::send`]'s.
    pub async fn open_upgrade_stream(&self) -> Result<UpstreamStream, ExchangeError> {
        match &self.settings.tls {
            None => Ok(UpstreamStream::Plain(
                self.within_connect_timeout(self.open_plain()).await?,
            )),
            Some(tls) => Ok(UpstreamStream::Tls(Box::new(
                self.within_connect_timeout(self.open_tls(tls, Alpn::Http1))
                    .await?,
            ))),
        }
    }

    /// Sends `request` as a stream on the instance's HTTP/2 connection. A request the
    /// connection refused unsent (it was closing as we took it) goes once more, on a new one.
    async fn send_h2(
        self: &Arc<Self>,
        shared: &SharedConnection,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, ExchangeError> {
        // HTTP/2 carries the target as `:scheme`, `:authority` and `:path`, and the authority
        // replaces `Host` (RFC 9113 §8.3.1).
        let authority = request
            .headers_mut()
            .remove(header::HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
            .unwrap_or_else(|| self.authority.clone());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.settings.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        parts.authority = Some(authority);
        parts.path_and_query = Some(
            request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        *request.uri_mut() = Uri::from_parts(parts).map_err(|error| {
            ExchangeError::Connect(std::io::Error::other(format!(
                "an HTTP/2 target for {}: {error}",
                self.authority
            )))
        })?;
        *request.version_mut() = http::Version::HTTP_2;
        let mut resent = false;
        loop {
            let (mut sender, fresh) = self.h2_sender(shared).await?;
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response.map(PooledBody::unpooled)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if !fresh && !resent => {
                        resent = true;
                        shared.forget();
                        request = unsent;
                    }
                    _ => return Err(ExchangeError::Http(failed.into_error())),
                },
            }
        }
    }

    /// The instance's HTTP/2 connection, opened when there is none or it closed; true when it
    /// was opened for this request.
    async fn h2_sender(
        self: &Arc<Self>,
        shared: &SharedConnection,
    ) -> Result<(http2::SendRequest<Body>, bool), ExchangeError> {
        if let Some(sender) = shared.live() {
            return Ok((sender, false));
        }
        let _opening = shared.opening.lock().await;
        // Another request may have opened it while this one waited.
        if let Some(sender) = shared.live() {
            return Ok((sender, false));
        }
        let sender = match &self.settings.tls {
            None => {
                // Prior knowledge (h2c): the instance is configured to speak HTTP/2 at once.
                let stream = self.within_connect_timeout(self.open_plain()).await?;
                self.handshake_http2(stream).await?
            }
            Some(tls) => {
                let stream = self
                    .within_connect_timeout(self.open_tls(tls, Alpn::Http2))
                    .await?;
                self.handshake_http2(stream).await?
            }
        };
        *shared.lock() = Some(sender.clone());
        Ok((sender, true))
    }

    async fn handshake_http2<S>(&self, stream: S) -> Result<http2::SendRequest<Body>, ExchangeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ExchangeError::Http)?;
        self.run_connection(connection);
        Ok(sender)
    }

    /// `sender`, its exchange complete, back in idle `list` (or closed when the list is full).
    fn give_back(
        self: &Arc<Self>,
        list: usize,
        mut sender: http1::SendRequest<Body>,
        timer: Option<AnswerTimer>,
    ) {
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            return self.keep(list, sender, timer);
        }
        // The connection has not yet taken in the exchange's end (its task runs on another
        // worker, or it is still writing the request body the instance answered before reading):
        // it rejoins the list once it is ready, or closes.
        let pool = Arc::downgrade(self);
        let idle_timeout = self.settings.idle_timeout;
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(idle_timeout, sender.ready()).await {
                if let Some(pool) = pool.upgrade() {
                    pool.keep(list, sender, timer);
                }
            }
        });
    }

    fn keep(&self, list: usize, sender: http1::SendRequest<Body>, timer: Option<AnswerTimer>) {
        let timer = timer.map(forget_waker);
        let mut idle = self.lock_idle(list);
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
                timer,
            });
        }
    }

    fn lock_idle(&self, list: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list is valid after any panic (a push or a pop either happened or not).
        self.idle[list]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the task that closes connections idle for longer than the idle timeout, unless
    /// one runs. It ends when the pool has no connection left, or is dropped.
    fn reap_idle(self: &Arc<Self>) {
        if self.reaping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = (self.settings.idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                for list in 0..pool.idle.len() {
                    let stale: Vec<Idle> = {
                        let mut idle = pool.lock_idle(list);
                        // Oldest first: the stale ones are a prefix.
                        let fresh = idle
                            .iter()
                            .position(|entry| entry.since.elapsed() < pool.settings.idle_timeout)
                            .unwrap_or(idle.len());
                        idle.drain(..fresh).collect()
                    };
                    drop(stale);
                }
                if pool.open_connections() == 0 {
                    pool.reaping.store(false, Ordering::Release);
                    // A connection opened since it was checked starts its own reaper.
                    if pool.open_connections() == 0 || pool.reaping.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
            }
        });
    }
}

impl SharedConnection {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<http2::SendRequest<Body>>> {
        // Valid after any panic: the sender was either replaced or not.
        self.sender.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection, unless it has closed.
    fn live(&self) -> Option<http2::SendRequest<Body>> {
        self.lock()
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .cloned()
    }

    /// Lets the next request open a new connection.
    fn forget(&self) {
        self.lock().take();
    }
}

/// `future`, unless `deadline` passes first. The deadline is `timer`'s (made on first need, reset
/// after): the answer wins a tie, so one that is ready is never thrown away.
async fn within<F: std::future::Future>(
    future: F,
    deadline: Option<Instant>,
    timer: &mut Option<AnswerTimer>,
) -> Result<F::Output, ExchangeError> {
    let Some(deadline) = deadline else {
        return Ok(future.await);
    };
    let timer = match timer {
        Some(timer) => {
            timer.as_mut().reset(deadline);
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    tokio::select! {
        biased;
        output = future => Ok(output),
        () = timer.as_mut() => Err(ExchangeError::TimedOut),
    }
}

/// `timer` holding no task's waker: an idle connection's timer stays on the wheel until its last
/// deadline, and the waker of the exchange that set it would keep that (finished) task's memory
/// alive until then. Polled once with a waker that does nothing; whether it has fired is moot.
fn forget_waker(mut timer: AnswerTimer) -> AnswerTimer {
    let mut nothing = Context::from_waker(std::task::Waker::noop());
    let _ = std::future::Future::poll(timer.as_mut(), &mut nothing);
    timer
}

/// Whether a `Connection` value names `close` (case-insensitively, among other options).
fn has_close(value: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// A connection leased to one exchange.
struct Lease {
    sender: http1::SendRequest<Body>,
    timer: Option<AnswerTimer>,
    /// The idle list it was taken for, and goes back to.
    list: usize,
    pool: Arc<ConnectionPool>,
}

/// An instance's answer body; read to its end, it gives its connection back to the pool.
/// Dropped before that (or failed), the connection is closed with it.
pub struct PooledBody {
    body: Incoming,
    /// Until the body has ended, when the connection may be reused.
    lease: Option<Lease>,
}

impl PooledBody {
    fn new(body: Incoming, lease: Lease, reusable: bool) -> Self {
        let mut pooled = Self {
            body,
            lease: reusable.then_some(lease),
        };
        // No body at all (204, 304, HEAD, `Content-Length: 0`): the exchange is over already.
        if http_body::Body::is_end_stream(&pooled.body) {
            pooled.release();
        }
        pooled
    }

    /// An answer on a shared HTTP/2 connection: nothing to give back.
    fn unpooled(body: Incoming) -> Self {
        Self { body, lease: None }
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.give_back(lease.list, lease.sender, lease.timer);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            // Whoever reads the body may stop at the last frame without asking for more (hyper's
            // server does): the connection goes back then.
            Some(Ok(_)) if http_body::Body::is_end_stream(&this.body) => this.release(),
            Some(Ok(_)) => {}
            None => this.release(),
            Some(Err(_)) => this.lease = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use hyper::service::service_fn;

    use super::*;

    /// An instance on a free port that answers every request with its path (but `/hang`, which
    /// it never answers), and counts the connections it accepted; `close_each` makes it close
    /// the connection after each answer.
    async fn instance(close_each: bool) -> (Authority, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let answer = service_fn(move |request: Request<Incoming>| async move {
                        if request.uri().path() == "/hang" {
                            std::future::pending::<()>().await;
                        }
                        let mut response =
                            Response::new(Body::from(request.uri().path().to_owned()));
                        if close_each {
                            response
                                .headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), answer)
                        .await;
                });
            }
        });
        (authority, accepted)
    }

    fn pool(authority: Authority, max_idle: usize) -> Arc<ConnectionPool> {
        let host = HeaderValue::from_str(authority.as_str()).ok();
        Arc::new(ConnectionPool::new(
            authority,
            host,
            PoolSettings {
                max_idle,
                ..PoolSettings::new(Duration::from_secs(5))
            },
        ))
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    async fn text(response: Response<PooledBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Sends `GET path`, reads the whole answer, then waits until `settled` holds.
    async fn exchange_until(
        pool: &Arc<ConnectionPool>,
        path: &str,
        settled: impl Fn() -> bool,
    ) -> String {
        let answer = text(pool.send(get(path)).await.unwrap()).await;
        eventually("the pool settles after the exchange", settled).await;
        answer
    }

    /// Polls `condition` until it holds, within the kit's patience.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        kit::testing::wait_until(what, || std::future::ready(condition())).await;
    }

    #[tokio::test]
    async fn requests_one_after_another_reuse_one_connection() {
        let (authority, accepted) = instance(false).await;
        let pool = pool(authority, 8);

        for n in 0..20 {
            // The connection is back once its answer was read (or, at the latest, once its
            // task has taken in the answer's end).
            let path = format!("/n/{n}");
            let answer = exchange_until(&pool, &path, || pool.idle_connections() == 1).await;
            assert_eq!(answer, path);
        }

        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.open_connections(), 1);
    }

    /// Runs `test` on a serving worker, where connections keep their answer timers.
    async fn on_a_worker<F>(test: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let workers = kit::workers::handles().unwrap();
        workers[0].spawn(test).await.unwrap();
    }

    fn by(after: Duration) -> Instant {
        Instant::now() + after
    }

    #[tokio::test]
    async fn a_connection_opened_off_the_workers_is_never_lent_to_a_worker() {
        let (authority, accepted) = instance(false).await;
        let pool = pool(authority, 8);
        // Off the workers (this test's runtime): a background call's connection.
        assert_eq!(
            text(pool.send(get("/background")).await.unwrap()).await,
            "/background"
        );
        eventually("the connection is back", || pool.idle_connections() == 1).await;
        let on_worker = Arc::clone(&pool);
        on_a_worker(async move {
            for n in 0..3 {
                let path = format!("/n/{n}");
                assert_eq!(text(on_worker.send(get(&path)).await.unwrap()).await, path);
                eventually("it is back", || on_worker.idle_connections() == 2).await;
            }
        })
        .await;
        // The worker opened its own (once, then reused it); the background one waits for the
        // next background call.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        eventually("both are idle", || pool.idle_connections() == 2).await;
        assert_eq!(
            text(pool.send(get("/again")).await.unwrap()).await,
            "/again"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn answers_due_by_a_deadline_reuse_one_connection_which_keeps_its_timer_on_a_worker() {
        on_a_worker(async {
            let (authority, accepted) = instance(false).await;
            let pool = pool(authority, 8);
            for n in 0..20 {
                let path = format!("/n/{n}");
                let answer = pool.send_by(get(&path), by(Duration::from_secs(20))).await;
                assert_eq!(text(answer.unwrap()).await, path);
                eventually("the connection is back", || pool.idle_connections() == 1).await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
            let list = pool.own_list();
            assert!(
                pool.lock_idle(list)[0].timer.is_some(),
                "the idle connection keeps its timer"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn off_the_workers_a_connection_keeps_no_timer() {
        let (authority, _) = instance(false).await;
        let pool = pool(authority, 8);
        let answer = pool.send_by(get("/one"), by(Duration::from_secs(20))).await;
        assert_eq!(text(answer.unwrap()).await, "/one");
        eventually("the connection is back", || pool.idle_connections() == 1).await;
        assert!(pool.lock_idle(pool.own_list())[0].timer.is_none());
    }

    #[tokio::test]
    async fn an_answer_not_there_by_its_deadline_times_out_and_closes_only_its_connection() {
        on_a_worker(async {
            let (authority, accepted) = instance(false).await;
            let pool = pool(authority, 8);
            let first = pool
                .send_by(get("/first"), by(Duration::from_secs(20)))
                .await;
            assert_eq!(text(first.unwrap()).await, "/first");
            eventually("the connection is back", || pool.idle_connections() == 1).await;

            // On the reused connection (and its reset timer): an answer that never comes.
            let hung = pool
                .send_by(get("/hang"), by(Duration::from_millis(200)))
                .await;
            assert!(
                matches!(hung, Err(ExchangeError::TimedOut)),
                "{:?}",
                hung.err()
            );
            eventually("the abandoned connection is closed", || {
                pool.open_connections() == 0
            })
            .await;

            let after = pool
                .send_by(get("/after"), by(Duration::from_secs(20)))
                .await;
            assert_eq!(text(after.unwrap()).await, "/after");
            assert!(accepted.load(Ordering::SeqCst) >= 2, "a new connection");
        })
        .await;
    }

    #[tokio::test]
    async fn a_reader_that_stops_at_the_last_frame_still_gives_the_connection_back() {
        // hyper's server stops polling a body once it says it has ended; it never sees `None`.
        let (authority, accepted) = instance(false).await;
        let pool = pool(authority, 8);

        for _ in 0..5 {
            let mut body = pool.send(get("/last-frame")).await.unwrap().into_body();
            while !http_body::Body::is_end_stream(&body) {
                body.frame().await.unwrap().unwrap();
            }
            drop(body);
            eventually("the connection is idle again", || {
                pool.idle_connections() == 1
            })
            .await;
        }

        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_absolute_uri_is_sent_in_origin_form_with_the_instances_host() {
        let (authority, _) = instance(false).await;
        let pool = pool(authority.clone(), 8);
        let uri = format!("http://{authority}/a/b?c=d");

        let response = pool.send(get(&uri)).await.unwrap();

        assert_eq!(
            text(response).await,
            "/a/b",
            "the instance saw the path alone"
        );
    }

    #[tokio::test]
    async fn an_instance_that_closes_after_each_answer_gets_a_new_connection_each_time() {
        let (authority, accepted) = instance(true).await;
        let pool = pool(authority, 8);

        for n in 0..5 {
            let response = pool.send(get(&format!("/n/{n}"))).await.unwrap();
            assert_eq!(text(response).await, format!("/n/{n}"));
        }

        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        assert_eq!(
            pool.idle_connections(),
            0,
            "a closing connection is never kept"
        );
        eventually("every connection is closed", || {
            pool.open_connections() == 0
        })
        .await;
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_while_idle_is_not_reused() {
        // An instance that answers one request per connection and then hangs up without saying
        // so (no `Connection: close`): the pool learns it only from the closed socket.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = [0u8; 1024];
                    let _ = socket.read(&mut head).await;
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    // Dropped: closed without a word.
                });
            }
        });
        let pool = pool(authority, 8);

        for _ in 0..3 {
            let answer = exchange_until(&pool, "/", || pool.open_connections() == 0).await;
            assert_eq!(answer, "ok");
        }

        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle_connections(), 0);
    }

    #[tokio::test]
    async fn an_answer_dropped_before_its_end_closes_its_connection() {
        let (authority, accepted) = instance(false).await;
        let pool = pool(authority, 8);

        let response = pool.send(get("/abandoned")).await.unwrap();
        drop(response);
        eventually("the abandoned connection is closed", || {
            pool.open_connections() == 0
        })
        .await;
        let response = pool.send(get("/next")).await.unwrap();
        assert_eq!(text(response).await, "/next");

        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_each_get_a_connection_and_at_most_max_idle_are_kept() {
        let (authority, accepted) = instance(false).await;
        let pool = pool(authority, 2);

        // Six answers held at once: six connections, none shared.
        let mut held = Vec::new();
        for n in 0..6 {
            held.push(pool.send(get(&format!("/n/{n}"))).await.unwrap());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 6);
        for response in held {
            text(response).await;
        }

        eventually("the pool is down to its bound", || {
            pool.open_connections() == 2 && pool.idle_connections() == 2
        })
        .await;
        for _ in 0..4 {
            text(pool.send(get("/again")).await.unwrap()).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            6,
            "the kept ones are reused"
        );
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (authority, _) = instance(false).await;
        let pool = Arc::new(ConnectionPool::new(
            authority,
            None,
            PoolSettings {
                max_idle: 8,
                idle_timeout: Duration::from_millis(50),
                ..PoolSettings::new(Duration::from_secs(5))
            },
        ));

        text(pool.send(get("/")).await.unwrap()).await;

        eventually("the idle connection is closed", || {
            pool.open_connections() == 0 && pool.idle_connections() == 0
        })
        .await;
    }

    #[tokio::test]
    async fn no_listener_is_a_connect_error() {
        // A port bound and never listened on: connecting is refused.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let authority: Authority = socket.local_addr().unwrap().to_string().parse().unwrap();
        let pool = pool(authority, 8);

        match pool.send(get("/")).await {
            Err(ExchangeError::Connect(_)) => {}
            Err(other) => panic!("{other:?}"),
            Ok(response) => panic!("answered {}", response.status()),
        }
    }

    /// An h2c instance (prior knowledge) answering every request with its path and HTTP
    /// version; the tasks serving its connections, to end them as a crash would.
    async fn h2c_instance() -> (Authority, Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let serving = Arc::new(Mutex::new(Vec::new()));
        let tasks = Arc::clone(&serving);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    let answer = service_fn(|request: Request<Incoming>| async move {
                        let text = format!("{} {:?}", request.uri().path(), request.version());
                        Ok::<_, Infallible>(Response::new(Body::from(text)))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), answer)
                        .await;
                });
                tasks.lock().unwrap().push(task);
            }
        });
        (authority, serving)
    }

    #[tokio::test]
    async fn http2_requests_share_one_connection_and_a_dead_one_is_opened_again() {
        let (authority, serving) = h2c_instance().await;
        let pool = Arc::new(ConnectionPool::new(
            authority,
            None,
            PoolSettings::new(Duration::from_secs(5)).speaking(UpstreamProtocol::Http2, None),
        ));

        let answers = futures_util::future::join_all((0..8).map(|n| {
            let pool = Arc::clone(&pool);
            async move { text(pool.send(get(&format!("/n/{n}"))).await.unwrap()).await }
        }))
        .await;
        assert_eq!(answers[3], "/n/3 HTTP/2.0");
        assert_eq!(serving.lock().unwrap().len(), 1, "one connection for all");
        assert_eq!(pool.open_connections(), 1);

        // The instance drops the connection (a crash, a restart).
        for task in serving.lock().unwrap().iter() {
            task.abort();
        }
        eventually("the pool sees the connection end", || {
            pool.open_connections() == 0
        })
        .await;
        let after = text(pool.send(get("/after")).await.unwrap()).await;

        assert_eq!(after, "/after HTTP/2.0");
        assert_eq!(serving.lock().unwrap().len(), 2, "a new connection");
    }

    #[tokio::test]
    async fn an_upgrade_stream_is_a_connection_of_its_own_outside_the_pool() {
        let (authority, accepted) = instance(false).await;
        let pool = pool(authority, 8);

        let stream = pool.open_upgrade_stream().await.unwrap();

        assert!(matches!(stream, UpstreamStream::Plain(_)));
        eventually("the instance accepted it", || {
            accepted.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(pool.open_connections(), 0, "not counted as pooled");
    }

    #[test]
    fn connection_close_is_found_among_other_options() {
        assert!(has_close(b"close"));
        assert!(has_close(b"keep-alive, Close"));
        assert!(!has_close(b"keep-alive"));
        assert!(!has_close(b"closed"));
    }
}
