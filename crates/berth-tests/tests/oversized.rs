//! Oversized and lying requests against the real binary: a 64 MiB manifest (with a
//! `Content-Length` and chunked), megabyte headers and request lines, and a `Content-Length`
//! that promises more than is sent or less than is sent, on monolithic pushes and on upload
//! sessions.
//!
//! What must hold: the manifest is refused with 400 `MANIFEST_INVALID` before the body has
//! been sent and without the server's memory growing by the body's size; a megabyte header is
//! answered with 431 (or the connection closed), never a 5xx or a hang; a lying
//! `Content-Length` links no blob, leaves no stray session, and leaves a session it touched
//! reporting exactly what it stored, from where the upload resumes to a correct blob.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_tests::process::Berth;
use berth_tests::raw::{Conn, Resp};
use berth_tests::{content, sha256};
use tokio::io::AsyncWriteExt;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MIB: u64 = 1024 * 1024;

async fn get(b: &Berth, target: &str) -> Resp {
    let mut c = Conn::connect(b.addr).await.unwrap();
    c.request("GET", target, &[], b"").await.unwrap()
}

async fn head(b: &Berth, target: &str) -> Resp {
    let mut c = Conn::connect(b.addr).await.unwrap();
    c.request("HEAD", target, &[], b"").await.unwrap()
}

/// Sends a 64 MiB manifest body after `head`, reading the answer while still sending.
/// Returns the answer, the bytes sent when it arrived, and the server's peak RSS growth.
async fn send_huge_manifest(b: &Berth, chunked: bool) -> (Resp, u64, u64) {
    let total = 64 * MIB;
    let before = b.memory();
    let mut c = Conn::connect(b.addr).await.unwrap();
    let len = total.to_string();
    let framing = if chunked {
        ("Transfer-Encoding", "chunked")
    } else {
        ("Content-Length", len.as_str())
    };
    let head = c.head(
        "PUT",
        "/v2/big/manifests/latest",
        &[("Content-Type", OCI_MANIFEST), framing],
    );
    c.write(&head).await.unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let Conn {
        mut reader,
        mut writer,
        ..
    } = c;
    let counter = sent.clone();
    let writer_task = tokio::spawn(async move {
        // Leading whitespace is valid JSON, so only the size can be the reason to refuse.
        let piece = vec![b' '; 64 * 1024];
        let mut done = 0u64;
        while done < total {
            let r = if chunked {
                let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                framed.extend_from_slice(&piece);
                framed.extend_from_slice(b"\r\n");
                writer.write_all(&framed).await
            } else {
                writer.write_all(&piece).await
            };
            if r.is_err() {
                return;
            }
            done += piece.len() as u64;
            counter.store(done, Ordering::SeqCst);
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n").await;
        }
    });
    let answer = tokio::time::timeout(Duration::from_secs(60), reader.response(false))
        .await
        .expect("no answer to a 64 MiB manifest within 60 s")
        .expect("the connection failed before an answer");
    let sent_at_answer = sent.load(Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(60), writer_task).await;
    let after = b.memory();
    (
        answer,
        sent_at_answer,
        after.hwm_kib.saturating_sub(before.hwm_kib) * 1024,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_manifest_is_refused_without_buffering() {
    let dir = tempfile::tempdir().unwrap();
    let b = Berth::start(dir.path(), "");
    assert_eq!(get(&b, "/v2/").await.status, 200);
    for chunked in [false, true] {
        let (r, sent, growth) = send_huge_manifest(&b, chunked).await;
        eprintln!(
            "64 MiB manifest (chunked: {chunked}): {} after {:.1} MiB sent; server peak RSS grew {:.1} MiB",
            r.status,
            sent as f64 / MIB as f64,
            growth as f64 / MIB as f64
        );
        assert_eq!(r.status, 400, "{}", r.describe());
        assert_eq!(
            r.error_code().as_deref(),
            Some("MANIFEST_INVALID"),
            "{}",
            r.describe()
        );
        assert!(
            sent < 32 * MIB,
            "the answer came only after {sent} bytes of a 64 MiB body"
        );
        assert!(
            growth < 32 * MIB,
            "the server's peak RSS grew by {growth} bytes: it buffered the body"
        );
    }
    assert_eq!(get(&b, "/v2/").await.status, 200);
    assert_eq!(get(&b, "/v2/big/manifests/latest").await.status, 404);
}

/// Sends `wire` while reading; `Ok(Some(status))` for an answer, `Ok(None)` when the server
/// closed or reset the connection without one.
async fn send_reading(b: &Berth, wire: Vec<u8>) -> Result<Option<u16>, String> {
    let c = Conn::connect(b.addr).await.unwrap();
    let Conn {
        mut reader,
        mut writer,
        ..
    } = c;
    let w = tokio::spawn(async move {
        let _ = writer.write_all(&wire).await;
        writer
    });
    let status = match tokio::time::timeout(Duration::from_secs(20), reader.response(false)).await {
        Err(_) => return Err("no answer and no close within 20 s".into()),
        Ok(Ok(r)) => Some(r.status),
        Ok(Err(_)) => None,
    };
    drop(w.await);
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = Berth::start(dir.path(), "");
    let host = b.addr.to_string();
    let big = "a".repeat(MIB as usize);
    let many: String = (0..20_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "one 1 MiB header",
            format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nX-Big: {big}\r\n\r\n").into_bytes(),
        ),
        (
            "a 1 MiB request line",
            format!("GET /v2/{big}/tags/list HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
        ),
        (
            "20,000 headers",
            format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\n{many}\r\n").into_bytes(),
        ),
        (
            "a 1 MiB header without an end",
            format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nX-Big: {big}").into_bytes(),
        ),
    ];
    for (what, wire) in cases {
        let before = b.memory();
        let status = send_reading(&b, wire)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        eprintln!("{what}: {status:?}");
        if let Some(s) = status {
            assert!(
                [400, 413, 414, 431].contains(&s),
                "{what}: answered {s}, not 431 (or another 4xx refusal)"
            );
        }
        let growth = b.memory().hwm_kib.saturating_sub(before.hwm_kib) * 1024;
        assert!(growth < 16 * MIB, "{what}: peak RSS grew {growth} bytes");
    }
    assert_eq!(get(&b, "/v2/").await.status, 200, "berth still serves");
}

fn blob_file(b: &Berth, digest: &str) -> std::path::PathBuf {
    let hex = &digest["sha256:".len()..];
    b.root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Files in the directory of the blob `digest` (hex) other than its `data`: what a monolithic
/// push stages there while its body arrives.
fn staged(b: &Berth, digest: &str) -> usize {
    std::fs::read_dir(blob_file(b, digest).parent().unwrap())
        .map(|rd| {
            rd.filter(|e| e.as_ref().is_ok_and(|e| e.file_name() != "data"))
                .count()
        })
        .unwrap_or(0)
}

fn sessions(b: &Berth, repo: &str) -> usize {
    std::fs::read_dir(
        b.root
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_uploads"),
    )
    .map(|rd| rd.count())
    .unwrap_or(0)
}

/// Where a session stands: its `Range` end + 1 (0 for `0-0`, which berth, like Distribution,
/// also sends for an empty session).
async fn session_size(b: &Berth, location: &str) -> u64 {
    let r = get(b, location).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    range_size(&r)
}

/// The size an upload response's `Range` reports (see [`session_size`]).
fn range_size(r: &Resp) -> u64 {
    let range = r.header("range").unwrap().to_owned();
    let end: u64 = range.strip_prefix("0-").unwrap().parse().unwrap();
    if end == 0 { 0 } else { end + 1 }
}

/// Where a session stands once every request appending to it has ended: a PATCH without body
/// or `Content-Range` appends nothing, but it does so under the session's lock, which an
/// append holds from before it reads the size until its bytes are committed
/// (`Registry::append_chunk`), so its 202 comes after any append already holding the lock.
async fn settled_size(b: &Berth, location: &str) -> u64 {
    let mut c = Conn::connect(b.addr).await.unwrap();
    let r = c.request("PATCH", location, &[], b"").await.unwrap();
    assert_eq!(r.status, 202, "empty PATCH: {}", r.describe());
    range_size(&r)
}

/// Polls `check` every 20 ms until it holds; false if it still does not after `limit`.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_session(b: &Berth, repo: &str) -> String {
    let mut c = Conn::connect(b.addr).await.unwrap();
    let r = c
        .request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.describe());
    format!(
        "/v2/{repo}/blobs/uploads/{}",
        r.header("docker-upload-uuid").unwrap()
    )
}

/// Sends the rest of `data` from `from` and finishes; the blob must then be served intact.
async fn resume_and_finish(b: &Berth, location: &str, data: &[u8], from: u64) {
    let digest = sha256(data);
    let mut c = Conn::connect(b.addr).await.unwrap();
    let rest = &data[from as usize..];
    let range = format!("{}-{}", from, data.len() - 1);
    let r = c
        .request(
            "PATCH",
            location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            rest,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202, "resuming at {from}: {}", r.describe());
    let r = c
        .request("PUT", &format!("{location}?digest={digest}"), &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.describe());
    let repo = location
        .strip_prefix("/v2/")
        .and_then(|l| l.split("/blobs/").next())
        .unwrap();
    let got = get(b, &format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(got.status, 200);
    assert!(
        got.body == data,
        "the resumed blob differs from what was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_content_length_links_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Berth::start(dir.path(), "");
    let data = content(1, 1000);
    let digest = sha256(&data);
    let prefix_digest = sha256(&data[..10]);

    // Monolithic push promising 1000 bytes, sending 10, then closing the connection.
    {
        let mut c = Conn::connect(b.addr).await.unwrap();
        let head = c.head(
            "POST",
            &format!("/v2/short/blobs/uploads/?digest={digest}"),
            &[("Content-Length", "1000")],
        );
        c.write(&head).await.unwrap();
        c.write(&data[..10]).await.unwrap();
        // Cut only once the handler has staged the blob (it waits for the rest of the body
        // meanwhile), so that nothing staged below means it was removed, not yet made.
        assert!(
            eventually(Duration::from_secs(10), async || staged(&b, &digest) == 1).await,
            "nothing staged for the monolithic push after 10 s, its request still open"
        );
    }
    // The same, half-closing so the answer can still be read.
    let answer = {
        let mut c = Conn::connect(b.addr).await.unwrap();
        let head = c.head(
            "POST",
            &format!("/v2/short/blobs/uploads/?digest={digest}"),
            &[("Content-Length", "1000")],
        );
        c.write(&head).await.unwrap();
        c.write(&data[..10]).await.unwrap();
        c.shutdown_write().await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), c.reader.response(false))
            .await
            .expect("no answer or close within 20 s after a truncated body")
            .ok()
    };
    eprintln!(
        "truncated monolithic push, half-closed: {:?}",
        answer.as_ref().map(Resp::describe)
    );
    if let Some(r) = &answer {
        assert!(
            (400..500).contains(&r.status),
            "a truncated body is the client's fault: {}",
            r.describe()
        );
    }

    // Monolithic push promising 10 bytes and sending 1000: the 10 are the body, the rest is
    // not a request.
    let first = {
        let mut c = Conn::connect(b.addr).await.unwrap();
        let mut wire = c.head(
            "POST",
            &format!("/v2/long/blobs/uploads/?digest={digest}"),
            &[("Content-Length", "10")],
        );
        wire.extend_from_slice(&data);
        c.write(&wire).await.unwrap();
        let first = c.reader.response(false).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.reader.response(false)).await;
        first
    };
    assert_eq!(first.status, 400, "{}", first.describe());
    assert_eq!(first.error_code().as_deref(), Some("DIGEST_INVALID"));

    // The first cut connection's handler may still be running (the second's answered, or
    // closed, after removing its session): a session is removed when its handler ends. One
    // still there after 10 s leaked, and the assertion below says so.
    for repo in ["short", "long"] {
        eventually(Duration::from_secs(10), async || sessions(&b, repo) == 0).await;
    }
    // A monolithic push stages its bytes beside the blob's place: the failed ones leave
    // neither the staged file nor the directory made for it.
    eventually(Duration::from_secs(10), async || {
        !blob_file(&b, &digest).parent().unwrap().exists()
    })
    .await;
    for d in [&digest, &prefix_digest] {
        let dir = blob_file(&b, d);
        assert!(
            !dir.parent().unwrap().exists(),
            "a failed push left {}",
            dir.parent().unwrap().display()
        );
    }
    for repo in ["short", "long"] {
        for d in [&digest, &prefix_digest] {
            let r = head(&b, &format!("/v2/{repo}/blobs/{d}")).await;
            assert_eq!(r.status, 404, "{repo}: {d} is linked");
        }
        assert_eq!(
            sessions(&b, repo),
            0,
            "{repo}: a failed push left a session"
        );
    }
    assert!(
        !blob_file(&b, &digest).exists(),
        "the 1000-byte blob was stored"
    );
    assert!(
        !blob_file(&b, &prefix_digest).exists(),
        "the 10-byte prefix was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_content_length_leaves_sessions_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let b = Berth::start(dir.path(), "");
    let data = content(2, 1000);

    // PATCH promising 1000 bytes, sending 10, then closing.
    let location = start_session(&b, "short").await;
    {
        let mut c = Conn::connect(b.addr).await.unwrap();
        let head = c.head(
            "PATCH",
            &location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", "1000"),
            ],
        );
        c.write(&head).await.unwrap();
        c.write(&data[..10]).await.unwrap();
        // Cut only once the handler holds the 10 bytes: it appends what arrives as it arrives
        // and holds the session's lock until its request ends, so from here on any other
        // append to the session waits for it.
        assert!(
            eventually(Duration::from_secs(10), async || {
                session_size(&b, &location).await == 10
            })
            .await,
            "the 10 bytes sent were not in the session after 10 s, the PATCH still open"
        );
    }
    // Queued behind the cut handler on the session's lock: its size is what that handler
    // committed, and nothing changes the session after it.
    let size = settled_size(&b, &location).await;
    assert_eq!(
        session_size(&b, &location).await,
        size,
        "GET disagrees with the empty PATCH just answered"
    );
    eprintln!("PATCH cut after 10 of 1000 promised bytes: the session holds {size} bytes");
    assert!(size == 0 || size == 10, "the session claims {size} bytes");
    resume_and_finish(&b, &location, &data, size).await;

    // PATCH promising 10 bytes, sending 1000.
    let location = start_session(&b, "long").await;
    {
        let mut c = Conn::connect(b.addr).await.unwrap();
        let mut wire = c.head(
            "PATCH",
            &location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", "10"),
            ],
        );
        wire.extend_from_slice(&data);
        c.write(&wire).await.unwrap();
        let r = c.reader.response(false).await.unwrap();
        assert_eq!(r.status, 202, "{}", r.describe());
        assert_eq!(r.header("range"), Some("0-9"));
        let next = tokio::time::timeout(Duration::from_secs(10), c.reader.response(false)).await;
        if let Ok(Ok(r)) = next {
            assert!(
                (400..500).contains(&r.status),
                "the excess bytes as a request: {}",
                r.describe()
            );
        }
    }
    assert_eq!(session_size(&b, &location).await, 10);
    resume_and_finish(&b, &location, &data, 10).await;
}
