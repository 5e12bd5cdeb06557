//! The answer's body, streamed to the client as it arrives and copied for the store on the way.
//! A task of its own reads the service's body (a [`relay`]), so the entry is stored, and the
//! requests waiting on this one get it, when the SERVICE's body is complete, however slowly the
//! client reads, or if it hangs up: the client's copy queues in memory meanwhile, no more than
//! the route's body limit. A body that grows past the limit, ends in trailers, or is not
//! complete within the time the waiters wait, is not stored: the waiters are released and the
//! rest of the body passes straight from the service to the client (its pace again). A body cut
//! short is not stored.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::flight::Leader;
use super::{CacheKey, Entry, Stored};
use crate::app::App;

/// The bytes all recordings in flight may hold at once (the cache's memory bound): without it
/// each concurrent miss buffers up to its route's limit, and ten thousand distinct misses of
/// 1 MiB hold 10 GiB outside the store's bound. A recording that cannot take its next chunk
/// from the budget stops recording and passes the body through (nothing stored).
#[derive(Clone)]
pub struct Budget(Arc<Semaphore>);

impl Budget {
    pub fn new(bytes: u64) -> Self {
        let bytes = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self(Arc::new(Semaphore::new(bytes)))
    }

    /// Adds `bytes` to what `held` holds, if the budget has them.
    fn take(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> bool {
        let Ok(bytes) = u32::try_from(bytes) else {
            return false;
        };
        let Ok(more) = Arc::clone(&self.0).try_acquire_many_owned(bytes) else {
            return false;
        };
        match held {
            Some(held) => held.merge(more),
            None => *held = Some(more),
        }
        true
    }

    /// Bytes not held by any recording.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// What becomes the entry once the body is complete.
pub struct Pending {
    pub app: App,
    pub key: CacheKey,
    /// The entry without its body; `stored` is set when it is stored.
    pub entry: Entry,
    pub max_body: u64,
    /// Present when other requests wait for this one.
    pub leader: Option<Leader>,
    /// Whether the store takes it (not while Redis does not answer): else it only goes to the
    /// waiting requests.
    pub persist: bool,
    /// What the recording's copy is counted against.
    pub budget: Budget,
    /// Told when the entry reaches the store (a background refresh waits on it to log how it
    /// ended); dropped unsent when it does not.
    pub stored: Option<oneshot::Sender<()>>,
}

impl Pending {
    fn store(self, body: Bytes) {
        let Pending {
            app,
            key,
            mut entry,
            leader,
            persist,
            stored,
            ..
        } = self;
        entry.body = body;
        entry.stored = Stored::at(app.cache.clock.monotonic_ms());
        let entry = Arc::new(entry);
        if persist {
            app.cache.store(&app, key, Arc::clone(&entry));
            app.observe.gateway.cache("stored");
            if let Some(stored) = stored {
                let _ = stored.send(());
            }
        }
        if let Some(leader) = leader {
            leader.land(entry);
        }
    }
}

/// What the reading task hands the client's body.
enum Relayed {
    Frame(Result<Frame<Bytes>, axum::Error>),
    /// Recording is over: the rest comes straight from the service.
    Rest(Body),
}

/// The service's `body`, read by a task of its own that records it for `pending` (see the
/// module docs); `within` bounds how long it reads apart from the client (the waiters' bound).
/// What it returns is the client's body.
pub fn relay(body: Body, pending: Pending, within: Duration) -> Body {
    // A body known empty is never polled: stored now.
    if body.is_end_stream() {
        pending.store(Bytes::new());
        return body;
    }
    let hint = body.size_hint();
    let (to_client, from_service) = mpsc::unbounded_channel();
    tokio::spawn(read(body, pending, Instant::now() + within, to_client));
    Body::new(Relay {
        from_service,
        rest: None,
        hint,
    })
}

/// Reads `body` to its end for `pending`, each frame also sent on to the client (gone or not:
/// the waiters still want the entry). The queue holds at most the limit: past it, or past
/// `deadline`, the rest is handed to the client to read at its own pace.
async fn read(
    mut body: Body,
    pending: Pending,
    deadline: Instant,
    to_client: mpsc::UnboundedSender<Relayed>,
) {
    let max_body = pending.max_body;
    let budget = pending.budget.clone();
    let mut pending = Some(pending);
    let mut copied = BytesMut::new();
    // Given back when the task ends: the stored entry is then counted by the store's bound.
    let mut held = None;
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
            // Dropping `pending` releases the waiters, who go to the service themselves.
            if let Some(pending) = pending.take() {
                pending.app.observe.gateway.cache("body_too_slow");
            }
            let _ = to_client.send(Relayed::Rest(body));
            return;
        };
        let Some(frame) = frame else {
            if let Some(pending) = pending.take() {
                pending.store(copied.freeze());
            }
            return;
        };
        let refused = match &frame {
            Ok(frame) => match frame.data_ref() {
                Some(data) if (copied.len() + data.len()) as u64 > max_body => Some("too_large"),
                Some(data) if !budget.take(&mut held, data.len()) => Some("budget_exceeded"),
                Some(_) => None,
                None => Some("trailers"),
            },
            Err(_) => Some("body_failed"),
        };
        if let Some(outcome) = refused {
            // Over the limit or the budget, trailers, or an error: nothing is stored.
            if let Some(pending) = pending.take() {
                pending.app.observe.gateway.cache(outcome);
            }
            let errored = frame.is_err();
            let _ = to_client.send(Relayed::Frame(frame));
            if !errored {
                let _ = to_client.send(Relayed::Rest(body));
            }
            return;
        }
        if let Some(data) = frame.as_ref().ok().and_then(Frame::data_ref) {
            copied.extend_from_slice(data);
        }
        // Stored before the last frame goes out, so a client that read it all and asks again
        // finds the entry (the body says it has ended once its last byte is read).
        if body.is_end_stream() {
            if let Some(pending) = pending.take() {
                pending.store(std::mem::take(&mut copied).freeze());
            }
            let _ = to_client.send(Relayed::Frame(frame));
            return;
        }
        let _ = to_client.send(Relayed::Frame(frame));
    }
}

/// The client's body: the frames the reading task queued, then, if recording stopped early,
/// the service's body itself.
struct Relay {
    from_service: mpsc::UnboundedReceiver<Relayed>,
    rest: Option<Body>,
    /// The service body's size, as it said at the start (`Content-Length`).
    hint: SizeHint,
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        loop {
            if let Some(rest) = &mut self.rest {
                return Pin::new(rest).poll_frame(cx);
            }
            match self.from_service.poll_recv(cx) {
                Poll::Ready(Some(Relayed::Frame(frame))) => return Poll::Ready(Some(frame)),
                Poll::Ready(Some(Relayed::Rest(rest))) => self.rest = Some(rest),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_share_one_budget_and_give_it_back_when_done() {
        let budget = Budget::new(1000);
        let (mut first, mut second) = (None, None);
        assert!(budget.take(&mut first, 400));
        assert!(budget.take(&mut first, 200), "a recording's chunks add up");
        assert!(
            !budget.take(&mut second, 600),
            "another recording cannot take what the first holds"
        );
        assert!(budget.take(&mut second, 400));
        assert_eq!(budget.available(), 0);
        drop(first);
        assert_eq!(
            budget.available(),
            600,
            "a finished recording gives its bytes back"
        );
    }

    #[test]
    fn a_chunk_larger_than_the_whole_budget_is_refused() {
        let budget = Budget::new(10);
        assert!(!budget.take(&mut None, 11));
        assert!(!budget.take(&mut None, usize::MAX));
        assert_eq!(budget.available(), 10);
    }
}
