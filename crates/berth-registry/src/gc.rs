//! Garbage collection: mark every blob a kept manifest references, sweep the rest, safely
//! while other processes keep pushing.
//!
//! The meaning is Distribution's `garbage-collect` (`registry/storage/garbagecollect.go`):
//! every manifest revision of every repository is kept, with all it references; with
//! `delete_untagged`, only manifests reachable from a tag are, and the others lose their
//! revision links. berth keeps more than Distribution 2.8 there: the children of a kept index
//! and the referrers (signatures, SBOMs) of a kept manifest are kept too.
//!
//! Unlike Distribution's, it runs online. Three things make that safe, argued in full below:
//! a grace period (nothing younger than it is swept, measured on the storage's clock), pins
//! (`pins.rs`: whoever is about to reference a blob says so first), and quarantine (a blob is
//! moved aside, then the pins are read again, then it is deleted or put back). The same pass
//! removes expired pins, abandoned quarantines, upload sessions older than the upload age,
//! and temporary files that crashed writes left behind.
//!
//! Speed comes from reading the tree with a few walks (one paginated LIST each on object
//! stores) instead of file by file, and from reading manifests concurrently.
//!
//! # Online, several processes, no read-only window
//!
//! Distribution's rule (mark every blob a kept manifest references,
//! sweep the rest) made safe against pushes running at the same time, in this process or in other
//! replicas sharing the bucket, so an in-process lock cannot be the mechanism. State lives under
//! `docker/registry/v2/_berth/` (pins, run markers; drawn in `layout.rs`), which Distribution
//! never reads; a file held aside is renamed `gc-<run>` in its own directory (one rename, no new
//! directories), a name Distribution's collector and catalog never read.
//!
//! **Pins.** Every operation that makes a blob referenced or linked first writes a pin
//! `_berth/pins/<alg>/<hex>/<uuid>` (an empty object; its storage-assigned modification time is
//! what counts) and only *then* checks that what it references is present:
//! a manifest PUT pins each config, layer and index child and the manifest itself; an upload pins
//! its blob before moving it into `blobs/` (or finding it there); a mount pins before checking
//! the source. Each pin has its own name, so removing an expired pin never removes a fresh one.
//! A pin the same process wrote in the last few seconds (30 s at most) stands in for a new
//! one, the operation's lease then counting from that pin; and a check made after that very
//! pin need not be made again (`pins.rs` has both arguments).
//!
//! **A run.** (1) Write `_berth/gc/<run>/started` and read back its modification time `T0`: every
//! age is measured on the storage's clock, never this host's; `threshold = T0 - grace`.
//! (2) Walk `repositories/` once, read every revision's manifest concurrently (the digest comes
//! from the path, so link files are not read), walk the pins once. A walk that fails stops the
//! run: one that silently returned less (a subdirectory vanishing mid-walk once did exactly that)
//! would unmark live manifests. (3) Put back whatever a run that died (its `started` marker is
//! old or gone) left aside: restoring is always safe. (4) Mark: every revision (or, with
//! `delete_untagged`, what tags reach, plus index children, referrers of kept manifests, revisions
//! younger than the grace period and pinned manifests; an untagged revision is removed by the same
//! quarantine dance as a blob, below). (5) Walk `blobs/`: candidates are unmarked blobs older than
//! `threshold` with no pin newer than `threshold`. (6) For each candidate: **move** it to
//! `blobs/…/<hex>/gc-<run>` (quarantine), **then** list its pins again; a pin newer than `threshold`
//! → move it back; none → delete the quarantined copy. (7) The same for layer links to blobs no
//! longer stored; then remove expired pins, upload sessions older than `uploadpurging.age`, and
//! temporary files older than the grace period.
//!
//! **Why a manifest never ends up pointing at a deleted blob.** Take a manifest PUT referencing
//! blob B: it pins B at time p, checks B is present at c > p, writes its revision link at r > c.
//! GC lists revisions at L ≥ T0, moves B aside at q, re-reads B's pins at s > q, deletes at d > s.
//! - If the listing saw the revision (r < L), B is marked and never a candidate.
//! - Otherwise, if p < s, GC's re-read finds the pin unless p < threshold = T0 − grace. But
//!   then the PUT spent more than the grace period between pinning and writing its revision link
//!   (p < T0 − grace and r > L ≥ T0); a PUT re-pins and re-checks when its pin is older than half
//!   the grace period (`PinLease`, `Options::pin_lease`) before it writes any link, so this
//!   cannot happen as long as writing the links after that check takes less than the other half
//!   of the grace period (the one timing assumption; with the default 1h grace period that is 30
//!   minutes for a few small writes, and a PUT that overruns logs a warning). So the pin is seen
//!   and B is moved back.
//! - If p > s, then c > p > s > q: B was moved aside before the PUT looked, and is only moved back
//!   if a pin is seen, which (p > s) it is not. So the PUT finds B missing and answers
//!   `MANIFEST_BLOB_UNKNOWN`; nothing was linked.
//!
//! A PUT thus either wins (B stays) or fails cleanly. Uploads and mounts follow the same argument:
//! one whose pin comes after the re-read creates a *new* `blobs/…/data` (or link), which the
//! delete of the quarantined copy does not touch; deletions only ever target the run's own
//! quarantine path, never `blobs/` after the move. The run's quarantine directory is unique, so
//! two collectors never delete each other's copies. Blobs uploaded shortly before or during a
//! run are also young (a blob's modification time is when its content was written), so the grace
//! period spares them even before the pins are considered.
//!
//! A run only relies on pins younger than its own `threshold`, so older ones may go: each run
//! removes those, and `serve` without online collection runs `Registry::expire_pins` once per
//! grace period, removing pins older than *twice* the grace period (safe while no collection
//! run, here or elsewhere, lasts longer than one grace period). So pins stay bounded by what was
//! referenced recently even when no collection ever runs.
//!
//! Costs: one small write per referenced blob not pinned by this process in the last seconds
//! on manifest PUT (concurrent); the collector reads
//! with four walks plus one GET per distinct manifest, 32 requests in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::{FileInfo, StoragePath};
use futures_util::{StreamExt, stream};
use serde::Deserialize;

use crate::layout::{self, Entry};
use crate::{Error, Registry, Result};

/// How many storage requests one phase keeps in flight.
pub(crate) const CONCURRENCY: usize = 32;

/// Sweeping is a rename, a pin listing and a delete per blob, each waiting on the disk
/// (a directory fsync on a filesystem): more in flight lets the journal batch them.
const SWEEP_CONCURRENCY: usize = 128;

/// A quarantine whose run started longer ago than this (and than the grace period) is taken
/// to belong to a collector that died; its contents are put back, which is always safe.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// What a run should do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    /// Keep only manifests reachable from a tag; delete the other revisions' links.
    pub delete_untagged: bool,
    /// Nothing younger than this is removed: blobs, revisions, pins, temporary files.
    pub grace_period: Duration,
    /// Upload sessions older than this are purged in the same pass (`None`: left alone).
    pub upload_age: Option<Duration>,
}

/// What a run found and did.
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    /// Manifests whose references were marked.
    pub manifests_marked: usize,
    /// Distinct blobs marked (manifests included).
    pub blobs_marked: usize,
    /// Blobs in the store when the run looked.
    pub blobs_seen: usize,
    /// Blobs removed (or, in a dry run, that would be), with their sizes.
    pub blobs_swept: Vec<(Digest, u64)>,
    /// Bytes those blobs held.
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they are younger than the grace period or pinned.
    pub blobs_spared: usize,
    /// Blobs put back because a pin appeared while they were set aside.
    pub blobs_restored: usize,
    /// Layer links to blobs no longer stored, removed.
    pub layer_links_removed: usize,
    /// Untagged revisions removed (or that would be), with `delete_untagged`.
    pub manifests_deleted: Vec<(RepoName, Digest)>,
    /// Upload sessions purged (`repository/uuid`).
    pub uploads_purged: Vec<String>,
    /// Temporary files of interrupted writes removed.
    pub temporaries_removed: usize,
    /// Expired pins removed.
    pub pins_removed: usize,
    /// How long the run took.
    pub duration: Duration,
}

/// Which collection runs are alive.
pub(crate) struct AbandonedRuns {
    /// Runs whose `started` marker is recent, this one included.
    live: HashSet<String>,
    /// Runs whose marker is old: their collector died.
    dead: HashSet<String>,
}

impl AbandonedRuns {
    /// Whether `run` is not known to be in progress (its marker is old, or gone).
    pub(crate) fn contains(&self, run: &str) -> bool {
        !self.live.contains(run)
    }
}

impl<'a> IntoIterator for &'a AbandonedRuns {
    type Item = &'a String;
    type IntoIter = std::collections::hash_set::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.dead.iter()
    }
}

/// What a manifest references, read leniently: whatever another registry stored is still
/// marked correctly (schema 1's `fsLayers` included), where strict parsing would refuse it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct References {
    config: Option<Ref>,
    #[serde(default)]
    layers: Vec<Ref>,
    #[serde(default)]
    manifests: Vec<Ref>,
    subject: Option<Ref>,
    #[serde(default)]
    fs_layers: Vec<BlobSum>,
}

#[derive(Debug, Deserialize)]
struct Ref {
    digest: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlobSum {
    blob_sum: String,
}

/// A manifest's outgoing edges.
#[derive(Debug, Default, Clone)]
pub(crate) struct Edges {
    /// Config and layers (and schema 1 blobSums).
    pub(crate) blobs: Vec<Digest>,
    /// Child manifests of an index.
    pub(crate) children: Vec<Digest>,
    /// The manifest this one refers to.
    subject: Option<Digest>,
}

/// What a stored manifest references; `None` when it is not JSON at all.
pub(crate) fn edges_of(body: &[u8]) -> Option<Edges> {
    let refs: References = serde_json::from_slice(body).ok()?;
    let digest = |s: &str| Digest::parse(s).ok();
    Some(Edges {
        blobs: refs
            .config
            .iter()
            .chain(&refs.layers)
            .filter_map(|r| digest(&r.digest))
            .chain(refs.fs_layers.iter().filter_map(|b| digest(&b.blob_sum)))
            .collect(),
        children: refs
            .manifests
            .iter()
            .filter_map(|r| digest(&r.digest))
            .collect(),
        subject: refs.subject.and_then(|s| digest(&s.digest)),
    })
}

/// Tag history links, by repository and the digest they record.
type TagIndex = HashMap<(RepoName, Digest), Vec<Tag>>;

/// Everything one walk of `repositories/` says.
#[derive(Default)]
struct RepoTree {
    /// Revision links with their modification times.
    revisions: Vec<(RepoName, Digest, SystemTime)>,
    /// Layer links with their modification times.
    layers: Vec<(RepoName, Digest, SystemTime)>,
    /// Revision and layer links some run set aside.
    quarantined: Vec<(StoragePath, Entry)>,
    /// Tag `current` links.
    tags: Vec<(RepoName, Tag, StoragePath)>,
    /// Tag history links, by repository and digest.
    tag_index: TagIndex,
    /// Upload sessions.
    uploads: Vec<crate::sessions::StoredSession>,
}

/// Walks `path`; an absent root is an empty tree. Any other failure stops the run: a walk
/// that silently returned less would leave manifests unmarked and their blobs swept.
pub(crate) async fn walk_or_empty(
    registry: &Registry,
    path: &StoragePath,
) -> Result<Vec<FileInfo>> {
    match registry.driver().walk(path).await {
        Ok(files) => Ok(files),
        Err(e) if e.is_not_found() => match registry.driver().stat(path).await {
            Err(absent) if absent.is_not_found() => Ok(Vec::new()),
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

fn ignore_not_found(r: berth_storage::Result<()>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

impl Registry {
    /// Runs one garbage collection: the phases of a `Collection`, in the order the module
    /// doc argues is safe.
    pub async fn garbage_collect(&self, options: &GcOptions) -> Result<GcReport> {
        let mut gc = Collection::begin(self, options).await?;
        gc.put_back_abandoned().await?;
        gc.read_manifests().await?;
        gc.mark().await?;
        gc.sweep_blobs().await?;
        gc.unlink_dangling_layers().await?;
        gc.housekeeping().await?;
        gc.finish().await
    }
}

/// Newest pin per digest, and every pin file with its time (for expiry).
type Pins = HashMap<Digest, (SystemTime, Vec<FileInfo>)>;

/// Whether the walk of the pins found a pin of `digest` no older than `threshold`.
fn pinned(pins: &Pins, digest: &Digest, threshold: SystemTime) -> bool {
    pins.get(digest)
        .is_some_and(|(newest, _)| *newest >= threshold)
}

/// One collection, phase to phase: what `begin` found, and what each phase learnt for the
/// next.
struct Collection<'a> {
    registry: &'a Registry,
    options: &'a GcOptions,
    began: Instant,
    /// Names this run's marker and everything it sets aside.
    run: uuid::Uuid,
    /// `T0 - grace`, on the storage's clock: nothing modified since is swept, and a pin
    /// modified since spares what it names.
    threshold: SystemTime,
    /// Which runs' quarantines are to be put back.
    abandoned: AbandonedRuns,
    tree: RepoTree,
    /// The walk of `blobs/`, judged by `sweep_blobs`.
    blob_files: Vec<FileInfo>,
    pins: Pins,
    /// Temporary files of interrupted writes, of any age.
    temporaries: Vec<FileInfo>,
    /// What each stored revision's manifest references.
    edges: HashMap<Digest, Edges>,
    /// Kept manifests and everything they reference: never swept.
    marked: HashSet<Digest>,
    /// Blobs in the store: what the walk found, less what `sweep_blobs` deleted.
    stored: HashSet<Digest>,
    report: GcReport,
}

impl<'a> Collection<'a> {
    /// Starts the run: its marker, the runs that died, and the four walks.
    async fn begin(registry: &'a Registry, options: &'a GcOptions) -> Result<Self> {
        let began = Instant::now();
        let run = uuid::Uuid::new_v4();
        // The run's start on the storage's clock: every modification time below was set by
        // the same clock, so ages do not depend on this host's.
        let started_marker = layout::gc_run_started(&run);
        let t0 = if options.dry_run {
            SystemTime::now()
        } else {
            registry
                .driver()
                .put(&started_marker, bytes::Bytes::new())
                .await?;
            registry.driver().stat(&started_marker).await?.modified
        };
        let threshold = t0.checked_sub(options.grace_period).unwrap_or(t0);
        tracing::info!(%run, dry_run = options.dry_run, delete_untagged = options.delete_untagged,
            grace_period = ?options.grace_period, "garbage collection started");

        let abandoned = registry.abandoned_runs(Some(&run), t0, threshold).await?;

        // The four walks are independent, so they run together (each is one blocking walk on
        // a filesystem, one paginated LIST on an object store). Their order does not matter
        // for safety: a blob is only a candidate if old, unmarked and unpinned, whenever seen.
        let blobs_root = layout::blobs_root();
        let (tree, blob_files, pins, temporaries) = tokio::try_join!(
            registry.walk_repositories(),
            walk_or_empty(registry, &blobs_root),
            registry.newest_pins(),
            registry.temporaries(),
        )?;
        Ok(Collection {
            registry,
            options,
            began,
            run,
            threshold,
            abandoned,
            tree,
            blob_files,
            pins,
            temporaries,
            edges: HashMap::new(),
            marked: HashSet::new(),
            stored: HashSet::new(),
            report: GcReport::default(),
        })
    }

    /// Puts back the revision links, layer links and blobs a collector that died set aside:
    /// always safe, and this run then judges them afresh. It precedes `read_manifests`, so a
    /// revision put back is read and marked like any other, and a manifest whose own blob sat
    /// in that quarantine is read too (read later, it would look missing, its references
    /// would go unmarked, and the sweep could take them).
    async fn put_back_abandoned(&mut self) -> Result<()> {
        if self.options.dry_run {
            return Ok(());
        }
        for f in self.blob_files.iter_mut() {
            if let Some(Entry::QuarantinedBlob(r, d)) = layout::classify(&f.path)
                && self.abandoned.contains(&r)
            {
                let original = layout::blob_data(&d);
                self.registry.restore(&f.path, &original).await?;
                f.path = original;
            }
        }
        for (path, entry) in std::mem::take(&mut self.tree.quarantined) {
            match entry {
                Entry::QuarantinedRevision(r, repo, digest) if self.abandoned.contains(&r) => {
                    self.registry
                        .restore(&path, &layout::revision_link(&repo, &digest))
                        .await?;
                    self.tree
                        .revisions
                        .push((repo, digest, SystemTime::UNIX_EPOCH));
                }
                Entry::QuarantinedLayer(r, repo, digest) if self.abandoned.contains(&r) => {
                    self.registry
                        .restore(&path, &layout::layer_link(&repo, &digest))
                        .await?;
                    self.tree
                        .layers
                        .push((repo, digest, SystemTime::UNIX_EPOCH));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads what every revision's manifest references.
    async fn read_manifests(&mut self) -> Result<()> {
        self.edges = self.registry.read_manifests(&self.tree).await?;
        Ok(())
    }

    /// Decides which revisions are kept (all of them, or with `delete_untagged` what
    /// `delete_untagged` keeps), then marks them and everything they reference.
    async fn mark(&mut self) -> Result<()> {
        let kept = if self.options.delete_untagged {
            self.delete_untagged().await?
        } else {
            self.tree
                .revisions
                .iter()
                .map(|(repo, digest, _)| (repo.clone(), digest.clone()))
                .collect()
        };
        let mut marked: HashSet<Digest> = HashSet::new();
        for (_, digest) in &kept {
            marked.insert(digest.clone());
            if let Some(e) = self.edges.get(digest) {
                marked.extend(e.blobs.iter().cloned());
                marked.extend(e.children.iter().cloned());
            }
        }
        self.report.manifests_marked = kept.len();
        self.report.blobs_marked = marked.len();
        self.marked = marked;
        tracing::info!(
            manifests = self.report.manifests_marked,
            blobs = self.report.blobs_marked,
            "garbage collection marked"
        );
        Ok(())
    }

    /// With `delete_untagged`: keeps what `Registry::reachable` reaches and removes every
    /// other revision link by the same quarantine dance as a blob; one a pin appeared for
    /// meanwhile is put back and kept. A dry run only reports them. Returns the kept set.
    async fn delete_untagged(&mut self) -> Result<HashSet<(RepoName, Digest)>> {
        let (registry, run, threshold) = (self.registry, self.run, self.threshold);
        let pins = &self.pins;
        let mut kept = registry
            .reachable(&self.tree, &self.edges, threshold, &|d: &Digest| {
                pinned(pins, d, threshold)
            })
            .await?;
        let doomed: Vec<(RepoName, Digest)> = self
            .tree
            .revisions
            .iter()
            .filter(|(repo, digest, _)| !kept.contains(&(repo.clone(), digest.clone())))
            .map(|(repo, digest, _)| (repo.clone(), digest.clone()))
            .collect();
        if self.options.dry_run {
            for (repo, digest) in doomed {
                tracing::info!(repository = %repo, %digest, "untagged manifest eligible for deletion (dry run)");
                self.report.manifests_deleted.push((repo, digest));
            }
            return Ok(kept);
        }
        let tag_index = Arc::new(std::mem::take(&mut self.tree.tag_index));
        let outcomes: Vec<(RepoName, Digest, Result<bool>)> = stream::iter(doomed)
            .map(|(repo, digest)| {
                let (this, tag_index) = (registry.clone(), tag_index.clone());
                async move {
                    let outcome = this
                        .sweep_revision(&run, &repo, &digest, threshold, &tag_index)
                        .await;
                    (repo, digest, outcome)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (repo, digest, outcome) in outcomes {
            if outcome? {
                tracing::info!(repository = %repo, %digest, "untagged manifest deleted");
                self.report.manifests_deleted.push((repo, digest));
            } else {
                kept.insert((repo, digest));
            }
        }
        Ok(kept)
    }

    /// Sweeps the candidates: unmarked blobs older than `threshold` with no pin newer than it
    /// when the pins were walked. Each is moved aside, its pins are read again, and only then
    /// is it deleted (or put back): the module doc argues why a PUT racing this either wins
    /// or fails cleanly. Blobs a collector that died set aside are put back first and judged
    /// like the rest. A dry run only reports the candidates.
    async fn sweep_blobs(&mut self) -> Result<()> {
        let (registry, options, run, threshold) =
            (self.registry, self.options, self.run, self.threshold);
        let Collection {
            blob_files,
            pins,
            marked,
            stored,
            report,
            ..
        } = self;
        let mut found = Vec::new();
        for f in std::mem::take(blob_files) {
            // A quarantined blob of this run's own or of a live run is not a candidate.
            if let Some(Entry::Blob(d)) = layout::classify(&f.path) {
                found.push((d, f.size, f.modified));
            }
        }
        let blobs: Vec<(Digest, u64)> = found
            .into_iter()
            .inspect(|(d, _, _)| {
                report.blobs_seen += 1;
                stored.insert(d.clone());
            })
            .filter(|(d, _, _)| !marked.contains(d))
            .filter(|(d, _, modified)| {
                let spare = *modified >= threshold || pinned(pins, d, threshold);
                if spare {
                    report.blobs_spared += 1;
                }
                !spare
            })
            .map(|(d, size, _)| (d, size))
            .collect();
        if options.dry_run {
            for (digest, size) in blobs {
                tracing::info!(%digest, size, "blob eligible for deletion (dry run)");
                report.bytes_freed += size;
                report.blobs_swept.push((digest, size));
            }
        } else {
            // Owned items and a cloned registry: futures that borrow from the stream's items
            // trip a compiler limitation (rust#102211) once the run is spawned as a task.
            let outcomes: Vec<(Digest, u64, Result<Option<bool>>)> = stream::iter(blobs)
                .map(|(digest, size)| {
                    let this = registry.clone();
                    async move {
                        let outcome = this.sweep_blob(&run, &digest, threshold, true).await;
                        (digest, size, outcome)
                    }
                })
                .buffer_unordered(SWEEP_CONCURRENCY)
                .collect()
                .await;
            for (digest, size, outcome) in outcomes {
                match outcome? {
                    Some(true) => {
                        tracing::debug!(%digest, size, "blob deleted");
                        report.bytes_freed += size;
                        report.blobs_swept.push((digest, size));
                    }
                    Some(false) => report.blobs_restored += 1,
                    None => {}
                }
            }
            for (digest, _) in &report.blobs_swept {
                stored.remove(digest);
            }
        }
        tracing::info!(
            swept = report.blobs_swept.len(),
            bytes_freed = report.bytes_freed,
            spared = report.blobs_spared,
            restored = report.blobs_restored,
            dry_run = options.dry_run,
            "garbage collection swept blobs"
        );
        Ok(())
    }

    /// Layer links to blobs no longer stored serve nothing; Distribution leaves them, berth
    /// removes the old ones under the same pin-and-quarantine rule, so that an upload or
    /// mount relinking the blob meanwhile keeps its link. A dry run neither removes nor
    /// counts them.
    async fn unlink_dangling_layers(&mut self) -> Result<()> {
        if self.options.dry_run {
            return Ok(());
        }
        let (registry, run, threshold) = (self.registry, self.run, self.threshold);
        let dangling: Vec<(RepoName, Digest)> = self
            .tree
            .layers
            .iter()
            .filter(|(_, d, modified)| !self.stored.contains(d) && *modified < threshold)
            .map(|(r, d, _)| (r.clone(), d.clone()))
            .collect();
        let unlinked: Vec<Result<bool>> = stream::iter(dangling)
            .map(|(repo, digest)| {
                let this = registry.clone();
                async move { this.sweep_layer_link(&run, &repo, &digest, threshold).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for u in unlinked {
            if u? {
                self.report.layer_links_removed += 1;
            }
        }
        Ok(())
    }

    /// Expired pins, stale upload sessions and temporary files. Pins older than `threshold`
    /// are ones this run does not rely on (the module doc says why removing them is safe).
    async fn housekeeping(&mut self) -> Result<()> {
        let (registry, options, threshold) = (self.registry, self.options, self.threshold);
        let now = SystemTime::now();
        if let Some(age) = options.upload_age {
            for session in self.tree.uploads.iter().filter(|s| s.stale(now, age)) {
                tracing::info!(upload = %session.name(), dry_run = options.dry_run, "stale upload session purged");
                if !options.dry_run {
                    registry.remove_stored_session(session).await?;
                }
                self.report.uploads_purged.push(session.name());
            }
        }
        for tmp in std::mem::take(&mut self.temporaries)
            .into_iter()
            .filter(|t| t.modified < threshold)
        {
            tracing::info!(path = %tmp.path, dry_run = options.dry_run, "temporary file of an interrupted write removed");
            if !options.dry_run {
                ignore_not_found(registry.driver().delete(&tmp.path).await)?;
            }
            self.report.temporaries_removed += 1;
        }
        if !options.dry_run {
            let files = self.pins.values().flat_map(|(_, files)| files);
            self.report.pins_removed += registry.remove_expired_pins(files, threshold).await?;
        }
        Ok(())
    }

    /// Removes this run's marker and those of the runs that died: a quarantine whose run has
    /// no marker counts as abandoned all the same. Then logs the totals.
    async fn finish(self) -> Result<GcReport> {
        let Collection {
            registry,
            options,
            began,
            run,
            abandoned,
            mut report,
            ..
        } = self;
        if !options.dry_run {
            ignore_not_found(registry.driver().delete(&layout::gc_run(&run)).await)?;
            for r in &abandoned {
                if let Ok(dir) = layout::gc_runs_root().join(r) {
                    ignore_not_found(registry.driver().delete(&dir).await)?;
                }
            }
        }
        report.duration = began.elapsed();
        tracing::info!(
            manifests_marked = report.manifests_marked,
            blobs_marked = report.blobs_marked,
            blobs_swept = report.blobs_swept.len(),
            bytes_freed = report.bytes_freed,
            manifests_deleted = report.manifests_deleted.len(),
            layer_links_removed = report.layer_links_removed,
            uploads_purged = report.uploads_purged.len(),
            temporaries_removed = report.temporaries_removed,
            pins_removed = report.pins_removed,
            duration_ms = report.duration.as_millis() as u64,
            dry_run = options.dry_run,
            "garbage collection finished"
        );
        Ok(report)
    }
}

impl Registry {
    /// One walk of `repositories/`, sorted into what the collector needs.
    async fn walk_repositories(&self) -> Result<RepoTree> {
        let mut tree = RepoTree::default();
        let mut uploads = Vec::new();
        for file in walk_or_empty(self, &layout::repositories_root()).await? {
            match layout::classify(&file.path) {
                Some(Entry::Revision(repo, digest)) => {
                    tree.revisions.push((repo, digest, file.modified))
                }
                Some(Entry::TagCurrent(repo, tag)) => tree.tags.push((repo, tag, file.path)),
                Some(Entry::Layer(repo, digest)) => tree.layers.push((repo, digest, file.modified)),
                Some(e @ (Entry::QuarantinedRevision(..) | Entry::QuarantinedLayer(..))) => {
                    tree.quarantined.push((file.path, e))
                }
                Some(Entry::TagIndex(repo, tag, digest)) => {
                    tree.tag_index.entry((repo, digest)).or_default().push(tag)
                }
                Some(e @ Entry::Upload(..)) => uploads.push((file, e)),
                _ => {}
            }
        }
        tree.uploads = crate::sessions::sessions_of(uploads.iter().map(|(f, e)| (f, e)));
        Ok(tree)
    }

    /// Reads every revision's manifest once, concurrently. A revision whose manifest is
    /// missing marks nothing (`check` reports it); one that cannot be parsed stops the run,
    /// because its references are unknown and sweeping could delete them.
    async fn read_manifests(&self, tree: &RepoTree) -> Result<HashMap<Digest, Edges>> {
        let digests: HashSet<&Digest> = tree.revisions.iter().map(|(_, d, _)| d).collect();
        let digests: Vec<Digest> = digests.into_iter().cloned().collect();
        let read: Vec<Result<Option<(Digest, Edges)>>> = stream::iter(digests)
            .map(|digest| {
                let this = self.clone();
                async move {
                    match this.driver().get(&layout::blob_data(&digest)).await {
                        Ok(body) => match edges_of(&body) {
                            Some(edges) => Ok(Some((digest, edges))),
                            None => {
                                tracing::error!(%digest, "manifest cannot be parsed; garbage collection stops");
                                Err(Error::Corrupt { digest })
                            }
                        },
                        Err(e) if e.is_not_found() => {
                            tracing::warn!(%digest, "revision names a manifest that is not stored");
                            Ok(None)
                        }
                        Err(e) => Err(e.into()),
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut edges = HashMap::new();
        for r in read {
            if let Some((d, e)) = r? {
                edges.insert(d, e);
            }
        }
        Ok(edges)
    }

    /// Temporary files of interrupted writes anywhere under the root, of any age.
    pub(crate) async fn temporaries(&self) -> Result<Vec<FileInfo>> {
        match self.driver().temporaries(&layout::v2_root()).await {
            Ok(t) => Ok(t),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Newest pin per digest, and every pin file with its time (for expiry).
    async fn newest_pins(&self) -> Result<Pins> {
        let mut pins = Pins::new();
        for file in walk_or_empty(self, &layout::pins_root()).await? {
            if let Some(Entry::Pin(d)) = layout::classify(&file.path) {
                let slot = pins.entry(d).or_insert((file.modified, Vec::new()));
                slot.0 = slot.0.max(file.modified);
                slot.1.push(file);
            }
        }
        Ok(pins)
    }

    /// True when a pin of `digest` younger than `threshold` exists now. Cache eviction passes
    /// `cache_pins` false: a pull-through cache's own pins do not keep a blob from it.
    async fn pinned_now(
        &self,
        digest: &Digest,
        threshold: SystemTime,
        cache_pins: bool,
    ) -> Result<bool> {
        // A pin directory has no subdirectories: NotFound means no pins.
        let pins = match self.driver().walk(&layout::pin_dir(digest)).await {
            Ok(pins) => pins,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(pins
            .iter()
            .filter(|f| cache_pins || !layout::is_cache_pin(&f.path))
            .any(|f| f.modified >= threshold))
    }

    /// With `delete_untagged`: the revisions to keep. Roots are what tags point at, revisions
    /// younger than the grace period (a multi-arch push uploads its children by digest before
    /// it tags the index) and pinned manifests; from a kept manifest, its index children and
    /// its referrers are kept too.
    async fn reachable(
        &self,
        tree: &RepoTree,
        edges: &HashMap<Digest, Edges>,
        threshold: SystemTime,
        pinned: &(dyn Fn(&Digest) -> bool + Sync),
    ) -> Result<HashSet<(RepoName, Digest)>> {
        let mut queue: Vec<(RepoName, Digest)> = Vec::new();
        let tags: Vec<(RepoName, StoragePath)> = tree
            .tags
            .iter()
            .map(|(repo, _, link)| (repo.clone(), link.clone()))
            .collect();
        let tag_targets: Vec<Result<Option<(RepoName, Digest)>>> = stream::iter(tags)
            .map(|(repo, link)| {
                let this = self.clone();
                async move {
                    Ok(crate::read_link(this.driver(), &link)
                        .await?
                        .map(|d| (repo, d)))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for t in tag_targets {
            queue.extend(t?);
        }
        let mut referrers: HashMap<(RepoName, Digest), Vec<Digest>> = HashMap::new();
        for (repo, digest, modified) in &tree.revisions {
            if *modified >= threshold || pinned(digest) {
                queue.push((repo.clone(), digest.clone()));
            }
            if let Some(subject) = edges.get(digest).and_then(|e| e.subject.clone()) {
                referrers
                    .entry((repo.clone(), subject))
                    .or_default()
                    .push(digest.clone());
            }
        }
        let mut kept = HashSet::new();
        while let Some(node) = queue.pop() {
            if !kept.insert(node.clone()) {
                continue;
            }
            let (repo, digest) = node;
            if let Some(e) = edges.get(&digest) {
                queue.extend(e.children.iter().map(|c| (repo.clone(), c.clone())));
            }
            if let Some(refs) = referrers.get(&(repo.clone(), digest)) {
                queue.extend(refs.iter().map(|r| (repo.clone(), r.clone())));
            }
        }
        Ok(kept)
    }

    /// Removes an untagged revision link, quarantine first. True when removed; false when a
    /// pin appeared (a PUT of it, or of an index naming it) and it was put back.
    async fn sweep_revision(
        &self,
        run: &uuid::Uuid,
        repo: &RepoName,
        digest: &Digest,
        threshold: SystemTime,
        tag_index: &TagIndex,
    ) -> Result<bool> {
        let link = layout::revision_link(repo, digest);
        let aside = layout::quarantined_revision(run, repo, digest);
        match self.driver().move_to(&link, &aside).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.inner.caches.link_written(&link);
        // Its tag history goes with it, as Distribution's collector does, and before the pins
        // are read again: a PUT moving a tag back onto this manifest writes its history link
        // after its pin, so that link is either written after this delete (and stays) or put
        // back below because the pin is seen. Either way a tag pointing at the manifest keeps
        // it in its history, which is how a delete by digest finds the tag (`tagindex`). The
        // `_referrers` entries stay: their readers confirm every entry and skip it.
        let history: &[Tag] = tag_index
            .get(&(repo.clone(), digest.clone()))
            .map_or(&[], Vec::as_slice);
        for tag in history {
            let entry = layout::tag_index_link(repo, tag, digest);
            ignore_not_found(self.driver().delete(&entry.parent()).await)?;
        }
        if self.pinned_now(digest, threshold, true).await? {
            // NotFound: another run (or `check --repair`) already put it back.
            ignore_not_found(self.driver().move_to(&aside, &link).await)?;
            self.inner.caches.link_written(&link);
            for tag in history {
                // Only for a tag that still exists: a history link alone would bring a
                // deleted tag back into the tag list.
                let current = layout::tag_current_link(repo, tag);
                if crate::read_link(self.driver(), &current).await?.is_some() {
                    let entry = layout::tag_index_link(repo, tag, digest);
                    crate::write_link(self.driver(), &entry, digest).await?;
                }
            }
            return Ok(false);
        }
        ignore_not_found(self.driver().delete(&aside).await)?;
        Ok(true)
    }

    /// Removes one unmarked blob, quarantine first. `Some(true)`: deleted; `Some(false)`: a
    /// pin appeared and it was put back; `None`: it was already gone. `cache_pins` as for
    /// `pinned_now`.
    pub(crate) async fn sweep_blob(
        &self,
        run: &uuid::Uuid,
        digest: &Digest,
        threshold: SystemTime,
        cache_pins: bool,
    ) -> Result<Option<bool>> {
        let data = layout::blob_data(digest);
        let aside = layout::quarantined_blob(run, digest);
        match self.driver().move_to(&data, &aside).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // From here on the blob is absent: a PUT pinning it from now on finds it missing.
        // A pin written before this re-read is seen, and the blob goes back.
        if self.pinned_now(digest, threshold, cache_pins).await? {
            ignore_not_found(self.driver().move_to(&aside, &data).await)?;
            return Ok(Some(false));
        }
        ignore_not_found(self.driver().delete(&aside).await)?;
        Ok(Some(true))
    }

    /// Removes a layer link whose blob is gone, quarantine first, so that an upload or mount
    /// relinking the blob meanwhile (it pins first) keeps its link. True when removed.
    async fn sweep_layer_link(
        &self,
        run: &uuid::Uuid,
        repo: &RepoName,
        digest: &Digest,
        threshold: SystemTime,
    ) -> Result<bool> {
        let link = layout::layer_link(repo, digest);
        let aside = layout::quarantined_layer(run, repo, digest);
        match self.driver().move_to(&link, &aside).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if self.pinned_now(digest, threshold, true).await? {
            // NotFound: another run (or `check --repair`) already put it back.
            ignore_not_found(self.driver().move_to(&aside, &link).await)?;
            return Ok(false);
        }
        ignore_not_found(self.driver().delete(&aside).await)?;
        Ok(true)
    }

    /// Runs that started before the cutoff (or left no `started` marker) and so belong to a
    /// collector that died: what they set aside is put back. Quarantined files name their run,
    /// so a file whose run has no marker at all is abandoned too.
    pub(crate) async fn abandoned_runs(
        &self,
        own: Option<&uuid::Uuid>,
        t0: SystemTime,
        threshold: SystemTime,
    ) -> Result<AbandonedRuns> {
        let cutoff = threshold.min(t0.checked_sub(ABANDONED_AFTER).unwrap_or(t0));
        let mut live = HashSet::new();
        let mut dead = HashSet::new();
        for f in walk_or_empty(self, &layout::gc_runs_root()).await? {
            if let Some(Entry::RunStarted(run)) = layout::classify(&f.path) {
                if f.modified < cutoff {
                    dead.insert(run);
                } else {
                    live.insert(run);
                }
            }
        }
        live.extend(own.map(|run| run.simple().to_string()));
        Ok(AbandonedRuns { live, dead })
    }

    async fn restore(&self, aside: &StoragePath, original: &StoragePath) -> Result<()> {
        tracing::warn!(%aside, %original, "restoring what an interrupted garbage collection set aside");
        ignore_not_found(self.driver().move_to(aside, original).await)?;
        self.inner.caches.link_written(original);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_read_from_every_manifest_format() {
        let h = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}}],"subject":{{"digest":"{}"}}}}"#,
            h('a'),
            h('b'),
            h('c')
        );
        let e = edges_of(image.as_bytes()).unwrap();
        assert_eq!(e.blobs.len(), 2);
        assert_eq!(e.subject, Digest::parse(&h('c')).ok());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}"}}]}}"#,
            h('d')
        );
        assert_eq!(edges_of(index.as_bytes()).unwrap().children.len(), 1);
        let schema1 = format!(
            r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{}"}}],"signatures":[]}}"#,
            h('e')
        );
        assert_eq!(edges_of(schema1.as_bytes()).unwrap().blobs.len(), 1);
        assert!(edges_of(b"not json").is_none());
    }
}
