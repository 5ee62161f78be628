//! Listing: the tags of a repository and the catalog of repositories, paginated the spec's
//! way (`n` entries after `last`, in lexical order).

use std::sync::Arc;

use futures_util::StreamExt;

use berth_oci::{RepoName, Tag};

use crate::{Error, Registry, Result, layout};

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries, sorted.
    pub items: Vec<String>,
    /// True when entries remain after this page (the `Link` header is due).
    pub more: bool,
}

/// Orders names component by component, so `a/b` sorts before `a-b` exactly as a walk of
/// the directory tree visits them (Distribution's `lessPath`). For tags, which have no `/`,
/// this is plain lexical order.
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Takes the page of `n` entries after `last` from a list sorted by [`path_order`].
fn paginate(sorted: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    let start = match last {
        Some(last) => sorted.partition_point(|s| path_order(s, last).is_le()),
        None => 0,
    };
    let mut items: Vec<String> = sorted.into_iter().skip(start).collect();
    let more = match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            true
        }
        _ => false,
    };
    Page { items, more }
}

impl Registry {
    /// Every tag of a repository, sorted. Directories that are not valid tags are skipped.
    pub(crate) async fn all_tags(&self, repo: &RepoName) -> Result<Vec<Tag>> {
        let names = match self.driver().list(&layout::tags_dir(repo)).await {
            Ok(names) => names,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut tags: Vec<Tag> = names.iter().filter_map(|n| Tag::parse(n).ok()).collect();
        tags.sort();
        Ok(tags)
    }

    /// A page of a repository's tags. NameUnknown when the repository does not exist.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        match self.driver().stat(&layout::repository(repo)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                return Err(Error::NameUnknown {
                    name: repo.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let tags = self.all_tags(repo).await?;
        let names: Vec<String> = tags.into_iter().map(|t| t.as_str().to_owned()).collect();
        Ok(paginate(names, n, last))
    }

    /// A page of the catalog: every repository that has a `_layers` or `_manifests`
    /// directory (Distribution lists repositories by `_layers`; a repository holding only
    /// manifests is listed too).
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let repositories = self.all_repositories().await?;
        Ok(paginate(repositories.as_ref().clone(), n, last))
    }

    /// Every repository, sorted component-wise (the catalog's order), unpaginated: for
    /// callers that filter before paginating.
    pub async fn all_repositories(&self) -> Result<Arc<Vec<String>>> {
        let generation = match self.inner.caches.catalog() {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let mut repos = Vec::new();
        // Breadth first, each level's directories listed concurrently: the walk costs about
        // as many round trips as the names have levels, not one per directory.
        let mut level = vec![(layout::repositories_root(), String::new())];
        while !level.is_empty() {
            let listed: Vec<_> = futures_util::stream::iter(level.drain(..))
                .map(|(dir, name)| async move {
                    let children = self.driver().list(&dir).await;
                    (dir, name, children)
                })
                .buffer_unordered(LIST_CONCURRENCY)
                .collect()
                .await;
            for (dir, name, children) in listed {
                let children = match children {
                    Ok(c) => c,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
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
            }
        }
        repos.sort_by(|a, b| path_order(a, b));
        let repos = Arc::new(repos);
        self.inner.caches.insert_catalog(generation, repos.clone());
        Ok(repos)
    }
}

/// Directories listed at once while walking the repository tree.
const LIST_CONCURRENCY: usize = 32;

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
    fn pagination() {
        let all = v(&["a", "b", "c", "d"]);
        assert_eq!(
            paginate(all.clone(), Some(2), None),
            Page {
                items: v(&["a", "b"]),
                more: true
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            Page {
                items: v(&["c", "d"]),
                more: false
            }
        );
        assert_eq!(
            paginate(all.clone(), None, Some("bb")),
            Page {
                items: v(&["c", "d"]),
                more: false
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(0), None),
            Page {
                items: vec![],
                more: true
            }
        );
        assert_eq!(
            paginate(all, Some(10), Some("z")),
            Page {
                items: vec![],
                more: false
            }
        );
    }
}
