//! Upload sessions at rest: the one place that says how old a stored session is and removes
//! it, for upload purging, garbage collection and `check` alike.
//!
//! A session's age is that of its newest file: `startedat` is written when it starts and
//! `data` grows with every chunk, so a slow upload that is still moving is never stale, and
//! sessions Distribution wrote are judged the same way. Removing one always forgets its
//! in-memory hash state too, so that map cannot grow with sessions nobody will finish.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use berth_oci::RepoName;
use berth_storage::{FileInfo, StoragePath};

use crate::layout::{self, Entry};
use crate::{Registry, Result, UploadId};

/// One upload session as storage holds it.
#[derive(Debug, Clone)]
pub(crate) struct StoredSession {
    pub(crate) repo: RepoName,
    pub(crate) id: UploadId,
    /// Its directory, `_uploads/<uuid>`.
    pub(crate) dir: StoragePath,
    /// When its newest file was written.
    pub(crate) newest: SystemTime,
    /// The names of its files (`data`, `startedat`).
    files: BTreeSet<String>,
}

impl StoredSession {
    /// `<repository>/<uuid>`, for reports and logs.
    pub(crate) fn name(&self) -> String {
        format!("{}/{}", self.repo, self.id.as_str())
    }

    /// How long nothing was written to it, as of `now`.
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.newest).unwrap_or_default()
    }

    /// Older than `age` at `now`: abandoned, as upload purging and collection judge it.
    pub(crate) fn stale(&self, now: SystemTime, age: Duration) -> bool {
        self.age(now) > age
    }

    /// Both of its files are there (a crash can leave one without the other).
    pub(crate) fn complete(&self) -> bool {
        self.files.contains("data") && self.files.contains("startedat")
    }
}

/// Groups the upload files among classified walk results into sessions.
pub(crate) fn sessions_of<'a>(
    files: impl IntoIterator<Item = (&'a FileInfo, &'a Entry)>,
) -> Vec<StoredSession> {
    let mut by_dir: HashMap<StoragePath, StoredSession> = HashMap::new();
    for (file, entry) in files {
        let Entry::Upload(repo, id, name) = entry else {
            continue;
        };
        let session = by_dir
            .entry(file.path.parent())
            .or_insert_with(|| StoredSession {
                repo: repo.clone(),
                id: id.clone(),
                dir: file.path.parent(),
                newest: file.modified,
                files: BTreeSet::new(),
            });
        session.newest = session.newest.max(file.modified);
        session.files.insert(name.clone());
    }
    by_dir.into_values().collect()
}

impl Registry {
    /// Every stored upload session, from one walk of the repositories.
    pub(crate) async fn stored_sessions(&self) -> Result<Vec<StoredSession>> {
        let files = crate::gc::walk_or_empty(self, &layout::repositories_root()).await?;
        let classified: Vec<(FileInfo, Entry)> = files
            .into_iter()
            .filter_map(|f| layout::classify(&f.path).map(|e| (f, e)))
            .collect();
        Ok(sessions_of(classified.iter().map(|(f, e)| (f, e))))
    }

    /// Removes a stored session and forgets its in-memory state; one already gone is fine.
    pub(crate) async fn remove_stored_session(&self, session: &StoredSession) -> Result<()> {
        match self.driver().delete(&session.dir).await {
            // Still stored: keep its state, it may yet be resumed.
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => {
                self.inner.uploads.forget(&session.id);
                Ok(())
            }
        }
    }
}
