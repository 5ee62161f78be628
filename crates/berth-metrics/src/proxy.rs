//! The pull-through cache's metrics, labelled with each upstream's name (its configured
//! prefix, or its URL for Distribution's single `proxy.remoteurl`: a fixed set from the
//! config):
//!
//! - `berth_proxy_requests_total{upstream,result}`: manifest, blob and tag-list answers of
//!   proxied repositories by where they came from (`hit`, `revalidated`, `miss`, `stale`);
//! - `berth_proxy_upstream_bytes_total{upstream}`: body bytes received from the upstream;
//! - `berth_proxy_upstream_errors_total{upstream}`: upstream requests that failed (404s are
//!   answers, not errors).
//!
//! Pull only, as the notifier's: `berth-proxy` keeps its own atomic counters and knows
//! nothing of Prometheus; [`ProxyMetrics::watch`] is given a function that reads them at
//! every scrape.

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

/// One upstream's counters at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// The upstream's name.
    pub upstream: String,
    /// Answers from the cache without asking the upstream.
    pub hits: u64,
    /// Answers from the cache after the upstream confirmed the tag.
    pub revalidated: u64,
    /// Answers fetched from the upstream.
    pub misses: u64,
    /// Answers from the cache because the upstream failed.
    pub stale: u64,
    /// Upstream requests that failed.
    pub errors: u64,
    /// Body bytes received from the upstream.
    pub bytes: u64,
}

type Source = Box<dyn Fn() -> Vec<ProxyCounts> + Send + Sync>;

/// The proxy metrics: see the module doc.
#[derive(Clone, Default)]
pub struct ProxyMetrics {
    source: Arc<OnceLock<Source>>,
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

impl ProxyMetrics {
    pub(crate) fn register(registry: &mut Registry) -> ProxyMetrics {
        let metrics = ProxyMetrics::default();
        registry.register_collector(Box::new(ProxyCollector(metrics.source.clone())));
        metrics
    }

    /// Reports what `source` returns at every scrape (only the first source given is used).
    pub fn watch(&self, source: impl Fn() -> Vec<ProxyCounts> + Send + Sync + 'static) {
        let _ = self.source.set(Box::new(source));
    }
}

struct ProxyCollector(Arc<OnceLock<Source>>);

impl std::fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyCollector").finish_non_exhaustive()
    }
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        let all = source();
        let mut requests = encoder.encode_descriptor(
            "berth_proxy_requests",
            "Answers of proxied repositories by where they came from",
            None,
            MetricType::Counter,
        )?;
        for c in &all {
            for (result, n) in [
                ("hit", c.hits),
                ("revalidated", c.revalidated),
                ("miss", c.misses),
                ("stale", c.stale),
            ] {
                let labels = [("upstream", c.upstream.as_str()), ("result", result)];
                ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
            }
        }
        type Get = fn(&ProxyCounts) -> u64;
        let families: [(&str, &str, Get); 2] = [
            (
                "berth_proxy_upstream_bytes",
                "Body bytes received from the upstream",
                |c| c.bytes,
            ),
            (
                "berth_proxy_upstream_errors",
                "Upstream requests that failed (404 answers not counted)",
                |c| c.errors,
            ),
        ];
        for (name, help, get) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in &all {
                let labels = [("upstream", c.upstream.as_str())];
                ConstCounter::new(get(c)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_upstream_gets_its_series() {
        let metrics = crate::Metrics::new("test");
        metrics.proxy().watch(|| {
            vec![super::ProxyCounts {
                upstream: "hub".into(),
                hits: 3,
                misses: 1,
                bytes: 1234,
                errors: 2,
                ..Default::default()
            }]
        });
        let text = metrics.encode();
        for line in [
            "berth_proxy_requests_total{upstream=\"hub\",result=\"hit\"} 3",
            "berth_proxy_requests_total{upstream=\"hub\",result=\"miss\"} 1",
            "berth_proxy_requests_total{upstream=\"hub\",result=\"stale\"} 0",
            "berth_proxy_upstream_bytes_total{upstream=\"hub\"} 1234",
            "berth_proxy_upstream_errors_total{upstream=\"hub\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
