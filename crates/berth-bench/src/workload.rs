//! The workload, phase by phase, against one running registry: blob push (monolithic and
//! chunked) and verified pull, concurrent pushes with the registry's peak RSS, manifest
//! HEAD/GET load, many repositories with catalog and tag listing latency, the population of
//! manifests the start-up measurement needs, and idle RSS at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use http::Method;
use serde_json::json;

use crate::client::{
    DOCKER_ACCEPT, DOCKER_MANIFEST, OCI_MANIFEST, Pushed, Registry, docker_manifest, image_config,
    oci_manifest,
};
use crate::data::{BLOCK, Blob};
use crate::load;
use crate::report::{Better, Emitter};
use crate::rss;

/// Sizes and counts (the CLI fills it; `--quick` shrinks it).
#[derive(Clone, Debug)]
pub struct Workload {
    pub blob_mib: u64,
    pub chunk_mib: u64,
    pub concurrent: usize,
    pub concurrent_mib: u64,
    pub conns: usize,
    pub load_secs: f64,
    pub repos: usize,
    pub tags: usize,
    pub manifests: usize,
    pub manifest_repos: usize,
    pub push_concurrency: usize,
    pub samples: usize,
    pub pull_runs: usize,
    pub push_runs: usize,
    pub push_pause_secs: f64,
    pub spaced_samples: usize,
    pub spacing_secs: f64,
    pub idle_wait_secs: f64,
    /// Only the manifest PUT phase (new tags, then re-tags).
    pub only_manifest_puts: bool,
}

/// The repository and tag every start-up measurement GETs: the first populated manifest.
pub fn startup_manifest() -> (&'static str, &'static str) {
    ("bench/p00", "t00000")
}

use crate::report::MB;
const MIB: f64 = 1_048_576.0;

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

fn phase(name: &str) {
    eprintln!("[{}] {name}", chrono_like_now());
}

fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// Pushes a config blob and a layer of `layer_len` bytes into `repo`.
async fn push_image_blobs(
    reg: &Registry,
    repo: &str,
    seed: u64,
    layer_len: u64,
) -> Result<(Pushed, Pushed)> {
    let layer = reg
        .push_bytes(repo, Blob::new(seed, layer_len).range(0, layer_len))
        .await?;
    let config = reg
        .push_bytes(repo, image_config(&layer.digest, seed))
        .await?;
    Ok((config, layer))
}

/// Waits before a timed push, so the writes of the one before have reached the disk below
/// this machine too: on a VM the host may go on flushing after the guest's fsync returned.
/// Pushes timed back to back varied by up to 2x on our VM; the pause helps, but after a few
/// GiB the host may throttle the disk for longer than any pause here (see the README).
async fn settle(w: &Workload) {
    tokio::time::sleep(Duration::from_secs_f64(w.push_pause_secs)).await;
}

/// The median of `rates` (MB/s, each run moving `bytes`), with every run in the detail.
fn emit_median(out: &Emitter, metric: &str, title: &str, rates: Vec<f64>, bytes: u64) {
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    out.emit(
        metric,
        title,
        sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        "MB/s",
        Better::Higher,
        json!({ "bytes": bytes, "runs_mb_s": rates }),
    );
}

/// Latency of a listing GET, twice: `samples` requests back to back, then `spaced_samples`
/// one every `spacing_secs` (past short-lived caches, as an occasional caller sees it).
/// Medians; the number of entries under `key` must be in `expected`.
async fn listing(
    reg: &Registry,
    w: &Workload,
    out: &Emitter,
    (metric, title): (&str, &str),
    path: &str,
    key: &str,
    expected: std::ops::RangeInclusive<usize>,
) -> Result<()> {
    let spacing = Duration::from_secs_f64(w.spacing_secs);
    for (spaced, n) in [(false, w.samples), (true, w.spaced_samples)] {
        if n == 0 {
            continue;
        }
        let mut lat = Vec::new();
        for _ in 0..n {
            if spaced {
                tokio::time::sleep(spacing).await;
            }
            let (d, body) = reg.timed_get(path, None).await?;
            let v: serde_json::Value =
                serde_json::from_slice(&body).with_context(|| format!("{path}: not JSON"))?;
            let listed = v[key].as_array().map_or(0, |a| a.len());
            ensure!(
                expected.contains(&listed),
                "{path}: {listed} {key}, expected {expected:?}"
            );
            lat.push(d);
        }
        let (metric, title) = if spaced {
            (
                format!("{metric}_spaced"),
                format!("{title}, one per {} s, median of {n}", w.spacing_secs),
            )
        } else {
            (
                metric.to_string(),
                format!("{title}, back to back, median of {n}"),
            )
        };
        out.emit(
            &metric,
            &title,
            median_ms(lat),
            "ms",
            Better::Lower,
            json!({ "samples": n, "spaced": spaced }),
        );
    }
    Ok(())
}

pub async fn run(reg: &Registry, pid: u32, w: &Workload, out: &Emitter) -> Result<()> {
    reg.wait_ready(Duration::from_secs(30)).await?;
    if w.only_manifest_puts {
        return manifest_puts(reg, w, out).await;
    }

    // --- Large blobs: monolithic push, chunked push (median of `push_runs`, fresh content
    // each time, so no run finds its blob already stored), then pulls of one of them. ---
    let big = w.blob_mib * BLOCK;
    let (mut mono_rates, mut chunked_rates, mut pulled) = (Vec::new(), Vec::new(), None);
    for run in 0..w.push_runs as u64 {
        phase("generating two large blobs (not timed)");
        let (mono, chunked) = tokio::task::spawn_blocking(move || {
            let seed = 1 + 10 * run;
            (
                Blob::new(seed, big).content(),
                Blob::new(seed + 1, big).content(),
            )
        })
        .await?;
        settle(w).await;
        phase("monolithic push");
        let t = Instant::now();
        reg.push_monolithic("bench/blob", &mono)
            .await
            .context("monolithic push")?;
        mono_rates.push(big as f64 / MB / t.elapsed().as_secs_f64());
        settle(w).await;
        phase("chunked push");
        let t = Instant::now();
        reg.push_chunked("bench/blob", &chunked, w.chunk_mib * BLOCK)
            .await
            .context("chunked push")?;
        chunked_rates.push(big as f64 / MB / t.elapsed().as_secs_f64());
        // Only the digest is kept: the page cache can use the memory for the pulls.
        pulled = Some(mono.digest.clone());
    }
    let mono_digest = pulled.context("no push run")?;
    emit_median(
        out,
        "push_monolithic",
        &format!(
            "push {} MiB monolithic, median of {}",
            w.blob_mib, w.push_runs
        ),
        mono_rates,
        big,
    );
    emit_median(
        out,
        "push_chunked",
        &format!(
            "push {} MiB in {} MiB PATCHes, median of {}",
            w.blob_mib, w.chunk_mib, w.push_runs
        ),
        chunked_rates,
        big,
    );

    for (verify, metric, what) in [
        (true, "pull", "digest verified"),
        (false, "pull_unverified", "not verified (client only reads)"),
    ] {
        let title = format!("pull {} MiB, {what}, median of {}", w.blob_mib, w.pull_runs);
        phase(&title);
        let mut rates = Vec::new();
        for _ in 0..w.pull_runs {
            let t = Instant::now();
            reg.pull("bench/blob", &mono_digest, big, verify)
                .await
                .with_context(|| title.clone())?;
            rates.push(big as f64 / MB / t.elapsed().as_secs_f64());
        }
        emit_median(out, metric, &title, rates, big);
    }

    // --- Concurrent pushes, with the registry's peak RSS (median rate, highest peak). ---
    let each = w.concurrent_mib * BLOCK;
    let count = w.concurrent as u64;
    let total = each * count;
    let (mut rates, mut peak, mut baseline) = (Vec::new(), 0, 0);
    for run in 0..w.push_runs as u64 {
        phase("generating the concurrent blobs (not timed)");
        let blobs = tokio::task::spawn_blocking(move || {
            (0..count)
                .map(|i| Blob::new(100 + 1000 * run + i, each).content())
                .collect::<Vec<_>>()
        })
        .await?;
        settle(w).await;
        phase("concurrent pushes");
        baseline = baseline.max(rss::current(pid).unwrap_or(0));
        let sampler = rss::PeakSampler::start(pid, Duration::from_millis(50));
        let t = Instant::now();
        let pushes = blobs.into_iter().map(|b| {
            let reg = reg.clone();
            tokio::spawn(async move { reg.push_monolithic("bench/concurrent", &b).await })
        });
        let results = futures_util::future::join_all(pushes).await;
        let secs = t.elapsed().as_secs_f64();
        peak = peak.max(sampler.stop(pid).await);
        for r in results {
            r.context("push task panicked")?
                .context("concurrent push")?;
        }
        rates.push(total as f64 / MB / secs);
    }
    emit_median(
        out,
        "push_concurrent",
        &format!(
            "{} concurrent pushes of {} MiB, median of {}",
            w.concurrent, w.concurrent_mib, w.push_runs
        ),
        rates,
        total,
    );
    out.emit(
        "push_concurrent_peak_rss",
        "peak RSS during the concurrent pushes (highest run)",
        peak as f64 / MIB,
        "MiB",
        Better::Lower,
        json!({ "rss_before_mib": baseline as f64 / MIB }),
    );

    // --- Manifest HEAD and GET by tag under load. ---
    phase("manifest HEAD/GET load");
    let (config, layer) = push_image_blobs(reg, "bench/manifest", 10, 4096).await?;
    let manifest = docker_manifest(&config, &[layer]);
    reg.put_manifest("bench/manifest", "latest", DOCKER_MANIFEST, &manifest)
        .await?;
    let addr = tokio::net::lookup_host((
        reg.base.host_str().context("registry URL has no host")?,
        reg.base.port_or_known_default().unwrap_or(80),
    ))
    .await?
    .next()
    .context("registry host resolves to nothing")?;
    let host = match reg.base.port() {
        Some(p) => format!("{}:{p}", reg.base.host_str().unwrap_or("localhost")),
        None => reg.base.host_str().unwrap_or("localhost").to_string(),
    };
    let duration = Duration::from_secs_f64(w.load_secs);
    for (method, name) in [(Method::HEAD, "head"), (Method::GET, "get")] {
        let target = load::Target {
            addr,
            host: host.clone(),
            path: "/v2/bench/manifest/manifests/latest".into(),
            method: method.clone(),
            accept: DOCKER_ACCEPT.into(),
            body_len: (method == Method::GET).then_some(manifest.len()),
        };
        let o = load::run(&target, w.conns, duration).await?;
        let detail = json!({
            "connections": w.conns,
            "seconds": o.elapsed.as_secs_f64(),
            "requests": o.ok,
            "p50_ms": o.quantile_ms(0.5),
            "p999_ms": o.quantile_ms(0.999),
            "max_ms": o.quantile_ms(1.0),
        });
        let upper = name.to_uppercase();
        out.emit(
            &format!("manifest_{name}_rps"),
            &format!("manifest {upper} by tag, {} conns", w.conns),
            o.rps(),
            "req/s",
            Better::Higher,
            detail.clone(),
        );
        out.emit(
            &format!("manifest_{name}_p99"),
            &format!("manifest {upper} p99 latency"),
            o.quantile_ms(0.99),
            "ms",
            Better::Lower,
            detail,
        );
        out.emit(
            &format!("manifest_{name}_errors"),
            &format!("manifest {upper} errors"),
            o.errors as f64,
            "errors",
            Better::Lower,
            serde_json::Value::Null,
        );
    }

    // --- The floor under every spaced listing row: the cheapest request, after an idle gap
    // (waking an idle process and CPU costs far more than the request itself on a VM). ---
    if w.spaced_samples > 0 {
        phase("idle floor");
        let mut lat = Vec::new();
        for _ in 0..w.spaced_samples {
            tokio::time::sleep(Duration::from_secs_f64(w.spacing_secs)).await;
            lat.push(reg.timed_get("/v2/", None).await?.0);
        }
        out.emit(
            "base_spaced",
            &format!(
                "GET /v2/, one per {} s, median of {} (the floor of the spaced rows)",
                w.spacing_secs, w.spaced_samples
            ),
            median_ms(lat),
            "ms",
            Better::Lower,
            json!({ "samples": w.spaced_samples }),
        );
    }

    // --- Many repositories, catalog, tags list. ---
    phase("pushing repositories");
    let t = Instant::now();
    stream::iter(0..w.repos)
        .map(|i| async move {
            let repo = format!("bench/r{i:05}");
            let (config, layer) = push_image_blobs(reg, &repo, 1000 + i as u64, 1024).await?;
            reg.put_manifest(
                &repo,
                "latest",
                DOCKER_MANIFEST,
                &docker_manifest(&config, &[layer]),
            )
            .await
        })
        .buffer_unordered(w.push_concurrency)
        .try_collect::<Vec<()>>()
        .await
        .context("pushing repositories")?;
    let secs = t.elapsed().as_secs_f64();
    out.emit(
        "push_repos",
        &format!(
            "push {} repos (2 blobs + manifest), {} at a time",
            w.repos, w.push_concurrency
        ),
        secs,
        "s",
        Better::Lower,
        json!({ "repos": w.repos, "concurrency": w.push_concurrency }),
    );

    phase("catalog");
    listing(
        reg,
        w,
        out,
        ("catalog", "GET /v2/_catalog?n=1000"),
        "/v2/_catalog?n=1000",
        "repositories",
        w.repos.min(1000)..=1000,
    )
    .await?;

    phase("tagging");
    let (config, layer) = push_image_blobs(reg, "bench/tags", 20, 1024).await?;
    let manifest = docker_manifest(&config, &[layer]);
    let manifest = &manifest;
    stream::iter(0..w.tags)
        .map(|i| async move {
            reg.put_manifest("bench/tags", &format!("t{i:05}"), DOCKER_MANIFEST, manifest)
                .await
        })
        .buffer_unordered(w.push_concurrency)
        .try_collect::<Vec<()>>()
        .await
        .context("tagging")?;
    phase("tags list");
    let title = format!("GET tags/list with {} tags", w.tags);
    listing(
        reg,
        w,
        out,
        ("tags_list", &title),
        "/v2/bench/tags/tags/list",
        "tags",
        w.tags..=w.tags,
    )
    .await?;

    // --- Manifests for the start-up measurement, new tags then re-tags. ---
    manifest_puts(reg, w, out).await?;

    // --- Idle memory after all of that. ---
    phase("idle RSS");
    tokio::time::sleep(Duration::from_secs_f64(w.idle_wait_secs)).await;
    let idle = rss::current(pid)?;
    out.emit(
        "idle_rss",
        "idle RSS after the workload",
        idle as f64 / MIB,
        "MiB",
        Better::Lower,
        json!({ "waited_s": w.idle_wait_secs }),
    );
    Ok(())
}

/// `w.manifests` distinct manifests over `w.manifest_repos` repositories, `w.push_concurrency`
/// at a time: first each under a new tag (the rate CI cares about: every build pushes a new
/// tag), then as many new manifests moving those same tags (a re-tag: `latest`, `main`).
/// Two rows, since the two write different sets of files.
async fn manifest_puts(reg: &Registry, w: &Workload, out: &Emitter) -> Result<()> {
    phase("manifest PUTs");
    let per_repo = w.manifests.div_ceil(w.manifest_repos.max(1));
    let mut bases = Vec::new();
    for r in 0..w.manifest_repos {
        let repo = format!("bench/p{r:02}");
        bases.push(push_image_blobs(reg, &repo, 5000 + r as u64, 1024).await?);
    }
    let bases = &bases;
    for (pass, metric, what) in [
        (0, "manifest_put_rate", "new tags"),
        (1, "manifest_retag_rate", "tags that exist"),
    ] {
        let t = Instant::now();
        stream::iter(0..w.manifests)
            .map(|i| async move {
                let r = i / per_repo;
                let (config, layer) = &bases[r];
                let body = oci_manifest(config, layer, (pass * w.manifests + i) as u64);
                reg.put_manifest(
                    &format!("bench/p{r:02}"),
                    &format!("t{:05}", i % per_repo),
                    OCI_MANIFEST,
                    &body,
                )
                .await
            })
            .buffer_unordered(w.push_concurrency)
            .try_collect::<Vec<()>>()
            .await
            .with_context(|| format!("manifest PUTs, {what}"))?;
        let secs = t.elapsed().as_secs_f64();
        out.emit(
            metric,
            &format!(
                "manifest PUT, {what}: {} distinct in {} repos, {} at a time",
                w.manifests, w.manifest_repos, w.push_concurrency
            ),
            w.manifests as f64 / secs,
            "req/s",
            Better::Higher,
            json!({ "manifests": w.manifests, "seconds": secs }),
        );
    }
    Ok(())
}
