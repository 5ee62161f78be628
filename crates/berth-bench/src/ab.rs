//! `berth-bench manifest-ab`: manifest HEAD and GET load against several registries that
//! differ in one setting (berth with metrics off and on, with the access log off and on), in
//! one run. Why a mode of its own: the cost of instrumentation is a few percent, well inside
//! the drift between two runs on a shared machine, so the variants are measured in
//! alternating rounds (A B, then B A, ...) and each reported as the median of its rounds,
//! with its ratio to the first variant.

use std::time::Duration;

use anyhow::{Context, Result};
use http::Method;
use serde_json::json;

use crate::client::{DOCKER_ACCEPT, DOCKER_MANIFEST, Registry, docker_manifest, image_config};
use crate::data::Blob;
use crate::load;
use crate::report::{Better, Emitter};

/// What to load and how long.
pub struct Ab {
    /// `(label, base URL)` of each variant; the first is the baseline.
    pub variants: Vec<(String, String)>,
    pub conns: usize,
    pub secs: f64,
    pub rounds: usize,
}

const REPO: &str = "bench/ab";

/// Pushes the same small image to `reg` and returns the manifest's length.
async fn prepare(reg: &Registry) -> Result<usize> {
    let layer = reg
        .push_bytes(REPO, Blob::new(7, 4096).range(0, 4096))
        .await?;
    let config = reg.push_bytes(REPO, image_config(&layer.digest, 7)).await?;
    let manifest = docker_manifest(&config, &[layer]);
    reg.put_manifest(REPO, "latest", DOCKER_MANIFEST, &manifest)
        .await?;
    Ok(manifest.len())
}

async fn target(url: &str, method: Method, body_len: usize) -> Result<load::Target> {
    let base = reqwest::Url::parse(url).with_context(|| format!("registry URL {url:?}"))?;
    let host = base
        .host_str()
        .context("registry URL has no host")?
        .to_owned();
    let port = base.port_or_known_default().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .context("registry host resolves to nothing")?;
    Ok(load::Target {
        addr,
        host: format!("{host}:{port}"),
        path: format!("/v2/{REPO}/manifests/latest"),
        accept: DOCKER_ACCEPT.into(),
        body_len: (method == Method::GET).then_some(body_len),
        method,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the rounds and emits, per variant and method, the median req/s and p99 with every
/// round in the detail, and the ratio to the baseline.
pub async fn run(ab: &Ab) -> Result<()> {
    let mut lens = Vec::new();
    for (label, url) in &ab.variants {
        let len = prepare(&Registry::new(url)?)
            .await
            .with_context(|| format!("preparing {label} at {url}"))?;
        lens.push(len);
    }
    let duration = Duration::from_secs_f64(ab.secs);
    for (method, name) in [(Method::HEAD, "head"), (Method::GET, "get")] {
        let n = ab.variants.len();
        let mut rps = vec![Vec::new(); n];
        let mut p99 = vec![Vec::new(); n];
        let mut errors = vec![0u64; n];
        for round in 0..ab.rounds {
            // Alternate the order, so drift during a round favours no variant.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..n).collect()
            } else {
                (0..n).rev().collect()
            };
            for i in order {
                let t = target(&ab.variants[i].1, method.clone(), lens[i]).await?;
                let o = load::run(&t, ab.conns, duration).await?;
                eprintln!(
                    "round {round}: {name} {}: {:.0} req/s, p99 {:.2} ms, {} errors",
                    ab.variants[i].0,
                    o.rps(),
                    o.quantile_ms(0.99),
                    o.errors
                );
                rps[i].push(o.rps());
                p99[i].push(o.quantile_ms(0.99));
                errors[i] += o.errors;
            }
        }
        let baseline = median(&rps[0]);
        let upper = name.to_uppercase();
        for (i, (label, _)) in ab.variants.iter().enumerate() {
            let out = Emitter {
                registry: label.clone(),
            };
            let value = median(&rps[i]);
            out.emit(
                &format!("manifest_{name}_rps"),
                &format!("manifest {upper} by tag, {} conns", ab.conns),
                value,
                "req/s",
                Better::Higher,
                json!({
                    "rounds_rps": rps[i],
                    "ratio_to_first": value / baseline,
                    "first": ab.variants[0].0,
                    "seconds_each": ab.secs,
                }),
            );
            out.emit(
                &format!("manifest_{name}_p99"),
                &format!("manifest {upper} p99 latency"),
                median(&p99[i]),
                "ms",
                Better::Lower,
                json!({ "rounds_ms": p99[i] }),
            );
            out.emit(
                &format!("manifest_{name}_errors"),
                &format!("manifest {upper} errors"),
                errors[i] as f64,
                "errors",
                Better::Lower,
                serde_json::Value::Null,
            );
            eprintln!(
                "{upper} {label}: median {value:.0} req/s ({:+.1}% vs {})",
                (value / baseline - 1.0) * 100.0,
                ab.variants[0].0
            );
        }
    }
    Ok(())
}
