//! The berth binary as a child process: found beside the test executable, configured by a
//! config file in a directory of the test's (storage root, any extra `http`, `log` and
//! `storage` keys and top-level sections such as `auth`, or a whole file given as a template:
//! [`Setup`]), optionally under `prlimit --nofile=N:N`, signalled or SIGKILLed, watched
//! through `/proc/<pid>`, and always reaped.
//!
//! berth listens on port 0: the kernel picks a free port and berth's "berth listening" log
//! line says which, so two tests never race for a port the way bind-read-release-rebind does.
//! Where a config's log level hides that line, the kernel's table of the process's listening
//! sockets says it instead ([`listening_port`]).
//!
//! The binary is not built here. `cargo test --workspace` builds it before any test runs
//! (cargo builds a package's binaries whenever that package's integration tests are built, and
//! `berth` has some); `cargo test -p berth-tests` alone does not, so run
//! `cargo build -p berth` first, or point `BERTH_BIN` at a binary (Distribution's
//! `registry serve CONFIG` is understood too: its "listening on" line is read the same way).

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
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
        .expect("crates/berth-tests is two levels below the workspace")
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

/// What `/proc/<pid>/status` says about memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set now, KiB.
    pub rss_kib: u64,
    /// Peak resident set since start, KiB.
    pub hwm_kib: u64,
}

/// A running berth. Dropping it kills (SIGKILL) and reaps the process.
pub struct Berth {
    child: Option<Child>,
    pid: u32,
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

/// How [`Berth::start`] configures berth. The listening address is always `127.0.0.1:0`;
/// everything else is here. `Setup::default()`: storage `<dir>/root` with deletes on and
/// upload purging off, `log.level: info`, the default `http` keys, no `auth`.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Keys under `http` (YAML lines without indentation, e.g. `headertimeout: 2s`; nested
    /// keys keep their relative indentation: `tls:` then `  certificate: /c`).
    pub http: String,
    /// Keys under `log` (YAML lines without indentation); `level: info` is added when they
    /// name no level.
    pub log: String,
    /// `storage.maintenance` in YAML flow style; `{uploadpurging: {enabled: false}}` when
    /// empty, so no test's sessions vanish under it.
    pub maintenance: String,
    /// Top-level YAML appended to the generated file as it is (an `auth:` section, ...).
    pub top: String,
    /// A whole config file instead of the generated one: `{addr}` is replaced by
    /// `127.0.0.1:0` and `{root}` by the storage root. `http`, `log`, `maintenance` and `top`
    /// are then ignored.
    pub whole: Option<String>,
    /// The storage root, when not `<dir>/root` (a small tmpfs, a root another berth shares).
    pub root: Option<PathBuf>,
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
    /// A setup with these `http` keys and the rest default.
    pub fn http(keys: &str) -> Setup {
        Setup {
            http: keys.to_owned(),
            ..Setup::default()
        }
    }

    /// The config file over `root`.
    fn config(&self, root: &Path) -> String {
        if let Some(whole) = &self.whole {
            return whole
                .replace("{addr}", "127.0.0.1:0")
                .replace("{root}", &root.display().to_string());
        }
        let mut log = indented(&self.log);
        if !self
            .log
            .lines()
            .any(|l| l.trim_start().starts_with("level:"))
        {
            log.insert_str(0, "  level: info\n");
        }
        let maintenance = if self.maintenance.trim().is_empty() {
            "{uploadpurging: {enabled: false}}"
        } else {
            self.maintenance.trim()
        };
        let mut top = self.top.clone();
        if !top.is_empty() && !top.ends_with('\n') {
            top.push('\n');
        }
        format!(
            "version: 0.1\nlog:\n{log}storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance: {maintenance}\nhttp:\n  addr: 127.0.0.1:0\n{}{top}",
            root.display(),
            indented(&self.http),
        )
    }
}

/// The address in berth's "berth listening" line (text or JSON formatter), or in
/// Distribution's "listening on <addr>".
pub fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let rest = if line.contains("berth listening") {
            line.split_once("addr=")
                .or_else(|| line.split_once("\"addr\":\""))?
                .1
        } else {
            line.split_once("listening on ")?.1
        };
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// The port of the TCP socket process `pid` listens on, as the kernel reports it
/// (`/proc/<pid>/fd` for the socket inodes, `/proc/<pid>/net/tcp{,6}` for the listening
/// ones): for a berth whose log level hides its "listening" line. With several listeners (the
/// debug server's too), the one with the lowest descriptor: berth binds its API listener
/// first.
pub fn listening_port(pid: u32) -> Option<u16> {
    let mut sockets: Vec<(u32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| {
            let number = fd.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(fd.path()).ok()?;
            let t = target.to_string_lossy();
            Some((
                number,
                t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned(),
            ))
        })
        .collect();
    sockets.sort();
    let mut listening: Vec<(String, u16)> = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            // 0A is TCP_LISTEN.
            if *state == "0A"
                && let Some(port) = local
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                listening.push(((*inode).to_owned(), port));
            }
        }
    }
    sockets.iter().find_map(|(_, inode)| {
        listening
            .iter()
            .find(|(i, _)| i == inode)
            .map(|(_, port)| *port)
    })
}

impl Berth {
    /// Starts berth with the defaults (see [`Setup`]) and `http` keys `http_extra` (YAML lines
    /// without indentation, e.g. `draintimeout: 10s`), config and logs in `dir`, and waits
    /// until it listens.
    pub fn start(dir: &Path, http_extra: &str) -> Berth {
        Self::start_setup(dir, &Setup::http(http_extra))
    }

    /// Starts berth over the storage root `root` (not under `dir`: a small tmpfs, a root
    /// another berth shares), config and logs in `dir`, the rest default.
    pub fn start_on(root: &Path, dir: &Path) -> Berth {
        Self::start_setup(
            dir,
            &Setup {
                root: Some(root.to_owned()),
                ..Setup::default()
            },
        )
    }

    /// Starts berth as `setup` says, its config in `<dir>/config.yml` and its output in
    /// `<dir>/berth-<n>.log` (a new file for each start in the same directory), and waits
    /// until its log says where it listens.
    pub fn start_setup(dir: &Path, setup: &Setup) -> Berth {
        let bin = berth_bin(setup.prefer_release);
        let root = setup.root.clone().unwrap_or_else(|| dir.join("root"));
        let config = dir.join("config.yml");
        let log = (0..)
            .map(|n| dir.join(format!("berth-{n}.log")))
            .find(|p| !p.exists())
            .expect("a free log name");
        fs::write(&config, setup.config(&root)).expect("writing the config");
        let child = spawn_limited(&bin, &config, &log, setup.nofile);
        let mut berth = Berth {
            pid: child.id(),
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            root,
            config,
            log,
            started: Instant::now(),
            bin,
        };
        match berth.wait_listening(Duration::from_secs(30)) {
            Ok(addr) => berth.addr = addr,
            Err(why) => panic!("berth did not start: {why}"),
        }
        berth
    }

    fn wait_listening(&mut self, limit: Duration) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.log_text();
            if let Some(addr) = listening_addr(&text) {
                return Ok(addr);
            }
            if let Some(port) = listening_port(self.pid) {
                return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("it exited with {status}:\n{text}"));
            }
            if Instant::now() > deadline {
                return Err(format!("not listening after {limit:?}:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
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

    /// Kills berth with SIGKILL and reaps it: a real process death, no destructor or flush
    /// runs. Fails if it had already exited on its own, which would be a crash the test did
    /// not cause.
    pub fn sigkill(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Err("berth was already stopped".to_owned());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "berth had exited on its own before the kill ({status}); log:\n{}",
                self.log_tail()
            ));
        }
        let _ = child.kill();
        match child.wait() {
            Ok(status) if status.signal() == Some(9) => Ok(()),
            Ok(status) => Err(format!("berth ended with {status}, not by SIGKILL")),
            Err(e) => Err(format!("reaping berth: {e}")),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last 8 KiB of what it logged (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let mut from = text.len().saturating_sub(8192);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        text[from..].to_owned()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => return Some(status),
                None => return None,
                _ => {}
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
        let plain = Setup::http("draintimeout: 1s\ntls:\n  certificate: /c").config(root);
        assert_eq!(
            plain,
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: /r\n  delete:\n    enabled: true\n  maintenance: {uploadpurging: {enabled: false}}\nhttp:\n  addr: 127.0.0.1:0\n  draintimeout: 1s\n  tls:\n    certificate: /c\n"
        );
        let more = Setup {
            log: "level: debug\nformatter: json".to_owned(),
            maintenance: "{uploadpurging: {enabled: true, age: 1s}}".to_owned(),
            top: "auth:\n  htpasswd:\n    path: /h".to_owned(),
            ..Setup::default()
        }
        .config(root);
        assert!(
            more.starts_with("version: 0.1\nlog:\n  level: debug\n  formatter: json\nstorage:")
        );
        assert!(more.contains("  maintenance: {uploadpurging: {enabled: true, age: 1s}}\n"));
        assert!(more.ends_with("  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    path: /h\n"));
        let formatted = Setup {
            log: "formatter: text".to_owned(),
            ..Setup::default()
        }
        .config(root);
        assert!(formatted.starts_with("version: 0.1\nlog:\n  level: info\n  formatter: text\n"));
        let whole = Setup {
            whole: Some(
                "http:\n  addr: {addr}\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
                    .to_owned(),
            ),
            http: "ignored: 1".to_owned(),
            ..Setup::default()
        }
        .config(root);
        assert_eq!(
            whole,
            "http:\n  addr: 127.0.0.1:0\nstorage:\n  filesystem:\n    rootdirectory: /r\n"
        );
    }

    #[test]
    fn the_listening_address_is_read_from_either_formatter_and_from_distribution() {
        let text = "2026-12-05T05:00:00Z  INFO berth listening addr=127.0.0.1:41234 storage=fs\n";
        assert_eq!(
            listening_addr(text),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        let json = r#"{"level":"INFO","fields":{"message":"berth listening","addr":"[::1]:5000"}}"#;
        assert_eq!(listening_addr(json), Some("[::1]:5000".parse().unwrap()));
        let dist = r#"time="x" level=info msg="listening on 127.0.0.1:5001" go.version=go1.19"#;
        assert_eq!(
            listening_addr(dist),
            Some("127.0.0.1:5001".parse().unwrap())
        );
        assert_eq!(listening_addr("berth starting\n"), None);
    }
}
