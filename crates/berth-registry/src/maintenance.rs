//! Housekeeping while berth serves: which background loops run, and upload purging.
//!
//! [`Registry::start_maintenance`] is the one place that decides, from
//! `storage.maintenance`, what runs: Distribution's `uploadpurging` (sessions older than `age`
//! removed, or only reported in dry-run mode; how old a session is, `sessions.rs` decides, as
//! it does for garbage collection and `check`), berth's online garbage collection, and, when
//! no collection removes them, the expiry of old pins. A read-only registry runs none.

use std::time::{Duration, SystemTime};

use crate::{GcOptions, Registry, Result};

/// `storage.maintenance.uploadpurging`, when enabled.
#[derive(Debug, Clone, Copy)]
pub struct Purging {
    /// Sessions older than this are purged.
    pub age: Duration,
    /// Time between passes.
    pub interval: Duration,
    /// Report, remove nothing.
    pub dry_run: bool,
}

/// What runs in the background while berth serves (`storage.maintenance`).
#[derive(Debug, Clone)]
pub struct Maintenance {
    /// `readonly.enabled`: nothing runs.
    pub read_only: bool,
    /// Upload purging, when enabled.
    pub purging: Option<Purging>,
    /// Online garbage collection and the time between passes, when enabled.
    pub collection: Option<(GcOptions, Duration)>,
    /// `garbagecollect.graceperiod`: pins older than twice this expire.
    pub grace_period: Duration,
}

/// What one purge pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Sessions older than the age limit (removed unless dry run).
    pub purged: Vec<String>,
}

impl Registry {
    /// Starts the background loops `plan` asks for, for as long as the runtime runs.
    pub fn start_maintenance(&self, plan: Maintenance) {
        if plan.read_only {
            return;
        }
        if let Some(purging) = plan.purging {
            tokio::spawn(self.clone().purge_loop(purging));
        }
        // Collections remove expired pins; without them (a dry run removes nothing), the
        // pin expiry loop does (pins.rs).
        if plan.collection.as_ref().is_none_or(|(o, _)| o.dry_run) {
            tokio::spawn(self.clone().pin_expiry_loop(plan.grace_period));
        }
        if let Some((options, interval)) = plan.collection {
            tokio::spawn(self.clone().gc_loop(options, interval));
        }
    }

    async fn purge_loop(self, purging: Purging) {
        // The first pass comes soon after start, so a registry restarted more often than the
        // interval still purges.
        let interval = purging.interval.max(Duration::from_secs(1));
        let mut wait = interval.min(Duration::from_secs(60));
        loop {
            tokio::time::sleep(wait).await;
            wait = interval;
            match self.purge_uploads(purging.age, purging.dry_run).await {
                Ok(report) => tracing::info!(
                    purged = report.purged.len(),
                    dry_run = purging.dry_run,
                    "upload purge finished"
                ),
                Err(e) => tracing::warn!(error = %e, "upload purge failed"),
            }
        }
    }

    /// Removes pins older than twice the grace period, once a grace period. Twice: a
    /// collection run elsewhere (`berth garbage-collect`, another replica) relies on pins
    /// younger than its start minus the grace period.
    async fn pin_expiry_loop(self, grace: Duration) {
        let interval = grace.max(Duration::from_secs(60));
        let mut wait = Duration::from_secs(60);
        loop {
            tokio::time::sleep(wait).await;
            wait = interval;
            match self.expire_pins(grace.saturating_mul(2)).await {
                Ok(removed) => tracing::info!(removed, "expired pins removed"),
                Err(e) => tracing::warn!(error = %e, "removing expired pins failed"),
            }
        }
    }

    /// Online garbage collection: one pass every `interval`. Pushes need no pause: pins, the
    /// grace period and quarantine keep them safe (gc.rs).
    async fn gc_loop(self, options: GcOptions, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            // The pass logs its own progress and results; the counters feed the metrics.
            match self.garbage_collect(&options).await {
                Ok(report) => self
                    .inner
                    .caches
                    .stats
                    .gc_finished(&report, options.dry_run),
                Err(e) => {
                    self.inner.caches.stats.gc_failed();
                    tracing::warn!(error = %e, "garbage collection failed");
                }
            }
        }
    }

    /// Removes (or, with `dry_run`, lists) upload sessions older than `age`.
    pub async fn purge_uploads(&self, age: Duration, dry_run: bool) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let now = SystemTime::now();
        for session in self.stored_sessions().await? {
            if !session.stale(now, age) {
                continue;
            }
            report.purged.push(session.name());
            if dry_run {
                tracing::info!(upload = %session.name(), "upload purge (dry run) would remove");
            } else if let Err(e) = self.remove_stored_session(&session).await {
                tracing::warn!(upload = %session.name(), error = %e, "could not purge upload session");
            }
        }
        Ok(report)
    }
}
