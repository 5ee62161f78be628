//! The open connections as the accept loop sees them, so that a client that connects and
//! then sends nothing, or stops reading what it asked for, cannot hold a file handle for
//! ever, and a crowd of such clients cannot lock out the rest.
//!
//! A connection is *waiting on its client* when it has no request in flight (idle), or when
//! everything it has in flight is a response the client is not taking (hyper was handed a
//! frame and has not come back for the next: the client's window or socket buffer is full).
//! It is never waiting on its client while a handler runs, a request body is being read, or a
//! response waits for storage. From that alone follow the limits (see [`Limits`]):
//! - a connection waiting on its client longer than its limit is closed: the header timeout
//!   until its first request head has arrived (counted from accept, so after the TLS handshake
//!   too), the idle timeout after that;
//! - when [`Limits::max_connections`] are open, accepting one more closes the connection that
//!   has waited on its client longest, so a legitimate client gets in while an attacker's
//!   silent or stalled connections go;
//! - when every open connection is working, the accept loop waits for one to stop (the
//!   kernel's backlog holds the newcomers).
//!
//! A request counts from the moment hyper hands its head to the service until hyper drops
//! the response body; its request body counts until it is dropped (a refused body that is
//! drained in the background, `body.rs`, keeps its connection open until drained).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use tokio::sync::Notify;

/// The connection limits (`http.headertimeout`, `http.idletimeout`, `http.handshaketimeout`,
/// `http.maxconnections`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept to the first complete request head (after the TLS handshake, if any).
    pub header_timeout: Duration,
    /// From the end of one response to the next complete request head, and how long a
    /// response may wait for the client to read it.
    pub idle_timeout: Duration,
    /// For the TLS handshake.
    pub handshake_timeout: Duration,
    /// Open connections at most; keep it well below the process's file-handle limit, which
    /// storage needs too.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_connections: max_connections_for(
                rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
            ),
        }
    }
}

/// Half of the soft file-handle limit `soft` (`None`: unlimited), between 16 and 16,384 (512
/// under the common default of 1,024): the other half stays for storage.
pub fn max_connections_for(soft: Option<u64>) -> usize {
    let half = soft.unwrap_or(u64::MAX) / 2;
    usize::try_from(half)
        .unwrap_or(usize::MAX)
        .clamp(16, 16_384)
}

/// How long a response must have waited for its client before its connection may be closed
/// to make room.
const STALLED_AFTER: Duration = Duration::from_secs(5);

/// What the table and its connections share.
struct Shared {
    /// A connection closed or stopped working (so it may be evicted).
    changed: Notify,
    /// Times are kept as milliseconds since this instant, so they fit in an atomic.
    epoch: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Every open connection.
pub(crate) struct Table {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    max: usize,
}

/// One connection's state, shared by its task, its requests and their bodies.
pub(crate) struct Conn {
    /// Requests in flight and request bodies alive.
    busy: AtomicUsize,
    /// Of those, responses handed to hyper and not yet taken by the client.
    waiting: AtomicUsize,
    /// Milliseconds since the epoch when this connection last did something for its client:
    /// accepted, finished a request, handed over a response frame.
    since: AtomicU64,
    /// A request head has arrived on this connection.
    served: AtomicBool,
    /// Set when the table closes the connection to make room.
    evicted: Notify,
    shared: Arc<Shared>,
}

impl Table {
    pub(crate) fn new(max: usize) -> Table {
        Table {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            shared: Arc::new(Shared {
                changed: Notify::new(),
                epoch: Instant::now(),
            }),
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // Nothing panics while holding it; a poisoned map is still a consistent map.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Returns once one more connection may be accepted: below the limit, or with a
    /// connection waiting on its client that [`Table::make_room`] can close. Looks again
    /// when a connection closes or stops working, and every second (a response becomes
    /// stalled without telling anyone).
    pub(crate) async fn room(&self) {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let open = self.lock();
                if open.len() < self.max || open.values().any(|c| c.evictable_since().is_some()) {
                    return;
                }
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Over the limit, closes the connection that has waited on its client longest, other
    /// than `newcomer`; false when there was nothing to close. The closed one leaves the table
    /// at once, so its slot is free before its task has finished closing it.
    pub(crate) fn make_room(&self, newcomer: &Registered) -> bool {
        if self.len() <= self.max {
            return false;
        }
        self.evict(Some(newcomer.id))
    }

    /// Closes the connection that has waited on its client longest, whatever the count: for
    /// when the process runs out of file handles.
    pub(crate) fn evict_one(&self) {
        self.evict(None);
    }

    /// Closes the evictable connection that has waited on its client longest, other than
    /// `spare`; false when there is none.
    fn evict(&self, spare: Option<u64>) -> bool {
        let mut open = self.lock();
        let longest = open
            .iter()
            .filter(|(id, _)| Some(**id) != spare)
            .filter_map(|(id, c)| Some((*id, c.evictable_since()?)))
            .min_by_key(|(_, since)| *since)
            .map(|(id, _)| id);
        let Some(conn) = longest.and_then(|id| open.remove(&id)) else {
            return false;
        };
        drop(open);
        tracing::debug!(
            waited_ms = conn.waited_for().as_millis() as u64,
            "closing the connection that waited on its client longest, to make room"
        );
        conn.evicted.notify_one();
        true
    }

    /// Adds a just-accepted connection; it leaves the table when the returned handle drops.
    pub(crate) fn register(self: &Arc<Self>) -> Registered {
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            since: AtomicU64::new(self.shared.now_ms()),
            served: AtomicBool::new(false),
            evicted: Notify::new(),
            shared: self.shared.clone(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, conn.clone());
        Registered {
            table: self.clone(),
            id,
            conn,
        }
    }

    /// Resolves when no connection is open.
    pub(crate) async fn empty(&self) {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            changed.await;
        }
    }
}

/// A connection's place in the [`Table`], given up on drop.
pub(crate) struct Registered {
    table: Arc<Table>,
    id: u64,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
        self.table.shared.changed.notify_waiters();
    }
}

impl Conn {
    fn touch(&self) {
        self.since.store(self.shared.now_ms(), Ordering::Release);
    }

    /// When this connection started waiting on its client, if it is.
    fn waiting_since(&self) -> Option<u64> {
        let busy = self.busy.load(Ordering::Acquire);
        (busy == self.waiting.load(Ordering::Acquire)).then(|| self.since.load(Ordering::Acquire))
    }

    /// When this connection started waiting on its client, if it may be closed to make room:
    /// idle, or with responses the client has not taken for [`STALLED_AFTER`] (a client
    /// reading steadily, however slowly, is between frames only briefly).
    fn evictable_since(&self) -> Option<u64> {
        let since = self.waiting_since()?;
        let stalled_for = self.shared.now_ms().saturating_sub(since);
        (self.busy.load(Ordering::Acquire) == 0 || stalled_for >= STALLED_AFTER.as_millis() as u64)
            .then_some(since)
    }

    /// No request in flight, no body alive.
    pub(crate) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    fn waited_for(&self) -> Duration {
        self.waiting_since().map_or(Duration::ZERO, |since| {
            Duration::from_millis(self.shared.now_ms().saturating_sub(since))
        })
    }

    /// Counts a request until the returned guard drops (moved into its response body).
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Release);
        self.busy.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Counts a request body until the returned guard drops.
    pub(crate) fn request_body(self: &Arc<Self>) -> InFlight {
        self.busy.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// How long until this connection should be closed for waiting on its client: zero when
    /// it is due, `None` while it is working.
    pub(crate) fn time_left(&self, limits: &Limits) -> Option<Duration> {
        self.waiting_since()?;
        let limit = if self.served.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.header_timeout
        };
        Some(limit.saturating_sub(self.waited_for()))
    }

    /// Resolves when the table closed this connection to make room.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await
    }
}

/// One request, or one request body, in flight.
pub(crate) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.touch();
            // Idle now: the accept loop may be waiting for a connection it can close.
            self.0.shared.changed.notify_waiters();
        }
    }
}

/// A body that keeps its request counted until hyper has sent (or dropped) it; as a
/// response body, it also tells whether it waits on the client.
pub(crate) struct TrackedBody {
    body: Body,
    in_flight: InFlight,
    /// A response body (else a request body).
    response: bool,
    /// A response body whose last frame hyper has not yet come back after.
    waiting: bool,
}

impl TrackedBody {
    /// A response body: from now on hyper has it, so the client is what it waits for.
    pub(crate) fn response(body: Body, in_flight: InFlight) -> Body {
        let conn = &in_flight.0;
        conn.waiting.fetch_add(1, Ordering::AcqRel);
        conn.touch();
        Body::new(TrackedBody {
            body,
            in_flight,
            response: true,
            waiting: true,
        })
    }

    /// A request body: the handler reads it, so it never waits on the client here (a stalled
    /// upload is `http.bodyidletimeout`'s business).
    pub(crate) fn request(body: Body, in_flight: InFlight) -> Body {
        Body::new(TrackedBody {
            body,
            in_flight,
            response: false,
            waiting: false,
        })
    }

    fn set_waiting(&mut self, waiting: bool) {
        if waiting == self.waiting {
            return;
        }
        self.waiting = waiting;
        let conn = &self.in_flight.0;
        if waiting {
            conn.touch();
            conn.waiting.fetch_add(1, Ordering::AcqRel);
        } else {
            conn.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        // Hyper came back for more: the client took the last frame. Until the next one is
        // ready, storage is what the response waits for.
        self.set_waiting(false);
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if self.response && matches!(frame, Poll::Ready(Some(Ok(_)))) {
            self.set_waiting(true);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 2,
        }
    }

    #[tokio::test]
    async fn the_longest_waiting_connection_makes_room_and_working_ones_never_do() {
        let table = Arc::new(Table::new(2));
        let busy = table.register();
        let _request = busy.conn.request();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let idle = table.register();
        tokio::time::timeout(Duration::from_secs(1), table.room())
            .await
            .unwrap();

        // Over the limit: the idle one goes, though the busy one is older; never the newcomer.
        let newcomer = table.register();
        assert!(table.make_room(&newcomer));
        assert_eq!(table.len(), 2);
        tokio::time::timeout(Duration::from_secs(1), idle.conn.evicted())
            .await
            .unwrap();
        let _newcomer_request = newcomer.conn.request();

        // Full of working connections: no room until one stops working.
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(_request);
        tokio::time::timeout(Duration::from_millis(500), waiting)
            .await
            .unwrap()
            .unwrap();
        drop((idle, busy, newcomer));
        assert_eq!(table.len(), 0);
    }

    #[tokio::test]
    async fn a_response_the_client_does_not_take_waits_on_the_client() {
        use http_body_util::BodyExt;
        let table = Arc::new(Table::new(10));
        let c = table.register();
        assert!(c.conn.time_left(&limits()).unwrap() <= Duration::from_secs(30));
        let request = c.conn.request();
        let body = TrackedBody::request(Body::from("upload"), c.conn.request_body());
        assert_eq!(c.conn.time_left(&limits()), None, "a handler runs");
        let response = TrackedBody::response(Body::from("answer"), request);
        assert_eq!(
            c.conn.time_left(&limits()),
            None,
            "the request body is alive"
        );
        drop(body);
        // Handed to hyper, not taken: waiting on the client, as an idle connection would.
        let left = c.conn.time_left(&limits()).unwrap();
        assert!(left > Duration::from_secs(30) && left <= Duration::from_secs(60));
        let mut response = response;
        let frame = response.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "answer");
        assert!(
            c.conn.time_left(&limits()).is_some(),
            "its frame handed over"
        );
        drop(response);
        assert!(c.conn.time_left(&limits()).is_some(), "idle");
        assert_eq!(c.conn.busy.load(Ordering::Acquire), 0);
        assert_eq!(c.conn.waiting.load(Ordering::Acquire), 0);
    }
}
