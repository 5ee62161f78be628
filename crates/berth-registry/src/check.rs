//! `berth check`: verifies a data directory the way an operator would want after a crash,
//! a disk error or years of use by more than one registry program.
//!
//! It hashes every blob against its digest and cross-checks the links: layer and revision
//! links naming missing blobs, tags naming missing revisions, manifests referencing missing
//! blobs or children, unreadable link files, orphaned upload sessions, temporary files of
//! interrupted writes, and what an interrupted garbage collection left in quarantine. With
//! `repair` it removes or fixes only what is safe: nothing a client could still fetch, and
//! nothing younger than the grace period (it may be a write in flight, so such leftovers are
//! not reported at all). Tags and revisions
//! that name missing content are reported, never removed: that is the operator's decision.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, Hasher, RepoName};
use berth_storage::{FileInfo, StoragePath};
use futures_util::{StreamExt, stream};

use crate::layout::{self, Entry};
use crate::{Registry, Result};

/// Blobs hashed at once: hashing is CPU-bound, the machine's cores are the limit.
const HASH_CONCURRENCY: usize = 4;
/// Links read at once.
const READ_CONCURRENCY: usize = 32;

/// What `check` should do.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Remove or fix what is safe to.
    pub repair: bool,
    /// Leftovers younger than this may belong to a write in progress and are left alone.
    pub grace_period: Duration,
    /// Upload sessions untouched for longer than this are orphaned.
    pub upload_age: Duration,
    /// Repository-name prefixes of a pull-through cache (`""`: every repository): a cached
    /// manifest whose layers or children were never asked for is how a cache is, not damage,
    /// so its missing references are not reported.
    pub cached_prefixes: Vec<String>,
}

impl CheckOptions {
    fn is_cached(&self, repo: &RepoName) -> bool {
        let name = repo.as_str();
        self.cached_prefixes.iter().any(|p| {
            p.is_empty()
                || name
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// One thing found wrong.
#[derive(Debug, Clone)]
pub struct Problem {
    /// A short stable name: `corrupt-blob`, `dangling-layer-link`, `dangling-revision`,
    /// `dangling-tag`, `missing-blob`, `missing-child`, `unreadable-link`, `stale-referrer`,
    /// `orphaned-upload`, `temporary-file`, `quarantined`.
    pub kind: &'static str,
    /// The storage path concerned.
    pub path: String,
    /// What is wrong, in words.
    pub detail: String,
    /// True when `repair` fixed it.
    pub repaired: bool,
}

/// What `check` found.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Blobs hashed.
    pub blobs_checked: usize,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Links read.
    pub links_checked: usize,
    /// Everything wrong.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    fn add(&mut self, kind: &'static str, path: &StoragePath, detail: String, repaired: bool) {
        tracing::warn!(kind, %path, repaired, "{detail}");
        self.problems.push(Problem {
            kind,
            path: path.to_string(),
            detail,
            repaired,
        });
    }
}

enum LinkState {
    Missing,
    Unreadable,
    Names(Digest),
}

impl Registry {
    /// Checks the whole data directory: one walk, then each phase judges what it found.
    pub async fn check(&self, options: &CheckOptions) -> Result<CheckReport> {
        let files = match self.driver().walk(&layout::v2_root()).await {
            Ok(f) => f,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let classified = files
            .into_iter()
            .filter_map(|f| layout::classify(&f.path).map(|e| (f, e)))
            .collect();
        let mut run = Run {
            registry: self,
            options,
            now: SystemTime::now(),
            classified,
            present: HashSet::new(),
            revisions: HashSet::new(),
            report: CheckReport::default(),
        };
        run.blobs().await?;
        run.links().await?;
        run.manifests().await?;
        run.leftovers().await?;
        Ok(run.report)
    }

    /// Hashes a blob; `None` when it vanished meanwhile (a collection swept it).
    async fn hash_blob(&self, path: &StoragePath, digest: &Digest) -> Result<Option<Digest>> {
        let mut stream = match self.driver().reader(path, 0, None).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut hasher = Hasher::new(digest.algorithm());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| {
                crate::Error::Storage(berth_storage::StorageError::Io {
                    driver: self.driver().name(),
                    op: "read",
                    path: path.clone(),
                    source,
                })
            })?;
            hasher.update(&chunk);
        }
        Ok(Some(hasher.finish()))
    }
}

/// One check, phase to phase: what the walk found, and what each phase learnt for the next.
struct Run<'a> {
    registry: &'a Registry,
    options: &'a CheckOptions,
    now: SystemTime,
    classified: Vec<(FileInfo, Entry)>,
    /// Blobs whose content matches their digest.
    present: HashSet<Digest>,
    /// Every revision link, by repository.
    revisions: HashSet<(RepoName, Digest)>,
    report: CheckReport,
}

impl Run<'_> {
    /// Every blob hashed against its digest.
    async fn blobs(&mut self) -> Result<()> {
        let (registry, options) = (self.registry, self.options);
        let Run {
            classified,
            present,
            report,
            ..
        } = self;
        // Blobs: every one hashed against its digest.
        let blobs: Vec<(&FileInfo, &Digest)> = classified
            .iter()
            .filter_map(|(f, e)| match e {
                Entry::Blob(d) => Some((f, d)),
                _ => None,
            })
            .collect();
        let hashed: Vec<Result<Option<Digest>>> = stream::iter(&blobs)
            .map(|(f, d)| registry.hash_blob(&f.path, d))
            .buffered(HASH_CONCURRENCY)
            .collect()
            .await;
        for ((f, digest), actual) in blobs.iter().zip(hashed) {
            report.blobs_checked += 1;
            report.bytes_checked += f.size;
            match actual? {
                Some(actual) if &actual == *digest => {
                    present.insert((*digest).clone());
                }
                Some(actual) => {
                    // Removing wrong content is safe: it can never be served correctly, and
                    // while it sits there a re-push of the right content is skipped.
                    let repaired =
                        options.repair && registry.driver().delete(&f.path).await.is_ok();
                    report.add(
                        "corrupt-blob",
                        &f.path,
                        format!("content hashes to {actual}, not {digest}"),
                        repaired,
                    );
                }
                None => {}
            }
        }

        Ok(())
    }

    /// Every link read (concurrently), then judged against the blobs and revisions.
    async fn links(&mut self) -> Result<()> {
        let (registry, options, now) = (self.registry, self.options, self.now);
        let Run {
            classified,
            present,
            revisions,
            report,
            ..
        } = self;
        let old = |f: &FileInfo| {
            now.duration_since(f.modified)
                .is_ok_and(|a| a > options.grace_period)
        };
        // Links: read concurrently, then judged together.
        let links: Vec<&(FileInfo, Entry)> = classified
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Entry::Layer(..)
                        | Entry::Revision(..)
                        | Entry::TagCurrent(..)
                        | Entry::TagIndex(..)
                        | Entry::Referrer(..)
                )
            })
            .collect();
        let states: Vec<Result<LinkState>> = stream::iter(&links)
            .map(|(f, _)| async move {
                match registry.driver().get(&f.path).await {
                    Ok(bytes) => Ok(std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|s| Digest::parse(s.trim()).ok())
                        .map_or(LinkState::Unreadable, LinkState::Names)),
                    Err(e) if e.is_not_found() => Ok(LinkState::Missing),
                    Err(e) => Err(e.into()),
                }
            })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        for (_, e) in classified.iter() {
            if let Entry::Revision(r, d) = e {
                revisions.insert((r.clone(), d.clone()));
            }
        }
        for ((f, entry), state) in links.iter().map(|l| (&l.0, &l.1)).zip(states) {
            report.links_checked += 1;
            let named = match state? {
                LinkState::Missing => continue,
                LinkState::Unreadable => {
                    // A layer or revision link's path says which digest it should hold; when
                    // that content is present, writing it back is what Distribution would read.
                    let fix = match entry {
                        Entry::Layer(_, d) | Entry::Revision(_, d) | Entry::TagIndex(_, _, d)
                            if present.contains(d) =>
                        {
                            Some(d)
                        }
                        _ => None,
                    };
                    let repaired = match (options.repair, fix) {
                        (true, Some(d)) => crate::write_link(registry.driver(), &f.path, d)
                            .await
                            .is_ok(),
                        _ => false,
                    };
                    report.add(
                        "unreadable-link",
                        &f.path,
                        "link file does not hold a digest".into(),
                        repaired,
                    );
                    continue;
                }
                LinkState::Names(d) => d,
            };
            match entry {
                Entry::Layer(_, d) if !present.contains(d) => {
                    // Safe: the repository could not serve the blob anyway.
                    let repaired = options.repair
                        && old(f)
                        && registry.driver().delete(&f.path.parent()).await.is_ok();
                    report.add(
                        "dangling-layer-link",
                        &f.path,
                        format!("links {d}, which is not in the blob store"),
                        repaired,
                    );
                }
                Entry::Revision(_, d) if !present.contains(d) => report.add(
                    "dangling-revision",
                    &f.path,
                    format!("manifest {d} is not in the blob store"),
                    false,
                ),
                Entry::TagCurrent(repo, tag)
                    if !revisions.contains(&(repo.clone(), named.clone())) =>
                {
                    report.add(
                        "dangling-tag",
                        &f.path,
                        format!("tag {tag} names {named}, which is not a revision of {repo}"),
                        false,
                    )
                }
                Entry::Referrer(repo, _, referrer)
                    if !revisions.contains(&(repo.clone(), referrer.clone())) =>
                {
                    // Safe: the referrers API already skips it.
                    let repaired = options.repair
                        && old(f)
                        && registry.driver().delete(&f.path.parent()).await.is_ok();
                    report.add(
                        "stale-referrer",
                        &f.path,
                        format!("referrer {referrer} is no longer a revision of {repo}"),
                        repaired,
                    );
                }
                _ => {}
            }
        }

        Ok(())
    }

    /// Every stored manifest: everything it references must be there.
    async fn manifests(&mut self) -> Result<()> {
        let registry = self.registry;
        let Run {
            present,
            revisions,
            report,
            options,
            ..
        } = self;
        // Manifests: everything they reference must be there (except in a cache).
        let stored: Vec<&(RepoName, Digest)> = revisions
            .iter()
            .filter(|(r, d)| present.contains(d) && !options.is_cached(r))
            .collect();
        let read: Vec<Result<Option<bytes::Bytes>>> = stream::iter(&stored)
            .map(|(_, d)| async move {
                match registry.driver().get(&layout::blob_data(d)).await {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        for ((repo, digest), body) in stored.iter().map(|p| (&p.0, &p.1)).zip(read) {
            let Some(body) = body? else { continue };
            let path = layout::revision_link(repo, digest);
            let Some(edges) = crate::gc::edges_of(&body) else {
                report.add(
                    "unreadable-manifest",
                    &path,
                    format!("manifest {digest} cannot be parsed"),
                    false,
                );
                continue;
            };
            for blob in &edges.blobs {
                if !present.contains(blob) {
                    report.add(
                        "missing-blob",
                        &path,
                        format!("manifest {digest} references {blob}, which is not stored"),
                        false,
                    );
                }
            }
            for child in &edges.children {
                if !revisions.contains(&(repo.clone(), child.clone())) {
                    report.add(
                        "missing-child",
                        &path,
                        format!("index {digest} lists {child}, which is not a revision of {repo}"),
                        false,
                    );
                }
            }
        }

        Ok(())
    }

    /// What interrupted work left: upload sessions, temporary files, quarantines.
    async fn leftovers(&mut self) -> Result<()> {
        let (registry, options, now) = (self.registry, self.options, self.now);
        let Run {
            classified, report, ..
        } = self;
        let old = |f: &FileInfo| {
            now.duration_since(f.modified)
                .is_ok_and(|a| a > options.grace_period)
        };
        // Leftovers: upload sessions, temporaries, quarantines.
        let sessions = crate::sessions::sessions_of(classified.iter().map(|(f, e)| (f, e)));
        for session in sessions {
            let age = session.age(now);
            // One missing `data` or `startedat` was cut short by a crash: past the grace
            // period, no upload is still writing it.
            let incomplete = !session.complete();
            if (incomplete && age > options.grace_period) || session.stale(now, options.upload_age)
            {
                let repaired =
                    options.repair && registry.remove_stored_session(&session).await.is_ok();
                report.add(
                    "orphaned-upload",
                    &session.dir,
                    format!(
                        "upload session {} untouched for {}s",
                        if incomplete {
                            "missing data or startedat,"
                        } else {
                            ""
                        },
                        age.as_secs()
                    ),
                    repaired,
                );
            }
        }
        for tmp in registry.temporaries().await? {
            // A younger one may be a write still in flight, here or in another replica (a
            // collection pass writing its marker when berth was stopped, say): not a problem
            // until it outlives the grace period.
            if !old(&tmp) {
                continue;
            }
            let repaired = options.repair && registry.driver().delete(&tmp.path).await.is_ok();
            report.add(
                "temporary-file",
                &tmp.path,
                "left by an interrupted write".into(),
                repaired,
            );
        }
        // What a collection set aside is judged by its run, as the collector itself judges
        // it: a rename keeps the file's old modification time, so the file's own age would
        // call a run in progress (here, or in another replica) interrupted.
        let abandoned = registry
            .abandoned_runs(
                None,
                now,
                now.checked_sub(options.grace_period).unwrap_or(now),
            )
            .await?;
        for (f, e) in classified.iter() {
            let (run, target) = match e {
                Entry::QuarantinedBlob(run, d) => (run, layout::blob_data(d)),
                Entry::QuarantinedRevision(run, r, d) => (run, layout::revision_link(r, d)),
                Entry::QuarantinedLayer(run, r, d) => (run, layout::layer_link(r, d)),
                _ => continue,
            };
            if !abandoned.contains(run) {
                continue;
            }
            // The walk may be long past: a run live then may since have finished, deleting
            // what it set aside and then its marker.
            match registry.driver().stat(&f.path).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            }
            // Putting back is always safe; the next collection decides again.
            let repaired =
                options.repair && registry.driver().move_to(&f.path, &target).await.is_ok();
            report.add(
                "quarantined",
                &f.path,
                format!(
                    "set aside by a garbage collection that did not finish; belongs at {target}"
                ),
                repaired,
            );
        }
        Ok(())
    }
}
