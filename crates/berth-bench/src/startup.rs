//! Start-up time over a populated data directory: spawns the registry command itself (so the
//! clock starts at the spawn), polls `GET /v2/` and then a manifest GET by tag until each
//! answers 200, stops the process, and repeats.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::{Client, StatusCode, header};
use serde_json::json;

use crate::client::DOCKER_ACCEPT;
use crate::report::{Better, Emitter};

pub struct Startup {
    pub url: String,
    pub repo: String,
    pub tag: String,
    pub runs: usize,
    /// How many manifests the data directory holds (for the table's wording only).
    pub manifests: usize,
    pub timeout: Duration,
    pub command: Vec<String>,
}

/// Polls `url` until it answers 200 or `deadline` passes.
async fn poll(http: &Client, url: &str, accept: Option<&str>, deadline: Instant) -> Result<()> {
    loop {
        let mut req = http.get(url);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        if let Ok(r) = req.send().await
            && r.status() == StatusCode::OK
            && r.bytes().await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

pub async fn run(s: &Startup, out: &Emitter) -> Result<()> {
    let (program, args) = s
        .command
        .split_first()
        .context("no registry command given after --")?;
    // A fresh connection per attempt (no pool): each probe must reach the new process.
    let http = Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()?;
    let base = s.url.trim_end_matches('/');
    let v2 = format!("{base}/v2/");
    let manifest = format!("{base}/v2/{}/manifests/{}", s.repo, s.tag);
    let (mut to_v2, mut to_manifest) = (Vec::new(), Vec::new());
    for run in 0..s.runs {
        let start = Instant::now();
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {program}"))?;
        let deadline = start + s.timeout;
        let result = async {
            poll(&http, &v2, None, deadline).await?;
            let a = start.elapsed();
            poll(&http, &manifest, Some(DOCKER_ACCEPT), deadline).await?;
            Ok::<_, anyhow::Error>((a, start.elapsed()))
        }
        .await;
        stop(&mut child).await;
        let (a, b) = result.with_context(|| format!("start-up run {}", run + 1))?;
        eprintln!(
            "  start-up run {}: /v2/ after {:.1} ms, manifest after {:.1} ms",
            run + 1,
            a.as_secs_f64() * 1000.0,
            b.as_secs_f64() * 1000.0
        );
        to_v2.push(a);
        to_manifest.push(b);
        // Let the port and the page cache settle between runs.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    to_v2.sort();
    to_manifest.sort();
    let ms = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1000.0;
    let all = |v: &[Duration]| {
        v.iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect::<Vec<_>>()
    };
    out.emit(
        "startup_v2",
        &format!(
            "start-up with {} manifests: GET /v2/ ok, median",
            s.manifests
        ),
        ms(&to_v2),
        "ms",
        Better::Lower,
        json!({ "runs_ms": all(&to_v2) }),
    );
    out.emit(
        "startup_manifest",
        &format!(
            "start-up with {} manifests: manifest GET ok, median",
            s.manifests
        ),
        ms(&to_manifest),
        "ms",
        Better::Lower,
        json!({ "runs_ms": all(&to_manifest), "manifest": format!("{}:{}", s.repo, s.tag) }),
    );
    Ok(())
}
