//! Forwarding a request to a service: pick an instance, send, and map failures the way Envoy
//! does (no connection or no healthy instance → 503, no answer in time → 504, a broken answer →
//! 502), retrying on another instance when that is safe.
//!
//! A retry happens only when all of these hold: the request may repeat (idempotent method, or an
//! `Idempotency-Key`); its body is at hand again (none, or a declared length of at most
//! [`REPLAY_LIMIT`], read before the first attempt; a larger or streamed body goes through
//! unbuffered and is never retried); the attempt failed to connect, broke before an answer, or
//! the instance answered 502 or 503; another instance is available; the service's retry budget
//! allows it; and the deadline has not passed. A timeout is never retried: the deadline (the
//! route's or service's `timeout`) covers every attempt together.
//!
//! The client's part is not the upstream's: a request body the client stops sending fails with
//! 408 and counts as neutral for the instance, and a streamed body's deadline runs only during
//! the upstream's turns ([`super::request_body`]). A request without a body takes none of this.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use bytes::BytesMut;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;

use super::headers;
use super::instance::{InFlight, Outcome, Pick};
use super::pool::{ConnectionPool, ExchangeError, PooledBody};
use super::request_body::{ClientSilent, Progress, Watched};
use super::retry;
use super::upstream::{path_and_query_of, Upstream};
// Only for a streamed body's deadline: the upstream's turn is stamped on the process's clock
// (`request_body::Progress`) and waited out with tokio's timers, a real wait on I/O rather than
// bookkeeping. The breaker reads the service's clock (`Upstream::now`).
use crate::clock::monotonic_ms;
use crate::config::{Limits, MAX_RETRIES};
use crate::error::GatewayError;

/// The largest body kept for a retry; larger bodies stream through and are not retried.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// A routed request on its way to a service, its headers already rewritten.
pub struct Outbound {
    pub method: Method,
    /// The path and query on the service.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Body,
}

/// What forwarding a request did, for the observe phase: the instance that answered (or was
/// tried last), how long the attempts took up to the answer's headers, and the retries.
#[derive(Debug, Default)]
pub struct Attempted {
    pub instance: Option<Arc<str>>,
    pub upstream: Option<Duration>,
    pub retries: u32,
}

/// Sends `outbound` to an instance of `upstream`, retrying on another when it is safe (see the
/// module docs). `timeout` covers all attempts up to the response headers (for a streamed body,
/// the upstream's turns: see [`super::request_body`]); the response body then streams through. Bodies
/// over `limits.max_body_bytes` are refused with 413, a client silent mid-body for
/// `limits.body_idle_timeout` with 408.
pub async fn forward(
    upstream: &Upstream,
    outbound: Outbound,
    timeout: Duration,
    limits: &Limits,
    report: &mut Attempted,
) -> Result<Response, GatewayError> {
    let Outbound {
        method,
        target,
        mut headers,
        body,
    } = outbound;
    upstream.budget.deposit();
    let may_retry = upstream.settings.retries.attempts > 0
        && upstream.instances().len() > 1
        && retry::may_repeat(&method, &headers);
    let mut payload = Payload::read(body, may_retry, limits).await?;
    let max_attempts = match payload {
        Payload::Empty | Payload::Replayable(_) if may_retry => {
            1 + upstream.settings.retries.attempts.min(MAX_RETRIES) as usize
        }
        _ => 1,
    };
    let mut pick = upstream.pick(&[])?;
    if pick.trial && matches!(payload, Payload::Streaming { .. }) {
        // The trial decides whether an ejected instance is back, and every other request is
        // refused while it runs: a body the client has not finished sending must not hold it
        // (a client stalling its body would keep the instance out for everyone). The trial is
        // given back (dropped, it counts as neutral), the body read whole under the idle
        // timeout (at most `max_body`, and only ever for a trial), and an instance picked again.
        drop(pick);
        payload = payload.into_whole(limits).await?;
        pick = upstream.pick(&[])?;
    }
    // Runs from here: a body to replay has been read whole already.
    let deadline = payload.deadline(timeout);
    // Parsed once for every attempt, taking over the string's buffer.
    let target = path_and_query_of(target)?;

    // The instances tried so far, without an allocation per request.
    let mut tried = [0usize; 1 + MAX_RETRIES as usize];
    let mut attempts = 0;
    let started = Instant::now();
    loop {
        tried[attempts] = pick.index;
        attempts += 1;
        let (Some(instance), Some(pool)) = (
            pick.instance().map(|i| {
                report.instance = Some(Arc::clone(&i.name));
                i.authority.clone()
            }),
            upstream.pool(pick.index),
        ) else {
            return Err(GatewayError::Internal(anyhow::anyhow!(
                "a pick without instance"
            )));
        };
        report.retries = attempts as u32 - 1;
        let mut request = Request::new(payload.for_attempt());
        *request.method_mut() = method.clone();
        // Origin form: the connection is the instance's already.
        *request.uri_mut() = Uri::from(target.clone());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = if attempts < max_attempts {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        if let Some(host) = upstream.host_header(pick.index) {
            request
                .headers_mut()
                .insert(http::header::HOST, host.clone());
        }

        let attempt = attempt(upstream, pool, request, &deadline, limits.max_body_bytes).await;
        report.upstream = Some(started.elapsed());
        let (result, retryable) = settle(upstream, pick, attempt, &instance);
        if !retryable || attempts >= max_attempts || deadline.passed() {
            return result;
        }
        let Ok(next) = upstream.pick(&tried[..attempts]) else {
            return result;
        };
        if !upstream.budget.withdraw() {
            tracing::warn!(service = %upstream.name, "retry budget exhausted; not retrying");
            return result;
        }
        tracing::info!(service = %upstream.name, failed = %instance, attempt = attempts + 1, "retrying on another instance");
        pick = next;
    }
}

/// Sends `request` once (its URI already on one of `upstream`'s instances, from
/// [`Upstream::uri_for`]), waiting at most `timeout` for the response headers; the outcome counts
/// for that instance's health. For the gateway's own calls (the credentials service).
pub async fn send(
    upstream: &Upstream,
    request: Request<Body>,
    timeout: Duration,
) -> Result<Response, GatewayError> {
    let Some(authority) = request.uri().authority().cloned() else {
        return Err(GatewayError::Internal(anyhow::anyhow!(
            "an upstream request without authority"
        )));
    };
    let Some(pool) = upstream.pool_at(&authority) else {
        return Err(GatewayError::Internal(anyhow::anyhow!(
            "{authority} is no instance of {}",
            upstream.name
        )));
    };
    let pick = upstream.track(&authority);
    let attempt = attempt(
        upstream,
        pool,
        request,
        &Deadline::At(Instant::now() + timeout),
        0,
    )
    .await;
    match pick {
        Some(pick) => settle(upstream, pick, attempt, &authority).0,
        None => match attempt {
            Attempt::Answered(response) => Ok(respond(response, None, upstream.timeout)),
            Attempt::TimedOut => Err(GatewayError::Timeout {
                service: upstream.name.to_string(),
            }),
            Attempt::Failed(failure) => Err(failure.into_error(upstream)),
        },
    }
}

/// The request body: none, kept in memory when a retry may need it again, else streamed once.
enum Payload {
    /// No body: nothing to read, wrap or wait for (the common GET).
    Empty,
    Replayable(Bytes),
    /// Streamed through once; `progress` tells whose turn it is (see [`super::request_body`]).
    Streaming {
        body: Option<Body>,
        progress: Arc<Progress>,
    },
}

impl Payload {
    async fn read(body: Body, may_retry: bool, limits: &Limits) -> Result<Self, GatewayError> {
        if http_body::Body::is_end_stream(&body) {
            return Ok(Self::Empty);
        }
        let max_body = limits.max_body_bytes;
        let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
        let small = http_body::Body::size_hint(&body)
            .upper()
            .is_some_and(|length| length <= REPLAY_LIMIT.min(max_body));
        if !(may_retry && small) {
            let progress = Progress::new();
            let watched =
                Watched::new(body, limit, limits.body_idle_timeout, Arc::clone(&progress));
            return Ok(Self::Streaming {
                body: Some(Body::new(watched)),
                progress,
            });
        }
        read_whole(body, limit, limits.body_idle_timeout)
            .await
            .map(Self::Replayable)
            .map_err(|error| error.into_gateway_error(limits))
    }

    /// A streamed body read whole (under the client's idle timeout), to be sent as a replay.
    async fn into_whole(self, limits: &Limits) -> Result<Self, GatewayError> {
        let Self::Streaming {
            body: Some(body), ..
        } = self
        else {
            return Ok(self);
        };
        let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
        read_whole(body, limit, limits.body_idle_timeout)
            .await
            .map(Self::Replayable)
            .map_err(|error| error.into_gateway_error(limits))
    }

    fn for_attempt(&mut self) -> Body {
        match self {
            Self::Empty => Body::empty(),
            Self::Replayable(bytes) => Body::from(bytes.clone()),
            Self::Streaming { body, .. } => body.take().unwrap_or_else(Body::empty),
        }
    }

    /// When the attempts must have their answer: `timeout` from now, or for a streamed body
    /// `timeout` of the upstream's own turn.
    fn deadline(&self, timeout: Duration) -> Deadline {
        match self {
            Self::Streaming { progress, .. } => Deadline::UpstreamTurn {
                progress: Arc::clone(progress),
                timeout,
            },
            _ => Deadline::At(Instant::now() + timeout),
        }
    }
}

/// Why a whole body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit.
    TooLarge,
    /// The client fell silent for longer than the idle timeout.
    Stalled,
    /// The client's stream broke off.
    Broken,
}

impl BodyError {
    /// The answer the client gets.
    pub fn into_gateway_error(self, limits: &Limits) -> GatewayError {
        match self {
            Self::TooLarge => GatewayError::PayloadTooLarge {
                limit: limits.max_body_bytes,
            },
            Self::Stalled => GatewayError::BodyStalled {
                idle: limits.body_idle_timeout,
            },
            Self::Broken => {
                GatewayError::BadRequest("The request body could not be read.".to_owned())
            }
        }
    }
}

/// Reads all of `body` (at most `limit` bytes), as long as the client never falls silent for
/// `idle`. Also for the gateway's own endpoints, which need the whole body at once.
pub async fn read_whole(body: Body, limit: usize, idle: Duration) -> Result<Bytes, BodyError> {
    let mut body = Limited::new(body, limit);
    let mut whole = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_elapsed) => return Err(BodyError::Stalled),
            Ok(None) => return Ok(whole.freeze()),
            Ok(Some(frame)) => frame,
        };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    whole.extend_from_slice(&data);
                }
            }
            Err(error) if in_chain::<LengthLimitError>(&*error) => return Err(BodyError::TooLarge),
            // A body already watched (`request_body::Watched`) says so itself.
            Err(error) if in_chain::<ClientSilent>(&*error) => return Err(BodyError::Stalled),
            Err(_) => return Err(BodyError::Broken),
        }
    }
}

/// Until when an attempt may wait for the response headers.
enum Deadline {
    At(Instant),
    /// `timeout` of the upstream's turn, measured by `progress` (a streamed request body).
    UpstreamTurn {
        progress: Arc<Progress>,
        timeout: Duration,
    },
}

impl Deadline {
    fn passed(&self) -> bool {
        match self {
            Self::At(deadline) => Instant::now() >= *deadline,
            Self::UpstreamTurn { progress, timeout } => progress
                .upstream_turn_since()
                .is_some_and(|since| monotonic_ms() >= since + millis(*timeout)),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 4)
}

enum Attempt {
    Answered(http::Response<PooledBody>),
    TimedOut,
    Failed(Failure),
}

enum Failure {
    /// No connection: refused, unreachable, or the connect timeout passed. Nothing was sent.
    Connect,
    /// The TLS handshake failed: the instance's certificate did not verify, or it refused
    /// ours. Nothing was sent; for the breaker, health and retries it is a failed connection.
    Tls,
    /// The connection broke or the answer was not HTTP.
    Broken,
    /// The client's own body failed (too large, or the client went away): not the instance's fault.
    Client(GatewayError),
}

impl Failure {
    fn into_error(self, upstream: &Upstream) -> GatewayError {
        let service = upstream.name.to_string();
        match self {
            Self::Connect => GatewayError::Unavailable {
                service,
                retry_after: Duration::from_secs(1),
                why: crate::error::Unavailability::Unreachable,
            },
            Self::Tls => GatewayError::UpstreamTls { service },
            Self::Broken => GatewayError::BadGateway { service },
            Self::Client(error) => error,
        }
    }
}

async fn attempt(
    upstream: &Upstream,
    pool: &Arc<ConnectionPool>,
    request: Request<Body>,
    deadline: &Deadline,
    max_body: u64,
) -> Attempt {
    let answered = |result: Result<_, ExchangeError>| match result {
        Ok(response) => Attempt::Answered(response),
        Err(error) => Attempt::Failed(classify(upstream, &error, max_body)),
    };
    match deadline {
        Deadline::At(deadline) => {
            // The pool times the answer on its connection's own timer (reset, not re-armed).
            match pool.send_by(request, *deadline).await {
                Err(ExchangeError::TimedOut) => Attempt::TimedOut,
                result => answered(result),
            }
        }
        Deadline::UpstreamTurn { progress, timeout } => {
            let sending = pool.send(request);
            tokio::pin!(sending);
            loop {
                // While it is the client's turn, its idle timeout ends the body (and with it
                // this request); look again after `timeout` in case the turn changed.
                let wait = match progress.upstream_turn_since() {
                    Some(since) => {
                        let due = since + millis(*timeout);
                        let now = monotonic_ms();
                        if now >= due {
                            return Attempt::TimedOut;
                        }
                        Duration::from_millis(due - now)
                    }
                    None => *timeout,
                };
                tokio::select! {
                    biased;
                    result = &mut sending => return answered(result),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Counts the attempt for its instance and turns it into the answer; true when a retry may help.
fn settle(
    upstream: &Upstream,
    pick: Pick,
    attempt: Attempt,
    instance: &http::uri::Authority,
) -> (Result<Response, GatewayError>, bool) {
    match attempt {
        Attempt::Answered(response) => {
            let status = response.status();
            let outcome = if status.is_server_error() {
                Outcome::Failure("5xx answer")
            } else {
                Outcome::Success
            };
            let flight = pick.report(outcome);
            let retryable = matches!(
                status,
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
            );
            (Ok(respond(response, flight, upstream.timeout)), retryable)
        }
        Attempt::TimedOut => {
            pick.report(Outcome::Failure("timeout"));
            tracing::warn!(service = %upstream.name, %instance, "upstream did not answer in time");
            (
                Err(GatewayError::Timeout {
                    service: upstream.name.to_string(),
                }),
                false,
            )
        }
        Attempt::Failed(failure) => {
            let (outcome, retryable) = match failure {
                Failure::Connect => (Outcome::Failure("connection failed"), true),
                Failure::Tls => (Outcome::Failure("TLS handshake failed"), true),
                Failure::Broken => (Outcome::Failure("broken answer"), true),
                Failure::Client(_) => (Outcome::Neutral, false),
            };
            pick.report(outcome);
            (Err(failure.into_error(upstream)), retryable)
        }
    }
}

/// The upstream's answer as the client gets it; its body may fall silent for at most `idle`.
fn respond(
    response: http::Response<PooledBody>,
    flight: Option<InFlight>,
    idle: Duration,
) -> Response {
    let (mut parts, body) = response.into_parts();
    headers::sanitize_response(&mut parts.headers);
    Response::from_parts(
        parts,
        Body::new(Tracked {
            body,
            flight,
            idle,
            silence: None,
        }),
    )
}

/// A response body that fell silent for longer than the service's timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream stopped sending its response body")]
struct Stalled;

fn classify(upstream: &Upstream, error: &ExchangeError, max_body: u64) -> Failure {
    let causes = || causes(error);
    if causes().any(|cause| cause.downcast_ref::<LengthLimitError>().is_some()) {
        return Failure::Client(GatewayError::PayloadTooLarge { limit: max_body });
    }
    if let Some(silent) = causes().find_map(|cause| cause.downcast_ref::<ClientSilent>()) {
        return Failure::Client(GatewayError::BodyStalled { idle: silent.idle });
    }
    // Our side of the exchange failed: the client's body stream broke off.
    if causes().any(|cause| {
        cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
    }) {
        tracing::debug!(error = %error_chain(error), "the request body failed");
        return Failure::Client(GatewayError::BadRequest(
            "The request body could not be read.".to_owned(),
        ));
    }
    if let ExchangeError::Connect(_) = error {
        tracing::warn!(service = %upstream.name, error = %error_chain(error), "upstream connection failed");
        Failure::Connect
    } else if matches!(error, ExchangeError::Tls(_)) || causes().any(is_tls_alert) {
        tracing::warn!(service = %upstream.name, error = %error_chain(error), "upstream TLS handshake failed");
        Failure::Tls
    } else {
        tracing::warn!(service = %upstream.name, error = %error_chain(error), "upstream answered badly");
        Failure::Broken
    }
}

/// Whether `cause` is a TLS error on an open connection: with TLS 1.3 an instance refuses the
/// gateway's client certificate only after the handshake, as an alert on the first read.
fn is_tls_alert(cause: &(dyn std::error::Error + 'static)) -> bool {
    // An `io::Error`'s `source()` skips the error it wraps: look inside it.
    cause
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .is_some_and(|inner| inner.is::<rustls::Error>())
        || cause.is::<rustls::Error>()
}

/// Whether `error` or one of its causes is an `E`.
fn in_chain<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    error.downcast_ref::<E>().is_some()
        || causes(error).any(|cause| cause.downcast_ref::<E>().is_some())
}

fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(error.source(), |cause| (*cause).source())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A response body that keeps its request counted on the instance until it ends, counts a
/// break-off (the instance went away mid-answer) against the instance, and breaks off itself
/// when the instance falls silent for longer than `idle`: the client's connection is closed
/// rather than left hanging, and the instance is counted as failing.
struct Tracked {
    body: PooledBody,
    flight: Option<InFlight>,
    idle: Duration,
    /// Started the first time the body has nothing to give, and moved on by each frame after
    /// that: most answers are read whole without waiting, and pay for no timer at all.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => frame.map(|result| result.map_err(Into::into)),
            Poll::Pending => {
                let idle = this.idle;
                let silence = this
                    .silence
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(silence.as_mut().poll(cx));
                tracing::warn!(
                    idle_ms = u64::try_from(this.idle.as_millis()).unwrap_or(u64::MAX),
                    "upstream body stalled"
                );
                Some(Err(Stalled.into()))
            }
        };
        match &frame {
            Some(Ok(_)) => {
                if let Some(silence) = this.silence.as_mut() {
                    silence.as_mut().reset(Instant::now() + this.idle);
                }
            }
            Some(Err(_)) => {
                if let Some(flight) = this.flight.take() {
                    flight.broke_off();
                }
            }
            None => this.flight = None,
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

    use futures_util::{stream, StreamExt};
    use http_body_util::StreamBody;

    use super::*;
    use crate::clock::{Clock, ManualClock};

    /// A body that sends `first` and then nothing, ever, as a stalled client does.
    fn stalled_after(first: &'static [u8]) -> Body {
        let frames = stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(first)))])
            .chain(stream::pending());
        Body::new(StreamBody::new(frames))
    }

    #[tokio::test]
    async fn a_body_read_whole_fails_as_stalled_when_the_client_falls_silent() {
        let idle = Duration::from_millis(50);
        let read = read_whole(stalled_after(b"{"), 1024, idle).await;
        assert_eq!(read, Err(BodyError::Stalled));
    }

    #[tokio::test]
    async fn a_body_read_whole_is_bounded_and_complete() {
        let idle = Duration::from_secs(5);
        let whole = read_whole(Body::from("0123456789"), 10, idle).await;
        assert_eq!(whole, Ok(Bytes::from_static(b"0123456789")));
        let over = read_whole(Body::from("0123456789!"), 10, idle).await;
        assert_eq!(over, Err(BodyError::TooLarge));
    }

    #[tokio::test]
    async fn a_replayable_body_that_stalls_is_408_before_any_instance_is_tried() {
        let limits = Limits {
            max_body_bytes: 1024,
            body_idle_timeout: Duration::from_millis(50),
            header_read_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            max_connections: 10,
            max_connections_per_ip: 10,
        };
        let body = stalled_after(b"{");
        // A declared length makes it small enough to keep for a retry.
        let body = Body::new(SizedHint(body, 100));
        match Payload::read(body, true, &limits).await {
            Err(error) => assert_eq!(error.status(), StatusCode::REQUEST_TIMEOUT),
            Ok(_) => panic!("a stalled body was read"),
        }
    }

    /// A service instance on a free port that reads requests (and whatever body follows) but
    /// never answers, or (`deaf`) never reads at all.
    async fn silent_instance(deaf: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                if deaf {
                    held.push(socket);
                } else {
                    tokio::spawn(async move {
                        let mut sink = tokio::io::sink();
                        let _ = tokio::io::copy(&mut socket, &mut sink).await;
                    });
                }
            }
        });
        format!("http://{address}")
    }

    /// One instance that one counted failure ejects for a minute.
    fn harsh_upstream(url: &str) -> Upstream {
        Upstream::new("s", &harsh_settings(url), Clock::System)
    }

    fn harsh_settings(url: &str) -> crate::config::ServiceSettings {
        crate::config::ServiceSettings {
            upstreams: vec![url.parse().unwrap()],
            timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(1),
            balance: crate::config::Balance::RoundRobin,
            health: None,
            protocol: crate::config::UpstreamProtocol::Http1,
            tls: None,
            breaker: crate::config::BreakerSettings {
                failures: 1,
                backoff: Duration::from_secs(60),
                max_backoff: Duration::from_secs(60),
                decay: None,
            },
            retries: crate::config::RetrySettings {
                attempts: 2,
                budget_percent: 20,
            },
            required: true,
        }
    }

    fn patch(body: Body) -> Outbound {
        Outbound {
            method: Method::PATCH,
            target: "/x".to_owned(),
            headers: HeaderMap::new(),
            body,
        }
    }

    fn quick_limits() -> Limits {
        Limits {
            max_body_bytes: 1024,
            body_idle_timeout: Duration::from_millis(100),
            header_read_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            max_connections: 10,
            max_connections_per_ip: 10,
        }
    }

    #[tokio::test]
    async fn a_streamed_body_the_client_stalls_is_408_and_leaves_the_instance_alone() {
        let upstream = harsh_upstream(&silent_instance(false).await);
        let body = Body::new(SizedHint(stalled_after(b"{"), 100));
        let timeout = Duration::from_millis(300);
        let error = forward(
            &upstream,
            patch(body),
            timeout,
            &quick_limits(),
            &mut Attempted::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(error.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(
            !upstream.instances()[0].is_ejected(),
            "not the instance's fault"
        );
        assert_eq!(upstream.instances()[0].in_flight(), 0);
    }

    #[tokio::test]
    async fn a_stalled_body_never_holds_the_trial_of_an_ejected_instance() {
        use super::super::instance::Availability::TrialDue;

        let settings = harsh_settings(&silent_instance(false).await);
        let time = ManualClock::starting_now();
        let upstream = Arc::new(Upstream::new("s", &settings, Clock::from(&time)));
        let instance = Arc::clone(&upstream.instances()[0]);
        upstream.pick(&[]).unwrap().report(Outcome::Failure("5xx"));
        time.advance(settings.breaker.backoff);
        assert_eq!(instance.availability(upstream.now()), TrialDue);

        // A client that sends one byte of its body and stalls, when the trial is due.
        let (stalling, stalled_now) = tokio::sync::oneshot::channel();
        let frames = stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{")))])
            .chain(stream::once(async move {
                // Asked for more than its first byte: the client falls silent from here.
                let _ = stalling.send(());
                std::future::pending().await
            }));
        let body = Body::new(SizedHint(Body::new(StreamBody::new(frames)), 100_000));
        let limits = Limits {
            max_body_bytes: 1 << 20,
            ..quick_limits()
        };
        let stalled = {
            let upstream = Arc::clone(&upstream);
            tokio::spawn(async move {
                forward(
                    &upstream,
                    patch(body),
                    Duration::from_secs(5),
                    &limits,
                    &mut Attempted::default(),
                )
                .await
            })
        };
        stalled_now.await.unwrap();
        assert_eq!(
            instance.availability(upstream.now()),
            TrialDue,
            "while the client stalls, the trial is free for a request that can decide it"
        );
        let error = stalled.await.unwrap().unwrap_err();
        assert_eq!(error.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(instance.availability(upstream.now()), TrialDue);
        assert_eq!(instance.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_streamed_body_the_upstream_stops_reading_is_504_and_counts_against_it() {
        let upstream = harsh_upstream(&silent_instance(true).await);
        // Far more than the sockets between us hold: the upstream must read to take it all.
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let frames =
            stream::iter((0..1024).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))));
        let body = Body::new(StreamBody::new(frames));
        let limits = Limits {
            max_body_bytes: 1 << 30,
            ..quick_limits()
        };
        let error = forward(
            &upstream,
            patch(body),
            Duration::from_millis(300),
            &limits,
            &mut Attempted::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(upstream.instances()[0].is_ejected(), "the upstream's fault");
    }

    /// A service instance on a free port that reads requests but never answers, and counts the
    /// connections it is sent.
    async fn counting_instance() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let contacted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&contacted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut socket, &mut tokio::io::sink()).await;
                });
            }
        });
        (format!("http://{address}"), contacted)
    }

    #[tokio::test]
    async fn a_stalled_put_on_a_retrying_service_is_408_spends_no_retry_and_blames_no_instance() {
        let (first, first_contacted) = counting_instance().await;
        let (second, second_contacted) = counting_instance().await;
        let mut settings = harsh_settings(&first);
        settings.upstreams.push(second.parse().unwrap());
        settings.retries.attempts = 3;
        let upstream = Upstream::new("s", &settings, Clock::System);
        let full = upstream.budget.balance();
        assert!(full > 0, "the budget starts with retries to spend");

        // PUT is idempotent and 100 declared bytes are kept for a replay: the retry path.
        let request = Outbound {
            method: Method::PUT,
            target: "/x".to_owned(),
            headers: HeaderMap::new(),
            body: Body::new(SizedHint(stalled_after(b"{"), 100)),
        };
        let error = forward(
            &upstream,
            request,
            Duration::from_millis(300),
            &quick_limits(),
            &mut Attempted::default(),
        )
        .await
        .unwrap_err();

        assert_eq!(error.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(upstream.budget.balance(), full, "no retry was spent");
        for (instance, contacted) in upstream
            .instances()
            .iter()
            .zip([&first_contacted, &second_contacted])
        {
            assert!(!instance.is_ejected(), "not the instance's fault");
            assert_eq!(instance.in_flight(), 0);
            assert_eq!(
                contacted.load(std::sync::atomic::Ordering::SeqCst),
                0,
                "no instance is tried with a body the client never finished"
            );
        }
    }

    /// `body` declaring an exact length, as a request with `Content-Length` does.
    struct SizedHint(Body, u64);

    impl http_body::Body for SizedHint {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Pin::new(&mut self.get_mut().0).poll_frame(cx)
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.1)
        }
    }
}
