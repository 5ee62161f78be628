//! The registry API calls the workload makes, written once against the Distribution spec so
//! both registries see byte-identical requests: blob uploads (monolithic and chunked, always
//! following the `Location` returned), manifest pushes, verified blob pulls and timed GETs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::{Body, Client, StatusCode, Url, header};
use sha2::{Digest as _, Sha256};

use crate::data::{Content, digest_of};

/// What `docker pull` sends in `Accept` when it fetches a manifest by tag.
pub const DOCKER_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws, \
application/json";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Clone)]
pub struct Registry {
    pub http: Client,
    pub base: Url,
}

/// A pushed blob's descriptor fields.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub digest: String,
    pub size: u64,
}

impl Registry {
    pub fn new(base: &str) -> Result<Self> {
        let base = Url::parse(base).with_context(|| format!("registry URL {base:?}"))?;
        let http = Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .connect_timeout(Duration::from_secs(10))
            .user_agent("berth-bench/0.1")
            .build()
            .context("building the HTTP client")?;
        Ok(Registry { http, base })
    }

    pub fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("joining {path:?} to {}", self.base))
    }

    /// Waits until `GET /v2/` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = self.url("/v2/")?;
        loop {
            if let Ok(r) = self.http.get(url.clone()).send().await
                && r.status() == StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{url} did not answer 200 within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/`: the session URL from `Location`.
    pub async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        let r = self
            .http
            .post(url.clone())
            .header(header::CONTENT_LENGTH, 0)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        ensure!(
            r.status() == StatusCode::ACCEPTED,
            "POST {url}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        self.location(&r)
    }

    /// The `Location` header, absolute (Distribution) or a path (berth with relativeurls).
    fn location(&self, r: &reqwest::Response) -> Result<Url> {
        let loc = r
            .headers()
            .get(header::LOCATION)
            .context("no Location header")?
            .to_str()
            .context("Location is not ASCII")?;
        self.base
            .join(loc)
            .with_context(|| format!("bad Location {loc:?}"))
    }

    /// The session URL with `digest=` appended to whatever query it already carries
    /// (Distribution's `_state` parameters).
    fn with_digest(mut session: Url, digest: &str) -> Url {
        session.query_pairs_mut().append_pair("digest", digest);
        session
    }

    async fn finish(&self, session: Url, digest: &str, body: Body, len: u64) -> Result<()> {
        let url = Self::with_digest(session, digest);
        let r = self
            .http
            .put(url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        ensure!(
            r.status() == StatusCode::CREATED,
            "PUT {url}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Monolithic push: POST, then one PUT carrying the whole blob.
    pub async fn push_monolithic(&self, repo: &str, blob: &Content) -> Result<()> {
        let session = self.start_upload(repo).await?;
        self.finish(
            session,
            &blob.digest,
            Body::from(blob.bytes.clone()),
            blob.len(),
        )
        .await
    }

    /// Push of a small in-memory blob (POST + PUT).
    pub async fn push_bytes(&self, repo: &str, bytes: Vec<u8>) -> Result<Pushed> {
        let digest = digest_of(&bytes);
        let size = bytes.len() as u64;
        let session = self.start_upload(repo).await?;
        self.finish(session, &digest, Body::from(bytes), size)
            .await?;
        Ok(Pushed { digest, size })
    }

    /// Chunked push: POST, PATCH chunks of `chunk` bytes with `Content-Range: a-b`, each to
    /// the `Location` the previous answer gave, then an empty PUT with the digest.
    pub async fn push_chunked(&self, repo: &str, blob: &Content, chunk: u64) -> Result<()> {
        let mut session = self.start_upload(repo).await?;
        let mut offset = 0u64;
        while offset < blob.len() {
            let len = chunk.min(blob.len() - offset);
            let bytes = blob.bytes.slice(offset as usize..(offset + len) as usize);
            let end = offset + len - 1;
            let r = self
                .http
                .patch(session.clone())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_RANGE, format!("{offset}-{end}"))
                .header(header::CONTENT_LENGTH, len)
                .body(bytes)
                .send()
                .await
                .with_context(|| format!("PATCH {session}"))?;
            ensure!(
                r.status() == StatusCode::ACCEPTED,
                "PATCH {session} at {offset}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
            session = self.location(&r)?;
            offset += len;
        }
        self.finish(session, &blob.digest, Body::from(Vec::new()), 0)
            .await
    }

    /// `GET /v2/<repo>/blobs/<digest>`; fails unless the length matches and, with `verify`,
    /// the content's digest too. Hashing runs on its own thread, overlapping the transfer as
    /// a pulling client's does, so it bounds the rate only where it is slower than the wire.
    pub async fn pull(&self, repo: &str, digest: &str, len: u64, verify: bool) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let mut r = self
            .http
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        ensure!(r.status() == StatusCode::OK, "GET {url}: {}", r.status());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
        let hasher = verify.then(|| {
            tokio::task::spawn_blocking(move || {
                let mut hasher = Sha256::new();
                while let Some(chunk) = rx.blocking_recv() {
                    hasher.update(&chunk);
                }
                format!("sha256:{}", hex::encode(hasher.finalize()))
            })
        });
        let mut got = 0u64;
        while let Some(chunk) = r.chunk().await.with_context(|| format!("reading {url}"))? {
            got += chunk.len() as u64;
            if hasher.is_some() {
                tx.send(chunk).await.context("hashing thread stopped")?;
            }
        }
        drop(tx);
        ensure!(got == len, "GET {url}: {got} bytes, expected {len}");
        if let Some(hasher) = hasher {
            let actual = hasher.await.context("hashing thread panicked")?;
            ensure!(actual == digest, "GET {url}: content digest {actual}");
        }
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let r = self
            .http
            .put(url.clone())
            .header(header::CONTENT_TYPE, media_type)
            .body(body.to_vec())
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        ensure!(
            r.status() == StatusCode::CREATED,
            "PUT {url}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// A timed GET whose answer must be 200; returns the latency and the body.
    pub async fn timed_get(&self, path: &str, accept: Option<&str>) -> Result<(Duration, Vec<u8>)> {
        let url = self.url(path)?;
        let start = Instant::now();
        let mut req = self.http.get(url.clone());
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let r = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = r.status();
        let body = r.bytes().await.with_context(|| format!("reading {url}"))?;
        let elapsed = start.elapsed();
        ensure!(status == StatusCode::OK, "GET {url}: {status}");
        Ok((elapsed, body.to_vec()))
    }
}

/// A Docker schema 2 image manifest naming `config` and `layers`.
pub fn docker_manifest(config: &Pushed, layers: &[Pushed]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": l.size,
                "digest": l.digest,
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": config.size,
            "digest": config.digest,
        },
        "layers": layers,
    }))
    .unwrap_or_default()
}

/// An OCI image manifest; `index` goes into an annotation so every one is distinct.
pub fn oci_manifest(config: &Pushed, layer: &Pushed, index: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.size,
            "digest": config.digest,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "size": layer.size,
            "digest": layer.digest,
        }],
        "annotations": { "org.berth.bench.index": index.to_string() },
    }))
    .unwrap_or_default()
}

/// A small image config naming one layer; `seed` makes it unique.
pub fn image_config(layer_digest: &str, seed: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": [format!("BENCH_SEED={seed}")] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .unwrap_or_default()
}
