//! Two upgraded connections joined byte for byte (issue 16), until either side closes or the
//! gateway closes both: the route's idle timeout (no byte either way) and maximum lifetime,
//! and, for a socket opened with a token, that token's revocation or expiry.
//!
//! Frames are not parsed: what the client and the instance agreed on (subprotocol, extensions
//! such as permessage-deflate) is theirs, and a ping either way counts as activity. So the
//! gateway cannot end a socket with a close frame of its own (it might cut into a frame being
//! relayed): it closes both connections, which a WebSocket client reports as code 1006.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::config::WebSocketRule;
use crate::state::watchers::Watch;

/// Why a socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Both sides closed their end (the WebSocket closing handshake, or a plain close).
    Ended,
    /// A connection failed (reset, or a write to a side that had gone).
    Broken,
    IdleTimeout,
    MaxLifetime,
    /// The token it was opened with was revoked (logout, a session or user cut off).
    TokenRevoked,
    TokenExpired,
    /// The client's side never completed its upgrade.
    ClientGone,
}

impl Closed {
    /// The name metrics and the access log give it: a closed set.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ended => "closed",
            Self::Broken => "broken",
            Self::IdleTimeout => "idle_timeout",
            Self::MaxLifetime => "max_lifetime",
            Self::TokenRevoked => "token_revoked",
            Self::TokenExpired => "token_expired",
            Self::ClientGone => "client_gone",
        }
    }
}

/// A socket's life as the access log tells it.
#[derive(Debug, Clone, Copy)]
pub struct Spliced {
    pub closed: Closed,
    /// Bytes the client sent through the socket (frames, headers included).
    pub from_client: u64,
    /// Bytes the instance sent through it.
    pub from_upstream: u64,
}

/// What ends a socket opened with a token: a revocation naming it that the mirror confirms, or
/// the token's expiry.
pub struct Revocable {
    pub watch: Watch,
    /// Whether the token is revoked now (asked of the mirror when a revocation names it).
    pub is_revoked: Box<dyn Fn() -> bool + Send + Sync>,
    /// When the token expires; the socket closes then.
    pub expires: Instant,
}

/// Joins `client` and `upstream` until the socket ends (see the module docs).
pub async fn run<C, U>(
    client: C,
    upstream: U,
    rule: WebSocketRule,
    revocable: Option<Revocable>,
) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let meter = Meter::new();
    let mut client = Metered {
        io: client,
        meter: &meter,
        read: &meter.from_client,
    };
    let mut upstream = Metered {
        io: upstream,
        meter: &meter,
        read: &meter.from_upstream,
    };
    let closed = {
        // One copy each way; the first to end (its side closed, or failed) ends the socket. A
        // WebSocket has no use for a half-closed connection: after the closing handshake the
        // server closes, and a side that closes without one has left. Waiting for both (as
        // `copy_bidirectional` does) would hold the socket open until its idle timeout for a
        // client that keeps its end after the handshake.
        let (mut client_read, mut client_write) = tokio::io::split(&mut client);
        let (mut upstream_read, mut upstream_write) = tokio::io::split(&mut upstream);
        let mut copy = std::pin::pin!(async {
            tokio::select! {
                result = tokio::io::copy(&mut client_read, &mut upstream_write) => result,
                result = tokio::io::copy(&mut upstream_read, &mut client_write) => result,
            }
        });
        let mut lifetime = std::pin::pin!(tokio::time::sleep(rule.max_lifetime));
        let expires = revocable.as_ref().map(|r| r.expires);
        let mut expiry = std::pin::pin!(until(expires));
        loop {
            let idle_left = rule.idle_timeout.saturating_sub(meter.quiet_for());
            if idle_left.is_zero() {
                break Closed::IdleTimeout;
            }
            tokio::select! {
                result = copy.as_mut() => break match result {
                    Ok(_) => Closed::Ended,
                    Err(error) => {
                        tracing::debug!(%error, "a WebSocket connection failed");
                        Closed::Broken
                    }
                },
                () = lifetime.as_mut() => break Closed::MaxLifetime,
                () = expiry.as_mut() => break Closed::TokenExpired,
                () = revoked(revocable.as_ref()) => {
                    if revocable.as_ref().is_some_and(|r| (r.is_revoked)()) {
                        break Closed::TokenRevoked;
                    }
                }
                // Wakes to look at the idle clock again: bytes may have moved meanwhile.
                () = tokio::time::sleep(idle_left) => {}
            }
        }
    };
    // Dropping both connections (with `client` and `upstream`) closes them: the side that was
    // still open sees its connection end after the last bytes relayed to it.
    Spliced {
        closed,
        from_client: meter.from_client.load(Ordering::Relaxed),
        from_upstream: meter.from_upstream.load(Ordering::Relaxed),
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn revoked(revocable: Option<&Revocable>) {
    match revocable {
        Some(revocable) => revocable.watch.revoked().await,
        None => std::future::pending().await,
    }
}

/// Bytes each way and when the last one arrived.
struct Meter {
    born: Instant,
    /// Milliseconds after `born` of the last read that brought bytes.
    last_ms: AtomicU64,
    from_client: AtomicU64,
    from_upstream: AtomicU64,
}

impl Meter {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
            from_upstream: AtomicU64::new(0),
        }
    }

    fn quiet_for(&self) -> Duration {
        let last = self.born + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        last.elapsed()
    }

    fn arrived(&self, counter: &AtomicU64, bytes: usize) {
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }
}

/// One side of the socket, counting what is read from it.
struct Metered<'m, T> {
    io: T,
    meter: &'m Meter,
    /// This side's counter in `meter`.
    read: &'m AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.meter.arrived(this.read, read);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const RULE: WebSocketRule = WebSocketRule {
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(3600),
    };

    #[tokio::test]
    async fn bytes_pass_both_ways_and_are_counted_until_a_side_closes() {
        let (client, mut client_end) = tokio::io::duplex(64);
        let (upstream, mut upstream_end) = tokio::io::duplex(64);
        let splice = tokio::spawn(run(client, upstream, RULE, None));
        client_end.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        upstream_end.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        upstream_end.write_all(b"hi!").await.unwrap();
        let mut got = [0u8; 3];
        client_end.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi!");
        drop(upstream_end);
        let spliced = splice.await.unwrap();
        assert_eq!(spliced.closed, Closed::Ended);
        assert_eq!((spliced.from_client, spliced.from_upstream), (5, 3));
        let mut rest = Vec::new();
        client_end.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "the client's side is closed with the upstream's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_socket_is_closed_at_its_idle_timeout() {
        let (client, _client_end) = tokio::io::duplex(64);
        let (upstream, _upstream_end) = tokio::io::duplex(64);
        let rule = WebSocketRule {
            idle_timeout: Duration::from_secs(5),
            ..RULE
        };
        let spliced = run(client, upstream, rule, None).await;
        assert_eq!(spliced.closed, Closed::IdleTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_socket_is_closed_at_its_lifetime() {
        let (client, mut client_end) = tokio::io::duplex(1024);
        let (upstream, mut upstream_end) = tokio::io::duplex(1024);
        let rule = WebSocketRule {
            idle_timeout: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(20),
        };
        let chatter = tokio::spawn(async move {
            let mut buf = [0u8; 4];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client_end.write_all(b"ping").await.is_err()
                    || upstream_end.read_exact(&mut buf).await.is_err()
                {
                    break;
                }
            }
        });
        let spliced = run(client, upstream, rule, None).await;
        assert_eq!(spliced.closed, Closed::MaxLifetime);
        assert!(spliced.from_client >= 4 * 15, "it was busy until the end");
        chatter.abort();
    }
}
