//! The HTTP request metrics, as Distribution exports them (docker/go-metrics
//! `NewDefaultHttpMetrics(handler)` under namespace `registry`, subsystem `http`, one set per
//! route, the route name with `-` written `_`), and berth's byte and upload counters.
//!
//! A request is recorded through a [`RequestMetrics`], taken when it arrives and finished
//! when its response body is done: the in-flight gauges count it meanwhile, the counter and
//! histograms get it at the end, so a download's duration and size are the whole transfer's
//! (Go's handlers write the body before they return, and promhttp measures that).
//!
//! The metrics are `sharded.rs`'s, so the request path writes only lines of its own core's.
//! No request looks a label set up in a map: everything keyed by handler is resolved when
//! [`HttpMetrics`] is built, and the `{code,method}` combinations, which appear lazily as in
//! Distribution, are kept in `OnceLock` slots after their first use (codes outside
//! [`CODES`] take the family's lock, which only a rare status pays).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::sharded::{Counter, Gauge, Histogram};

/// The endpoint a request was for, named as Distribution names its routes (the `handler`
/// label). Never a path: the label's values are this fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handler {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags,
    /// `/v2/<name>/manifests/<reference>`
    Manifest,
    /// `/v2/<name>/blobs/<digest>`
    Blob,
    /// `/v2/<name>/blobs/uploads/` (Distribution's `blob-upload`)
    BlobUpload,
    /// `/v2/<name>/blobs/uploads/<uuid>` (Distribution's `blob-upload-chunk`)
    BlobUploadChunk,
    /// `/v2/<name>/referrers/<digest>` (berth's; Distribution has no such route)
    Referrers,
    /// `/token`, berth's own token server
    Token,
    /// Any other path (Distribution does not count them; berth does, so scans show).
    Other,
}

impl Handler {
    /// Every handler, in label order.
    pub const ALL: [Handler; 10] = [
        Handler::Base,
        Handler::Catalog,
        Handler::Tags,
        Handler::Manifest,
        Handler::Blob,
        Handler::BlobUpload,
        Handler::BlobUploadChunk,
        Handler::Referrers,
        Handler::Token,
        Handler::Other,
    ];

    /// The `handler` label.
    pub fn label(self) -> &'static str {
        match self {
            Handler::Base => "base",
            Handler::Catalog => "catalog",
            Handler::Tags => "tags",
            Handler::Manifest => "manifest",
            Handler::Blob => "blob",
            Handler::BlobUpload => "blob_upload",
            Handler::BlobUploadChunk => "blob_upload_chunk",
            Handler::Referrers => "referrers",
            Handler::Token => "token",
            Handler::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The `method` label: lower case, as promhttp writes it; methods outside this list are
/// `other`, so a client cannot add series by inventing methods.
const METHODS: [&str; 8] = [
    "get", "head", "post", "put", "patch", "delete", "options", "other",
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The statuses berth answers with, whose counters are kept in slots (sorted).
const CODES: [u16; 31] = [
    100, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 409,
    411, 412, 413, 415, 416, 422, 429, 500, 501, 502, 503, 504,
];

/// Distribution's duration buckets (docker/go-metrics `defaultDurationBuckets`).
const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS, 1e9)
}

/// Distribution's size buckets: 1 KiB to 2 GiB by powers of two (1024·2^k, k = 0..21).
fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 2.0, 22), 1.0)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: u16,
    handler: &'static str,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    handler: &'static str,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    handler: &'static str,
}

/// Everything keyed by one handler, resolved once.
struct PerHandler {
    in_flight: Gauge,
    request_size: Histogram,
    response_size: Histogram,
    received: Counter,
    sent: Counter,
    /// By method.
    durations: [OnceLock<Histogram>; METHODS.len()],
    /// By method × [`CODES`].
    requests: Box<[OnceLock<Counter>]>,
}

struct Inner {
    handlers: Vec<PerHandler>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<MethodLabels, Histogram>,
    uploads_in_flight: Gauge,
}

/// The HTTP metrics: take a [`RequestMetrics`] per request with [`HttpMetrics::start`].
///
/// Its state lives as long as the process (it is leaked, once per [`crate::Metrics`], and a
/// process builds one): every request then refers to it without touching a shared reference
/// count, which two cores would otherwise pass back and forth on every request.
#[derive(Clone, Copy)]
pub struct HttpMetrics {
    inner: &'static Inner,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

impl HttpMetrics {
    pub(crate) fn register(registry: &mut Registry) -> HttpMetrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<MethodLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let in_flight = Family::<HandlerLabels, Gauge>::default();
        let request_size = Family::<HandlerLabels, Histogram>::new_with_constructor(
            size_histogram as fn() -> Histogram,
        );
        let response_size = Family::<HandlerLabels, Histogram>::new_with_constructor(
            size_histogram as fn() -> Histogram,
        );
        let received = Family::<HandlerLabels, Counter>::default();
        let sent = Family::<HandlerLabels, Counter>::default();
        let uploads_in_flight = Gauge::default();
        let handlers = Handler::ALL
            .iter()
            .map(|h| {
                let labels = HandlerLabels { handler: h.label() };
                PerHandler {
                    in_flight: in_flight.get_or_create_owned(&labels),
                    request_size: request_size.get_or_create_owned(&labels),
                    response_size: response_size.get_or_create_owned(&labels),
                    received: received.get_or_create_owned(&labels),
                    sent: sent.get_or_create_owned(&labels),
                    durations: Default::default(),
                    requests: (0..METHODS.len() * CODES.len())
                        .map(|_| OnceLock::new())
                        .collect(),
                }
            })
            .collect();
        registry.register(
            "registry_http_requests",
            "Total number of HTTP requests made.",
            requests.clone(),
        );
        registry.register(
            "registry_http_request_duration_seconds",
            "The HTTP request latencies in seconds.",
            durations.clone(),
        );
        registry.register(
            "registry_http_request_size_bytes",
            "The HTTP request sizes in bytes.",
            request_size,
        );
        registry.register(
            "registry_http_response_size_bytes",
            "The HTTP response sizes in bytes.",
            response_size,
        );
        registry.register(
            "registry_http_in_flight_requests",
            "The in-flight HTTP requests",
            in_flight,
        );
        registry.register(
            "berth_http_received_bytes",
            "Request body bytes received, counted as they arrive",
            received,
        );
        registry.register(
            "berth_http_sent_bytes",
            "Response body bytes sent, counted as they leave",
            sent,
        );
        registry.register(
            "berth_uploads_in_flight",
            "Blob upload requests (POST, PATCH, PUT of an upload) being served",
            uploads_in_flight.clone(),
        );
        HttpMetrics {
            inner: Box::leak(Box::new(Inner {
                handlers,
                requests,
                durations,
                uploads_in_flight,
            })),
        }
    }

    /// A request for `handler` with `method` and a head of about `head_bytes` has arrived:
    /// it counts as in flight until the returned value is dropped, and is recorded by
    /// [`RequestMetrics::finish`].
    pub fn start(&self, handler: Handler, method: &Method, head_bytes: u64) -> RequestMetrics {
        let per = &self.inner.handlers[handler.index()];
        per.in_flight.inc();
        let upload = matches!(handler, Handler::BlobUpload | Handler::BlobUploadChunk)
            && matches!(*method, Method::POST | Method::PATCH | Method::PUT);
        if upload {
            self.inner.uploads_in_flight.inc();
        }
        RequestMetrics {
            inner: self.inner,
            handler,
            method: method_index(method),
            started: Instant::now(),
            upload,
            head_bytes,
            received: None,
        }
    }
}

/// One request being served (see [`HttpMetrics::start`]).
pub struct RequestMetrics {
    inner: &'static Inner,
    handler: Handler,
    method: usize,
    started: Instant,
    upload: bool,
    head_bytes: u64,
    /// Body bytes received, when the body is counted ([`RequestMetrics::body_counter`]).
    received: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("handler", &self.handler)
            .field("method", &METHODS[self.method])
            .finish_non_exhaustive()
    }
}

/// Counts a request body's bytes as they arrive, into the request's size and
/// `berth_http_received_bytes_total`.
#[derive(Debug)]
pub struct BodyCounter {
    total: Arc<AtomicU64>,
    counter: Counter,
}

impl BodyCounter {
    /// `bytes` more arrived.
    pub fn add(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
        self.counter.inc_by(bytes);
    }
}

impl RequestMetrics {
    fn per(&self) -> &PerHandler {
        &self.inner.handlers[self.handler.index()]
    }

    /// A counter for the request's body (skip it for a body known to be empty).
    pub fn body_counter(&mut self) -> BodyCounter {
        let total = self.received.get_or_insert_with(Arc::default).clone();
        BodyCounter {
            total,
            counter: self.per().received.clone(),
        }
    }

    /// `bytes` of response body left.
    pub fn sent(&self, bytes: u64) {
        self.per().sent.inc_by(bytes);
    }

    /// The response is done (or was cut) with `status` after `response_bytes` of body. The
    /// request's size is its head's estimate plus the body bytes counted.
    pub fn finish(self, status: u16, response_bytes: u64) {
        let per = self.per();
        let elapsed = self.started.elapsed().as_secs_f64();
        let method = METHODS[self.method];
        per.durations[self.method]
            .get_or_init(|| {
                self.inner.durations.get_or_create_owned(&MethodLabels {
                    handler: self.handler.label(),
                    method,
                })
            })
            .observe(elapsed);
        let body = self
            .received
            .as_ref()
            .map_or(0, |r| r.load(Ordering::Relaxed));
        per.request_size.observe((self.head_bytes + body) as f64);
        per.response_size.observe(response_bytes as f64);
        let labels = || RequestLabels {
            code: status,
            handler: self.handler.label(),
            method,
        };
        match CODES.binary_search(&status) {
            Ok(code) => {
                per.requests[self.method * CODES.len() + code]
                    .get_or_init(|| self.inner.requests.get_or_create_owned(&labels()))
                    .inc();
            }
            Err(_) => {
                self.inner.requests.get_or_create(&labels()).inc();
            }
        }
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        self.per().in_flight.dec();
        if self.upload {
            self.inner.uploads_in_flight.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_for_the_binary_search() {
        assert!(CODES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn handler_indexes_follow_all() {
        for (i, h) in Handler::ALL.iter().enumerate() {
            assert_eq!(h.index(), i);
        }
    }
}
