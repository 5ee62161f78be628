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
//!   may add a repository drop it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_storage::StoragePath;
use bytes::Bytes;

/// How long a cached link is trusted before it is read again.
pub const LINK_TTL: Duration = Duration::from_secs(1);
/// Bytes of manifests kept in memory.
const CONTENT_BYTES: u64 = 64 * 1024 * 1024;
/// Link entries kept.
const LINK_ENTRIES: usize = 100_000;

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
}

const LINK_GENERATION_STRIPES: usize = 256;

/// The sorted repository list, and a generation bumped by every write that may add a
/// repository, so a listing that raced such a write is not cached.
#[derive(Default)]
struct CatalogEntry {
    repositories: Option<(Arc<Vec<String>>, Instant)>,
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
        }
    }
}

impl Caches {
    pub fn manifest(&self, digest: &Digest) -> Option<CachedManifest> {
        self.content.get(digest)
    }

    pub fn insert_manifest(&self, digest: Digest, manifest: CachedManifest) {
        self.content.insert(digest, manifest);
    }

    /// A link's digest (or its absence) if read less than [`LINK_TTL`] ago.
    pub fn link(&self, path: &StoragePath) -> Option<Option<Digest>> {
        match self.links.get(path) {
            Some((digest, at)) if at.elapsed() < LINK_TTL => Some(digest),
            _ => None,
        }
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

    pub fn insert_catalog(&self, generation: u64, repositories: Arc<Vec<String>>) {
        let mut entry = self.catalog_entry();
        if entry.generation == generation {
            entry.repositories = Some((repositories, Instant::now()));
        }
    }

    /// Called on every write that may create a repository.
    pub fn forget_catalog(&self) {
        let mut entry = self.catalog_entry();
        entry.generation += 1;
        entry.repositories = None;
    }
}
