//! Pins: how an operation that is about to make a blob referenced tells every garbage
//! collector, in this process or any other sharing the storage, to keep it.
//!
//! A pin is an empty object `_berth/pins/<alg>/<hex>/<uuid>` (see `layout`); its
//! modification time, on the storage's clock, is what counts. Manifest PUTs pin every blob and
//! child manifest they reference and the manifest itself, uploads and mounts pin the blob
//! they link, and each does so *before* checking the blob is present. The collector moves a
//! blob aside before it re-reads the pins and deletes it, so either it sees the pin and puts
//! the blob back, or the operation finds the blob gone and fails cleanly (`gc.rs`'s
//! module doc has the whole argument). Every pin has its own name so that the
//! collector's removal of an expired pin can never remove a fresh one.
//!
//! A pin older than a collection's threshold (its start minus the grace period) protects
//! nothing in that run, so expired pins may be removed: each collection removes those older
//! than its own threshold, and `serve` without online collection runs
//! [`Registry::expire_pins`] with twice the grace period (safe while no collection run
//! lasts longer than a grace period), so that a registry that never collects garbage keeps
//! one empty file per blob referenced recently, not one per reference ever made.

use std::time::{Duration, Instant, SystemTime};

use berth_oci::Digest;
use berth_storage::FileInfo;
use futures_util::StreamExt;

use crate::{Registry, Result, layout};

/// When this process pinned a set of digests. A pin protects its blobs for the collector's
/// grace period; the operation must write its links well within it, so it re-pins when the
/// lease (half the grace period, `Options::pin_lease`) has run out.
pub(crate) struct PinLease {
    at: Instant,
    lease: Duration,
}

impl PinLease {
    /// True while links written now are still covered by the pins. A zero lease (a grace
    /// period of 0s, which only offline collection can use safely) covers nothing however
    /// often the pins are rewritten, so re-pinning would loop forever: it counts as valid.
    pub(crate) fn is_valid(&self) -> bool {
        self.lease.is_zero() || self.at.elapsed() < self.lease
    }

    /// True when more than the whole grace period (twice the lease) has passed since
    /// pinning: links written now may have missed a collection that no longer honours the
    /// pins. The safety argument assumes this never happens; it is logged when it does.
    pub(crate) fn overran(&self) -> bool {
        !self.lease.is_zero() && self.at.elapsed() > self.lease * 2
    }
}

/// Who wrote a pin. Both kinds keep a blob from the garbage collector; only a push's keeps it
/// from cache eviction, which would otherwise spare everything fetched within a grace period,
/// since every fill pins what it stores (`proxied` has the argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// An upload, mount or manifest PUT from a client.
    Push,
    /// A pull-through cache storing or linking what it fetched.
    Cache,
}

impl Registry {
    /// Pins every digest in `digests` (concurrently) for a push and returns the lease.
    pub(crate) async fn pin<'a>(
        &self,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<PinLease> {
        self.pin_for(Holder::Push, digests).await
    }

    /// Pins every digest in `digests` (concurrently) on behalf of `holder`.
    pub(crate) async fn pin_for<'a>(
        &self,
        holder: Holder,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<PinLease> {
        let at = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let writes = digests.into_iter().filter(|d| seen.insert(*d)).map(|d| {
            let id = uuid::Uuid::new_v4();
            let path = match holder {
                Holder::Push => layout::pin(d, &id),
                Holder::Cache => layout::cache_pin(d, &id),
            };
            async move { self.driver().touch(&path).await }
        });
        futures_util::future::try_join_all(writes).await?;
        Ok(PinLease {
            at,
            lease: self.options().pin_lease,
        })
    }
}

impl Registry {
    /// Removes every pin older than `age`, measured on the storage's clock (a marker is
    /// written and its time read back, so this host's clock does not matter). Returns how
    /// many were removed. `age` must exceed the grace period of any collection that may be
    /// running by at least that run's length (`serve` uses twice its grace period).
    pub async fn expire_pins(&self, age: Duration) -> Result<usize> {
        // The marker is a collection run's start marker, so one left by a crash is cleaned
        // up by the next collection like any abandoned run's.
        let run = uuid::Uuid::new_v4();
        let marker = layout::gc_run_started(&run);
        self.driver().put(&marker, bytes::Bytes::new()).await?;
        let now = self.driver().stat(&marker).await.map(|m| m.modified);
        let removed_marker = self.driver().delete(&layout::gc_run(&run)).await;
        let now = now?;
        removed_marker?;
        // An age beyond the clock's start expires nothing.
        let Some(threshold) = now.checked_sub(age) else {
            return Ok(0);
        };
        let pins = crate::gc::walk_or_empty(self, &layout::pins_root()).await?;
        self.remove_expired_pins(pins.iter(), threshold).await
    }

    /// Removes the pins among `pins` modified before `threshold`; returns how many.
    pub(crate) async fn remove_expired_pins(
        &self,
        pins: impl Iterator<Item = &FileInfo>,
        threshold: SystemTime,
    ) -> Result<usize> {
        let expired: Vec<_> = pins
            .filter(|f| f.modified < threshold)
            .map(|f| f.path.clone())
            .collect();
        let results: Vec<berth_storage::Result<()>> = futures_util::stream::iter(expired)
            .map(|path| async move { self.driver().delete(&path).await })
            .buffer_unordered(crate::gc::CONCURRENCY)
            .collect()
            .await;
        let mut removed = 0;
        for r in results {
            match r {
                Ok(()) => removed += 1,
                // Removed meanwhile by another collector: gone either way.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }
}
