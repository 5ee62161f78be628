//! Caches on the manifest read path, which clients hit far more than anything else (every
//! `docker pull`, every Kubernetes node start asks for a tag).
//!
//! Two caches, with different truths behind them:
//! - **content** by digest: manifest bytes and media type. Content-addressed and verified when
//!   inserted, so an entry can never be wrong, only evicted (bounded by bytes).
//! - **links** by storage path: tag `current` links and revision links, which change. This
//!   process's own writes drop the entry at once (and keep reads racing them from caching
//!   what they saw before the write); changes by another process (a
//!   second replica, or Distribution on the same directory) are seen within [`LINK_TTL`].
//! - **catalog**: the sorted repository list, with the same bound; this process's writes that
//!   may add a repository drop it. Past the bound, on drivers that stamp directories (the
//!   filesystem), the list is kept with the stamps of every directory the walk read, and
//!   reused while re-stamping those directories finds them unchanged: a stat each instead of
//!   a listing each, and exact whoever made the change.
//! - **tags**: each repository's sorted tag names with the stamp of its `tags` directory,
//!   reused only while the stamp is unchanged (so never stale, on any writer's change).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_storage::{DirStamp, StoragePath};
use bytes::Bytes;

/// How long a cached link is trusted before it is read again.
pub const LINK_TTL: Duration = Duration::from_secs(1);
/// Bytes of manifests kept in memory.
const CONTENT_BYTES: u64 = 64 * 1024 * 1024;
/// Link entries kept.
const LINK_ENTRIES: usize = 100_000;
/// Repositories whose tag lists are kept.
const TAG_LIST_ENTRIES: usize = 4096;

#[derive(Clone)]
pub(crate) struct CachedManifest {
    pub body: Bytes,
    pub media_type: Arc<str>,
}

#[derive(Clone)]
struct ByteWeight;

impl quick_cache::Weighter<Digest, CachedManifest> for ByteWeight {
    fn weight(&self, _key: &Digest, value: &CachedManifest) -> u64 {
        value.body.len() as u64 + 64
    }
}

pub(crate) struct Caches {
    content: quick_cache::sync::Cache<Digest, CachedManifest, ByteWeight>,
    links: quick_cache::sync::Cache<StoragePath, (Option<Digest>, Instant)>,
    /// Bumped by every write of a link hashing to the stripe.
    link_generations: Vec<AtomicU64>,
    catalog: Mutex<CatalogEntry>,
    tag_lists: quick_cache::sync::Cache<StoragePath, (DirStamp, Arc<Vec<String>>)>,
    /// Hits and misses of the caches above (and the collector's runs: `stats.rs`).
    pub(crate) stats: crate::stats::Counters,
}

/// A catalog walk that can be re-validated: every directory it listed, with the stamp each
/// had before it was listed.
pub(crate) struct CatalogSnapshot {
    pub dirs: Vec<StoragePath>,
    pub stamps: Vec<DirStamp>,
    pub repositories: Arc<Vec<String>>,
}

const LINK_GENERATION_STRIPES: usize = 256;

/// The sorted repository list, and a generation bumped by every write that may add a
/// repository, so a listing that raced such a write is not cached.
#[derive(Default)]
struct CatalogEntry {
    repositories: Option<(Arc<Vec<String>>, Instant)>,
    snapshot: Option<Arc<CatalogSnapshot>>,
    generation: u64,
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            content: quick_cache::sync::Cache::with_weighter(10_000, CONTENT_BYTES, ByteWeight),
            links: quick_cache::sync::Cache::new(LINK_ENTRIES),
            link_generations: (0..LINK_GENERATION_STRIPES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            catalog: Mutex::default(),
            tag_lists: quick_cache::sync::Cache::new(TAG_LIST_ENTRIES),
            stats: crate::stats::Counters::default(),
        }
    }
}

impl Caches {
    pub fn manifest(&self, digest: &Digest) -> Option<CachedManifest> {
        let found = self.content.get(digest);
        crate::stats::bump(match found {
            Some(_) => &self.stats.manifest_hits,
            None => &self.stats.manifest_misses,
        });
        found
    }

    pub fn insert_manifest(&self, digest: Digest, manifest: CachedManifest) {
        self.content.insert(digest, manifest);
    }

    /// A link's digest (or its absence) if read less than [`LINK_TTL`] ago.
    pub fn link(&self, path: &StoragePath) -> Option<Option<Digest>> {
        let found = match self.links.get(path) {
            Some((digest, at)) if at.elapsed() < LINK_TTL => Some(digest),
            _ => None,
        };
        crate::stats::bump(match found {
            Some(_) => &self.stats.link_hits,
            None => &self.stats.link_misses,
        });
        found
    }

    /// Call before reading a link from storage; hand the result to [`Caches::insert_link`].
    pub fn link_read_begins(&self, path: &StoragePath) -> u64 {
        self.link_generation(path).load(Ordering::Acquire)
    }

    /// Caches what a read found, unless a write to the link may have happened since the read
    /// began: then the value may already be old, and is dropped. (Checked after inserting, so
    /// a write landing between the check and the insert still removes it: writers bump the
    /// generation before they remove.)
    pub fn insert_link(&self, path: StoragePath, digest: Option<Digest>, read_began: u64) {
        let generation = self.link_generation(&path);
        self.links.insert(path.clone(), (digest, Instant::now()));
        if generation.load(Ordering::Acquire) != read_began {
            self.links.remove(&path);
        }
    }

    /// Call after this process wrote or deleted a link. The entry is dropped rather than
    /// replaced, because concurrent writers of one link may finish their writes in one order
    /// and reach this point in the other; the next read goes to storage.
    pub fn link_written(&self, path: &StoragePath) {
        self.link_generation(path).fetch_add(1, Ordering::AcqRel);
        self.links.remove(path);
    }

    fn link_generation(&self, path: &StoragePath) -> &AtomicU64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        &self.link_generations[(h.finish() as usize) % LINK_GENERATION_STRIPES]
    }

    fn catalog_entry(&self) -> std::sync::MutexGuard<'_, CatalogEntry> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The repository list if listed less than [`LINK_TTL`] ago, else the generation to hand
    /// back to [`Caches::insert_catalog`] with a fresh listing.
    pub fn catalog(&self) -> Result<Arc<Vec<String>>, u64> {
        let entry = self.catalog_entry();
        match &entry.repositories {
            Some((list, at)) if at.elapsed() < LINK_TTL => Ok(list.clone()),
            _ => Err(entry.generation),
        }
    }

    /// Caches a listing made under `generation`; `snapshot`, when the driver stamped every
    /// directory, lets it be re-validated after [`LINK_TTL`].
    pub fn insert_catalog(
        &self,
        generation: u64,
        repositories: Arc<Vec<String>>,
        snapshot: Option<Arc<CatalogSnapshot>>,
    ) {
        let mut entry = self.catalog_entry();
        if entry.generation == generation {
            entry.repositories = Some((repositories, Instant::now()));
            entry.snapshot = snapshot;
        }
    }

    /// The last walk's snapshot, if no write of this process may have changed the catalog
    /// since `generation`.
    pub fn catalog_snapshot(&self, generation: u64) -> Option<Arc<CatalogSnapshot>> {
        let entry = self.catalog_entry();
        (entry.generation == generation)
            .then(|| entry.snapshot.clone())
            .flatten()
    }

    /// Called on every write that may create a repository.
    pub fn forget_catalog(&self) {
        let mut entry = self.catalog_entry();
        entry.generation += 1;
        entry.repositories = None;
        entry.snapshot = None;
    }

    /// A repository's sorted tag names, if they were listed when its `tags` directory had
    /// `stamp`.
    pub fn tag_list(&self, tags_dir: &StoragePath, stamp: DirStamp) -> Option<Arc<Vec<String>>> {
        self.tag_lists
            .get(tags_dir)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, tags)| tags)
    }

    pub fn insert_tag_list(&self, tags_dir: StoragePath, stamp: DirStamp, tags: Arc<Vec<String>>) {
        self.tag_lists.insert(tags_dir, (stamp, tags));
    }
}
