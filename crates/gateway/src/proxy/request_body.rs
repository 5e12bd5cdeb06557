//! A client's request body on its way to a service, streamed: whose turn it is.
//!
//! A body that the *client* stops sending is the client's fault: after `limits.body_idle_timeout`
//! of silence it fails with [`ClientSilent`] (answered 408, never counted against the instance).
//! The service's `timeout` for its answer runs only while it is the upstream's turn: from the
//! moment the whole body has been handed over (Envoy starts its route timeout when the
//! downstream request is complete), or from the moment a part was handed over and the upstream
//! has not asked for the next one (it stopped reading: its fault, 504). [`Progress`] tells the
//! attempt which turn it is; see `forward::attempt`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use http_body_util::Limited;
use tokio::time::{Instant, Sleep};

use crate::clock::monotonic_ms;

/// Since when the upstream has had everything the client sent so far (ms, [`crate::clock::monotonic_ms`]), or
/// [`CLIENT_TURN`] while the gateway waits for the client.
#[derive(Debug)]
pub struct Progress(AtomicU64);

/// [`crate::clock::monotonic_ms`] is never 0, so 0 can mean "waiting for the client".
const CLIENT_TURN: u64 = 0;

impl Progress {
    /// The upstream's turn from `now`: nothing has been sent yet, it has to read first.
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(monotonic_ms())))
    }

    /// Since when it has been the upstream's turn; `None` while the client's.
    pub fn upstream_turn_since(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            CLIENT_TURN => None,
            since => Some(since),
        }
    }
}

/// The client sent no part of its body for `idle`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no part of its request body for {idle:?}")]
pub struct ClientSilent {
    pub idle: Duration,
}

/// A streamed request body, bounded in size (`Limited`) and in the client's silence.
pub struct Watched {
    body: Limited<Body>,
    progress: Arc<Progress>,
    idle: Duration,
    /// Armed when the gateway starts waiting for the client; created on the first wait.
    silence: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl Watched {
    pub fn new(body: Body, max_body: usize, idle: Duration, progress: Arc<Progress>) -> Self {
        Self {
            body: Limited::new(body, max_body),
            progress,
            idle,
            silence: None,
            waiting: false,
        }
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                // Handed to the upstream: its turn until it asks for more.
                this.waiting = false;
                this.progress.0.store(monotonic_ms(), Ordering::Release);
                Poll::Ready(frame)
            }
            Poll::Pending => {
                // Only the time spent waiting for the client counts: while the upstream does not
                // ask for more (its socket is full), this body is not polled and no clock runs.
                if !this.waiting {
                    this.waiting = true;
                    this.progress.0.store(CLIENT_TURN, Ordering::Release);
                    let until = Instant::now() + this.idle;
                    match &mut this.silence {
                        Some(silence) => silence.as_mut().reset(until),
                        None => this.silence = Some(Box::pin(tokio::time::sleep_until(until))),
                    }
                }
                if let Some(silence) = &mut this.silence {
                    ready!(silence.as_mut().poll(cx));
                }
                // Debug: any client can cause this at will, and a line at info each time would
                // let it flood the logs; the client is told with its 408.
                tracing::debug!(
                    idle_ms = u64::try_from(this.idle.as_millis()).unwrap_or(u64::MAX),
                    "the client stopped sending its request body"
                );
                Poll::Ready(Some(Err(ClientSilent { idle: this.idle }.into())))
            }
        }
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

    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    use super::*;

    /// A body whose frames the test sends by hand, as a client would.
    fn client_body() -> (mpsc::Sender<&'static str>, Body) {
        let (sender, receiver) = mpsc::channel(1);
        let frames = texts_of(receiver).map(|text: &'static str| {
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(text.as_bytes())))
        });
        (sender, Body::new(StreamBody::new(frames)))
    }

    fn texts_of(
        mut receiver: mpsc::Receiver<&'static str>,
    ) -> impl futures_util::Stream<Item = &'static str> {
        futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }

    #[tokio::test]
    async fn the_turn_passes_between_client_and_upstream_as_the_body_flows() {
        let progress = Progress::new();
        assert!(
            progress.upstream_turn_since().is_some(),
            "nothing sent yet: the upstream's turn"
        );
        let (client, body) = client_body();
        let mut watched = Watched::new(body, 1024, Duration::from_secs(5), Arc::clone(&progress));

        let waiting = tokio::time::timeout(Duration::from_millis(20), watched.frame()).await;
        assert!(waiting.is_err(), "no frame yet");
        assert_eq!(
            progress.upstream_turn_since(),
            None,
            "waiting for the client"
        );

        client.send("{}").await.unwrap();
        let frame = watched.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "{}");
        assert!(
            progress.upstream_turn_since().is_some(),
            "handed over: the upstream's turn"
        );

        drop(client);
        assert!(watched.frame().await.is_none(), "the end");
        assert!(
            progress.upstream_turn_since().is_some(),
            "complete: the upstream's turn for good"
        );
    }

    #[tokio::test]
    async fn a_client_silent_for_the_idle_timeout_fails_the_body() {
        let (client, body) = client_body();
        let idle = Duration::from_millis(50);
        let mut watched = Watched::new(body, 1024, idle, Progress::new());
        client.send("{").await.unwrap();
        assert!(watched.frame().await.unwrap().is_ok());

        let error = watched.frame().await.unwrap().unwrap_err();
        let silent = error.downcast_ref::<ClientSilent>().expect("ClientSilent");
        assert_eq!(silent.idle, idle);
        drop(client);
    }

    /// Counts the events logged at info or above (what a production log level shows).
    #[derive(Default)]
    struct Shown(std::sync::atomic::AtomicUsize);

    impl tracing::Subscriber for Shown {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() <= tracing::Level::INFO {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test]
    async fn stalled_bodies_do_not_reach_the_log_at_info() {
        let shown = Arc::new(Shown::default());
        // This test's thread only; the runtime is single-threaded, so the body is polled here.
        let _logging = tracing::subscriber::set_default(Arc::clone(&shown));
        for _ in 0..5 {
            let (client, body) = client_body();
            let mut watched = Watched::new(body, 1024, Duration::from_millis(10), Progress::new());
            client.send("{").await.unwrap();
            assert!(watched.frame().await.unwrap().is_ok());
            assert!(watched.frame().await.unwrap().is_err(), "stalled");
        }
        assert_eq!(
            shown.0.load(Ordering::SeqCst),
            0,
            "a client could flood the log at will"
        );
    }
}
