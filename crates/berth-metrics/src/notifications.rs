//! The notification (webhook) metrics, labelled with each endpoint's configured `name` (a
//! fixed set from the config, never a URL):
//!
//! - `berth_notifications_pending{endpoint}`: events queued, not yet delivered or dropped;
//! - `berth_notifications_delivered_total{endpoint}`: events the endpoint accepted (2xx);
//! - `berth_notifications_failed_total{endpoint}`: delivery attempts that failed (each retry
//!   counts);
//! - `berth_notifications_dropped_total{endpoint}`: events given up on (queue full, storage
//!   refused them).
//!
//! Why here: the notifier (`berth-notify`) must not depend on the HTTP server or on
//! Prometheus to be counted, and its queue depth is only known inside it. Two ways in, one
//! set of series:
//!
//! - **pull** ([`NotificationMetrics::watch`]): give a function returning each endpoint's
//!   [`NotificationCounts`]; it is called at every scrape. This is how the binary wires
//!   `berth-notify`, whose `Notifier::stats()` keeps its own atomic counters.
//! - **push** ([`NotificationMetrics::endpoint`]): an [`EndpointMetrics`] per endpoint whose
//!   methods (`set_pending`, `delivered`, `failed`, `dropped`) are one atomic operation each;
//!   [`EndpointMetrics::default`] is registered nowhere, for when metrics are off.
//!
//! Both are read at scrape time by one collector, so each metric is one family whichever way
//! its series came in.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// One endpoint's numbers at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationCounts {
    /// The endpoint's configured name.
    pub endpoint: String,
    /// Events queued, not yet delivered or dropped.
    pub pending: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Delivery attempts that failed.
    pub failed: u64,
    /// Events given up on.
    pub dropped: u64,
}

type Source = Box<dyn Fn() -> Vec<NotificationCounts> + Send + Sync>;

#[derive(Default)]
struct Inner {
    pushed: Mutex<Vec<EndpointMetrics>>,
    source: OnceLock<Source>,
}

/// The notification metrics: see the module doc.
#[derive(Clone)]
pub struct NotificationMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NotificationMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationMetrics")
            .finish_non_exhaustive()
    }
}

impl NotificationMetrics {
    pub(crate) fn register(registry: &mut Registry) -> NotificationMetrics {
        let inner = Arc::new(Inner::default());
        registry.register_collector(Box::new(NotificationCollector(inner.clone())));
        NotificationMetrics { inner }
    }

    /// Reports what `source` returns at every scrape (only the first source given is used).
    pub fn watch(&self, source: impl Fn() -> Vec<NotificationCounts> + Send + Sync + 'static) {
        let _ = self.inner.source.set(Box::new(source));
    }

    /// The metrics of the endpoint configured as `name`, to record into; its series appear
    /// (at zero) now. Asking twice for one name gives the same metrics.
    pub fn endpoint(&self, name: &str) -> EndpointMetrics {
        let mut pushed = self.inner.pushed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = pushed.iter().find(|e| *e.counts.name == *name) {
            return e.clone();
        }
        let e = EndpointMetrics {
            counts: Arc::new(Counts {
                name: name.into(),
                ..Counts::default()
            }),
        };
        pushed.push(e.clone());
        e
    }
}

#[derive(Debug, Default)]
struct Counts {
    name: Box<str>,
    pending: AtomicI64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// One notification endpoint's metrics: cheap to clone, every call one atomic operation.
/// `Default` is a set registered nowhere, for when metrics are off.
#[derive(Debug, Clone, Default)]
pub struct EndpointMetrics {
    counts: Arc<Counts>,
}

impl EndpointMetrics {
    /// The queue now holds `events` for this endpoint.
    pub fn set_pending(&self, events: u64) {
        let events = i64::try_from(events).unwrap_or(i64::MAX);
        self.counts.pending.store(events, Ordering::Relaxed);
    }

    /// The queue grew (positive) or shrank (negative) by `events`.
    pub fn add_pending(&self, events: i64) {
        self.counts.pending.fetch_add(events, Ordering::Relaxed);
    }

    /// An event was delivered (the endpoint answered 2xx).
    pub fn delivered(&self) {
        self.counts.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery attempt failed (it may be retried).
    pub fn failed(&self) {
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// An event was given up on.
    pub fn dropped(&self) {
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> NotificationCounts {
        let c = &self.counts;
        NotificationCounts {
            endpoint: c.name.to_string(),
            pending: u64::try_from(c.pending.load(Ordering::Relaxed)).unwrap_or(0),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

struct NotificationCollector(Arc<Inner>);

/// A family's name, help, type and value of one endpoint's counts.
type Family = (
    &'static str,
    &'static str,
    MetricType,
    fn(&NotificationCounts) -> u64,
);

impl std::fmt::Debug for NotificationCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationCollector")
            .finish_non_exhaustive()
    }
}

impl Collector for NotificationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut all: Vec<NotificationCounts> = self
            .0
            .pushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(EndpointMetrics::read)
            .collect();
        if let Some(source) = self.0.source.get() {
            all.extend(source());
        }
        let families: [Family; 4] = [
            (
                "berth_notifications_pending",
                "Notification events queued for an endpoint, not yet delivered or dropped",
                MetricType::Gauge,
                |c| c.pending,
            ),
            (
                "berth_notifications_delivered",
                "Notification events an endpoint accepted",
                MetricType::Counter,
                |c| c.delivered,
            ),
            (
                "berth_notifications_failed",
                "Notification delivery attempts that failed (each retry counts)",
                MetricType::Counter,
                |c| c.failed,
            ),
            (
                "berth_notifications_dropped",
                "Notification events given up on",
                MetricType::Counter,
                |c| c.dropped,
            ),
        ];
        for (name, help, kind, get) in families {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for counts in &all {
                let labels = [("endpoint", counts.endpoint.as_str())];
                let series = family.encode_family(&labels)?;
                match kind {
                    MetricType::Gauge => {
                        ConstGauge::new(i64::try_from(get(counts)).unwrap_or(i64::MAX))
                            .encode(series)?
                    }
                    _ => ConstCounter::new(get(counts)).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(metrics: &crate::Metrics) -> prometheus_parse::Scrape {
        let text = metrics.encode();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, endpoint: &str) -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("endpoint") == Some(endpoint))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
    }

    #[test]
    fn pushed_and_pulled_endpoints_share_one_family_each() {
        let metrics = crate::Metrics::new("test");
        let hooks = metrics.notifications().endpoint("audit");
        hooks.set_pending(3);
        hooks.add_pending(-1);
        hooks.delivered();
        hooks.failed();
        hooks.failed();
        hooks.dropped();
        assert_eq!(
            metrics.notifications().endpoint("audit").read(),
            hooks.read(),
            "one name, one set"
        );
        metrics.notifications().watch(|| {
            vec![NotificationCounts {
                endpoint: "ci".into(),
                pending: 7,
                delivered: 40,
                failed: 0,
                dropped: 2,
            }]
        });
        let s = scrape(&metrics);
        let want = [
            ("berth_notifications_pending", "audit", 2.0),
            ("berth_notifications_delivered_total", "audit", 1.0),
            ("berth_notifications_failed_total", "audit", 2.0),
            ("berth_notifications_dropped_total", "audit", 1.0),
            ("berth_notifications_pending", "ci", 7.0),
            ("berth_notifications_delivered_total", "ci", 40.0),
            ("berth_notifications_failed_total", "ci", 0.0),
            ("berth_notifications_dropped_total", "ci", 2.0),
        ];
        for (name, endpoint, v) in want {
            assert_eq!(value(&s, name, endpoint), Some(v), "{name}{{{endpoint}}}");
        }
        let text = metrics.encode();
        assert_eq!(
            text.matches("# TYPE berth_notifications_pending gauge")
                .count(),
            1,
            "{text}"
        );
        // Off: the same calls, on metrics registered nowhere.
        let off = EndpointMetrics::default();
        off.delivered();
        off.set_pending(u64::MAX);
    }
}
