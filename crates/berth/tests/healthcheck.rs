//! `berth healthcheck` (the container image's HEALTHCHECK) against the real binary, over plain
//! HTTP and over TLS; and `berth FILE`, the registry:2 entrypoint's way of naming the config.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is a failed test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn berth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRY_") {
            c.env_remove(k);
        }
    }
    c
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `berth ARGS` (its config listening on port 0) and returns it with its port.
fn start(args: &[&Path]) -> (Running, u16) {
    let child = berth()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(port) = berth_tests::process::listening_port(pid) {
            return (running, port);
        }
        assert!(Instant::now() < deadline, "berth did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `berth healthcheck CONFIG` with the config's port replaced by `port`: exit code, output.
fn probe(config: &Path, port: u16) -> (Option<i32>, String) {
    let out = berth()
        .args(["healthcheck", "--timeout", "5s"])
        .arg(config)
        .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn healthcheck_over_http_and_the_config_as_only_argument() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
        dir.path().join("data").display()
    );
    std::fs::write(&config, yaml).unwrap();
    // `berth FILE`, as `docker run IMAGE /etc/docker/registry/config.yml`.
    let (running, port) = start(&[&config]);
    let (code, text) = probe(&config, port);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/")),
        "{text}"
    );
    drop(running);
    let (code, text) = probe(&config, port);
    assert_eq!(code, Some(1), "nothing listens any more: {text}");
    assert!(text.starts_with("not ready"), "{text}");
}

#[test]
fn healthcheck_over_tls_accepts_the_servers_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["registry.example".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let config = dir.path().join("config.yml");
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n  tls:\n    certificate: {}\n    key: {}\n",
        dir.path().join("data").display(),
        cert.display(),
        key.display()
    );
    std::fs::write(&config, yaml).unwrap();
    let (_running, port) = start(&[Path::new("serve"), &config]);
    let (code, text) = probe(&config, port);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("https://127.0.0.1:{port}/")),
        "{text}"
    );
}
