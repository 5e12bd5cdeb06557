//! The answer's body, streamed to the client as it arrives and copied for the store on the way:
//! nothing waits for the whole body, and a body that grows past the route's limit stops being
//! copied (the rest passes through; nothing is stored). Stored once the last byte went out to
//! the client; a body cut short, or with trailers, is not stored.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use super::flight::Leader;
use super::{CacheKey, Entry};
use crate::app::App;

/// What becomes the entry once the body is complete.
pub struct Pending {
    pub app: App,
    pub key: CacheKey,
    /// The entry without its body; `stored_at` is set when it is stored.
    pub entry: Entry,
    pub max_body: u64,
    /// Present when other requests wait for this one.
    pub leader: Option<Leader>,
    /// Whether the store takes it (not while Redis does not answer): else it only goes to the
    /// waiting requests.
    pub persist: bool,
}

impl Pending {
    fn store(self, body: Bytes) {
        let Pending {
            app,
            key,
            mut entry,
            leader,
            persist,
            ..
        } = self;
        entry.body = body;
        entry.stored_at = Instant::now();
        let entry = Arc::new(entry);
        if persist {
            app.cache.store(&app, key, Arc::clone(&entry));
        }
        if let Some(leader) = leader {
            leader.land(entry);
        }
    }
}

/// A body that records what it passes on.
pub struct Recording {
    inner: Body,
    copied: BytesMut,
    /// `None` once stored or given up (dropping it releases any waiters).
    pending: Option<Pending>,
}

impl Recording {
    pub fn new(inner: Body, pending: Pending) -> Self {
        let mut recording = Self {
            copied: BytesMut::new(),
            pending: Some(pending),
            inner,
        };
        // A body known empty is never polled: stored now.
        if recording.inner.is_end_stream() {
            recording.complete();
        }
        recording
    }

    fn complete(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.store(std::mem::take(&mut self.copied).freeze());
        }
    }

    fn copy(&mut self, data: &Bytes) {
        let Some(pending) = &self.pending else {
            return;
        };
        if (self.copied.len() + data.len()) as u64 > pending.max_body {
            self.pending = None;
            self.copied = BytesMut::new();
            return;
        }
        self.copied.extend_from_slice(data);
    }
}

impl HttpBody for Recording {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    let data = data.clone();
                    self.copy(&data);
                    // The server stops polling once the body says it has ended.
                    if self.inner.is_end_stream() {
                        self.complete();
                    }
                }
                None => self.pending = None,
            },
            Poll::Ready(Some(Err(_))) => self.pending = None,
            Poll::Ready(None) => self.complete(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
