//! Hostile networks against the real binary, on loopback:
//!
//! - **Descriptor exhaustion**: berth under `prlimit --nofile=1024:1024` with
//!   `http.maxconnections` at its default (half the soft limit); 1,100 connections that send
//!   nothing and stay open; then a normal `GET /v2/` on a fresh connection must be answered
//!   within a few seconds, and the log must not fill with `Too many open files`.
//! - **Slow and silent clients** (`http.headertimeout: 2s`, `http.idletimeout: 2s`): a
//!   connection that sends nothing, over plain TCP and after a completed TLS handshake, is
//!   closed after about two seconds; so is a keep-alive connection idle after one request,
//!   over TLS and plain HTTP.
//! - **Password guessing** (htpasswd): 200 parallel wrong passwords for one user get at most
//!   10 401s (each guess is counted before its password is checked), the rest 429; then that
//!   user is refused with 429 and a `Retry-After` even with the right password, while another
//!   user from the same address still gets in.
//! - **User enumeration by timing**: an unknown user name costs as much as the costliest entry
//!   of the file, not the first one's.
//! - **Log forging**: a Basic user name carrying a newline and an ANSI escape is logged on one
//!   line, escaped, with the text and the JSON formatter alike.
//!
//! The tests measure time on a shared two-core machine, so they run one at a time.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_tests::process::{Berth, Setup};
use berth_tests::raise_nofile;
use berth_tests::raw::{Conn, Reader, Resp};
use berth_tests::serially;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The short timeouts the timing tests run with.
const SHORT_TIMEOUTS: &str = "headertimeout: 2s\nidletimeout: 2s\nhandshaketimeout: 2s";
/// `headertimeout` and `idletimeout` above.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A connection must be closed by then (the timeout plus slack for a loaded machine).
const CLOSED_BY: Duration = Duration::from_secs(6);
/// ... and not before this (well before the timeout, but not at once).
const NOT_BEFORE: Duration = Duration::from_secs(1);

/// Failures collected through a test, so one run reports every broken property at once.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            let m = message();
            eprintln!("FAILED: {m}");
            self.0.push(m);
        }
    }

    fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} failure(s):\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// The last `n` lines berth logged, control bytes escaped.
fn log_tail(b: &Berth, n: usize) -> String {
    let log = b.log_bytes();
    let lines: Vec<&[u8]> = log.split(|c| *c == b'\n').collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.escape_ascii().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Basic <base64(user:password)>`
fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// An htpasswd file with `users` (name, password, bcrypt cost), in this order.
fn htpasswd(dir: &Path, users: &[(&str, &str, u32)]) -> PathBuf {
    let mut text = String::new();
    for (user, password, cost) in users {
        let hash = bcrypt::hash(password, *cost).unwrap();
        text.push_str(&format!("{user}:{hash}\n"));
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, text).unwrap();
    path
}

/// The `auth:` section for an htpasswd file.
fn auth_section(path: &Path) -> String {
    format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        path.display()
    )
}

/// `GET /v2/` with `authorization` (if any) on a fresh connection, within 30 s.
async fn get_v2(addr: SocketAddr, authorization: Option<&str>) -> Result<Resp, String> {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        let mut c = Conn::connect(addr).await?;
        c.request("GET", "/v2/", &headers, b"").await
    })
    .await;
    match answer {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("transport error: {e}")),
        Err(_) => Err("no answer within 30 s".to_owned()),
    }
}

/// How a connection that is waiting for the server ended: closed after this long (EOF or
/// an error such as a reset), or still open when we stopped waiting at [`CLOSED_BY`].
async fn wait_closed<R: tokio::io::AsyncRead + Unpin>(reader: &mut Reader<R>) -> Option<Duration> {
    let start = Instant::now();
    reader
        .closed_within(CLOSED_BY)
        .await
        .then(|| start.elapsed())
}

/// Checks that a connection idle since `what` was closed after about [`TIMEOUT`].
fn judge_close(f: &mut Failures, what: &str, closed_after: Option<Duration>) {
    eprintln!("{what}: closed by the server after {closed_after:?} (None = still open)");
    match closed_after {
        None => f.check(false, || {
            format!(
                "{what}: still open {CLOSED_BY:?} later (timeout configured: {TIMEOUT:?}); \
                 the server never closed it"
            )
        }),
        Some(after) => f.check(after >= NOT_BEFORE, || {
            format!(
                "{what}: closed after only {after:?}, before {NOT_BEFORE:?} (timeout configured: \
                 {TIMEOUT:?})"
            )
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Descriptor exhaustion

/// Whether the server has closed each connection (EOF or an error on a non-blocking read):
/// (closed, still open).
fn census(conns: &mut [std::net::TcpStream]) -> (usize, usize) {
    let mut closed = 0;
    let mut open = 0;
    let mut buf = [0u8; 64];
    for c in conns.iter_mut() {
        match c.read(&mut buf) {
            Ok(0) => closed += 1,
            Ok(_) => open += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => open += 1,
            Err(_) => closed += 1,
        }
    }
    (closed, open)
}

#[test]
fn silent_connections_beyond_the_fd_limit_do_not_lock_out_a_client() {
    serially(async {
        const ATTACKERS: usize = 1100;
        const ANSWER_WITHIN: Duration = Duration::from_secs(5);
        let ours = raise_nofile(4096);
        assert!(
            ours >= ATTACKERS as u64 + 200,
            "this test needs {} descriptors of its own; the soft limit is {ours}",
            ATTACKERS + 200
        );
        let dir = tempfile::tempdir().unwrap();
        let b = Berth::start_setup(
            dir.path(),
            &Setup {
                nofile: Some(1024),
                ..Setup::default()
            },
        );
        let limit = std::fs::read_to_string(format!("/proc/{}/limits", b.pid()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(str::to_owned)
            .unwrap_or_default();
        eprintln!("berth (pid {}): {limit}", b.pid());
        assert!(
            limit.split_whitespace().nth(3) == Some("1024"),
            "berth is not running under a soft open-file limit of 1024: {limit:?}"
        );

        // The attack: connections that send nothing and stay open, a hundred at a time, so
        // that the listen backlog (1,024) never overflows: a handshake that overflows it is
        // left half-open on the server and completed by the kernel seconds later, so the
        // normal client below could overtake it.
        let started = Instant::now();
        let mut attackers = Vec::new();
        let mut connect_errors = Vec::new();
        for batch in 0..ATTACKERS.div_ceil(100) {
            let mut connecting = tokio::task::JoinSet::new();
            for _ in (batch * 100)..((batch + 1) * 100).min(ATTACKERS) {
                let addr = b.addr;
                connecting.spawn(async move {
                    let connect = TcpStream::connect(addr);
                    match tokio::time::timeout(Duration::from_secs(5), connect).await {
                        Ok(Ok(s)) => Ok(s.into_std().unwrap()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("connect timed out after 5 s".to_owned()),
                    }
                });
            }
            while let Some(r) = connecting.join_next().await {
                match r.unwrap() {
                    Ok(s) => attackers.push(s),
                    Err(e) => connect_errors.push(e),
                }
            }
        }
        eprintln!(
            "{} of {ATTACKERS} silent connections open after {:?} ({} failed to connect{}); \
             berth holds {} descriptors",
            attackers.len(),
            started.elapsed(),
            connect_errors.len(),
            connect_errors
                .first()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default(),
            b.fds()
        );

        // Let the server take in what it will (it accepts from its backlog at its own pace),
        // so the client below comes after every silent connection. Settled: berth's
        // descriptors and the closed connections unchanged for a second (at most 10 s).
        let settling = Instant::now();
        let mut last = (b.fds(), census(&mut attackers).0);
        let mut unchanged_since = Instant::now();
        while settling.elapsed() < Duration::from_secs(10)
            && unchanged_since.elapsed() < Duration::from_secs(1)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = (b.fds(), census(&mut attackers).0);
            if now != last {
                last = now;
                unchanged_since = Instant::now();
            }
        }
        eprintln!(
            "settled after {:?}: berth holds {} descriptors, has closed {} of the silent \
             connections",
            settling.elapsed(),
            last.0,
            last.1
        );

        // A legitimate client.
        let t = Instant::now();
        let answer = tokio::time::timeout(ANSWER_WITHIN, async {
            let mut c = Conn::connect(b.addr).await?;
            c.request("GET", "/v2/", &[], b"").await
        })
        .await;
        let waited = t.elapsed();
        let (closed, held) = census(&mut attackers);
        eprintln!(
            "normal client: {} after {waited:?}; by then the server had closed {closed} of the \
             attacker's {} connections and {held} were still held; berth holds {} descriptors",
            match &answer {
                Ok(Ok(r)) => format!("status {}", r.status),
                Ok(Err(e)) => format!("transport error {e}"),
                Err(_) => format!("no answer within {ANSWER_WITHIN:?}"),
            },
            attackers.len(),
            b.fds()
        );

        let mut f = Failures::default();
        match &answer {
            Ok(Ok(r)) => f.check(r.status == 200, || {
                format!(
                    "GET /v2/ behind {ATTACKERS} silent connections: expected 200, got {}",
                    r.describe()
                )
            }),
            Ok(Err(e)) => f.check(false, || {
                format!(
                    "GET /v2/ behind {ATTACKERS} silent connections failed after {waited:?}: {e} \
                     (server had closed {closed}, {held} still held)"
                )
            }),
            Err(_) => f.check(false, || {
                format!(
                    "GET /v2/ behind {ATTACKERS} silent connections got no answer within \
                     {ANSWER_WITHIN:?} (server had closed {closed} of them, {held} still held)"
                )
            }),
        }
        let log = String::from_utf8_lossy(&b.log_bytes()).into_owned();
        let spin: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Too many open files") || l.contains("os error 24"))
            .collect();
        eprintln!(
            "log: {} lines, {} about `Too many open files`",
            log.lines().count(),
            spin.len()
        );
        f.check(spin.len() <= 5, || {
            format!(
                "berth's log has {} `Too many open files` lines (at most 5 allowed), first: {:?}",
                spin.len(),
                spin.first().copied().unwrap_or_default()
            )
        });
        drop(attackers);
        f.assert_none("descriptor exhaustion");
    });
}

// ---------------------------------------------------------------------------------------------
// 2. and 3. Silent and idle connections

#[test]
fn silent_plain_connection_is_closed_after_headertimeout() {
    serially(async {
        let dir = tempfile::tempdir().unwrap();
        let b = Berth::start(dir.path(), SHORT_TIMEOUTS);
        let mut c = Conn::connect(b.addr).await.unwrap();
        let closed = wait_closed(&mut c.reader).await;
        let mut f = Failures::default();
        judge_close(
            &mut f,
            "plain connection that sent nothing (headertimeout 2s)",
            closed,
        );
        f.assert_none("silent plain connection");
    });
}

#[test]
fn idle_plain_keepalive_connection_is_closed_after_idletimeout() {
    serially(async {
        let dir = tempfile::tempdir().unwrap();
        let b = Berth::start(dir.path(), SHORT_TIMEOUTS);
        let mut c = Conn::connect(b.addr).await.unwrap();
        let r = c.request("GET", "/v2/", &[], b"").await.unwrap();
        assert_eq!(r.status, 200, "GET /v2/: {}", r.describe());
        assert!(
            !r.closes(),
            "GET /v2/ asked to close the connection: {}",
            r.describe()
        );
        let closed = wait_closed(&mut c.reader).await;
        let mut f = Failures::default();
        judge_close(
            &mut f,
            "plain keep-alive connection idle after one request (idletimeout 2s)",
            closed,
        );
        f.assert_none("idle plain keep-alive connection");
    });
}

/// A client that asks for a large blob and then stops reading holds its response, and with it
/// a storage handle: it is waiting on the client like an idle connection, and is cut after
/// `idletimeout` rather than held for ever.
#[test]
fn a_response_the_client_stops_reading_is_cut_after_idletimeout() {
    serially(async {
        let dir = tempfile::tempdir().unwrap();
        let b = Berth::start(dir.path(), SHORT_TIMEOUTS);
        // Larger than what loopback's socket buffers on both sides can hold.
        let blob = berth_tests::content(7, 64 << 20);
        let digest = berth_tests::sha256(&blob);
        let mut c = Conn::connect(b.addr).await.unwrap();
        let r = c
            .request(
                "POST",
                &format!("/v2/stall/blobs/uploads/?digest={digest}"),
                &[],
                &blob,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "pushing the blob: {}", r.describe());

        let mut c = Conn::connect(b.addr).await.unwrap();
        let head = c.head("GET", &format!("/v2/stall/blobs/{digest}"), &[]);
        c.write(&head).await.unwrap();
        // Read nothing for longer than the limit (plus the connection's recheck and close
        // grace), then take whatever the server still sends.
        tokio::time::sleep(TIMEOUT * 3).await;
        let (received, ended) = c.reader.drain_within(Duration::from_secs(20)).await;
        eprintln!(
            "stalled reader of a {} MiB blob: got {} MiB after resuming, then {}",
            blob.len() >> 20,
            received >> 20,
            if ended {
                "the connection ended"
            } else {
                "still open after 20 s"
            }
        );
        assert!(ended, "the connection never ended");
        assert!(
            received < blob.len(),
            "the whole blob arrived ({received} bytes): the stalled response was never cut"
        );
        // The server is fine and serves the blob to a reader that reads.
        let mut c = Conn::connect(b.addr).await.unwrap();
        let r = c
            .request("GET", &format!("/v2/stall/blobs/{digest}"), &[], b"")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.body.len(), blob.len());
    });
}

/// A self-signed certificate for `localhost` (PEM certificate, PEM key) and a client that
/// trusts it.
fn tls_pair() -> (String, String, tokio_rustls::TlsConnector) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        tokio_rustls::TlsConnector::from(Arc::new(config)),
    )
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> TlsStream {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("the TLS handshake did not finish within 5 s")
        .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"))
}

#[test]
fn tls_silent_and_idle_connections_are_closed() {
    serially(async {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, connector) = tls_pair();
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let b = Berth::start_setup(
            dir.path(),
            &Setup {
                http: format!(
                    "{SHORT_TIMEOUTS}\ntls:\n  certificate: {}\n  key: {}",
                    cert_path.display(),
                    key_path.display()
                ),
                ..Setup::default()
            },
        );

        // Handshake, then nothing.
        let silent = async {
            let tls = tls_connect(b.addr, &connector).await;
            let (r, w) = tokio::io::split(tls);
            let mut reader = Reader::new(r);
            let closed = wait_closed(&mut reader).await;
            drop(w);
            closed
        };
        // One request on a keep-alive connection, then nothing.
        let idle = async {
            let tls = tls_connect(b.addr, &connector).await;
            let (r, mut w) = tokio::io::split(tls);
            let mut reader = Reader::new(r);
            w.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(10), reader.response(false))
                .await
                .expect("GET /v2/ over TLS: no answer within 10 s")
                .unwrap();
            let closed = wait_closed(&mut reader).await;
            drop(w);
            (resp, closed)
        };
        let (silent, (resp, idle)) = tokio::join!(silent, idle);

        let mut f = Failures::default();
        judge_close(
            &mut f,
            "TLS connection that completed the handshake and sent nothing (headertimeout 2s)",
            silent,
        );
        f.check(resp.status == 200 && !resp.closes(), || {
            format!(
                "GET /v2/ over TLS: expected 200 keep-alive, got {}",
                resp.describe()
            )
        });
        judge_close(
            &mut f,
            "TLS keep-alive connection idle after one request (idletimeout 2s)",
            idle,
        );
        f.assert_none("silent and idle TLS connections");
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Password guessing

#[test]
fn parallel_password_guesses_are_capped_per_user() {
    serially(async {
        const GUESSES: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let file = htpasswd(
            dir.path(),
            &[("alice", "alice-pw", 4), ("bob", "bob-pw", 4)],
        );
        let b = Berth::start_setup(
            dir.path(),
            &Setup {
                top: auth_section(&file),
                ..Setup::default()
            },
        );
        let wrong = basic("alice", "not-alice-pw");

        // Connect every guesser first, then send all the requests at once.
        let mut conns = Vec::with_capacity(GUESSES);
        for _ in 0..GUESSES {
            conns.push(Conn::connect(b.addr).await.unwrap());
        }
        let wire = conns[0].head("GET", "/v2/", &[("Authorization", &wrong)]);
        let sent = Instant::now();
        for c in &mut conns {
            c.write(&wire).await.unwrap();
        }
        let mut reading = tokio::task::JoinSet::new();
        for c in conns {
            reading.spawn(async move {
                // The whole connection moves here: dropping its writer would half-close it,
                // and the server would drop the request unanswered.
                let mut c = c;
                tokio::time::timeout(Duration::from_secs(30), c.reader.response(false)).await
            });
        }
        let (mut unauthorized, mut too_many, mut other) = (0usize, 0usize, Vec::new());
        let mut too_many_without_code = 0usize;
        while let Some(r) = reading.join_next().await {
            match r.unwrap() {
                Ok(Ok(r)) if r.status == 401 => unauthorized += 1,
                Ok(Ok(r)) if r.status == 429 => {
                    too_many += 1;
                    if r.error_code().as_deref() != Some("TOOMANYREQUESTS") {
                        too_many_without_code += 1;
                    }
                }
                Ok(Ok(r)) => other.push(r.describe()),
                Ok(Err(e)) => other.push(format!("transport error: {e}")),
                Err(_) => other.push("no answer within 30 s".to_owned()),
            }
        }
        eprintln!(
            "{GUESSES} parallel wrong passwords for alice, answered within {:?}: {unauthorized} \
             × 401, {too_many} × 429 ({too_many_without_code} of them without TOOMANYREQUESTS), \
             {} other{}",
            sent.elapsed(),
            other.len(),
            other
                .first()
                .map(|o| format!(" (first: {o})"))
                .unwrap_or_default()
        );

        if !other.is_empty() {
            eprintln!("berth's log:\n{}", log_tail(&b, 40));
        }

        let mut f = Failures::default();
        f.check(unauthorized <= 10, || {
            format!(
                "{unauthorized} of {GUESSES} parallel wrong passwords for alice were checked \
                 (401); at most 10 may be"
            )
        });
        f.check(
            unauthorized + too_many == GUESSES && other.is_empty(),
            || {
                format!(
                    "{GUESSES} guesses: {unauthorized} × 401 and {too_many} × 429, and {} other \
                     answers (first: {:?})",
                    other.len(),
                    other.first()
                )
            },
        );
        f.check(too_many_without_code == 0, || {
            format!("{too_many_without_code} of the 429s have no TOOMANYREQUESTS error code")
        });

        // alice is locked out, even with her password.
        match get_v2(b.addr, Some(&basic("alice", "alice-pw"))).await {
            Ok(r) => {
                let retry = r.header("retry-after").map(str::to_owned);
                eprintln!(
                    "alice with the right password: {} Retry-After={retry:?} body={}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
                f.check(r.status == 429, || {
                    format!(
                        "alice with the right password after {GUESSES} guesses: expected 429, \
                         got {}",
                        r.describe()
                    )
                });
                f.check(
                    String::from_utf8_lossy(&r.body).contains("TOOMANYREQUESTS"),
                    || {
                        format!(
                            "alice's refusal has no TOOMANYREQUESTS in its body: {}",
                            r.describe()
                        )
                    },
                );
                let seconds = retry.as_deref().and_then(|v| v.trim().parse::<u64>().ok());
                f.check(seconds.is_some_and(|s| (1..=60).contains(&s)), || {
                    format!(
                        "alice's refusal: Retry-After should be whole seconds in 1..=60, got \
                         {retry:?}"
                    )
                });
            }
            Err(e) => f.check(false, || format!("alice with the right password: {e}")),
        }

        // bob, from the same address, is not.
        match get_v2(b.addr, Some(&basic("bob", "bob-pw"))).await {
            Ok(r) => {
                eprintln!("bob with the right password: {}", r.status);
                f.check(r.status == 200, || {
                    format!(
                        "bob with the right password, from the address alice's guesses came \
                         from: expected 200, got {}",
                        r.describe()
                    )
                });
            }
            Err(e) => f.check(false, || format!("bob with the right password: {e}")),
        }
        f.assert_none("parallel password guesses");
    });
}

// ---------------------------------------------------------------------------------------------
// 5. Unknown users cost as much as the costliest known one

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn unknown_user_costs_as_much_as_the_costliest_entry() {
    serially(async {
        const ROUNDS: usize = 7;
        let dir = tempfile::tempdir().unwrap();
        // `cheap` first and many more cheap entries, `costly` last: a dummy hash whose cost is
        // taken from the first entry, or from any one entry (the first in a hash map's order is
        // `costly` one time in 64), is cheap.
        let cheap_names: Vec<String> = (1..=62).map(|i| format!("cheap{i:02}")).collect();
        let mut users: Vec<(&str, &str, u32)> = vec![("cheap", "cheap-pw", 4)];
        users.extend(cheap_names.iter().map(|n| (n.as_str(), "cheap-pw", 4)));
        users.push(("costly", "costly-pw", 12));
        let file = htpasswd(dir.path(), &users);
        let b = Berth::start_setup(
            dir.path(),
            &Setup {
                top: auth_section(&file),
                ..Setup::default()
            },
        );

        let unknown = basic("nobody-here", "whatever");
        let costly = basic("costly", "not-costly-pw");
        let mut f = Failures::default();
        let (mut t_unknown, mut t_costly) = (Vec::new(), Vec::new());
        let timed = |auth: String| {
            let addr = b.addr;
            async move {
                let mut c = Conn::connect(addr).await.unwrap();
                let t = Instant::now();
                let r = c
                    .request("GET", "/v2/", &[("Authorization", &auth)], b"")
                    .await
                    .unwrap();
                (t.elapsed(), r)
            }
        };
        // Interleaved, so load on the machine falls on both alike.
        for _ in 0..ROUNDS {
            let (t, r) = timed(unknown.clone()).await;
            f.check(r.status == 401, || {
                format!("unknown user: expected 401, got {}", r.describe())
            });
            t_unknown.push(t);
            let (t, r) = timed(costly.clone()).await;
            f.check(r.status == 401, || {
                format!("costly, wrong password: expected 401, got {}", r.describe())
            });
            t_costly.push(t);
        }
        eprintln!("unknown user: {t_unknown:?}\ncostly, wrong password: {t_costly:?}");
        let (mu, mc) = (median(t_unknown), median(t_costly));
        let ratio = mu.as_secs_f64() / mc.as_secs_f64();
        eprintln!(
            "medians: unknown user {mu:?}, costly (cost 12) with a wrong password {mc:?}; \
             ratio {ratio:.3}"
        );
        f.check((0.5..=2.0).contains(&ratio), || {
            format!(
                "median time for an unknown user {mu:?} vs a known cost-12 user with a wrong \
                 password {mc:?}: ratio {ratio:.3}, outside 0.5..=2 (the first htpasswd entry is \
                 cost 4): user names can be enumerated by timing"
            )
        });
        f.assert_none("unknown-user timing");
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Log forging

/// A user name that, logged raw, ends the line and starts a forged one (with a colour). No
/// colon: Basic credentials are split at the first one (RFC 7617), so a name with
/// `00:00:00Z` in it would reach the server cut short, as `evil\n2026-01-01T00`.
const EVIL_USER: &str = "evil\n2026-01-01T00.00.00Z  INFO fake forged line\x1b[31m";
/// How a forged line starts.
const FORGED_PREFIX: &str = "2026-01-01T00";

/// berth logging at info with `formatter`, after three failed logins as [`EVIL_USER`].
async fn forged_logins(dir: &Path, formatter: &str) -> (Berth, Vec<u8>, Failures) {
    let file = htpasswd(dir, &[("alice", "alice-pw", 4)]);
    let b = Berth::start_setup(
        dir,
        &Setup {
            log: format!("level: info\nformatter: {formatter}"),
            top: auth_section(&file),
            ..Setup::default()
        },
    );
    let mut f = Failures::default();
    let auth = basic(EVIL_USER, "wrong-pw");
    for i in 0..3 {
        match get_v2(b.addr, Some(&auth)).await {
            Ok(r) => f.check(r.status == 401, || {
                format!("forged login {i}: expected 401, got {}", r.describe())
            }),
            Err(e) => f.check(false, || format!("forged login {i}: {e}")),
        }
    }
    // The lines are written before the answers; give a buffered writer a moment all the same.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let log = b.log_bytes();
        let n = log
            .split(|c| *c == b'\n')
            .filter(|l| contains(l, b"authentication failed"))
            .count();
        if n >= 3 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = b.log_bytes();
    eprintln!(
        "berth's log ({formatter}), {} bytes:\n{}",
        log.len(),
        log.escape_ascii()
    );
    (b, log, f)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// No byte of the log below 0x20 other than `\n` and `\t`, and no 0x7f.
fn check_control_bytes(f: &mut Failures, log: &[u8]) {
    let bad: Vec<(usize, u8)> = log
        .iter()
        .enumerate()
        .filter(|(_, b)| (**b < 0x20 && **b != b'\n' && **b != b'\t') || **b == 0x7f)
        .map(|(i, b)| (i, *b))
        .collect();
    f.check(bad.is_empty(), || {
        let (at, byte) = bad[0];
        let around = &log[at.saturating_sub(60)..(at + 20).min(log.len())];
        format!(
            "the log holds {} raw control byte(s); the first, {byte:#04x} at offset {at}, in \
             \"{}\"",
            bad.len(),
            around.escape_ascii()
        )
    });
}

#[test]
fn user_names_cannot_forge_text_log_lines() {
    serially(async {
        let dir = tempfile::tempdir().unwrap();
        let (_b, log, mut f) = forged_logins(dir.path(), "text").await;
        let lines: Vec<&[u8]> = log.split(|c| *c == b'\n').collect();
        let failed = lines
            .iter()
            .filter(|l| contains(l, b"authentication failed"))
            .count();
        f.check(failed == 3, || {
            format!("{failed} lines say `authentication failed` after 3 failed logins")
        });
        let forged: Vec<String> = lines
            .iter()
            .filter(|l| {
                l.starts_with(FORGED_PREFIX.as_bytes())
                    || (contains(l, b"forged line") && !contains(l, b"authentication failed"))
            })
            .map(|l| l.escape_ascii().to_string())
            .collect();
        f.check(forged.is_empty(), || {
            format!(
                "{} forged line(s) in the log, first: \"{}\"",
                forged.len(),
                forged[0]
            )
        });
        check_control_bytes(&mut f, &log);
        f.assert_none("text log forging");
    });
}

#[test]
fn user_names_cannot_forge_json_log_lines() {
    serially(async {
        let dir = tempfile::tempdir().unwrap();
        let (_b, log, mut f) = forged_logins(dir.path(), "json").await;
        let mut failed = Vec::new();
        let mut access = 0;
        for line in log.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            // The access log shares the file (stdout) and keeps Distribution's Apache format
            // whatever the formatter: one line per login, the user not named (it failed).
            if line.starts_with(b"127.0.0.1 - - [")
                && contains(line, b"] \"GET /v2/ HTTP/1.1\" 401 ")
            {
                access += 1;
                continue;
            }
            match serde_json::from_slice::<serde_json::Value>(line) {
                Ok(v) => {
                    if contains(line, b"authentication failed") {
                        failed.push(v);
                    }
                }
                Err(e) => f.check(false, || {
                    format!("a log line is not JSON ({e}): \"{}\"", line.escape_ascii())
                }),
            }
        }
        f.check(failed.len() == 3, || {
            format!(
                "{} JSON lines say `authentication failed` after 3 failed logins",
                failed.len()
            )
        });
        f.check(access == 3, || {
            format!("{access} access-log lines after 3 failed logins")
        });
        for v in &failed {
            let user = v
                .get("user")
                .or_else(|| v.get("fields").and_then(|x| x.get("user")))
                .and_then(|u| u.as_str());
            eprintln!("user field decoded: {user:?}");
            f.check(
                user.is_some_and(|u| {
                    u.starts_with("evil\n2026-01-01T00.00.00Z  INFO fake forged line")
                }),
                || {
                    format!(
                        "the `user` field of {v} does not decode to the name sent, with its \
                         newline ({EVIL_USER:?}): {user:?}"
                    )
                },
            );
        }
        check_control_bytes(&mut f, &log);
        f.assert_none("JSON log forging");
    });
}
