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
//!
//! A pin this process wrote moments ago serves the next operation on the same blob too (CI
//! pushes image after image on one base, and its layers are pinned by every manifest PUT):
//! the operation's lease then runs from that pin's writing, not from its own start, so it is
//! no less protected than its first user, and it must still write its links within the lease.
//! Pins are reused only within a short window (an eighth of a lease, at most 30 s), so an
//! operation that reuses one keeps most of its lease.

use std::time::{Duration, Instant, SystemTime};

use berth_oci::Digest;
use berth_storage::FileInfo;
use futures_util::StreamExt;

use crate::{Registry, Result, layout};

/// The part of a lease during which a pin just written is reused instead of written again:
/// an eighth, so an operation reusing a pin keeps at least seven eighths of its lease, and
/// never more than [`REUSE_MAX`], so that a collection run by hand with a grace period shorter
/// than the server's is not made less safe by more than that.
const REUSE_FRACTION: u32 = 8;
const REUSE_MAX: Duration = Duration::from_secs(30);

/// Entries kept before those too old to reuse are dropped.
const RECENT_PRUNE_AT: usize = 4096;

/// The pins this process wrote recently: when, by holder and digest; and which blobs it
/// knows to be linked in a repository and present since one of those pins was written.
#[derive(Default)]
pub(crate) struct Recent {
    written: std::sync::Mutex<std::collections::HashMap<(Holder, Digest), Instant>>,
    verified: std::sync::Mutex<Verified>,
}

/// Layers known linked and present, with the pin time each was established under, and how
/// many unlinks this process has begun: a verification that overlapped an unlink is not kept.
#[derive(Default)]
struct Verified {
    entries: std::collections::HashMap<(String, Digest), Instant>,
    unlinks: u64,
}

impl Recent {
    /// Taken before a layer is checked or linked, handed to [`Recent::verified`] after.
    pub(crate) fn unlinks(&self) -> u64 {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unlinks
    }

    /// Notes that `digest` was linked in `repo` and present after the pin written at `pin`
    /// (an upload that linked it, or a manifest PUT that checked it), unless this process
    /// began to unlink any layer since `unlinks_before` was taken (the check may have read a
    /// link that is now gone).
    pub(crate) fn verified(
        &self,
        repo: &str,
        digest: &Digest,
        pin: Instant,
        window: Duration,
        unlinks_before: u64,
    ) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.unlinks != unlinks_before {
            return;
        }
        if verified.entries.len() >= RECENT_PRUNE_AT {
            verified.entries.retain(|_, when| when.elapsed() < window);
        }
        verified
            .entries
            .insert((repo.to_owned(), digest.clone()), pin);
    }

    /// True when `digest` was found linked in `repo` and present after the very pin written
    /// at `pin`, which the caller is relying on now. The pin keeps the blob from every
    /// collector since (`gc.rs`'s argument, with the check made earlier); the link could only
    /// have gone by an unlink, which clears the entry when this process makes it. An unlink
    /// by another replica within the reuse window (30 s at most) is not seen: a manifest PUT
    /// here may then still name the layer, the outcome of the two requests in the other order.
    pub(crate) fn still_verified(&self, repo: &str, digest: &Digest, pin: Instant) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.entries.get(&(repo.to_owned(), digest.clone())) == Some(&pin)
    }

    /// Forgets what was verified of `digest` in `repo`, which is about to be unlinked, and
    /// voids verifications in progress.
    pub(crate) fn unlinked(&self, repo: &str, digest: &Digest) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.unlinks += 1;
        verified.entries.remove(&(repo.to_owned(), digest.clone()));
    }

    /// When a pin of `digest` that `holder` may rely on was written, if within `window`. A
    /// push's pin serves the cache too (it protects more), not the other way round.
    fn reusable(&self, holder: Holder, digest: &Digest, window: Duration) -> Option<Instant> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |h: Holder| {
            written
                .get(&(h, digest.clone()))
                .copied()
                .filter(|at| at.elapsed() < window)
        };
        match holder {
            Holder::Push => fresh(Holder::Push),
            Holder::Cache => fresh(Holder::Cache).max(fresh(Holder::Push)),
        }
    }

    fn wrote(&self, holder: Holder, digests: &[&Digest], at: Instant, window: Duration) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.len() >= RECENT_PRUNE_AT {
            written.retain(|_, when| when.elapsed() < window);
        }
        for d in digests {
            written.insert((holder, (*d).clone()), at);
        }
    }
}

/// When this process pinned a set of digests. A pin protects its blobs for the collector's
/// grace period; the operation must write its links well within it, so it re-pins when the
/// lease (half the grace period, `Options::pin_lease`) has run out.
pub(crate) struct PinLease {
    at: Instant,
    lease: Duration,
    /// When the pin relied on for each digest was written (reused ones earlier than `at`).
    pub(crate) pins: std::collections::HashMap<Digest, Instant>,
    /// How long a pin is reused, and a verification with it.
    pub(crate) window: Duration,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        let now = Instant::now();
        let lease = self.options().pin_lease;
        let window = (lease / REUSE_FRACTION).min(REUSE_MAX);
        let mut at = now;
        let mut pins = std::collections::HashMap::new();
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for d in digests.into_iter().filter(|d| seen.insert(*d)) {
            match self.inner.pins.reusable(holder, d, window) {
                Some(written) => {
                    at = at.min(written);
                    pins.insert(d.clone(), written);
                }
                None => missing.push(d),
            }
        }
        let writes = missing.iter().map(|d| {
            let id = uuid::Uuid::new_v4();
            let path = match holder {
                Holder::Push => layout::pin(d, &id),
                Holder::Cache => layout::cache_pin(d, &id),
            };
            async move { self.driver().touch(&path).await }
        });
        futures_util::future::try_join_all(writes).await?;
        self.inner.pins.wrote(holder, &missing, now, window);
        pins.extend(missing.into_iter().map(|d| (d.clone(), now)));
        Ok(PinLease {
            at,
            lease,
            pins,
            window,
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
