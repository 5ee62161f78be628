//! The pull-through cache: repositories whose content comes from an upstream registry.
//!
//! A repository whose name starts with an upstream's prefix (`hub/library/alpine` under the
//! prefix `hub`) is a window on the upstream's repository of the rest of the name
//! (`library/alpine`); Distribution's `proxy.remoteurl` is the upstream with the empty prefix,
//! which takes every repository. What the window shows is cached in the ordinary layout
//! (`berth-registry` stores it, `proxied.rs` there says what differs), so a cache on object
//! storage is shared by every replica on the bucket, and a restart keeps it.
//!
//! The rules, in the order a request meets them:
//! - Content by digest is immutable: once cached it is served without asking the upstream,
//!   and it is fetched at most once however many clients ask at the same time (`fill.rs` for
//!   blobs; a per-reference lock for manifests). Every byte is verified against its digest
//!   before it is stored or a response to it completes.
//! - A tag is the one mutable thing. Its cached answer is used for `tagttl` after the upstream
//!   last gave or confirmed it; then one HEAD (which Docker Hub does not count against pull
//!   limits) confirms it or names the new digest, fetched by digest.
//! - When the upstream cannot answer (unreachable, slower than `timeout`, 429, 5xx, refusing
//!   the credentials), whatever is cached is served, marked stale (`X-Berth-Cache: stale` and
//!   a warning log line); only what was never cached fails, with 503 and the reason.
//! - The upstream's 404 is believed: the tag or blob is gone.

mod client;
mod fill;
mod lru;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use berth_oci::{Algorithm, Digest, Hasher, RangeRequest, Reference, RepoName, Tag};
use berth_registry::{BlobRead, ByteStream, Error, ManifestRead, Page, Registry, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use client::{Failure, MANIFEST_ACCEPT, UpstreamClient};
use fill::{Fill, Fills, Outcome};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One upstream as configured.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The repository-name prefix it serves (`""`: every repository no other prefix takes).
    pub prefix: String,
    /// Its base URL (`https://registry-1.docker.io`).
    pub remote_url: String,
    /// User name and password, for Basic or the token flow.
    pub credentials: Option<(String, String)>,
    /// How long a cached tag is used before a HEAD revalidates it (zero: every pull by tag).
    pub tag_ttl: Duration,
    /// Distribution's `ttl`: cached content unused this long is evicted (`None`: never).
    pub ttl: Option<Duration>,
    /// The longest wait for a connection, an answer, or the next bytes of a body.
    pub timeout: Duration,
    /// A one-component name means `library/<name>` upstream, as on Docker Hub.
    pub implicit_library: bool,
    /// Upstream repositories that may be pulled (`x/*`: everything under `x/`; `*`: all);
    /// empty: all.
    pub repositories: Vec<String>,
}

impl UpstreamConfig {
    /// Defaults for `remote_url`, with Docker Hub's `library/` when it is Docker Hub.
    pub fn new(prefix: &str, remote_url: &str) -> UpstreamConfig {
        UpstreamConfig {
            prefix: prefix.trim_matches('/').to_owned(),
            remote_url: remote_url.to_owned(),
            credentials: None,
            tag_ttl: Duration::ZERO,
            ttl: None,
            timeout: Duration::from_secs(30),
            implicit_library: is_docker_hub(remote_url),
            repositories: Vec::new(),
        }
    }
}

/// True for Docker Hub's registry URLs.
pub fn is_docker_hub(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    matches!(
        host,
        "registry-1.docker.io" | "docker.io" | "index.docker.io" | "registry.hub.docker.com"
    )
}

/// The whole `proxy` configuration.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// The upstreams; at most one with the empty prefix.
    pub upstreams: Vec<UpstreamConfig>,
    /// Bound on the bytes of cached content (`None`: unbounded).
    pub max_size: Option<u64>,
}

/// Where a cached response came from, for the `X-Berth-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache, without asking the upstream.
    Hit,
    /// From the cache, after the upstream confirmed the tag.
    Revalidated,
    /// Fetched from the upstream now.
    Miss,
    /// From the cache because the upstream failed.
    Stale,
}

impl CacheStatus {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

/// Counters of one upstream since start; every field only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Served from the cache without asking.
    pub hits: u64,
    /// Served from the cache after a HEAD confirmed the tag.
    pub revalidated: u64,
    /// Fetched from the upstream.
    pub misses: u64,
    /// Served from the cache because the upstream failed.
    pub stale: u64,
    /// Requests to the upstream that failed (not counting 404s).
    pub errors: u64,
    /// Body bytes received from the upstream.
    pub bytes: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    revalidated: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

struct Upstream {
    config: UpstreamConfig,
    client: Arc<UpstreamClient>,
    counters: Arc<Counters>,
}

impl Upstream {
    /// The name in logs and metrics: the prefix, or the URL for the catch-all.
    fn name(&self) -> &str {
        if self.config.prefix.is_empty() {
            &self.config.remote_url
        } else {
            &self.config.prefix
        }
    }

    fn count(&self, status: CacheStatus) {
        let c = &self.counters;
        match status {
            CacheStatus::Hit => &c.hits,
            CacheStatus::Revalidated => &c.revalidated,
            CacheStatus::Miss => &c.misses,
            CacheStatus::Stale => &c.stale,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, what: &str, why: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            upstream = self.name(),
            what,
            error = why,
            "proxy: upstream failed"
        );
    }

    fn allows(&self, remote: &str) -> bool {
        let list = &self.config.repositories;
        list.is_empty()
            || list.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => remote.starts_with(prefix),
                None => p == remote,
            })
    }
}

/// A proxied repository: which upstream, and its name there.
pub struct Route {
    upstream: usize,
    remote: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.upstreams.iter().map(Upstream::name).collect();
        f.debug_struct("Proxy").field("upstreams", &names).finish()
    }
}

/// Manifest fetches are serialised per repository and reference, so concurrent first pulls
/// of one tag make one upstream request.
const MANIFEST_LOCKS: usize = 64;
/// Stripes of the locks that keep eviction of a digest apart from linking it (`digest_lock`).
const DIGEST_LOCKS: usize = 256;

/// The pull-through cache, shared by every request.
pub struct Proxy {
    registry: Registry,
    upstreams: Vec<Upstream>,
    fills: Fills,
    manifest_locks: Vec<tokio::sync::Mutex<()>>,
    digest_locks: Vec<tokio::sync::Mutex<()>>,
    /// The upstream's last answer per tag, and when: requests that waited for the lock
    /// while another asked take its answer instead of asking again.
    answers: std::sync::Mutex<HashMap<(RepoName, Tag), (std::time::Instant, Digest)>>,
    lru: lru::Lru,
}

impl Proxy {
    /// Builds the cache. Fails on an unusable upstream URL or TLS setup.
    pub fn new(registry: Registry, config: ProxyConfig) -> std::result::Result<Arc<Proxy>, String> {
        let mut upstreams = Vec::new();
        for c in config.upstreams {
            let uri: http::Uri = c
                .remote_url
                .parse()
                .map_err(|e| format!("proxy: remoteurl {:?}: {e}", c.remote_url))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!(
                    "proxy: remoteurl {:?} must be an http or https URL",
                    c.remote_url
                ));
            }
            // The URL appears in logs and in error messages to clients.
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                return Err(
                    "proxy: remoteurl must not carry credentials; use username and password".into(),
                );
            }
            if !c.prefix.is_empty() && RepoName::parse(&c.prefix).is_err() {
                return Err(format!(
                    "proxy: prefix {:?} is not a repository name component",
                    c.prefix
                ));
            }
            if upstreams
                .iter()
                .any(|u: &Upstream| u.config.prefix == c.prefix)
            {
                return Err(format!("proxy: two upstreams with prefix {:?}", c.prefix));
            }
            let client = UpstreamClient::new(&c.remote_url, c.credentials.clone(), c.timeout)?;
            upstreams.push(Upstream {
                config: c,
                client,
                counters: Arc::default(),
            });
        }
        Ok(Arc::new(Proxy {
            lru: lru::Lru::new(config.max_size),
            registry,
            upstreams,
            fills: Fills::default(),
            answers: Default::default(),
            manifest_locks: (0..MANIFEST_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            digest_locks: (0..DIGEST_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }))
    }

    /// The upstream serving `repo`, if any: the longest matching prefix. `Err` for a name
    /// under a prefix that the upstream's allow-list refuses (or the bare prefix).
    pub fn route(&self, repo: &str) -> Option<Result<Route>> {
        let (index, upstream, rest) = self
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, u)| {
                let p = &u.config.prefix;
                if p.is_empty() {
                    Some((i, u, repo))
                } else {
                    repo.strip_prefix(p.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        .map(|r| (i, u, r))
                        .or_else(|| (repo == p).then_some((i, u, "")))
                }
            })
            .max_by_key(|(_, u, _)| u.config.prefix.len())?;
        let unknown = || Error::NameUnknown {
            name: repo.to_owned(),
        };
        if rest.is_empty() {
            return Some(Err(unknown()));
        }
        let remote = if upstream.config.implicit_library && !rest.contains('/') {
            format!("library/{rest}")
        } else {
            rest.to_owned()
        };
        if !upstream.allows(&remote) {
            tracing::info!(
                upstream = upstream.name(),
                repository = repo,
                "proxy: repository not in the upstream's allow-list"
            );
            return Some(Err(unknown()));
        }
        Some(Ok(Route {
            upstream: index,
            remote,
        }))
    }

    /// True when some upstream serves `repo` (writes there are refused).
    pub fn is_proxied(&self, repo: &str) -> bool {
        self.route(repo).is_some()
    }

    /// Counters per upstream, named as in logs.
    pub fn stats(&self) -> Vec<(String, UpstreamStats)> {
        self.upstreams
            .iter()
            .map(|u| {
                let c = &u.counters;
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                (
                    u.name().to_owned(),
                    UpstreamStats {
                        hits: get(&c.hits),
                        revalidated: get(&c.revalidated),
                        misses: get(&c.misses),
                        stale: get(&c.stale),
                        errors: get(&c.errors),
                        bytes: get(&c.bytes),
                    },
                )
            })
            .collect()
    }

    /// Starts the background work: learning what is cached (for the size bound) and
    /// evicting. Call once, inside the runtime.
    pub fn start(self: &Arc<Proxy>) {
        let needed = self.lru.bounded() || self.upstreams.iter().any(|u| u.config.ttl.is_some());
        if needed {
            let proxy = self.clone();
            tokio::spawn(async move { lru::run(proxy).await });
        }
    }

    fn upstream(&self, route: &Route) -> &Upstream {
        &self.upstreams[route.upstream]
    }

    fn manifest_lock(&self, repo: &RepoName, reference: &str) -> &tokio::sync::Mutex<()> {
        &self.manifest_locks[stripe(&(repo, reference), MANIFEST_LOCKS)]
    }

    /// Held while this process links a stored blob or stores a manifest into a cached
    /// repository, and by eviction while it removes that digest: a link written to content
    /// that is existing but about to be deleted would otherwise dangle (reads would take it
    /// as not cached and fetch again, but the tree would not be sound). Fills that stream a
    /// new blob need no lock: eviction only ever deletes its own quarantined copy, never the
    /// `data` a fill writes. Replicas sharing a bucket do not share these locks; there the
    /// rare dangling link is what reads already handle.
    pub(crate) fn digest_lock(&self, digest: &Digest) -> &tokio::sync::Mutex<()> {
        &self.digest_locks[stripe(digest, DIGEST_LOCKS)]
    }

    /// Stores a fetched manifest (see `digest_lock`).
    async fn cache_manifest(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        digest: &Digest,
        body: Bytes,
    ) -> Result<()> {
        let _held = self.digest_lock(digest).lock().await;
        self.registry.cache_manifest(repo, tag, digest, body).await
    }

    fn log(&self, route: &Route, repo: &RepoName, what: &str, status: CacheStatus) {
        let upstream = self.upstream(route);
        upstream.count(status);
        match status {
            CacheStatus::Stale => tracing::warn!(
                upstream = upstream.name(),
                repository = %repo,
                what,
                cache = status.as_str(),
                "proxy: upstream unavailable, serving the cached copy"
            ),
            _ => tracing::info!(
                upstream = upstream.name(),
                repository = %repo,
                what,
                cache = status.as_str(),
                "proxy"
            ),
        }
    }

    /// A manifest of a proxied repository, by tag or digest.
    pub async fn manifest(
        &self,
        route: &Route,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(ManifestRead, CacheStatus)> {
        let what = reference.to_string();
        let (read, status) = match reference {
            Reference::Digest(digest) => self.manifest_by_digest(route, repo, digest).await?,
            Reference::Tag(tag) => self.manifest_by_tag(route, repo, tag).await?,
        };
        self.lru
            .used(&read.digest, read.body.len() as u64, repo, route.upstream);
        self.log(route, repo, &what, status);
        Ok((read, status))
    }

    async fn cached_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRead>> {
        match self
            .registry
            .get_manifest(repo, &Reference::Digest(digest.clone()))
            .await
        {
            Ok(m) => Ok(Some(m)),
            Err(Error::ManifestUnknown { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn manifest_by_digest(
        &self,
        route: &Route,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(ManifestRead, CacheStatus)> {
        if let Some(m) = self.cached_manifest(repo, digest).await? {
            return Ok((m, CacheStatus::Hit));
        }
        let _one = self.manifest_lock(repo, &digest.to_string()).lock().await;
        if let Some(m) = self.cached_manifest(repo, digest).await? {
            return Ok((m, CacheStatus::Hit));
        }
        let unknown = || Error::ManifestUnknown {
            reference: digest.to_string(),
        };
        let body = match self
            .fetch_manifest(route, &digest.to_string(), Some(digest))
            .await
        {
            Ok((body, _)) => body,
            Err(Failure::NotFound) => return Err(unknown()),
            Err(Failure::Failed(why)) => {
                return Err(self.unavailable(route, &digest.to_string(), &why));
            }
        };
        self.cache_manifest(repo, None, digest, body).await?;
        let m = self
            .cached_manifest(repo, digest)
            .await?
            .ok_or_else(unknown)?;
        Ok((m, CacheStatus::Miss))
    }

    async fn manifest_by_tag(
        &self,
        route: &Route,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(ManifestRead, CacheStatus)> {
        let upstream = self.upstream(route);
        let cached = self.cached_tag(repo, tag).await?;
        if let Some((m, confirmed)) = &cached
            && age(*confirmed) < upstream.config.tag_ttl
        {
            return Ok((m.clone(), CacheStatus::Hit));
        }
        let waited = std::time::Instant::now();
        let _one = self.manifest_lock(repo, tag.as_str()).lock().await;
        // Another request may have just confirmed or fetched it: after the TTL, or while
        // this one waited for the lock (so concurrent first pulls of a tag ask once).
        let cached = self.cached_tag(repo, tag).await?;
        if let Some((m, confirmed)) = &cached {
            if age(*confirmed) < upstream.config.tag_ttl {
                return Ok((m.clone(), CacheStatus::Hit));
            }
            if self.answered_since(repo, tag, waited).as_ref() == Some(&m.digest) {
                return Ok((m.clone(), CacheStatus::Revalidated));
            }
        }
        let stale_or = |why: String| match &cached {
            Some((m, _)) => Ok((m.clone(), CacheStatus::Stale)),
            None => Err(self.unavailable(route, tag.as_str(), &why)),
        };
        let path = format!("/v2/{}/manifests/{}", route.remote, tag.as_str());
        let head = upstream
            .client
            .send(Method::HEAD, &path, &route.remote, Some(MANIFEST_ACCEPT))
            .await;
        let named = match head {
            Err(Failure::Failed(why)) => {
                upstream.failed(tag.as_str(), &why);
                return stale_or(why);
            }
            Err(Failure::NotFound) => None,
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                return Err(Error::ManifestUnknown {
                    reference: tag.to_string(),
                });
            }
            Ok(r) if r.status().is_success() => r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Digest::parse(v).ok()),
            Ok(r) => {
                let why = format!("HEAD {path} answered {}", r.status());
                upstream.failed(tag.as_str(), &why);
                return stale_or(why);
            }
        };
        if let (Some(named), Some((m, _))) = (&named, &cached)
            && named == &m.digest
        {
            // Recorded only where it is read: with a zero tagttl every pull asks anyway.
            if !upstream.config.tag_ttl.is_zero() {
                self.registry.confirm_tag(repo, tag, named).await?;
            }
            self.answered(repo, tag, named);
            return Ok((m.clone(), CacheStatus::Revalidated));
        }
        // New (or the upstream named no digest): fetch by digest when named, so that the
        // bytes are checked against what the HEAD said.
        let fetched = match &named {
            Some(d) => {
                if let Some(m) = self.cached_manifest(repo, d).await? {
                    Ok((m.body, d.clone()))
                } else {
                    self.fetch_manifest(route, &d.to_string(), Some(d)).await
                }
            }
            None => self.fetch_manifest(route, tag.as_str(), None).await,
        };
        let (body, digest) = match fetched {
            Ok(f) => f,
            Err(Failure::NotFound) => {
                return Err(Error::ManifestUnknown {
                    reference: tag.to_string(),
                });
            }
            Err(Failure::Failed(why)) => return stale_or(why),
        };
        self.cache_manifest(repo, Some(tag), &digest, body).await?;
        self.answered(repo, tag, &digest);
        let m =
            self.cached_manifest(repo, &digest)
                .await?
                .ok_or_else(|| Error::ManifestUnknown {
                    reference: tag.to_string(),
                })?;
        Ok((m, CacheStatus::Miss))
    }

    /// The upstream just named `digest` for `tag`.
    fn answered(&self, repo: &RepoName, tag: &Tag, digest: &Digest) {
        let mut answers = lock(&self.answers);
        let now = std::time::Instant::now();
        if answers.len() >= 4096 {
            answers.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(10));
        }
        answers.insert((repo.clone(), tag.clone()), (now, digest.clone()));
    }

    /// What the upstream named for `tag`, if it answered after `since`.
    fn answered_since(
        &self,
        repo: &RepoName,
        tag: &Tag,
        since: std::time::Instant,
    ) -> Option<Digest> {
        lock(&self.answers)
            .get(&(repo.clone(), tag.clone()))
            .filter(|(at, _)| *at >= since)
            .map(|(_, d)| d.clone())
    }

    /// The cached manifest a tag names and when the upstream last gave or confirmed it.
    async fn cached_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<(ManifestRead, SystemTime)>> {
        let Some((digest, confirmed)) = self.registry.tag_confirmed_at(repo, tag).await? else {
            return Ok(None);
        };
        Ok(self
            .cached_manifest(repo, &digest)
            .await?
            .map(|m| (m, confirmed)))
    }

    /// GETs a manifest (`reference` a tag or digest) and checks its bytes: against `expected`
    /// when given, else against the upstream's `Docker-Content-Digest` if it sent one.
    async fn fetch_manifest(
        &self,
        route: &Route,
        reference: &str,
        expected: Option<&Digest>,
    ) -> std::result::Result<(Bytes, Digest), Failure> {
        let upstream = self.upstream(route);
        let path = format!("/v2/{}/manifests/{reference}", route.remote);
        let failed = |why: String| {
            upstream.failed(reference, &why);
            Failure::Failed(why)
        };
        let response = upstream
            .client
            .send(Method::GET, &path, &route.remote, Some(MANIFEST_ACCEPT))
            .await
            .map_err(|f| match f {
                Failure::Failed(why) => failed(why),
                f => f,
            })?;
        match response.status() {
            StatusCode::NOT_FOUND => return Err(Failure::NotFound),
            s if !s.is_success() => return Err(failed(format!("GET {path} answered {s}"))),
            _ => {}
        }
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let limit = self.registry.options().max_manifest_size;
        let body = tokio::time::timeout(
            upstream.client.timeout(),
            Limited::new(response.into_body(), limit).collect(),
        )
        .await
        .map_err(|_| failed(format!("GET {path}: the body stalled")))?
        .map_err(|e| failed(format!("GET {path}: reading the body: {e}")))?
        .to_bytes();
        upstream
            .counters
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let want = expected.or(announced.as_ref());
        let algorithm = want.map_or(Algorithm::Sha256, Digest::algorithm);
        let mut hasher = Hasher::new(algorithm);
        hasher.update(&body);
        let actual = hasher.finish();
        if let Some(want) = want
            && want != &actual
        {
            return Err(failed(format!(
                "GET {path}: the upstream's manifest hashes to {actual}, not {want}; not cached"
            )));
        }
        Ok((body, actual))
    }

    fn unavailable(&self, route: &Route, what: &str, why: &str) -> Error {
        let upstream = self.upstream(route);
        Error::Upstream(format!(
            "{what} of {} is not cached and upstream {} failed: {why}",
            route.remote, upstream.config.remote_url
        ))
    }

    /// A cached blob was served without this crate (a redirect to object storage): counted
    /// as a hit and as a use for the size bound.
    pub fn served_elsewhere(&self, route: &Route, repo: &RepoName, digest: &Digest, size: u64) {
        self.lru.used(digest, size, repo, route.upstream);
        self.log(route, repo, &digest.to_string(), CacheStatus::Hit);
    }

    /// The size of a blob of a proxied repository (a HEAD): the cached one's, else the
    /// upstream's answer (nothing is fetched).
    pub async fn blob_size(
        &self,
        route: &Route,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(u64, CacheStatus)> {
        match self.registry.stat_blob(repo, digest).await {
            Ok(size) => {
                self.lru.used(digest, size, repo, route.upstream);
                self.log(route, repo, &digest.to_string(), CacheStatus::Hit);
                return Ok((size, CacheStatus::Hit));
            }
            Err(Error::BlobUnknown { .. }) => {}
            Err(e) => return Err(e),
        }
        let upstream = self.upstream(route);
        let path = format!("/v2/{}/blobs/{digest}", route.remote);
        let unknown = || Error::BlobUnknown {
            digest: digest.clone(),
        };
        let response = match upstream
            .client
            .send(Method::HEAD, &path, &route.remote, None)
            .await
        {
            Ok(r) => r,
            Err(Failure::NotFound) => return Err(unknown()),
            Err(Failure::Failed(why)) => {
                upstream.failed(&digest.to_string(), &why);
                return Err(self.unavailable(route, &digest.to_string(), &why));
            }
        };
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(unknown());
        }
        let size = content_length(response.headers());
        match size {
            Some(size) if status.is_success() => {
                self.log(route, repo, &digest.to_string(), CacheStatus::Miss);
                Ok((size, CacheStatus::Miss))
            }
            _ => {
                let why = format!("HEAD {path} answered {status}");
                upstream.failed(&digest.to_string(), &why);
                Err(self.unavailable(route, &digest.to_string(), &why))
            }
        }
    }

    /// A blob of a proxied repository, all of it or `range`: from the cache, else from the
    /// one fetch of it in progress (started if none is).
    pub async fn blob(
        self: &Arc<Proxy>,
        route: &Route,
        repo: &RepoName,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<(BlobRead, CacheStatus)> {
        match self.registry.read_blob(repo, digest, range).await {
            Ok(read) => {
                self.lru.used(digest, read.size, repo, route.upstream);
                self.log(route, repo, &digest.to_string(), CacheStatus::Hit);
                return Ok((read, CacheStatus::Hit));
            }
            Err(Error::BlobUnknown { .. }) => {}
            Err(e) => return Err(e),
        }
        let key = (repo.clone(), digest.clone());
        let (fill, start) = self.fills.join(key.clone());
        if start {
            let proxy = self.clone();
            let upstream = route.upstream;
            let remote = route.remote.clone();
            let fill = fill.clone();
            tokio::spawn(async move {
                let outcome = proxy.run_fill(upstream, &remote, &key, &fill).await;
                fill.finish(outcome);
                proxy.fills.forget(&key);
            });
        }
        let size = match fill.size().await {
            Ok(Some(size)) => size,
            // No length announced: serve once stored.
            Ok(None) => match fill.outcome().await {
                Outcome::Stored => {
                    let read = self.registry.read_blob(repo, digest, range).await?;
                    self.log(route, repo, &digest.to_string(), CacheStatus::Miss);
                    return Ok((read, CacheStatus::Miss));
                }
                o => return Err(self.fill_error(route, digest, o)),
            },
            Err(o) => return Err(self.fill_error(route, digest, o)),
        };
        let resolved = range
            .map(|r| r.resolve(size))
            .transpose()
            .map_err(|_| Error::RangeNotSatisfiable { size })?;
        let (from, to) = resolved.map_or((0, size), |r| (r.start, r.end + 1));
        let body = fill.stream(
            from,
            to,
            self.registry.clone(),
            repo.clone(),
            digest.clone(),
        );
        self.log(route, repo, &digest.to_string(), CacheStatus::Miss);
        Ok((
            BlobRead {
                digest: digest.clone(),
                size,
                range: resolved,
                body,
            },
            CacheStatus::Miss,
        ))
    }

    fn fill_error(&self, route: &Route, digest: &Digest, outcome: Outcome) -> Error {
        match outcome {
            Outcome::NotFound => Error::BlobUnknown {
                digest: digest.clone(),
            },
            Outcome::Failed(why) => self.unavailable(route, &digest.to_string(), &why),
            Outcome::Stored => {
                self.unavailable(route, &digest.to_string(), "the fetch ended early")
            }
        }
    }

    /// The one fetch of a blob: links it from another repository if it is stored already and
    /// the upstream confirms this repository has it; else streams it from the upstream into
    /// storage, verified, feeding `fill` on the way.
    async fn run_fill(
        &self,
        index: usize,
        remote: &str,
        (repo, digest): &(RepoName, Digest),
        fill: &Arc<Fill>,
    ) -> Outcome {
        let upstream = &self.upstreams[index];
        let path = format!("/v2/{remote}/blobs/{digest}");
        let failed = |why: String| {
            upstream.failed(&digest.to_string(), &why);
            Outcome::Failed(why)
        };
        // A fill that ended just before this one was started has stored it already.
        match self.registry.stat_blob(repo, digest).await {
            Ok(size) => {
                fill.answered(Some(size));
                return Outcome::Stored;
            }
            Err(Error::BlobUnknown { .. }) => {}
            Err(e) => return failed(e.to_string()),
        }
        // Stored for another repository: linked without fetching it again, once the upstream
        // confirms that this repository has it (a digest is not a right to read).
        match self.registry.blob_stored(digest).await {
            Ok(true) => {
                return self
                    .link_stored(index, remote, &path, repo, digest, fill)
                    .await
                    .unwrap_or_else(failed);
            }
            Ok(false) => {}
            Err(e) => return failed(e.to_string()),
        }
        let mut response = match upstream.client.send(Method::GET, &path, remote, None).await {
            Ok(r) => r,
            Err(Failure::NotFound) => return Outcome::NotFound,
            Err(Failure::Failed(why)) => return failed(why),
        };
        // Registries on object storage (and Docker Hub) redirect blob GETs to the bytes.
        for _ in 0..5 {
            if !response.status().is_redirection() {
                break;
            }
            let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
            else {
                return failed(format!("GET {path} redirected nowhere"));
            };
            response = match upstream.client.get_redirected(&location).await {
                Ok(r) => r,
                Err(Failure::NotFound) => return Outcome::NotFound,
                Err(Failure::Failed(why)) => return failed(why),
            };
        }
        match response.status() {
            StatusCode::NOT_FOUND => return Outcome::NotFound,
            s if s != StatusCode::OK => return failed(format!("GET {path} answered {s}")),
            _ => {}
        }
        let size = content_length(response.headers());
        fill.answered(size);
        let timeout = upstream.client.timeout();
        let body = response.into_body();
        let fill_ref = fill.clone();
        let counters = upstream.counters.clone();
        let tee: ByteStream = Box::pin(
            futures_util::stream::unfold(body, move |mut body| async move {
                loop {
                    match tokio::time::timeout(timeout, body.frame()).await {
                        Err(_) => {
                            return Some((
                                Err(std::io::Error::other(format!(
                                    "the upstream sent nothing for {timeout:?}"
                                ))),
                                body,
                            ));
                        }
                        Ok(None) => return None,
                        Ok(Some(Err(e))) => {
                            return Some((Err(std::io::Error::other(e.to_string())), body));
                        }
                        Ok(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                return Some((Ok(data), body));
                            }
                        }
                    }
                }
            })
            .map(move |chunk| {
                if let Ok(data) = &chunk {
                    fill_ref.received(data);
                    counters
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                chunk
            }),
        );
        match self.registry.cache_blob(repo, digest, tee).await {
            Ok(stored) if size.is_none_or(|s| s == stored) => {
                self.lru.used(digest, stored, repo, index);
                tracing::info!(upstream = upstream.name(), repository = %repo, %digest, bytes = stored, "proxy: blob fetched and stored");
                Outcome::Stored
            }
            Ok(stored) => failed(format!(
                "GET {path}: {stored} bytes arrived, {size:?} were announced"
            )),
            Err(Error::DigestMismatch { actual, .. }) => failed(format!(
                "GET {path}: the upstream's bytes hash to {actual}; not cached"
            )),
            Err(e) => failed(format!("GET {path}: {e}")),
        }
    }

    /// `run_fill` for a blob stored already: after a HEAD of `path` at the upstream, links
    /// it. `Err` is why it failed (the caller counts and logs it).
    async fn link_stored(
        &self,
        index: usize,
        remote: &str,
        path: &str,
        repo: &RepoName,
        digest: &Digest,
        fill: &Arc<Fill>,
    ) -> std::result::Result<Outcome, String> {
        let upstream = &self.upstreams[index];
        let status = match upstream.client.send(Method::HEAD, path, remote, None).await {
            Ok(r) => r.status(),
            Err(Failure::NotFound) => return Ok(Outcome::NotFound),
            Err(Failure::Failed(why)) => return Err(why),
        };
        if status == StatusCode::NOT_FOUND {
            return Ok(Outcome::NotFound);
        }
        if !status.is_success() {
            return Err(format!("HEAD {path} answered {status}"));
        }
        let _held = self.digest_lock(digest).lock().await;
        match self.registry.link_stored_blob(repo, digest).await {
            Ok(true) => {}
            // Evicted or collected meanwhile: the next request fetches it.
            Ok(false) => return Err("the stored copy vanished; try again".into()),
            Err(e) => return Err(e.to_string()),
        }
        let size = self
            .registry
            .stat_blob(repo, digest)
            .await
            .map_err(|e| e.to_string())?;
        fill.answered(Some(size));
        self.lru.used(digest, size, repo, index);
        tracing::info!(upstream = upstream.name(), repository = %repo, %digest, "proxy: blob already stored for another repository, linked");
        Ok(Outcome::Stored)
    }

    /// The tags of a proxied repository: the upstream's, or the cached ones if it fails.
    pub async fn tags(
        &self,
        route: &Route,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<(Page, CacheStatus)> {
        let upstream = self.upstream(route);
        let path = format!("/v2/{}/tags/list", route.remote);
        let fetched = async {
            let response = upstream
                .client
                .send(Method::GET, &path, &route.remote, None)
                .await?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Err(Failure::NotFound);
            }
            if !status.is_success() {
                return Err(Failure::Failed(format!("GET {path} answered {status}")));
            }
            let body = tokio::time::timeout(
                upstream.client.timeout(),
                Limited::new(response.into_body(), 16 * 1024 * 1024).collect(),
            )
            .await
            .map_err(|_| Failure::Failed(format!("GET {path}: the body stalled")))?
            .map_err(|e| Failure::Failed(format!("GET {path}: {e}")))?
            .to_bytes();
            #[derive(serde::Deserialize)]
            struct List {
                tags: Option<Vec<String>>,
            }
            let list: List = serde_json::from_slice(&body)
                .map_err(|e| Failure::Failed(format!("GET {path}: not a tag list: {e}")))?;
            Ok(list.tags.unwrap_or_default())
        };
        match fetched.await {
            Ok(mut tags) => {
                tags.retain(|t| Tag::parse(t).is_ok());
                tags.sort_by(|a, b| berth_registry::path_order(a, b));
                tags.dedup();
                let start = last.map_or(0, |l| {
                    tags.partition_point(|t| berth_registry::path_order(t, l).is_le())
                });
                let rest = &tags[start.min(tags.len())..];
                let take = n.unwrap_or(rest.len()).min(rest.len());
                let page = Page::new(rest[..take].to_vec(), take < rest.len());
                self.log(route, repo, "tags", CacheStatus::Miss);
                Ok((page, CacheStatus::Miss))
            }
            Err(Failure::NotFound) => Err(Error::NameUnknown {
                name: repo.to_string(),
            }),
            Err(Failure::Failed(why)) => {
                upstream.failed("tags", &why);
                let page = self.registry.list_tags(repo, n, last).await?;
                self.log(route, repo, "tags", CacheStatus::Stale);
                Ok((page, CacheStatus::Stale))
            }
        }
    }
}

/// Which of `n` lock stripes `key` takes.
fn stripe(key: &impl std::hash::Hash, n: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let h =
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key);
    (h as usize) % n
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// How long ago `t` was (zero if it is in the future: another host's clock).
fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(upstreams: Vec<UpstreamConfig>) -> Arc<Proxy> {
        let dir = std::env::temp_dir().join("berth-proxy-routing");
        let driver = Arc::new(berth_storage::FsDriver::new(&dir).unwrap());
        let registry = Registry::new(driver, berth_registry::Options::default());
        Proxy::new(
            registry,
            ProxyConfig {
                upstreams,
                max_size: None,
            },
        )
        .unwrap()
    }

    fn remote(p: &Proxy, repo: &str) -> Option<std::result::Result<String, String>> {
        p.route(repo).map(|r| {
            r.map(|r| r.remote)
                .map_err(|e| e.code().as_str().to_owned())
        })
    }

    #[test]
    fn repositories_route_to_the_longest_prefix_and_the_rest_stay_local() {
        let mut hub = UpstreamConfig::new("hub", "https://registry-1.docker.io");
        hub.repositories = vec!["library/*".into(), "team/app".into()];
        let ghcr = UpstreamConfig::new("ghcr", "https://ghcr.io");
        let nested = UpstreamConfig::new("ghcr/org", "http://127.0.0.1:1");
        let p = proxy(vec![hub, ghcr, nested]);
        // Docker Hub's implicit library/, and the allow-list.
        assert_eq!(remote(&p, "hub/alpine"), Some(Ok("library/alpine".into())));
        assert_eq!(
            remote(&p, "hub/library/alpine"),
            Some(Ok("library/alpine".into()))
        );
        assert_eq!(remote(&p, "hub/team/app"), Some(Ok("team/app".into())));
        assert_eq!(
            remote(&p, "hub/team/other"),
            Some(Err("NAME_UNKNOWN".into()))
        );
        assert_eq!(remote(&p, "hub"), Some(Err("NAME_UNKNOWN".into())));
        // Not Docker Hub: no library/.
        assert_eq!(remote(&p, "ghcr/tool"), Some(Ok("tool".into())));
        assert_eq!(remote(&p, "ghcr/org/tool"), Some(Ok("tool".into())));
        // A prefix is a whole component, not a string prefix.
        assert_eq!(remote(&p, "hubble/app"), None);
        assert_eq!(remote(&p, "local/app"), None);
        assert!(!p.is_proxied("local/app"));
    }

    #[test]
    fn distributions_single_upstream_takes_everything_else() {
        let all = UpstreamConfig::new("", "http://127.0.0.1:1");
        let ghcr = UpstreamConfig::new("ghcr", "https://ghcr.io");
        let p = proxy(vec![all, ghcr]);
        assert_eq!(
            remote(&p, "library/alpine"),
            Some(Ok("library/alpine".into()))
        );
        assert_eq!(remote(&p, "alpine"), Some(Ok("alpine".into())));
        assert_eq!(remote(&p, "ghcr/tool"), Some(Ok("tool".into())));
    }

    #[test]
    fn unusable_upstreams_are_refused_at_start() {
        let bad = |c: UpstreamConfig| {
            let dir = std::env::temp_dir().join("berth-proxy-routing");
            let driver = Arc::new(berth_storage::FsDriver::new(&dir).unwrap());
            let registry = Registry::new(driver, berth_registry::Options::default());
            Proxy::new(
                registry,
                ProxyConfig {
                    upstreams: vec![c.clone(), c],
                    max_size: None,
                },
            )
            .err()
        };
        assert!(bad(UpstreamConfig::new("x", "ftp://host")).is_some());
        assert!(bad(UpstreamConfig::new("x", "not a url")).is_some());
        assert!(bad(UpstreamConfig::new("UPPER", "http://h")).is_some());
        assert!(bad(UpstreamConfig::new("x", "https://user:pw@h")).is_some());
        // Two upstreams for one prefix.
        assert!(bad(UpstreamConfig::new("x", "http://h")).is_some());
        assert!(is_docker_hub("https://registry-1.docker.io/"));
        assert!(!is_docker_hub("https://ghcr.io"));
    }
}
