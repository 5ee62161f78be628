//! What a pull-through cache (`berth-proxy`) needs from the registry beyond reading.
//!
//! Cached content lives in the ordinary layout, in repositories named after the upstream's, so
//! everything that reads a repository (pulls, the catalog, `check`, the garbage collector,
//! Distribution itself) sees a proxied repository as any other. Four things differ:
//! - a fetched manifest is stored before its layers (they are fetched when a client asks), so
//!   the push-time check that every reference is linked is skipped; its digest is still
//!   verified and its blobs are pinned as a push's are;
//! - a cached tag's `current` link is rewritten each time the upstream confirms it, so its
//!   modification time says when the answer was last known good, in storage that every
//!   replica shares;
//! - a blob already stored for another repository is linked without a second fetch;
//! - eviction removes proxied links and then the blob itself the way the garbage collector
//!   sweeps one (moved aside, pins re-read, deleted or put back), and only when no repository
//!   outside the cache links it.

use std::time::SystemTime;

use berth_oci::{Digest, Reference, RepoName, Tag};
use bytes::Bytes;

use crate::{Registry, Result, layout, read_link};

/// What [`Registry::evict`] did with a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// Unlinked from the cache and deleted from the blob store.
    Deleted,
    /// Unlinked from the cache; kept because a repository outside it links it, or a pin
    /// appeared (someone is about to reference it).
    Kept,
    /// Unlinked from the cache; the blob was already gone.
    Gone,
}

impl Registry {
    /// Stores a manifest fetched from an upstream under `tag` (or by digest only), after
    /// checking its bytes hash to `digest`. The blobs it references need not be here yet.
    pub async fn cache_manifest(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        digest: &Digest,
        body: Bytes,
    ) -> Result<()> {
        // Stored by digest first: the digest check happens there, and the tag then moves to
        // a revision that is fully stored, as on a push.
        let by_digest = Reference::Digest(digest.clone());
        self.store_manifest(repo, &by_digest, None, body.clone(), false)
            .await?;
        if let Some(tag) = tag {
            let by_tag = Reference::Tag(tag.clone());
            self.store_manifest(repo, &by_tag, None, body, false)
                .await?;
        }
        Ok(())
    }

    /// The digest a cached tag names and when it was last written or confirmed (its `current`
    /// link's modification time, on the storage's clock). `None` when the tag is not cached.
    pub async fn tag_confirmed_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<(Digest, SystemTime)>> {
        let link = layout::tag_current_link(repo, tag);
        let Some(digest) = self.read_link_cached(&link).await? else {
            return Ok(None);
        };
        match self.driver().stat(&link).await {
            Ok(m) => Ok(Some((digest, m.modified))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that the upstream still names `digest` for `tag` (rewrites the link, so its
    /// modification time moves to now).
    pub async fn confirm_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        self.check_writable()?;
        self.write_link_cached(&layout::tag_current_link(repo, tag), digest)
            .await
    }

    /// True when the blob store holds `digest` (for any repository).
    pub async fn blob_stored(&self, digest: &Digest) -> Result<bool> {
        match self.driver().stat(&layout::blob_data(digest)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Links a blob that is already in the blob store into `repo`, pinned first as a mount
    /// is. False when the blob is not stored.
    pub async fn link_stored_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.check_writable()?;
        match self.driver().stat(&layout::blob_data(digest)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.pin([digest]).await?;
        match self.driver().stat(&layout::blob_data(digest)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.link_layer(repo, digest).await?;
        Ok(true)
    }

    /// Evicts `digest` from the cache: unlinks it (as a layer, and as a manifest with the
    /// tags naming it) from each repository of `cached_in`, then deletes the blob unless one
    /// of `others` (the repositories outside the cache) links it or a pin younger than the
    /// garbage collector's grace period names it.
    pub async fn evict(
        &self,
        digest: &Digest,
        cached_in: &[RepoName],
        others: &[RepoName],
    ) -> Result<Evicted> {
        self.check_writable()?;
        for repo in cached_in {
            self.unlink_cached(repo, digest).await?;
        }
        for repo in others {
            if self.is_linked(repo, digest).await? {
                return Ok(Evicted::Kept);
            }
        }
        let grace = self.options().pin_lease * 2;
        let threshold = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let run = uuid::Uuid::new_v4();
        Ok(match self.sweep_blob(&run, digest, threshold).await? {
            Some(true) => Evicted::Deleted,
            Some(false) => Evicted::Kept,
            None => Evicted::Gone,
        })
    }

    async fn unlink_cached(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _guard = self.lock_manifests_exclusive(repo).await;
        let revision = layout::revision_link(repo, digest);
        if read_link(self.driver(), &revision).await?.is_some() {
            // Tags first, then the revision, as a delete by digest does.
            let tags = match self.driver().list(&layout::tags_dir(repo)).await {
                Ok(tags) => tags,
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            for name in tags {
                let Ok(tag) = Tag::parse(&name) else { continue };
                let current = layout::tag_current_link(repo, &tag);
                if read_link(self.driver(), &current).await?.as_ref() == Some(digest) {
                    ignore_not_found(self.driver().delete(&layout::tag_dir(repo, &tag)).await)?;
                    self.inner.caches.link_written(&current);
                }
            }
            ignore_not_found(
                self.driver()
                    .delete(&layout::revision_dir(repo, digest))
                    .await,
            )?;
            self.inner.caches.link_written(&revision);
        }
        let layer = layout::layer_link(repo, digest);
        ignore_not_found(self.driver().delete(&layer.parent()).await)?;
        Ok(())
    }
}

fn ignore_not_found(r: berth_storage::Result<()>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}
