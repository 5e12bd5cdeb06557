//! [`Observed`]: a body that counts its bytes and says once when it is over, so a request is
//! measured and logged when its answer has really gone out (or the client has gone away), not
//! when the handler returned.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

pin_project_lite::pin_project! {
    /// Wraps a body, counts the bytes of its data frames, and calls `on_end(bytes, complete)`
    /// exactly once: with `complete = true` when the body has ended, or `false` when it failed
    /// or was dropped before its end (the client went away, or the server gave up on it).
    pub struct Observed<B, F>
    where
        B: Body,
        F: FnOnce(u64, bool),
    {
        #[pin]
        body: B,
        bytes: u64,
        on_end: Option<F>,
    }

    impl<B, F> PinnedDrop for Observed<B, F>
    where
        B: Body,
        F: FnOnce(u64, bool),
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_end) = this.on_end.take() {
                // A server need not poll a body that says it has ended (an empty one, or one
                // whose last frame was its data), so the end is judged by the body itself.
                on_end(*this.bytes, this.body.is_end_stream());
            }
        }
    }
}

impl<B, F> Observed<B, F>
where
    B: Body,
    F: FnOnce(u64, bool),
{
    pub fn new(body: B, on_end: F) -> Self {
        Self {
            body,
            bytes: 0,
            on_end: Some(on_end),
        }
    }
}

impl<B, F> Body for Observed<B, F>
where
    B: Body,
    F: FnOnce(u64, bool),
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.body.as_mut().poll_frame(cx));
        let complete = match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.remaining() as u64;
                }
                this.body.is_end_stream().then_some(true)
            }
            Some(Err(_)) => Some(false),
            None => Some(true),
        };
        if let Some(complete) = complete {
            if let Some(on_end) = this.on_end.take() {
                on_end(*this.bytes, complete);
            }
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
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    type Ends = Arc<Mutex<Vec<(u64, bool)>>>;

    fn recorder() -> (Ends, impl FnOnce(u64, bool)) {
        let ends = Ends::default();
        let sink = Arc::clone(&ends);
        (ends, move |bytes, complete| {
            sink.lock().unwrap().push((bytes, complete))
        })
    }

    fn chunks(
        parts: &[&'static str],
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = parts
            .iter()
            .map(|part| Ok(Frame::data(Bytes::from_static(part.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_reports_its_bytes_once_as_complete() {
        let (ends, on_end) = recorder();
        let body = Observed::new(chunks(&["hello, ", "world"]), on_end);

        let collected = body.collect().await.unwrap().to_bytes();

        assert_eq!(collected, "hello, world");
        assert_eq!(*ends.lock().unwrap(), vec![(12, true)]);
    }

    #[tokio::test]
    async fn a_body_whose_last_frame_ends_it_is_complete_without_another_poll() {
        let (ends, on_end) = recorder();
        let mut body = Observed::new(Full::new(Bytes::from_static(b"abc")), on_end);

        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert_eq!(*ends.lock().unwrap(), vec![(3, true)], "reported at once");

        drop(body);
        assert_eq!(ends.lock().unwrap().len(), 1, "and only once");
    }

    #[tokio::test]
    async fn a_body_dropped_half_way_reports_what_went_out_as_incomplete() {
        let (ends, on_end) = recorder();
        let mut body = Observed::new(chunks(&["first", "second"]), on_end);

        body.frame().await.unwrap().unwrap();
        drop(body);

        assert_eq!(*ends.lock().unwrap(), vec![(5, false)]);
    }

    #[test]
    fn an_empty_body_never_polled_is_complete() {
        let (ends, on_end) = recorder();

        drop(Observed::new(http_body_util::Empty::<Bytes>::new(), on_end));

        assert_eq!(*ends.lock().unwrap(), vec![(0, true)]);
    }

    #[tokio::test]
    async fn a_body_that_fails_reports_incomplete() {
        let (ends, on_end) = recorder();
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("connection reset")),
        ];
        let body = Observed::new(StreamBody::new(futures_util::stream::iter(frames)), on_end);

        assert!(body.collect().await.is_err());

        assert_eq!(*ends.lock().unwrap(), vec![(2, false)]);
    }
}
