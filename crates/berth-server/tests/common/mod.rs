//! Shared helpers for the HTTP integration tests: a real berth server on a loopback socket
//! over a temporary directory (served by the production accept loop, through the test kit), a
//! client whose every response is checked for the headers the API promises on all responses,
//! the kit's raw-socket client for paths an URL library would normalise, and helpers to push
//! blobs and manifests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_registry::Options;
use berth_server::HttpOptions;
use berth_tests::in_process::{self, Served};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub use berth_tests::content::media::*;
pub use berth_tests::content::{descriptor, to_body};
#[allow(unused_imports, reason = "each test binary uses some of them")]
pub use berth_tests::{content, hex_of, sha256, sha512};

/// The path every storage file must live under.
pub const V2: &str = "docker/registry/v2";

/// A server under test.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    dir: Arc<TempDir>,
    _served: Served,
}

/// Options with deletes allowed.
pub fn delete_enabled() -> Options {
    Options {
        delete_enabled: true,
        ..Options::default()
    }
}

impl TestServer {
    /// A server over a fresh temporary directory with default HTTP options.
    pub async fn start(options: Options) -> Self {
        Self::start_with(options, HttpOptions::default()).await
    }

    /// A server over a fresh temporary directory.
    pub async fn start_with(options: Options, http: HttpOptions) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::start_on(dir, options, http).await
    }

    /// A server over an existing directory (another server may share it). Storage lives in
    /// `<dir>/storage`, so a write that escaped the storage root would show up in `<dir>`.
    pub async fn start_on(dir: Arc<TempDir>, options: Options, http: HttpOptions) -> Self {
        let served = in_process::serve(&dir.path().join("storage"), options, http).await;
        let addr = served.addr;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        TestServer {
            base: format!("http://{addr}"),
            addr,
            client,
            dir,
            _served: served,
        }
    }

    /// The temporary directory (shareable with a second server).
    pub fn dir(&self) -> Arc<TempDir> {
        self.dir.clone()
    }

    /// The storage root the driver serves.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// `<root>/docker/registry/v2`
    pub fn v2(&self) -> PathBuf {
        self.root().join(V2)
    }

    /// An absolute URL for a path, or the URL itself when already absolute.
    pub fn url(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_owned()
        } else {
            format!("{}{}", self.base, target)
        }
    }

    /// The path part of a `Location` this server sent for a request with the default host.
    pub fn path_of(&self, location: &str) -> String {
        location
            .strip_prefix(&self.base)
            .unwrap_or_else(|| panic!("Location {location:?} is not on {}", self.base))
            .to_owned()
    }

    pub fn request(&self, method: Method, target: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(target))
    }

    /// Sends a request, collects the whole response, and checks the API version header.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let request = request.build().expect("request builds");
        let method = request.method().clone();
        let url = request.url().to_string();
        let response = self.client.execute(request).await.unwrap_or_else(|e| {
            panic!("{method} {url}: request failed: {e:?}");
        });
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body failed: {e:?}"));
        Resp::new(method.to_string(), url, status, headers, body)
    }

    pub async fn get(&self, target: &str) -> Resp {
        self.send(self.request(Method::GET, target)).await
    }

    pub async fn head(&self, target: &str) -> Resp {
        self.send(self.request(Method::HEAD, target)).await
    }

    pub async fn delete(&self, target: &str) -> Resp {
        self.send(self.request(Method::DELETE, target)).await
    }

    pub async fn post(&self, target: &str) -> Resp {
        self.send(self.request(Method::POST, target)).await
    }

    /// Sends `request_target` verbatim on a fresh connection (no URL normalisation), with
    /// `Connection: close`, and parses the response.
    pub async fn raw(
        &self,
        method: &str,
        request_target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut conn = berth_tests::raw::Conn::connect(self.addr)
            .await
            .expect("connect");
        let mut all = headers.to_vec();
        all.push(("Connection", "close"));
        let r = conn
            .request(method, request_target, &all, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {request_target}: {e}"));
        let mut map = HeaderMap::new();
        for (n, v) in &r.headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).expect("header name"),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        Resp::new(
            method.to_owned(),
            format!("raw:{request_target}"),
            StatusCode::from_u16(r.status).expect("status"),
            map,
            Bytes::from(r.body),
        )
    }

    // ---- pushing -----------------------------------------------------------------------

    /// Pushes a blob in one `POST ?digest=`; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let r = self
            .send(
                self.request(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                )
                .body(data.to_vec()),
            )
            .await;
        r.assert_status(201);
        assert_eq!(r.h("docker-content-digest"), digest);
        digest
    }

    /// Starts an upload session; returns its `Location` as sent.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self.post(&format!("/v2/{repo}/blobs/uploads/")).await;
        r.assert_status(202);
        r.h("location").to_owned()
    }

    /// Sends one chunk with a `Content-Range`.
    pub async fn patch_chunk(&self, location: &str, start: usize, chunk: &[u8]) -> Resp {
        let range = format!("{}-{}", start, start + chunk.len() - 1);
        self.send(
            self.request(Method::PATCH, location)
                .header("content-type", "application/octet-stream")
                .header("content-range", range)
                .body(chunk.to_vec()),
        )
        .await
    }

    /// `PUT <location>?digest=<digest>` with an optional last chunk.
    pub async fn finish_upload(&self, location: &str, digest: &str, body: &[u8]) -> Resp {
        let sep = if location.contains('?') { '&' } else { '?' };
        self.send(
            self.request(Method::PUT, &format!("{location}{sep}digest={digest}"))
                .header("content-type", "application/octet-stream")
                .body(body.to_vec()),
        )
        .await
    }

    /// Pushes a blob as POST, PATCHes of `chunk` bytes with `Content-Range`, then PUT.
    pub async fn push_blob_chunked(&self, repo: &str, data: &[u8], chunk: usize) -> String {
        let digest = sha256(data);
        let location = self.start_upload(repo).await;
        let mut location = location;
        for (i, part) in data.chunks(chunk).enumerate() {
            let r = self.patch_chunk(&location, i * chunk, part).await;
            r.assert_status(202);
            assert_eq!(
                r.h("range"),
                format!("0-{}", i * chunk + part.len() - 1),
                "{}",
                r.describe()
            );
            location = r.h("location").to_owned();
        }
        let r = self.finish_upload(&location, &digest, b"").await;
        r.assert_status(201);
        assert_eq!(r.h("docker-content-digest"), digest);
        digest
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with a Content-Type.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Resp {
        let mut request = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .body(body.to_vec());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        self.send(request).await
    }

    /// Puts a manifest that must be accepted; returns its digest.
    pub async fn put_manifest_ok(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        body: &[u8],
    ) -> String {
        let r = self
            .put_manifest(repo, reference, Some(content_type), body)
            .await;
        r.assert_status(201);
        let digest = sha256(body);
        assert_eq!(r.h("docker-content-digest"), digest, "{}", r.describe());
        digest
    }

    /// Pushes a config and one layer (seeded by `seed`) and a Docker schema 2 manifest for
    /// them under `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: u8) -> Image {
        let config = to_body(&json!({ "architecture": "amd64", "os": "linux", "seed": seed }));
        let layer = content(seed.into(), 1000 + seed as usize);
        self.push_blob(repo, &config).await;
        self.push_blob(repo, &layer).await;
        let manifest = to_body(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor(DOCKER_CONFIG, &config),
            "layers": [descriptor(DOCKER_LAYER, &layer)],
        }));
        let digest = self
            .put_manifest_ok(repo, tag, DOCKER_MANIFEST, &manifest)
            .await;
        Image {
            config,
            layer,
            manifest,
            digest,
        }
    }

    /// `GET /v2/<repo>/tags/list`'s tags, asserting success.
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.get(&format!("/v2/{repo}/tags/list")).await;
        r.assert_status(200);
        let v = r.json();
        assert_eq!(v["name"], repo);
        v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t.as_str().expect("tag is a string").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Regular files under the storage root, relative and sorted.
    pub fn files(&self) -> Vec<String> {
        files_under(&self.root())
    }
}

/// What [`TestServer::push_image`] pushed.
pub struct Image {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

/// Every entry (files and directories) under `root`, relative and sorted.
pub fn entries_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>, files_only: bool) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let e = e.expect("dir entry");
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                if !files_only {
                    out.push(format!("{rel}/"));
                }
                walk(root, &p, out, files_only);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out, false);
    out.sort();
    out
}

/// Regular files (and anything else that is not a directory) under `root`.
pub fn files_under(root: &Path) -> Vec<String> {
    entries_under(root)
        .into_iter()
        .filter(|e| !e.ends_with('/'))
        .collect()
}

/// A collected response.
pub struct Resp {
    pub method: String,
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    fn new(
        method: String,
        url: String,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    ) -> Self {
        let r = Resp {
            method,
            url,
            status,
            headers,
            body,
        };
        // Every response, errors and 404s included, names the API version.
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "missing Docker-Distribution-API-Version: {}",
            r.describe()
        );
        r
    }

    /// One line for assertion messages.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(600)]).into_owned();
        format!(
            "{} {} -> {} {:?} body={body:?}",
            self.method, self.url, self.status, self.headers
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// A header that must be present.
    pub fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header: {}", self.describe()))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.describe()))
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.describe());
        self
    }

    /// The status, a JSON content type and `{"errors":[{"code": code, "message": ...}]}`.
    pub fn assert_error(&self, status: u16, code: &str) {
        self.assert_status(status);
        self.assert_error_body(code);
    }

    /// The error body alone (for when the status is asserted separately).
    pub fn assert_error_body(&self, code: &str) {
        let ct = self.h("content-type");
        assert!(
            ct.starts_with("application/json"),
            "error Content-Type {ct:?}: {}",
            self.describe()
        );
        let v = self.json();
        let errors = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {}", self.describe()));
        assert!(!errors.is_empty(), "empty errors: {}", self.describe());
        assert_eq!(errors[0]["code"], code, "{}", self.describe());
        assert!(
            errors[0]["message"].is_string(),
            "no message: {}",
            self.describe()
        );
    }

    /// The first error's code, for tests that only need it to be some code.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {}", self.describe()))
            .to_owned()
    }

    /// The target of a `Link: <...>; rel="next"` header, if any.
    pub fn next_link(&self) -> Option<String> {
        let link = self.header("link")?;
        assert!(
            link.ends_with("; rel=\"next\""),
            "Link {link:?}: {}",
            self.describe()
        );
        let start = link.find('<').expect("Link has <") + 1;
        let end = link.find('>').expect("Link has >");
        Some(link[start..end].to_owned())
    }
}
