//! The bound on cached content: least recently used first, and Distribution's `ttl`.
//!
//! The accounting is in memory: every blob and manifest a proxied repository serves or
//! fetches is noted with its size and when it was used; at start one walk of the
//! repositories learns what earlier runs cached (last use taken from the link's modification
//! time). When the total passes `maxsize`, or an entry has not been used for its upstream's
//! `ttl`, the oldest entries are evicted until the total is a tenth under the bound, through
//! [`Registry::evict`](berth_registry::Registry::evict): proxied links go, and the blob goes
//! only if no repository outside the cache links it and no push's pin names it (the garbage
//! collector's rule, minus the pins of the cache's own fills), so eviction never takes content
//! a push is about to reference.
//!
//! Replicas sharing a bucket each keep their own accounting of what they served; each evicts
//! by its own view, and a blob one of them evicts is fetched again by whichever asks next.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, RepoName};
use berth_registry::Evicted;
use berth_registry::layout::{self, Entry as Layout};
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::Proxy;

/// How often entries are checked against their `ttl` when nothing else wakes the loop.
const TTL_CHECK: Duration = Duration::from_secs(60);

struct Entry {
    size: u64,
    /// Order of last use.
    tick: u64,
    used_at: SystemTime,
    upstream: usize,
    repos: HashSet<RepoName>,
}

/// An entry taken out of the accounting for eviction.
struct Victim {
    digest: Digest,
    size: u64,
    upstream: usize,
    repos: Vec<RepoName>,
}

#[derive(Default)]
struct State {
    entries: HashMap<Digest, Entry>,
    total: u64,
    tick: u64,
}

pub(crate) struct Lru {
    max: Option<u64>,
    state: Mutex<State>,
    wake: Notify,
    over: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lru {
    pub(crate) fn new(max: Option<u64>) -> Lru {
        Lru {
            max,
            state: Mutex::default(),
            wake: Notify::new(),
            over: AtomicBool::new(false),
        }
    }

    pub(crate) fn bounded(&self) -> bool {
        self.max.is_some()
    }

    /// `digest` (`size` bytes) was just served or stored for `repo`.
    pub(crate) fn used(&self, digest: &Digest, size: u64, repo: &RepoName, upstream: usize) {
        self.note(digest, size, repo, upstream, SystemTime::now(), true);
    }

    fn note(
        &self,
        digest: &Digest,
        size: u64,
        repo: &RepoName,
        upstream: usize,
        used_at: SystemTime,
        recent: bool,
    ) {
        let over = {
            let mut s = lock(&self.state);
            s.tick += 1;
            let tick = if recent { s.tick } else { 0 };
            let State { entries, total, .. } = &mut *s;
            let entry = entries.entry(digest.clone()).or_insert_with(|| {
                *total += size;
                Entry {
                    size,
                    tick,
                    used_at,
                    upstream,
                    repos: HashSet::new(),
                }
            });
            if recent {
                entry.tick = tick;
                entry.used_at = used_at;
            } else if used_at > entry.used_at {
                entry.used_at = used_at;
            }
            entry.repos.insert(repo.clone());
            self.max.is_some_and(|max| *total > max)
        };
        if over && !self.over.swap(true, Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// What to evict now: the least recently used until the total is 90 % of the bound, and
    /// everything unused for longer than its upstream's `ttl`. Taken out of the accounting
    /// before eviction, so a use meanwhile notes it afresh.
    fn victims(&self, ttls: &[Option<Duration>]) -> Vec<Victim> {
        let mut s = lock(&self.state);
        let now = SystemTime::now();
        let mut order: Vec<(u64, SystemTime, Digest)> = s
            .entries
            .iter()
            .map(|(d, e)| (e.tick, e.used_at, d.clone()))
            .collect();
        // Seeded entries (tick 0) are older than any use by this process, oldest first.
        order.sort();
        let target = self.max.map(|m| m - m / 10);
        let mut total = s.total;
        let mut out = Vec::new();
        for (_, _, digest) in order {
            let Some(e) = s.entries.get(&digest) else {
                continue;
            };
            let expired = ttls
                .get(e.upstream)
                .copied()
                .flatten()
                .is_some_and(|ttl| now.duration_since(e.used_at).unwrap_or_default() > ttl);
            let over = target.is_some_and(|t| total > t);
            if !(expired || over) {
                continue;
            }
            if let Some(e) = s.entries.remove(&digest) {
                total -= e.size;
                out.push(Victim {
                    digest,
                    size: e.size,
                    upstream: e.upstream,
                    repos: e.repos.into_iter().collect(),
                });
            }
        }
        s.total = total;
        self.over.store(false, Ordering::Relaxed);
        out
    }
}

/// The background loop: learn what is cached, then evict whenever the bound is passed or a
/// `ttl` check is due.
pub(crate) async fn run(proxy: Arc<Proxy>) {
    if let Err(e) = seed(&proxy).await {
        tracing::warn!(error = %e, "proxy: could not read what is cached; the size bound counts only what this process serves");
    }
    loop {
        evict(&proxy).await;
        tokio::select! {
            () = proxy.lru.wake.notified() => {}
            () = tokio::time::sleep(TTL_CHECK) => {}
        }
    }
}

async fn seed(proxy: &Proxy) -> berth_registry::Result<()> {
    let driver = proxy.registry.storage();
    let files = match driver.walk(&layout::repositories_root()).await {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut links = Vec::new();
    for f in files {
        let (repo, digest) = match layout::classify(&f.path) {
            Some(Layout::Layer(r, d) | Layout::Revision(r, d)) => (r, d),
            _ => continue,
        };
        if let Some(Ok(route)) = proxy.route(repo.as_str()) {
            links.push((repo, digest, route.upstream, f.modified));
        }
    }
    let digests: HashSet<Digest> = links.iter().map(|(_, d, _, _)| d.clone()).collect();
    let sizes: HashMap<Digest, u64> = futures_util::stream::iter(digests)
        .map(|d| {
            let driver = driver.clone();
            async move {
                let size = driver
                    .stat(&layout::blob_data(&d))
                    .await
                    .ok()
                    .map(|m| m.size);
                (d, size)
            }
        })
        .buffer_unordered(32)
        .filter_map(|(d, size)| async move { size.map(|s| (d, s)) })
        .collect()
        .await;
    let count = links.len();
    for (repo, digest, upstream, modified) in links {
        if let Some(size) = sizes.get(&digest) {
            proxy
                .lru
                .note(&digest, *size, &repo, upstream, modified, false);
        }
    }
    let total = lock(&proxy.lru.state).total;
    tracing::info!(
        links = count,
        bytes = total,
        "proxy: cached content counted"
    );
    Ok(())
}

async fn evict(proxy: &Proxy) {
    let ttls: Vec<Option<Duration>> = proxy.upstreams.iter().map(|u| u.config.ttl).collect();
    let victims = proxy.lru.victims(&ttls);
    if victims.is_empty() {
        return;
    }
    let others: Vec<RepoName> = match proxy.registry.all_repositories().await {
        Ok(all) => all
            .iter()
            .filter(|name| !proxy.is_proxied(name))
            .filter_map(|name| RepoName::parse(name).ok())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "proxy: eviction postponed: the repositories could not be listed");
            return;
        }
    };
    let (mut deleted, mut bytes) = (0u64, 0u64);
    for Victim {
        digest,
        size,
        upstream,
        repos,
    } in victims
    {
        // Being linked right now (see `Proxy::digest_lock`): in use, so not a victim.
        let Ok(_held) = proxy.digest_lock(&digest).try_lock() else {
            for repo in &repos {
                proxy.lru.used(&digest, size, repo, upstream);
            }
            continue;
        };
        match proxy.registry.evict(&digest, &repos, &others).await {
            Ok(Evicted::Deleted) => {
                deleted += 1;
                bytes += size;
            }
            Ok(Evicted::Kept | Evicted::Gone) => {}
            Err(e) => tracing::warn!(%digest, error = %e, "proxy: eviction failed"),
        }
    }
    tracing::info!(blobs = deleted, bytes, "proxy: evicted cached content");
}
