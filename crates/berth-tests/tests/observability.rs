//! What operators see of a running berth, on the real binary: Prometheus metrics on the debug
//! listener (`http.debug.addr`, `http.debug.prometheus`) read with a Prometheus text-format
//! parser, under Distribution's names and labels; the access log on stdout
//! (`log.accesslog.disabled`) in Distribution's combined format with the request id
//! appended; the `X-Request-Id` every response carries and every log line of that request
//! repeats; `log.fields` on every line; and, with htpasswd and bearer tokens in use at debug
//! level, no password, credential or token in any line berth writes.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use berth_tests::client::{Client, Resp, UploadKind};
use berth_tests::process::{Berth, Setup};
use berth_tests::{Desc, content, image_manifest};
use prometheus_parse::{Sample, Scrape, Value};
use reqwest::Method;

/// How long a line may take to reach the log after its response.
const SETTLE: Duration = Duration::from_secs(5);

/// Distribution's route names (and berth's `referrers`, `token`, `other`): the only values
/// the `handler` label may take.
const HANDLERS: [&str; 10] = [
    "base",
    "catalog",
    "tags",
    "manifest",
    "blob",
    "blob_upload",
    "blob_upload_chunk",
    "referrers",
    "token",
    "other",
];

const AGENT: &str = "observability-test/1.0 (\"quoted\")";

/// The address in the first log line containing `marker` and `addr=`, waiting for it.
fn logged_addr(berth: &Berth, marker: &str) -> SocketAddr {
    let deadline = Instant::now() + SETTLE;
    loop {
        let log = berth.log_text();
        let found = log.lines().filter(|l| l.contains(marker)).find_map(|l| {
            let rest = l.split_once("addr=")?.1;
            rest.split_whitespace().next()?.parse().ok()
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(Instant::now() < deadline, "no {marker:?} line:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Scrapes `/metrics` and parses it as Prometheus would.
async fn scrape(debug: &Client) -> Scrape {
    let r = debug
        .send(Method::GET, "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.h("content-type").starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.h("content-type")
    );
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn number(sample: &Sample) -> f64 {
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{}: not a number: {other:?}", sample.metric),
    }
}

/// The value of the series `name{labels}` (other labels may exist), 0 when absent.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert!(matching.len() <= 1, "{name}{labels:?}: {matching:?}");
    matching.first().map_or(0.0, |s| number(s))
}

/// How much `name{labels}` grew from `before` to `after`.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

/// `registry_http_requests_total` for one code, handler and method.
fn requests(scrape: &Scrape, code: &str, handler: &str, method: &str) -> f64 {
    value(
        scrape,
        "registry_http_requests_total",
        &[("code", code), ("handler", handler), ("method", method)],
    )
}

/// The access-log line of the request `id`, waiting for it: the line is written when the
/// response body is done, which may be just after the client has it all.
fn access_line(berth: &Berth, id: &str) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let log = berth.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.ends_with(&format!(" {id}")) && l.contains(" - "))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line ends with {id}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An access-log line, split into its fields.
#[derive(Debug)]
struct Access {
    client: String,
    user: String,
    time: String,
    request: String,
    status: u16,
    bytes: u64,
    referer: String,
    agent: String,
    id: String,
}

/// Parses `client - user [time] "request" status bytes "referer" "agent" id`, the quoted
/// fields with gorilla's backslash escapes undone.
fn parse_access(line: &str) -> Access {
    fn bad<T>(line: &str) -> T {
        panic!("not an access-log line: {line:?}")
    }
    let fail = || bad(line);
    let (client, rest) = line.split_once(" - ").unwrap_or_else(fail);
    let (user, rest) = rest.split_once(" [").unwrap_or_else(fail);
    let (time, rest) = rest.split_once("] ").unwrap_or_else(fail);
    let (request, rest) = quoted(rest).unwrap_or_else(|| bad(line));
    let mut words = rest.trim_start().splitn(3, ' ');
    let status = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| bad(line));
    let bytes = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| bad(line));
    let rest = words.next().unwrap_or_else(|| bad(line));
    let (referer, rest) = quoted(rest).unwrap_or_else(|| bad(line));
    let (agent, rest) = quoted(rest.trim_start()).unwrap_or_else(|| bad(line));
    Access {
        client: client.to_owned(),
        user: user.to_owned(),
        time: time.to_owned(),
        request,
        status,
        bytes,
        referer,
        agent,
        id: rest.trim().to_owned(),
    }
}

/// A `"..."` field at the start of `s` (backslash escapes undone) and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let s = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Seconds since the epoch of a common-log-format time (`05/Dec/2026:05:00:00 +0000`).
fn clf_seconds(time: &str) -> u64 {
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (date, zone) = time.split_once(' ').unwrap();
    assert_eq!(zone, "+0000", "{time}");
    let parts: Vec<&str> = date.split(['/', ':']).collect();
    assert_eq!(parts.len(), 6, "{time}");
    let day: i64 = parts[0].parse().unwrap();
    let month = months.iter().position(|m| *m == parts[1]).unwrap() as i64 + 1;
    let year: i64 = parts[2].parse().unwrap();
    let (h, m, s): (i64, i64, i64) = (
        parts[3].parse().unwrap(),
        parts[4].parse().unwrap(),
        parts[5].parse().unwrap(),
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + h * 3600 + m * 60 + s) as u64
}

/// A request id as berth writes it: a UUID v4, hyphenated, lower case.
fn assert_uuid_v4(id: &str) {
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id:?}"
    );
    assert!(
        id.chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{id:?}"
    );
    assert!(groups[2].starts_with('4'), "version 4: {id:?}");
    assert!(
        matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
        "RFC 4122 variant: {id:?}"
    );
}

async fn send(c: &Client, method: Method, path: &str, headers: &[(&str, String)]) -> Resp {
    c.send(method.clone(), path, headers, None)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Metrics count what was served, under Distribution's names and route labels; the access
/// log has one line per request with the request id the response carried; that id is on the
/// request's own log lines, and `log.fields` on every line.
#[tokio::test]
async fn metrics_access_log_and_request_ids_follow_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    // A notification endpoint nothing listens on: its deliveries fail and its events wait.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = closed.local_addr().unwrap();
    drop(closed);
    let berth = Berth::start_setup(
        dir.path(),
        &Setup {
            http: "debug:\n  addr: 127.0.0.1:0\n  prometheus:\n    enabled: true".to_owned(),
            log: "level: debug\nfields:\n  service: obs-test\n  replica: 7".to_owned(),
            top: format!(
                "notifications:\n  endpoints:\n    - name: sink\n      url: http://{refused}/events\n      timeout: 200ms\n      threshold: 1\n      backoff: 100ms\n"
            ),
            ..Setup::default()
        },
    );
    let debug = Client::new(&format!(
        "http://{}",
        logged_addr(&berth, "berth debug server listening")
    ))
    .unwrap();
    let c = Client::new(&berth.base()).unwrap();
    let repo = "obs/uniquely-named-repo";

    let before = scrape(&debug).await;
    assert_eq!(
        value(
            &before,
            "berth_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "berth_build_info{{version}} is 1"
    );
    for handler in HANDLERS {
        assert_eq!(
            value(
                &before,
                "registry_http_in_flight_requests",
                &[("handler", handler)]
            ),
            0.0
        );
    }

    // A blob (one monolithic POST), a config and layer, a manifest; reads; a 404; other.
    let blob = content(1, 100_000);
    c.push_blob(repo, &blob, UploadKind::Monolithic, &|_| {})
        .await
        .unwrap();
    let chunked = content(2, 3000);
    c.push_blob(
        repo,
        &chunked,
        UploadKind::Chunked {
            chunk: 1000,
            last_in_put: false,
        },
        &|_| {},
    )
    .await
    .unwrap();
    let config = Desc::of(&blob);
    let layer = Desc::of(&chunked);
    let manifest = image_manifest(&config, &[layer], "observability", false);
    c.put_manifest(repo, "v1", &manifest).await.unwrap();
    let headers = [
        ("user-agent", AGENT.to_owned()),
        ("referer", "http://ops.example/dash?token=abc".to_owned()),
        (
            "accept",
            "application/vnd.oci.image.manifest.v1+json".to_owned(),
        ),
    ];
    let got = send(
        &c,
        Method::GET,
        &format!("/v2/{repo}/manifests/v1"),
        &headers,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.as_ref(), manifest.as_slice());
    let head = send(
        &c,
        Method::HEAD,
        &format!("/v2/{repo}/manifests/v1"),
        &headers,
    )
    .await;
    assert_eq!(head.status, 200);
    let missing = send(
        &c,
        Method::GET,
        &format!("/v2/{repo}/manifests/absent?password=hunter2&n=1"),
        &headers,
    )
    .await;
    assert_eq!(missing.status, 404);
    let pulled = send(
        &c,
        Method::GET,
        &format!("/v2/{repo}/blobs/{}", config.digest),
        &[],
    )
    .await;
    assert_eq!(pulled.body.len(), blob.len());
    let other = send(&c, Method::GET, "/not/an/api/path", &[]).await;
    assert_eq!(other.status, 404);

    // Every response carries its own request id.
    let ids: Vec<&str> = [&got, &head, &missing, &pulled, &other]
        .iter()
        .map(|r| r.h("x-request-id"))
        .collect();
    for id in &ids {
        assert_uuid_v4(id);
    }
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );

    // Wait for the last response to be recorded (the line is written at its end).
    access_line(&berth, other.h("x-request-id"));
    let after = scrape(&debug).await;

    // The counter, by Distribution's route names and promhttp's lower-case methods.
    let d = |code, handler, method| {
        requests(&after, code, handler, method) - requests(&before, code, handler, method)
    };
    assert_eq!(d("201", "blob_upload", "post"), 1.0, "the monolithic push");
    assert_eq!(
        d("202", "blob_upload", "post"),
        1.0,
        "the chunked push's POST"
    );
    assert_eq!(d("202", "blob_upload_chunk", "patch"), 3.0, "its PATCHes");
    assert_eq!(d("201", "blob_upload_chunk", "put"), 1.0, "its PUT");
    assert_eq!(d("201", "manifest", "put"), 1.0);
    assert_eq!(d("200", "manifest", "get"), 1.0);
    assert_eq!(d("200", "manifest", "head"), 1.0);
    assert_eq!(d("404", "manifest", "get"), 1.0);
    assert_eq!(d("200", "blob", "get"), 1.0);
    assert_eq!(d("404", "other", "get"), 1.0);

    // Durations and sizes, one observation per request, sizes in body bytes.
    let count = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    assert_eq!(
        count(
            "registry_http_request_duration_seconds_count",
            &[("handler", "manifest"), ("method", "get")]
        ),
        2.0
    );
    assert_eq!(
        count(
            "registry_http_response_size_bytes_count",
            &[("handler", "manifest")]
        ),
        4.0,
        "PUT, GET, HEAD, 404"
    );
    let manifest_bytes = count(
        "registry_http_response_size_bytes_sum",
        &[("handler", "manifest")],
    );
    assert_eq!(
        manifest_bytes,
        (manifest.len() + missing.body.len()) as f64,
        "the GET's body and the 404's; the HEAD and the 201 sent none"
    );
    assert!(
        count(
            "registry_http_request_size_bytes_sum",
            &[("handler", "blob_upload")]
        ) >= blob.len() as f64
    );
    // berth's byte counters, as the bodies streamed.
    assert_eq!(
        count("berth_http_sent_bytes_total", &[("handler", "blob")]),
        blob.len() as f64
    );
    assert_eq!(
        count(
            "berth_http_received_bytes_total",
            &[("handler", "blob_upload")]
        ),
        blob.len() as f64
    );
    assert_eq!(
        count(
            "berth_http_received_bytes_total",
            &[("handler", "blob_upload_chunk")]
        ),
        chunked.len() as f64
    );
    assert_eq!(
        count(
            "berth_http_received_bytes_total",
            &[("handler", "manifest")]
        ),
        manifest.len() as f64
    );
    // Nothing left in flight; the storage was timed; the caches were asked.
    for handler in HANDLERS {
        assert_eq!(
            value(
                &after,
                "registry_http_in_flight_requests",
                &[("handler", handler)]
            ),
            0.0,
            "{handler}"
        );
    }
    assert_eq!(value(&after, "berth_uploads_in_flight", &[]), 0.0);
    for action in ["PutContent", "GetContent", "Stat", "Writer", "Move"] {
        assert!(
            count(
                "registry_storage_action_seconds_count",
                &[("driver", "filesystem"), ("action", action)]
            ) > 0.0,
            "{action}"
        );
    }
    assert!(count("registry_storage_cache_total", &[("type", "Request")]) >= 2.0);
    let lookups: f64 = ["hit", "miss"]
        .iter()
        .map(|r| {
            count(
                "berth_cache_lookups_total",
                &[("cache", "manifest"), ("result", r)],
            )
        })
        .sum();
    assert!(lookups >= 2.0, "the GET and the HEAD read the manifest");
    assert_eq!(value(&after, "berth_gc_runs_total", &[]), 0.0);

    // Labels name endpoints, never paths: every handler is a route name, and the repository,
    // the digests and the odd path appear in no label.
    let text = String::from_utf8(
        debug
            .send(Method::GET, "/metrics", &[], None)
            .await
            .unwrap()
            .body
            .to_vec(),
    )
    .unwrap();
    for sample in &after.samples {
        if let Some(handler) = sample.labels.get("handler") {
            assert!(HANDLERS.contains(&handler), "{sample:?}");
        }
    }
    for path_part in ["uniquely-named-repo", "sha256:", "not/an/api", "absent"] {
        assert!(!text.contains(path_part), "{path_part:?} in /metrics");
    }
    // The notifier's counters, through the same scrape: its endpoint refuses every delivery.
    let deadline = Instant::now() + SETTLE;
    loop {
        let s = scrape(&debug).await;
        let failed = value(
            &s,
            "berth_notifications_failed_total",
            &[("endpoint", "sink")],
        );
        let pending = value(&s, "berth_notifications_pending", &[("endpoint", "sink")]);
        let delivered = value(
            &s,
            "berth_notifications_delivered_total",
            &[("endpoint", "sink")],
        );
        if failed >= 1.0 && pending >= 1.0 {
            assert_eq!(delivered, 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "notifications: failed {failed}, pending {pending}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The debug listener serves only what it should.
    let nothing = send(&debug, Method::GET, "/v2/", &[]).await;
    assert_eq!(nothing.status, 404);

    // The access log: the manifest GET's line, field by field.
    let line = access_line(&berth, got.h("x-request-id"));
    let a = parse_access(&line);
    assert_eq!(a.client, "127.0.0.1", "{line}");
    assert_eq!(a.user, "-", "{line}");
    assert_eq!(
        a.request,
        format!("GET /v2/{repo}/manifests/v1 HTTP/1.1"),
        "{line}"
    );
    assert_eq!((a.status, a.bytes), (200, manifest.len() as u64), "{line}");
    assert_eq!(a.referer, "http://ops.example/dash?token=abc", "{line}");
    assert_eq!(a.agent, AGENT, "{line}");
    assert_eq!(a.id, got.h("x-request-id"));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = clf_seconds(&a.time);
    assert!(at <= now && now - at < 120, "{} is not now", a.time);
    // The HEAD sent no body; the 404's query is redacted.
    let a = parse_access(&access_line(&berth, head.h("x-request-id")));
    assert_eq!(
        (a.request.starts_with("HEAD "), a.status, a.bytes),
        (true, 200, 0)
    );
    let a = parse_access(&access_line(&berth, missing.h("x-request-id")));
    assert_eq!(
        a.request,
        format!("GET /v2/{repo}/manifests/absent?password=REDACTED&n=1 HTTP/1.1")
    );
    assert_eq!((a.status, a.bytes), (404, missing.body.len() as u64));
    let a = parse_access(&access_line(&berth, pulled.h("x-request-id")));
    assert_eq!((a.status, a.bytes), (200, blob.len() as u64));

    // Each request's id is on its own log lines (the debug `request` line), with log.fields.
    let log = berth.log_text();
    assert!(!log.contains("hunter2"), "a query password reached the log");
    for (r, endpoint, status) in [
        (&got, "manifest", 200),
        (&head, "manifest", 200),
        (&missing, "manifest", 404),
        (&pulled, "blob", 200),
    ] {
        let id = r.h("x-request-id");
        let own: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("http.request.id={id}")))
            .collect();
        assert!(
            own.iter()
                .any(|l| l.contains(&format!("endpoint=\"{endpoint}\""))
                    && l.contains(&format!("status={status}"))),
            "no log line of {id}:\n{log}"
        );
        // No other request's id on them.
        for other in ids.iter().filter(|o| **o != id) {
            assert!(own.iter().all(|l| !l.contains(*other)), "{own:?}");
        }
    }
    for line in log
        .lines()
        .filter(|l| l.contains(" DEBUG ") || l.contains(" INFO "))
    {
        assert!(
            line.ends_with(" replica=7 service=obs-test"),
            "log.fields missing: {line}"
        );
    }
}

/// `log.accesslog.disabled: true` writes no access-log line; requests keep their ids.
#[tokio::test]
async fn the_access_log_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let (on_dir, off_dir) = (dir.path().join("on"), dir.path().join("off"));
    std::fs::create_dir_all(&on_dir).unwrap();
    std::fs::create_dir_all(&off_dir).unwrap();
    let on = Berth::start_setup(&on_dir, &Setup::default());
    let off = Berth::start_setup(
        &off_dir,
        &Setup {
            log: "accesslog:\n  disabled: true".to_owned(),
            ..Setup::default()
        },
    );
    let mut ids = Vec::new();
    for berth in [&on, &off] {
        let c = Client::new(&berth.base()).unwrap();
        let r = send(&c, Method::GET, "/v2/", &[("user-agent", AGENT.to_owned())]).await;
        assert_eq!(r.status, 200);
        assert_uuid_v4(r.h("x-request-id"));
        ids.push(r.h("x-request-id").to_owned());
    }
    // The same request, logged by the one and not by the other.
    let line = access_line(&on, &ids[0]);
    assert!(line.contains("\"GET /v2/ HTTP/1.1\" 200 2 \"\""), "{line}");
    std::thread::sleep(Duration::from_millis(500));
    let log = off.log_text();
    assert!(!log.contains("\"GET /v2/ HTTP/1.1\""), "{log}");
    assert!(!log.contains(&ids[1]), "{log}");
    assert!(!log.contains("observability-test"), "{log}");
}

/// An htpasswd file with `users`.
fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = String::new();
    for (user, password) in users {
        text.push_str(&format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap()));
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, text).unwrap();
    path
}

/// With htpasswd and berth's token server in use, and every line at debug level: Basic
/// credentials (right and wrong), tokens (issued, forged, garbage) and secrets in query
/// strings reach no line of the log or the access log; the authenticated user does.
#[tokio::test]
async fn no_credential_reaches_any_log_line() {
    let dir = tempfile::tempdir().unwrap();
    const PASSWORD: &str = "Corr3ct-Horse-Battery";
    const WRONG: &str = "Wr0ng-Pony-Staple";
    let users = htpasswd(dir.path(), &[("alice", PASSWORD)]);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["berth-token".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("token.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("token.key"), key.serialize_pem()).unwrap();
    let berth = Berth::start_setup(
        dir.path(),
        &Setup {
            log: "level: debug".to_owned(),
            top: format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n  tokenserver:\n    realm: http://127.0.0.1/token\n    certificate: {}\n    key: {}\n",
                users.display(),
                dir.path().join("token.crt").display(),
                dir.path().join("token.key").display(),
            ),
            ..Setup::default()
        },
    );
    let c = Client::without_reuse(&berth.base()).unwrap();
    let b64 = |user: &str, password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };
    let basic = format!("Basic {}", b64("alice", PASSWORD));
    let wrong = format!("Basic {}", b64("alice", WRONG));
    let auth = |v: &str| vec![("authorization", v.to_owned())];

    // Basic, right and wrong.
    let ok = send(&c, Method::GET, "/v2/", &auth(&basic)).await;
    assert_eq!(ok.status, 200);
    let refused = send(&c, Method::GET, "/v2/", &auth(&wrong)).await;
    assert_eq!(refused.status, 401);
    // A token from berth's token server, asked for with secrets in the query too.
    let token_path = format!(
        "/token?service=berth&scope=repository:team/app:pull,push&password={PASSWORD}&refresh_token=R3fresh-Secret"
    );
    let issued = send(&c, Method::GET, &token_path, &auth(&basic)).await;
    assert_eq!(
        issued.status,
        200,
        "{}",
        String::from_utf8_lossy(&issued.body)
    );
    let token = serde_json::from_slice::<serde_json::Value>(&issued.body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(token.len() > 40, "{token}");
    // Used: a push and a read; then a forged one (its signature changed) and garbage.
    let bearer = format!("Bearer {token}");
    let start = send(
        &c,
        Method::POST,
        "/v2/team/app/blobs/uploads/",
        &auth(&bearer),
    )
    .await;
    assert_eq!(
        start.status,
        202,
        "{}",
        String::from_utf8_lossy(&start.body)
    );
    let tags = send(&c, Method::GET, "/v2/team/app/tags/list", &auth(&bearer)).await;
    assert!(tags.status == 404 || tags.status == 200, "{}", tags.status);
    let forged_token = format!("{}AAAA", &token[..token.len() - 4]);
    let forged = send(
        &c,
        Method::GET,
        "/v2/team/app/tags/list",
        &auth(&format!("Bearer {forged_token}")),
    )
    .await;
    assert_eq!(forged.status, 401);
    const GARBAGE: &str = "not-a-jwt-Sup3rSecretGarbage";
    let garbage = send(&c, Method::GET, "/v2/", &auth(&format!("Bearer {GARBAGE}"))).await;
    assert_eq!(garbage.status, 401);

    // Every request logged (the last one's line is written at its end).
    let ok_line = parse_access(&access_line(&berth, ok.h("x-request-id")));
    access_line(&berth, garbage.h("x-request-id"));
    assert_eq!(ok_line.user, "alice", "the authenticated user is named");
    let refused_line = parse_access(&access_line(&berth, refused.h("x-request-id")));
    assert_eq!(refused_line.user, "-", "a refused login names no one");
    let start_line = parse_access(&access_line(&berth, start.h("x-request-id")));
    assert_eq!(start_line.user, "alice", "a token's subject is named");
    let token_line = parse_access(&access_line(&berth, issued.h("x-request-id")));
    assert!(
        token_line
            .request
            .contains("&password=REDACTED&refresh_token=REDACTED "),
        "{token_line:?}"
    );

    let log = String::from_utf8_lossy(&berth.log_bytes()).into_owned();
    assert!(
        log.lines().any(|l| l.contains(" DEBUG ")),
        "the log is at debug level:\n{log}"
    );
    let token_signature = token.rsplit('.').next().unwrap().to_owned();
    for secret in [
        PASSWORD,
        WRONG,
        &b64("alice", PASSWORD),
        &b64("alice", WRONG),
        &token,
        &token_signature,
        &forged_token,
        GARBAGE,
        "R3fresh-Secret",
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
    for header in ["authorization:", "Authorization:", "Basic ", "Bearer "] {
        assert!(!log.contains(header), "{header:?} is in the log:\n{log}");
    }
}

/// `berth --version` names the version that `berth_build_info` and the startup line carry.
#[test]
fn the_version_is_printed() {
    let out = std::process::Command::new(berth_tests::process::berth_bin(false))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("berth {}\n", env!("CARGO_PKG_VERSION"))
    );
}
