//! Where berth keeps bytes: a small driver trait and the drivers behind it.
//!
//! The trait is deliberately Distribution-sized (`registry/storage/driver/storagedriver.go`):
//! a handful of operations on paths, each with a contract every driver keeps, so an object
//! store can implement it without the registry logic knowing. Drivers store keys and bytes
//! and know nothing of images, digests or repositories; the registry's `layout` module is the
//! only code that decides which paths exist.
#![deny(missing_docs)]

mod fs;
mod path;
#[cfg(feature = "s3")]
mod s3;

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use fs::FsDriver;
pub use path::{InvalidPath, StoragePath};
#[cfg(feature = "s3")]
pub use s3::{S3Driver, S3Options};

/// A stream of file content.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What can go wrong in a driver.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Nothing is stored at the path.
    #[error("{driver}: path not found: {path}")]
    NotFound {
        /// Driver name.
        driver: &'static str,
        /// The path asked for.
        path: StoragePath,
    },
    /// An offset beyond the end of a file.
    #[error("{driver}: invalid offset {offset} for {path}")]
    InvalidOffset {
        /// Driver name.
        driver: &'static str,
        /// The path asked for.
        path: StoragePath,
        /// The offset asked for.
        offset: u64,
    },
    /// The backend failed.
    #[error("{driver}: {op} {path}: {source}")]
    Io {
        /// Driver name.
        driver: &'static str,
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: StoragePath,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// What `driver` doing `op` on `path` met: NotFound stays NotFound, anything else is an
    /// IO error naming the operation.
    pub fn from_io(
        driver: &'static str,
        op: &'static str,
        path: &StoragePath,
        e: io::Error,
    ) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            StorageError::NotFound {
                driver,
                path: path.clone(),
            }
        } else {
            StorageError::Io {
                driver,
                op,
                path: path.clone(),
                source: e,
            }
        }
    }

    /// How many bytes a read of `len` (to the end when `None`) from `offset` covers in a file
    /// of `size`; InvalidOffset when `offset` is past the end. Every driver's `reader` agrees.
    pub fn read_len(
        driver: &'static str,
        path: &StoragePath,
        size: u64,
        offset: u64,
        len: Option<u64>,
    ) -> Result<u64, Self> {
        if offset > size {
            return Err(StorageError::InvalidOffset {
                driver,
                path: path.clone(),
                offset,
            });
        }
        Ok(len.unwrap_or(size - offset).min(size - offset))
    }

    /// True when the error means "nothing there", which callers often translate.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// True when the backend ran out of space.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull
            || source.raw_os_error() == Some(28))
    }

    /// True when the storage could not be reached or said it cannot serve now (an object
    /// store's 5xx or timeout after retries): worth retrying later, unlike a broken setup.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if matches!(source.kind(),
            io::ErrorKind::ResourceBusy | io::ErrorKind::TimedOut))
    }
}

/// Result alias for driver operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What `stat` reports.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
    /// True for a directory (a common prefix, on object stores).
    pub is_dir: bool,
}

/// A file found by [`StorageDriver::walk`].
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Its full path.
    pub path: StoragePath,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
}

/// Evidence that a directory's children have not changed: two equal stamps of one directory,
/// taken at different times, mean the same set of children. Only drivers that can vouch for
/// that cheaply give stamps (the filesystem: a directory's modification time changes whenever
/// an entry is added or removed); object stores have no directories to stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    /// Driver-defined; compared, never interpreted.
    pub a: u64,
    /// Driver-defined; compared, never interpreted.
    pub b: u64,
}

/// What [`StorageDriver::list_stamped`] reports for one directory.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Names of the direct children, unsorted, as [`StorageDriver::list`] gives them.
    pub names: Vec<String>,
    /// A stamp that was current *before* the names were read, when the driver can give one
    /// that a later change is certain to alter.
    pub stamp: Option<DirStamp>,
}

/// Directories listed at once by the default [`StorageDriver::list_stamped`].
const LIST_CONCURRENCY: usize = 32;

/// A storage backend. Paths are always [`StoragePath`]s, so no driver ever sees a path that
/// could leave its root.
#[async_trait]
pub trait StorageDriver: Send + Sync + 'static {
    /// A short name for logs and errors (`filesystem`, `s3`).
    fn name(&self) -> &'static str;

    /// Reads a whole small object (a link or a manifest) stored by [`StorageDriver::put`] or
    /// [`StorageDriver::move_to`]. NotFound when absent. A file still being written through a
    /// [`StorageDriver::writer`] is read with [`StorageDriver::reader`] (on object stores it is
    /// not one object yet, and looking for its pieces would cost every missing link a LIST).
    async fn get(&self, path: &StoragePath) -> Result<Bytes>;

    /// Stores a whole small object atomically and durably: once this returns, a reader sees
    /// all of `content`; before, it sees the previous content or nothing, never a part.
    async fn put(&self, path: &StoragePath, content: Bytes) -> Result<()>;

    /// Creates an empty file, atomically visible but not necessarily durable: for markers
    /// whose only readers run at the same time as the writer (garbage collection's pins), so
    /// that a crash, which ends the writer too, makes them moot. Defaults to an empty `put`.
    async fn touch(&self, path: &StoragePath) -> Result<()> {
        self.put(path, Bytes::new()).await
    }

    /// Streams `len` bytes (or to the end when `None`) starting at `offset`. NotFound when
    /// absent; InvalidOffset when `offset` is past the end.
    async fn reader(&self, path: &StoragePath, offset: u64, len: Option<u64>)
    -> Result<ByteStream>;

    /// Opens a writer, appending to existing content when `append`, else truncating. What is
    /// written is visible to readers only as far as the driver's commit semantics say: callers
    /// must treat the file as private until [`FileWriter::commit`] returns.
    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>>;

    /// Opens a writer for a whole new file that appears at `path` all at once, durably, when
    /// [`FileWriter::commit`] returns, replacing whatever is there; until then readers see
    /// what was there before, and a writer dropped without a commit leaves nothing visible.
    /// For content that must be checked before anyone may see it (a blob pushed in one
    /// request is hashed as it streams in and committed only if its digest matches): no
    /// staging file to move afterwards, which on object stores is a copy and a delete.
    async fn publisher(&self, path: &StoragePath) -> Result<Box<dyn FileWriter>>;

    /// Creates an empty file to append to later, at a path where nothing is yet (a new upload
    /// session's); drivers may skip clearing what a truncating writer would clear.
    async fn create_empty(&self, path: &StoragePath) -> Result<()> {
        self.writer(path, false).await?.commit().await
    }

    /// Opens an existing file to append to it; NotFound (and nothing created) when there is
    /// none. For callers that would otherwise `stat` it first: object stores answer both
    /// questions with one look.
    async fn append_to(&self, path: &StoragePath) -> Result<Box<dyn FileWriter>> {
        self.stat_file(path).await?;
        self.writer(path, true).await
    }

    /// Size, modification time and kind. NotFound when absent.
    async fn stat(&self, path: &StoragePath) -> Result<Metadata>;

    /// [`StorageDriver::stat`] where only a file can be: a driver may skip looking for a
    /// directory at `path` (on object stores a directory is one more LIST) and report one as
    /// absent.
    async fn stat_file(&self, path: &StoragePath) -> Result<Metadata> {
        self.stat(path).await
    }

    /// [`StorageDriver::stat_file`] of a file only ever stored whole (by `put`, `move_to` or
    /// a publisher; a blob or a manifest), never appended to: object stores skip looking for
    /// segments, which costs a missing file one LIST.
    async fn stat_whole(&self, path: &StoragePath) -> Result<Metadata> {
        self.stat_file(path).await
    }

    /// Stores `content` at `path`, a file named by its content (a manifest in the blob store),
    /// so that one already there with the same size holds the same bytes. A driver where a
    /// stat is much cheaper than a write (the filesystem: a write is a temporary, two fsyncs and
    /// a rename) looks first and leaves such a file alone; one where both are a request each
    /// (object stores) just writes, which replaces identical bytes atomically.
    async fn put_addressed(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        match self.stat_whole(path).await {
            Ok(m) if m.size == content.len() as u64 => Ok(()),
            Ok(_) => self.put(path, content).await,
            Err(e) if e.is_not_found() => self.put(path, content).await,
            Err(e) => Err(e),
        }
    }

    /// Names of the direct children of a directory, unsorted. NotFound when absent.
    async fn list(&self, path: &StoragePath) -> Result<Vec<String>>;

    /// Every file below a directory, recursively, with size and modification time, in no
    /// particular order. NotFound when the directory is absent. This is one paginated LIST on
    /// object stores (a thousand keys a request), which is why callers prefer it to reading
    /// files one by one.
    async fn walk(&self, path: &StoragePath) -> Result<Vec<FileInfo>>;

    /// [`StorageDriver::list`] for many directories at once (one batch instead of a round trip
    /// each), each with a stamp where the driver can give one. Listings that use the stamps
    /// later ask [`StorageDriver::stamps`] whether anything changed instead of listing again.
    async fn list_stamped(&self, dirs: &[StoragePath]) -> Vec<Result<Listing>> {
        let mut listed = Vec::with_capacity(dirs.len());
        for batch in dirs.chunks(LIST_CONCURRENCY) {
            let names = futures_util::future::join_all(batch.iter().map(|d| self.list(d))).await;
            listed.extend(
                names
                    .into_iter()
                    .map(|r| r.map(|names| Listing { names, stamp: None })),
            );
        }
        listed
    }

    /// The current stamps of `dirs`, in order: `None` for a directory that is absent or that
    /// the driver cannot stamp (every one, unless the driver overrides this).
    async fn stamps(&self, dirs: &[StoragePath]) -> Vec<Option<DirStamp>> {
        vec![None; dirs.len()]
    }

    /// Moves a file, replacing any file at `to`; atomic and durable on return.
    async fn move_to(&self, from: &StoragePath, to: &StoragePath) -> Result<()>;

    /// [`StorageDriver::move_to`] of a file whose directory the caller deletes next (a
    /// finished upload session's data): a driver that cannot rename may leave `from` to that
    /// deletion. The filesystem renames; object stores copy and delete nothing, which saves
    /// the LIST and the DELETE the directory's removal does anyway.
    async fn move_before_delete(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        self.move_to(from, to).await
    }

    /// Deletes a file or a whole directory tree. NotFound when absent.
    async fn delete(&self, path: &StoragePath) -> Result<()>;

    /// [`StorageDriver::delete`] of what is known to be a directory: a driver may skip
    /// looking for a file at `path` itself (on object stores, a HEAD and a LIST).
    async fn delete_dir(&self, path: &StoragePath) -> Result<()> {
        self.delete(path).await
    }

    /// Whether [`StorageDriver::redirect_url`] may answer: blob GETs then cost the registry
    /// one link check and a URL, and the bytes flow from the store to the client directly.
    fn redirects(&self) -> bool {
        false
    }

    /// A URL, valid for a while, where a client can GET the file's bytes itself (a presigned
    /// S3 URL); `None` when the driver serves bytes only through [`StorageDriver::reader`].
    async fn redirect_url(&self, path: &StoragePath) -> Result<Option<String>> {
        let _ = path;
        Ok(None)
    }

    /// Leftovers of interrupted writes below a directory (a crash between creating a
    /// driver's temporary file and renaming it), which [`walk`](Self::walk) hides. Each can be
    /// passed to [`delete`](Self::delete). Drivers whose writes need no temporary files (object
    /// stores) have none, which is the default.
    async fn temporaries(&self, path: &StoragePath) -> Result<Vec<FileInfo>> {
        let _ = path;
        Ok(Vec::new())
    }
}

/// An open file being written.
#[async_trait]
pub trait FileWriter: Send {
    /// Appends a chunk.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Bytes in the file so far, including what was there before an append.
    fn size(&self) -> u64;

    /// Makes everything written durable. The writer is spent afterwards.
    async fn commit(self: Box<Self>) -> Result<()>;
}
