//! The open connections as the accept loop sees them, so that a client that connects and
//! then sends nothing cannot hold a file handle for ever, and a crowd of such clients cannot
//! lock out the rest.
//!
//! Each connection knows how many of its requests are in flight and since when it has had
//! none. From that alone follow the three limits (see [`Limits`]):
//! - a connection with no request in flight for longer than its limit is closed: the header
//!   timeout until its first request head has arrived (counted from accept, so after the TLS
//!   handshake too), the idle timeout after that;
//! - when [`Limits::max_connections`] are open, the one idle longest is closed to make room
//!   for the next, so a legitimate client gets in while an attacker's silent connections go;
//! - when every open connection has a request in flight, the accept loop waits for one to
//!   finish rather than exceed the limit (the kernel's backlog holds the newcomers).
//!
//! Requests are counted from the moment hyper hands the head to the service until hyper drops
//! the response body, so a long download or upload is never idle, however slow.

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
    /// From the end of one response to the next complete request head.
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
            max_connections: default_max_connections(),
        }
    }
}

/// Half the process's soft file-handle limit, at most 16,384 (512 under the common default of
/// 1,024): the other half stays for storage, TLS certificate reloads and the like.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(soft / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 16_384)
}

/// Every open connection.
pub(crate) struct Table {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// A connection closed or went idle.
    changed: Notify,
    max: usize,
    /// Times are kept as milliseconds since this instant, so they fit in an atomic.
    epoch: Instant,
}

/// One connection's state, shared by its task and its requests.
pub(crate) struct Conn {
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch at which the last request ended, or at accept.
    idle_since: AtomicU64,
    /// A request head has arrived on this connection.
    served: AtomicBool,
    /// Set when the table closes the connection to make room.
    evicted: Notify,
    epoch: Instant,
}

impl Table {
    pub(crate) fn new(max: usize) -> Table {
        Table {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            changed: Notify::new(),
            max: max.max(1),
            epoch: Instant::now(),
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

    /// Returns once one more connection may be accepted: at once below the limit, else after
    /// closing the connection idle longest, else when a connection closes or goes idle.
    pub(crate) async fn room(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.len() < self.max || self.evict_idlest() {
                return;
            }
            changed.await;
        }
    }

    /// Closes the connection that has had no request in flight for longest; false when every
    /// connection is busy. It leaves the table at once, so its slot is free before its task
    /// has finished closing it.
    pub(crate) fn evict_idlest(&self) -> bool {
        let mut open = self.lock();
        let idlest = open
            .iter()
            .filter(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| c.idle_since.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        let Some(conn) = idlest.and_then(|id| open.remove(&id)) else {
            return false;
        };
        drop(open);
        tracing::debug!(
            idle_ms = conn.idle_for().as_millis() as u64,
            "connection limit reached: closing the connection idle longest"
        );
        conn.evicted.notify_one();
        true
    }

    /// Adds a just-accepted connection; it leaves the table when the returned handle drops.
    pub(crate) fn register(self: &Arc<Self>) -> Registered {
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
            evicted: Notify::new(),
            epoch: self.epoch,
        });
        conn.mark_idle();
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
            let changed = self.changed.notified();
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
        self.table.changed.notify_waiters();
    }
}

impl Conn {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mark_idle(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Release);
    }

    fn idle_for(&self) -> Duration {
        let since = self.idle_since.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }

    /// Counts a request until the returned guard drops (with the response body).
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// How long until this connection should be closed for idleness: zero when it is due,
    /// `None` while a request is in flight.
    pub(crate) fn time_left(&self, limits: &Limits) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let limit = if self.served.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.header_timeout
        };
        Some(limit.saturating_sub(self.idle_for()))
    }

    /// Resolves when the table closed this connection to make room.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await
    }
}

/// One request in flight; the connection goes idle when the last one drops.
pub(crate) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.mark_idle();
        }
    }
}

/// A response body that keeps its request counted until hyper has sent (or dropped) it.
pub(crate) struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub(crate) fn wrap(body: Body, in_flight: InFlight) -> Body {
        Body::new(TrackedBody {
            body,
            _in_flight: in_flight,
        })
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
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

    #[tokio::test]
    async fn the_idlest_connection_makes_room_and_busy_ones_never_do() {
        let table = Arc::new(Table::new(2));
        let busy = table.register();
        let _request = busy.conn.request();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let idle = table.register();
        assert_eq!(table.len(), 2);

        // Full: the idle one goes, though the busy one is older.
        tokio::time::timeout(Duration::from_secs(1), table.room())
            .await
            .unwrap();
        assert_eq!(table.len(), 1);
        tokio::time::timeout(Duration::from_secs(1), idle.conn.evicted())
            .await
            .unwrap();

        // Full of busy connections: no room until one goes.
        let other = table.register();
        let _other_request = other.conn.request();
        assert!(!table.evict_idlest());
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(other);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        drop(idle);
        drop(busy);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn time_left_counts_from_accept_then_from_the_last_response() {
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10,
        };
        let table = Arc::new(Table::new(10));
        let c = table.register();
        assert!(c.conn.time_left(&limits).unwrap() <= Duration::from_secs(30));
        let r = c.conn.request();
        assert_eq!(c.conn.time_left(&limits), None);
        drop(r);
        let left = c.conn.time_left(&limits).unwrap();
        assert!(left > Duration::from_secs(30) && left <= Duration::from_secs(60));
    }
}
