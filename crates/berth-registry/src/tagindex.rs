//! The reverse tag index: for each manifest, the tags that may point at it.
//!
//! Deleting a manifest by digest must remove every tag that points at it. Distribution finds
//! them by reading every tag's `current` link, which costs O(tags) requests per delete — slow
//! on object storage. berth keeps `_digesttags/<digest>/<tag>` (see `layout`): an entry is
//! written *before* a tag moves to a digest and removed after it moves away, so the index is
//! always a superset of the truth; readers confirm each candidate against `current/link`.
//!
//! A repository written by Distribution has no index. The first delete there builds it from
//! a full scan and then writes the `complete` marker; after that, every tag berth moves keeps
//! it whole. (Tags that Distribution itself moves later, in a directory both programs write,
//! are not indexed; a tag left pointing at a deleted manifest answers `MANIFEST_UNKNOWN`.)

use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;

use crate::{Registry, Result, layout, read_link};

impl Registry {
    /// Records that `tag` is about to point at `digest`.
    pub(crate) async fn note_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        let entry = layout::digest_tag_entry(repo, digest, tag);
        self.driver().put(&entry, Bytes::new()).await?;
        Ok(())
    }

    /// Records that `tag` no longer points at `digest`.
    pub(crate) async fn forget_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<()> {
        let entry = layout::digest_tag_entry(repo, digest, tag);
        match self.driver().delete(&entry).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The tags whose `current` link is `digest`.
    pub(crate) async fn tags_pointing_at(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Tag>> {
        self.ensure_tag_index(repo).await?;
        let names = match self
            .driver()
            .list(&layout::digest_tags_dir(repo, digest))
            .await
        {
            Ok(n) => n,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut tags = Vec::new();
        for name in names {
            let Ok(tag) = Tag::parse(&name) else { continue };
            let current = read_link(self.driver(), &layout::tag_current_link(repo, &tag)).await?;
            if current.as_ref() == Some(digest) {
                tags.push(tag);
            }
        }
        Ok(tags)
    }

    /// Builds the index from a full scan if this repository has never had one.
    async fn ensure_tag_index(&self, repo: &RepoName) -> Result<()> {
        let marker = layout::digest_tags_complete(repo);
        match self.driver().stat(&marker).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        for tag in self.all_tags(repo).await? {
            if let Some(d) = read_link(self.driver(), &layout::tag_current_link(repo, &tag)).await?
            {
                self.note_tag(repo, &tag, &d).await?;
            }
        }
        self.driver().put(&marker, Bytes::new()).await?;
        Ok(())
    }
}
