//! Upload sessions: chunks in, a verified blob out.
//!
//! A session is a directory `_uploads/<uuid>/` holding the bytes received so far (`data`) and
//! when it began (`startedat`), exactly where Distribution keeps them, so the state lives in
//! storage and not in this process. The order of writes is what makes a crash harmless:
//!
//! 1. chunks are appended to `_uploads/<uuid>/data` and fsynced before the PATCH is answered;
//! 2. on PUT the content is hashed and compared with the client's digest;
//! 3. only then is `data` renamed to `blobs/<alg>/<xx>/<hex>/data` (atomic, durable);
//! 4. then the repository's `_layers/.../link` is written (atomic, durable);
//! 5. then the session directory is removed and the 201 sent.
//!
//! A crash before 3 leaves an unfinished session (purged later); between 3 and 4 a verified
//! but unlinked blob (invisible to clients, collected by GC); after 4 the push is complete
//! even if the client never saw the 201.
//!
//! Hashing state is kept in memory per session, keyed by the offset it covers; when it is
//! missing or stale (another process served the previous chunk, or a restart) the data file is
//! re-read and hashed from the start, so correctness never depends on the cache.
//!
//! A blob pushed in one request (`POST ?digest=` with the body) needs no session: nobody can
//! resume it. Its bytes stream into a driver publisher at the blob's own place, hashed on the
//! way, and are published there only once the digest matches (a rename on the filesystem, one
//! PutObject or a completed multipart upload on S3); a crash or a mismatch leaves nothing
//! visible. On S3 a blob up to `chunksize` is three requests (pin, object, link) instead of a
//! session's dozen.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_oci::{Algorithm, Digest, Hasher, RepoName};
use berth_storage::FileWriter;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::pins::{Holder, PinLease};
use crate::{ByteStream, Error, Registry, Result, layout, write_link};

/// An upload session's identifier: a canonical lowercase hyphenated UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// Parses a session id from a URL; anything but a canonical UUID is refused.
    pub fn parse(s: &str) -> Result<Self> {
        match uuid::Uuid::parse_str(s) {
            Ok(u) if u.hyphenated().to_string() == s => Ok(UploadId(s.to_owned())),
            _ => Err(Error::UploadUnknown),
        }
    }

    fn generate() -> Self {
        UploadId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The id as written in URLs and paths.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an upload session stands.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    /// The session.
    pub id: UploadId,
    /// Bytes received so far.
    pub size: u64,
}

/// Hash state covering the first `offset` bytes of a session's data.
struct HashState {
    offset: u64,
    hasher: Hasher,
}

type SessionLock = Arc<tokio::sync::Mutex<Option<HashState>>>;

/// Per-session locks and hash states of this process.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<UploadId, SessionLock>>,
}

impl Sessions {
    fn lock_for(&self, id: &UploadId) -> SessionLock {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    pub(crate) fn forget(&self, id: &UploadId) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

/// Chunks queued for the hashing thread.
const HASH_QUEUE_DEPTH: usize = 2;

/// Streams `body` into `writer`, hashing as it goes. Hashing runs on its own blocking thread
/// and writing on the driver's, so receiving, hashing and disk IO overlap; chunks are shared
/// (reference-counted), not copied.
async fn pump(
    writer: &mut dyn FileWriter,
    state: &mut Option<HashState>,
    mut body: ByteStream,
) -> Result<()> {
    let hashing = state.take().map(|mut hash| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE_DEPTH);
        let worker = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                hash.hasher.update(&chunk);
                hash.offset += chunk.len() as u64;
            }
            hash
        });
        (tx, worker)
    });
    let (hash_tx, hash_worker) = match hashing {
        Some((tx, worker)) => (Some(tx), Some(worker)),
        None => (None, None),
    };
    let result = async {
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk.map_err(body_error)?;
            if chunk.is_empty() {
                continue;
            }
            if let Some(tx) = &hash_tx
                && tx.send(chunk.clone()).await.is_err()
            {
                return Err(Error::UploadInvalid("hashing stopped".into()));
            }
            writer.write(chunk).await?;
        }
        Ok(())
    }
    .await;
    drop(hash_tx);
    if let Some(worker) = hash_worker {
        *state = worker.await.ok();
    }
    result
}

fn body_error(e: io::Error) -> Error {
    Error::UploadInvalid(format!("reading the request body failed: {e}"))
}

impl Registry {
    /// Opens a new upload session.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadStatus> {
        self.check_writable()?;
        let id = UploadId::generate();
        let started = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        self.driver()
            .put(&layout::upload_started_at(repo, &id), Bytes::from(started))
            .await?;
        self.driver()
            .create_empty(&layout::upload_data(repo, &id))
            .await?;
        Ok(UploadStatus { id, size: 0 })
    }

    /// How much of the session has been received.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadStatus> {
        match self
            .driver()
            .stat_file(&layout::upload_data(repo, id))
            .await
        {
            Ok(m) => Ok(UploadStatus {
                id: id.clone(),
                size: m.size,
            }),
            Err(e) if e.is_not_found() => Err(Error::UploadUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends a chunk. `start`, from `Content-Range`, must equal the current size.
    pub async fn append_chunk(
        &self,
        repo: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<UploadStatus> {
        self.check_writable()?;
        let lock = self.inner.uploads.lock_for(id);
        let mut state = lock.lock().await;
        let size = self
            .append_locked(repo, id, start, body, &mut state)
            .await?;
        Ok(UploadStatus {
            id: id.clone(),
            size,
        })
    }

    async fn append_locked(
        &self,
        repo: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        body: ByteStream,
        state: &mut Option<HashState>,
    ) -> Result<u64> {
        // The writer is opened first: it knows the size, so no separate look at the file.
        let mut writer = match self
            .driver()
            .append_to(&layout::upload_data(repo, id))
            .await
        {
            Ok(w) => w,
            Err(e) if e.is_not_found() => return Err(Error::UploadUnknown),
            Err(e) => return Err(e.into()),
        };
        let current = writer.size();
        if let Some(start) = start
            && start != current
        {
            return Err(Error::RangeInvalid { size: current });
        }
        // Only keep hashing incrementally when the state covers exactly what is on disk.
        match state {
            Some(s) if s.offset == current => {}
            _ if current == 0 => {
                *state = Some(HashState {
                    offset: 0,
                    hasher: Hasher::new(Algorithm::Sha256),
                })
            }
            _ => *state = None,
        }
        let pumped = pump(writer.as_mut(), state, body).await;
        let size = writer.size();
        // Commit what arrived even on failure, so the session's size is what a client resuming
        // from the reported offset builds on.
        let committed = writer.commit().await;
        if pumped.is_err() || committed.is_err() {
            *state = None;
        }
        pumped?;
        committed?;
        if state.as_ref().is_some_and(|s| s.offset != size) {
            *state = None;
        }
        Ok(size)
    }

    /// Finishes a session: appends an optional last chunk, verifies the digest, and links the
    /// blob into the repository. Returns the blob's size.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<u64> {
        self.finish_upload_for(Holder::Push, repo, id, digest, body)
            .await
    }

    /// [`Registry::finish_upload`], pinning the blob on behalf of `holder`.
    async fn finish_upload_for(
        &self,
        holder: Holder,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<u64> {
        self.check_writable()?;
        let lock = self.inner.uploads.lock_for(id);
        let mut state = lock.lock().await;
        let size = match body {
            Some(body) => self.append_locked(repo, id, None, body, &mut state).await?,
            None => self.upload_status(repo, id).await?.size,
        };
        let data = layout::upload_data(repo, id);
        let actual = match state.take() {
            Some(s) if s.offset == size && s.hasher.algorithm() == digest.algorithm() => {
                s.hasher.finish()
            }
            _ => self.hash_file(&data, digest.algorithm()).await?,
        };
        let result = if &actual != digest {
            Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            })
        } else {
            // Pinned before the blob lands or is found already there, so a concurrent garbage
            // collection keeps it for its grace period (see `pins`).
            let committed = async {
                let lease = self.pin_for(holder, [digest]).await?;
                self.commit_blob(&data, digest).await?;
                self.link_layer_under(&lease, repo, digest).await
            };
            committed.await
        };
        // As Distribution does, a failed finish ends the session: the client starts over.
        self.remove_session(repo, id).await;
        result.map(|()| size)
    }

    /// Notes that `digest` is linked in `repo` and present, established after the pin of
    /// `lease` was written, so that a manifest PUT relying on the same pin need not check.
    /// `unlinks_before` is [`crate::pins::Recent::unlinks`] taken before the link was written.
    pub(crate) fn linked_under(
        &self,
        lease: &PinLease,
        repo: &RepoName,
        digest: &Digest,
        unlinks_before: u64,
    ) {
        if let Some(pin) = lease.pins.get(digest) {
            self.inner
                .pins
                .verified(repo.as_str(), digest, *pin, lease.window, unlinks_before);
        }
    }

    /// Links a verified blob into a repository (which may create the repository), and notes
    /// it verified under `lease`'s pin.
    pub(crate) async fn link_layer_under(
        &self,
        lease: &PinLease,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<()> {
        let unlinks = self.inner.pins.unlinks();
        self.link_layer(repo, digest).await?;
        self.linked_under(lease, repo, digest, unlinks);
        Ok(())
    }

    /// Links a verified blob into a repository (which may create the repository).
    pub(crate) async fn link_layer(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let linked = write_link(self.driver(), &layout::layer_link(repo, digest), digest).await;
        self.inner.caches.forget_catalog();
        linked
    }

    /// Moves verified content into the blob store unless an identical blob is already there.
    /// The session's directory is removed next, whatever happens here.
    async fn commit_blob(&self, data: &berth_storage::StoragePath, digest: &Digest) -> Result<()> {
        let target = layout::blob_data(digest);
        match self.driver().stat_whole(&target).await {
            // Content-addressed and verified: an existing blob is this content.
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => {
                Ok(self.driver().move_before_delete(data, &target).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn hash_file(
        &self,
        path: &berth_storage::StoragePath,
        algorithm: Algorithm,
    ) -> Result<Digest> {
        let mut hasher = Hasher::new(algorithm);
        let mut stream = match self.driver().reader(path, 0, None).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Err(Error::UploadUnknown),
            Err(e) => return Err(e.into()),
        };
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(|e| {
                Error::Storage(berth_storage::StorageError::Io {
                    driver: self.driver().name(),
                    op: "read",
                    path: path.clone(),
                    source: e,
                })
            })?);
        }
        Ok(hasher.finish())
    }

    async fn remove_session(&self, repo: &RepoName, id: &UploadId) {
        self.inner.uploads.forget(id);
        if let Err(e) = self
            .driver()
            .delete_dir(&layout::upload_dir(repo, id))
            .await
            && !e.is_not_found()
        {
            tracing::warn!(error = %e, "could not remove upload session");
        }
    }

    /// Cancels a session and deletes what it received.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        self.check_writable()?;
        let lock = self.inner.uploads.lock_for(id);
        let _state = lock.lock().await;
        self.upload_status(repo, id).await?;
        self.remove_session(repo, id).await;
        Ok(())
    }

    /// Pushes a whole blob in one request (`POST ?digest=` with a body). Returns its size.
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        self.push_blob_for(Holder::Push, repo, digest, body).await
    }

    /// [`Registry::push_blob`], pinning the blob on behalf of `holder`.
    pub(crate) async fn push_blob_for(
        &self,
        holder: Holder,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        self.check_writable()?;
        // No session: nobody can resume an upload they were never told about, so the bytes go
        // straight to the blob's place, hashed on the way, and appear there only if they match.
        let mut writer = self.driver().publisher(&layout::blob_data(digest)).await?;
        let mut state = Some(HashState {
            offset: 0,
            hasher: Hasher::new(digest.algorithm()),
        });
        pump(writer.as_mut(), &mut state, body).await?;
        let size = writer.size();
        let actual = match state {
            Some(s) if s.offset == size => s.hasher.finish(),
            _ => return Err(Error::UploadInvalid("hashing stopped".into())),
        };
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        // Pinned before the blob appears (see `pins`), so a concurrent garbage collection
        // keeps it for its grace period.
        let lease = self.pin_for(holder, [digest]).await?;
        writer.commit().await?;
        self.link_layer_under(&lease, repo, digest).await?;
        Ok(size)
    }

    /// Links `digest` from repository `from` into `repo` without copying. Returns false when
    /// `from` does not link it (the caller then starts a normal upload).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        self.check_writable()?;
        let lease = self.pin([digest]).await?;
        if !self.blob_linked_and_present(from, digest).await? {
            return Ok(false);
        }
        self.link_layer_under(&lease, repo, digest).await?;
        Ok(true)
    }

    /// A mount without `from` (the spec allows registries to find the source themselves):
    /// links `digest` into `repo` when some repository that `may_pull` allows links it and
    /// the blob is stored, and returns that repository. Returns `None` otherwise (the caller
    /// then starts a normal upload), so nothing the caller may not pull is ever revealed or
    /// mounted.
    pub async fn mount_blob_from_any(
        &self,
        repo: &RepoName,
        digest: &Digest,
        may_pull: impl Fn(&str) -> bool,
    ) -> Result<Option<RepoName>> {
        self.check_writable()?;
        // Most blobs a client offers to mount are not here at all: answer those without a
        // write or a walk of the repositories.
        match self.driver().stat_whole(&layout::blob_data(digest)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.pin([digest]).await?;
        let repositories = self.all_repositories().await?;
        let candidates: Vec<RepoName> = repositories
            .iter()
            .filter(|name| may_pull(name))
            .filter_map(|name| RepoName::parse(name).ok())
            .collect();
        let mut checks = futures_util::stream::iter(candidates)
            .map(|from| async move {
                let linked = self.blob_linked_and_present(&from, digest).await;
                (from, linked)
            })
            .buffer_unordered(MOUNT_SEARCH_CONCURRENCY);
        while let Some((from, linked)) = checks.next().await {
            // A repository that cannot be read is not a source; the caller then uploads, as
            // it would have without the search.
            let linked = linked.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "mount search: a repository could not be read");
                false
            });
            if linked {
                self.link_layer(repo, digest).await?;
                return Ok(Some(from));
            }
        }
        Ok(None)
    }
}

/// Repositories looked at in parallel by a mount without `from`.
const MOUNT_SEARCH_CONCURRENCY: usize = 16;
