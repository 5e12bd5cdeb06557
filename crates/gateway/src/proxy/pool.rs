//! The upstream client: for each instance, a pool of HTTP/1.1 connections on hyper's connection
//! API (`hyper::client::conn::http1`).
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
//!   `max_idle` are kept once the load falls; the rest are closed as they come back, and idle
//!   ones are closed after the idle timeout by a task the pool runs while it has connections.

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
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle keep-alive connections kept per instance. The gateway's concurrency towards one instance
/// is its clients' (nginx's `keepalive` is per worker); 256 covers the connection counts we
/// benchmark and deploy with, and a burst beyond it only opens connections that are then closed.
pub const MAX_IDLE_PER_INSTANCE: usize = 256;

/// How long a connection may sit idle before the pool closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the pool of one instance behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// No connection is opened for longer than this (name resolution included).
    pub connect_timeout: Duration,
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl PoolSettings {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            max_idle: MAX_IDLE_PER_INSTANCE,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Why an exchange with an instance failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// No connection: refused, unreachable, unresolvable, or the connect timeout passed.
    /// Nothing was sent.
    Connect(std::io::Error),
    /// The exchange on an open connection failed: hyper says how (its causes include the
    /// request body's own error when that was the reason).
    Http(hyper::Error),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(error) => write!(f, "connecting: {error}"),
            Self::Http(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(error) => Some(error),
            Self::Http(error) => Some(error),
        }
    }
}

/// The connections to one instance.
pub struct ConnectionPool {
    authority: Authority,
    /// The `Host` header a request without one gets (how hyper's client would write it).
    host: Option<HeaderValue>,
    settings: PoolSettings,
    /// Idle connections, the most recently used last. A lock held for a push or a pop only.
    idle: Mutex<Vec<Idle>>,
    /// Connections open now (idle or leased), for the tests and the idle reaper.
    open: Arc<AtomicUsize>,
    /// Set while a reaper task runs for this pool.
    reaping: AtomicBool,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl ConnectionPool {
    pub fn new(authority: Authority, host: Option<HeaderValue>, settings: PoolSettings) -> Self {
        Self {
            authority,
            host,
            settings,
            idle: Mutex::new(Vec::new()),
            open: Arc::new(AtomicUsize::new(0)),
            reaping: AtomicBool::new(false),
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
        self.lock_idle().len()
    }

    /// Sends `request` (an absolute URI on this instance, or only its path and query) and
    /// returns the answer's head; its body, read to the end, gives the connection back.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, ExchangeError> {
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
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // The instance says it closes the connection after this answer.
                    let closing = response
                        .headers()
                        .get(header::CONNECTION)
                        .is_some_and(|value| has_close(value.as_bytes()));
                    let lease = Lease {
                        sender,
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

    /// The most recently used idle connection that can take a request now.
    fn take_idle(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.lock_idle();
        while let Some(entry) = idle.pop() {
            if entry.sender.is_ready() && entry.since.elapsed() < self.settings.idle_timeout {
                return Some(entry.sender);
            }
            // Closed by the instance, or idle too long: dropping the sender closes it.
        }
        None
    }

    /// A new connection, its task spawned.
    async fn connect(self: &Arc<Self>) -> Result<http1::SendRequest<Body>, ExchangeError> {
        let stream = tokio::time::timeout(self.settings.connect_timeout, self.open_stream())
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
            .map_err(ExchangeError::Connect)?;
        // Requests are written whole by hyper; without Nagle a small one goes out at once.
        stream.set_nodelay(true).map_err(ExchangeError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ExchangeError::Http)?;
        let open = Arc::clone(&self.open);
        open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
        self.reap_idle();
        Ok(sender)
    }

    /// A TCP connection to the instance: its address at once when it is one, else each address
    /// the name resolves to, in turn.
    pub(crate) async fn open_stream(&self) -> std::io::Result<TcpStream> {
        let host = self.authority.host();
        let port = self.authority.port_u16().unwrap_or(80);
        // `[::1]` in an authority is the address `::1`.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            return TcpStream::connect((ip, port)).await;
        }
        let mut last = None;
        for address in tokio::net::lookup_host((host, port)).await? {
            match TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            )
        }))
    }

    /// `sender`, its exchange complete, back in the idle list (or closed when the list is full).
    fn give_back(self: &Arc<Self>, mut sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            return self.keep(sender);
        }
        // The connection has not yet taken in the exchange's end (its task runs on another
        // worker, or it is still writing the request body the instance answered before reading):
        // it rejoins the list once it is ready, or closes.
        let pool = Arc::downgrade(self);
        let idle_timeout = self.settings.idle_timeout;
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(idle_timeout, sender.ready()).await {
                if let Some(pool) = pool.upgrade() {
                    pool.keep(sender);
                }
            }
        });
    }

    fn keep(&self, sender: http1::SendRequest<Body>) {
        let mut idle = self.lock_idle();
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list is valid after any panic (a push or a pop either happened or not).
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
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
                let stale: Vec<Idle> = {
                    let mut idle = pool.lock_idle();
                    // Oldest first: the stale ones are a prefix.
                    let fresh = idle
                        .iter()
                        .position(|entry| entry.since.elapsed() < pool.settings.idle_timeout)
                        .unwrap_or(idle.len());
                    idle.drain(..fresh).collect()
                };
                drop(stale);
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

/// Whether a `Connection` value names `close` (case-insensitively, among other options).
fn has_close(value: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// A connection leased to one exchange.
struct Lease {
    sender: http1::SendRequest<Body>,
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

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.give_back(lease.sender);
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

    /// An instance on a free port that answers every request with its path, and counts the
    /// connections it accepted; `close_each` makes it close the connection after each answer.
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
                connect_timeout: Duration::from_secs(5),
                max_idle,
                idle_timeout: Duration::from_secs(60),
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
                connect_timeout: Duration::from_secs(5),
                max_idle: 8,
                idle_timeout: Duration::from_millis(50),
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

    #[test]
    fn connection_close_is_found_among_other_options() {
        assert!(has_close(b"close"));
        assert!(has_close(b"keep-alive, Close"));
        assert!(!has_close(b"keep-alive"));
        assert!(!has_close(b"closed"));
    }
}
