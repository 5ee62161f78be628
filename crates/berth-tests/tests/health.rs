//! Distribution's `health` section on the real binary: a check that fails takes the whole
//! registry out of service (every request 503, `/debug/health` on the debug listener naming
//! the check and its error, `/readyz` 503) and its recovery puts it back; `/healthz` answers
//! throughout. The storage is broken the way root cannot bypass (tests run as root, for whom
//! permissions are no obstacle): the root directory is renamed away and a file takes its
//! place.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use berth_tests::client::{Client, Resp};
use berth_tests::process::{Berth, Setup};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a state change may take to show: many check intervals (200 ms) on a busy machine.
const SETTLE: Duration = Duration::from_secs(5);

/// Starts berth with these top-level sections and a debug listener on a port of its own.
fn start(dir: &std::path::Path, top: &str) -> (Berth, Client, Client) {
    let berth = Berth::start_setup(
        dir,
        &Setup {
            top: top.to_owned(),
            http: "debug:\n  addr: 127.0.0.1:0".to_owned(),
            ..Setup::default()
        },
    );
    let debug = debug_addr(&berth);
    let main = Client::without_reuse(&berth.base()).unwrap();
    let debug = Client::without_reuse(&format!("http://{debug}")).unwrap();
    (berth, main, debug)
}

/// The debug listener's address, from its log line.
fn debug_addr(berth: &Berth) -> SocketAddr {
    let deadline = Instant::now() + SETTLE;
    loop {
        let log = berth.log_text();
        let found = log
            .lines()
            .filter(|l| l.contains("debug server"))
            .find_map(|l| {
                let rest = l.split_once("addr=")?.1;
                rest.split_whitespace().next()?.parse().ok()
            });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no debug server in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn get(c: &Client, path: &str) -> Resp {
    c.send(Method::GET, path, &[], None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Waits until `GET path` answers `status`; the last answer.
async fn until(c: &Client, path: &str, status: u16) -> Resp {
    let deadline = Instant::now() + SETTLE;
    loop {
        let r = get(c, path).await;
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} still answers {} after {SETTLE:?}, not {status}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// What every request is answered while a check fails: Distribution's body.
fn assert_refused(r: &Resp) {
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let v = json(r);
    assert_eq!(v["errors"][0]["code"], "UNAVAILABLE", "{v}");
    assert_eq!(
        v["errors"][0]["detail"], "health check failed: please see /debug/health",
        "{v}"
    );
}

async fn assert_healthy(main: &Client, debug: &Client) {
    assert_eq!(get(main, "/healthz").await.status, 200);
    until(main, "/readyz", 200).await;
    until(main, "/v2/", 200).await;
    let d = until(debug, "/debug/health", 200).await;
    assert_eq!(json(&d), serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_storage_root_takes_berth_out_of_service_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (berth, main, debug) = start(
        dir.path(),
        "health:\n  storagedriver:\n    enabled: true\n    interval: 200ms\n    threshold: 1\n",
    );
    assert_healthy(&main, &debug).await;
    let log = berth.log_text();
    assert!(
        log.lines().any(
            |l| l.contains("health check configured") && l.contains("storagedriver_filesystem")
        ),
        "{log}"
    );
    // The debug listener serves /debug/health; the main one does not.
    assert_eq!(get(&main, "/debug/health").await.status, 404);

    // The root becomes a file: no listing of it can succeed, whoever asks.
    let away = dir.path().join("root.away");
    std::fs::rename(&berth.root, &away).unwrap();
    std::fs::write(&berth.root, b"not a directory").unwrap();

    let r = until(&main, "/readyz", 503).await;
    assert_eq!(json(&r)["status"], "unavailable");
    let d = until(&debug, "/debug/health", 503).await;
    let failing = json(&d);
    let error = failing["storagedriver_filesystem"]
        .as_str()
        .unwrap_or_else(|| panic!("the storage check is not reported: {failing}"));
    assert!(!error.is_empty());
    assert_eq!(failing.as_object().map(|o| o.len()), Some(1), "{failing}");
    assert_refused(&until(&main, "/v2/", 503).await);
    assert_refused(&get(&main, "/v2/_catalog").await);
    assert_refused(&get(&main, "/v2/some/repo/manifests/latest").await);
    assert_refused(&get(&main, "/").await);
    assert_eq!(
        get(&main, "/healthz").await.status,
        200,
        "the process still answers"
    );

    std::fs::remove_file(&berth.root).unwrap();
    std::fs::rename(&away, &berth.root).unwrap();
    assert_healthy(&main, &debug).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_check_takes_berth_out_of_rotation_before_auth_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let down = dir.path().join("maintenance");
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("secret", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let (_berth, main, debug) = start(
        dir.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: r\n    path: {}\nhealth:\n  file:\n    - file: {}\n      interval: 200ms\n",
            htpasswd.display(),
            down.display()
        ),
    );
    // The probes need no credentials; the API does.
    assert_eq!(get(&main, "/healthz").await.status, 200);
    assert_eq!(get(&main, "/readyz").await.status, 200);
    assert_eq!(get(&main, "/v2/").await.status, 401);

    std::fs::write(&down, b"").unwrap();
    let r = until(&main, "/readyz", 503).await;
    assert_eq!(json(&r)["status"], "unavailable");
    // The gate comes before auth, as Distribution's health handler wraps its whole app.
    assert_refused(&until(&main, "/v2/", 503).await);
    let d = until(&debug, "/debug/health", 503).await;
    let key = down.display().to_string();
    assert_eq!(json(&d), serde_json::json!({ key: "file exists" }));
    assert_eq!(get(&main, "/healthz").await.status, 200);

    std::fs::remove_file(&down).unwrap();
    until(&main, "/readyz", 200).await;
    until(&main, "/v2/", 401).await;
    assert_eq!(
        json(&until(&debug, "/debug/health", 200).await),
        serde_json::json!({})
    );
}

/// A tiny HTTP server answering every request with the status in `status`, and counting the
/// requests that carried `X-Check: yes`.
async fn flipping_server(status: Arc<AtomicU16>, marked: Arc<AtomicU16>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let status = status.clone();
            let marked = marked.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if head.starts_with("head /ready ") && head.contains("\r\nx-check: yes\r\n") {
                    marked.fetch_add(1, Ordering::Relaxed);
                }
                let code = status.load(Ordering::Relaxed);
                let answer =
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_follows_its_downstream_service() {
    let dir = tempfile::tempdir().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let marked = Arc::new(AtomicU16::new(0));
    let upstream = flipping_server(status.clone(), marked.clone()).await;
    let uri = format!("http://{upstream}/ready");
    let (_berth, main, debug) = start(
        dir.path(),
        &format!(
            "health:\n  http:\n    - uri: {uri}\n      headers:\n        X-Check: [yes]\n      timeout: 2s\n      interval: 200ms\n      threshold: 2\n"
        ),
    );
    assert_healthy(&main, &debug).await;
    assert!(
        marked.load(Ordering::Relaxed) > 0,
        "no HEAD with the configured header"
    );

    status.store(500, Ordering::Relaxed);
    assert_refused(&until(&main, "/v2/", 503).await);
    let d = until(&debug, "/debug/health", 503).await;
    assert_eq!(
        json(&d),
        serde_json::json!({
            uri.clone(): format!("{uri}: downstream service returned unexpected status: 500")
        })
    );
    assert_eq!(until(&main, "/readyz", 503).await.status, 503);

    status.store(200, Ordering::Relaxed);
    assert_healthy(&main, &debug).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_fails_once_its_address_refuses_connections() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (_berth, main, debug) = start(
        dir.path(),
        &format!("health:\n  tcp:\n    - addr: {addr}\n      timeout: 1s\n      interval: 200ms\n"),
    );
    assert_healthy(&main, &debug).await;
    drop(listener);
    assert_refused(&until(&main, "/v2/", 503).await);
    let d = json(&until(&debug, "/debug/health", 503).await);
    let error = d[addr.to_string()].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!("{addr}: connection failed: ")),
        "{d}"
    );
}
