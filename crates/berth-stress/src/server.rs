//! The berth binary as a child process: found beside the test executable, configured by a
//! config file in a temporary directory (storage root, a free loopback port, any extra `http`
//! keys, `log` settings and top-level sections such as `auth`, or a whole file given as a
//! template: [`Setup`]), optionally under `prlimit --nofile=N:N`, signalled, watched through
//! `/proc/<pid>`, and always reaped.
//!
//! The binary is not built here. `cargo test --workspace` builds it before any test runs
//! (cargo builds a package's binaries whenever that package's integration tests are built, and
//! `berth` has some); `cargo test -p berth-stress` alone does not, so run
//! `cargo build -p berth` first, or point `BERTH_BIN` at a binary.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal, kill_process};

/// `target/<profile>` holding this test executable (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not under target/<profile>/deps", exe.display()))
        .to_owned()
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/berth-stress is two levels below the workspace")
        .to_owned()
}

/// The newest modification time of berth's sources (`crates/*/src`, `Cargo.lock`).
fn newest_source() -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        let Ok(rd) = fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, newest);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(m);
            }
        }
    }
    let root = workspace_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    for krate in [
        "berth",
        "berth-oci",
        "berth-registry",
        "berth-server",
        "berth-storage",
    ] {
        walk(&root.join("crates").join(krate).join("src"), &mut newest);
    }
    if let Ok(m) = fs::metadata(root.join("Cargo.lock")).and_then(|m| m.modified()) {
        newest = newest.max(m);
    }
    newest
}

fn is_fresh(bin: &Path) -> bool {
    fs::metadata(bin)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built >= newest_source())
}

/// Where the `berth` binary is: `$BERTH_BIN`, else `target/<profile>/berth` beside this test
/// executable. With `prefer_release`, `target/release/berth` when it exists and is newer than
/// every source file (a stale release binary would measure old code).
pub fn berth_bin(prefer_release: bool) -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "BERTH_BIN={} is not a file", p.display());
        return p;
    }
    let profile = profile_dir();
    if prefer_release {
        let release = profile
            .parent()
            .map(|t| t.join("release/berth"))
            .filter(|r| r.is_file() && is_fresh(r));
        if let Some(r) = release {
            return r;
        }
    }
    let bin = profile.join("berth");
    assert!(
        bin.is_file(),
        "{} does not exist. These tests run the real berth binary and do not build it: run \
         `cargo build -p berth` first (`cargo test --workspace` builds it too), or set \
         BERTH_BIN to a berth binary.",
        bin.display()
    );
    if !is_fresh(&bin) {
        eprintln!(
            "warning: {} is older than berth's sources; run `cargo build -p berth`",
            bin.display()
        );
    }
    bin
}

/// A free loopback port (bound, read, released: a small window for another process to take
/// it, which [`Berth::start`] retries).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// What `/proc/<pid>/status` says about memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set now, KiB.
    pub rss_kib: u64,
    /// Peak resident set since start, KiB.
    pub hwm_kib: u64,
}

/// A running berth.
pub struct Berth {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its storage root.
    pub root: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    log: PathBuf,
    /// When it was started (the process, not the listener).
    pub started: Instant,
    /// Which binary runs.
    pub bin: PathBuf,
}

/// How [`Berth::start_setup`] configures and starts berth. The storage root and the loopback
/// port are always chosen by the harness; everything else is here. `Setup::default()` is what
/// [`Berth::start`] runs: `log.level: warn`, the default `http` keys, no `auth`.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Keys under `http` (YAML lines without indentation, e.g. `headertimeout: 2s`; nested
    /// keys keep their relative indentation: `tls:` then `  certificate: /c`).
    pub http: String,
    /// Keys under `log` (YAML lines without indentation); `level: warn` when empty.
    pub log: String,
    /// Top-level YAML appended to the generated file as it is (an `auth:` section, ...).
    pub top: String,
    /// A whole config file instead of the generated one: `{addr}` is replaced by
    /// `127.0.0.1:<port>` and `{root}` by the storage root. `http`, `log` and `top` are then
    /// ignored.
    pub whole: Option<String>,
    /// Runs `prlimit --nofile=N:N -- berth serve <config>` (soft and hard open-file limit N;
    /// prlimit execs berth, so [`Berth::pid`] is berth's).
    pub nofile: Option<u64>,
    /// A fresh `target/release/berth` when there is one (see [`berth_bin`]).
    pub prefer_release: bool,
}

/// Indents every non-blank line of `yaml` by two spaces.
fn indented(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}\n"))
        .collect()
}

impl Setup {
    /// The config file for `port` and `root`.
    fn config(&self, port: u16, root: &Path) -> String {
        if let Some(whole) = &self.whole {
            return whole
                .replace("{addr}", &format!("127.0.0.1:{port}"))
                .replace("{root}", &root.display().to_string());
        }
        let log = if self.log.trim().is_empty() {
            "  level: warn\n".to_owned()
        } else {
            indented(&self.log)
        };
        let mut top = self.top.clone();
        if !top.is_empty() && !top.ends_with('\n') {
            top.push('\n');
        }
        format!(
            "version: 0.1\nlog:\n{log}storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n{}{top}",
            root.display(),
            indented(&self.http),
        )
    }
}

impl Berth {
    /// Starts berth over `<dir>/root` with `http` keys `http_extra` (YAML lines without
    /// indentation, e.g. `draintimeout: 10s`) and waits until it accepts connections.
    pub fn start(dir: &Path, http_extra: &str) -> Berth {
        Self::start_with(dir, http_extra, false)
    }

    /// As [`Berth::start`], choosing a fresh release binary when `prefer_release`.
    pub fn start_with(dir: &Path, http_extra: &str, prefer_release: bool) -> Berth {
        Self::start_setup(
            dir,
            &Setup {
                http: http_extra.to_owned(),
                prefer_release,
                ..Setup::default()
            },
        )
    }

    /// Starts berth over `<dir>/root` as `setup` says (config in `<dir>/config.yml`) and waits
    /// until it accepts connections (a TCP connect: over TLS too).
    pub fn start_setup(dir: &Path, setup: &Setup) -> Berth {
        let bin = berth_bin(setup.prefer_release);
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let root = dir.join("root");
            let config = dir.join("config.yml");
            let log = dir.join(format!("berth-{port}.log"));
            fs::write(&config, setup.config(port, &root)).expect("writing the config");
            let child = spawn_limited(&bin, &config, &log, setup.nofile);
            let mut berth = Berth {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                root,
                config,
                log,
                started: Instant::now(),
                bin: bin.clone(),
            };
            match berth.wait_listening(Duration::from_secs(30)) {
                Ok(()) => return berth,
                Err(log) if log.contains("cannot listen") => last_log = log,
                Err(log) => panic!("berth did not start:\n{log}"),
            }
        }
        panic!("berth could not get a port in five tries:\n{last_log}");
    }

    fn wait_listening(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("berth exited with {status}: {}", self.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "berth is not listening after {limit:?}: {}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port>`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything it logged so far (empty when the log is not UTF-8: see [`Berth::log_bytes`]).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything it logged so far, byte for byte (stdout and stderr).
    pub fn log_bytes(&self) -> Vec<u8> {
        fs::read(&self.log).unwrap_or_default()
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// RSS now and at peak.
    pub fn memory(&self) -> Memory {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }

    /// Open file descriptors now.
    pub fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.pid() as i32).expect("a child's pid is positive");
        kill_process(pid, signal).expect("signalling berth");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(Signal::TERM);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `berth serve <config>` with stdout and stderr into `log` and no `REGISTRY_*`
/// variable from this environment (the config file is the whole configuration).
pub fn spawn(bin: &Path, config: &Path, log: &Path) -> Child {
    spawn_limited(bin, config, log, None)
}

/// [`spawn`], under `prlimit --nofile=N:N --` when `nofile` is `Some(N)` (util-linux's
/// prlimit sets its own limit and execs berth, so the child's pid is berth's).
pub fn spawn_limited(bin: &Path, config: &Path, log: &Path, nofile: Option<u64>) -> Child {
    let out = fs::File::create(log).expect("creating the log file");
    let err = out.try_clone().expect("cloning the log file");
    let mut cmd = match nofile {
        None => Command::new(bin),
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
            c
        }
    };
    cmd.arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REGISTRY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "starting {}{}: {e}",
            bin.display(),
            if nofile.is_some() {
                " under prlimit"
            } else {
                ""
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_renders_the_config() {
        let root = Path::new("/r");
        let plain = Setup {
            http: "draintimeout: 1s\ntls:\n  certificate: /c".to_owned(),
            ..Setup::default()
        }
        .config(5000, root);
        assert_eq!(
            plain,
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: /r\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:5000\n  draintimeout: 1s\n  tls:\n    certificate: /c\n"
        );
        let more = Setup {
            log: "level: info\nformatter: json".to_owned(),
            top: "auth:\n  htpasswd:\n    path: /h".to_owned(),
            ..Setup::default()
        }
        .config(5000, root);
        assert!(more.starts_with("version: 0.1\nlog:\n  level: info\n  formatter: json\nstorage:"));
        assert!(more.ends_with("  addr: 127.0.0.1:5000\nauth:\n  htpasswd:\n    path: /h\n"));
        let whole = Setup {
            whole: Some(
                "http:\n  addr: {addr}\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
                    .to_owned(),
            ),
            http: "ignored: 1".to_owned(),
            ..Setup::default()
        }
        .config(5000, root);
        assert_eq!(
            whole,
            "http:\n  addr: 127.0.0.1:5000\nstorage:\n  filesystem:\n    rootdirectory: /r\n"
        );
    }
}
