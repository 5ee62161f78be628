//! Listing: the tags of a repository and the catalog of repositories, paginated the spec's
//! way (`n` entries after `last`, in lexical order).

use std::sync::Arc;

use berth_oci::{RepoName, Tag};

use crate::cache::CatalogSnapshot;
use crate::{Error, Registry, Result, layout};

/// One page of a listing: a window on the whole sorted list, which the caches share, so a
/// page of a thousand tags costs no copy of them.
#[derive(Debug, Clone)]
pub struct Page {
    all: Arc<Vec<String>>,
    range: std::ops::Range<usize>,
    /// True when entries remain after this page (the `Link` header is due).
    pub more: bool,
}

impl Page {
    /// A page of exactly `items`.
    pub fn new(items: Vec<String>, more: bool) -> Self {
        let range = 0..items.len();
        Page {
            all: Arc::new(items),
            range,
            more,
        }
    }

    /// The entries, sorted.
    pub fn items(&self) -> &[String] {
        &self.all[self.range.clone()]
    }
}

impl PartialEq for Page {
    fn eq(&self, other: &Self) -> bool {
        self.items() == other.items() && self.more == other.more
    }
}

impl Eq for Page {}

/// Orders names component by component, so `a/b` sorts before `a-b` exactly as a walk of
/// the directory tree visits them (Distribution's `lessPath`). For tags, which have no `/`,
/// this is plain lexical order.
pub fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    // Component order is byte order with `/` below every other byte: at the first difference,
    // a `/` on one side means its component ended there, a prefix of the other's. Compared
    // without splitting, because sorting a thousand names calls this ten thousand times.
    let key = |c: &u8| if *c == b'/' { 0 } else { *c };
    let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    match (a.as_bytes().get(common), b.as_bytes().get(common)) {
        (Some(x), Some(y)) => key(x).cmp(&key(y)),
        _ => a.len().cmp(&b.len()),
    }
}

/// Takes the page of `n` entries after `last` from a list sorted by [`path_order`].
fn paginate(sorted: Arc<Vec<String>>, n: Option<usize>, last: Option<&str>) -> Page {
    let start = match last {
        Some(last) => sorted.partition_point(|s| path_order(s, last).is_le()),
        None => 0,
    };
    let remaining = sorted.len() - start;
    let (len, more) = match n {
        Some(n) if remaining > n => (n, true),
        _ => (remaining, false),
    };
    Page {
        range: start..start + len,
        all: sorted,
        more,
    }
}

impl Registry {
    /// A page of a repository's tags. NameUnknown when the repository does not exist.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let tags = self.tag_names(repo).await?;
        Ok(paginate(tags, n, last))
    }

    /// Every tag of a repository, sorted; directories that are not valid tags are skipped.
    /// Reused from the cache while the `tags` directory's stamp says nothing changed.
    pub(crate) async fn tag_names(&self, repo: &RepoName) -> Result<Arc<Vec<String>>> {
        let dir = layout::tags_dir(repo);
        let dirs = std::slice::from_ref(&dir);
        if let Some(Some(stamp)) = self.driver().stamps(dirs).await.pop()
            && let Some(tags) = self.inner.caches.tag_list(&dir, stamp)
        {
            return Ok(tags);
        }
        let listed = self.driver().list_stamped(dirs).await.pop();
        let listing = match listed {
            Some(Ok(listing)) => listing,
            Some(Err(e)) if e.is_not_found() => {
                // No tags directory: an empty repository, or none at all.
                return match self.driver().stat(&layout::repository(repo)).await {
                    Ok(_) => Ok(Arc::default()),
                    Err(e) if e.is_not_found() => Err(Error::NameUnknown {
                        name: repo.to_string(),
                    }),
                    Err(e) => Err(e.into()),
                };
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(Arc::default()),
        };
        let mut tags: Vec<String> = listing
            .names
            .into_iter()
            .filter(|n| Tag::parse(n).is_ok())
            .collect();
        tags.sort_by(|a, b| path_order(a, b));
        let tags = Arc::new(tags);
        if let Some(stamp) = listing.stamp {
            self.inner.caches.insert_tag_list(dir, stamp, tags.clone());
        }
        Ok(tags)
    }

    /// A page of the catalog: every repository that has a `_layers` or `_manifests`
    /// directory (Distribution lists repositories by `_layers`; a repository holding only
    /// manifests is listed too).
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let repositories = self.all_repositories().await?;
        Ok(paginate(repositories, n, last))
    }

    /// Every repository, sorted component-wise (the catalog's order), unpaginated: for
    /// callers that filter before paginating.
    pub async fn all_repositories(&self) -> Result<Arc<Vec<String>>> {
        let generation = match self.inner.caches.catalog() {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        if let Some(snapshot) = self.inner.caches.catalog_snapshot(generation) {
            let now = self.driver().stamps(&snapshot.dirs).await;
            let unchanged = now.len() == snapshot.stamps.len()
                && now
                    .iter()
                    .zip(&snapshot.stamps)
                    .all(|(n, s)| n.as_ref() == Some(s));
            if unchanged {
                let repositories = snapshot.repositories.clone();
                self.inner
                    .caches
                    .insert_catalog(generation, repositories.clone(), Some(snapshot));
                return Ok(repositories);
            }
        }
        let mut repos = Vec::new();
        let (mut dirs, mut stamps, mut all_stamped) = (Vec::new(), Vec::new(), true);
        // Breadth first, each level's directories listed in one batch: the walk costs about
        // as many round trips as the names have levels, not one per directory.
        let mut level = vec![(layout::repositories_root(), String::new())];
        while !level.is_empty() {
            let paths: Vec<_> = level.iter().map(|(dir, _)| dir.clone()).collect();
            let listed = self.driver().list_stamped(&paths).await;
            for ((dir, name), listing) in std::mem::take(&mut level).into_iter().zip(listed) {
                let listing = match listing {
                    Ok(l) => l,
                    // Gone since its parent was listed; the parent's stamp has changed.
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                match listing.stamp {
                    Some(stamp) => stamps.push(stamp),
                    None => all_stamped = false,
                }
                let children = listing.names;
                let is_repo = children.iter().any(|c| c == "_layers" || c == "_manifests");
                if is_repo && RepoName::parse(&name).is_ok() {
                    repos.push(name.clone());
                }
                for child in children {
                    if child.starts_with('_') {
                        continue;
                    }
                    let Ok(path) = dir.join(&child) else { continue };
                    let child_name = if name.is_empty() {
                        child
                    } else {
                        format!("{name}/{child}")
                    };
                    level.push((path, child_name));
                }
                dirs.push(dir);
            }
        }
        repos.sort_by(|a, b| path_order(a, b));
        let repos = Arc::new(repos);
        let snapshot = (all_stamped && !dirs.is_empty()).then(|| {
            Arc::new(CatalogSnapshot {
                dirs,
                stamps,
                repositories: repos.clone(),
            })
        });
        self.inner
            .caches
            .insert_catalog(generation, repos.clone(), snapshot);
        Ok(repos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn catalog_order_walks_components() {
        let mut names = v(&["a-b", "a/b", "a", "a.c", "b"]);
        names.sort_by(|a, b| path_order(a, b));
        assert_eq!(names, v(&["a", "a/b", "a-b", "a.c", "b"]));
    }

    #[test]
    fn path_order_is_component_order() {
        // Every string of up to four bytes from an alphabet with `/` and bytes either side.
        let alphabet = ["a", "/", "-", "0", "\u{1}"];
        let mut all = vec![String::new()];
        for len in 1..=4 {
            let mut next = Vec::new();
            for s in all.iter().filter(|s| s.len() == len - 1) {
                next.extend(alphabet.iter().map(|c| format!("{s}{c}")));
            }
            all.extend(next);
        }
        for a in &all {
            for b in &all {
                assert_eq!(
                    path_order(a, b),
                    a.split('/').cmp(b.split('/')),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn pagination() {
        let all = Arc::new(v(&["a", "b", "c", "d"]));
        assert_eq!(
            paginate(all.clone(), Some(2), None),
            Page::new(v(&["a", "b"]), true)
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            Page::new(v(&["c", "d"]), false)
        );
        assert_eq!(
            paginate(all.clone(), None, Some("bb")),
            Page::new(v(&["c", "d"]), false)
        );
        assert_eq!(
            paginate(all.clone(), Some(0), None),
            Page::new(vec![], true)
        );
        assert_eq!(paginate(all, Some(10), Some("z")), Page::new(vec![], false));
    }
}
