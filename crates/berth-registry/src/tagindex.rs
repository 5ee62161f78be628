//! Which tags point at a manifest, for a delete by digest.
//!
//! Deleting a manifest by digest must remove every tag that points at it. Distribution finds
//! them by reading every tag's `current` link, a request per tag: slow on object storage.
//! berth reads the tags' history instead. Every writer, Distribution as well as berth, links
//! a digest into `<tag>/index/` *before* it moves `<tag>/current` to it. The history goes with
//! the whole tag, or one entry with its revision when the collector removes an untagged one
//! (which puts the entry back if a PUT moving a tag there shows up: `gc.rs`). So the tags whose
//! history names a digest are a superset of the tags pointing at it now. One walk of
//! `_manifests/tags/` (a single paginated LIST on object storage) finds them, and only their
//! `current` links are read.
//!
//! One case is accepted: on object storage, where deleting a tag is a listing and then a
//! delete, a tag deleted on one replica while two others move it can be left pointing at a
//! digest whose history entry went with the delete; a delete by digest then misses that tag,
//! which then names nothing. The three requests have no order a client could rely on.
//!
//! Why not a reverse index of berth's own: berth kept one (`_digesttags/<digest>/<tag>`) until
//! it was measured as one more write on every tagged manifest PUT, which is the request CI
//! fleets send most. Entries such a registry left behind are no longer read (`layout`).

use berth_oci::{Digest, RepoName, Tag};
use futures_util::{StreamExt, TryStreamExt, stream};
use std::collections::BTreeMap;

use crate::{Registry, Result, layout, read_link};

/// `current` links read at once.
const READS_IN_FLIGHT: usize = 16;

/// What the walk saw of one tag.
#[derive(Default)]
struct Seen {
    /// Its history names the digest asked about.
    named: bool,
    /// It has a history at all.
    history: bool,
}

impl Registry {
    /// The tags whose `current` link is `digest`.
    pub(crate) async fn tags_pointing_at(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Tag>> {
        let root = layout::tags_dir(repo);
        let links = match self.driver().walk(&root).await {
            Ok(files) => files,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut tags: BTreeMap<String, Seen> = BTreeMap::new();
        for link in links {
            let rel = link.path.as_str().strip_prefix(root.as_str());
            let parts: Vec<&str> = rel.unwrap_or_default().split('/').collect();
            match parts.as_slice() {
                ["", tag, "current", "link"] => {
                    tags.entry((*tag).to_owned()).or_default();
                }
                ["", tag, "index", alg, hex, "link"] => {
                    let seen = tags.entry((*tag).to_owned()).or_default();
                    seen.history = true;
                    seen.named |= *alg == digest.algorithm().as_str() && *hex == digest.hex();
                }
                _ => {}
            }
        }
        // A tag with no history at all was written by neither (by hand, or a tool that does
        // not keep it): its `current` is read too, so the superset argument holds for it.
        let candidates = tags
            .into_iter()
            .filter(|(_, seen)| seen.named || !seen.history)
            .filter_map(|(name, _)| Tag::parse(&name).ok());
        let pointing: Vec<Option<Tag>> = stream::iter(candidates)
            .map(|tag| async move {
                let current =
                    read_link(self.driver(), &layout::tag_current_link(repo, &tag)).await?;
                Ok::<_, crate::Error>((current.as_ref() == Some(digest)).then_some(tag))
            })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(pointing.into_iter().flatten().collect())
    }
}
