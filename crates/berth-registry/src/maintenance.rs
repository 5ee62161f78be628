//! Housekeeping: purging upload sessions that were abandoned.
//!
//! Distribution's `uploadpurging`: sessions whose `startedat` is older than `age` are removed,
//! or only reported in dry-run mode. The age comes from the `startedat` file's modification
//! time, which is when it was written, so sessions written by Distribution purge the same way.

use std::time::{Duration, SystemTime};

use berth_oci::RepoName;

use crate::{Registry, Result, layout};

/// What one purge pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Sessions older than the age limit (removed unless dry run).
    pub purged: Vec<String>,
}

impl Registry {
    /// Removes (or, with `dry_run`, lists) upload sessions older than `age`.
    pub async fn purge_uploads(&self, age: Duration, dry_run: bool) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let now = SystemTime::now();
        let repos = self.catalog_all_repos_with_uploads().await?;
        for repo in repos {
            let dir = layout::uploads_dir(&repo);
            let ids = match self.driver().list(&dir).await {
                Ok(ids) => ids,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for id in ids {
                let Ok(session) = dir.join(&id) else { continue };
                let started = match session.join("startedat") {
                    Ok(p) => self.driver().stat(&p).await,
                    Err(_) => continue,
                };
                // A session without startedat is judged by its directory's age.
                let modified = match started {
                    Ok(m) => m.modified,
                    Err(_) => match self.driver().stat(&session).await {
                        Ok(m) => m.modified,
                        Err(_) => continue,
                    },
                };
                let old = now.duration_since(modified).is_ok_and(|a| a > age);
                if !old {
                    continue;
                }
                report.purged.push(format!("{repo}/{id}"));
                if dry_run {
                    tracing::info!(repository = %repo, upload = %id, "upload purge (dry run) would remove");
                } else if let Err(e) = self.driver().delete(&session).await
                    && !e.is_not_found()
                {
                    tracing::warn!(error = %e, "could not purge upload session");
                }
            }
        }
        Ok(report)
    }

    /// Every repository directory that has an `_uploads` folder, even ones with no manifest
    /// yet (a first push interrupted before its manifest).
    async fn catalog_all_repos_with_uploads(&self) -> Result<Vec<RepoName>> {
        let mut found = Vec::new();
        let mut pending = vec![(layout::repositories_root(), String::new())];
        while let Some((dir, name)) = pending.pop() {
            let children = match self.driver().list(&dir).await {
                Ok(c) => c,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for child in children {
                if child == "_uploads" {
                    if let Ok(repo) = RepoName::parse(&name) {
                        found.push(repo);
                    }
                } else if !child.starts_with('_')
                    && let Ok(path) = dir.join(&child)
                {
                    let n = if name.is_empty() {
                        child
                    } else {
                        format!("{name}/{child}")
                    };
                    pending.push((path, n));
                }
            }
        }
        Ok(found)
    }
}
