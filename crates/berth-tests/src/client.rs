//! A registry client for the torture tests. Every call says whether it failed because the
//! connection died (`Fail::Transport`: expected only after a kill) or because berth answered
//! something unexpected (`Fail::Status`: always worth reporting), and the upload routines
//! report each step (session opened, chunk acknowledged) so a test that kills berth knows what
//! the client believed it had sent.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode, Url, header::HeaderMap};
use sha2::Digest as _;

use crate::sha256;

/// Why a request did not give what was expected.
#[derive(Debug)]
pub enum Fail {
    /// No HTTP answer: refused, reset, or cut mid-body.
    Transport {
        /// What was being done.
        what: String,
        /// The client's error chain.
        error: String,
    },
    /// An HTTP answer, but not the expected one.
    Status {
        /// What was being done.
        what: String,
        /// The status received.
        status: u16,
        /// `Content-Type` of the answer.
        content_type: String,
        /// The body received (errors are small JSON documents).
        body: String,
    },
}

impl Fail {
    /// True for a dead connection rather than an answer.
    pub fn is_transport(&self) -> bool {
        matches!(self, Fail::Transport { .. })
    }

    /// The HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Fail::Status { status, .. } => Some(*status),
            Fail::Transport { .. } => None,
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Transport { what, error } => write!(f, "{what}: no answer: {error}"),
            Fail::Status {
                what, status, body, ..
            } => write!(f, "{what}: HTTP {status}: {body}"),
        }
    }
}

impl std::error::Error for Fail {}

fn transport(what: &str, e: &reqwest::Error) -> Fail {
    let mut error = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        error.push_str(": ");
        error.push_str(&s.to_string());
        source = s.source();
    }
    Fail::Transport {
        what: what.to_owned(),
        error,
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// A header's value, or "" when absent.
    pub fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn fail(self, what: &str) -> Fail {
        Fail::Status {
            what: what.to_owned(),
            status: self.status,
            content_type: self.h("content-type").to_owned(),
            body: String::from_utf8_lossy(&self.body)
                .chars()
                .take(2000)
                .collect(),
        }
    }
}

/// How a blob is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    /// `POST /blobs/uploads/?digest=` with the whole blob as the body.
    Monolithic,
    /// `POST`, then `PATCH`es with `Content-Range`, then `PUT ?digest=` (possibly with the
    /// last chunk as its body).
    Chunked {
        /// Bytes per PATCH.
        chunk: usize,
        /// Send the last chunk as the PUT's body rather than in a PATCH.
        last_in_put: bool,
    },
    /// `POST`, one `PATCH` whose body is streamed with chunked transfer encoding (no length),
    /// then `PUT ?digest=`.
    Streamed {
        /// Bytes per piece of the stream.
        piece: usize,
    },
}

/// What an upload has got to, reported as it happens.
#[derive(Debug, Clone)]
pub enum UploadEvent {
    /// A session exists at this path (from the `Location` header, without scheme and host).
    Opened {
        /// Path and query of the session.
        path: String,
    },
    /// berth answered 202 to a PATCH: it holds this many bytes.
    Acked {
        /// Bytes the session holds.
        offset: u64,
    },
}

/// A client of one berth instance.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client for `base` (`http://127.0.0.1:<port>`). Every request is bounded in time, so
    /// a hang is a failure and not a stuck test.
    pub fn new(base: &str) -> anyhow::Result<Client> {
        Self::build(base, true)
    }

    /// A client opening a new connection for every request. Tests that provoke refusals
    /// use it so that each request is judged on its own: a connection berth dropped after
    /// refusing one request does not fail the next (`tests/refusals.rs` tests that apart).
    pub fn without_reuse(base: &str) -> anyhow::Result<Client> {
        Self::build(base, false)
    }

    fn build(base: &str, reuse: bool) -> anyhow::Result<Client> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if !reuse {
            b = b.pool_max_idle_per_host(0);
        }
        Ok(Client {
            http: b.build()?,
            base: Url::parse(base)?,
        })
    }

    /// An absolute URL for a path (and query) on this server.
    pub fn url(&self, path: &str) -> anyhow::Result<Url> {
        Ok(self.base.join(path)?)
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<reqwest::Body>,
    ) -> Result<Resp, Fail> {
        let what = format!("{method} {path}");
        let url = self.url(path).map_err(|e| Fail::Transport {
            what: what.clone(),
            error: e.to_string(),
        })?;
        self.send_url(method, url, headers, body, &what).await
    }

    async fn send_url(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, String)],
        body: Option<reqwest::Body>,
        what: &str,
    ) -> Result<Resp, Fail> {
        let mut rb = self.http.request(method, url);
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = rb.send().await.map_err(|e| transport(what, &e))?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.map_err(|e| transport(what, &e))?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// `GET` a blob, hashing it as it streams: `Ok(None)` for 404, else its length and digest.
    pub async fn blob_digest(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<(u64, String)>, Fail> {
        let what = format!("GET /v2/{repo}/blobs/{digest}");
        let url = self
            .url(&format!("/v2/{repo}/blobs/{digest}"))
            .map_err(|e| Fail::Transport {
                what: what.clone(),
                error: e.to_string(),
            })?;
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| transport(&what, &e))?;
        match r.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => {
                let headers = r.headers().clone();
                let body = r.bytes().await.unwrap_or_default();
                return Err(Resp {
                    status: status.as_u16(),
                    headers,
                    body,
                }
                .fail(&what));
            }
        }
        let mut hasher = sha2::Sha256::new();
        let mut len = 0u64;
        let mut stream = r.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(&what, &e))?;
            len += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Some((
            len,
            format!("sha256:{}", hex::encode(hasher.finalize())),
        )))
    }

    /// `HEAD` a blob: its status.
    pub async fn blob_head(&self, repo: &str, digest: &str) -> Result<u16, Fail> {
        let r = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                None,
            )
            .await?;
        Ok(r.status)
    }

    /// Pushes a 700-byte config and a 64 KiB layer (content from `seed`) to `repo`, each in
    /// one request, and returns their descriptors: the blobs a test manifest names.
    pub async fn push_config_and_layer(
        &self,
        repo: &str,
        seed: u64,
    ) -> Result<(crate::Desc, crate::Desc), Fail> {
        let config = self.push_seeded(repo, seed, 700).await?;
        let layer = self.push_seeded(repo, seed + 1, 64 * 1024).await?;
        Ok((config, layer))
    }

    /// Pushes `len` bytes of content from `seed` in one request.
    async fn push_seeded(&self, repo: &str, seed: u64, len: usize) -> Result<crate::Desc, Fail> {
        let data = Bytes::from(crate::content(seed, len));
        let digest = self
            .push_blob(repo, &data, UploadKind::Monolithic, &|_| {})
            .await?;
        Ok(crate::Desc {
            digest,
            size: len as u64,
        })
    }

    /// Uploads `data` to `repo` the way `kind` says, reporting progress to `on`. Returns the
    /// digest berth confirmed with 201.
    pub async fn push_blob(
        &self,
        repo: &str,
        data: &[u8],
        kind: UploadKind,
        on: &(dyn Fn(UploadEvent) + Send + Sync),
    ) -> Result<String, Fail> {
        let digest = sha256(data);
        // One copy, so that chunks below are cheap slices of it.
        let data = Bytes::copy_from_slice(data);
        match kind {
            UploadKind::Monolithic => {
                let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
                let r = self
                    .send(
                        Method::POST,
                        &path,
                        &[("content-type", "application/octet-stream".into())],
                        Some(reqwest::Body::from(data.clone())),
                    )
                    .await?;
                expect_created(r, &format!("POST {path}"), &digest)
            }
            UploadKind::Chunked { chunk, last_in_put } => {
                let path = self.start_upload(repo).await?;
                on(UploadEvent::Opened { path: path.clone() });
                let chunk = chunk.max(1);
                let mut offset = 0usize;
                let last_start = if last_in_put && !data.is_empty() {
                    (data.len() - 1) / chunk * chunk
                } else {
                    data.len()
                };
                while offset < last_start {
                    let end = (offset + chunk).min(last_start);
                    let held = self
                        .patch(&path, offset as u64, data.slice(offset..end))
                        .await?;
                    if held != end as u64 {
                        return Err(Fail::Status {
                            what: format!("PATCH {path}"),
                            status: 202,
                            content_type: String::new(),
                            body: format!("Range says {held} bytes held, expected {end}"),
                        });
                    }
                    on(UploadEvent::Acked { offset: held });
                    offset = end;
                }
                self.finish(&path, &digest, data.slice(offset..)).await?;
                Ok(digest)
            }
            UploadKind::Streamed { piece } => {
                let path = self.start_upload(repo).await?;
                on(UploadEvent::Opened { path: path.clone() });
                let piece = piece.max(1);
                let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
                    .step_by(piece)
                    .map(|i| Ok(data.slice(i..(i + piece).min(data.len()))))
                    .collect();
                let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
                let r = self.send(Method::PATCH, &path, &[], Some(body)).await?;
                if r.status != 202 {
                    return Err(r.fail(&format!("PATCH {path} (streamed)")));
                }
                let held = range_size(r.h("range"));
                if held != Some(data.len() as u64) {
                    return Err(Fail::Status {
                        what: format!("PATCH {path} (streamed)"),
                        status: 202,
                        content_type: String::new(),
                        body: format!("Range {:?}, expected {} bytes", r.h("range"), data.len()),
                    });
                }
                on(UploadEvent::Acked {
                    offset: data.len() as u64,
                });
                self.finish(&path, &digest, Bytes::new()).await?;
                Ok(digest)
            }
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/`: the new session's path.
    pub async fn start_upload(&self, repo: &str) -> Result<String, Fail> {
        let path = format!("/v2/{repo}/blobs/uploads/");
        let r = self.send(Method::POST, &path, &[], None).await?;
        if r.status != 202 {
            return Err(r.fail(&format!("POST {path}")));
        }
        let location = r.h("location").to_owned();
        self.path_of(&location).map_err(|e| Fail::Status {
            what: format!("POST {path}"),
            status: 202,
            content_type: String::new(),
            body: format!("unusable Location {location:?}: {e}"),
        })
    }

    /// The path and query of a `Location`, absolute or not, so it can be used against another
    /// instance (a restarted berth listens on another port).
    pub fn path_of(&self, location: &str) -> anyhow::Result<String> {
        let url = self.base.join(location)?;
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// One `PATCH` with `Content-Range` starting at `start`: the size berth then reports.
    pub async fn patch(
        &self,
        path: &str,
        start: u64,
        chunk: impl Into<Bytes>,
    ) -> Result<u64, Fail> {
        let chunk: Bytes = chunk.into();
        let what = format!("PATCH {path} from {start}");
        if chunk.is_empty() {
            return Ok(start);
        }
        let end = start + chunk.len() as u64 - 1;
        let r = self
            .send(
                Method::PATCH,
                path,
                &[
                    ("content-range", format!("{start}-{end}")),
                    ("content-type", "application/octet-stream".into()),
                ],
                Some(reqwest::Body::from(chunk)),
            )
            .await?;
        if r.status != 202 {
            return Err(r.fail(&what));
        }
        range_size(r.h("range")).ok_or_else(|| Fail::Status {
            what,
            status: 202,
            content_type: String::new(),
            body: format!("unusable Range {:?}", r.h("range")),
        })
    }

    /// `PUT <session>?digest=` with `last` as the body: expects 201.
    pub async fn finish(
        &self,
        path: &str,
        digest: &str,
        last: impl Into<Bytes>,
    ) -> Result<(), Fail> {
        let what = format!("PUT {path}?digest={digest}");
        let mut url = self.url(path).map_err(|e| Fail::Transport {
            what: what.clone(),
            error: e.to_string(),
        })?;
        url.query_pairs_mut().append_pair("digest", digest);
        let r = self
            .send_url(
                Method::PUT,
                url,
                &[("content-type", "application/octet-stream".into())],
                Some(reqwest::Body::from(last.into())),
                &what,
            )
            .await?;
        expect_created(r, &what, digest).map(|_| ())
    }

    /// `GET <session>`: `Ok(None)` when berth no longer knows it, else the `Range` header it
    /// reports, raw: `0-0` is ambiguous (0 or 1 bytes), so callers decide how to read it.
    pub async fn upload_status(&self, path: &str) -> Result<Option<String>, Fail> {
        let r = self.send(Method::GET, path, &[], None).await?;
        match r.status {
            204 => Ok(Some(r.h("range").to_owned())),
            404 => Ok(None),
            _ => Err(r.fail(&format!("GET {path}"))),
        }
    }

    /// `PUT /v2/<repo>/manifests/<reference>`: the digest berth confirmed with 201.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        body: &[u8],
    ) -> Result<String, Fail> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let r = self
            .send(
                Method::PUT,
                &path,
                &[("content-type", crate::content::media::OCI_MANIFEST.into())],
                Some(reqwest::Body::from(body.to_vec())),
            )
            .await?;
        expect_created(r, &format!("PUT {path}"), &sha256(body))
    }

    /// `GET /v2/<repo>/manifests/<reference>`, whatever the answer.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Resp, Fail> {
        self.send(
            Method::GET,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(
                "accept",
                format!("{}, application/json", crate::content::media::OCI_MANIFEST),
            )],
            None,
        )
        .await
    }

    /// `DELETE /v2/<repo>/manifests/<reference>`, whatever the answer.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<Resp, Fail> {
        self.send(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[],
            None,
        )
        .await
    }

    /// The tags `GET /v2/<repo>/tags/list` names (one page of up to 1000).
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, Fail> {
        let path = format!("/v2/{repo}/tags/list?n=1000");
        let r = self.send(Method::GET, &path, &[], None).await?;
        if r.status != 200 {
            return Err(r.fail(&format!("GET {path}")));
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| Fail::Status {
            what: format!("GET {path}"),
            status: 200,
            content_type: String::new(),
            body: format!("not JSON: {e}"),
        })?;
        Ok(v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn expect_created(r: Resp, what: &str, digest: &str) -> Result<String, Fail> {
    if r.status != 201 {
        return Err(r.fail(what));
    }
    let got = r.h("docker-content-digest").to_owned();
    if got != digest {
        return Err(Fail::Status {
            what: what.to_owned(),
            status: 201,
            content_type: String::new(),
            body: format!("Docker-Content-Digest {got:?}, expected {digest}"),
        });
    }
    Ok(got)
}

/// The size an upload `Range: 0-<last>` header reports. `0-0` is read as 0 bytes: the
/// header cannot tell 0 from 1, and the callers never hold exactly one byte after a 202.
pub fn range_size(range: &str) -> Option<u64> {
    let (a, b) = range.trim().split_once('-')?;
    if a != "0" {
        return None;
    }
    let last: u64 = b.parse().ok()?;
    Some(if last == 0 { 0 } else { last + 1 })
}
