//! The configuration loader under random input. The config module is private to the `berth`
//! binary, so it cannot be fuzzed in-process; instead this property test runs the real
//! `berth serve <file>` on mutated copies of realistic Distribution-style configs
//! (`configs/*.yml`: stock, development, production, pull-through cache, berth's own keys,
//! exotic YAML, read-only, refused sections) for a bounded number of cases, with a few random
//! `REGISTRY_*` overrides on top.
//!
//! Whatever the file says, berth must either refuse it (exit 2, or 1 for a runtime refusal
//! such as an invalid header name, with a `berth:` message) or start (it then answers
//! `GET /v2/` and exits 0 on SIGTERM), and never panic, die of a signal or hang. The storage
//! root and listen address are always forced through `REGISTRY_*` overrides (and `HOME` and
//! `XDG_DATA_HOME` point into the temporary directory), so no mutation can make the binary
//! write outside its temporary directory or listen beyond loopback.
//!
//! `BERTH_CONFIG_FUZZ_CASES` sets the number of cases (default 400, a few seconds).
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::process::{berth_bin, listening_addr, listening_port, workspace_root};
use berth_tests::raw::get_blocking;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rustix::process::{Pid, Signal, kill_process};

fn corpus() -> Vec<(String, String)> {
    let dir = workspace_root().join("crates/berth-tests/configs");
    let mut out: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "the config corpus is missing: {out:?}");
    out
}

/// Values a mutation puts where a config value was: every YAML type, edge numbers, bad
/// durations (including sums past `Duration::MAX`), quoting, tags, anchors, block scalars,
/// control and non-ASCII characters.
const VALUES: &[&str] = &[
    "",
    "~",
    "null",
    "true",
    "false",
    "yes",
    "0",
    "-1",
    "1",
    "99999999999999999999999",
    "18446744073709551616",
    "-9223372036854775809",
    "1e400",
    ".inf",
    "-.inf",
    ".nan",
    "0x10",
    "0o17",
    "'quoted'",
    "\"\\u0000\"",
    "\"\\t\\r\\n\"",
    "[]",
    "{}",
    "[a, b]",
    "{a: b}",
    "[[[[[[[[[[[[]]]]]]]]]]]]",
    "!!binary aGVsbG8=",
    "!!str 5",
    "!!int x",
    "!custom x",
    "&anchor value",
    "*undefined",
    "|\n  block",
    ">-\n  folded",
    "\u{e4}\u{f6}",
    "\u{feff}",
    "\u{202e}evil",
    "10",
    "10s",
    "-10s",
    "+10s",
    "1.5h",
    ".5s",
    "5.s",
    "1..5s",
    "1h30m",
    "1h-30m",
    "\u{b5}s",
    "1\u{b5}s",
    "1ns",
    "0s",
    "0",
    "2562047h",
    "18446744073709551615s",
    "18000000000000000000s18000000000000000000s",
    "2562047h2562047h2562047h",
    "18446744073709551616s",
    "9999999999999999999999h",
    "1e30h",
    "NaNs",
    "infh",
    "300ms",
    ":5000",
    "localhost:0",
    "[::1]:0",
    "unix",
    "udp",
    "/tmp",
    "relative/dir",
    "X-Bad Header",
    "bad\u{7f}value",
    "debug",
    "trace",
    "TRACE",
    "json",
    "logstash",
    "fatal",
];

/// Lines a mutation inserts: sections berth refuses, keys it honours with odd values, YAML
/// documents and directives, an alias bomb.
const SNIPPETS: &[&str] = &[
    "auth:\n  token:\n    realm: x",
    "auth: ~",
    "tls: {}",
    "  tls:\n    certificate: /x",
    "storage:\n  s3:\n    bucket: b",
    "  inmemory: {}",
    "  draintimeout: 1h",
    "  bodyidletimeout: 0s",
    "  headertimeout: 0s",
    "  idletimeout: -1s",
    "  maxconnections: 1",
    "  maxconnections: -1",
    "  trustedproxies: [10.0.0.0/8, \"::1\", bogus]",
    "  maxentries: -5",
    "  net: unix",
    "  headers:\n    Bad Name: [x]",
    "  headers:\n    X-Ok: [\"bad\\nvalue\"]",
    "---",
    "...",
    "%YAML 1.2",
    "%TAG ! tag:example.com,2000:",
    "? complex key\n: value",
    "- a list item",
    "\t tab indented: x",
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]",
    "version: 0.2",
    "log:\n  level: nonsense",
    "http:\n  addr: 127.0.0.1:1",
];

/// Environment overrides a case may add (never a parent of the forced root or address).
const ENV_KEYS: &[&str] = &[
    "REGISTRY_STORAGE_DELETE_ENABLED",
    "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE",
    "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING",
    "REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED",
    "REGISTRY_HTTP_DRAINTIMEOUT",
    "REGISTRY_HTTP_BODYIDLETIMEOUT",
    "REGISTRY_HTTP_HEADERS",
    "REGISTRY_HTTP_HOST",
    "REGISTRY_HTTP_TLS",
    "REGISTRY_LOG_LEVEL",
    "REGISTRY_LOG",
    "REGISTRY_CATALOG_MAXENTRIES",
    "REGISTRY_VALIDATION_MANIFESTS_MAXSIZE",
    "REGISTRY_VERSION",
    "REGISTRY_AUTH",
    "REGISTRY_",
    "REGISTRY__",
    "REGISTRY_NOTIFICATIONS_ENDPOINTS",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Replaces the value of a `key: value` line (or adds one).
    Value(Index, Index),
    /// Removes a line.
    Delete(Index),
    /// Repeats a line.
    Duplicate(Index),
    /// Shifts a line's indentation by -2..=2 spaces.
    Indent(Index, i8),
    /// Inserts a snippet before a line.
    Insert(Index, Index),
    /// Swaps two lines.
    Swap(Index, Index),
    /// Replaces one byte.
    Byte(Index, u8),
    /// Cuts the file.
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<Index>(), any::<Index>()).prop_map(|(l, v)| Mutation::Value(l, v)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Duplicate),
        2 => (any::<Index>(), -2i8..=2).prop_map(|(l, d)| Mutation::Indent(l, d)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(l, s)| Mutation::Insert(l, s)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut tail: Option<Vec<u8>> = None;
    for m in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match m {
            Mutation::Value(l, v) => {
                let line = &mut lines[l.index(n)];
                let value = VALUES[v.index(VALUES.len())];
                match line.split_once(':') {
                    Some((k, _)) => *line = format!("{k}: {value}"),
                    None => line.push_str(&format!(": {value}")),
                }
            }
            Mutation::Delete(l) => {
                lines.remove(l.index(n));
            }
            Mutation::Duplicate(l) => {
                let i = l.index(n);
                lines.insert(i, lines[i].clone());
            }
            Mutation::Indent(l, d) => {
                let line = &mut lines[l.index(n)];
                if *d > 0 {
                    line.insert_str(0, &" ".repeat(*d as usize));
                } else {
                    for _ in 0..d.unsigned_abs() {
                        if line.starts_with(' ') {
                            line.remove(0);
                        }
                    }
                }
            }
            Mutation::Insert(l, s) => {
                let snippet = SNIPPETS[s.index(SNIPPETS.len())];
                lines.insert(l.index(n + 1), snippet.to_owned());
            }
            Mutation::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
            Mutation::Byte(i, b) => {
                let mut bytes = tail.take().unwrap_or_else(|| lines.join("\n").into_bytes());
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] = *b;
                }
                tail = Some(bytes);
            }
            Mutation::Truncate(i) => {
                let mut bytes = tail.take().unwrap_or_else(|| lines.join("\n").into_bytes());
                bytes.truncate(i.index(bytes.len() + 1));
                tail = Some(bytes);
            }
        }
        if let Some(bytes) = tail.take() {
            // Byte-level mutations continue on lines when the bytes are still text.
            match String::from_utf8(bytes) {
                Ok(s) => lines = s.lines().map(str::to_owned).collect(),
                Err(e) => {
                    tail = Some(e.into_bytes());
                    break;
                }
            }
        }
    }
    tail.unwrap_or_else(|| {
        let mut s = lines.join("\n");
        s.push('\n');
        s.into_bytes()
    })
}

/// How one run of the binary ended.
#[derive(Debug)]
enum Outcome {
    /// Exited by itself (code, output).
    Exited(i32, String),
    /// Started; `GET /v2/` gave this status; SIGTERM then ended it with this code.
    Served(u16, Option<i32>, String),
}

/// Runs `berth serve` on `config` bytes with extra environment overrides.
fn run(dir: &Path, bin: &Path, config: &[u8], env: &[(String, String)]) -> Result<Outcome, String> {
    // Port 0: the kernel picks, and its table of berth's listening sockets says which.
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let root = dir.join("root");
    let path = dir.join("config.yml");
    let text = String::from_utf8_lossy(config).into_owned();
    let bytes = if std::str::from_utf8(config).is_ok() {
        text.replace("@ROOT@", &root.display().to_string())
            .replace("@ADDR@", &addr.to_string())
            .into_bytes()
    } else {
        config.to_vec()
    };
    fs::write(&path, &bytes).unwrap();
    let log = dir.join("log");
    let out = fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REGISTRY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_BACKTRACE", "0")
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("xdg"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The forced keys come last so that they win over any random override.
    cmd.env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &root)
        .env("REGISTRY_HTTP_ADDR", addr.to_string());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let output = || fs::read_to_string(&log).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return match status.code() {
                Some(code) => Ok(Outcome::Exited(code, output())),
                None => Err(format!("killed by a signal ({status}): {}", output())),
            };
        }
        if let Some(port) = listening_port(child.id()) {
            // The main listener's port, from its log line where the level shows it: with
            // `http.debug.addr` berth listens twice.
            let port = listening_addr(&output()).map_or(port, |a| a.port());
            let status = get_blocking(SocketAddr::from(([127, 0, 0, 1], port)), "/v2/");
            kill_process(Pid::from_raw(child.id() as i32).unwrap(), Signal::TERM).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let code = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break s.code();
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("did not exit within 10 s of SIGTERM: {}", output()));
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            return match status {
                Ok(s) => Ok(Outcome::Served(s, code, output())),
                Err(e) => Err(format!("listening, but GET /v2/ failed: {e}: {}", output())),
            };
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "neither exited nor listened within 15 s: {}",
                output()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The property: a refusal with a message, or a working server (answering, or gated by a
/// failing health check it logs) that stops cleanly.
fn judge(outcome: &Outcome) -> Result<(), String> {
    match outcome {
        Outcome::Exited(code, out) => {
            if out.contains("panicked") || *code == 101 {
                return Err(format!("panicked (exit {code}): {out}"));
            }
            if *code != 1 && *code != 2 {
                return Err(format!("exit {code}: {out}"));
            }
            if !out
                .lines()
                .any(|l| l.starts_with("berth: ") && l.len() > 10)
            {
                return Err(format!("exit {code} without a `berth:` message: {out}"));
            }
            Ok(())
        }
        Outcome::Served(status, code, out) => {
            if out.contains("panicked") {
                return Err(format!("panicked while serving: {out}"));
            }
            // A configured health check that fails at once (a mutation can leave a check's
            // threshold at 0 and its address unusable) gates every request with 503, as in
            // Distribution: served as configured, and said so in the log.
            let gated = *status == 503 && out.contains("health check fails");
            if *status != 200 && !gated {
                return Err(format!("GET /v2/ answered {status}: {out}"));
            }
            if *code != Some(0) {
                return Err(format!("exit {code:?} after SIGTERM: {out}"));
            }
            Ok(())
        }
    }
}

#[test]
fn corpus_configs_load_as_expected() {
    let bin = berth_bin(false);
    for (name, text) in corpus() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = run(dir.path(), &bin, text.as_bytes(), &[]).unwrap();
        judge(&outcome).unwrap_or_else(|e| panic!("{name}: {e}"));
        let refused = name == "refused.yml";
        match (&outcome, refused) {
            (Outcome::Served(..), false) | (Outcome::Exited(2, _), true) => {}
            _ => panic!("{name}: unexpected {outcome:?}"),
        }
    }
}

#[test]
fn mutated_configs_never_crash_berth() {
    let bin = berth_bin(false);
    let corpus = corpus();
    let cases = std::env::var("BERTH_CONFIG_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let strategy = (
        any::<Index>(),
        prop::collection::vec(mutation(), 0..5),
        prop::collection::vec(
            (
                any::<Index>(),
                prop_oneof![
                    prop::sample::select(VALUES).prop_map(str::to_owned),
                    "\\PC{0,12}"
                ],
            ),
            0..3,
        ),
    );
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let tally = std::cell::RefCell::new(std::collections::BTreeMap::<String, usize>::new());
    let result = runner.run(&strategy, |(pick, mutations, env)| {
        let (name, text) = &corpus[pick.index(corpus.len())];
        let config = apply(text, &mutations);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (ENV_KEYS[k.index(ENV_KEYS.len())].to_owned(), v.clone()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let outcome = run(dir.path(), &bin, &config, &env).map_err(|e| {
            TestCaseError::fail(format!(
                "{name} mutated by {mutations:?}, env {env:?}:\n{}\n---\n{e}",
                String::from_utf8_lossy(&config)
            ))
        })?;
        let key = match &outcome {
            Outcome::Exited(code, _) => format!("exit {code}"),
            Outcome::Served(..) => "served".to_owned(),
        };
        *tally.borrow_mut().entry(key).or_default() += 1;
        judge(&outcome).map_err(|e| {
            TestCaseError::fail(format!(
                "{name} mutated by {mutations:?}, env {env:?}:\n{}\n---\n{e}",
                String::from_utf8_lossy(&config)
            ))
        })
    });
    eprintln!("config fuzz: {cases} cases, outcomes {:?}", tally.borrow());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Go durations may add terms (`1h30m`); berth sums them in a `Duration`, and terms that are
/// each valid but add up past `Duration::MAX` must be a config error, not a panic.
#[test]
fn duration_sum_overflow_is_refused() {
    let bin = berth_bin(false);
    for key in [
        "draintimeout",
        "bodyidletimeout",
        "headertimeout",
        "idletimeout",
        "handshaketimeout",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @ROOT@\nhttp:\n  addr: @ADDR@\n  {key}: 18000000000000000000s18000000000000000000s\n"
        );
        let outcome = run(dir.path(), &bin, config.as_bytes(), &[]).unwrap();
        judge(&outcome).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(
            matches!(outcome, Outcome::Exited(2, _)),
            "{key}: {outcome:?}"
        );
    }
}

/// Distribution reads its config with a YAML 1.1 library (`yaml.v2`), where `yes`, `no`, `on`
/// and `off` are booleans; a config written for it with `enabled: yes` must load in berth too.
#[test]
fn yaml_1_1_booleans_load_as_in_distribution() {
    let bin = berth_bin(false);
    let dir = tempfile::tempdir().unwrap();
    let config = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: @ROOT@\n  delete:\n    enabled: yes\n  maintenance:\n    uploadpurging:\n      enabled: off\nhttp:\n  addr: @ADDR@\n  relativeurls: on\n";
    let outcome = run(dir.path(), &bin, config.as_bytes(), &[]).unwrap();
    judge(&outcome).unwrap();
    assert!(matches!(outcome, Outcome::Served(..)), "{outcome:?}");
}

/// Distribution applies `REGISTRY_*` overrides sorted by name, so the more specific one
/// (`REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY`) always lands after its parent
/// (`REGISTRY_STORAGE`), whatever order the environment lists them in. berth must not serve
/// from another directory because a parent variable came later in the environment.
#[test]
fn environment_overrides_apply_most_specific_last() {
    let bin = berth_bin(false);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("wanted-root");
    let config = dir.path().join("config.yml");
    fs::write(&config, "version: 0.1\nhttp:\n  addr: 127.0.0.1:0\n").unwrap();
    // env(1) keeps the order given; std::process::Command would sort the variables.
    let mut child = Command::new("env")
        .arg("-i")
        .arg(format!("HOME={}", dir.path().display()))
        .arg(format!(
            "XDG_DATA_HOME={}",
            dir.path().join("xdg").display()
        ))
        .arg(format!(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY={}",
            root.display()
        ))
        .arg("REGISTRY_STORAGE={delete: {enabled: true}}")
        .arg(&bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while listening_port(child.id()).is_none() {
        assert!(child.try_wait().unwrap().is_none(), "berth exited");
        assert!(Instant::now() < deadline, "berth did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        root.exists() && !dir.path().join("xdg/berth").exists(),
        "berth used the default root {} instead of REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
        dir.path().join("xdg/berth").display()
    );
}
