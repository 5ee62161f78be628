//! A full disk: berth on a 24 MiB tmpfs that a filler file and blob pushes fill up. The push
//! that meets `ENOSPC` must fail promptly with a 5xx and a JSON error saying the storage is
//! full, leave no partial blob visible, and not disturb reads of what is stored; a manifest
//! PUT on the full disk must fail the same way and leave its tag alone; a chunked upload cut
//! short by the full disk must resume once there is room; and after the filler is deleted the
//! same pushes succeed.
//!
//! Mounting needs root. Without it the test is skipped with a message, except under CI
//! (`CI=true`), where a skipped test would hide that it never ran, so it fails.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::client::{Client, Fail, UploadKind, range_size};
use berth_tests::disk::Checker;
use berth_tests::process::Berth;
use berth_tests::{Desc, content, image_manifest, sha256};
use bytes::Bytes;

const SIZE_MIB: u64 = 24;
const FILLER_MIB: usize = 8;
/// Pushes that fill the disk: small enough that berth has read nearly all of the body when
/// it meets ENOSPC (see `large_refused_push_gets_its_answer` for what happens otherwise).
const BLOB: usize = 1536 << 10;
/// The chunk a PATCH sends into the nearly full disk.
const CHUNK: usize = 1 << 20;
const SEED: u64 = 0x6675_6c6c;
/// Refused 64 MiB pushes in `large_refused_push_gets_its_answer`.
const LARGE_ATTEMPTS: usize = 32;

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(self.dir.path()).status();
        if !plain.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Skips with a message, or fails under CI where a skip would go unnoticed.
fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and the full-disk test cannot run: {why}");
    }
    println!("SKIPPED full-disk test: {why}");
}

/// Writes `mib` MiB of zeros to `path` (tmpfs allocates a page per write, zeros or not).
fn write_filler(path: &Path, mib: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
}

/// Appends to `path` until the file system refuses another byte: the bytes written.
fn fill_up(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let buf = vec![0u8; 4096];
    let mut written = 0u64;
    loop {
        match f.write(&buf) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    written
}

fn avail(path: &Path) -> String {
    Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// The failure must be an HTTP 5xx with the spec's JSON error body saying the storage is full.
fn assert_full_disk_error(what: &str, r: Result<impl std::fmt::Debug, Fail>) -> String {
    let (status, content_type, body) = match r {
        Err(Fail::Status {
            status,
            content_type,
            body,
            ..
        }) => (status, content_type, body),
        other => panic!("{what} on a full disk: expected a 5xx answer, got {other:?}"),
    };
    assert!(
        (500..600).contains(&status),
        "{what} on a full disk: HTTP {status} {body}"
    );
    assert!(
        content_type.starts_with("application/json"),
        "{what}: Content-Type {content_type:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {body}"));
    let message = v["errors"][0]["message"].as_str().unwrap_or("").to_owned();
    let lower = message.to_lowercase();
    assert!(
        lower.contains("full") || lower.contains("space"),
        "{what}: the error message does not say the storage is full: {body}"
    );
    format!("HTTP {status} {}: {message}", v["errors"][0]["code"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_fails_cleanly_and_recovers() {
    if !is_root() {
        return skip("mounting a tmpfs needs root");
    }
    let mount = match Tmpfs::mount(SIZE_MIB) {
        Ok(m) => m,
        Err(e) => return skip(&e),
    };
    let started = Instant::now();
    let filler = mount.path().join("filler");
    write_filler(&filler, FILLER_MIB);
    let root = mount.path().join("root");
    // Config and log live on the real disk: only the storage root is on the tmpfs.
    let work = tempfile::tempdir().unwrap();
    let berth = Berth::start_on(&root, work.path());
    // Refusals here come before berth has read the whole body; one connection per request
    // keeps a connection dropped after a refusal from failing the next request
    // (`tests/refusals.rs` and `large_refused_push_gets_its_answer` test that on their own).
    let c = Client::without_reuse(&berth.base()).unwrap();
    let repo = "full/disk";

    // An image before the disk fills.
    let mut stored: Vec<(String, u64)> = Vec::new();
    let mut descs = Vec::new();
    for (i, len) in [700usize, 256 << 10, 256 << 10, 256 << 10]
        .into_iter()
        .enumerate()
    {
        let data = content(SEED + i as u64, len);
        let d = c
            .push_blob(repo, &data, UploadKind::Monolithic, &|_| {})
            .await
            .unwrap();
        stored.push((d.clone(), len as u64));
        descs.push(Desc {
            digest: d,
            size: len as u64,
        });
    }
    let v1 = image_manifest(&descs[0], &descs[1..], "before", true);
    c.put_manifest(repo, "v1", &v1).await.unwrap();

    // Readers of what is stored, all along.
    let stored = Arc::new(Mutex::new(stored));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let read_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        // Its own client, like a puller on another machine.
        let (c, stored, stop, reads, failures, v1) = (
            Client::new(&berth.base()).unwrap(),
            stored.clone(),
            stop.clone(),
            reads.clone(),
            read_failures.clone(),
            v1.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (digest, len) = {
                    let s = stored.lock().unwrap();
                    s[i % s.len()].clone()
                };
                i += 1;
                match c.blob_digest(repo, &digest).await {
                    Ok(Some((l, d))) if l == len && d == digest => {}
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("GET {digest}: {other:?}")),
                }
                match c.get_manifest(repo, "v1").await {
                    Ok(r) if r.status == 200 && r.body == v1 => {}
                    other => failures.lock().unwrap().push(format!("GET v1: {other:?}")),
                }
                reads.fetch_add(2, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Push blobs until one fails.
    let mut pushed = 0usize;
    let (failed_data, failure) = loop {
        assert!(pushed < 64, "{SIZE_MIB} MiB never filled up");
        let data = content(SEED + 100 + pushed as u64, BLOB);
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            c.push_blob(repo, &data, UploadKind::Monolithic, &|_| {}),
        )
        .await
        .expect("a push on a filling disk hung");
        match r {
            Ok(d) => {
                stored.lock().unwrap().push((d, BLOB as u64));
                pushed += 1;
            }
            Err(e) => break (data, e),
        }
    };
    let free_at_failure = avail(mount.path());
    let push_error = assert_full_disk_error("monolithic push", Err::<(), _>(failure));
    let failed_digest = sha256(&failed_data);
    assert_eq!(
        c.blob_head(repo, &failed_digest).await.unwrap(),
        404,
        "the blob whose push failed is visible"
    );
    assert!(
        c.blob_digest(repo, &failed_digest).await.unwrap().is_none(),
        "the blob whose push failed is served"
    );
    let report = Checker::new().check(&root);
    assert!(report.problems.is_empty(), "{}", report.problems.join("\n"));

    // A chunked upload that runs into the full disk mid-PATCH.
    let chunked = content(SEED + 999, CHUNK);
    let session = c.start_upload(repo).await;
    let session = match session {
        Ok(path) => {
            let r =
                tokio::time::timeout(Duration::from_secs(20), c.patch(&path, 0, chunked.clone()))
                    .await
                    .expect("a PATCH on a full disk hung");
            let patch_error = assert_full_disk_error("chunked PATCH", r);
            Some((path, patch_error))
        }
        Err(e) => {
            // Not even the session's start fitted: that too must be a clear 5xx.
            assert_full_disk_error("POST of an upload", Err::<(), _>(e));
            None
        }
    };

    // Now fill the disk to the last byte and try a manifest.
    let topped_up = fill_up(&mount.path().join("filler2"));
    let v2 = image_manifest(&descs[0], &descs[1..2], "during", false);
    let manifest_error = assert_full_disk_error(
        "manifest PUT",
        tokio::time::timeout(Duration::from_secs(20), c.put_manifest(repo, "v1", &v2))
            .await
            .expect("a manifest PUT on a full disk hung"),
    );
    let r = c.get_manifest(repo, "v1").await.unwrap();
    assert_eq!(
        (r.status, &r.body),
        (200, &Bytes::from(v1.clone())),
        "the tag moved on a full disk"
    );
    let small = content(SEED + 1000, 4096);
    assert_full_disk_error(
        "small monolithic push",
        c.push_blob(repo, &small, UploadKind::Monolithic, &|_| {})
            .await,
    );
    assert_eq!(c.blob_head(repo, &sha256(&small)).await.unwrap(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reads_while_full = reads.load(Ordering::Relaxed);

    // Room again: the same pushes succeed, and the interrupted session resumes.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(mount.path().join("filler2")).unwrap();
    let mut resumed_from = None;
    if let Some((path, _)) = &session {
        let range = c
            .upload_status(path)
            .await
            .unwrap()
            .expect("the session cut short by the full disk is gone");
        let held = range_size(&range).unwrap();
        assert!(held < CHUNK as u64, "a failed PATCH kept every byte?");
        let last = c
            .patch(path, held, chunked[held as usize..].to_vec())
            .await
            .unwrap();
        assert_eq!(last, CHUNK as u64);
        c.finish(path, &sha256(&chunked), Bytes::new())
            .await
            .unwrap();
        assert_eq!(
            c.blob_digest(repo, &sha256(&chunked)).await.unwrap(),
            Some((CHUNK as u64, sha256(&chunked)))
        );
        resumed_from = Some(held);
    }
    let d = c
        .push_blob(repo, &failed_data, UploadKind::Monolithic, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        c.blob_digest(repo, &d).await.unwrap(),
        Some((BLOB as u64, failed_digest))
    );
    // The readers expect v1's old manifest: stop them before the tag moves.
    stop.store(true, Ordering::SeqCst);
    reader.await.unwrap();
    let failures = read_failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "reads failed: {failures:?}");
    c.put_manifest(repo, "v1", &v2).await.unwrap();
    let r = c.get_manifest(repo, "v1").await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &v2[..]));
    let report = Checker::new().check(&root);
    assert!(report.problems.is_empty(), "{}", report.problems.join("\n"));
    println!(
        "full disk: {SIZE_MIB} MiB tmpfs, {FILLER_MIB} MiB filler; {pushed} pushes of {} KiB \
         succeeded, push {} failed with {free_at_failure} bytes free: {push_error}; chunked \
         PATCH: {}; after topping up with {topped_up} bytes, manifest PUT: {manifest_error}; \
         {reads_while_full} reads succeeded while filling and full, {} in all; session resumed \
         from byte {resumed_from:?}; {:.1} s",
        BLOB >> 10,
        pushed + 1,
        session
            .as_ref()
            .map_or("POST already failed", |(_, e)| e.as_str()),
        reads.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    // berth must stop before the tmpfs it writes to can be unmounted.
    drop(berth);
    drop(mount);
}

/// The refusal of a push berth cannot store must reach the client even when the body is
/// larger than what the sockets buffer: a layer of 64 MiB, not the 1.5 MiB blobs above.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_refused_push_gets_its_answer() {
    if !is_root() {
        return skip("mounting a tmpfs needs root");
    }
    let mount = match Tmpfs::mount(8) {
        Ok(m) => m,
        Err(e) => return skip(&e),
    };
    let work = tempfile::tempdir().unwrap();
    let berth = Berth::start_on(&mount.path().join("root"), work.path());
    let filled = fill_up(&mount.path().join("filler"));
    let (mut answered, mut lost, mut next_failed) = (0, Vec::new(), 0);
    let data = content(SEED + 5000, 64 << 20);
    for _ in 0..LARGE_ATTEMPTS {
        // A new connection for the push, so only this request's fate is measured; then a
        // second request on the same client, which may reuse the connection.
        let c = Client::new(&berth.base()).unwrap();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            c.push_blob("full/large", &data, UploadKind::Monolithic, &|_| {}),
        )
        .await
        .expect("a push on a full disk hung");
        match r {
            Err(Fail::Status { status, .. }) if (500..600).contains(&status) => answered += 1,
            Err(e) if e.is_transport() => lost.push(e.to_string()),
            other => panic!("64 MiB push on a full disk: {other:?}"),
        }
        if c.send(reqwest::Method::GET, "/v2/", &[], None)
            .await
            .is_err()
        {
            next_failed += 1;
        }
    }
    println!(
        "large refused pushes on a full 8 MiB tmpfs ({filled} filler bytes): {answered} of {LARGE_ATTEMPTS} \
         got their 5xx; next request on the same client failed {next_failed} times"
    );
    assert!(
        lost.is_empty() && next_failed == 0,
        "{} of {LARGE_ATTEMPTS} clients pushing 64 MiB to a full disk never got berth's 503 (berth answered \
         before reading the body, then closed the connection under the client's feet), and \
         {next_failed} follow-up requests on the same client failed: {lost:#?}",
        lost.len()
    );
    drop(berth);
    drop(mount);
}
