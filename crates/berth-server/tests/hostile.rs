//! A sweep of hostile requests proving that nothing outside the storage root is touched.
//!
//! berth (the real accept loop, `berth_server::serve`) runs over `<tmp>/outer/root`, with
//! canary files beside the root, in its parent and in its grandparent, and a sibling directory
//! whose name starts like the root's. Well over a thousand requests are then sent over a raw
//! socket, byte for byte (no URL library to resolve `..` or `%2e%2e` first): names, tags,
//! digests, references and upload ids with `..`, encoded dots and slashes, backslashes, NUL,
//! non-ASCII (UTF-8 and raw bytes), spaces, upper case, overlong and `_`-prefixed parts and
//! absolute paths, on every endpoint and method, plus hostile pagination, range and content
//! type values.
//!
//! Every answer must be a 4xx (or, where the hostile part is legitimately harmless, the
//! documented success), never a 5xx, a hang or a reset connection; a body must be a JSON
//! error. Afterwards the canaries are unchanged (content and mtime), no entry appeared or
//! vanished anywhere in the temporary directory outside the root, the root holds nothing but
//! `docker/registry/v2/...` with the one repository the test pushed, and that repository's
//! image is intact.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_registry::Options;
use berth_server::HttpOptions;
use common::{DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, content, descriptor, sha256, to_body};
use serde_json::json;

const REPO: &str = "valid/repo";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed answer from the raw socket.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// One request as sent on the wire.
struct Req {
    method: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Statuses accepted besides any 4xx.
    also: &'static [u16],
}

impl Req {
    fn new(method: &str, target: impl Into<Vec<u8>>) -> Self {
        Req {
            method: method.as_bytes().to_vec(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            also: &[],
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    fn also(mut self, statuses: &'static [u16]) -> Self {
        self.also = statuses;
        self
    }

    fn describe(&self) -> String {
        format!(
            "{} {}",
            String::from_utf8_lossy(&self.method),
            String::from_utf8_lossy(&self.target).escape_debug()
        )
    }

    fn wire(&self, addr: SocketAddr) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(&self.method);
        w.push(b' ');
        w.extend_from_slice(&self.target);
        w.extend_from_slice(format!(" HTTP/1.1\r\nHost: {addr}\r\n").as_bytes());
        for (n, v) in &self.headers {
            w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if !self.headers.iter().any(|(n, _)| n == "Content-Length") {
            w.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        w.extend_from_slice(b"Connection: close\r\n\r\n");
        w.extend_from_slice(&self.body);
        w
    }
}

/// Sends one request on a fresh connection and reads its answer (the test kit's raw client
/// reads the body by its length or chunks, whatever the target's bytes).
async fn send(addr: SocketAddr, req: &Req) -> Result<Answer, String> {
    let wire = req.wire(addr);
    let head_request = req.method == b"HEAD";
    let io = async {
        let mut conn = berth_tests::raw::Conn::connect(addr).await?;
        conn.write(&wire).await?;
        conn.reader.response(head_request).await
    };
    match tokio::time::timeout(TIMEOUT, io).await {
        Err(_) => Err(format!("no answer within {TIMEOUT:?} (hang)")),
        Ok(Err(e)) => Err(format!("connection failed: {e} ({:?})", e.kind())),
        Ok(Ok(r)) => Ok(Answer {
            status: r.status,
            headers: r.headers.into_iter().collect(),
            body: r.body,
        }),
    }
}

/// Checks one answer; `None` when it is acceptable.
fn judge(req: &Req, result: Result<Answer, String>) -> Option<String> {
    let a = match result {
        Ok(a) => a,
        Err(e) => return Some(format!("{}: {e}", req.describe())),
    };
    let client_error = (400..500).contains(&a.status);
    if !client_error && !req.also.contains(&a.status) {
        return Some(format!(
            "{}: status {} (body {:?})",
            req.describe(),
            a.status,
            String::from_utf8_lossy(&a.body)
        ));
    }
    // Successes allowed for a request carry whatever the endpoint serves; only errors are
    // checked for the spec's JSON body.
    if a.body.is_empty() || !client_error {
        return None;
    }
    let ct = a.headers.get("content-type").map_or("", String::as_str);
    let json: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
    let well_formed = ct.starts_with("application/json");
    match json {
        Some(v) if well_formed => {
            let code = v["errors"][0]["code"].as_str();
            if code.is_none_or(str::is_empty) {
                return Some(format!(
                    "{}: error body without a code: {v}",
                    req.describe()
                ));
            }
            None
        }
        _ => Some(format!(
            "{}: {} body is not JSON (Content-Type {ct:?}): {:?}",
            req.describe(),
            a.status,
            String::from_utf8_lossy(&a.body)
        )),
    }
}

/// A file (or directory) and what it looked like.
#[derive(Debug, PartialEq)]
struct Seen {
    kind: &'static str,
    len: u64,
    mtime: SystemTime,
    content: Option<Vec<u8>>,
}

/// Every entry under `dir` except the subtree `skip`, with metadata and file content.
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, Seen> {
    fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, Seen>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let kind = if m.is_dir() {
                "dir"
            } else if m.is_file() {
                "file"
            } else {
                "other"
            };
            let content = m.is_file().then(|| std::fs::read(&p).unwrap());
            out.insert(
                p.clone(),
                Seen {
                    kind,
                    len: m.len(),
                    mtime: m.modified().unwrap(),
                    content,
                },
            );
            if m.is_dir() {
                walk(&p, skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, skip, &mut out);
    out
}

/// Names of entries under `dir` (two levels) containing `marker`.
fn marked(dir: &Path, marker: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.to_string_lossy().contains(marker) {
            found.push(p.clone());
        }
        if let Ok(rd2) = std::fs::read_dir(&p) {
            for e2 in rd2.flatten() {
                if e2.path().to_string_lossy().contains(marker) {
                    found.push(e2.path());
                }
            }
        }
    }
    found
}

struct Fixture {
    addr: SocketAddr,
    layer: Vec<u8>,
    layer_digest: String,
    manifest: Vec<u8>,
    manifest_digest: String,
    session: String,
    _served: berth_tests::in_process::Served,
}

/// Starts berth's real accept loop over `root` and pushes one image and opens one session.
async fn start(root: &Path) -> Fixture {
    let options = Options {
        delete_enabled: true,
        ..Options::default()
    };
    let served = berth_tests::in_process::serve(root, options, HttpOptions::default()).await;
    let addr = served.addr;

    let config = to_body(&json!({ "architecture": "amd64", "os": "linux" }));
    let layer = content(7, 3000);
    for blob in [&config, &layer] {
        let r = send(
            addr,
            &Req::new(
                "POST",
                format!("/v2/{REPO}/blobs/uploads/?digest={}", sha256(blob)),
            )
            .body(blob),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201);
    }
    let manifest = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }));
    let r = send(
        addr,
        &Req::new("PUT", format!("/v2/{REPO}/manifests/latest"))
            .header("Content-Type", DOCKER_MANIFEST)
            .body(&manifest),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let r = send(
        addr,
        &Req::new("POST", format!("/v2/{REPO}/blobs/uploads/")),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 202);
    let session = r.headers["docker-upload-uuid"].clone();
    Fixture {
        addr,
        layer_digest: sha256(&layer),
        layer,
        manifest_digest: sha256(&manifest),
        manifest,
        session,
        _served: served,
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Hostile repository names (every one invalid).
fn names() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "..",
        "../..",
        "a/..",
        "a/../b",
        "a/../../pwned",
        "../../../../../../../../tmp/pwned",
        "%2e%2e",
        "%2E%2E/%2e%2e/pwned",
        "a%2f..%2f..%2fpwned",
        "..%2f..%2fpwned",
        "%2f%2fpwned",
        "a\\..\\..\\pwned",
        "a%5c..%5cpwned",
        "a%00b",
        "%00",
        "A",
        "Valid/Repo",
        "valid/REPO",
        "a%20b",
        "%C3%A4",
        "%ff",
        "_uploads",
        "valid/repo/_uploads",
        "valid/repo/_layers",
        "valid/_manifests",
        "_catalog/x",
        "/etc/passwd",
        "/tmp/pwned",
        ".",
        "./a",
        "a/.",
        "-a",
        "a..b",
        "a//b",
        "~",
        "a;b",
        "....//pwned",
        "..;/pwned",
        "%252e%252e",
        "valid/repo/..",
        "valid/repo/../../pwned",
        "a\tb",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push("ä/ö".as_bytes().to_vec());
    v.push(b"a\xffb".to_vec());
    v.push(b"\xc0\xae\xc0\xae/pwned".to_vec()); // overlong UTF-8 for ".."
    v.push(b"a\0b".to_vec());
    v.push(b"a b".to_vec());
    v.push(vec![b'a'; 300]);
    v.push("ab/".repeat(100).into_bytes());
    v
}

/// Hostile tags and references (every one invalid).
fn references(hex: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "..",
        "../../pwned",
        "../../../../../../../../tmp/pwned",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fpwned",
        "a%2fb",
        "a\\b",
        "..\\..\\pwned",
        "%00",
        "latest%00",
        "%C3%A4",
        "sha256:../../pwned",
        "sha256:%2e%2e",
        ":",
        ".",
        "-x",
        "a%20b",
        "md5:abc",
        "latest\\..\\pwned",
        "%2e",
        "..%00",
        "/etc/passwd",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(format!("sha256:{hex}/../..").into_bytes());
    v.push(format!("sha256:{}", hex.to_uppercase()).into_bytes());
    v.push(format!("sha256:{}", &hex[1..]).into_bytes());
    v.push("x".repeat(129).into_bytes());
    v.push("y".repeat(300).into_bytes());
    v.push("ä".as_bytes().to_vec());
    v.push(b"\xff".to_vec());
    v.push(b"a\0".to_vec());
    v.push(b"a b".to_vec());
    v
}

/// Hostile digests (every one invalid).
fn digests(hex: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "..",
        "../../pwned",
        "sha256:../../pwned",
        "sha256:%2e%2e%2f%2e%2e%2fpwned",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "_uploads",
        "sha256:",
        "%2e%2e",
        "/etc/passwd",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(format!("sha256:{}/", &hex[1..]).into_bytes());
    v.push(format!("sha256:{}", hex.to_uppercase()).into_bytes());
    v.push(format!("SHA256:{hex}").into_bytes());
    v.push(format!("sha256:{hex}%00").into_bytes());
    v.push(format!("sha256:{hex}\\..").into_bytes());
    v.push(format!("sha512:{hex}").into_bytes());
    v.push(format!("sha256:{}x", "../".repeat(21)).into_bytes());
    v.push(format!("sha256:{}", "g".repeat(64)).into_bytes());
    v.push(format!("%73ha256:{hex}").into_bytes());
    v.push(format!("sha256%3a{hex}").into_bytes());
    v.push(format!("sha256:{}ä", &hex[1..]).into_bytes());
    v.push(format!("sha256:{}", "a".repeat(300)).into_bytes());
    v.push(cat(&[b"sha256:", &hex.as_bytes()[1..], b"\xff"]));
    v
}

/// Hostile upload session ids (every one invalid or unknown).
fn ids(session: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "..",
        "../../pwned",
        "%2e%2e",
        "_uploads",
        "%2f",
        "..%2f..%2fpwned",
        "00000000-0000-0000-0000-000000000000",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(session.to_uppercase().into_bytes());
    v.push(format!("{session}%00").into_bytes());
    v.push(format!("{session}/..").into_bytes());
    v.push(format!("{session}\\..\\..").into_bytes());
    v.push(session.replace('-', "").into_bytes());
    v.push(format!("{{{session}}}").into_bytes());
    v.push(format!("urn:uuid:{session}").into_bytes());
    v.push("x".repeat(300).into_bytes());
    v.push("ä".as_bytes().to_vec());
    v.push(b"\xff".to_vec());
    v
}

fn requests(f: &Fixture) -> Vec<Req> {
    let hex = &f.layer_digest["sha256:".len()..];
    let small = b"hostile";
    let small_digest = sha256(small);
    let (layer, man, sid) = (&f.layer_digest, &f.manifest_digest, &f.session);
    let mut out = Vec::new();

    for n in names() {
        let p = |rest: &str| cat(&[b"/v2/", &n, rest.as_bytes()]);
        out.push(Req::new("GET", p("/manifests/latest")));
        out.push(Req::new("HEAD", p("/manifests/latest")));
        out.push(
            Req::new("PUT", p("/manifests/latest"))
                .header("Content-Type", DOCKER_MANIFEST)
                .body(&f.manifest),
        );
        out.push(Req::new("DELETE", p(&format!("/manifests/{man}"))));
        out.push(Req::new("PATCH", p("/manifests/latest")).body(small));
        out.push(Req::new("POST", p("/manifests/latest")).body(small));
        out.push(Req::new("GET", p(&format!("/blobs/{layer}"))));
        out.push(Req::new("HEAD", p(&format!("/blobs/{layer}"))));
        out.push(Req::new("DELETE", p(&format!("/blobs/{layer}"))));
        out.push(Req::new("POST", p("/blobs/uploads/")));
        out.push(
            Req::new("POST", p(&format!("/blobs/uploads/?digest={small_digest}"))).body(small),
        );
        out.push(Req::new(
            "POST",
            p(&format!("/blobs/uploads/?mount={layer}&from={REPO}")),
        ));
        out.push(Req::new("GET", p(&format!("/blobs/uploads/{sid}"))));
        out.push(Req::new("HEAD", p(&format!("/blobs/uploads/{sid}"))));
        out.push(
            Req::new("PATCH", p(&format!("/blobs/uploads/{sid}")))
                .header("Content-Type", "application/octet-stream")
                .body(small),
        );
        out.push(
            Req::new(
                "PUT",
                p(&format!("/blobs/uploads/{sid}?digest={small_digest}")),
            )
            .body(small),
        );
        out.push(Req::new("DELETE", p(&format!("/blobs/uploads/{sid}"))));
        out.push(Req::new("GET", p("/tags/list")));
        out.push(Req::new("GET", p(&format!("/referrers/{man}"))));
        // The hostile name as the source of a mount: the spec's fallback is a new session.
        out.push(
            Req::new(
                "POST",
                cat(&[
                    format!("/v2/{REPO}/blobs/uploads/?mount={layer}&from=").as_bytes(),
                    &n,
                ]),
            )
            .also(&[202]),
        );
    }

    for r in references(hex) {
        let p = cat(&[format!("/v2/{REPO}/manifests/").as_bytes(), &r]);
        out.push(Req::new("GET", p.clone()));
        out.push(Req::new("HEAD", p.clone()));
        out.push(
            Req::new("PUT", p.clone())
                .header("Content-Type", DOCKER_MANIFEST)
                .body(&f.manifest),
        );
        out.push(Req::new("DELETE", p));
    }

    for d in digests(hex) {
        let blob = cat(&[format!("/v2/{REPO}/blobs/").as_bytes(), &d]);
        out.push(Req::new("GET", blob.clone()));
        out.push(Req::new("HEAD", blob.clone()));
        out.push(Req::new("DELETE", blob.clone()));
        out.push(Req::new("PUT", blob).body(small));
        out.push(Req::new(
            "GET",
            cat(&[format!("/v2/{REPO}/referrers/").as_bytes(), &d]),
        ));
        out.push(
            Req::new(
                "POST",
                cat(&[format!("/v2/{REPO}/blobs/uploads/?digest=").as_bytes(), &d]),
            )
            .body(small),
        );
        // Query values are percent-decoded: a digest that decodes to a well-formed one is a
        // real (mismatching) digest, and a failed PUT ends the session as in Distribution.
        // The session must survive the sweep, so those are not sent to it.
        let decoded = form_urlencoded::parse(&cat(&[b"d=", &d]))
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if berth_oci::Digest::parse(&decoded).is_err() {
            out.push(
                Req::new(
                    "PUT",
                    cat(&[
                        format!("/v2/{REPO}/blobs/uploads/{sid}?digest=").as_bytes(),
                        &d,
                    ]),
                )
                .body(small),
            );
        }
        // An unusable mount falls back to a plain upload session, as the spec allows; query
        // values are percent-decoded, so `%73ha256:<hex>` names the layer and mounts it.
        out.push(
            Req::new(
                "POST",
                cat(&[
                    format!("/v2/{REPO}/blobs/uploads/?from={REPO}&mount=").as_bytes(),
                    &d,
                ]),
            )
            .also(&[201, 202]),
        );
    }

    for id in ids(sid) {
        let p = cat(&[format!("/v2/{REPO}/blobs/uploads/").as_bytes(), &id]);
        out.push(Req::new("GET", p.clone()));
        out.push(Req::new("HEAD", p.clone()));
        out.push(Req::new("PATCH", p.clone()).body(small));
        out.push(
            Req::new(
                "PUT",
                cat(&[p.as_slice(), format!("?digest={small_digest}").as_bytes()]),
            )
            .body(small),
        );
        out.push(Req::new("DELETE", p));
    }

    // Pagination: an invalid `n` is refused; `last` is only compared, so any value is a
    // (possibly empty) page.
    let bad_n = [
        "-1",
        "abc",
        "1e3",
        "99999999999999999999999",
        "%00",
        "0x10",
        "%20%201",
        "../..",
        "1.5",
        "%2e%2e",
        "1001",
    ];
    for n in bad_n {
        out.push(Req::new("GET", format!("/v2/_catalog?n={n}")));
        if n != "1001" {
            out.push(Req::new("GET", format!("/v2/{REPO}/tags/list?n={n}")));
        }
    }
    for last in names().into_iter().chain(references(hex)) {
        let q = cat(&[b"?n=5&last=", &last]);
        out.push(Req::new("GET", cat(&[b"/v2/_catalog", &q])).also(&[200]));
        out.push(
            Req::new(
                "GET",
                cat(&[format!("/v2/{REPO}/tags/list").as_bytes(), &q]),
            )
            .also(&[200]),
        );
    }
    out.push(
        Req::new(
            "GET",
            format!("/v2/{REPO}/referrers/{man}?artifactType=../../pwned"),
        )
        .also(&[200]),
    );

    // Hostile header values. A malformed or multi-part Range is ignored (RFC 9110), so the
    // whole blob is a valid answer.
    for range in [
        "bytes=-0",
        "bytes=99999999999999999999-",
        "bytes=5-1",
        "bytes=3000-",
        "bytes=18446744073709551615-18446744073709551615",
    ] {
        out.push(
            Req::new("GET", format!("/v2/{REPO}/blobs/{layer}"))
                .header("Range", range)
                .also(&[200, 206]),
        );
    }
    for range in [
        "bytes=a-b",
        "bytes=0-1,2-3",
        "items=0-1",
        "bytes=--1",
        "bytes=0-0",
    ] {
        out.push(
            Req::new("GET", format!("/v2/{REPO}/blobs/{layer}"))
                .header("Range", range)
                .also(&[200, 206]),
        );
    }
    for cr in [
        "5-10",
        "10-5",
        "-1",
        "bytes */*",
        "99999999999999999999-1",
        "0-99999999999999999999",
        "../..",
    ] {
        out.push(
            Req::new("PATCH", format!("/v2/{REPO}/blobs/uploads/{sid}"))
                .header("Content-Range", cr)
                .body(small),
        );
    }
    // A Content-Type that names no manifest type does not contradict the body's mediaType.
    out.push(
        Req::new("PUT", format!("/v2/{REPO}/manifests/hostile"))
            .header("Content-Type", "../../pwned")
            .body(&f.manifest)
            .also(&[201]),
    );
    for ct in [
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json; charset=\u{1}",
    ] {
        out.push(
            Req::new("PUT", format!("/v2/{REPO}/manifests/hostile"))
                .header("Content-Type", ct)
                .body(&f.manifest),
        );
    }
    // Not the API, or not HTTP as berth speaks it.
    for (m, t) in [
        ("GET", "/v2/../../pwned"),
        ("GET", "/../../../pwned"),
        ("GET", "../../pwned"),
        ("GET", "*"),
        ("GET", "http://evil.example/v2/../../pwned/manifests/x"),
        ("OPTIONS", "/v2/valid/repo/manifests/latest"),
        ("TRACE", "/v2/valid/repo/manifests/latest"),
        ("PROPFIND", "/v2/valid/repo/blobs/uploads/"),
        ("CONNECT", "127.0.0.1:1"),
        ("GET", "/v2/_catalog/../../pwned"),
        ("DELETE", "/v2/_catalog"),
        ("PUT", "/v2/"),
        ("GET", "/v2/valid/repo/tags/list/../../../../pwned"),
    ] {
        out.push(Req::new(m, t));
    }
    out.push(Req::new("G\x01T", "/v2/"));
    out.push(Req::new("GET", b"/v2/\x7f/manifests/x".to_vec()));
    out.push(Req::new(
        "GET",
        b"/v2/a\r\nX-Injected: 1/manifests/x".to_vec(),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_touch_nothing_outside_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let outer = tmp.path().join("outer");
    let root = outer.join("root");
    std::fs::create_dir_all(&root).unwrap();
    // Canaries: beside the root, in its parent and grandparent, and in a sibling whose name
    // starts with the root's (a prefix check that forgets the separator would accept it).
    for (path, text) in [
        (tmp.path().join("canary"), "grandparent canary"),
        (outer.join("canary"), "parent canary"),
        (outer.join("secret"), "root/../secret"),
        (outer.join("root2/canary"), "prefix sibling"),
        (
            outer.join("root2/docker/registry/v2/canary"),
            "prefix sibling tree",
        ),
        (outer.join("pwned-not"), "the marker's neighbour"),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let f = start(&root).await;
    let before = snapshot(tmp.path(), &root);
    let tmp_parent = tmp.path().parent().unwrap().to_owned();
    let marked_before = marked(&tmp_parent, "pwned");

    let requests = requests(&f);
    let total = requests.len();
    let mut failures = Vec::new();
    let mut statuses = BTreeMap::new();
    // Eight at a time: quick, and still one fresh connection per request.
    for batch in requests.chunks(8) {
        let results = futures_util::future::join_all(batch.iter().map(|r| send(f.addr, r))).await;
        for (req, res) in batch.iter().zip(results) {
            if let Ok(a) = &res {
                *statuses.entry(a.status).or_insert(0usize) += 1;
            }
            if let Some(problem) = judge(req, res) {
                failures.push(problem);
            }
        }
    }
    eprintln!(
        "hostile: {total} requests sent, {} unacceptable answers; statuses {statuses:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} hostile requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing outside the root changed, appeared or vanished.
    let after = snapshot(tmp.path(), &root);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "entries outside the root appeared or vanished"
    );
    for (path, seen) in &before {
        assert_eq!(Some(seen), after.get(path), "{} changed", path.display());
    }
    assert_eq!(
        marked(&tmp_parent, "pwned"),
        marked_before,
        "something named by a hostile request appeared beside the temporary directory"
    );

    // Inside the root: only Distribution's tree, and only the one repository pushed.
    for entry in common::entries_under(&root) {
        assert!(
            ["docker/", "docker/registry/", "docker/registry/v2/"].contains(&entry.as_str())
                || entry.starts_with("docker/registry/v2/blobs/")
                || entry.starts_with("docker/registry/v2/repositories/")
                // Garbage collection's pins, written by every push (berth-registry's pins.rs).
                || entry.starts_with("docker/registry/v2/_berth/"),
            "unexpected entry in the root: {entry}"
        );
    }
    let repos = root.join("docker/registry/v2/repositories");
    let top: Vec<String> = std::fs::read_dir(&repos)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["valid"], "repositories created by hostile requests");
    let second: Vec<String> = std::fs::read_dir(repos.join("valid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(second, ["repo"], "repositories created by hostile requests");

    // The image pushed before the sweep is intact: no hostile DELETE reached it.
    let r = send(
        f.addr,
        &Req::new("GET", format!("/v2/{REPO}/manifests/latest")),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, f.manifest);
    let r = send(
        f.addr,
        &Req::new("GET", format!("/v2/{REPO}/blobs/{}", f.layer_digest)),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, f.layer);
    let r = send(
        f.addr,
        &Req::new("GET", format!("/v2/{REPO}/blobs/uploads/{}", f.session)),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204, "the session survived the sweep");
}

/// `Content-Range: 0-18446744073709551615` claims a chunk of 2^64 bytes, whose length does
/// not fit in a u64: it must be refused like any other impossible range, not overflow (a
/// debug build panicked and dropped the connection without an answer until a102fd6).
#[tokio::test]
async fn content_range_of_the_whole_u64_space_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = start(&tmp.path().join("root")).await;
    for length in ["0", "7"] {
        let r = send(
            f.addr,
            &Req::new("PATCH", format!("/v2/{REPO}/blobs/uploads/{}", f.session))
                .header("Content-Range", "0-18446744073709551615")
                .header("Content-Length", length)
                .body(&b"hostile"[..length.parse::<usize>().unwrap()]),
        )
        .await;
        let r = r.unwrap_or_else(|e| panic!("Content-Length {length}: {e}"));
        assert!(
            (400..500).contains(&r.status),
            "Content-Length {length}: status {}",
            r.status
        );
    }
    let r = send(
        f.addr,
        &Req::new("GET", format!("/v2/{REPO}/blobs/uploads/{}", f.session)),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["range"], "0-0", "nothing was appended");
}
