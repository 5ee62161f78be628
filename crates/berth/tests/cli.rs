//! The `berth` binary as an operator meets it: a Distribution config file, `REGISTRY_*`
//! overrides, warnings for keys it does not know, and clear errors for values it cannot use.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is a failed test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn berth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    // The test's own environment must not leak configuration into the child.
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRY_") {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_LOG");
    c
}

fn write_config(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let p = dir.join("config.yml");
    std::fs::write(&p, yaml).unwrap();
    p
}

/// A raw HTTP/1.1 GET, returning the head and body as text.
fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The port berth (process `pid`, told to listen on port 0) was given by the kernel.
fn wait_until_serving(pid: u32) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(port) = berth_tests::process::listening_port(pid) {
            return port;
        }
        assert!(Instant::now() < deadline, "berth did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn wrong_type_is_an_error_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /tmp/x\n  delete:\n    enabled: sometimes\n",
    );
    let out = berth().arg("serve").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage.delete.enabled"), "{stderr}");
    assert!(stderr.contains("line 6"), "{stderr}");
}

#[test]
fn unsupported_auth_kinds_and_unusable_htpasswd_are_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, needle) in [
        (
            "version: 0.1\nauth:\n  silly:\n    realm: r\n    service: s\n",
            "auth.silly",
        ),
        (
            "version: 0.1\nauth:\n  htpasswd:\n    realm: basic-realm\n    path: /nonexistent/htpasswd\n",
            "/nonexistent/htpasswd",
        ),
    ] {
        let cfg = write_config(dir.path(), yaml);
        let out = berth().arg("serve").arg(&cfg).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn serves_with_file_env_overrides_headers_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let cfg = write_config(
        dir.path(),
        "version: 0.1\nlog:\n  level: info\n  formatter: json\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /nonexistent/overridden\nhttp:\n  addr: :1\n  headers:\n    X-Content-Type-Options: [nosniff]\nhealth:\n  storagedriver:\n    enabled: true\n",
    );
    let mut child = berth()
        .arg("serve")
        .arg(&cfg)
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &root)
        .env("REGISTRY_STORAGE_DELETE_ENABLED", "true")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let port = wait_until_serving(child.id());
    let running = Running(child);

    let base = get(port, "/v2/");
    assert!(base.starts_with("HTTP/1.1 200"), "{base}");
    let lower = base.to_ascii_lowercase();
    assert!(
        lower.contains("docker-distribution-api-version: registry/2.0"),
        "{base}"
    );
    assert!(lower.contains("x-content-type-options: nosniff"), "{base}");
    assert!(
        root.join("").exists(),
        "the overridden root directory was not used"
    );

    drop(running);
    let lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some(), "log line without a level: {line}");
    }
    let all = lines.join("\n");
    assert!(
        all.contains("storage.cache"),
        "no warning for an unknown key: {all}"
    );
    assert!(
        !all.contains("unknown configuration key \"health"),
        "health is a known section: {all}"
    );
    assert!(
        all.contains("storagedriver_filesystem"),
        "the storage health check was not configured: {all}"
    );
    assert!(
        all.contains("\"delete\":true"),
        "delete override not applied: {all}"
    );
}
