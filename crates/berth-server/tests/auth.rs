//! Access control over HTTP: htpasswd users, berth's policy, and a table that walks every
//! endpoint and method × {anonymous, user without rights, user with pull, user with push,
//! admin} and checks the status, so that no route is left open.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use berth_registry::Options;
use berth_server::HttpOptions;
use berth_server::auth::{Auth, Htpasswd, Policy, PolicyConfig};
use common::*;
use reqwest::Method;
use serde_json::json;

const REALM: &str = "test-realm";

/// The roles of the matrix, in column order.
const ROLES: [&str; 5] = ["anonymous", "nobody", "puller", "pusher", "admin"];

fn password(user: &str) -> String {
    format!("{user}-pw")
}

fn htpasswd_file(dir: &std::path::Path, users: &[&str]) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    let mut text = String::new();
    for u in users {
        // As `htpasswd -B -C 4` writes it.
        let hash = bcrypt::hash(password(u), 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        text.push_str(&format!("{u}:{hash}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn policy() -> Policy {
    let config: PolicyConfig = serde_json::from_value(json!({
        "admins": ["admins"],
        "groups": {"admins": ["admin"], "builders": ["pusher"]},
        "rules": [
            {"repositories": ["team/**"], "users": ["puller"], "actions": ["pull"]},
            {"repositories": ["team/**"], "groups": ["builders"], "actions": ["pull", "push"]},
            {"repositories": ["public/**"], "anonymous": true, "actions": ["pull"]},
            {"repositories": ["scratch/**"], "users": ["mounter"], "actions": ["pull", "push"]},
        ]
    }))
    .unwrap();
    Policy::new(&config).unwrap()
}

fn auth(dir: &std::path::Path, policy: Option<Policy>) -> Arc<Auth> {
    let path = htpasswd_file(dir, &["nobody", "puller", "pusher", "admin", "mounter"]);
    Arc::new(Auth::htpasswd(
        REALM.into(),
        Htpasswd::open(path).unwrap(),
        policy,
    ))
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn client_as(user: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let token = base64_basic(user, &password(user));
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

fn base64_basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
}

/// A server whose helper client is the admin (for setting up fixtures).
async fn server(policy: Option<Policy>) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpOptions {
        auth: Some(auth(dir.path(), policy)),
        ..HttpOptions::default()
    };
    let mut s = TestServer::start_with(
        Options {
            delete_enabled: true,
            ..Options::default()
        },
        http,
    )
    .await;
    s.client = client_as("admin");
    (s, dir)
}

/// Sends as `role` (no credentials for "anonymous").
async fn send_as(
    s: &TestServer,
    role: &str,
    method: Method,
    target: &str,
    body: Option<Vec<u8>>,
    content_type: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = if role == "anonymous" {
        plain_client()
    } else {
        client_as(role)
    };
    let mut rb = client.request(method, s.url(target));
    if let Some(b) = body {
        rb = rb.body(b);
    }
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

/// What one row of the matrix sends.
struct Request {
    method: Method,
    target: String,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
}

fn req(method: Method, target: String) -> Request {
    Request {
        method,
        target,
        body: None,
        content_type: None,
    }
}

#[tokio::test]
async fn every_endpoint_times_every_role() {
    let (s, _dir) = server(Some(policy())).await;
    let repo = "team/app";
    let image = s.push_image(repo, "latest", 1).await;
    let layer_digest = sha256(&image.layer);
    let new_manifest = image.manifest.clone();

    // Fresh resources per role for requests that change or use up state.
    let mut seq = 0u8;
    let mut next = || {
        seq += 1;
        seq
    };

    type Row = (&'static str, [u16; 5]);
    // anonymous, nobody, puller, pusher, admin
    const LOGIN: [u16; 5] = [401, 200, 200, 200, 200];
    const PULL_OK: [u16; 5] = [401, 403, 200, 200, 200];
    const PUSH_201: [u16; 5] = [401, 403, 403, 201, 201];
    const PUSH_202: [u16; 5] = [401, 403, 403, 202, 202];
    const PUSH_204: [u16; 5] = [401, 403, 403, 204, 204];
    const PUSH_405: [u16; 5] = [401, 403, 403, 405, 405];
    const DELETE_202: [u16; 5] = [401, 403, 403, 403, 202];

    let rows: Vec<Row> = vec![
        ("GET /v2/", LOGIN),
        ("HEAD /v2/", LOGIN),
        ("GET /v2/_catalog", LOGIN),
        ("POST /v2/_catalog", [401, 405, 405, 405, 405]),
        ("GET tags/list", PULL_OK),
        ("DELETE tags/list", PUSH_405),
        ("GET manifest by tag", PULL_OK),
        ("HEAD manifest by tag", PULL_OK),
        ("GET manifest by digest", PULL_OK),
        ("HEAD manifest by digest", PULL_OK),
        ("PUT manifest", PUSH_201),
        ("POST manifest", PUSH_405),
        ("DELETE manifest tag", DELETE_202),
        ("DELETE manifest digest", DELETE_202),
        ("GET blob", PULL_OK),
        ("HEAD blob", PULL_OK),
        ("DELETE blob", DELETE_202),
        ("PUT blob", PUSH_405),
        ("POST upload", PUSH_202),
        ("POST upload monolithic", PUSH_201),
        ("POST upload mount", PUSH_201),
        ("GET upload status", PUSH_204),
        ("HEAD upload status", PUSH_204),
        ("PATCH upload", PUSH_202),
        ("PUT upload", PUSH_201),
        ("DELETE upload", PUSH_204),
        ("POST upload session", PUSH_405),
        ("GET referrers", PULL_OK),
        ("DELETE referrers", PUSH_405),
    ];

    let mut failures = Vec::new();
    let mut matrix = String::new();
    for (name, expected) in &rows {
        let mut line = format!("{name:28}");
        for (i, role) in ROLES.iter().enumerate() {
            // Per-role setup, done as admin.
            let r = match *name {
                "GET /v2/" => req(Method::GET, "/v2/".into()),
                "HEAD /v2/" => req(Method::HEAD, "/v2/".into()),
                "GET /v2/_catalog" => req(Method::GET, "/v2/_catalog".into()),
                "POST /v2/_catalog" => req(Method::POST, "/v2/_catalog".into()),
                "GET tags/list" => req(Method::GET, format!("/v2/{repo}/tags/list")),
                "DELETE tags/list" => req(Method::DELETE, format!("/v2/{repo}/tags/list")),
                "GET manifest by tag" => req(Method::GET, format!("/v2/{repo}/manifests/latest")),
                "HEAD manifest by tag" => req(Method::HEAD, format!("/v2/{repo}/manifests/latest")),
                "GET manifest by digest" => req(
                    Method::GET,
                    format!("/v2/{repo}/manifests/{}", image.digest),
                ),
                "HEAD manifest by digest" => req(
                    Method::HEAD,
                    format!("/v2/{repo}/manifests/{}", image.digest),
                ),
                "PUT manifest" => Request {
                    method: Method::PUT,
                    target: format!("/v2/{repo}/manifests/put-{role}"),
                    body: Some(new_manifest.clone()),
                    content_type: Some(DOCKER_MANIFEST),
                },
                "POST manifest" => req(Method::POST, format!("/v2/{repo}/manifests/latest")),
                "DELETE manifest tag" => {
                    let tag = format!("del-{role}");
                    s.put_manifest_ok(repo, &tag, DOCKER_MANIFEST, &image.manifest)
                        .await;
                    req(Method::DELETE, format!("/v2/{repo}/manifests/{tag}"))
                }
                "DELETE manifest digest" => {
                    let img = s.push_image("team/deleteme", "t", 100 + next()).await;
                    req(
                        Method::DELETE,
                        format!("/v2/team/deleteme/manifests/{}", img.digest),
                    )
                }
                "GET blob" => req(Method::GET, format!("/v2/{repo}/blobs/{layer_digest}")),
                "HEAD blob" => req(Method::HEAD, format!("/v2/{repo}/blobs/{layer_digest}")),
                "DELETE blob" => {
                    let d = s.push_blob(repo, &content(next().into(), 50)).await;
                    req(Method::DELETE, format!("/v2/{repo}/blobs/{d}"))
                }
                "PUT blob" => req(Method::PUT, format!("/v2/{repo}/blobs/{layer_digest}")),
                "POST upload" => req(Method::POST, format!("/v2/{repo}/blobs/uploads/")),
                "POST upload monolithic" => {
                    let data = content(next().into(), 77);
                    Request {
                        method: Method::POST,
                        target: format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&data)),
                        body: Some(data),
                        content_type: None,
                    }
                }
                "POST upload mount" => req(
                    Method::POST,
                    format!("/v2/team/mounted/blobs/uploads/?mount={layer_digest}&from={repo}"),
                ),
                "GET upload status"
                | "HEAD upload status"
                | "DELETE upload"
                | "POST upload session" => {
                    let loc = s.start_upload(repo).await;
                    let method = match *name {
                        "GET upload status" => Method::GET,
                        "HEAD upload status" => Method::HEAD,
                        "DELETE upload" => Method::DELETE,
                        _ => Method::POST,
                    };
                    req(method, s.path_of(&loc))
                }
                "PATCH upload" => {
                    let loc = s.start_upload(repo).await;
                    Request {
                        method: Method::PATCH,
                        target: s.path_of(&loc),
                        body: Some(content(next().into(), 10)),
                        content_type: None,
                    }
                }
                "PUT upload" => {
                    let loc = s.start_upload(repo).await;
                    let data = content(next().into(), 33);
                    let path = s.path_of(&loc);
                    let sep = if path.contains('?') { '&' } else { '?' };
                    Request {
                        method: Method::PUT,
                        target: format!("{path}{sep}digest={}", sha256(&data)),
                        body: Some(data),
                        content_type: None,
                    }
                }
                "GET referrers" => req(
                    Method::GET,
                    format!("/v2/{repo}/referrers/{}", image.digest),
                ),
                "DELETE referrers" => req(
                    Method::DELETE,
                    format!("/v2/{repo}/referrers/{}", image.digest),
                ),
                other => panic!("no request for row {other}"),
            };
            let (status, headers, body) = send_as(
                &s,
                role,
                r.method.clone(),
                &r.target,
                r.body,
                r.content_type,
            )
            .await;
            line.push_str(&format!(" {role}={status}"));
            if status != expected[i] {
                failures.push(format!(
                    "{name} as {role}: {} {} -> {status}, want {} ({body})",
                    r.method, r.target, expected[i]
                ));
            }
            match status {
                401 => {
                    let challenge = headers
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if challenge != format!("Basic realm=\"{REALM}\"") {
                        failures.push(format!("{name} as {role}: 401 challenge {challenge:?}"));
                    }
                    if r.method != Method::HEAD && !body.contains("UNAUTHORIZED") {
                        failures.push(format!("{name} as {role}: 401 body {body}"));
                    }
                }
                403 if r.method != Method::HEAD && !body.contains("DENIED") => {
                    failures.push(format!("{name} as {role}: 403 body {body}"));
                }
                _ => {}
            }
        }
        matrix.push_str(&line);
        matrix.push('\n');
    }
    println!("{matrix}");
    assert!(failures.is_empty(), "{}\n\n{matrix}", failures.join("\n"));
}

#[tokio::test]
async fn catalog_lists_only_what_the_caller_may_pull_and_pages_after_filtering() {
    let (s, _dir) = server(Some(policy())).await;
    for r in ["a/secret", "public/x", "team/a", "team/b", "team/c", "zzz"] {
        s.push_blob(r, b"x").await;
    }
    let list = |role: &'static str, q: &'static str| {
        let s = &s;
        async move {
            let (status, headers, body) = send_as(
                s,
                role,
                Method::GET,
                &format!("/v2/_catalog{q}"),
                None,
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let names: Vec<String> = v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            (
                names,
                headers.get("link").map(|l| l.to_str().unwrap().to_owned()),
            )
        }
    };
    assert_eq!(list("nobody", "").await.0, vec!["public/x"]);
    assert_eq!(
        list("puller", "").await.0,
        vec!["public/x", "team/a", "team/b", "team/c"]
    );
    assert_eq!(list("admin", "").await.0.len(), 6);
    let (page, link) = list("puller", "?n=2").await;
    assert_eq!(page, vec!["public/x", "team/a"]);
    assert!(link.unwrap().contains("last=team%2Fa"));
    let (page, link) = list("puller", "?n=2&last=team%2Fa").await;
    assert_eq!(page, vec!["team/b", "team/c"]);
    assert!(link.is_none(), "no more pullable repositories after team/c");
}

#[tokio::test]
async fn mount_from_an_unpullable_repository_is_a_plain_upload() {
    let (s, _dir) = server(Some(policy())).await;
    let data = content(9, 400);
    let digest = s.push_blob("team/app", &data).await;
    // mounter may push scratch/** but not pull team/**.
    let (status, headers, _) = send_as(
        &s,
        "mounter",
        Method::POST,
        &format!("/v2/scratch/x/blobs/uploads/?mount={digest}&from=team/app"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 202, "a session, not a mount");
    assert!(headers.get("docker-upload-uuid").is_some());
    let (status, _, _) = send_as(
        &s,
        "mounter",
        Method::HEAD,
        &format!("/v2/scratch/x/blobs/{digest}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 404, "the blob did not leak into scratch/x");
    // Nor without `from`: berth looks only in repositories the caller may pull.
    let (status, headers, _) = send_as(
        &s,
        "mounter",
        Method::POST,
        &format!("/v2/scratch/x/blobs/uploads/?mount={digest}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 202, "a session, not a mount from team/app");
    assert!(headers.get("docker-upload-uuid").is_some());
    // From a repository it may pull, the mount works.
    s.push_blob("scratch/y", &data).await;
    let (status, _, _) = send_as(
        &s,
        "mounter",
        Method::POST,
        &format!("/v2/scratch/x/blobs/uploads/?mount={digest}&from=scratch/y"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 201);
    // And without `from`, once a repository it may pull links the blob.
    let (status, _, _) = send_as(
        &s,
        "mounter",
        Method::POST,
        &format!("/v2/scratch/z/blobs/uploads/?mount={digest}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 201, "mounted from scratch/y or scratch/x");
}

#[tokio::test]
async fn anonymous_rules_allow_exactly_what_they_say() {
    let (s, _dir) = server(Some(policy())).await;
    let image = s.push_image("public/tool", "v1", 3).await;
    for (method, target, want) in [
        (Method::GET, "/v2/public/tool/manifests/v1".to_owned(), 200),
        (Method::GET, "/v2/public/tool/tags/list".to_owned(), 200),
        (
            Method::GET,
            format!("/v2/public/tool/blobs/{}", sha256(&image.layer)),
            200,
        ),
        (
            Method::POST,
            "/v2/public/tool/blobs/uploads/".to_owned(),
            401,
        ),
        (
            Method::DELETE,
            "/v2/public/tool/manifests/v1".to_owned(),
            401,
        ),
        (Method::GET, "/v2/team/app/tags/list".to_owned(), 401),
        // docker login must see a challenge even when some content is public.
        (Method::GET, "/v2/".to_owned(), 401),
        (Method::GET, "/v2/_catalog".to_owned(), 401),
    ] {
        let (status, _, body) = send_as(&s, "anonymous", method.clone(), &target, None, None).await;
        assert_eq!(status, want, "{method} {target}: {body}");
        // Empty Basic credentials (what skopeo --no-creds sends) are anonymous too.
        let r = plain_client()
            .request(method.clone(), s.url(&target))
            .basic_auth("", Some(""))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            want,
            "{method} {target} with empty Basic"
        );
    }
}

#[tokio::test]
async fn without_a_policy_every_user_may_do_everything_and_anonymous_nothing() {
    let (s, _dir) = server(None).await;
    s.push_image("any/repo", "t", 5).await;
    let (status, _, _) = send_as(
        &s,
        "nobody",
        Method::DELETE,
        "/v2/any/repo/manifests/t",
        None,
        None,
    )
    .await;
    assert_eq!(status, 202);
    let (status, _, _) = send_as(
        &s,
        "anonymous",
        Method::GET,
        "/v2/any/repo/tags/list",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
}

/// berth with htpasswd auth (and `policy`) on the production accept loop, which records the
/// client's address the login limits count by.
async fn serve_on_accept_loop(
    dir: &std::path::Path,
    policy: Option<Policy>,
    bind: &str,
) -> berth_tests::in_process::Served {
    let registry = berth_tests::in_process::registry(&dir.join("storage"), Options::default());
    let http = HttpOptions {
        auth: Some(auth(dir, policy)),
        ..HttpOptions::default()
    };
    berth_tests::in_process::serve_app(
        bind,
        berth_server::app(registry, http),
        berth_server::ServeOptions::default(),
    )
    .await
}

#[tokio::test]
async fn wrong_credentials_are_401_and_repeated_failures_are_429_for_that_client_and_name_only() {
    let dir = tempfile::tempdir().unwrap();
    // On every address: the test reaches it from 127.0.0.2 too.
    let served = serve_on_accept_loop(dir.path(), Some(policy()), "0.0.0.0:0").await;
    let port = served.addr.port();
    let url = format!("http://127.0.0.1:{port}/v2/");
    let get = |client: reqwest::Client, user: &'static str, pw: &'static str| {
        let url = url.clone();
        async move {
            client
                .get(url)
                .basic_auth(user, Some(pw))
                .send()
                .await
                .unwrap()
        }
    };
    let c = plain_client();
    let r = get(c.clone(), "admin", "admin-pw").await;
    assert_eq!(r.status(), 200);
    let r = get(c.clone(), "admin", "wrong").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"test-realm\""
    );
    assert!(r.text().await.unwrap().contains("UNAUTHORIZED"));
    // Unknown users fail the same way.
    assert_eq!(get(c.clone(), "ghost", "x").await.status(), 401);
    for _ in 0..9 {
        assert_eq!(get(c.clone(), "admin", "guess").await.status(), 401);
    }
    // Ten failures for admin: now even the right password is refused for admin from this
    // address, for as long as the window has left.
    let r = get(c.clone(), "admin", "admin-pw").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&retry), "Retry-After: {retry}");
    assert!(r.text().await.unwrap().contains("TOOMANYREQUESTS"));
    // An unknown name is locked out the same way, so a 429 tells no names apart.
    for _ in 0..9 {
        assert_eq!(get(c.clone(), "ghost", "x").await.status(), 401);
    }
    assert_eq!(get(c.clone(), "ghost", "x").await.status(), 429);
    // Other users at this address are not locked out by admin's failures.
    assert_eq!(get(c.clone(), "puller", "puller-pw").await.status(), 200);
    // Another client address is not affected.
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = other
        .get(format!("http://127.0.0.2:{port}/v2/"))
        .basic_auth("admin", Some("admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(served);
}

/// A client opening many connections at once with the right password (docker pushing layers
/// in parallel, a CI fleet behind one address) must never be refused: identical credentials
/// share one check, which counts once, and a right one is un-counted.
#[tokio::test]
async fn parallel_right_passwords_are_never_refused() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_on_accept_loop(dir.path(), None, "127.0.0.1:0").await;
    let port = served.addr.port();
    let requests = (0..3 * berth_server::auth::MAX_FAILURES).map(|_| {
        // A client each: separate connections, all at once.
        let client = plain_client();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}/v2/"))
                .basic_auth("admin", Some("admin-pw"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    drop(served);
}

/// berth's own token server (`auth.tokenserver`): tokens carry exactly what the policy gives
/// the caller, for the scopes asked for.
#[tokio::test]
async fn the_own_token_server_issues_what_the_policy_allows() {
    use berth_server::auth::{TokenIssuer, TokenServerOptions};
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["berth-token".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("token.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("token.key"), key.serialize_pem()).unwrap();
    let issuer = TokenIssuer::new(&TokenServerOptions {
        realm: "https://registry.test/token".into(),
        certificate: dir.path().join("token.crt"),
        key: dir.path().join("token.key"),
        expiry: std::time::Duration::from_secs(300),
    })
    .unwrap();
    let path = htpasswd_file(dir.path(), &["nobody", "puller", "pusher", "admin"]);
    let auth = Auth::htpasswd(REALM.into(), Htpasswd::open(path).unwrap(), Some(policy()))
        .with_token_server(issuer);
    let mut s = TestServer::start_with(
        Options::default(),
        HttpOptions {
            auth: Some(Arc::new(auth)),
            ..HttpOptions::default()
        },
    )
    .await;
    s.client = client_as("admin"); // Basic keeps working next to tokens
    s.push_image("team/app", "latest", 1).await;
    s.push_blob("public/x", b"p").await;
    s.push_blob("a/secret", b"s").await;

    let (status, headers, _) = send_as(
        &s,
        "anonymous",
        Method::GET,
        "/v2/team/app/tags/list",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"https://registry.test/token\",service=\"berth\",scope=\"repository:team/app:pull\""
    );

    let token_for = |role: &'static str, scope: &'static str| {
        let s = &s;
        async move {
            let (status, _, body) = send_as(
                s,
                role,
                Method::GET,
                &format!("/token?service=berth&scope={scope}"),
                None,
                None,
            )
            .await;
            assert_eq!(status, 200, "{role} {scope}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let token = v["token"].as_str().unwrap().to_owned();
            use base64::Engine as _;
            let payload = token.split('.').nth(1).unwrap();
            let claims: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap();
            (token, claims)
        }
    };
    let with_token = |token: String, method: Method, target: &'static str| {
        let s = &s;
        async move {
            plain_client()
                .request(method, s.url(target))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };

    // puller asks for pull and push on team/app and gets pull only.
    let (t, claims) = token_for("puller", "repository:team/app:pull,push").await;
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    assert_eq!(claims["sub"], "puller");
    let r = with_token(t.clone(), Method::GET, "/v2/team/app/tags/list").await;
    assert_eq!(r.status(), 200);
    let r = with_token(t, Method::POST, "/v2/team/app/blobs/uploads/").await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    // pusher gets both and can start an upload.
    let (t, _) = token_for("pusher", "repository:team/app:pull,push").await;
    let r = with_token(t, Method::POST, "/v2/team/app/blobs/uploads/").await;
    assert_eq!(r.status(), 202);
    // nobody gets nothing on team/app.
    let (t, claims) = token_for("nobody", "repository:team/app:pull").await;
    assert_eq!(claims["access"], json!([]));
    let r = with_token(t, Method::GET, "/v2/team/app/tags/list").await;
    assert_eq!(r.status(), 401);
    // Anonymous tokens carry what the anonymous rules give.
    let (t, claims) = token_for("anonymous", "repository:public/x:pull").await;
    assert_eq!(claims["sub"], "");
    let r = with_token(t, Method::GET, "/v2/public/x/tags/list").await;
    assert_eq!(r.status(), 200);
    // A catalog token still lists only what its user may pull.
    let (t, _) = token_for("puller", "registry:catalog:*").await;
    let r = with_token(t, Method::GET, "/v2/_catalog").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["repositories"], json!(["public/x", "team/app"]));
    // A wrong password at /token is 401 with a Basic challenge.
    let r = plain_client()
        .get(s.url("/token?service=berth&scope=repository:team/app:pull"))
        .basic_auth("puller", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Basic realm=\"{REALM}\"")
    );
    // A token from another key is refused.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"iss": "berth", "aud": "berth", "sub": "admin", "exp": 4_000_000_000u64,
                "access": [{"type": "repository", "name": "team/app", "actions": ["pull"]}]}),
        &jsonwebtoken::EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let r = with_token(forged, Method::GET, "/v2/team/app/tags/list").await;
    assert_eq!(r.status(), 401);
}
