//! Graceful shutdown and stalled bodies, against the real binary and real signals.
//!
//! - `http.draintimeout: 10s`: SIGTERM in the middle of a slowly streamed upload (a piece
//!   every 200 ms for 2 s), a slowly read large download and an idle keep-alive connection.
//!   The listener must stop accepting at once, the upload complete (201 for a monolithic push,
//!   202 for a PATCH), the download arrive intact, and the process exit 0 as soon as they are
//!   done, well within the drain timeout; the data must be there after a restart.
//! - `http.draintimeout: 1s` with a request that never finishes: the process exits after about
//!   one second anyway.
//! - `http.bodyidletimeout: 2s`: a PATCH that stops sending mid-body is cut off after about
//!   two seconds; the session then reports (GET, 204, `Range`) exactly the bytes received and
//!   resumes from there to a correct blob.
//!
//! The tests are timing-sensitive on a shared two-core machine, so they run one at a time.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::net::TcpStream;
use std::time::{Duration, Instant};

use berth_tests::process::Berth;
use berth_tests::raw::{Conn, Resp};
use berth_tests::serially;
use berth_tests::{content, sha256};
use tokio::io::AsyncWriteExt;

async fn request(b: &Berth, method: &str, target: &str, body: &[u8]) -> Resp {
    let mut c = Conn::connect(b.addr).await.unwrap();
    c.request(method, target, &[], body).await.unwrap()
}

async fn start_session(b: &Berth, repo: &str) -> String {
    let r = request(b, "POST", &format!("/v2/{repo}/blobs/uploads/"), b"").await;
    assert_eq!(r.status, 202, "{}", r.describe());
    format!(
        "/v2/{repo}/blobs/uploads/{}",
        r.header("docker-upload-uuid").unwrap()
    )
}

/// Streams `data` as a chunked body in `pieces` pieces, one every `every`, after `head`;
/// returns the response.
async fn stream_upload(
    mut c: Conn,
    head: Vec<u8>,
    data: Vec<u8>,
    pieces: usize,
    every: Duration,
) -> Resp {
    c.write(&head).await.unwrap();
    let size = data.len().div_ceil(pieces);
    for piece in data.chunks(size) {
        let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
        framed.extend_from_slice(piece);
        framed.extend_from_slice(b"\r\n");
        c.write(&framed).await.unwrap();
        tokio::time::sleep(every).await;
    }
    c.write(b"0\r\n\r\n").await.unwrap();
    c.reader.response(false).await.unwrap()
}

#[test]
fn sigterm_drains_requests_in_flight() {
    serially(sigterm_drains_requests_in_flight_());
}

async fn sigterm_drains_requests_in_flight_() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Berth::start(dir.path(), "draintimeout: 10s");

    // A 32 MiB blob to download slowly.
    let big = content(10, 32 * 1024 * 1024);
    let big_digest = sha256(&big);
    let r = request(
        &b,
        "POST",
        &format!("/v2/drain/blobs/uploads/?digest={big_digest}"),
        &big,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.describe());
    let session = start_session(&b, "drain").await;

    let pushed = content(11, 640 * 1024);
    let pushed_digest = sha256(&pushed);
    let patched = content(12, 640 * 1024);

    let t0 = Instant::now();
    // Monolithic push, streamed: 10 pieces, one every 200 ms.
    let c = Conn::connect(b.addr).await.unwrap();
    let head = c.head(
        "POST",
        &format!("/v2/drain/blobs/uploads/?digest={pushed_digest}"),
        &[("Transfer-Encoding", "chunked")],
    );
    let push = tokio::spawn(stream_upload(
        c,
        head,
        pushed.clone(),
        10,
        Duration::from_millis(200),
    ));
    // PATCH on a session, streamed the same way.
    let c = Conn::connect(b.addr).await.unwrap();
    let head = c.head(
        "PATCH",
        &session,
        &[
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "application/octet-stream"),
        ],
    );
    let patch = tokio::spawn(stream_upload(
        c,
        head,
        patched.clone(),
        10,
        Duration::from_millis(200),
    ));
    // The download, read 1 MiB every 100 ms (about 3 s).
    let mut c = Conn::connect(b.addr).await.unwrap();
    let wire = c.head("GET", &format!("/v2/drain/blobs/{big_digest}"), &[]);
    c.write(&wire).await.unwrap();
    let download = tokio::spawn(async move {
        let r = c
            .reader
            .response_paced(false, 1024 * 1024, Duration::from_millis(100))
            .await;
        (r, Instant::now())
    });
    // An idle keep-alive connection: it must not hold the shutdown up.
    let mut idle = Conn::connect(b.addr).await.unwrap();
    let r = idle.request("GET", "/v2/", &[], b"").await.unwrap();
    assert_eq!(r.status, 200);

    tokio::time::sleep(Duration::from_millis(700)).await;
    let signalled = Instant::now();
    b.sigterm();

    // The listener closes: a new connection is refused.
    let addr = b.addr;
    let refused_after = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Some(signalled.elapsed());
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("berth still accepted connections 5 s after SIGTERM");
    let idle_closed = idle.reader.closed_within(Duration::from_secs(2)).await;

    let push = push.await.unwrap();
    let push_done = signalled.elapsed();
    let patch = patch.await.unwrap();
    let (download, download_done) = download.await.unwrap();
    let download = download.expect("the download was cut off");

    let exit = tokio::task::spawn_blocking(move || {
        let status = b.wait_exit(Duration::from_secs(15));
        (status, signalled.elapsed(), b)
    });
    let (status, exit_after, b) = exit.await.unwrap();
    eprintln!(
        "drain: SIGTERM at {:.2} s into the transfers; new connections refused after {:.0} ms; \
         idle keep-alive closed: {idle_closed}; upload answered {} at +{:.2} s, PATCH {}; \
         32 MiB download intact at +{:.2} s; exit {:?} at +{:.2} s",
        (signalled - t0).as_secs_f64(),
        refused_after.as_secs_f64() * 1000.0,
        push.status,
        push_done.as_secs_f64(),
        patch.status,
        (download_done - signalled).as_secs_f64(),
        status.and_then(|s| s.code()),
        exit_after.as_secs_f64()
    );
    assert!(
        refused_after < Duration::from_secs(1),
        "new connections were still accepted {refused_after:?} after SIGTERM"
    );
    assert!(idle_closed, "an idle keep-alive connection was kept open");
    assert_eq!(push.status, 201, "{}", push.describe());
    assert_eq!(
        push.header("docker-content-digest"),
        Some(pushed_digest.as_str())
    );
    assert_eq!(patch.status, 202, "{}", patch.describe());
    let want_range = format!("0-{}", patched.len() - 1);
    assert_eq!(patch.header("range"), Some(want_range.as_str()));
    assert_eq!(download.status, 200);
    assert!(download.body == big, "the download was not intact");
    let status = status.expect("berth did not exit within 15 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", b.log_text());
    assert!(
        exit_after < Duration::from_secs(10),
        "berth took {exit_after:?}, longer than the drain timeout"
    );
    assert!(
        exit_after < (download_done - signalled) + Duration::from_secs(2),
        "berth lingered {exit_after:?} after its last request ended"
    );
    drop(b);

    // What was acknowledged is there after a restart.
    let b = Berth::start(dir.path(), "");
    let r = request(&b, "HEAD", &format!("/v2/drain/blobs/{pushed_digest}"), b"").await;
    assert_eq!(r.status, 200, "the pushed blob is gone after the restart");
    let r = request(&b, "GET", &session, b"").await;
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_eq!(r.header("range"), Some(want_range.as_str()));
}

#[test]
fn drain_timeout_bounds_a_request_that_never_ends() {
    serially(drain_timeout_bounds_a_request_that_never_ends_());
}

async fn drain_timeout_bounds_a_request_that_never_ends_() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Berth::start(dir.path(), "draintimeout: 1s");
    let session = start_session(&b, "stuck").await;
    // A PATCH promising 1 MiB that sends 1 KiB and then nothing, and a download nobody reads.
    let mut stuck = Conn::connect(b.addr).await.unwrap();
    let head = stuck.head(
        "PATCH",
        &session,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", "1048576"),
        ],
    );
    stuck.write(&head).await.unwrap();
    stuck.write(&[7u8; 1024]).await.unwrap();
    let big = content(20, 16 * 1024 * 1024);
    let digest = sha256(&big);
    let r = request(
        &b,
        "POST",
        &format!("/v2/stuck/blobs/uploads/?digest={digest}"),
        &big,
    )
    .await;
    assert_eq!(r.status, 201);
    let mut unread = Conn::connect(b.addr).await.unwrap();
    let wire = unread.head("GET", &format!("/v2/stuck/blobs/{digest}"), &[]);
    unread.write(&wire).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    b.sigterm();
    let (status, took, b) = tokio::task::spawn_blocking(move || {
        let s = b.wait_exit(Duration::from_secs(10));
        (s, signalled.elapsed(), b)
    })
    .await
    .unwrap();
    eprintln!(
        "draintimeout 1s with a stalled upload and an unread download: exit {:?} after {:.2} s",
        status.and_then(|s| s.code()),
        took.as_secs_f64()
    );
    let status = status.expect("berth did not exit within 10 s of SIGTERM");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "exit after {took:?}, not about 1 s: {}",
        b.log_text()
    );
    assert_eq!(status.code(), Some(0), "{}", b.log_text());
    drop((stuck, unread));
}

#[test]
fn stalled_body_is_cut_off_and_the_session_resumes() {
    serially(stalled_body_is_cut_off_and_the_session_resumes_());
}

async fn stalled_body_is_cut_off_and_the_session_resumes_() {
    let dir = tempfile::tempdir().unwrap();
    let b = Berth::start(dir.path(), "bodyidletimeout: 2s");
    let session = start_session(&b, "idle").await;
    let data = content(30, 1024 * 1024);
    let sent = 300 * 1024;

    let mut c = Conn::connect(b.addr).await.unwrap();
    let head = c.head(
        "PATCH",
        &session,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", "1048576"),
        ],
    );
    c.write(&head).await.unwrap();
    c.writer.write_all(&data[..sent]).await.unwrap();
    let stalled = Instant::now();
    // Then nothing: the server must give up on the body by itself.
    let answer = tokio::time::timeout(Duration::from_secs(15), c.reader.response(false)).await;
    let cut_after = stalled.elapsed();
    let answer = answer.expect("the stalled body was not cut off within 15 s");
    eprintln!(
        "bodyidletimeout 2s: stalled PATCH cut after {:.2} s with {:?}",
        cut_after.as_secs_f64(),
        answer.as_ref().map(Resp::describe)
    );
    assert!(
        cut_after >= Duration::from_millis(1800) && cut_after < Duration::from_secs(5),
        "cut after {cut_after:?}, not about 2 s"
    );
    if let Ok(r) = &answer {
        assert!(
            (400..500).contains(&r.status),
            "a stalled client is the client's fault: {}",
            r.describe()
        );
    }
    drop(c);

    let r = request(&b, "GET", &session, b"").await;
    assert_eq!(r.status, 204, "{}", r.describe());
    let want = format!("0-{}", sent - 1);
    assert_eq!(
        r.header("range"),
        Some(want.as_str()),
        "the session lost bytes"
    );

    let digest = sha256(&data);
    let range = format!("{}-{}", sent, data.len() - 1);
    let mut c = Conn::connect(b.addr).await.unwrap();
    let r = c
        .request(
            "PATCH",
            &session,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            &data[sent..],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.describe());
    let r = c
        .request("PUT", &format!("{session}?digest={digest}"), &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.describe());
    let r = request(&b, "GET", &format!("/v2/idle/blobs/{digest}"), b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body == data, "the resumed blob differs");
}
