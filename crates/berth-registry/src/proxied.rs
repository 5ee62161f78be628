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
//!
//! **Why eviction never takes a blob a push is about to reference, yet frees what it just
//! fetched.** Everything the cache stores or links is pinned as a push's would be, but with
//! the cache's own pins (`pins::Holder::Cache`); the garbage collector honours both kinds,
//! eviction only a push's. Evicting B: unlink B from the cache's repositories, look for a link
//! to B in every repository outside the cache (listed when the eviction pass began), move B
//! aside at q, re-read B's push pins at s > q (threshold: now − grace, as a collection's), then
//! delete or put back. A push that references B (upload, mount, manifest PUT in a local
//! repository) pins at p before it checks B is there and links it:
//! - its link written before the look is seen, and B is kept;
//! - otherwise, if p < s, the re-read sees its pin (younger than the grace period, by the
//!   lease argument in `gc`), and B is put back;
//! - if p > s, B was already aside when the push looked: the push finds it missing and fails
//!   cleanly, or (an upload) writes a new `data` the deletion of the quarantined copy does
//!   not touch.
//!
//! The cache's own pins protect nothing from eviction, so a fill or a link that races with
//! the eviction of the same digest may leave a cached link whose blob is gone. Every cache
//! read treats that as not cached (a read checks the blob, not only the link) and fetches
//! again; nothing wrong is ever served.

use std::time::SystemTime;

use berth_oci::{Digest, Reference, RepoName, Tag};
use bytes::Bytes;

use crate::pins::Holder;
use crate::{ByteStream, Registry, Result, layout, read_link};

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
        self.store_manifest(Holder::Cache, repo, &by_digest, None, body.clone())
            .await?;
        if let Some(tag) = tag {
            let by_tag = Reference::Tag(tag.clone());
            self.store_manifest(Holder::Cache, repo, &by_tag, None, body)
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
        match self.driver().stat_file(&link).await {
            Ok(m) => Ok(Some((digest, m.modified))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that the upstream still names `digest` for `tag` (rewrites the link, so its
    /// modification time moves to now).
    pub async fn confirm_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        self.check_writable()?;
        // History first, as every tag move (`tagindex`): the tag may have been deleted since.
        crate::write_link(
            self.driver(),
            &layout::tag_index_link(repo, tag, digest),
            digest,
        )
        .await?;
        self.write_link_cached(&layout::tag_current_link(repo, tag), digest)
            .await
    }

    /// Stores a blob fetched from an upstream into `repo`, verified against `digest` as an
    /// upload is. Returns its size.
    pub async fn cache_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        self.push_blob_for(Holder::Cache, repo, digest, body).await
    }

    /// True when the blob store holds `digest` (for any repository).
    pub async fn blob_stored(&self, digest: &Digest) -> Result<bool> {
        match self.driver().stat_whole(&layout::blob_data(digest)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Links a blob that is already in the blob store into `repo`, pinned first as a mount
    /// is. False when the blob is not stored.
    pub async fn link_stored_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.check_writable()?;
        match self.driver().stat_whole(&layout::blob_data(digest)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.pin_for(Holder::Cache, [digest]).await?;
        match self.driver().stat_whole(&layout::blob_data(digest)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.link_layer(repo, digest).await?;
        Ok(true)
    }

    /// Evicts `digest` from the cache: unlinks it (as a layer, and as a manifest with the
    /// tags naming it) from each repository of `cached_in`, then deletes the blob unless one
    /// of `others` (the repositories outside the cache) links it or a push's pin younger than
    /// the garbage collector's grace period names it (the module doc has the argument).
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
        Ok(
            match self.sweep_blob(&run, digest, threshold, false).await? {
                Some(true) => Evicted::Deleted,
                Some(false) => Evicted::Kept,
                None => Evicted::Gone,
            },
        )
    }

    async fn unlink_cached(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _guard = self.lock_manifests_exclusive(repo).await;
        let revision = layout::revision_link(repo, digest);
        if read_link(self.driver(), &revision).await?.is_some() {
            // Tags first, then the revision, as a delete by digest does.
            for tag in self.tags_pointing_at(repo, digest).await? {
                ignore_not_found(self.driver().delete(&layout::tag_dir(repo, &tag)).await)?;
                self.inner
                    .caches
                    .link_written(&layout::tag_current_link(repo, &tag));
            }
            ignore_not_found(
                self.driver()
                    .delete(&layout::revision_dir(repo, digest))
                    .await,
            )?;
            self.inner.caches.link_written(&revision);
        }
        ignore_not_found(self.unlink_layer(repo, digest).await)
    }
}

fn ignore_not_found(r: berth_storage::Result<()>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}
