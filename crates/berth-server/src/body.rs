//! Request bodies on their way into the registry: cut off when the client stalls, and read to
//! their end even when the handler refuses them, so the client hears why.

use std::time::Duration;

use axum::body::Body;

/// The request body as the registry's byte stream, cut off when the client sends nothing for
/// `idle`: a stalled or vanished client must not hold an upload session's lock forever. What
/// arrived before the cut is kept, so the session stays resumable from its reported offset.
pub(crate) fn body_stream(body: Body, idle: Duration) -> berth_registry::ByteStream {
    use futures_util::StreamExt;
    let data = body.into_data_stream();
    futures_util::stream::unfold(Some(data), move |state| async move {
        let mut data = state?;
        match tokio::time::timeout(idle, data.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(data))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client sent no data for {} s", idle.as_secs_f64()),
                )),
                None,
            )),
        }
    })
    .boxed()
}

/// Most of a request body berth reads and discards after refusing the request.
const DRAIN_LIMIT: u64 = 1 << 30;
/// How long the discarding waits for the client's next bytes.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Wraps a request body so that, if the handler drops it unfinished (an upload refused
/// before or while its body arrives: wrong offset, unknown session, full disk), the rest is
/// still read and discarded in the background, up to [`DRAIN_LIMIT`]. Without this the
/// connection closes with unread data, the kernel answers the client's next bytes with a
/// reset, and a client still sending never sees the answer that says why (or where to resume).
pub(crate) fn drain_on_drop(body: Body) -> Body {
    use axum::body::HttpBody as _;
    if body.is_end_stream() {
        return body;
    }
    Body::from_stream(DrainOnDrop {
        data: Some(body.into_data_stream()),
        finished: false,
    })
}

struct DrainOnDrop {
    data: Option<axum::body::BodyDataStream>,
    finished: bool,
}

impl futures_util::Stream for DrainOnDrop {
    type Item = Result<bytes::Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let Some(data) = self.data.as_mut() else {
            return Poll::Ready(None);
        };
        let next = std::pin::Pin::new(data).poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            self.finished = true;
        }
        next
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        use futures_util::StreamExt;
        let Some(mut data) = self.data.take() else {
            return;
        };
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut drained = 0u64;
            while let Ok(Some(Ok(chunk))) = tokio::time::timeout(DRAIN_IDLE, data.next()).await {
                drained += chunk.len() as u64;
                if drained > DRAIN_LIMIT {
                    break;
                }
            }
        });
    }
}
