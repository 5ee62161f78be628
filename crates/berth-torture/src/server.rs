//! The berth binary as a child process: located next to the test executable, started on a
//! fresh port over a given storage root, killed with SIGKILL on demand, and always reaped.
//!
//! The binary is not built here. `cargo test --workspace` builds it before any test runs
//! (cargo builds a package's binaries whenever that package's integration tests are built, and
//! `berth` has some); `cargo test -p berth-torture` alone does not, so run
//! `cargo build -p berth` first, or point `BERTH_BIN` at a binary.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

/// Where the `berth` binary is: `$BERTH_BIN`, else `target/<profile>/berth` beside this test
/// executable (`target/<profile>/deps/<test>-<hash>`).
pub fn berth_bin() -> Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| find_berth_bin().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_berth_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_BIN").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("BERTH_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .with_context(|| format!("{} is not under target/<profile>/deps", exe.display()))?;
    let bin = profile_dir.join("berth");
    if !bin.is_file() {
        bail!(
            "{} does not exist. The torture tests run the real berth binary and do not build \
             it: run `cargo build -p berth` first (`cargo test --workspace` builds it too), or \
             set BERTH_BIN to a berth binary.",
            bin.display()
        );
    }
    warn_if_stale(&bin);
    Ok(bin)
}

/// Says so (once per test binary) when berth's sources are newer than the binary: the tests
/// would exercise old code.
fn warn_if_stale(bin: &Path) {
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for krate in [
        "berth",
        "berth-oci",
        "berth-storage",
        "berth-registry",
        "berth-server",
    ] {
        newest_under(&crates.join(krate).join("src"), &mut newest);
    }
    if let Some((t, p)) = newest
        && t > built
    {
        eprintln!(
            "warning: {} is older than {}; the torture tests run the binary as built. \
             Run `cargo build -p berth` to test the current sources.",
            bin.display(),
            p.display()
        );
    }
}

fn newest_under(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            newest_under(&e.path(), newest);
        } else if let Ok(t) = m.modified()
            && newest.as_ref().is_none_or(|(n, _)| t > *n)
        {
            *newest = Some((t, e.path()));
        }
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running berth. Dropping it kills and reaps the process.
pub struct Berth {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// The port it listens on.
    pub port: u16,
    log: PathBuf,
    log_start: u64,
}

impl Berth {
    /// Starts berth over `root` (with deletes enabled and upload purging off), writing its
    /// config into and appending its log to `workdir`, and waits until `/v2/` answers.
    pub async fn start(root: &Path, workdir: &Path) -> Result<Berth> {
        Self::start_with(root, workdir, "{uploadpurging: {enabled: false}}", "warn").await
    }

    /// Like [`start`](Self::start), with `storage.maintenance` set to `maintenance` (YAML
    /// flow style) and logging at `log_level`.
    pub async fn start_with(
        root: &Path,
        workdir: &Path,
        maintenance: &str,
        log_level: &str,
    ) -> Result<Berth> {
        let bin = berth_bin()?;
        let port = free_port()?;
        let config = workdir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log: {{level: {log_level}}}\n\
                 storage:\n  \
                   filesystem: {{rootdirectory: {}}}\n  \
                   delete: {{enabled: true}}\n  \
                   maintenance: {maintenance}\n\
                 http: {{addr: 127.0.0.1:{port}, draintimeout: 1s}}\n",
                root.display()
            ),
        )?;
        let log = workdir.join("berth.log");
        let log_file = OpenOptions::new().create(true).append(true).open(&log)?;
        let log_start = log_file.metadata()?.len();
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("RUST_LOG");
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut berth = Berth {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            port,
            log,
            log_start,
        };
        berth.wait_ready().await?;
        Ok(berth)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "berth exited during start-up ({status}); log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(r) = http.get(format!("{}/v2/", self.base)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "berth did not answer within 20 s; log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills berth with SIGKILL (what `Child::kill` sends on Unix) and reaps it. Fails if it
    /// had already exited on its own, which would be a crash the test did not cause.
    pub fn sigkill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("berth was already stopped");
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "berth had exited on its own before the kill ({status}); log:\n{}",
                self.log_tail()
            );
        }
        child.kill()?;
        let status = child.wait()?;
        if status.signal() != Some(9) {
            bail!("berth ended with {status}, not by SIGKILL");
        }
        Ok(())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What this instance logged (its warnings and errors), at most the last 8 KiB.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let from = self.log_start.max(len.saturating_sub(8192));
            if f.seek(SeekFrom::Start(from)).is_ok() {
                let _ = f.read_to_string(&mut out);
            }
        }
        out
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
