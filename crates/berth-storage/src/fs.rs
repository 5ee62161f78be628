//! The filesystem driver: one directory tree, the same one Distribution's `filesystem`
//! driver writes, so either program can serve the other's data.
//!
//! Durability: a small object is written to a temporary file beside its target, fsynced,
//! renamed over the target and the directory fsynced (the rename is atomic on POSIX; the
//! directory fsync makes it survive a power cut — see garage's `write_block_inner` and
//! <https://lwn.net/Articles/457667/>). Large writes go through a dedicated blocking thread fed
//! by a bounded channel, so the async side hashes the next chunk while this one hits the disk,
//! and memory stays bounded by the channel's depth.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::{
    ByteStream, DirStamp, FileInfo, FileWriter, Listing, Metadata, Result, StorageDriver,
    StorageError, StoragePath,
};

const NAME: &str = "filesystem";
/// Chunks in flight between the request and the writer thread (each at most what hyper
/// hands over in one read): enough to overlap disk and network, small enough that many
/// concurrent uploads stay cheap.
const WRITE_QUEUE_DEPTH: usize = 2;
/// Read buffer for streaming blobs out.
const READ_CHUNK: usize = 512 * 1024;
/// Buffers read ahead per reader: memory per pull is at most this times `READ_CHUNK`.
const READ_QUEUE_DEPTH: usize = 3;

/// A driver over a local directory.
#[derive(Debug, Clone)]
pub struct FsDriver {
    root: Arc<PathBuf>,
    /// The device of the root when its directory stamps are exact as soon as they are taken
    /// ([`fine_stamps`]), probed once, on the first listing.
    fine_stamps: Arc<OnceLock<Option<u64>>>,
}

impl FsDriver {
    /// A driver rooted at `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(FsDriver {
            root: Arc::new(root),
            fine_stamps: Arc::default(),
        })
    }

    /// A driver that never writes on its own account: the stamp probe, which creates and
    /// removes a scratch directory, is skipped and stamps keep the 100 ms margin. For
    /// read-only mode, where nothing may be written.
    pub fn without_probe(self) -> Self {
        let _ = self.fine_stamps.set(None);
        self
    }

    /// Whether a directory's stamp can be trusted the moment it is taken, however recent its
    /// last change (see [`fine_stamps`]); otherwise only once it is [`RACY_MARGIN`] old.
    /// Probes the filesystem on first use (blocking, about a millisecond).
    pub fn fine_stamps(&self) -> bool {
        self.fine_stamps_device().is_some()
    }

    /// The filesystem (device) the probe vouches for: only directories on it get fresh
    /// stamps, not ones reached through a mount onto another filesystem below the root.
    fn fine_stamps_device(&self) -> Option<u64> {
        *self.fine_stamps.get_or_init(|| {
            use std::os::unix::fs::MetadataExt;
            let dev = fs::metadata(self.root.as_path()).ok()?.dev();
            fine_stamps(&self.root).then_some(dev)
        })
    }

    /// The directory this driver serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, path: &StoragePath) -> PathBuf {
        if path.as_str().is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(path.as_str())
        }
    }

    fn err(op: &'static str, path: &StoragePath, e: io::Error) -> StorageError {
        StorageError::from_io(NAME, op, path, e)
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing each parent that gained an entry so the
/// new directories survive a crash along with the file later renamed into them.
/// True when `dir` is the walk's root (whose absence is the caller's NotFound).
fn found_root(dir: &Path, root: &Path) -> bool {
    dir == root
}

/// Every file below `full` (which is `start`) whose name `wanted` accepts, with size and
/// modification time; directories whose names start with `.` are not entered. One blocking
/// pass: an entry's type comes from the directory listing, only wanted files are stat'ed.
fn walk_files(
    full: PathBuf,
    start: StoragePath,
    wanted: fn(&str) -> bool,
) -> io::Result<Vec<FileInfo>> {
    let root = full.clone();
    let mut found = Vec::new();
    let mut pending = vec![(full, start)];
    while let Some((dir, dir_path)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A subdirectory removed since it was listed (an upload session finishing, a tag
            // deleted) is simply no longer there; only a missing root is NotFound.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !found_root(&dir, &root) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let is_dir = match entry.file_type() {
                Ok(t) => t.is_dir(),
                // Removed between listing and stat: not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if is_dir && name.starts_with('.') || !is_dir && !wanted(&name) {
                continue;
            }
            let Ok(child) = dir_path.join(&name) else {
                continue;
            };
            if is_dir {
                pending.push((entry.path(), child));
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            found.push(FileInfo {
                path: child,
                size: meta.len(),
                modified: meta.modified()?,
            });
        }
    }
    Ok(found)
}

fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads `n` bytes of `file` from `offset` into a new buffer, without zeroing it first (a
/// memset cost as much as the copy) and in as few reads as the kernel allows. A file that
/// ends early is an error: a blob is never padded.
fn read_uninit(file: &File, offset: u64, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        // Positional reads: should the allocation hold more than `n`, reading past it only
        // costs the truncation below, never the next buffer's bytes.
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than its size",
                ));
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Removes a temporary file unless disarmed, so a failed write leaves nothing behind.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Where a write to `dir/name` stages its content: a leading dot and a random suffix, so
/// never a valid link or blob name and never shared between concurrent writers of the same
/// target ([`StorageDriver::temporaries`] finds those a crash left).
fn temporary_beside(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

fn put_atomic(target: &Path, content: &[u8]) -> io::Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("no parent"))?;
    create_dirs_durably(dir)?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("no file name"))?;
    let tmp = temporary_beside(dir, name);
    let mut guard = TempGuard(Some(tmp.clone()));
    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, target)?;
    guard.0 = None;
    sync_dir(dir)
}

#[async_trait]
impl StorageDriver for FsDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, path: &StoragePath) -> Result<Bytes> {
        match tokio::fs::read(self.full(path)).await {
            Ok(v) => Ok(Bytes::from(v)),
            // Reading a directory is "nothing stored here" for a key-value view.
            Err(e) if e.raw_os_error() == Some(21) => Err(StorageError::NotFound {
                driver: NAME,
                path: path.clone(),
            }),
            Err(e) => Err(Self::err("read", path, e)),
        }
    }

    async fn put(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let target = self.full(path);
        blocking(move || put_atomic(&target, &content))
            .await
            .map_err(|e| Self::err("write", path, e))
    }

    async fn touch(&self, path: &StoragePath) -> Result<()> {
        let target = self.full(path);
        // No temporary and no fsync: an empty file has no partial state to hide, and the
        // trait asks for no durability here. The parent directories may be new, though.
        blocking(move || {
            if let Some(dir) = target.parent() {
                fs::create_dir_all(dir)?;
            }
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&target)
                .map(drop)
        })
        .await
        .map_err(|e| Self::err("touch", path, e))
    }

    async fn reader(
        &self,
        path: &StoragePath,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ByteStream> {
        let full = self.full(path);
        let (file, size) = blocking(move || {
            let f = File::open(&full)?;
            let size = f.metadata()?.len();
            Ok((f, size))
        })
        .await
        .map_err(|e| Self::err("open", path, e))?;
        let len = StorageError::read_len(NAME, path, size, offset, len)?;
        // One blocking thread reads ahead into large buffers: far fewer hops between threads
        // than an async file, and the bounded channel caps memory per reader.
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_QUEUE_DEPTH);
        tokio::task::spawn_blocking(move || {
            let (mut at, mut left) = (offset, len);
            while left > 0 {
                let n = left.min(READ_CHUNK as u64) as usize;
                let buf = match read_uninit(&file, at, n) {
                    Ok(buf) => buf,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                left -= n as u64;
                at += n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return; // The client went away.
                }
            }
        });
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed())
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        let full = self.full(path);
        let (file, size) = blocking(move || {
            if let Some(dir) = full.parent() {
                create_dirs_durably(dir)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(!append)
                .open(&full)?;
            let size = f.seek(SeekFrom::End(0))?;
            Ok((f, size))
        })
        .await
        .map_err(|e| Self::err("open", path, e))?;
        Ok(Box::new(FsWriter::spawn(file, size, path.clone(), None)))
    }

    async fn publisher(&self, path: &StoragePath) -> Result<Box<dyn FileWriter>> {
        let target = self.full(path);
        let (file, staged) = blocking(move || {
            let dir = target
                .parent()
                .ok_or_else(|| io::Error::other("no parent"))?;
            let name = target
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| io::Error::other("no file name"))?;
            let tmp = temporary_beside(dir, name);
            let open = || {
                create_dirs_durably(dir)?;
                OpenOptions::new().write(true).create_new(true).open(&tmp)
            };
            // Once more if the directory went in between: a failed publication of the same
            // file removes it when it is empty (see `Staged::abandon`).
            let file = match open() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => open()?,
                r => r?,
            };
            Ok((file, Staged { tmp, target }))
        })
        .await
        .map_err(|e| Self::err("open", path, e))?;
        Ok(Box::new(FsWriter::spawn(
            file,
            0,
            path.clone(),
            Some(staged),
        )))
    }

    async fn stat(&self, path: &StoragePath) -> Result<Metadata> {
        let m = tokio::fs::metadata(self.full(path))
            .await
            .map_err(|e| Self::err("stat", path, e))?;
        Ok(Metadata {
            size: if m.is_dir() { 0 } else { m.len() },
            modified: m.modified().map_err(|e| Self::err("stat", path, e))?,
            is_dir: m.is_dir(),
        })
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<String>> {
        let full = self.full(path);
        blocking(move || read_names(&full))
            .await
            .map_err(|e| Self::err("list", path, e))
    }

    async fn list_stamped(&self, dirs: &[StoragePath]) -> Vec<Result<Listing>> {
        let batches = dirs.chunks(STAMP_BATCH).map(|batch| {
            let batch: Vec<(StoragePath, PathBuf)> =
                batch.iter().map(|d| (d.clone(), self.full(d))).collect();
            let driver = self.clone();
            async move {
                let listed = blocking({
                    let batch = batch.clone();
                    move || {
                        let fine = driver.fine_stamps_device();
                        Ok(batch
                            .into_iter()
                            .map(|(_, full)| list_one_stamped(&full, fine))
                            .collect::<Vec<_>>())
                    }
                })
                .await;
                match listed {
                    Ok(listed) => listed
                        .into_iter()
                        .zip(&batch)
                        .map(|(r, (dir, _))| r.map_err(|e| Self::err("list", dir, e)))
                        .collect(),
                    Err(e) => batch
                        .iter()
                        .map(|(dir, _)| {
                            Err(Self::err(
                                "list",
                                dir,
                                io::Error::new(e.kind(), e.to_string()),
                            ))
                        })
                        .collect::<Vec<_>>(),
                }
            }
        });
        futures_util::future::join_all(batches)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn stamps(&self, dirs: &[StoragePath]) -> Vec<Option<DirStamp>> {
        let batches = dirs.chunks(STAMP_BATCH).map(|batch| {
            let full: Vec<PathBuf> = batch.iter().map(|d| self.full(d)).collect();
            let n = full.len();
            async move {
                blocking(move || {
                    Ok(full
                        .iter()
                        .map(|f| fs::metadata(f).ok().map(|m| stamp_of(&m)))
                        .collect::<Vec<_>>())
                })
                .await
                .unwrap_or_else(|_| vec![None; n])
            }
        });
        futures_util::future::join_all(batches)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn walk(&self, path: &StoragePath) -> Result<Vec<FileInfo>> {
        // Temporaries and names no StoragePath can hold are not content.
        let (full, start) = (self.full(path), path.clone());
        blocking(move || walk_files(full, start, |name| !name.starts_with('.')))
            .await
            .map_err(|e| Self::err("walk", path, e))
    }

    async fn temporaries(&self, path: &StoragePath) -> Result<Vec<FileInfo>> {
        // The names `put_atomic` gives its temporary files.
        let (full, start) = (self.full(path), path.clone());
        blocking(move || {
            walk_files(full, start, |name| {
                name.starts_with('.') && name.contains(".tmp-")
            })
        })
        .await
        .map_err(|e| Self::err("walk", path, e))
    }

    async fn move_to(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let (src, dst) = (self.full(from), self.full(to));
        blocking(move || {
            let dir = dst.parent().ok_or_else(|| io::Error::other("no parent"))?;
            create_dirs_durably(dir)?;
            fs::rename(&src, &dst)?;
            sync_dir(dir)
        })
        .await
        .map_err(|e| Self::err("move", from, e))
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let full = self.full(path);
        blocking(move || {
            let meta = fs::symlink_metadata(&full)?;
            if meta.is_dir() {
                fs::remove_dir_all(&full)
            } else {
                fs::remove_file(&full)
            }
        })
        .await
        .map_err(|e| Self::err("delete", path, e))
    }
}

/// Directories listed or stamped by one blocking task: big enough that the hop to the
/// blocking pool is amortised, small enough that a catalog walk uses both cores.
const STAMP_BATCH: usize = 256;

/// How much older than the listing a directory's modification time must be for its stamp to
/// be trusted, unless [`fine_stamps`] holds. File times come from the kernel's coarse clock,
/// which ticks every few milliseconds: a change in the same tick as the one before it leaves
/// the time as it was. A stamp at least this old cannot share its tick with any change made
/// after the listing.
const RACY_MARGIN: Duration = Duration::from_millis(100);

/// Changes [`fine_stamps`] makes in a row; see there for why this many.
const PROBE_CHANGES: usize = 32;

/// Whether, on the filesystem holding `root`, a directory change made after its times were
/// read always gets a later ctime, even within one tick of the coarse clock. Linux 6.13 and
/// later do this on ext4, xfs, btrfs and tmpfs ("multigrain timestamps"): the stat that takes
/// a stamp marks the times as seen, and the next change then takes a fine-grained time.
/// There, a stamp is exact the moment it is taken, so even a directory changed a millisecond
/// ago can be cached; elsewhere only stamps older than [`RACY_MARGIN`] are.
///
/// Probed, not assumed: in a scratch directory, [`PROBE_CHANGES`] entries are created, each
/// followed by a stat. With coarse times they all fall within one or two ticks, so consecutive
/// ctimes repeat; only if every one is later than the one before, and the whole run took
/// less than 2 ms (so that coarse times could not have produced 32 distinct values), is the
/// answer yes. Any failure (a read-only root, say) answers no, the safe side.
fn fine_stamps(root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ctime = |p: &Path| fs::metadata(p).map(|m| (m.ctime(), m.ctime_nsec()));
    let dir = root.join(format!(".stamp-probe-{}", uuid::Uuid::new_v4().simple()));
    if fs::create_dir(&dir).is_err() {
        return false;
    }
    let probe = || -> io::Result<bool> {
        // A run slowed past 2 ms (a loaded machine) proves nothing; try a few times.
        for attempt in 0..3 {
            let start = Instant::now();
            let mut last = ctime(&dir)?;
            for i in 0..PROBE_CHANGES {
                File::create(dir.join(format!("{attempt}-{i}")))?;
                let now = ctime(&dir)?;
                if now <= last {
                    return Ok(false);
                }
                last = now;
            }
            if start.elapsed() < Duration::from_millis(2) {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let fine = probe().unwrap_or(false);
    let _ = fs::remove_dir_all(&dir);
    fine
}

fn stamp_of(m: &fs::Metadata) -> DirStamp {
    use std::os::unix::fs::MetadataExt;
    DirStamp {
        a: (m.mtime() as u64).wrapping_mul(1_000_000_000) ^ m.mtime_nsec() as u64,
        b: m.ino() ^ (m.ctime() as u64).rotate_left(32) ^ m.ctime_nsec() as u64,
    }
}

/// Lists one directory with a stamp taken before reading it, if the stamp can be trusted:
/// always on the device with fine stamps (`fine`), else once it is old enough (see
/// [`RACY_MARGIN`]).
fn list_one_stamped(dir: &Path, fine: Option<u64>) -> io::Result<Listing> {
    use std::os::unix::fs::MetadataExt;
    let now = std::time::SystemTime::now();
    let meta = fs::metadata(dir)?;
    let settled = fine == Some(meta.dev())
        || meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > RACY_MARGIN);
    let stamp = settled.then(|| stamp_of(&meta));
    Ok(Listing {
        names: read_names(dir)?,
        stamp,
    })
}

fn read_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        // Skip temporaries and anything that could not be a StoragePath component.
        if let Some(n) = name.to_str()
            && !n.starts_with('.')
        {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

enum WriteCmd {
    Data(Bytes),
    Commit(oneshot::Sender<io::Result<()>>),
}

/// Bytes written between two requests that the disk start writing them.
const WRITEBACK_EVERY: u64 = 1 << 20;

/// Starts the disk writing a large file while it is still arriving. Without it the kernel
/// holds up to a gigabyte of dirty pages and the final fsync waits for all of them, which
/// made the commit of a 1 GiB push cost a third of its time; with it, the commit (and each
/// PATCH's fsync) waits only for the last megabyte or so.
///
/// The request is `posix_fadvise(DONTNEED)` on what was written since the last one: on
/// Linux it starts asynchronous writeback of the range's dirty pages and returns, the same
/// hint PostgreSQL falls back to where `sync_file_range` is missing (which has no safe
/// binding). Only clean pages are dropped, and these are dirty or being written, so they
/// stay cached, bar the few whose writeback ends within the call. It guarantees nothing;
/// the fsync at commit does. Elsewhere than Linux it is not made.
struct Writeback {
    /// Offset up to which writeback was requested.
    requested: u64,
}

impl Writeback {
    fn wrote(&mut self, file: &File, end: u64) {
        if end - self.requested < WRITEBACK_EVERY {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            let len = std::num::NonZeroU64::new(end - self.requested);
            // Only a hint: a filesystem that refuses it loses the overlap, not data.
            let _ = rustix::fs::fadvise(file, self.requested, len, rustix::fs::Advice::DontNeed);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.requested = end;
    }
}

/// Writes on a blocking thread so disk latency overlaps with receiving and hashing.
struct FsWriter {
    tx: mpsc::Sender<WriteCmd>,
    worker: Option<tokio::task::JoinHandle<io::Result<()>>>,
    size: u64,
    path: StoragePath,
}

/// Abandons a staged file unless disarmed.
struct StagedGuard<'a>(Option<&'a Staged>);

impl Drop for StagedGuard<'_> {
    fn drop(&mut self) {
        if let Some(staged) = self.0.take() {
            staged.abandon();
        }
    }
}

/// A [`StorageDriver::publisher`]'s file: written at `tmp`, renamed to `target` on commit.
struct Staged {
    tmp: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// Removes the staged file and, when it is left empty, the directory made for it (a blob's
    /// own, for a digest a client claimed and did not send): failed pushes leave nothing.
    fn abandon(&self) {
        let _ = fs::remove_file(&self.tmp);
        if let Some(dir) = self.tmp.parent() {
            let _ = fs::remove_dir(dir);
        }
    }

    fn publish(&self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.target)?;
        match self.target.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

impl FsWriter {
    fn spawn(mut file: File, size: u64, path: StoragePath, staged: Option<Staged>) -> Self {
        let (tx, mut rx) = mpsc::channel::<WriteCmd>(WRITE_QUEUE_DEPTH);
        let worker = tokio::task::spawn_blocking(move || {
            // A staged file not published (an error, or the writer dropped) is removed.
            let mut guard = StagedGuard(staged.as_ref());
            let mut end = size;
            let mut writeback = Writeback { requested: size };
            while let Some(cmd) = rx.blocking_recv() {
                match cmd {
                    WriteCmd::Data(chunk) => {
                        file.write_all(&chunk)?;
                        end += chunk.len() as u64;
                        writeback.wrote(&file, end);
                    }
                    WriteCmd::Commit(done) => {
                        let mut result = file.sync_all();
                        if let (Ok(()), Some(staged)) = (&result, &staged) {
                            drop(file);
                            result = staged.publish();
                            if result.is_ok() {
                                guard.0 = None;
                            }
                        }
                        let _ = done.send(result);
                        return Ok(());
                    }
                }
            }
            Ok(())
        });
        FsWriter {
            tx,
            worker: Some(worker),
            size,
            path,
        }
    }

    /// The worker stopped early: collect its error.
    async fn worker_error(&mut self) -> StorageError {
        let e = match self.worker.take() {
            Some(handle) => match handle.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => io::Error::other("writer closed"),
                Err(join) => io::Error::other(join),
            },
            None => io::Error::other("writer closed"),
        };
        FsDriver::err("write", &self.path, e)
    }
}

#[async_trait]
impl FileWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let n = chunk.len() as u64;
        if self.tx.send(WriteCmd::Data(chunk)).await.is_err() {
            return Err(self.worker_error().await);
        }
        self.size += n;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(WriteCmd::Commit(done_tx)).await.is_err() {
            return Err(self.worker_error().await);
        }
        match done_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(FsDriver::err("sync", &self.path, e)),
            Err(_) => Err(self.worker_error().await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    fn p(s: &str) -> StoragePath {
        StoragePath::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_driver_without_probe_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        let d = FsDriver::new(dir.path()).unwrap().without_probe();
        let listed = d.list_stamped(&[p("d")]).await.pop().unwrap().unwrap();
        assert!(listed.stamp.is_none(), "a directory changed just now");
        assert!(!d.fine_stamps());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["d"]);
    }

    #[test]
    fn stamp_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // Either answer is right somewhere; this kernel's is reported for the record.
        eprintln!("fine-grained directory stamps: {}", fine_stamps(dir.path()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let missing = dir.path().join("missing");
        assert!(!fine_stamps(&missing), "no directory, no promise");
    }

    #[tokio::test]
    async fn put_get_stat_list_move_delete() {
        let dir = tempfile::tempdir().unwrap();
        let d = FsDriver::new(dir.path()).unwrap();
        assert!(d.get(&p("a/b")).await.unwrap_err().is_not_found());
        d.put(&p("a/b/c"), Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(d.get(&p("a/b/c")).await.unwrap(), "hello");
        assert!(d.get(&p("a/b")).await.unwrap_err().is_not_found());
        assert_eq!(d.stat(&p("a/b/c")).await.unwrap().size, 5);
        assert!(d.stat(&p("a/b")).await.unwrap().is_dir);
        assert_eq!(d.list(&p("a/b")).await.unwrap(), vec!["c"]);
        d.put(&p("a/d/e"), Bytes::from_static(b"!")).await.unwrap();
        let mut walked: Vec<String> = d
            .walk(&p("a"))
            .await
            .unwrap()
            .into_iter()
            .map(|f| format!("{}:{}", f.path.as_str(), f.size))
            .collect();
        walked.sort();
        assert_eq!(walked, vec!["a/b/c:5", "a/d/e:1"]);
        assert!(d.walk(&p("nothing")).await.unwrap_err().is_not_found());
        d.delete(&p("a/d")).await.unwrap();
        d.move_to(&p("a/b/c"), &p("x/y")).await.unwrap();
        assert!(d.stat(&p("a/b/c")).await.unwrap_err().is_not_found());
        assert_eq!(d.get(&p("x/y")).await.unwrap(), "hello");
        d.delete(&p("x")).await.unwrap();
        assert!(d.delete(&p("x")).await.unwrap_err().is_not_found());
        // Nothing temporary is left behind.
        assert_eq!(d.list(&p("a/b")).await.unwrap(), Vec::<String>::new());
        assert_eq!(fs::read_dir(dir.path().join("a/b")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn writer_appends_and_reader_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let d = FsDriver::new(dir.path()).unwrap();
        let mut w = d.writer(&p("u/data"), true).await.unwrap();
        w.write(Bytes::from_static(b"0123")).await.unwrap();
        w.commit().await.unwrap();
        let mut w = d.writer(&p("u/data"), true).await.unwrap();
        assert_eq!(w.size(), 4);
        w.write(Bytes::from_static(b"4567")).await.unwrap();
        assert_eq!(w.size(), 8);
        w.commit().await.unwrap();
        let read = |off, len| {
            let d = d.clone();
            async move {
                let s = d.reader(&p("u/data"), off, len).await?;
                let parts: Vec<Bytes> = s.try_collect().await.unwrap();
                Ok::<_, StorageError>(parts.concat())
            }
        };
        assert_eq!(read(0, None).await.unwrap(), b"01234567");
        assert_eq!(read(2, Some(3)).await.unwrap(), b"234");
        assert_eq!(read(8, None).await.unwrap(), b"");
        assert!(matches!(
            read(9, None).await,
            Err(StorageError::InvalidOffset { .. })
        ));
    }

    /// A file many writeback intervals long, written in odd-sized chunks, reads back whole
    /// (the writeback requests drop no dirty page), in a fresh writer and appended to.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_write_with_early_writeback_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = FsDriver::new(dir.path()).unwrap();
        let total = 9 * WRITEBACK_EVERY as usize + 12_345;
        let content: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        let (first, second) = content.split_at(total / 3 + 7);
        for (part, append) in [(first, false), (second, true)] {
            let mut w = d.writer(&p("big/data"), append).await.unwrap();
            for piece in part.chunks(262_139) {
                w.write(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            w.commit().await.unwrap();
        }
        let read: Vec<Bytes> = d
            .reader(&p("big/data"), 0, None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(read.concat() == content, "content differs after the write");
    }
}
