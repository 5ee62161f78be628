//! berth as a pull-through cache (issue 17), against real upstream registries on loopback: a
//! second berth (plain, with htpasswd, with its own token server) and Debian's Distribution
//! (`/usr/bin/docker-registry`), with the fault-injecting proxy of the kit
//! ([`berth_tests::faulty`]) between berth and the upstream to count upstream requests and to
//! answer 429 and 5xx, stall, cut and corrupt bodies, and refuse connections.
//!
//! What is checked is what a client and the upstream see: `X-Berth-Cache` and `Warning` on
//! every manifest and blob answer, the bytes (always compared with what was pushed upstream),
//! the error codes, and the upstream requests the proxy counted (one GET per blob however many
//! clients ask, one HEAD and no GET to revalidate a tag); and what an operator sees: the WARN
//! lines, `/metrics`, the storage tree (sound after failed fills and evictions, within
//! `maxsize`, without what `ttl` expired). Content is generated from seeds and pushed to the
//! upstream with the kit's client; the 256 MiB blob exists once in memory, and its 32 readers
//! compare what they receive with it piece by piece as it streams.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_tests::client::{Client, Resp, UploadKind};
use berth_tests::faulty::{Fault, Faulty, Rule};
use berth_tests::process::{Berth, Setup, listening_addr, spawn};
use berth_tests::{Desc, content, image_manifest, sha256};
use bytes::Bytes;
use reqwest::Method;

/// An image pushed to an upstream: its manifest and every blob it names.
#[derive(Clone)]
struct Image {
    manifest: Vec<u8>,
    digest: String,
    /// Config first, then the layers.
    blobs: Vec<(String, Bytes)>,
}

impl Image {
    /// Blob `idx` as `(digest, bytes)`: 0 is the config, then the layers in order.
    fn blob(&self, idx: usize) -> &(String, Bytes) {
        &self.blobs[idx]
    }
}

/// Pushes an image to `repo:tag` on the registry `client` talks to: a 700-byte config and one
/// layer of each size in `layers`, every byte from `seed`. Uploads are chunked (POST, PATCHes,
/// PUT with the last chunk), which Distribution and berth both take.
async fn push_image(client: &Client, repo: &str, tag: &str, seed: u64, layers: &[usize]) -> Image {
    let mut blobs = Vec::new();
    let sizes = std::iter::once(700).chain(layers.iter().copied());
    for (idx, size) in sizes.enumerate() {
        let data = Bytes::from(content(seed * 1000 + idx as u64, size));
        let kind = UploadKind::Chunked {
            chunk: 4 << 20,
            last_in_put: true,
        };
        let digest = client
            .push_blob(repo, &data, kind, &|_| {})
            .await
            .unwrap_or_else(|e| panic!("pushing a blob of {repo}: {e}"));
        blobs.push((digest, data));
    }
    let descs: Vec<Desc> = blobs.iter().map(|(_, d)| Desc::of(d)).collect();
    let manifest = image_manifest(
        &descs[0],
        &descs[1..],
        &format!("{repo}:{tag}:{seed}"),
        false,
    );
    let digest = client
        .put_manifest(repo, tag, &manifest)
        .await
        .unwrap_or_else(|e| panic!("pushing {repo}:{tag}: {e}"));
    Image {
        manifest,
        digest,
        blobs,
    }
}

/// Uploads `data` in one PATCH streamed from slices of it (no copy of a large blob), then
/// `PUT ?digest=`: its digest.
async fn push_streamed(client: &Client, repo: &str, data: &Bytes) -> String {
    let digest = sha256(data);
    let session = client.start_upload(repo).await.unwrap();
    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
        .step_by(1 << 20)
        .map(|at| Ok(data.slice(at..(at + (1 << 20)).min(data.len()))))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let r = client
        .send(Method::PATCH, &session, &[], Some(body))
        .await
        .unwrap();
    assert_eq!(r.status, 202, "PATCH {session}: {}", describe(&r));
    let session = client.path_of(r.h("location")).unwrap();
    client
        .finish(&session, &digest, Bytes::new())
        .await
        .unwrap();
    digest
}

/// `X-Berth-Cache` of an answer.
fn cache(r: &Resp) -> String {
    r.h("x-berth-cache").to_owned()
}

/// The error code and message of a JSON error body.
fn error_of(r: &Resp) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    (
        v["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn describe(r: &Resp) -> String {
    format!(
        "HTTP {} X-Berth-Cache={:?} Warning={:?} body={}",
        r.status,
        r.h("x-berth-cache"),
        r.h("warning"),
        String::from_utf8_lossy(&r.body[..r.body.len().min(600)])
    )
}

/// `GET` the manifest `repo:reference`, expecting `image`'s bytes: the answer.
async fn get_manifest(client: &Client, repo: &str, reference: &str, image: &Image) -> Resp {
    let r = client.get_manifest(repo, reference).await.unwrap();
    assert_eq!(r.status, 200, "GET {repo}:{reference}: {}", describe(&r));
    assert_eq!(
        r.body[..],
        image.manifest[..],
        "GET {repo}:{reference}: not the upstream's manifest"
    );
    assert_eq!(r.h("docker-content-digest"), image.digest);
    r
}

/// `GET` one blob, expecting `data`: the answer.
async fn get_blob(client: &Client, repo: &str, digest: &str, data: &[u8]) -> Resp {
    let r = client
        .send(
            Method::GET,
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "GET {repo} blob {digest}: {}", describe(&r));
    assert!(
        r.body[..] == data[..],
        "GET {repo} blob {digest}: {} bytes, not the upstream's {} ({})",
        r.body.len(),
        data.len(),
        sha256(&r.body)
    );
    r
}

/// Pulls `image` as a client does (manifest by `reference`, then every blob), checking every
/// byte: `X-Berth-Cache` of the manifest, then of each blob.
async fn pull(
    client: &Client,
    repo: &str,
    reference: &str,
    image: &Image,
) -> (String, Vec<String>) {
    let m = get_manifest(client, repo, reference, image).await;
    let mut blobs = Vec::new();
    for (digest, data) in &image.blobs {
        blobs.push(cache(&get_blob(client, repo, digest, data).await));
    }
    (cache(&m), blobs)
}

/// A berth with the default setup and the top-level YAML `top` (a `proxy` or `auth` section),
/// its config, log and storage in `<dir>/<name>`.
fn berth(dir: &Path, name: &str, top: &str) -> Berth {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    Berth::start_setup(
        &dir,
        &Setup {
            top: top.to_owned(),
            ..Setup::default()
        },
    )
}

/// A berth over another berth's storage root (the upstream restarted with `auth`).
fn berth_on(root: &Path, dir: &Path, name: &str, top: &str) -> Berth {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    Berth::start_setup(
        &dir,
        &Setup {
            top: top.to_owned(),
            root: Some(root.to_owned()),
            ..Setup::default()
        },
    )
}

/// A `proxy` section: an entry of `upstreams` for each `(prefix, remoteurl, extra keys)`
/// (the keys as unindented YAML lines), and the top-level `proxy` keys `proxy_extra`.
fn proxy_section(upstreams: &[(&str, &str, &str)], proxy_extra: &str) -> String {
    let mut y = String::from("proxy:\n");
    for line in proxy_extra.lines().filter(|l| !l.trim().is_empty()) {
        y.push_str(&format!("  {line}\n"));
    }
    if !upstreams.is_empty() {
        y.push_str("  upstreams:\n");
    }
    for (prefix, url, extra) in upstreams {
        y.push_str(&format!("    - prefix: {prefix}\n      remoteurl: {url}\n"));
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            y.push_str(&format!("      {line}\n"));
        }
    }
    y
}

/// Debian's Distribution on a port the kernel picks; killed when dropped.
struct Distribution {
    child: Child,
    addr: SocketAddr,
}

/// Where Debian installs Distribution.
const DISTRIBUTION: &str = "/usr/bin/docker-registry";

/// False (with a message) when Distribution is not installed; under CI (`CI=true`), where a
/// skipped test would go unnoticed, that fails instead.
fn have_distribution() -> bool {
    if Path::new(DISTRIBUTION).is_file() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "CI=true and {DISTRIBUTION} is missing (scripts/install-deps.sh installs it)"
    );
    println!("SKIPPED: {DISTRIBUTION} is missing (apt-get install docker-registry)");
    false
}

impl Distribution {
    fn start(dir: &Path) -> Distribution {
        let dir = dir.join("distribution");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yml");
        let log = dir.join("registry.log");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.join("root").display()
            ),
        )
        .unwrap();
        let mut child = spawn(Path::new(DISTRIBUTION), &config, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = listening_addr(&text) {
                return Distribution { child, addr };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("docker-registry exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not listening after 30 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An htpasswd file with `alice:<password>`.
fn htpasswd(dir: &Path, password: &str) -> PathBuf {
    let path = dir.join("htpasswd");
    let hash = bcrypt::hash(password, 4).unwrap();
    std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
    path
}

/// Bytes of every file under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Every blob under `root` hashes to its name and every link points at a blob that exists:
/// what a fill that failed, or an eviction, must leave behind.
fn assert_tree_sound(root: &Path, what: &str) {
    let report = berth_tests::disk::Checker::new().check(root);
    assert!(
        report.problems.is_empty(),
        "{what}: the storage tree: {:#?}",
        report.problems
    );
}

/// Where Distribution's layout keeps a blob's bytes under a storage root.
fn blob_data(root: &Path, digest: &str) -> PathBuf {
    let hex = berth_tests::hex_of(digest);
    root.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// The debug listener's address, from berth's "berth debug server listening" line.
fn debug_addr(berth: &Berth) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = berth.log_text();
        let found = log
            .lines()
            .filter(|l| l.contains("debug server listening"))
            .find_map(|l| {
                l.split_once("addr=")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
        if let Some(addr) = found {
            return addr;
        }
        assert!(Instant::now() < deadline, "no debug listener line:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The value of the sample of `metric` whose labels include every one of `labels`
/// (`name="value"`), 0 when there is none.
fn sample(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == metric && labels.iter().all(|label| rest.contains(label)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// What became of a streamed blob GET.
#[derive(Debug)]
enum Outcome {
    /// An answer other than 200.
    Refused(u16, String),
    /// 200 and a whole body (as long as `Content-Length` said).
    Complete(Vec<u8>),
    /// 200, then the connection ended early (bytes received, the error).
    Cut(usize, String),
}

/// A reqwest client that opens a connection per request (a cut answer says nothing about the
/// next).
fn fresh_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn get_outcome(http: &reqwest::Client, url: &str) -> Outcome {
    let mut r = match http.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Cut(0, format!("no answer: {e:?}")),
    };
    if r.status() != 200 {
        let status = r.status().as_u16();
        return Outcome::Refused(status, r.text().await.unwrap_or_default());
    }
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => return Outcome::Complete(body),
            Err(e) => return Outcome::Cut(body.len(), format!("{e:?}")),
        }
    }
}

/// Cold pull, then warm pull of a four-layer image through a prefix; pulls by digest ask the
/// upstream nothing; upstream 404s and names outside the allow-list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_then_warm_pull_of_a_multi_layer_image() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let image = push_image(
        &up,
        "team/app",
        "v1",
        1,
        &[3 << 20, 1 << 20, 200 << 10, 10 << 10],
    )
    .await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "repositories: [\"team/*\"]")], ""),
    );
    let c = Client::new(&cache_berth.base()).unwrap();

    let t = Instant::now();
    pull(&up, "team/app", "v1", &image).await;
    let direct = t.elapsed();

    // HEAD of a blob not cached yet: the upstream's size, and nothing fetched.
    let (layer, layer_data) = image.blob(1);
    let head = c
        .send(
            Method::HEAD,
            &format!("/v2/up/team/app/blobs/{layer}"),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(head.status, 200, "{}", describe(&head));
    assert_eq!(head.h("content-length"), layer_data.len().to_string());
    assert_eq!(faulty.count("GET", &format!("/blobs/{layer}")), 0);

    let t = Instant::now();
    let (m, blobs) = pull(&c, "up/team/app", "v1", &image).await;
    let cold = t.elapsed();
    assert_eq!(m, "miss", "cold manifest");
    assert!(blobs.iter().all(|b| b == "miss"), "cold blobs: {blobs:?}");
    for (digest, _) in &image.blobs {
        assert_eq!(
            faulty.count("GET", &format!("/v2/team/app/blobs/{digest}")),
            1
        );
    }

    let before = faulty.seen().len();
    let t = Instant::now();
    let (m, blobs) = pull(&c, "up/team/app", "v1", &image).await;
    let warm = t.elapsed();
    assert_eq!(
        m, "revalidated",
        "warm manifest by tag (tagttl 0: one HEAD)"
    );
    assert!(blobs.iter().all(|b| b == "hit"), "warm blobs: {blobs:?}");
    let asked: Vec<String> = faulty.seen()[before..]
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert_eq!(
        asked,
        ["HEAD /v2/team/app/manifests/v1"],
        "a warm pull by tag asks the upstream one HEAD"
    );
    eprintln!(
        "pull of a 4-layer image (4.2 MiB): from the upstream directly {direct:?}; through berth cold {cold:?}, warm {warm:?}"
    );

    // By digest: nothing asked upstream at all.
    let before = faulty.seen().len();
    let (m, blobs) = pull(&c, "up/team/app", &image.digest, &image).await;
    assert_eq!(m, "hit");
    assert!(blobs.iter().all(|b| b == "hit"), "{blobs:?}");
    let head = c
        .send(
            Method::HEAD,
            &format!("/v2/up/team/app/blobs/{}", image.blob(1).0),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!((head.status, cache(&head).as_str()), (200, "hit"));
    assert_eq!(
        head.h("content-length"),
        image.blob(1).1.len().to_string(),
        "HEAD of a cached blob"
    );
    assert_eq!(
        faulty.seen().len(),
        before,
        "{:?}",
        &faulty.seen()[before..]
    );

    // What the upstream does not have.
    let r = c.get_manifest("up/team/app", "nope").await.unwrap();
    assert_eq!(
        (r.status, error_of(&r).0.as_str()),
        (404, "MANIFEST_UNKNOWN"),
        "{}",
        describe(&r)
    );
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = c
        .send(
            Method::GET,
            &format!("/v2/up/team/app/blobs/{missing}"),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).0.as_str()),
        (404, "BLOB_UNKNOWN"),
        "{}",
        describe(&r)
    );
    // Outside the allow-list: NAME_UNKNOWN, and the upstream is not asked.
    let r = c.get_manifest("up/other/app", "v1").await.unwrap();
    assert_eq!(
        (r.status, error_of(&r).0.as_str()),
        (404, "NAME_UNKNOWN"),
        "{}",
        describe(&r)
    );
    assert_eq!(faulty.count("", "/other/"), 0, "{:?}", faulty.seen());
}

/// The upstream stops (killed, then its address refusing connections): cached content is
/// still served, byte for byte, marked stale, also by a restarted berth; what was never cached
/// is 503 UNAVAILABLE naming the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pull_with_the_upstream_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let image = push_image(&up, "team/app", "v1", 2, &[1 << 20, 64 << 10]).await;
    let never = push_image(&up, "team/app", "v2", 3, &[32 << 10]).await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "timeout: 2s")], ""),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    pull(&c, "up/team/app", "v1", &image).await;
    let tags = c.tags("up/team/app").await.unwrap();
    assert_eq!(tags, ["v1", "v2"], "the upstream's tags");

    drop(upstream);
    check_stale(&c, &image, "upstream killed").await;
    faulty.refuse().await;
    check_stale(&c, &image, "upstream refusing connections").await;

    // The upstream is named by its URL (or its prefix).
    let upstream_named = |message: &str| {
        message.contains(&faulty.addr().to_string()) || message.contains("upstream up")
    };
    let r = c.get_manifest("up/team/app", "v2").await.unwrap();
    let (code, message) = error_of(&r);
    assert_eq!(
        (r.status, code.as_str()),
        (503, "UNAVAILABLE"),
        "{}",
        describe(&r)
    );
    assert!(
        upstream_named(&message),
        "the message names the upstream: {message}"
    );
    let r = c
        .send(
            Method::GET,
            &format!("/v2/up/team/app/blobs/{}", never.blob(1).0),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).0.as_str()),
        (503, "UNAVAILABLE"),
        "{}",
        describe(&r)
    );

    let log = cache_berth.log_text();
    let addr = faulty.addr().to_string();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && (l.contains(&addr) || l.contains("upstream=up") || l.contains("upstream=\"up\""))),
        "a WARN line names the upstream:\n{}",
        cache_berth.log_tail()
    );

    // berth restarted: what it cached is on disk and still served, the upstream still down.
    let root = cache_berth.root.clone();
    drop(cache_berth);
    let restarted = berth_on(
        &root,
        dir.path(),
        "cache-restarted",
        &proxy_section(&[("up", &faulty.url(), "timeout: 2s")], ""),
    );
    let c = Client::new(&restarted.base()).unwrap();
    check_stale(&c, &image, "after a restart").await;
}

/// Pulls `image` (`up/team/app:v1`) with the upstream failing: the manifest by tag is
/// `stale` with `Warning: 110`, the blobs and the manifest by digest come from the cache.
async fn check_stale(c: &Client, image: &Image, what: &str) {
    let m = get_manifest(c, "up/team/app", "v1", image).await;
    assert_eq!(cache(&m), "stale", "{what}: {}", describe(&m));
    assert!(
        m.h("warning").contains("110"),
        "{what}: Warning {:?}",
        m.h("warning")
    );
    for (digest, data) in &image.blobs {
        let b = get_blob(c, "up/team/app", digest, data).await;
        assert!(
            ["hit", "stale"].contains(&cache(&b).as_str()),
            "{what}: {}",
            describe(&b)
        );
    }
    let (m, _) = pull(c, "up/team/app", &image.digest, image).await;
    assert!(
        ["hit", "stale"].contains(&m.as_str()),
        "{what}: by digest {m}"
    );
}

/// 32 clients pull one uncached 256 MiB blob at once: the upstream sees one GET, the first
/// client gets bytes while the upstream is still sending, a client that hangs up midway does
/// not stop the fill, and every other client gets every byte right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_get_for_32_concurrent_cold_pulls_of_a_256_mib_blob() {
    const SIZE: usize = 256 << 20;
    const READERS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    // One copy of the blob, built from 1 MiB pieces, shared by the upload and every reader.
    let mut big = Vec::with_capacity(SIZE);
    for piece in 0..(SIZE >> 20) as u64 {
        big.extend_from_slice(&content(7_000_000 + piece, 1 << 20));
    }
    let big = Bytes::from(big);
    let digest = push_streamed(&up, "big/app", &big).await;
    let config = Bytes::from(content(7, 700));
    let config_digest = up
        .push_blob("big/app", &config, UploadKind::Monolithic, &|_| {})
        .await
        .unwrap();
    let manifest = image_manifest(&Desc::of(&config), &[Desc::of(&big)], "big", false);
    up.put_manifest("big/app", "v1", &manifest).await.unwrap();

    let faulty = Arc::new(Faulty::start(upstream.addr).await.unwrap());
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "timeout: 10s")], ""),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    let image = Image {
        digest: sha256(&manifest),
        manifest: manifest.clone(),
        blobs: vec![(config_digest, config)],
    };
    get_manifest(&c, "up/big/app", "v1", &image).await;

    // The upstream pauses 3 s after 32 MiB, so that every reader arrives during the fill.
    let path = format!("/v2/big/app/blobs/{digest}");
    faulty.set(
        Rule::on(
            "GET",
            &path,
            Fault::StallBody {
                after: 32 << 20,
                stall: Duration::from_secs(3),
            },
        )
        .times(1),
    );
    let url = format!("{}/v2/up/big/app/blobs/{digest}", cache_berth.base());
    let started = Instant::now();

    // The client that starts the fill and hangs up after 4 MiB.
    let http = fresh_http();
    let mut quitter = http.get(&url).send().await.unwrap();
    assert_eq!(quitter.status(), 200);
    let mut got = 0;
    while got < 4 << 20 {
        got += quitter.chunk().await.unwrap().expect("more bytes").len();
    }
    let upstream_sent = faulty.body_bytes();
    assert!(
        upstream_sent < SIZE as u64,
        "the first client got its first 4 MiB only once the upstream had sent {upstream_sent} of {SIZE} bytes"
    );

    let answered = Arc::new(AtomicUsize::new(0));
    let during_fill = Arc::new(AtomicUsize::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for idx in 0..READERS {
        let (url, big, answered, during_fill, faulty) = (
            url.clone(),
            big.clone(),
            answered.clone(),
            during_fill.clone(),
            faulty.clone(),
        );
        readers.spawn(async move {
            let http = fresh_http();
            let mut r = http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("reader {idx}: no answer: {e:?}"))?;
            answered.fetch_add(1, Ordering::SeqCst);
            // Answered before the upstream has sent the whole blob: berth does not wait for
            // the fill to finish.
            if faulty.body_bytes() < SIZE as u64 {
                during_fill.fetch_add(1, Ordering::SeqCst);
            }
            if r.status() != 200 {
                return Err(format!("reader {idx}: HTTP {}", r.status()));
            }
            let mut offset = 0usize;
            loop {
                match r.chunk().await {
                    Ok(Some(piece)) => {
                        let end = offset + piece.len();
                        if end > SIZE || piece[..] != big[offset..end] {
                            return Err(format!("reader {idx}: wrong bytes at {offset}..{end}"));
                        }
                        offset = end;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(format!("reader {idx}: cut at {offset}: {e:?}")),
                }
            }
            if offset != SIZE {
                return Err(format!("reader {idx}: {offset} bytes of {SIZE}"));
            }
            Ok(())
        });
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while answered.load(Ordering::SeqCst) < READERS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first client hangs up in the middle of the fill.
    drop(quitter);

    let mut failures = Vec::new();
    while let Some(done) = readers.join_next().await {
        if let Err(why) = done.unwrap() {
            failures.push(why);
        }
    }
    let elapsed = started.elapsed();
    let gets = faulty.count("GET", &path);
    eprintln!(
        "single flight: {READERS} readers (+1 that hung up), {} answered during the fill, upstream GETs of the blob {gets}, upstream body bytes {}, {elapsed:?}",
        during_fill.load(Ordering::SeqCst),
        faulty.body_bytes()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(gets, 1, "upstream GETs of the blob: {:?}", faulty.seen());
    let memory = cache_berth.memory();
    eprintln!("berth's peak RSS: {} MiB", memory.hwm_kib >> 10);
    assert!(
        memory.hwm_kib < (SIZE as u64 >> 10) / 2,
        "berth's peak RSS was {} MiB while it streamed a {} MiB blob: it holds the blob in memory",
        memory.hwm_kib >> 10,
        SIZE >> 20
    );
    assert_eq!(
        during_fill.load(Ordering::SeqCst),
        READERS,
        "every reader is answered while the upstream is still sending (it pauses 3 s)"
    );

    // Cached now: a later pull is a hit and asks nothing.
    let before = faulty.seen().len();
    match get_outcome(&fresh_http(), &url).await {
        Outcome::Complete(body) => assert!(body[..] == big[..], "later pull: wrong bytes"),
        other => panic!("later pull: {other:?}"),
    }
    assert_eq!(faulty.seen().len(), before);
    assert_tree_sound(&cache_berth.root, "after the fill");
}

/// The only client of a fill hangs up early: the fill still completes and is kept (the next
/// pull is a hit, with no second upstream GET). Concurrent cold GETs of one manifest by
/// digest, of one tag, and of one small blob, are one upstream request each too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_client_hanging_up_does_not_stop_the_fill() {
    const CONCURRENT: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let image = push_image(&up, "team/app", "v1", 70, &[16 << 20, 4 << 10]).await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "timeout: 10s")], ""),
    );
    let c = Client::new(&cache_berth.base()).unwrap();

    // Manifest by digest, never asked for before, by many clients at once.
    let manifests = (0..CONCURRENT).map(|_| {
        let (c, image) = (c.clone(), image.clone());
        async move { get_manifest(&c, "up/team/app", &image.digest, &image).await }
    });
    futures_util::future::join_all(manifests).await;
    assert_eq!(
        faulty.count("GET", &format!("/manifests/{}", image.digest)),
        1,
        "{:?}",
        faulty.seen()
    );
    // The tag, never asked for before, by many clients at once while the upstream takes a
    // second to answer the first: one upstream request by tag.
    faulty.set(Rule::on("", "/manifests/v1", Fault::Delay(Duration::from_secs(1))).times(1));
    let tagged = (0..CONCURRENT).map(|_| {
        let (c, image) = (c.clone(), image.clone());
        async move { get_manifest(&c, "up/team/app", "v1", &image).await }
    });
    futures_util::future::join_all(tagged).await;
    assert_eq!(faulty.count("", "/manifests/v1"), 1, "{:?}", faulty.seen());
    let (small, small_data) = image.blob(2).clone();
    let blobs = (0..CONCURRENT).map(|_| {
        let (c, small, small_data) = (c.clone(), small.clone(), small_data.clone());
        async move { get_blob(&c, "up/team/app", &small, &small_data).await }
    });
    futures_util::future::join_all(blobs).await;
    assert_eq!(faulty.count("GET", &format!("/blobs/{small}")), 1);

    // The big layer: the upstream pauses after 4 MiB; the one client leaves after 1 MiB.
    let (layer, data) = image.blob(1).clone();
    let path = format!("/v2/team/app/blobs/{layer}");
    faulty.set(
        Rule::on(
            "GET",
            &path,
            Fault::StallBody {
                after: 4 << 20,
                stall: Duration::from_secs(1),
            },
        )
        .times(1),
    );
    let before = faulty.body_bytes();
    let url = format!("{}/v2/up/team/app/blobs/{layer}", cache_berth.base());
    let mut lone = fresh_http().get(&url).send().await.unwrap();
    assert_eq!(lone.status(), 200);
    let mut got = 0;
    while got < 1 << 20 {
        got += lone.chunk().await.unwrap().expect("more bytes").len();
    }
    drop(lone);
    // The upstream keeps sending after the client left...
    let deadline = Instant::now() + Duration::from_secs(20);
    while faulty.body_bytes() - before < data.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the fill stopped with the client: {} of {} bytes came from the upstream",
            faulty.body_bytes() - before,
            data.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and what it sent is kept.
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        let b = get_blob(&c, "up/team/app", &layer, &data).await;
        if cache(&b) == "hit" || Instant::now() > deadline {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        cache(&b),
        "hit",
        "the finished fill was kept: {}",
        describe(&b)
    );
    assert_eq!(faulty.count("GET", &path), 1, "{:?}", faulty.seen());
}

/// `tagttl`: within it a pull by tag asks the upstream nothing; after it, exactly one HEAD and
/// no GET (`revalidated`), which starts the TTL again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_ttl_expiry_revalidates_with_one_head_and_no_get() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let image = push_image(&up, "team/app", "v1", 4, &[100 << 10]).await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "tagttl: 2s")], ""),
    );
    let c = Client::new(&cache_berth.base()).unwrap();

    // berth fetched the tag between these two instants.
    let fetched = Instant::now();
    let (m, _) = pull(&c, "up/team/app", "v1", &image).await;
    let fetched_by = Instant::now();
    assert_eq!(m, "miss");
    let before = faulty.seen().len();
    let (m, blobs) = pull(&c, "up/team/app", "v1", &image).await;
    assert!(
        fetched.elapsed() < Duration::from_secs(2),
        "the machine is too slow for a 2 s TTL"
    );
    assert_eq!(m, "hit", "within tagttl");
    assert!(blobs.iter().all(|b| b == "hit"), "{blobs:?}");
    assert_eq!(
        faulty.seen().len(),
        before,
        "{:?}",
        &faulty.seen()[before..]
    );

    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(fetched_by.elapsed())).await;
    faulty.reset_seen();
    let (m, blobs) = pull(&c, "up/team/app", "v1", &image).await;
    assert_eq!(m, "revalidated", "after tagttl");
    assert!(blobs.iter().all(|b| b == "hit"), "{blobs:?}");
    let (m, _) = pull(&c, "up/team/app", "v1", &image).await;
    assert_eq!(m, "hit", "the revalidation starts the TTL again");
    let asked: Vec<String> = faulty
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert_eq!(asked, ["HEAD /v2/team/app/manifests/v1"]);
}

/// A tag moved upstream: the next pull by tag (tagttl 0) sees another digest in its HEAD,
/// fetches the new manifest by digest and serves it; the old one stays by digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_upstream_serves_the_new_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let old = push_image(&up, "team/app", "v1", 5, &[50 << 10]).await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "")], ""),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    pull(&c, "up/team/app", "v1", &old).await;

    let new = push_image(&up, "team/app", "v1", 6, &[60 << 10]).await;
    faulty.reset_seen();
    let m = get_manifest(&c, "up/team/app", "v1", &new).await;
    assert_eq!(cache(&m), "miss", "{}", describe(&m));
    assert_eq!(
        faulty.count("HEAD", "/manifests/v1"),
        1,
        "{:?}",
        faulty.seen()
    );
    assert_eq!(
        faulty.count("GET", &format!("/manifests/{}", new.digest)),
        1,
        "the new manifest is fetched by digest: {:?}",
        faulty.seen()
    );
    assert_eq!(
        faulty.count("GET", "/manifests/v1"),
        0,
        "{:?}",
        faulty.seen()
    );
    let (_, blobs) = pull(&c, "up/team/app", "v1", &new).await;
    assert_eq!(blobs[1], "miss", "the new layer");
    let (m, _) = pull(&c, "up/team/app", &old.digest, &old).await;
    assert_eq!(m, "hit", "the old manifest by digest");
    let (m, _) = pull(&c, "up/team/app", "v1", &new).await;
    assert_eq!(m, "revalidated");
}

/// The upstream answers 429, 500, 503, stalls past the timeout, or hangs up: cached content
/// is served (`stale`, `Warning: 110`), tag lists too; uncached content is 503 UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_429_5xx_and_timeouts_are_served_from_cache() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let image = push_image(&up, "team/app", "v1", 8, &[300 << 10, 20 << 10]).await;
    let later = push_image(&up, "team/app", "v2", 9, &[10 << 10]).await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir_all(&cache_dir).unwrap();
    let cache_berth = Berth::start_setup(
        &cache_dir,
        &Setup {
            http: "debug:\n  addr: 127.0.0.1:0\n  prometheus:\n    enabled: true".to_owned(),
            top: proxy_section(&[("up", &faulty.url(), "timeout: 1s")], ""),
            ..Setup::default()
        },
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    pull(&c, "up/team/app", "v1", &image).await;
    let tags = c.tags("up/team/app").await.unwrap();
    assert!(tags.contains(&"v1".to_owned()), "{tags:?}");

    for fault in [
        Fault::Status(429),
        Fault::Status(500),
        Fault::Status(503),
        Fault::Delay(Duration::from_secs(5)),
        Fault::Close,
    ] {
        faulty.set(Rule::all(fault.clone()));
        let t = Instant::now();
        let m = get_manifest(&c, "up/team/app", "v1", &image).await;
        let took = t.elapsed();
        assert_eq!(cache(&m), "stale", "{fault:?}: {}", describe(&m));
        assert!(
            m.h("warning").contains("110"),
            "{fault:?}: {}",
            describe(&m)
        );
        assert!(
            took < Duration::from_secs(4),
            "{fault:?}: the stale answer took {took:?} (timeout 1s)"
        );
        for (digest, data) in &image.blobs {
            let b = get_blob(&c, "up/team/app", digest, data).await;
            assert!(
                ["hit", "stale"].contains(&cache(&b).as_str()),
                "{fault:?}: {}",
                describe(&b)
            );
        }
        let tags = c.tags("up/team/app").await;
        assert!(
            tags.as_ref().is_ok_and(|t| t.contains(&"v1".to_owned())),
            "{fault:?}: the cached tags: {tags:?}"
        );
        let r = c.get_manifest("up/team/app", "v2").await.unwrap();
        assert_eq!(
            (r.status, error_of(&r).0.as_str()),
            (503, "UNAVAILABLE"),
            "{fault:?}: never cached: {}",
            describe(&r)
        );
    }
    faulty.clear();
    let (m, _) = pull(&c, "up/team/app", "v1", &image).await;
    assert_eq!(m, "revalidated", "the upstream is back");

    // The metrics count what happened: five stale answers, upstream failures, the bytes.
    let debug = Client::new(&format!("http://{}", debug_addr(&cache_berth))).unwrap();
    let r = debug
        .send(Method::GET, "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", describe(&r));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let stale = sample(
        &text,
        "berth_proxy_requests_total",
        &["upstream=\"up\"", "result=\"stale\""],
    );
    assert!(stale >= 5.0, "stale answers: {stale}\n{text}");
    let errors = sample(
        &text,
        "berth_proxy_upstream_errors_total",
        &["upstream=\"up\""],
    );
    assert!(errors >= 5.0, "upstream errors: {errors}\n{text}");
    let bytes = sample(
        &text,
        "berth_proxy_upstream_bytes_total",
        &["upstream=\"up\""],
    );
    let pulled: usize = image.blobs.iter().map(|(_, d)| d.len()).sum();
    assert!(
        bytes >= pulled as f64,
        "upstream bytes: {bytes} < {pulled}\n{text}"
    );
    let (m, _) = pull(&c, "up/team/app", "v2", &later).await;
    assert_eq!(m, "miss");
    let log = cache_berth.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("stale")),
        "a WARN line says the answer is stale:\n{}",
        cache_berth.log_tail()
    );
}

/// Corrupted, cut and stalled upstream bodies: the client's request never completes with
/// wrong bytes, nothing is cached, and the next pull with the upstream healthy succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_upstream_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    // Layers: 4 MiB (corrupted near its end), 1 KiB (corrupted: one piece), 2 MiB (cut),
    // 2 MiB (stalled past the timeout).
    let image = push_image(
        &up,
        "team/app",
        "v1",
        10,
        &[4 << 20, 1 << 10, 2 << 20, 2 << 20],
    )
    .await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "timeout: 1s")], ""),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    let http = fresh_http();

    let faults = [
        (1, Fault::Corrupt((3 << 20) + 17)),
        (2, Fault::Corrupt(100)),
        (3, Fault::Truncate(1 << 20)),
        (
            4,
            Fault::StallBody {
                after: 1 << 20,
                stall: Duration::from_secs(4),
            },
        ),
    ];
    for (idx, fault) in faults {
        let (digest, data) = image.blob(idx);
        let upstream_path = format!("/v2/team/app/blobs/{digest}");
        faulty.set(Rule::on("GET", &upstream_path, fault.clone()).times(1));
        let url = format!("{}/v2/up/team/app/blobs/{digest}", cache_berth.base());
        match get_outcome(&http, &url).await {
            Outcome::Complete(body) => panic!(
                "{fault:?}: the request completed with {} bytes ({})",
                body.len(),
                if body[..] == data[..] {
                    "right"
                } else {
                    "wrong"
                }
            ),
            Outcome::Refused(status, body) => {
                assert!(status >= 500, "{fault:?}: HTTP {status} {body}")
            }
            Outcome::Cut(n, why) => assert!(n < data.len(), "{fault:?}: {why}"),
        }
        // The fill has ended (or is ending): nothing is kept.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !blob_data(&cache_berth.root, digest).exists(),
            "{fault:?}: the bad blob was stored"
        );
        assert_eq!(faulty.count("GET", &upstream_path), 1, "{fault:?}");
        faulty.clear();
        let b = get_blob(&c, "up/team/app", digest, data).await;
        assert_eq!(cache(&b), "miss", "{fault:?}: after the failure");
        assert_eq!(faulty.count("GET", &upstream_path), 2, "{fault:?}");
        let b = get_blob(&c, "up/team/app", digest, data).await;
        assert_eq!(cache(&b), "hit", "{fault:?}");
    }

    // A corrupted manifest: 503, not cached; then the real one.
    faulty.set(Rule::on("GET", "/manifests/", Fault::Corrupt(10)));
    let r = c.get_manifest("up/team/app", "v1").await.unwrap();
    assert_eq!(r.status, 503, "corrupted manifest: {}", describe(&r));
    assert!(
        !blob_data(&cache_berth.root, &image.digest).exists(),
        "the corrupted manifest was stored"
    );
    faulty.clear();
    let m = get_manifest(&c, "up/team/app", "v1", &image).await;
    assert_eq!(cache(&m), "miss");
    assert_tree_sound(&cache_berth.root, "after the failed fills");
}

/// An upstream with htpasswd: berth answers its Basic challenge with the configured
/// credentials, and never logs the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_upstream() {
    const PASSWORD: &str = "upstream-Pw-9f3e1";
    let dir = tempfile::tempdir().unwrap();
    // Pushed without auth, then the same storage served with it.
    let open = berth(dir.path(), "open", "");
    let image = push_image(
        &Client::new(&open.base()).unwrap(),
        "team/app",
        "v1",
        11,
        &[200 << 10, 5 << 10],
    )
    .await;
    let root = open.root.clone();
    drop(open);
    let ht = htpasswd(dir.path(), PASSWORD);
    let upstream = berth_on(
        &root,
        dir.path(),
        "upstream",
        &format!(
            "auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n",
            ht.display()
        ),
    );
    let anonymous = Client::new(&upstream.base())
        .unwrap()
        .get_manifest("team/app", "v1")
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401, "the upstream wants credentials");
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(
            &[(
                "up",
                &faulty.url(),
                &format!("username: alice\npassword: {PASSWORD}"),
            )],
            "",
        ),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    let (m, blobs) = pull(&c, "up/team/app", "v1", &image).await;
    assert_eq!(m, "miss");
    assert!(blobs.iter().all(|b| b == "miss"), "{blobs:?}");
    let (m, _) = pull(&c, "up/team/app", "v1", &image).await;
    assert_eq!(m, "revalidated");
    let log = cache_berth.log_text();
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    assert!(!log.contains(PASSWORD), "the password is in the log");
    assert!(
        !log.contains(&basic),
        "the Basic credentials are in the log"
    );
}

/// An upstream that takes only bearer tokens, from a token server elsewhere (berth's own
/// `/token` in a second berth), as Docker Hub does with auth.docker.io: berth follows the
/// challenge to the realm with its credentials, or anonymously where none are configured
/// (anonymous tokens for public repositories), and reuses a token until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flow_upstream_auth() {
    let dir = tempfile::tempdir().unwrap();
    let open = berth(dir.path(), "open", "");
    let oc = Client::new(&open.base()).unwrap();
    let private = push_image(&oc, "team/app", "v1", 12, &[100 << 10, 3 << 10]).await;
    let public = push_image(&oc, "public/x", "v1", 13, &[40 << 10]).await;
    let root = open.root.clone();
    drop(open);

    // The token server: alice may do anything, anyone may pull public/**.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["upstream-token".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (crt, pem) = (dir.path().join("token.crt"), dir.path().join("token.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    let ht = htpasswd(dir.path(), "token-Pw-77");
    let token_server = berth(
        dir.path(),
        "token-server",
        &format!(
            "auth:\n  htpasswd:\n    realm: tokens\n    path: {}\n  tokenserver:\n    realm: http://127.0.0.1:1/token\n    certificate: {}\n    key: {}\n    expiry: 5m\n  policy:\n    admins: [alice]\n    rules:\n      - repositories: [\"public/**\"]\n        anonymous: true\n        actions: [pull]\n",
            ht.display(),
            crt.display(),
            pem.display()
        ),
    );
    // Token requests pass through a proxy of their own, which counts them.
    let tokens = Faulty::start(token_server.addr).await.unwrap();
    let upstream = berth_on(
        &root,
        dir.path(),
        "upstream",
        &format!(
            "auth:\n  token:\n    realm: {}/token\n    service: berth\n    issuer: berth\n    rootcertbundle: {}\n",
            tokens.url(),
            crt.display()
        ),
    );
    let challenge = Client::new(&upstream.base())
        .unwrap()
        .get_manifest("public/x", "v1")
        .await
        .unwrap();
    assert!(
        challenge.status == 401 && challenge.h("www-authenticate").starts_with("Bearer "),
        "the upstream wants tokens, even for public repositories: {}",
        describe(&challenge)
    );

    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(
            &[
                (
                    "tok",
                    &faulty.url(),
                    "username: alice\npassword: token-Pw-77",
                ),
                ("anon", &faulty.url(), ""),
            ],
            "",
        ),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    let (m, blobs) = pull(&c, "tok/team/app", "v1", &private).await;
    assert_eq!(m, "miss");
    assert!(blobs.iter().all(|b| b == "miss"), "{blobs:?}");
    let (m, blobs) = pull(&c, "anon/public/x", "v1", &public).await;
    assert_eq!(m, "miss");
    assert!(blobs.iter().all(|b| b == "miss"), "{blobs:?}");
    // Anonymous tokens carry only what anonymous callers may do.
    let r = c.get_manifest("anon/team/app", "v1").await.unwrap();
    assert_ne!(
        r.status,
        200,
        "anonymous pull of a private repository: {}",
        describe(&r)
    );

    let seen = tokens.seen();
    let asked = |scope: &str, basic: bool| {
        seen.iter()
            .filter(|s| {
                s.target.contains(scope)
                    && s.header("authorization")
                        .is_some_and(|a| a.starts_with("Basic "))
                        == basic
            })
            .count()
    };
    assert_eq!(
        asked("team%2Fapp", true),
        1,
        "one token for alice's repository, asked with her credentials: {seen:#?}"
    );
    assert_eq!(
        asked("public%2Fx", false),
        1,
        "one anonymous token for the public repository: {seen:#?}"
    );
    // Pulled again: the HEADs reuse the tokens.
    let before = tokens.seen().len();
    pull(&c, "tok/team/app", "v1", &private).await;
    pull(&c, "anon/public/x", "v1", &public).await;
    assert_eq!(tokens.seen().len(), before, "{:#?}", tokens.seen());
    let log = cache_berth.log_text();
    assert!(!log.contains("token-Pw-77"), "the password is in the log");
}

/// Pushes and deletes in proxied repositories are 405 UNSUPPORTED and never reach the
/// upstream; local repositories beside the prefixes (including names that only start like a
/// prefix, and the upstream's own names) take pushes, pulls and deletes as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_proxied_repositories_are_refused_and_local_ones_work() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let image = push_image(&up, "team/app", "v1", 14, &[30 << 10]).await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "")], ""),
    );
    let c = Client::without_reuse(&cache_berth.base()).unwrap();
    pull(&c, "up/team/app", "v1", &image).await;
    let (layer, layer_data) = image.blob(1).clone();

    let body = || Some(reqwest::Body::from(b"data".to_vec()));
    let digest = sha256(b"data");
    let refused: Vec<(Method, String, Option<reqwest::Body>)> = vec![
        (Method::POST, "/v2/up/team/app/blobs/uploads/".into(), None),
        (
            Method::POST,
            format!("/v2/up/team/app/blobs/uploads/?digest={digest}"),
            body(),
        ),
        (
            Method::POST,
            format!("/v2/up/team/app/blobs/uploads/?mount={layer}&from=local/app"),
            None,
        ),
        (
            Method::PATCH,
            "/v2/up/team/app/blobs/uploads/0b9ed7c1-5dfb-4a77-9c38-fa0d3a0e1f71".into(),
            body(),
        ),
        (
            Method::PUT,
            format!(
                "/v2/up/team/app/blobs/uploads/0b9ed7c1-5dfb-4a77-9c38-fa0d3a0e1f71?digest={digest}"
            ),
            body(),
        ),
        (
            Method::PUT,
            "/v2/up/team/app/manifests/v2".into(),
            Some(reqwest::Body::from(image.manifest.clone())),
        ),
        (
            Method::DELETE,
            format!("/v2/up/team/app/manifests/{}", image.digest),
            None,
        ),
        (Method::DELETE, "/v2/up/team/app/manifests/v1".into(), None),
        (
            Method::DELETE,
            format!("/v2/up/team/app/blobs/{layer}"),
            None,
        ),
    ];
    for (method, path, body) in refused {
        let headers = [(
            "content-type",
            berth_tests::content::media::OCI_MANIFEST.to_owned(),
        )];
        let r = c.send(method.clone(), &path, &headers, body).await.unwrap();
        assert_eq!(
            (r.status, error_of(&r).0.as_str()),
            (405, "UNSUPPORTED"),
            "{method} {path}: {}",
            describe(&r)
        );
    }
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        assert_eq!(faulty.count(method, ""), 0, "{method} reached the upstream");
    }
    // Still served after the refusals.
    pull(&c, "up/team/app", "v1", &image).await;

    // Local repositories, one named like the upstream's, one only starting like the prefix.
    for (repo, seed) in [
        ("local/app", 15),
        ("team/app", 16),
        ("upx/app", 17),
        ("upper", 18),
    ] {
        let local = push_image(&c, repo, "v1", seed, &[20 << 10]).await;
        let (m, blobs) = pull(&c, repo, "v1", &local).await;
        assert!(
            m.is_empty() && blobs.iter().all(String::is_empty),
            "{repo}: a local repository's answers say nothing of a cache: {m:?} {blobs:?}"
        );
        assert_eq!(c.tags(repo).await.unwrap(), ["v1"]);
        let r = c.delete_manifest(repo, &local.digest).await.unwrap();
        assert_eq!(r.status, 202, "{repo}: DELETE: {}", describe(&r));
        let r = c.get_manifest(repo, "v1").await.unwrap();
        assert_eq!(r.status, 404, "{repo}: deleted");
    }
    // A blob mounted from the proxied repository into a local one.
    let r = c
        .send(
            Method::POST,
            &format!("/v2/local/app/blobs/uploads/?mount={layer}&from=up/team/app"),
            &[],
            None,
        )
        .await
        .unwrap();
    if r.status == 201 {
        get_blob(&c, "local/app", &layer, &layer_data).await;
    } else {
        assert_eq!(
            r.status,
            202,
            "a mount from a proxied repository: {}",
            describe(&r)
        );
    }
    assert_eq!(faulty.count("", "/v2/local/"), 0);
    assert_eq!(faulty.count("", "/v2/upx/"), 0);
}

/// `maxsize`: while three clients pull ten images through the cache, the proxied content on
/// disk stays within the bound (plus what the running pulls are fetching); local content is
/// never evicted; an evicted blob is fetched again on the next pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxsize_evicts_proxied_content_while_pulls_run() {
    const MAXSIZE: u64 = 3 << 20;
    const LAYER: usize = 1 << 20;
    const IMAGES: usize = 10;
    const PULLERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let mut images = Vec::new();
    for i in 0..IMAGES {
        images.push(push_image(&up, &format!("team/app{i}"), "v1", 20 + i as u64, &[LAYER]).await);
    }
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(&[("up", &faulty.url(), "")], &format!("maxsize: {MAXSIZE}")),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    // Local content bigger than the bound: the cache's accounting must leave it alone.
    let local = push_image(&c, "local/app", "v1", 40, &[5 << 20]).await;
    let local_bytes = tree_bytes(&cache_berth.root);

    let root = cache_berth.root.clone();
    let proxied_bytes = move || tree_bytes(&root).saturating_sub(local_bytes);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let proxied_bytes = proxied_bytes.clone();
        tokio::task::spawn_blocking(move || {
            let mut most = 0;
            while !done.load(Ordering::SeqCst) {
                most = most.max(proxied_bytes());
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let images = Arc::new(images);
    let mut pullers = tokio::task::JoinSet::new();
    for p in 0..PULLERS {
        let (c, images) = (c.clone(), images.clone());
        pullers.spawn(async move {
            for i in (p..IMAGES).step_by(PULLERS) {
                pull(&c, &format!("up/team/app{i}"), "v1", &images[i]).await;
            }
        });
    }
    while let Some(r) = pullers.join_next().await {
        r.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let most = sampler.await.unwrap();
    // Each running pull may hold one layer, its config and manifest beyond the bound, one
    // finished fill may wait for its eviction, and the layout's link files and berth's
    // bookkeeping take a little room.
    let slack = (PULLERS as u64 + 1) * (LAYER as u64 + (8 << 10)) + (256 << 10);
    let mut settled = proxied_bytes();
    let deadline = Instant::now() + Duration::from_secs(5);
    while settled > MAXSIZE + (256 << 10) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        settled = proxied_bytes();
    }
    eprintln!(
        "maxsize {MAXSIZE}: {} bytes pulled through, at most {most} proxied bytes on disk during the pulls, {settled} after",
        IMAGES * (LAYER + 700)
    );
    assert!(
        most <= MAXSIZE + slack,
        "during the pulls {most} proxied bytes were on disk (bound {MAXSIZE} + {slack})"
    );
    assert!(
        settled <= MAXSIZE + (256 << 10),
        "after the pulls {settled} proxied bytes are on disk (bound {MAXSIZE}); berth's eviction lines:\n{}",
        cache_berth
            .log_text()
            .lines()
            .filter(|l| l.contains("evict"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Local content is whole.
    let (m, blobs) = pull(&c, "local/app", "v1", &local).await;
    assert!(m.is_empty() && blobs.iter().all(String::is_empty));
    // The least recently used image went first: fetched again.
    let (layer, _) = images[0].blob(1);
    assert_eq!(faulty.count("GET", &format!("/blobs/{layer}")), 1);
    let (_, blobs) = pull(&c, "up/team/app0", "v1", &images[0]).await;
    assert_eq!(blobs[1], "miss", "the evicted layer");
    assert_eq!(faulty.count("GET", &format!("/blobs/{layer}")), 2);
    // That fetch passed the bound again: let the eviction it woke finish (a directory being
    // removed is briefly there without its link) before the tree is read.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = proxied_bytes();
        if (now == last && now <= MAXSIZE + (256 << 10)) || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    assert_tree_sound(&cache_berth.root, "after evictions");
}

/// Distribution's `ttl`: content not used for that long is evicted (its blobs deleted, pulled
/// again from the upstream next time), content fetched within it stays. berth checks at start
/// and every minute; the test restarts berth rather than wait for the minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_evicts_content_unused_that_long() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let unused = push_image(&up, "team/old", "v1", 80, &[200 << 10]).await;
    let used = push_image(&up, "team/new", "v1", 81, &[200 << 10]).await;
    let faulty = Faulty::start(upstream.addr).await.unwrap();
    let config = format!("proxy:\n  remoteurl: {}\n  ttl: 3s\n", faulty.url());
    let cache_berth = berth(dir.path(), "cache", &config);
    let c = Client::new(&cache_berth.base()).unwrap();
    pull(&c, "team/old", "v1", &unused).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    // Fetched just now: well within the ttl however berth remembers uses across a restart.
    pull(&c, "team/new", "v1", &used).await;

    let root = cache_berth.root.clone();
    drop(cache_berth);
    let restarted = berth_on(&root, dir.path(), "cache-restarted", &config);
    let c = Client::new(&restarted.base()).unwrap();
    let (old_layer, _) = unused.blob(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while blob_data(&root, old_layer).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !blob_data(&root, old_layer).exists(),
        "a layer unused for longer than ttl is still on disk; eviction lines:\n{}",
        restarted
            .log_text()
            .lines()
            .filter(|l| l.contains("evict") || l.contains("cached content"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (m, blobs) = pull(&c, "team/new", &used.digest, &used).await;
    assert_eq!(m, "hit", "used within ttl");
    assert!(
        blobs.iter().all(|b| b == "hit"),
        "used within ttl: {blobs:?}"
    );
    let (m, blobs) = pull(&c, "team/old", &unused.digest, &unused).await;
    assert_eq!(m, "miss", "evicted");
    assert!(blobs.iter().all(|b| b == "miss"), "evicted: {blobs:?}");
    assert_eq!(faulty.count("GET", &format!("/blobs/{old_layer}")), 2);
    assert_tree_sound(&root, "after the ttl eviction");
}

/// Distribution's own section, `proxy: remoteurl:`, over Debian's Distribution: the whole
/// registry mirrors it and refuses pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_style_single_upstream() {
    if !have_distribution() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let distribution = Distribution::start(dir.path());
    let up = Client::new(&format!("http://{}", distribution.addr)).unwrap();
    let image = push_image(&up, "team/app", "v1", 50, &[1 << 20, 10 << 10]).await;
    let faulty = Faulty::start(distribution.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &format!("proxy:\n  remoteurl: {}\n  ttl: 168h\n", faulty.url()),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    let (m, blobs) = pull(&c, "team/app", "v1", &image).await;
    assert_eq!(m, "miss");
    assert!(blobs.iter().all(|b| b == "miss"), "{blobs:?}");
    let (m, blobs) = pull(&c, "team/app", "v1", &image).await;
    assert_eq!(m, "revalidated");
    assert!(blobs.iter().all(|b| b == "hit"), "{blobs:?}");
    let (m, _) = pull(&c, "team/app", &image.digest, &image).await;
    assert_eq!(m, "hit");
    for (digest, _) in &image.blobs {
        assert_eq!(faulty.count("GET", &format!("/blobs/{digest}")), 1);
    }
    let r = c
        .send(Method::POST, "/v2/mine/app/blobs/uploads/", &[], None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).0.as_str()),
        (405, "UNSUPPORTED"),
        "{}",
        describe(&r)
    );
    faulty.refuse().await;
    let m = get_manifest(&c, "team/app", "v1", &image).await;
    assert_eq!(cache(&m), "stale", "{}", describe(&m));
}

/// `remoteurl` beside `upstreams`: prefixed names go to their upstream (with the implicit
/// `library/` namespace where asked), every other name to `remoteurl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remoteurl_beside_upstreams_and_implicit_library() {
    if !have_distribution() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let distribution = Distribution::start(dir.path());
    let dist = Client::new(&format!("http://{}", distribution.addr)).unwrap();
    let upstream = berth(dir.path(), "upstream", "");
    let up = Client::new(&upstream.base()).unwrap();
    let mirrored = push_image(&dist, "library/alpine", "3", 60, &[10 << 10]).await;
    let prefixed = push_image(&up, "team/app", "v1", 61, &[10 << 10]).await;
    let library = push_image(&up, "library/busybox", "1", 62, &[10 << 10]).await;
    let to_distribution = Faulty::start(distribution.addr).await.unwrap();
    let to_berth = Faulty::start(upstream.addr).await.unwrap();
    let cache_berth = berth(
        dir.path(),
        "cache",
        &proxy_section(
            &[("b", &to_berth.url(), "implicitlibrary: true")],
            &format!("remoteurl: {}", to_distribution.url()),
        ),
    );
    let c = Client::new(&cache_berth.base()).unwrap();
    let (m, _) = pull(&c, "library/alpine", "3", &mirrored).await;
    assert_eq!(m, "miss");
    let (m, _) = pull(&c, "b/team/app", "v1", &prefixed).await;
    assert_eq!(m, "miss");
    let (m, _) = pull(&c, "b/busybox", "1", &library).await;
    assert_eq!(m, "miss", "b/busybox is library/busybox upstream");
    assert!(
        to_berth.count("", "/v2/library/busybox/manifests/") >= 1,
        "{:?}",
        to_berth.seen()
    );
    assert_eq!(to_berth.count("", "/v2/busybox/"), 0);
    assert_eq!(to_distribution.count("", "/team/app"), 0);
    assert_eq!(to_berth.count("", "/alpine"), 0);
    let r = c
        .send(Method::POST, "/v2/mine/app/blobs/uploads/", &[], None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).0.as_str()),
        (405, "UNSUPPORTED"),
        "every name is proxied: {}",
        describe(&r)
    );
}
