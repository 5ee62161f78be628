//! The reverse tag index: for each manifest, the tags that may point at it.
//!
//! Deleting a manifest by digest must remove every tag that points at it. Distribution finds
//! them by reading every tag's `current` link, which costs O(tags) requests per delete — slow
//! on object storage. berth keeps `_digesttags/<digest>/<tag>` (see `layout`): an entry is
//! written *before* a tag moves to a digest and removed after it moves away, so the index is
//! always a superset of the truth; readers confirm each candidate against `current/link`.
//!
//! Another writer — Distribution serving the same directory, before or after berth — does
//! not keep the index. So before answering, berth lists the repository's tag links with their
//! modification times (one walk: a single paginated LIST on object storage, instead of a GET
//! per tag) and re-reads only the links modified since the previous check, recorded in the
//! `complete` marker. A repository berth has never indexed is read in full once.

use berth_oci::{Digest, RepoName, Tag};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        Ok(self.driver().delete_whole(&entry).await?)
    }

    /// The tags whose `current` link is `digest`.
    pub(crate) async fn tags_pointing_at(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Tag>> {
        self.refresh_tag_index(repo).await?;
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

    /// Brings the index up to date with tag links written since the last check, by this or
    /// any other process. Callers hold the repository's manifest lock.
    async fn refresh_tag_index(&self, repo: &RepoName) -> Result<()> {
        let marker = layout::digest_tags_complete(repo);
        let since = match self.driver().get(&marker).await {
            Ok(content) => std::str::from_utf8(&content)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos)),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let started = SystemTime::now();
        let links = match self.driver().walk(&layout::tags_dir(repo)).await {
            Ok(files) => files,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        for link in links {
            // Only `<tag>/current/link`; the `index/` history links say nothing of now.
            let current = link.path.parent();
            if link.path.file_name() != "link" || current.file_name() != "current" {
                continue;
            }
            let Ok(tag) = Tag::parse(current.parent().file_name()) else {
                continue;
            };
            // Modification times can be coarse (a second on S3) and clocks a little apart.
            if since.is_some_and(|since| link.modified + MTIME_SLACK < since) {
                continue;
            }
            if let Some(d) = read_link(self.driver(), &link.path).await? {
                self.note_tag(repo, &tag, &d).await?;
            }
        }
        let stamp = started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_string();
        self.driver().put(&marker, Bytes::from(stamp)).await?;
        Ok(())
    }
}

/// Tolerance for coarse modification times and clock differences between writers.
const MTIME_SLACK: Duration = Duration::from_secs(2);
