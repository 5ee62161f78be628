//! Webhook notifications against a real HTTP sink on loopback, with the real binary: the
//! envelope and every field a consumer written for Distribution reads, the `ignore` filters,
//! a sink that refuses connections and then answers 500 before it recovers (everything
//! arrives, in order), `kill -9` right after a burst of pushes while the sink is down (every
//! acknowledged request's event arrives after the restart), and a second process delivering
//! the queue of one that was killed.
//!
//! The sink is a small hyper server whose accept loop owns its connections, so stopping it
//! closes them too and berth really meets refused connections until it is started again on
//! the same port.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_tests::client::Client;
use berth_tests::process::{Berth, Setup};
use berth_tests::{Desc, content, image_manifest, sha256};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use reqwest::Method;
use serde_json::Value;

const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// How the sink answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Accept,
    /// 500, and the envelope is not recorded.
    Fail,
}

/// One envelope the sink accepted.
#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    content_type: String,
    token: String,
    events: Vec<Value>,
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Mode>>,
    received: Mutex<Vec<Delivery>>,
    refused_500: Mutex<usize>,
}

/// An HTTP sink on a fixed loopback port that can be stopped (refusing connections) and
/// started again.
struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Sink {
    async fn new() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sink = Sink {
            addr,
            shared: Arc::default(),
            server: None,
        };
        sink.serve(listener, Mode::Accept);
        sink
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener, mode: Mode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
        let shared = self.shared.clone();
        self.server = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the accept loop closes them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |r| handle(shared.clone(), r));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    /// Stops listening and closes every connection: berth's requests are refused.
    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        *self.shared.mode.lock().unwrap() = None;
    }

    /// Listens again on the same port.
    async fn start(&mut self, mode: Mode) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener, mode);
    }

    fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Every event received on `path`, in arrival order.
    fn events(&self, path: &str) -> Vec<Value> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.path == path)
            .flat_map(|d| d.events)
            .collect()
    }

    /// Waits until `done` holds for the events on `path`, up to `limit`.
    async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.events(path);
            if done(&events) || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (content_type, token) = (header("content-type"), header("x-sink-token"));
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mode = *shared.mode.lock().unwrap();
    if mode != Some(Mode::Accept) {
        *shared.refused_500.lock().unwrap() += 1;
        let mut r = Response::new(Full::new(Bytes::from_static(b"down")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(r);
    }
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let events = envelope["events"].as_array().cloned().unwrap_or_default();
    shared.received.lock().unwrap().push(Delivery {
        path,
        content_type,
        token,
        events,
    });
    Ok(Response::new(Full::new(Bytes::new())))
}

/// The `notifications` section with one endpoint per `(name, url, extra keys)`.
fn notifications(endpoints: &[(&str, String, &str)], extra: &str) -> String {
    let mut s = String::from("notifications:\n");
    s.push_str(extra);
    s.push_str("  endpoints:\n");
    for (name, url, keys) in endpoints {
        s.push_str(&format!(
            "    - name: {name}\n      url: {url}\n      timeout: 1s\n      threshold: 3\n      backoff: 100ms\n"
        ));
        for line in keys.lines().filter(|l| !l.trim().is_empty()) {
            s.push_str(&format!("      {line}\n"));
        }
    }
    s
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The manifest push events' tags, in arrival order.
fn pushed_tags(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["action"] == "push" && str_of(e, "/target/mediaType") == OCI_MANIFEST)
        .map(|e| str_of(e, "/target/tag").to_owned())
        .collect()
}

fn htpasswd(dir: &Path) -> PathBuf {
    let hash = bcrypt::hash("alice-pw", 4).unwrap();
    let path = dir.join("htpasswd");
    std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
    path
}

/// Files left in the notification logs' `events/` directories.
fn queued_batches(root: &Path) -> usize {
    let logs = root.join("docker/registry/v2/_berth/notifications");
    std::fs::read_dir(&logs)
        .map(|rd| {
            rd.flatten()
                .map(|log| {
                    std::fs::read_dir(log.path().join("events"))
                        .map(|e| {
                            e.flatten()
                                .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
                                .count()
                        })
                        .unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_carry_every_field_distribution_sends_and_filters_apply() {
    let work = tempfile::tempdir().unwrap();
    let sink = Sink::new().await;
    let top = format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n{}",
        htpasswd(work.path()).display(),
        notifications(
            &[
                (
                    "all",
                    sink.url("/all"),
                    "headers:\n  X-Sink-Token: [s3cret]"
                ),
                (
                    "filtered",
                    sink.url("/filtered"),
                    "ignore:\n  mediatypes: [application/octet-stream]\n  actions: [pull]",
                ),
                ("off", sink.url("/off"), "disabled: true"),
            ],
            "  events:\n    includereferences: true\n",
        )
    );
    let berth = Berth::start_setup(
        work.path(),
        &Setup {
            top,
            ..Setup::default()
        },
    );
    let c = Client::new(&berth.base()).unwrap();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:alice-pw")
    );
    let agent = "notify-test/1.0";
    let send = |method: Method,
                path: String,
                body: Option<Vec<u8>>,
                extra: Vec<(&'static str, String)>| {
        let c = c.clone();
        let auth = auth.clone();
        async move {
            let mut headers = vec![("authorization", auth), ("user-agent", agent.to_owned())];
            headers.extend(extra);
            c.send(method, &path, &headers, body.map(reqwest::Body::from))
                .await
                .unwrap()
        }
    };
    let repo = "team/app";
    let config = content(1, 700);
    let layer = content(2, 5000);
    let (config_d, layer_d) = (sha256(&config), sha256(&layer));

    // 1. Monolithic blob push (POST), with a request id of the client's (not believed).
    let r = send(
        Method::POST,
        format!("/v2/{repo}/blobs/uploads/?digest={config_d}"),
        Some(config.clone()),
        vec![("x-request-id", "req-config-1".into())],
    )
    .await;
    assert_eq!(r.status, 201);
    let first_request_id = r.h("x-request-id").to_owned();
    // 2. Upload session: POST, PATCH, PUT.
    let r = send(
        Method::POST,
        format!("/v2/{repo}/blobs/uploads/"),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status, 202);
    let session = c.path_of(r.h("location")).unwrap();
    let r = send(
        Method::PATCH,
        session.clone(),
        Some(layer.clone()),
        vec![("content-range", format!("0-{}", layer.len() - 1))],
    )
    .await;
    assert_eq!(r.status, 202);
    let sep = if session.contains('?') { '&' } else { '?' };
    let r = send(
        Method::PUT,
        format!("{session}{sep}digest={layer_d}"),
        Some(Vec::new()),
        vec![],
    )
    .await;
    assert_eq!(r.status, 201);
    // 3. Manifest by tag.
    let manifest = image_manifest(&Desc::of(&config), &[Desc::of(&layer)], "one", true);
    let manifest_d = sha256(&manifest);
    let put = |tag: &'static str| {
        send(
            Method::PUT,
            format!("/v2/{repo}/manifests/{tag}"),
            Some(manifest.clone()),
            vec![("content-type", OCI_MANIFEST.into())],
        )
    };
    assert_eq!(put("v1").await.status, 201);
    // 4-6. Pulls: manifest GET by tag, manifest HEAD by digest, blob GET.
    let r = send(
        Method::GET,
        format!("/v2/{repo}/manifests/v1"),
        None,
        vec![("accept", OCI_MANIFEST.into())],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        Method::HEAD,
        format!("/v2/{repo}/manifests/{manifest_d}"),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        Method::GET,
        format!("/v2/{repo}/blobs/{layer_d}"),
        None,
        vec![],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (200, layer.len()));
    // 7. Cross-repository mount.
    let r = send(
        Method::POST,
        format!("/v2/team/other/blobs/uploads/?mount={layer_d}&from={repo}"),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status, 201);
    // 8. A second tag, deleted by tag.
    assert_eq!(put("v2").await.status, 201);
    let r = send(
        Method::DELETE,
        format!("/v2/{repo}/manifests/v2"),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status, 202);
    // 9. The manifest deleted by digest (v1 still points at it).
    let r = send(
        Method::DELETE,
        format!("/v2/{repo}/manifests/{manifest_d}"),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status, 202);
    // 10. A blob deleted.
    let r = send(
        Method::DELETE,
        format!("/v2/team/other/blobs/{layer_d}"),
        None,
        vec![],
    )
    .await;
    assert_eq!(r.status, 202);

    let base = berth.base();
    let host = format!("127.0.0.1:{}", berth.port());
    let murl = format!("{base}/v2/{repo}/manifests/{manifest_d}");
    let burl = |r: &str, d: &str| format!("{base}/v2/{r}/blobs/{d}");
    // (action, method, target) in the order the requests were answered.
    let expected: Vec<(&str, &str, Value)> = vec![
        (
            "push",
            "POST",
            serde_json::json!({"mediaType": "application/octet-stream", "size": 700, "digest": config_d, "length": 700, "repository": repo, "url": burl(repo, &config_d)}),
        ),
        (
            "push",
            "PUT",
            serde_json::json!({"mediaType": "application/octet-stream", "size": 5000, "digest": layer_d, "length": 5000, "repository": repo, "url": burl(repo, &layer_d)}),
        ),
        (
            "push",
            "PUT",
            serde_json::json!({"mediaType": OCI_MANIFEST, "size": manifest.len(), "digest": manifest_d, "length": manifest.len(), "repository": repo, "url": murl, "tag": "v1",
            "references": [
                {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": 700},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": 5000},
            ]}),
        ),
        (
            "pull",
            "GET",
            serde_json::json!({"mediaType": OCI_MANIFEST, "size": manifest.len(), "digest": manifest_d, "length": manifest.len(), "repository": repo, "url": murl, "tag": "v1"}),
        ),
        (
            "pull",
            "HEAD",
            serde_json::json!({"mediaType": OCI_MANIFEST, "size": manifest.len(), "digest": manifest_d, "length": manifest.len(), "repository": repo, "url": murl}),
        ),
        (
            "pull",
            "GET",
            serde_json::json!({"mediaType": "application/octet-stream", "size": 5000, "digest": layer_d, "length": 5000, "repository": repo, "url": burl(repo, &layer_d)}),
        ),
        (
            "mount",
            "POST",
            serde_json::json!({"mediaType": "application/octet-stream", "size": 5000, "digest": layer_d, "length": 5000, "repository": "team/other", "fromRepository": repo, "url": burl("team/other", &layer_d)}),
        ),
        (
            "push",
            "PUT",
            serde_json::json!({"mediaType": OCI_MANIFEST, "size": manifest.len(), "digest": manifest_d, "length": manifest.len(), "repository": repo, "url": murl, "tag": "v2"}),
        ),
        (
            "delete",
            "DELETE",
            serde_json::json!({"repository": repo, "tag": "v2"}),
        ),
        (
            "delete",
            "DELETE",
            serde_json::json!({"digest": manifest_d, "repository": repo}),
        ),
        (
            "delete",
            "DELETE",
            serde_json::json!({"repository": repo, "tag": "v1"}),
        ),
        (
            "delete",
            "DELETE",
            serde_json::json!({"digest": layer_d, "repository": "team/other"}),
        ),
    ];
    let all = sink
        .wait_for("/all", Duration::from_secs(10), |e| {
            e.len() >= expected.len()
        })
        .await;
    let summary = |events: &[Value]| {
        events
            .iter()
            .map(|e| format!("{} {} {}", e["action"], e["request"]["method"], e["target"]))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        all.len(),
        expected.len(),
        "events on /all:\n{}\nlog:\n{}",
        summary(&all),
        berth.log_tail()
    );
    let mut ids = HashSet::new();
    let instance = str_of(&all[0], "/source/instanceID").to_owned();
    assert!(is_uuid(&instance), "{instance}");
    for (i, (event, (action, method, target))) in all.iter().zip(&expected).enumerate() {
        let mut want_target = target.clone();
        // The second PUT of the same manifest carries references too.
        if i == 7 {
            want_target["references"] = expected[2].2["references"].clone();
        }
        if i == 3 || i == 4 {
            want_target["references"] = expected[2].2["references"].clone();
        }
        assert_eq!(event["action"], *action, "event {i}: {event}");
        assert_eq!(event["target"], want_target, "event {i}");
        let request = &event["request"];
        assert_eq!(request["method"], *method, "event {i}");
        assert_eq!(request["useragent"], agent, "event {i}");
        assert_eq!(request["host"], host.as_str(), "event {i}");
        let addr: SocketAddr = str_of(request, "/addr").parse().unwrap();
        assert!(
            addr.ip().is_loopback() && addr.port() != 0,
            "event {i}: {request}"
        );
        let rid = str_of(request, "/id");
        assert!(is_uuid(rid), "event {i}: request id {rid:?}");
        if i == 0 {
            // The id berth gave the request (its X-Request-Id and access-log id).
            assert_eq!(rid, first_request_id);
        }
        assert_eq!(
            event["actor"],
            serde_json::json!({"name": "alice"}),
            "event {i}"
        );
        assert_eq!(str_of(event, "/source/instanceID"), instance, "event {i}");
        assert!(
            str_of(event, "/source/addr").ends_with(":0"),
            "event {i}: {}",
            event["source"]
        );
        let id = str_of(event, "/id");
        assert!(
            is_uuid(id) && ids.insert(id.to_owned()),
            "event {i}: id {id:?}"
        );
        let ts = str_of(event, "/timestamp");
        assert!(
            humantime::parse_rfc3339(ts).is_ok(),
            "event {i}: timestamp {ts:?}"
        );
    }
    // The two deletes of one request share its request record.
    assert_eq!(all[9]["request"], all[10]["request"]);
    for d in sink.deliveries() {
        assert_eq!(d.content_type, EVENTS_MEDIA_TYPE, "{}", d.path);
        assert_eq!(
            d.events.len(),
            1,
            "one event per envelope, as Distribution sends"
        );
        assert_eq!(
            d.token,
            if d.path == "/all" { "s3cret" } else { "" },
            "{}",
            d.path
        );
        assert_ne!(d.path, "/off", "a disabled endpoint gets nothing");
    }

    // The filtered endpoint: no pulls, no blobs (application/octet-stream); deletes carry no
    // media type and pass.
    let want: Vec<(&str, Value)> = [2, 7, 8, 9, 10, 11]
        .iter()
        .map(|&i| (expected[i].0, all[i]["target"].clone()))
        .collect();
    let filtered = sink
        .wait_for("/filtered", Duration::from_secs(5), |e| {
            e.len() >= want.len()
        })
        .await;
    let got: Vec<(&str, Value)> = filtered
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or(""), e["target"].clone()))
        .collect();
    assert_eq!(got, want, "/filtered:\n{}", summary(&filtered));
    // Delivered everywhere: nothing stays queued.
    let deadline = Instant::now() + Duration::from_secs(5);
    while queued_batches(&berth.root) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        queued_batches(&berth.root),
        0,
        "delivered events are deleted from storage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_refusing_then_failing_gets_everything_in_order_once_it_recovers() {
    let work = tempfile::tempdir().unwrap();
    let mut sink = Sink::new().await;
    sink.stop().await;
    let berth = Berth::start_setup(
        work.path(),
        &Setup {
            top: notifications(&[("sink", sink.url("/events"), "")], ""),
            ..Setup::default()
        },
    );
    let c = Client::new(&berth.base()).unwrap();
    let repo = "order/app";
    let (config, layer) = c.push_config_and_layer(repo, 7).await.unwrap();
    let tags: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    for (i, tag) in tags.iter().enumerate() {
        if i == 15 {
            // Half way: the sink listens again but answers 500.
            sink.start(Mode::Fail).await;
        }
        let body = image_manifest(&config, std::slice::from_ref(&layer), tag, false);
        c.put_manifest(repo, tag, &body).await.unwrap();
    }
    // Let berth meet a few 500s before the sink recovers.
    let deadline = Instant::now() + Duration::from_secs(5);
    while *sink.shared.refused_500.lock().unwrap() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        *sink.shared.refused_500.lock().unwrap() >= 2,
        "berth retried against the 500s"
    );
    assert!(sink.events("/events").is_empty());
    let recovered = Instant::now();
    sink.set_mode(Mode::Accept);
    let events = sink
        .wait_for("/events", Duration::from_secs(10), |e| e.len() >= 32)
        .await;
    let drained = recovered.elapsed();
    assert_eq!(
        pushed_tags(&events),
        tags,
        "every manifest push, once, in order"
    );
    assert_eq!(events.len(), 32, "two blob pushes and 30 manifest pushes");
    assert_eq!(
        events[0]["target"]["digest"],
        config.digest.as_str(),
        "the first request's event comes first"
    );
    let log = berth.log_text();
    assert!(log.contains("notification delivery failed"), "{log}");
    assert!(log.contains("backing off"), "{log}");
    println!(
        "sink down then 500: 32 events, {} failed attempts answered 500, all delivered in order {:.0} ms after recovery",
        sink.shared.refused_500.lock().unwrap(),
        drained.as_secs_f64() * 1000.0
    );
}

/// Pushes `per_task` manifests from each of `tasks` concurrent clients; returns the tags
/// berth acknowledged.
async fn burst(
    c: &Client,
    repo: &str,
    config: &Desc,
    layer: &Desc,
    prefix: &str,
    tasks: usize,
    per_task: usize,
) -> Vec<String> {
    let mut joins = Vec::new();
    for t in 0..tasks {
        let (c, repo, config, layer, prefix) = (
            c.clone(),
            repo.to_owned(),
            config.clone(),
            layer.clone(),
            prefix.to_owned(),
        );
        joins.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per_task {
                let tag = format!("{prefix}-{t}-{i:03}");
                let body = image_manifest(&config, std::slice::from_ref(&layer), &tag, false);
                if c.put_manifest(&repo, &tag, &body).await.is_ok() {
                    acked.push(tag);
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for j in joins {
        acked.extend(j.await.unwrap());
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_a_burst_loses_no_acknowledged_event() {
    let work = tempfile::tempdir().unwrap();
    let mut sink = Sink::new().await;
    let setup = Setup {
        top: notifications(&[("sink", sink.url("/events"), "")], ""),
        ..Setup::default()
    };
    let mut berth = Berth::start_setup(work.path(), &setup);
    let c = Client::new(&berth.base()).unwrap();
    let repo = "burst/app";
    let (config, layer) = c.push_config_and_layer(repo, 11).await.unwrap();
    // A first burst with the sink up: some of it is delivered before the kill, so the cursors
    // (written once a second) may lag, and the restart may deliver those again.
    let mut acked = burst(&c, repo, &config, &layer, "up", 8, 15).await;
    // A second burst with the sink down, then kill -9 at once: none of it was delivered.
    sink.stop().await;
    acked.extend(burst(&c, repo, &config, &layer, "down", 8, 15).await);
    berth.sigkill().unwrap();
    let delivered_before_kill = pushed_tags(&sink.events("/events")).len();

    let berth = Berth::start_setup(work.path(), &setup);
    let restarted = Instant::now();
    sink.start(Mode::Accept).await;
    let want: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let events = sink
        .wait_for("/events", Duration::from_secs(15), |e| {
            let got: HashSet<String> = pushed_tags(e).into_iter().collect();
            want.iter().all(|t| got.contains(*t))
        })
        .await;
    let drained = restarted.elapsed();
    let tags = pushed_tags(&events);
    let got: HashSet<&str> = tags.iter().map(String::as_str).collect();
    let missing: Vec<&&str> = want.iter().filter(|t| !got.contains(**t)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged pushes never notified: {missing:?}\nlog:\n{}",
        missing.len(),
        want.len(),
        berth.log_tail()
    );
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *seen.entry(str_of(e, "/id")).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    // Every event of the first life carries its instance id; after the restart, the first
    // life's events are delivered by the second (the queue is in storage).
    let lives: HashSet<&str> = events
        .iter()
        .map(|e| str_of(e, "/source/instanceID"))
        .collect();
    assert_eq!(lives.len(), 1, "all events were made by the first life");
    assert!(
        berth.log_text().contains("took over the notification log"),
        "{}",
        berth.log_tail()
    );
    println!(
        "kill -9 after a burst: {} manifest pushes acknowledged ({} while the sink was down), \
         {} delivered before the kill; after the restart {} events received in all ({} distinct \
         event ids, {duplicates} duplicates), every acknowledged push notified {:.0} ms after the \
         restart",
        want.len(),
        acked.iter().filter(|t| t.starts_with("down")).count(),
        delivered_before_kill,
        events.len(),
        seen.len(),
        drained.as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_replica_delivers_the_queue_of_one_that_was_killed() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let (dir_a, dir_b) = (work.path().join("a"), work.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let mut sink = Sink::new().await;
    sink.stop().await;
    let setup = Setup {
        top: notifications(
            &[("sink", sink.url("/events"), "")],
            "  leaseduration: 3s\n",
        ),
        root: Some(root.clone()),
        ..Setup::default()
    };
    let mut a = Berth::start_setup(&dir_a, &setup);
    let b = Berth::start_setup(&dir_b, &setup);
    let ca = Client::new(&a.base()).unwrap();
    let repo = "replica/app";
    let (config, layer) = ca.push_config_and_layer(repo, 21).await.unwrap();
    let tags: Vec<String> = (0..20).map(|i| format!("a{i:02}")).collect();
    for tag in &tags {
        let body = image_manifest(&config, std::slice::from_ref(&layer), tag, false);
        ca.put_manifest(repo, tag, &body).await.unwrap();
    }
    // While A lives, B leaves A's queue alone (its lease is renewed).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!b.log_text().contains("took over"), "{}", b.log_tail());
    a.sigkill().unwrap();
    let killed = Instant::now();
    sink.start(Mode::Accept).await;
    let events = sink
        .wait_for("/events", Duration::from_secs(10), |e| {
            pushed_tags(e).len() >= tags.len()
        })
        .await;
    let took = killed.elapsed();
    assert_eq!(
        pushed_tags(&events),
        tags,
        "A's events, in order, delivered by B\nB:\n{}",
        b.log_tail()
    );
    assert!(
        b.log_text().contains("took over the notification log"),
        "{}",
        b.log_tail()
    );
    println!(
        "replica takeover: {} events of the killed process delivered by the other {:.0} ms after the kill",
        events.len(),
        took.as_secs_f64() * 1000.0
    );
}
