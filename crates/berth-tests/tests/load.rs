//! Load against the real binary: 1,000 keep-alive connections at once, each doing mixed pulls
//! (blob GET and HEAD, manifest GET by tag and HEAD by digest, every body compared with what
//! was pushed) and small monolithic pushes, for 60 s. Meanwhile a separate client on its own
//! thread opens a fresh connection every 100 ms for `GET /v2/` and times it, and a sampler
//! reads `/proc/<pid>/status` and `/proc/<pid>/fd`.
//!
//! Pushes send one of 256 distinct 2 KiB blobs, so most land on a blob that already exists.
//!
//! What must hold: no error of any kind (status, body, transport, timeout), `GET /v2/` always
//! answers, RSS stays bounded, and once the clients have gone the open descriptors return to
//! the baseline (within a small slack). The figures are printed for the record.
//!
//! `BERTH_LOAD_SECS` (default 30) and `BERTH_LOAD_CONNECTIONS` (default 1000) scale it. The
//! binary is `target/release/berth` when it is newer than every source file, else the debug
//! build next to this test.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::process::{Berth, Setup};
use berth_tests::raw::{Conn, Resp, get_blocking};
use berth_tests::{content, raise_nofile, sha256};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the clients pull, as pushed.
struct Fixture {
    blobs: Vec<(String, Vec<u8>)>,
    /// (tag, digest, body)
    manifests: Vec<(String, String, Vec<u8>)>,
}

async fn setup(b: &Berth) -> Fixture {
    let mut c = Conn::connect(b.addr).await.unwrap();
    let mut blobs = Vec::new();
    for i in 0..16u64 {
        let len = [4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024][(i % 4) as usize];
        let data = content(1000 + i, len);
        let d = sha256(&data);
        let r = c
            .request(
                "POST",
                &format!("/v2/load/pull/blobs/uploads/?digest={d}"),
                &[],
                &data,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.describe());
        blobs.push((d, data));
    }
    let mut manifests = Vec::new();
    for i in 0..8usize {
        let (config, layer) = (&blobs[i], &blobs[i + 8]);
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": config.0, "size": config.1.len()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": layer.0, "size": layer.1.len()}],
        }))
        .unwrap();
        let tag = format!("t{i}");
        let r = c
            .request(
                "PUT",
                &format!("/v2/load/pull/manifests/{tag}"),
                &[("Content-Type", DOCKER_MANIFEST)],
                &body,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.describe());
        manifests.push((tag, sha256(&body), body));
    }
    Fixture { blobs, manifests }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    by_kind: [AtomicU64; 5],
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    connected: AtomicUsize,
    max_connected: AtomicUsize,
}

impl Tally {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 20 {
            first.push(e);
        }
    }
}

const KINDS: [&str; 5] = [
    "blob GET",
    "blob HEAD",
    "manifest GET",
    "manifest HEAD",
    "blob push",
];

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

async fn one(
    c: &mut Conn,
    f: &Fixture,
    kind: usize,
    pick: usize,
    push_seed: u64,
) -> Result<(), String> {
    let check = |r: &Resp, status: u16| {
        if r.status == status {
            Ok(())
        } else {
            Err(format!("status {}: {}", r.status, r.describe()))
        }
    };
    match kind {
        0 => {
            let (d, data) = &f.blobs[pick % f.blobs.len()];
            let r = c
                .request("GET", &format!("/v2/load/pull/blobs/{d}"), &[], b"")
                .await
                .map_err(|e| e.to_string())?;
            check(&r, 200)?;
            if r.body != *data {
                return Err(format!("blob {d}: body differs ({} bytes)", r.body.len()));
            }
        }
        1 => {
            let (d, data) = &f.blobs[pick % f.blobs.len()];
            let r = c
                .request("HEAD", &format!("/v2/load/pull/blobs/{d}"), &[], b"")
                .await
                .map_err(|e| e.to_string())?;
            check(&r, 200)?;
            let len = data.len().to_string();
            if r.header("content-length") != Some(len.as_str()) {
                return Err(format!("HEAD blob {d}: {}", r.describe()));
            }
        }
        2 => {
            let (tag, _, body) = &f.manifests[pick % f.manifests.len()];
            let r = c
                .request(
                    "GET",
                    &format!("/v2/load/pull/manifests/{tag}"),
                    &[("Accept", DOCKER_MANIFEST)],
                    b"",
                )
                .await
                .map_err(|e| e.to_string())?;
            check(&r, 200)?;
            if r.body != *body || r.header("content-type") != Some(DOCKER_MANIFEST) {
                return Err(format!("manifest {tag}: {}", r.describe()));
            }
        }
        3 => {
            let (_, d, _) = &f.manifests[pick % f.manifests.len()];
            let r = c
                .request(
                    "HEAD",
                    &format!("/v2/load/pull/manifests/{d}"),
                    &[("Accept", DOCKER_MANIFEST)],
                    b"",
                )
                .await
                .map_err(|e| e.to_string())?;
            check(&r, 200)?;
            if r.header("docker-content-digest") != Some(d.as_str()) {
                return Err(format!("HEAD manifest {d}: {}", r.describe()));
            }
        }
        _ => {
            let data = content(push_seed, 2048);
            let d = sha256(&data);
            let r = c
                .request(
                    "POST",
                    &format!("/v2/load/push/blobs/uploads/?digest={d}"),
                    &[],
                    &data,
                )
                .await
                .map_err(|e| e.to_string())?;
            check(&r, 201)?;
        }
    }
    Ok(())
}

async fn client(
    id: u64,
    addr: SocketAddr,
    f: Arc<Fixture>,
    t: Arc<Tally>,
    start_together: Arc<tokio::sync::Barrier>,
    mut deadline: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
) {
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut conn = None;
    for _ in 0..20 {
        match Conn::connect(addr).await {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let Some(mut c) = conn else {
        t.error(format!("client {id}: could not connect"));
        start_together.wait().await;
        return;
    };
    let now = t.connected.fetch_add(1, Ordering::SeqCst) + 1;
    t.max_connected.fetch_max(now, Ordering::SeqCst);
    // Every connection is open before any request is sent; the clock starts then.
    start_together.wait().await;
    let deadline = loop {
        if let Some(d) = *deadline.borrow_and_update() {
            break d;
        }
        if deadline.changed().await.is_err() {
            return;
        }
    };
    while tokio::time::Instant::now() < deadline {
        let roll = next(&mut rng) % 100;
        let kind = match roll {
            0..35 => 0,
            35..45 => 1,
            45..70 => 2,
            70..90 => 3,
            _ => 4,
        };
        let pick = next(&mut rng) as usize;
        // Pushes draw from 256 distinct blobs: each still goes through the whole upload path
        // (session, fsync, hash, verify, link), and the storage stays small enough to delete
        // quickly afterwards (this ext4 is mounted with `discard`: ~1 ms per file removed).
        let seed = 5000 + (pick % 256) as u64;
        let result = tokio::time::timeout(REQUEST_TIMEOUT, one(&mut c, &f, kind, pick, seed)).await;
        t.requests.fetch_add(1, Ordering::Relaxed);
        t.by_kind[kind].fetch_add(1, Ordering::Relaxed);
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        if let Some(e) = failure {
            t.error(format!("client {id}, {}: {e}", KINDS[kind]));
            match Conn::connect(addr).await {
                Ok(fresh) => c = fresh,
                Err(e) => {
                    t.error(format!("client {id}: reconnect failed: {e}"));
                    break;
                }
            }
        }
    }
    t.connected.fetch_sub(1, Ordering::SeqCst);
}

/// `GET /v2/` on a fresh connection: the latency, or why it failed.
fn probe(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    match get_blocking(addr, "/v2/")? {
        200 => Ok(started.elapsed()),
        status => Err(format!("answer {status}")),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn thousand_connections_mixed_load() {
    let secs = env_or("BERTH_LOAD_SECS", 30);
    let conns = env_or("BERTH_LOAD_CONNECTIONS", 1000);
    let limit = raise_nofile(conns + 1024);
    assert!(
        limit >= conns + 256,
        "RLIMIT_NOFILE is {limit}, too low for {conns} connections"
    );
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let b = Berth::start_setup(
        dir.path(),
        &Setup {
            prefer_release: true,
            ..Setup::default()
        },
    );
    eprintln!(
        "load: berth started after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fixture = Arc::new(rt.block_on(setup(&b)));
    std::thread::sleep(Duration::from_millis(300));
    let fds_before = b.fds();
    let mem_before = b.memory();

    let stop = Arc::new(AtomicBool::new(false));
    let pid = b.pid();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut peak_rss, mut peak_fds) = (0u64, 0usize);
            while !stop.load(Ordering::SeqCst) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                peak_rss = peak_rss.max(rss);
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                peak_fds = peak_fds.max(fds);
                std::thread::sleep(Duration::from_millis(200));
            }
            (peak_rss, peak_fds)
        })
    };
    let addr = b.addr;
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match probe(addr) {
                    Ok(l) => latencies.push(l),
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (latencies, failures)
        })
    };

    let tally = Arc::new(Tally::default());
    let (elapsed, connected_peak) = rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(conns as usize + 1));
        let (start, deadline) = tokio::sync::watch::channel(None);
        let tasks: Vec<_> = (0..conns)
            .map(|id| {
                tokio::spawn(client(
                    id,
                    addr,
                    fixture.clone(),
                    tally.clone(),
                    barrier.clone(),
                    deadline.clone(),
                ))
            })
            .collect();
        barrier.wait().await;
        eprintln!(
            "load: {conns} connections open after {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let load_started = Instant::now();
        let connected_peak = tally.max_connected.load(Ordering::SeqCst);
        start
            .send(Some(
                tokio::time::Instant::now() + Duration::from_secs(secs),
            ))
            .unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        (load_started.elapsed(), connected_peak)
    });
    eprintln!(
        "load: clients done after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::SeqCst);
    let (peak_rss_sampled, peak_fds) = sampler.join().unwrap();
    let (mut latencies, probe_failures) = prober.join().unwrap();
    let mem_after = b.memory();

    // Descriptors go back to the baseline once the clients have gone.
    let settle = Instant::now();
    let mut fds_after = b.fds();
    while fds_after > fds_before + 8 && settle.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
        fds_after = b.fds();
    }

    latencies.sort();
    let requests = tally.requests.load(Ordering::SeqCst);
    let errors = tally.errors.load(Ordering::SeqCst);
    let by_kind: BTreeMap<&str, u64> = KINDS
        .iter()
        .zip(&tally.by_kind)
        .map(|(k, n)| (*k, n.load(Ordering::SeqCst)))
        .collect();
    let peak_rss = peak_rss_sampled.max(mem_after.hwm_kib);
    eprintln!(
        "load ({}): {conns} connections ({connected_peak} open at once) for {:.1} s: {requests} \
         requests ({:.0}/s) {by_kind:?}, {errors} errors; RSS {} MiB before, peak {} MiB, {} MiB \
         after; fds {fds_before} before, peak {peak_fds}, {fds_after} after ({:.1} s to settle); \
         GET /v2/ from a separate client: {} probes, {} failed, p50 {:.1} ms, p95 {:.1} ms, p99 \
         {:.1} ms, max {:.1} ms",
        b.bin.display(),
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        mem_before.rss_kib / 1024,
        peak_rss / 1024,
        mem_after.rss_kib / 1024,
        settle.elapsed().as_secs_f64(),
        latencies.len(),
        probe_failures.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.95).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
    let first_errors = tally.first_errors.lock().unwrap().clone();
    assert_eq!(
        errors,
        0,
        "errors under load, the first ones:\n{}",
        first_errors.join("\n")
    );
    assert_eq!(
        connected_peak, conns as usize,
        "not every connection was open at once"
    );
    assert!(requests > conns, "only {requests} requests in {secs} s");
    assert!(
        probe_failures.is_empty(),
        "GET /v2/ failed under load: {probe_failures:?}"
    );
    assert!(!latencies.is_empty(), "no GET /v2/ probe completed");
    assert!(
        peak_rss < 1024 * 1024,
        "peak RSS {} MiB: not bounded",
        peak_rss / 1024
    );
    assert!(
        fds_after <= fds_before + 8,
        "{fds_after} descriptors open after the load, {fds_before} before"
    );
    assert!(
        b.log_text().lines().all(|l| !l.contains("panicked")),
        "{}",
        b.log_text()
    );
    eprintln!("load: checked after {:.1} s", t0.elapsed().as_secs_f64());
    drop(rt);
    eprintln!(
        "load: runtime dropped after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(b);
    eprintln!(
        "load: berth stopped after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(dir);
    eprintln!(
        "load: storage removed after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
