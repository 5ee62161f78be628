//! Webhook notifications: Distribution's `notifications` section and event envelope, with a
//! queue that survives the process.
//!
//! Distribution keeps each endpoint's queue in memory: events not yet delivered when it
//! stops are lost. berth keeps them in storage, beside the registry's own files, so that an
//! event for a request berth has answered is delivered at least once even if berth is
//! killed before delivering it, and so that it works the same for replicas sharing a bucket.
//!
//! **What produces events** (the server's handlers, after the operation succeeded, as
//! Distribution's `notifications/listener.go` and `bridge.go` do): manifest GET and HEAD →
//! `pull`; blob GET and HEAD → `pull`; a completed blob upload (PUT, or a monolithic POST) →
//! `push`; a manifest PUT → `push` (with `tag` when pushed by tag); a cross-repository mount
//! → `mount` (with `fromRepository`); a manifest DELETE by digest → `delete` of the manifest
//! (digest and repository only) then one `delete` per tag that pointed at it (repository and
//! tag only, as Distribution 3 sends); a DELETE by tag → that tag's `delete`; a blob DELETE →
//! `delete`. The envelope and its fields are in [`event`].
//!
//! **Durability.** [`Notifier::publish`] returns once the request's events are in storage,
//! and the server awaits it before answering, so `kill -9` after an answer loses none of its
//! events. Writes are grouped: one committer task writes every event published while its
//! previous write was in flight as one batch file (`_berth/notifications/<instance>/events/
//! <seq>`, one atomic `put`), so a burst of requests shares writes and a lone request waits
//! for one small write. Delivery never delays a request: it runs in its own tasks. If the
//! write fails (after three tries), the events are logged as lost and counted in `dropped`,
//! and the request is answered as it would have been without notifications. With no
//! `notifications` configured there is no [`Notifier`] and nothing is done per request.
//!
//! **Delivery.** One task per endpoint sends its events one at a time, in log order, one
//! event per envelope (as Distribution does: a consumer that reads `events[0]` still sees
//! every event), with the endpoint's headers and timeout. A 2xx answer is delivery; anything
//! else is retried: immediately until `threshold` consecutive failures, then once every
//! `backoff` (Distribution's circuit breaker). Nothing is dropped while retrying. An event
//! leaves storage only when every endpoint it was for has answered 2xx for it (a batch file
//! is deleted once nobody is owed anything in it). Each endpoint's position is written to a
//! cursor file at most once a second, so after a crash an endpoint receives again at most
//! the last second of its deliveries: delivery is at least once, and consumers should use
//! the event `id` to recognise duplicates.
//!
//! **Bound.** Each endpoint has at most `maxpending` (berth's own key, default 10,000)
//! events accepted and not delivered. Beyond it the *newest* events are not queued for that
//! endpoint: an event already stored is never removed before it is delivered, so what an
//! endpoint receives is everything up to the overflow, then everything from when it caught
//! up. Each dropped event is counted in [`EndpointStats::dropped`]; the start and end of an
//! overflow are logged with the count. Storage holds at most the events still owed to some
//! endpoint plus the batch files they share.
//!
//! **Ordering.** Per endpoint, events are delivered in the order they were stored; a
//! request's events are stored before it is answered, so events of requests made one after
//! another by one client arrive in that order. Concurrent requests have no order.
//!
//! **Restarts and replicas.** Each process appends to its own log, named by its instance id,
//! and keeps a lease file in it that it rewrites every third of `leaseduration` (berth's own
//! key, default 30 s). Every process lists the logs at the same pace and takes over a log
//! whose lease is older than `leaseduration` on the storage's clock, or released (a clean
//! stop with events left), or whose writer is certainly dead: same kernel boot and pid
//! namespace, and its pid gone (see `identity`; this makes a restarted berth resume its
//! previous life's queue at once). Taking over is rewriting the lease with itself as owner
//! and reading it back; the taken log is delivered before the process's own (older events
//! first) and deleted when empty. A live process whose lease was taken (it stalled past the
//! lease) notices at its next heartbeat, stops delivering that log and starts a new one.
//! The guarantee: in normal operation exactly one live process delivers each log; two can
//! overlap only when a stalled process outlived its lease or two took over the same log in
//! the same instant, and then an endpoint gets duplicates, never gaps.

pub mod event;

mod deliver;
mod identity;
mod queue;
mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
/// An endpoint URL as it may be logged: scheme, host, port and path only. Webhook URLs often
/// carry their secret in the user-info part (`https://user:pass@host/`) or the query
/// (`?token=`), and no secret is ever logged.
fn loggable(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("http");
    let host = url.host().unwrap_or("");
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let query = if url.query().is_some() { "?…" } else { "" };
    format!("{scheme}://{host}{port}{}{query}", url.path())
}

#[cfg(test)]
use std::time::Instant;
use std::time::{Duration, SystemTime};

use berth_registry::layout;
use berth_storage::StorageDriver;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use event::{Action, Actor, BLOB_MEDIA_TYPE, EVENTS_MEDIA_TYPE, RequestRecord, Source, Target};

use crate::identity::ProcessIdentity;
use crate::queue::{Batch, Log, Queues, Record};
use crate::store::Lease;

/// Distribution's default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Distribution's default `threshold`.
pub const DEFAULT_THRESHOLD: u32 = 10;
/// Distribution's default `backoff`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// berth's default `maxpending`.
pub const DEFAULT_MAX_PENDING: usize = 10_000;
/// berth's default `leaseduration`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Events stored by one group commit at most (a larger burst takes several).
const MAX_BATCH_EVENTS: usize = 1000;
/// Endpoints at most (one bit each per queued event).
const MAX_ENDPOINTS: usize = 64;
/// How often moved cursors are written.
const CURSOR_INTERVAL: Duration = Duration::from_secs(1);

/// The `notifications` section, checked and with defaults applied by [`Notifier::start`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `events.includereferences`: manifest events carry the manifest's references.
    pub include_references: bool,
    /// The endpoints not `disabled`.
    pub endpoints: Vec<EndpointSettings>,
    /// `leaseduration` (berth's own).
    pub lease: Duration,
    /// `source.addr` of every event: `<hostname>:<port of http.addr>`.
    pub source_addr: String,
}

/// One endpoint. Zero durations and counts mean the defaults (Distribution's, and berth's
/// [`DEFAULT_MAX_PENDING`]).
#[derive(Debug, Clone, Default)]
pub struct EndpointSettings {
    /// `name`: identifies the endpoint in logs, metrics and the queue (so it must be unique).
    pub name: String,
    /// `url`: where envelopes are POSTed (`http` or `https`).
    pub url: String,
    /// `headers`: added to every request.
    pub headers: Vec<(String, String)>,
    /// `timeout` of one request.
    pub timeout: Duration,
    /// `threshold`: failures in a row retried at once before backing off.
    pub threshold: u32,
    /// `backoff`: the wait between attempts after `threshold` failures.
    pub backoff: Duration,
    /// `ignoredmediatypes` and `ignore.mediatypes`: target media types not sent.
    pub ignored_media_types: Vec<String>,
    /// `ignore.actions`: actions not sent.
    pub ignored_actions: Vec<String>,
    /// `maxpending` (berth's own): undelivered events kept at most.
    pub max_pending: usize,
}

/// Counters of one endpoint, for metrics (`berth_notifications_*{endpoint}`). Read them
/// through [`Notifier::stats`]; they are updated as events are queued and sent.
#[derive(Debug, Default)]
pub struct EndpointStats {
    name: String,
    pending: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl EndpointStats {
    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gauge: events accepted for the endpoint and not yet delivered (in every log this
    /// process delivers).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counter: events the endpoint answered 2xx for.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Counter: delivery attempts that failed (each retry counts).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Counter: events never queued for the endpoint (its queue was full, or storage
    /// refused the write).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The notification system: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Endpoint {
    name: String,
    url: Uri,
    headers: HeaderMap,
    timeout: Duration,
    threshold: u32,
    backoff: Duration,
    ignored_media_types: HashSet<String>,
    ignored_actions: HashSet<String>,
    max_pending: usize,
    wake: Notify,
}

impl Endpoint {
    fn wants(&self, action: Action, media_type: &str) -> bool {
        !self.ignored_actions.contains(action.as_str())
            && !self.ignored_media_types.contains(media_type)
    }
}

struct Inner {
    driver: Arc<dyn StorageDriver>,
    endpoints: Vec<Endpoint>,
    stats: Arc<[EndpointStats]>,
    source: Source,
    include_references: bool,
    lease: Duration,
    identity: Option<ProcessIdentity>,
    /// This process: the owner written in the leases it holds.
    me: uuid::Uuid,
    sender: deliver::Sender,
    state: Mutex<State>,
    commits: mpsc::UnboundedSender<Commit>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct State {
    queues: Queues,
    /// The log this process appends to.
    own: uuid::Uuid,
    next_seq: u64,
    /// Per endpoint: events dropped in the overflow under way.
    dropping: Vec<u64>,
    /// Log directories seen without a lease at the last scan.
    leaseless: HashSet<uuid::Uuid>,
}

/// Events waiting for the committer, and who waits for them.
struct Commit {
    /// Each event's JSON and the endpoints it is for (a bit each).
    records: Vec<(u64, String)>,
    done: oneshot::Sender<()>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..MAX_ENDPOINTS).filter(move |e| mask & (1u64 << e) != 0)
}

impl Notifier {
    /// Checks `settings`, writes this process's lease, and starts the committer, one
    /// delivery task per endpoint, and the housekeeper (heartbeat, takeover, cursors). Logs
    /// left by processes that stopped are taken over from the first heartbeat on.
    pub async fn start(
        driver: Arc<dyn StorageDriver>,
        settings: Settings,
    ) -> Result<Notifier, String> {
        let endpoints = build_endpoints(&settings.endpoints)?;
        let tls = endpoints
            .iter()
            .any(|e| e.url.scheme_str() == Some("https"));
        let sender = deliver::Sender::new(tls)?;
        let me = uuid::Uuid::new_v4();
        let started = millis(SystemTime::now());
        let n = endpoints.len();
        let stats: Arc<[EndpointStats]> = endpoints
            .iter()
            .map(|e| EndpointStats {
                name: e.name.clone(),
                ..EndpointStats::default()
            })
            .collect();
        let (commits, receiver) = mpsc::unbounded_channel();
        let mut queues = Queues::new(n);
        queues.insert(Log::new(me, started, true, n));
        let inner = Arc::new(Inner {
            driver,
            endpoints,
            stats,
            source: Source {
                addr: settings.source_addr.clone(),
                instance_id: me.to_string(),
            },
            include_references: settings.include_references,
            lease: settings.lease.max(Duration::from_millis(300)),
            identity: ProcessIdentity::current(),
            me,
            sender,
            state: Mutex::new(State {
                queues,
                own: me,
                next_seq: 0,
                dropping: vec![0; n],
                leaseless: HashSet::new(),
            }),
            commits,
            cancel: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        // The lease before any batch, so that no other process mistakes the new log for a
        // dead one.
        inner
            .write_lease(&me, started, false)
            .await
            .map_err(|e| format!("notifications: cannot write to storage: {e}"))?;
        for e in &inner.endpoints {
            let headers: Vec<&str> = e.headers.keys().map(HeaderName::as_str).collect();
            tracing::info!(
                endpoint = e.name,
                url = %loggable(&e.url),
                timeout = ?e.timeout,
                threshold = e.threshold,
                backoff = ?e.backoff,
                maxpending = e.max_pending,
                headers = ?headers,
                "notification endpoint configured"
            );
        }
        let mut tasks = vec![tokio::spawn(committer(inner.clone(), receiver))];
        for e in 0..n {
            tasks.push(tokio::spawn(worker(inner.clone(), e)));
        }
        tasks.push(tokio::spawn(housekeeper(inner.clone())));
        *inner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(Notifier { inner })
    }

    /// Whether any endpoint takes events of `action` on content of `media_type` (the server
    /// skips building events nobody takes).
    pub fn wants(&self, action: Action, media_type: &str) -> bool {
        self.inner
            .endpoints
            .iter()
            .any(|e| e.wants(action, media_type))
    }

    /// `events.includereferences`.
    pub fn include_references(&self) -> bool {
        self.inner.include_references
    }

    /// Each endpoint's counters, in configuration order.
    pub fn stats(&self) -> Arc<[EndpointStats]> {
        self.inner.stats.clone()
    }

    /// Queues the events one request caused and returns once they are in storage (or once
    /// storing them failed, which is logged and counted). Events no endpoint takes are not
    /// stored at all.
    pub async fn publish(
        &self,
        request: &RequestRecord,
        actor: &Actor,
        events: &[(Action, Target)],
    ) {
        let inner = &self.inner;
        let mut records: Vec<(u64, String)> = Vec::with_capacity(events.len());
        for (action, target) in events {
            let mask = inner
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| e.wants(*action, &target.media_type))
                .fold(0u64, |m, (i, _)| m | 1 << i);
            if mask == 0 {
                continue;
            }
            let event = event::Event::new(*action, target, request, actor, &inner.source);
            match serde_json::to_string(&event) {
                Ok(json) => records.push((mask, json)),
                Err(e) => tracing::error!(error = %e, "notification event not serializable"),
            }
        }
        if records.is_empty() {
            return;
        }
        {
            let mut st = inner.state();
            for (mask, _) in &mut records {
                for e in bits(*mask) {
                    *mask &= !(1 << e);
                    if inner.admit(&mut st, e) {
                        *mask |= 1 << e;
                    }
                }
            }
            inner.sync_pending(&st);
        }
        records.retain(|(mask, _)| *mask != 0);
        if records.is_empty() {
            return;
        }
        let (done, stored) = oneshot::channel();
        if let Err(refused) = inner.commits.send(Commit { records, done }) {
            // Shutting down: nothing is stored any more.
            inner.lost(&refused.0.records);
            return;
        }
        let _ = stored.await;
    }

    /// Stops delivering: writes the cursors, and releases each log that still holds events
    /// so that the next process (this one restarted, or a replica) takes it at once; empty
    /// logs are removed. Requests must be finished (their events stored) before this runs.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.cancel.cancel();
        let tasks = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        inner.flush_cursors().await;
        let logs: Vec<(uuid::Uuid, u64, bool)> = inner
            .state()
            .queues
            .logs
            .iter()
            .map(|l| (l.instance, l.started, l.batches.is_empty()))
            .collect();
        for (id, started, empty) in logs {
            let done = if empty {
                inner.driver.delete(&layout::notification_log(&id)).await
            } else {
                inner.write_lease(&id, started, true).await
            };
            if let Err(e) = done
                && !e.is_not_found()
            {
                tracing::warn!(log = %id, error = %e, "could not release a notification log");
            }
        }
        for s in inner.stats.iter() {
            if s.pending() > 0 {
                tracing::info!(
                    endpoint = s.name,
                    pending = s.pending(),
                    "undelivered notifications stay queued in storage"
                );
            }
        }
    }
}

fn build_endpoints(settings: &[EndpointSettings]) -> Result<Vec<Endpoint>, String> {
    if settings.is_empty() {
        return Err("notifications: no endpoint is enabled".into());
    }
    if settings.len() > MAX_ENDPOINTS {
        return Err(format!(
            "notifications: at most {MAX_ENDPOINTS} endpoints are supported"
        ));
    }
    let mut names = HashSet::new();
    let mut endpoints = Vec::with_capacity(settings.len());
    for s in settings {
        let what = format!("notifications endpoint {:?}", s.name);
        if !names.insert(s.name.as_str()) {
            return Err(format!(
                "{what}: two enabled endpoints have this name; names identify queues"
            ));
        }
        let url: Uri = s
            .url
            .parse()
            .map_err(|e| format!("{what}: url {:?}: {e}", s.url))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
            return Err(format!(
                "{what}: url {:?} is not an http:// or https:// URL",
                s.url
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &s.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| format!("{what}: header name {name:?}: {e}"))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| format!("{what}: header {name}: {e}"))?;
            headers.append(name, value);
        }
        let or = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
        endpoints.push(Endpoint {
            name: s.name.clone(),
            url,
            headers,
            timeout: or(s.timeout, DEFAULT_TIMEOUT),
            threshold: if s.threshold == 0 {
                DEFAULT_THRESHOLD
            } else {
                s.threshold
            },
            backoff: or(s.backoff, DEFAULT_BACKOFF),
            ignored_media_types: s.ignored_media_types.iter().cloned().collect(),
            ignored_actions: s.ignored_actions.iter().cloned().collect(),
            max_pending: if s.max_pending == 0 {
                DEFAULT_MAX_PENDING
            } else {
                s.max_pending
            },
            wake: Notify::new(),
        });
    }
    Ok(endpoints)
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_pending(&self, st: &State) {
        for (s, p) in self.stats.iter().zip(&st.queues.pending) {
            s.pending.store(*p as u64, Ordering::Relaxed);
        }
    }

    /// Room for one more event for endpoint `e`? Counts and logs the overflow otherwise.
    fn admit(&self, st: &mut State, e: usize) -> bool {
        let endpoint = &self.endpoints[e];
        if st.queues.pending[e] >= endpoint.max_pending {
            st.dropping[e] += 1;
            self.stats[e].dropped.fetch_add(1, Ordering::Relaxed);
            if st.dropping[e] == 1 {
                tracing::warn!(
                    endpoint = endpoint.name,
                    maxpending = endpoint.max_pending,
                    "notification queue full: new events for this endpoint are dropped until it catches up"
                );
            }
            return false;
        }
        if st.dropping[e] > 0 {
            tracing::warn!(
                endpoint = endpoint.name,
                dropped = st.dropping[e],
                "notification queue accepts events again"
            );
            st.dropping[e] = 0;
        }
        st.queues.pending[e] += 1;
        true
    }

    /// Events accepted but not stored: no longer pending, counted as dropped.
    fn lost(&self, records: &[(u64, String)]) {
        let mut st = self.state();
        for (mask, _) in records {
            for e in bits(*mask) {
                st.queues.pending[e] = st.queues.pending[e].saturating_sub(1);
                self.stats[e].dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sync_pending(&st);
    }

    fn identity_lease(&self, instance: &uuid::Uuid, started: u64, released: bool) -> Lease {
        Lease {
            instance: *instance,
            owner: self.me,
            started,
            released,
            identity: self.identity.clone(),
        }
    }

    async fn write_lease(
        &self,
        instance: &uuid::Uuid,
        started: u64,
        released: bool,
    ) -> Result<(), berth_storage::StorageError> {
        let lease = self.identity_lease(instance, started, released);
        self.driver
            .put(&layout::notification_lease(instance), lease.bytes())
            .await
    }

    /// Stores one group of commits as one batch of the own log.
    async fn commit(&self, group: Vec<Commit>) {
        let (own, seq) = {
            let mut st = self.state();
            let seq = st.next_seq;
            st.next_seq += 1;
            (st.own, seq)
        };
        let (records, waiting): (Vec<_>, Vec<_>) =
            group.into_iter().map(|c| (c.records, c.done)).unzip();
        let all: Vec<(u64, String)> = records.into_iter().flatten().collect();
        let named: Vec<(Vec<&str>, &str)> = all
            .iter()
            .map(|(mask, json)| {
                let to = bits(*mask)
                    .map(|e| self.endpoints[e].name.as_str())
                    .collect();
                (to, json.as_str())
            })
            .collect();
        let bytes = store::batch_bytes(&named);
        let path = layout::notification_batch(&own, seq);
        let mut stored = Err(None);
        for attempt in 0..3u32 {
            match self.driver.put(&path, bytes.clone()).await {
                Ok(()) => {
                    stored = Ok(());
                    break;
                }
                Err(e) => {
                    tracing::warn!(%path, error = %e, attempt, "storing notification events failed");
                    stored = Err(Some(e));
                    tokio::time::sleep(Duration::from_millis(100 << (2 * attempt))).await;
                }
            }
        }
        match stored {
            Ok(()) => {
                let batch = Batch::new(
                    all.iter()
                        .map(|(mask, json)| Record {
                            owed: *mask,
                            event: Some(Arc::from(json.as_str())),
                        })
                        .collect(),
                );
                let appended = self.state().queues.append(&own, seq, batch);
                if appended {
                    let union = all.iter().fold(0, |m, (mask, _)| m | mask);
                    for e in bits(union) {
                        self.endpoints[e].wake.notify_one();
                    }
                } else {
                    // The log was taken over while this batch was written: its new owner
                    // delivers it (it lists the log again before deleting it).
                    let mut st = self.state();
                    for (mask, _) in &all {
                        for e in bits(*mask) {
                            st.queues.pending[e] = st.queues.pending[e].saturating_sub(1);
                        }
                    }
                    self.sync_pending(&st);
                }
            }
            Err(e) => {
                tracing::error!(
                    %path,
                    events = all.len(),
                    error = e.map(|e| e.to_string()).unwrap_or_default(),
                    "notification events could not be stored and are lost"
                );
                self.lost(&all);
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }

    /// Writes the cursors that moved, for logs that still hold batches.
    async fn flush_cursors(&self) {
        let moved: Vec<(uuid::Uuid, usize, queue::Pos)> = {
            let mut st = self.state();
            let mut moved = Vec::new();
            for log in &mut st.queues.logs {
                let keep = !log.batches.is_empty();
                for e in 0..log.cursor_dirty.len() {
                    if std::mem::take(&mut log.cursor_dirty[e]) && keep {
                        moved.push((log.instance, e, log.pos[e]));
                    }
                }
            }
            moved
        };
        for (log, e, pos) in moved {
            let name = &self.endpoints[e].name;
            if let Err(err) = store::write_cursor(self.driver.as_ref(), &log, name, pos).await {
                tracing::warn!(log = %log, endpoint = name, error = %err, "could not write a notification cursor");
                if let Some(l) = self.state().queues.log_mut(&log) {
                    l.cursor_dirty[e] = true;
                }
            }
        }
    }

    /// Renews the leases this process holds, notices those taken from it, and takes over
    /// logs whose owner is gone.
    async fn heartbeat(&self) {
        let held: Vec<(uuid::Uuid, u64, bool)> = self
            .state()
            .queues
            .logs
            .iter()
            .map(|l| (l.instance, l.started, l.own))
            .collect();
        for (id, started, own) in held {
            match store::read_lease(self.driver.as_ref(), &id).await {
                Ok(Some(lease)) if lease.owner != self.me => {
                    self.lost_log(&id, own).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(log = %id, error = %e, "could not read a notification lease");
                    continue;
                }
            }
            if let Err(e) = self.write_lease(&id, started, false).await {
                tracing::warn!(log = %id, error = %e, "could not renew a notification lease");
            }
        }
        let own = self.state().own;
        // Ages are compared on the storage's clock: the own lease was just written.
        let now = match self.driver.stat(&layout::notification_lease(&own)).await {
            Ok(m) => m.modified,
            Err(e) => {
                tracing::warn!(error = %e, "could not read back the notification lease");
                return;
            }
        };
        if let Err(e) = self.take_over_dead(now).await {
            tracing::warn!(error = %e, "could not look for notification logs to take over");
        }
        self.remove_drained().await;
    }

    /// A log this process held is now another's: stop delivering it. For the own log, start
    /// a new one.
    async fn lost_log(&self, id: &uuid::Uuid, own: bool) {
        tracing::warn!(
            log = %id,
            "another berth took over this notification log (this process was presumed stopped); it delivers it now"
        );
        if own {
            let fresh = uuid::Uuid::new_v4();
            let started = millis(SystemTime::now());
            if let Err(e) = self.write_lease(&fresh, started, false).await {
                tracing::error!(error = %e, "could not start a new notification log");
                return;
            }
            let mut st = self.state();
            st.queues.remove(id);
            st.queues
                .insert(Log::new(fresh, started, true, self.endpoints.len()));
            st.own = fresh;
            st.next_seq = 0;
            self.sync_pending(&st);
        } else {
            let mut st = self.state();
            st.queues.remove(id);
            self.sync_pending(&st);
        }
    }

    async fn take_over_dead(&self, now: SystemTime) -> Result<(), berth_storage::StorageError> {
        let names = match self.driver.list(&layout::notifications_root()).await {
            Ok(n) => n,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let held: HashSet<uuid::Uuid> = self
            .state()
            .queues
            .logs
            .iter()
            .map(|l| l.instance)
            .collect();
        let mut leaseless = HashSet::new();
        for name in names {
            let Ok(id) = uuid::Uuid::try_parse(&name) else {
                continue;
            };
            if held.contains(&id) {
                continue;
            }
            let lease = store::read_lease(self.driver.as_ref(), &id).await?;
            let dead = match &lease {
                Some(l) if l.released => true,
                Some(l)
                    if self
                        .identity
                        .as_ref()
                        .zip(l.identity.as_ref())
                        .is_some_and(|(me, them)| me.sees_dead(them)) =>
                {
                    true
                }
                Some(_) => match self.driver.stat(&layout::notification_lease(&id)).await {
                    Ok(m) => now
                        .duration_since(m.modified)
                        .is_ok_and(|age| age > self.lease),
                    Err(e) if e.is_not_found() => false,
                    Err(e) => return Err(e),
                },
                // A directory without a lease may be a log being created this instant: it
                // is dead only if it still has none at the next scan.
                None => {
                    leaseless.insert(id);
                    self.state().leaseless.contains(&id)
                }
            };
            if dead {
                let started = lease.map_or(0, |l| l.started);
                self.adopt(id, started).await?;
            }
        }
        self.state().leaseless = leaseless;
        Ok(())
    }

    /// Takes over log `id`: claims its lease, reads it back, loads it.
    async fn adopt(&self, id: uuid::Uuid, started: u64) -> Result<(), berth_storage::StorageError> {
        self.write_lease(&id, started, false).await?;
        match store::read_lease(self.driver.as_ref(), &id).await? {
            Some(l) if l.owner == self.me => {}
            _ => return Ok(()), // another process claimed it in the same instant
        }
        let names: Vec<String> = self.endpoints.iter().map(|e| e.name.clone()).collect();
        let seqs = store::batch_seqs(self.driver.as_ref(), &id).await?;
        let mut log = Log::new(id, started, false, self.endpoints.len());
        let loaded = store::load(self.driver.as_ref(), &mut log, &seqs, &names).await?;
        for (name, count) in &loaded.unknown {
            tracing::warn!(
                log = %id,
                endpoint = name,
                events = count,
                "queued notifications for an endpoint no longer configured are discarded"
            );
        }
        let owed: Vec<usize> = (0..self.endpoints.len()).map(|e| log.owed_to(e)).collect();
        if log.batches.is_empty() {
            self.driver.delete(&layout::notification_log(&id)).await?;
            return Ok(());
        }
        tracing::info!(
            log = %id,
            batches = log.batches.len(),
            events = ?owed,
            "took over the notification log of a berth that stopped"
        );
        {
            let mut st = self.state();
            st.queues.insert(log);
            self.sync_pending(&st);
        }
        for e in &self.endpoints {
            e.wake.notify_one();
        }
        Ok(())
    }

    /// Deletes taken-over logs that have been delivered, after listing them once more (their
    /// first owner may have written a batch after it was presumed stopped).
    async fn remove_drained(&self) {
        let drained: Vec<uuid::Uuid> = self
            .state()
            .queues
            .logs
            .iter()
            .filter(|l| !l.own && l.batches.is_empty())
            .map(|l| l.instance)
            .collect();
        let names: Vec<String> = self.endpoints.iter().map(|e| e.name.clone()).collect();
        for id in drained {
            let seqs = match store::batch_seqs(self.driver.as_ref(), &id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(log = %id, error = %e, "could not list a notification log");
                    continue;
                }
            };
            if seqs.is_empty() {
                if let Err(e) = self.driver.delete(&layout::notification_log(&id)).await
                    && !e.is_not_found()
                {
                    tracing::warn!(log = %id, error = %e, "could not delete a delivered notification log");
                    continue;
                }
                let mut st = self.state();
                st.queues.remove(&id);
                self.sync_pending(&st);
                continue;
            }
            // Late batches: load them into the log as it stands.
            let mut late = Log::new(id, 0, false, self.endpoints.len());
            if let Some(log) = self.state().queues.log_mut(&id) {
                late.pos.clone_from(&log.pos);
            }
            match store::load(self.driver.as_ref(), &mut late, &seqs, &names).await {
                Ok(_) => {
                    let mut st = self.state();
                    for e in 0..self.endpoints.len() {
                        st.queues.pending[e] += late.owed_to(e);
                    }
                    if let Some(log) = st.queues.log_mut(&id) {
                        log.batches.append(&mut late.batches);
                    }
                    self.sync_pending(&st);
                    drop(st);
                    for e in &self.endpoints {
                        e.wake.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(log = %id, error = %e, "could not read a notification log")
                }
            }
        }
    }
}

/// The group committer: every commit that arrived while the previous write was in flight
/// goes into the next write.
async fn committer(inner: Arc<Inner>, mut receiver: mpsc::UnboundedReceiver<Commit>) {
    let mut closing = false;
    loop {
        let first = if closing {
            receiver.recv().await
        } else {
            tokio::select! {
                c = receiver.recv() => c,
                () = inner.cancel.cancelled() => {
                    // Store what was already sent, then stop.
                    receiver.close();
                    closing = true;
                    continue;
                }
            }
        };
        let Some(first) = first else { return };
        let mut count = first.records.len();
        let mut group = vec![first];
        while count < MAX_BATCH_EVENTS {
            match receiver.try_recv() {
                Ok(c) => {
                    count += c.records.len();
                    group.push(c);
                }
                Err(_) => break,
            }
        }
        inner.commit(group).await;
    }
}

/// Delivers endpoint `e`'s events, one at a time, in order, retrying until each is taken.
async fn worker(inner: Arc<Inner>, e: usize) {
    let endpoint = &inner.endpoints[e];
    let stats = &inner.stats[e];
    let mut failures: u32 = 0;
    loop {
        let taken = inner.state().queues.take(e);
        let Some(taken) = taken else {
            tokio::select! {
                () = endpoint.wake.notified() => continue,
                () = inner.cancel.cancelled() => return,
            }
        };
        let envelope = Bytes::from(event::envelope([&*taken.event]));
        let sent = tokio::select! {
            r = inner.sender.post(&endpoint.url, &endpoint.headers, endpoint.timeout, envelope) => r,
            () = inner.cancel.cancelled() => return,
        };
        match sent {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(
                        endpoint = endpoint.name,
                        failures,
                        "notification endpoint answers again"
                    );
                }
                failures = 0;
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                let done = {
                    let mut st = inner.state();
                    let done = st.queues.delivered(e, &taken);
                    inner.sync_pending(&st);
                    done
                };
                for (log, seq) in done {
                    let path = layout::notification_batch(&log, seq);
                    if let Err(err) = inner.driver.delete(&path).await
                        && !err.is_not_found()
                    {
                        tracing::warn!(%path, error = %err, "could not delete delivered notifications");
                    }
                }
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if failures == 1 {
                    tracing::warn!(
                        endpoint = endpoint.name,
                        url = %loggable(&endpoint.url),
                        error = why,
                        "notification delivery failed; retrying"
                    );
                } else {
                    tracing::debug!(
                        endpoint = endpoint.name,
                        error = why,
                        failures,
                        "notification delivery failed"
                    );
                }
                if failures >= endpoint.threshold {
                    if failures == endpoint.threshold {
                        tracing::warn!(
                            endpoint = endpoint.name,
                            failures,
                            backoff = ?endpoint.backoff,
                            "notification endpoint keeps failing; backing off between attempts"
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(endpoint.backoff) => {}
                        () = inner.cancel.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// Heartbeats (lease renewal and takeover) every third of the lease, cursors every second.
async fn housekeeper(inner: Arc<Inner>) {
    let mut heartbeat = tokio::time::interval(inner.lease / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursors = tokio::time::interval(CURSOR_INTERVAL);
    cursors.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => inner.heartbeat().await,
            _ = cursors.tick() => inner.flush_cursors().await,
            () = inner.cancel.cancelled() => return,
        }
    }
}

/// Counts of what a test or an operator may want to see at once.
impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: HashMap<&str, (u64, u64, u64, u64)> = self
            .inner
            .stats
            .iter()
            .map(|s| {
                (
                    s.name(),
                    (s.pending(), s.delivered(), s.failed(), s.dropped()),
                )
            })
            .collect();
        f.debug_struct("Notifier")
            .field("instance", &self.inner.me)
            .field("pending_delivered_failed_dropped", &counts)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lease: Duration) -> Settings {
        Settings {
            include_references: false,
            endpoints: vec![EndpointSettings {
                name: "sink".into(),
                // Nothing listens there: events stay pending, which is what is counted.
                url: "http://127.0.0.1:1/events".into(),
                backoff: Duration::from_secs(60),
                threshold: 1,
                ..EndpointSettings::default()
            }],
            lease,
            source_addr: "test:5000".into(),
        }
    }

    /// A log with one event for "sink", left by a process on another host (no identity this
    /// one can check), its lease just written (or released).
    async fn foreign_log(driver: &dyn StorageDriver, released: bool) -> uuid::Uuid {
        let id = uuid::Uuid::new_v4();
        let lease = Lease {
            instance: id,
            owner: id,
            started: 1,
            released,
            identity: None,
        };
        driver
            .put(&layout::notification_lease(&id), lease.bytes())
            .await
            .unwrap();
        let batch = store::batch_bytes(&[(vec!["sink"], "{\"id\":\"x\"}")]);
        driver
            .put(&layout::notification_batch(&id, 0), batch)
            .await
            .unwrap();
        id
    }

    #[tokio::test]
    async fn a_foreign_log_is_taken_over_only_once_its_lease_has_expired() {
        let dir = tempfile::tempdir().unwrap();
        let driver: Arc<dyn StorageDriver> =
            Arc::new(berth_storage::FsDriver::new(dir.path()).unwrap());
        let foreign = foreign_log(driver.as_ref(), false).await;
        let lease = Duration::from_millis(900);
        let n = Notifier::start(driver.clone(), settings(lease))
            .await
            .unwrap();
        let started = Instant::now();
        let pending = || n.stats()[0].pending();
        // Its lease is fresh and its writer cannot be checked from here: left alone.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pending(), 0);
        while pending() == 0 && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pending(), 1, "taken over after the lease expired");
        assert!(started.elapsed() >= lease - Duration::from_millis(100));
        let now = store::read_lease(driver.as_ref(), &foreign)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.owner, n.inner.me, "the lease names its new owner");
        // A clean stop releases the logs that still hold events.
        n.shutdown().await;
        for id in [foreign, n.inner.me] {
            let l = store::read_lease(driver.as_ref(), &id).await.unwrap();
            if id == foreign {
                assert!(l.unwrap().released);
            } else {
                assert!(l.is_none(), "the own log was empty and is gone");
            }
        }
    }

    #[tokio::test]
    async fn a_released_log_is_taken_over_at_once_and_a_full_queue_drops_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let driver: Arc<dyn StorageDriver> =
            Arc::new(berth_storage::FsDriver::new(dir.path()).unwrap());
        foreign_log(driver.as_ref(), true).await;
        let mut s = settings(Duration::from_secs(30));
        s.endpoints[0].max_pending = 3;
        let n = Notifier::start(driver.clone(), s).await.unwrap();
        let started = Instant::now();
        while n.stats()[0].pending() == 0 && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(n.stats()[0].pending(), 1, "released: no lease to wait out");
        let request = RequestRecord::default();
        let target = Target::deleted("a", "sha256:0");
        for _ in 0..4 {
            n.publish(
                &request,
                &Actor::default(),
                &[(Action::Delete, target.clone())],
            )
            .await;
        }
        let stats = &n.stats()[0];
        assert_eq!((stats.pending(), stats.dropped()), (3, 2));
        // The two accepted events are in storage, in one batch each.
        let seqs = store::batch_seqs(driver.as_ref(), &n.inner.me)
            .await
            .unwrap();
        assert_eq!(seqs, vec![0, 1]);
        // Filtered events are not stored at all.
        let mut s = settings(Duration::from_secs(30));
        s.endpoints[0].ignored_actions = vec!["pull".into()];
        let other = Notifier::start(driver.clone(), s).await.unwrap();
        assert!(!other.wants(Action::Pull, BLOB_MEDIA_TYPE));
        other
            .publish(&request, &Actor::default(), &[(Action::Pull, target)])
            .await;
        let seqs = store::batch_seqs(driver.as_ref(), &other.inner.me)
            .await
            .unwrap();
        assert!(seqs.is_empty());
    }

    #[test]
    fn logged_urls_carry_no_secret() {
        let url: Uri = "https://user:s3cret@hooks.example:8443/in/abc?token=t0k"
            .parse()
            .unwrap();
        let shown = loggable(&url);
        assert_eq!(shown, "https://hooks.example:8443/in/abc?…");
        assert!(!shown.contains("s3cret") && !shown.contains("t0k"));
    }
}
