//! The registry itself: what it means to push, pull, tag and list, over any storage driver.
//!
//! This crate is where the OCI Distribution spec's rules live — verify before link, a tag
//! moves only after its manifest is stored, an upload becomes a blob only once its digest
//! checks out. It knows neither HTTP (the server crate translates requests into calls here)
//! nor file paths (`layout` turns names into [`StoragePath`]s and the driver stores them).
//!
//! [`StoragePath`]: berth_storage::StoragePath

mod blobs;
mod browse;
mod cache;
mod check;
mod error;
mod gc;
pub mod layout;
mod listing;
mod maintenance;
mod manifests;
mod pins;
mod proxied;
mod referrers;
mod sessions;
mod stats;
mod tagindex;
mod uploads;

use std::sync::Arc;

use berth_storage::StorageDriver;

pub use blobs::BlobRead;
pub use browse::{
    History, ImageConfig, RepositorySummary, RuntimeConfig, SUMMARY_MAX_TAGS, StorageSummary,
    TagInfo,
};
pub use check::{CheckOptions, CheckReport, Problem};
pub use error::{Error, Result};
pub use gc::{GcOptions, GcReport};
pub use listing::{Page, path_order};
pub use maintenance::{Maintenance, PurgeReport, Purging};
pub use manifests::{ManifestRead, PutManifest};
pub use proxied::Evicted;
pub use referrers::ReferrersIndex;
pub use stats::RegistryStats;
pub use uploads::{UploadId, UploadStatus};

/// A byte stream in or out of the registry.
pub use berth_storage::ByteStream;

/// Behaviour switches from the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// `storage.delete.enabled`: manifest, tag and blob DELETEs are allowed.
    pub delete_enabled: bool,
    /// `storage.maintenance.readonly.enabled`: every write is refused.
    pub read_only: bool,
    /// Largest manifest body accepted, in bytes.
    pub max_manifest_size: usize,
    /// How long a pin protects what an operation is about to reference (see `pins`): half
    /// the garbage collector's grace period, so an operation slower than this re-pins before
    /// writing its links.
    pub pin_lease: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delete_enabled: false,
            read_only: false,
            max_manifest_size: 4 * 1024 * 1024,
            pin_lease: std::time::Duration::from_secs(30 * 60),
        }
    }
}

/// The registry: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    driver: Arc<dyn StorageDriver>,
    options: Options,
    uploads: uploads::Sessions,
    caches: cache::Caches,
    manifest_locks: Vec<tokio::sync::RwLock<()>>,
    pins: pins::Recent,
}

/// Stripes of the per-repository manifest lock: enough that unrelated repositories rarely
/// share one, few enough to allocate once.
const MANIFEST_LOCK_STRIPES: usize = 64;

impl Registry {
    /// A registry over `driver`.
    pub fn new(driver: Arc<dyn StorageDriver>, options: Options) -> Self {
        Registry {
            inner: Arc::new(Inner {
                driver,
                options,
                uploads: uploads::Sessions::default(),
                caches: cache::Caches::default(),
                manifest_locks: (0..MANIFEST_LOCK_STRIPES)
                    .map(|_| tokio::sync::RwLock::new(()))
                    .collect(),
                pins: pins::Recent::default(),
            }),
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// What it has done so far (cache hits, collection runs), for metrics.
    pub fn stats(&self) -> RegistryStats {
        self.inner.caches.stats.snapshot()
    }

    fn driver(&self) -> &dyn StorageDriver {
        self.inner.driver.as_ref()
    }

    /// The storage driver, for what keeps its own state beside the registry's (the
    /// notification log of `berth-notify`, under the paths `layout` gives it).
    pub fn storage(&self) -> Arc<dyn StorageDriver> {
        self.inner.driver.clone()
    }

    /// Whether the storage answers, for health checks: one listing of the storage root, as
    /// Distribution's storage-driver check asks the driver about its root. An absent root
    /// counts as healthy (the backend answered; nothing is stored yet); any other error is
    /// returned. A listing rather than a stat, so a root that is not a directory fails too.
    pub async fn probe_storage(&self) -> Result<()> {
        match self
            .driver()
            .list(&berth_storage::StoragePath::root())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The per-repository manifest lock, striped. Pushes share it, deletes take it alone, so
    /// a delete racing a push of the same manifest ends in one order or the other, never with
    /// a tag naming a deleted revision. (Pushes racing each other are safe without it: every
    /// write is atomic and a tag's history names a digest before the tag points at it.)
    fn manifest_lock(&self, repo: &berth_oci::RepoName) -> &tokio::sync::RwLock<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        repo.hash(&mut h);
        &self.inner.manifest_locks[(h.finish() as usize) % MANIFEST_LOCK_STRIPES]
    }

    async fn lock_manifests_shared(
        &self,
        repo: &berth_oci::RepoName,
    ) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.manifest_lock(repo).read().await
    }

    async fn lock_manifests_exclusive(
        &self,
        repo: &berth_oci::RepoName,
    ) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.manifest_lock(repo).write().await
    }

    /// Reads a link through the link cache.
    async fn read_link_cached(
        &self,
        path: &berth_storage::StoragePath,
    ) -> Result<Option<berth_oci::Digest>> {
        if let Some(hit) = self.inner.caches.link(path) {
            return Ok(hit);
        }
        let began = self.inner.caches.link_read_begins(path);
        let digest = read_link(self.driver(), path).await?;
        self.inner
            .caches
            .insert_link(path.clone(), digest.clone(), began);
        Ok(digest)
    }

    /// Writes a link and keeps the link cache in step.
    async fn write_link_cached(
        &self,
        path: &berth_storage::StoragePath,
        digest: &berth_oci::Digest,
    ) -> Result<()> {
        let written = write_link(self.driver(), path, digest).await;
        self.inner.caches.link_written(path);
        written
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.options.read_only {
            return Err(Error::Unsupported(
                "the registry is in read-only mode (storage.maintenance.readonly)",
            ));
        }
        Ok(())
    }

    fn check_delete(&self) -> Result<()> {
        self.check_writable()?;
        if !self.inner.options.delete_enabled {
            return Err(Error::Unsupported(
                "deletion is disabled (set storage.delete.enabled: true)",
            ));
        }
        Ok(())
    }
}

/// Reads a link file, which holds a digest.
async fn read_link(
    driver: &dyn StorageDriver,
    path: &berth_storage::StoragePath,
) -> Result<Option<berth_oci::Digest>> {
    match driver.get(path).await {
        Ok(bytes) => {
            let text = std::str::from_utf8(&bytes).unwrap_or("");
            match berth_oci::Digest::parse(text.trim()) {
                Ok(d) => Ok(Some(d)),
                Err(e) => {
                    tracing::warn!(%path, error = %e, "unreadable link file treated as absent");
                    Ok(None)
                }
            }
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes a link file: the digest, no newline, as Distribution does.
async fn write_link(
    driver: &dyn StorageDriver,
    path: &berth_storage::StoragePath,
    digest: &berth_oci::Digest,
) -> Result<()> {
    driver
        .put(path, bytes::Bytes::from(digest.to_string()))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over(root: &std::path::Path) -> Registry {
        let driver = berth_storage::FsDriver::new(root).expect("a filesystem driver");
        Registry::new(Arc::new(driver), Options::default())
    }

    /// The probe passes over a usable root and an absent one (Distribution's check treats
    /// "not found" as the backend answering), and fails where the root is a file.
    #[tokio::test]
    async fn probe_storage_fails_only_when_the_storage_cannot_be_listed() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().join("root");
        let registry = over(&root);
        registry
            .probe_storage()
            .await
            .expect("a fresh root is healthy");
        std::fs::remove_dir(&root).expect("removing the root");
        registry
            .probe_storage()
            .await
            .expect("an absent root is healthy");
        std::fs::write(&root, b"not a directory").expect("a file in the root's place");
        assert!(registry.probe_storage().await.is_err());
        std::fs::remove_file(&root).expect("removing the file");
        std::fs::create_dir(&root).expect("restoring the root");
        registry.probe_storage().await.expect("healthy again");
    }
}
