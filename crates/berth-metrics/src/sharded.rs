//! Counters, gauges and histograms for the request path, each split into per-thread shards on
//! cache lines of their own, encoded by prometheus-client like its own metric types.
//!
//! Why not prometheus-client's: each of its metrics is one atomic (a histogram, one mutex),
//! and a request on a server with two cores updates about seven of them from whichever core
//! runs it. Every update then moves a cache line from the other core: measured on manifest
//! HEAD/GET, that was most of what metrics cost. Here each thread writes its own shard
//! (chosen once per thread), so updates stay in the core's cache, and a scrape adds the
//! shards up. A scrape may see a request's count before its sum, as with any lock-free
//! histogram; every value only grows, so the next scrape is whole again.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per metric: one per tokio worker thread on machines up to this many cores; beyond,
/// threads share shards (still far fewer writers per line than one line for all).
const SHARDS: usize = 8;

/// The shard of the current thread.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// A value on a cache line (pair) of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line<T>(T);

/// A counter (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Counter {
    shards: Arc<[Line<AtomicU64>; SHARDS]>,
}

impl Counter {
    /// Adds `v`.
    pub fn inc_by(&self, v: u64) {
        self.shards[shard()].0.fetch_add(v, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A gauge moved up and down (a thread may add what another takes away: only the sum means
/// anything).
#[derive(Debug, Clone, Default)]
pub struct Gauge {
    shards: Arc<[Line<AtomicI64>; SHARDS]>,
}

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.shards[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.shards[shard()].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The sum.
    pub fn get(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, i64::wrapping_add)
    }
}

impl TypedMetric for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Gauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Buckets at most (their upper bounds; `+Inf` is added).
const MAX_BUCKETS: usize = 22;

#[derive(Debug, Default)]
struct HistogramShard {
    count: AtomicU64,
    /// In units of `1 / scale`.
    sum: AtomicU64,
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; MAX_BUCKETS + 1],
}

#[derive(Debug)]
struct HistogramInner {
    bounds: Vec<f64>,
    /// Sums are kept as integers of `1 / scale` (nanoseconds for seconds, bytes for bytes),
    /// so an observation is three additions and never a compare-and-swap loop.
    scale: f64,
    shards: [Line<HistogramShard>; SHARDS],
}

/// A histogram with fixed buckets (see the module doc).
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

impl Histogram {
    /// Buckets with these upper bounds (at most [`MAX_BUCKETS`] are kept), sums kept to
    /// `1 / scale` of the observed unit.
    pub fn new(bounds: impl IntoIterator<Item = f64>, scale: f64) -> Histogram {
        let bounds: Vec<f64> = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .take(MAX_BUCKETS)
            .collect();
        Histogram {
            inner: Arc::new(HistogramInner {
                bounds,
                scale,
                shards: Default::default(),
            }),
        }
    }

    /// Records `v` (negative values count as 0).
    pub fn observe(&self, v: f64) {
        let inner = &*self.inner;
        let bucket = inner.bounds.partition_point(|b| *b < v);
        let shard = &inner.shards[shard()].0;
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.count.fetch_add(1, Ordering::Relaxed);
        // `as` saturates, and maps NaN and negatives to 0.
        let units = (v * inner.scale) as u64;
        shard.sum.fetch_add(units, Ordering::Relaxed);
    }

    /// `(sum, count, per-bucket counts with their upper bounds)`.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let mut buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        let (mut sum, mut count) = (0u64, 0u64);
        for shard in &inner.shards {
            let s = &shard.0;
            count = count.wrapping_add(s.count.load(Ordering::Relaxed));
            sum = sum.wrapping_add(s.sum.load(Ordering::Relaxed));
            for (total, b) in buckets.iter_mut().zip(&s.buckets) {
                total.1 += b.load(Ordering::Relaxed);
            }
        }
        (sum as f64 / inner.scale, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_across_threads() {
        let counter = Counter::default();
        let gauge = Gauge::default();
        let histogram = Histogram::new([1.0, 10.0], 1e9);
        std::thread::scope(|s| {
            for t in 0..12 {
                let (counter, gauge, histogram) = (&counter, &gauge, &histogram);
                s.spawn(move || {
                    for i in 0..1000 {
                        counter.inc();
                        gauge.inc();
                        histogram.observe(if i % 2 == 0 { 0.5 } else { 20.0 });
                        if t % 2 == 0 {
                            gauge.dec();
                        }
                    }
                });
            }
        });
        assert_eq!(counter.get(), 12_000);
        assert_eq!(gauge.get(), 6_000);
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 12_000);
        assert!((sum - (6000.0 * 0.5 + 6000.0 * 20.0)).abs() < 1e-6, "{sum}");
        assert_eq!(buckets, vec![(1.0, 6000), (10.0, 0), (f64::INFINITY, 6000)]);
    }

    #[test]
    fn a_value_on_a_bound_is_in_that_bucket() {
        let h = Histogram::new([1024.0, 2048.0], 1.0);
        for v in [0.0, 1024.0, 1025.0, 2048.0, 5000.0, -3.0] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!((sum, count), (9097.0, 6), "-3 counts as 0");
        assert_eq!(buckets, vec![(1024.0, 3), (2048.0, 2), (f64::INFINITY, 1)]);
    }
}
