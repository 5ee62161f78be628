//! berth's Prometheus metrics, served on the debug listener (`http.debug.addr`) when
//! `http.debug.prometheus.enabled` is set.
//!
//! Why a crate of its own: the HTTP layer, the storage wrapper and the notifier all record
//! metrics, and none of them should depend on another for it (`berth-notify` must not pull in
//! the HTTP server, `berth-storage` must not know Prometheus). Each gets a handle from the one
//! [`Metrics`] the binary builds.
//!
//! What is exported:
//! - **Distribution's names and labels** (docker/go-metrics under namespace `registry`), so
//!   dashboards built for `registry:2` keep working: `registry_http_requests_total{code,
//!   handler,method}`, `registry_http_request_duration_seconds{handler,method}`,
//!   `registry_http_request_size_bytes{handler}`, `registry_http_response_size_bytes{handler}`,
//!   `registry_http_in_flight_requests{handler}` ([`HttpMetrics`]; `handler` is Distribution's
//!   route name, never a path: [`Handler`]; `method` lower-case as Go's promhttp writes it);
//!   `registry_storage_action_seconds{driver,action}` ([`TimedDriver`]); and the storage
//!   cache counters of both Distribution lines, `registry_storage_cache_total{type}` (2.x:
//!   `Request`, `Hit`, `Miss`) and `registry_storage_cache_requests_total` /
//!   `registry_storage_cache_hits_total` (3.x), counting berth's manifest-read caches.
//! - **berth's own** (namespace `berth`): `berth_build_info{version}`,
//!   `berth_http_received_bytes_total{handler}` and `berth_http_sent_bytes_total{handler}`
//!   (body bytes, counted as they stream), `berth_uploads_in_flight`,
//!   `berth_cache_lookups_total{cache,result}`, `berth_gc_runs_total`,
//!   `berth_gc_failures_total`, `berth_gc_blobs_deleted_total`, `berth_gc_freed_bytes_total`,
//!   and the notification metrics ([`NotificationMetrics`]).
//!
//! Cost: the request path adds to atomics on cache lines of its own thread (`sharded.rs`),
//! and every label set it uses is resolved once (at start, or at its first use for the
//! status-code combinations) and kept, so no request looks a label set up in a map or takes
//! a lock. With metrics off nothing here is built and the HTTP layer skips it entirely.

mod notifications;
mod proxy;
mod requests;
mod sharded;
mod storage;

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use notifications::{EndpointMetrics, NotificationCounts, NotificationMetrics};
pub use proxy::{ProxyCounts, ProxyMetrics};
pub use requests::{BodyCounter, Handler, HttpMetrics, RequestMetrics};
pub use storage::{StorageAction, TimedDriver};

/// The `Content-Type` of [`Metrics::encode`]'s output: Prometheus text format 0.0.4, what
/// Distribution's `promhttp` handler serves.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric berth exports, and the handles that record them. Build one per process
/// (with [`Metrics::new`]), share it behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    http: HttpMetrics,
    storage: Family<storage::Labels, sharded::Histogram>,
    notifications: NotificationMetrics,
    proxy: ProxyMetrics,
    watched: Arc<OnceLock<berth_registry::Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every metric, registered; `version` goes into `berth_build_info`.
    pub fn new(version: &str) -> Metrics {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let storage = storage::register(&mut registry);
        let notifications = NotificationMetrics::register(&mut registry);
        let proxy = ProxyMetrics::register(&mut registry);
        let build_info = Family::<[(&'static str, String); 1], Gauge>::default();
        build_info
            .get_or_create(&[("version", version.to_owned())])
            .set(1);
        registry.register(
            "berth_build_info",
            "berth's version; the value is always 1",
            build_info,
        );
        let watched = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(RegistryCollector(watched.clone())));
        Metrics {
            registry,
            http,
            storage,
            notifications,
            proxy,
            watched,
        }
    }

    /// The HTTP request metrics, for the server's request path.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The notification metrics: a source to read at each scrape, or hooks to call (see
    /// [`NotificationMetrics`]).
    pub fn notifications(&self) -> &NotificationMetrics {
        &self.notifications
    }

    /// The pull-through cache's metrics (see [`ProxyMetrics`]).
    pub fn proxy(&self) -> &ProxyMetrics {
        &self.proxy
    }

    /// `driver`, with every call timed into `registry_storage_action_seconds`.
    pub fn time_storage(
        &self,
        driver: Arc<dyn berth_storage::StorageDriver>,
    ) -> Arc<dyn berth_storage::StorageDriver> {
        Arc::new(TimedDriver::new(driver, &self.storage))
    }

    /// Reports `registry`'s counters (cache lookups, collection runs) from now on. Only the
    /// first registry given is watched.
    pub fn watch(&self, registry: &berth_registry::Registry) {
        let _ = self.watched.set(registry.clone());
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// The registry's own counters, read at every scrape.
struct RegistryCollector(Arc<OnceLock<berth_registry::Registry>>);

impl std::fmt::Debug for RegistryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCollector").finish_non_exhaustive()
    }
}

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self
            .0
            .get()
            .map(berth_registry::Registry::stats)
            .unwrap_or_default();
        let hits = stats.link_cache_hits + stats.manifest_cache_hits;
        let misses = stats.link_cache_misses + stats.manifest_cache_misses;

        let labeled = |encoder: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       values: &[(&[(&'static str, &'static str)], u64)]|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, value) in values {
                let series = family.encode_family(labels)?;
                ConstCounter::new(*value).encode(series)?;
            }
            Ok(())
        };
        labeled(
            &mut encoder,
            "registry_storage_cache",
            "The number of cache request received",
            &[
                (&[("type", "Request")], hits + misses),
                (&[("type", "Hit")], hits),
                (&[("type", "Miss")], misses),
            ],
        )?;
        labeled(
            &mut encoder,
            "berth_cache_lookups",
            "Lookups in berth's manifest-read caches (link: tag and revision links; manifest: \
             verified manifest content)",
            &[
                (
                    &[("cache", "link"), ("result", "hit")],
                    stats.link_cache_hits,
                ),
                (
                    &[("cache", "link"), ("result", "miss")],
                    stats.link_cache_misses,
                ),
                (
                    &[("cache", "manifest"), ("result", "hit")],
                    stats.manifest_cache_hits,
                ),
                (
                    &[("cache", "manifest"), ("result", "miss")],
                    stats.manifest_cache_misses,
                ),
            ],
        )?;
        let plain: [(&str, &str, u64); 6] = [
            (
                "registry_storage_cache_requests",
                "The number of cache request received",
                hits + misses,
            ),
            (
                "registry_storage_cache_hits",
                "The number of cache request received",
                hits,
            ),
            (
                "berth_gc_runs",
                "Online garbage-collection runs that finished",
                stats.gc_runs,
            ),
            (
                "berth_gc_failures",
                "Online garbage-collection runs that failed",
                stats.gc_failures,
            ),
            (
                "berth_gc_blobs_deleted",
                "Blobs deleted by online garbage collection",
                stats.gc_blobs_deleted,
            ),
            (
                "berth_gc_freed_bytes",
                "Bytes freed by online garbage collection",
                stats.gc_bytes_freed,
            ),
        ];
        for (name, help, value) in plain {
            let counter = ConstCounter::new(value);
            let series = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(series)?;
        }
        Ok(())
    }
}
