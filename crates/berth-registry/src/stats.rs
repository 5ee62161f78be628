//! Counters of what the registry did (cache lookups, garbage-collection runs), for whoever
//! exports metrics.
//!
//! Why here and as plain atomics: the registry is where caches are consulted and the
//! collector runs, but it must not know Prometheus (or HTTP). It counts with relaxed atomic
//! additions, which cost nothing measurable whether or not anyone reads them, and hands out
//! a [`RegistryStats`] snapshot; `berth-server`'s metrics module reads one at every scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::GcReport;

/// What the registry has done since it started. Every field only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Link lookups (tag `current` and revision links) answered from the link cache.
    pub link_cache_hits: u64,
    /// Link lookups that went to storage.
    pub link_cache_misses: u64,
    /// Manifest reads answered from the content cache.
    pub manifest_cache_hits: u64,
    /// Manifest reads that went to storage.
    pub manifest_cache_misses: u64,
    /// Online garbage-collection runs that finished.
    pub gc_runs: u64,
    /// Online garbage-collection runs that failed.
    pub gc_failures: u64,
    /// Blobs those runs deleted (not counting dry runs).
    pub gc_blobs_deleted: u64,
    /// Bytes those runs freed (not counting dry runs).
    pub gc_bytes_freed: u64,
}

/// The live counters behind [`RegistryStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) link_hits: AtomicU64,
    pub(crate) link_misses: AtomicU64,
    pub(crate) manifest_hits: AtomicU64,
    pub(crate) manifest_misses: AtomicU64,
    gc_runs: AtomicU64,
    gc_failures: AtomicU64,
    gc_blobs_deleted: AtomicU64,
    gc_bytes_freed: AtomicU64,
}

/// Adds one: a relaxed addition, since no reader orders other memory by these counters.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// A finished collection run; a dry run frees nothing.
    pub(crate) fn gc_finished(&self, report: &GcReport, dry_run: bool) {
        bump(&self.gc_runs);
        if !dry_run {
            self.gc_blobs_deleted
                .fetch_add(report.blobs_swept.len() as u64, Ordering::Relaxed);
            self.gc_bytes_freed
                .fetch_add(report.bytes_freed, Ordering::Relaxed);
        }
    }

    /// A collection run that stopped with an error.
    pub(crate) fn gc_failed(&self) {
        bump(&self.gc_failures);
    }

    pub(crate) fn snapshot(&self) -> RegistryStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RegistryStats {
            link_cache_hits: get(&self.link_hits),
            link_cache_misses: get(&self.link_misses),
            manifest_cache_hits: get(&self.manifest_hits),
            manifest_cache_misses: get(&self.manifest_misses),
            gc_runs: get(&self.gc_runs),
            gc_failures: get(&self.gc_failures),
            gc_blobs_deleted: get(&self.gc_blobs_deleted),
            gc_bytes_freed: get(&self.gc_bytes_freed),
        }
    }
}
