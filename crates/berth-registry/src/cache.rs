//! Caches on the manifest read path, which clients hit far more than anything else (every
//! `docker pull`, every Kubernetes node start asks for a tag).
//!
//! Two caches, with different truths behind them:
//! - **content** by digest: manifest bytes and media type. Content-addressed and verified when
//!   inserted, so an entry can never be wrong, only evicted (bounded by bytes).
//! - **links** by storage path: tag `current` links and revision links, which change. This
//!   process's own writes update or drop the entry at once; changes by another process (a
//!   second replica, or Distribution on the same directory) are seen within [`LINK_TTL`].
//! - **catalog**: the sorted repository list, with the same bound; this process's writes that
//!   may add a repository drop it.

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
    catalog: Mutex<CatalogEntry>,
}

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

    pub fn insert_link(&self, path: StoragePath, digest: Option<Digest>) {
        self.links.insert(path, (digest, Instant::now()));
    }

    pub fn forget_link(&self, path: &StoragePath) {
        self.links.remove(path);
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
