//! The web UI over a real socket: what a stored manifest or config says is escaped on every
//! page, `/` sends browsers (only) to `/ui/`, `ui.enabled: false` removes it, and a delete
//! needs a confirmed POST from this origin. The browser tests (tests/e2e/ui.sh) check the
//! pages against the API with auth; these check what is cheaper to check here.

use berth_registry::Options;
use berth_server::{HttpOptions, UiOptions};
use reqwest::Method;
use serde_json::json;

use crate::common::*;

const HOSTILE: &str = "<script>alert(1)</script>";

/// An image whose config and a referrer carry markup everywhere a string can go.
async fn push_hostile_image(s: &TestServer) -> String {
    let config = to_body(&json!({
        "architecture": "amd64", "os": "linux", "created": HOSTILE,
        "config": {
            "Env": [format!("X={HOSTILE}")],
            "Cmd": [HOSTILE],
            "Entrypoint": ["\"><img src=x onerror=alert(1)>"],
            "Labels": {HOSTILE: HOSTILE},
            "WorkingDir": HOSTILE,
            "User": HOSTILE,
        },
        "history": [{"created": HOSTILE, "created_by": format!("</td>{HOSTILE}")}],
    }));
    let layer = content(7, 2000);
    s.push_blob("lib/app", &config).await;
    s.push_blob("lib/app", &layer).await;
    let manifest = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [{"mediaType": HOSTILE, "digest": sha256(&layer), "size": layer.len()}],
        "annotations": {HOSTILE: HOSTILE},
    }));
    let digest = s
        .put_manifest_ok("lib/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    let empty = b"{}";
    s.push_blob("lib/app", empty).await;
    let referrer = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": format!("application/x-{HOSTILE}"),
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()},
    }));
    let referrer_digest = sha256(&referrer);
    s.put_manifest_ok("lib/app", &referrer_digest, OCI_MANIFEST, &referrer)
        .await;
    digest
}

fn assert_escaped(r: &Resp) {
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains("<script>alert"), "{}", r.describe());
    assert!(!body.contains("<img"), "{}", r.describe());
    assert!(!body.contains("</td><script"), "{}", r.describe());
}

#[tokio::test]
async fn every_page_escapes_what_stored_content_says() {
    let s = TestServer::start(delete_enabled()).await;
    let digest = push_hostile_image(&s).await;
    for page in [
        "/ui/".to_owned(),
        "/ui/r/lib/app".to_owned(),
        "/ui/r/lib/app@v1".to_owned(),
        format!("/ui/r/lib/app@{digest}"),
        "/ui/delete/lib/app@v1".to_owned(),
        "/ui/storage".to_owned(),
    ] {
        let r = s.get(&page).await;
        r.assert_status(200);
        assert_escaped(&r);
        assert!(
            r.h("content-security-policy").contains("script-src 'self'"),
            "{}",
            r.describe()
        );
        assert_eq!(r.h("content-type"), "text/html; charset=utf-8");
    }
    let page = s.get("/ui/r/lib/app@v1").await;
    let body = String::from_utf8_lossy(&page.body);
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the label is shown, escaped"
    );
    assert!(
        body.contains("application/x-&lt;script&gt;"),
        "the referrer's artifact type is shown, escaped"
    );
}

#[tokio::test]
async fn root_sends_browsers_to_the_ui_and_api_clients_nowhere() {
    let s = TestServer::start(Options::default()).await;
    let r = s
        .send(
            s.request(Method::GET, "/")
                .header("accept", "text/html,*/*"),
        )
        .await;
    r.assert_status(303);
    assert_eq!(r.h("location"), "/ui/");
    s.get("/").await.assert_status(200);
    let r = s.get("/ui").await;
    r.assert_status(303);
    assert_eq!(r.h("location"), "/ui/");
    s.get("/ui/static/ui.css").await.assert_status(200);
    s.get("/ui/nowhere").await.assert_status(404);
}

#[tokio::test]
async fn the_ui_can_be_switched_off() {
    let s = TestServer::start_with(
        Options::default(),
        HttpOptions {
            ui: UiOptions {
                enabled: false,
                ..UiOptions::default()
            },
            ..HttpOptions::default()
        },
    )
    .await;
    s.push_image("lib/app", "v1", 1).await;
    for page in ["/ui/", "/ui/r/lib/app", "/ui/static/ui.js"] {
        s.get(page).await.assert_status(404);
    }
    let r = s
        .send(s.request(Method::GET, "/").header("accept", "text/html"))
        .await;
    r.assert_status(200);
}

#[tokio::test]
async fn deleting_needs_a_confirmed_post_from_this_origin() {
    let s = TestServer::start(delete_enabled()).await;
    s.push_image("lib/app", "v1", 1).await;
    s.push_image("lib/app", "v2", 2).await;
    let form = |body: &'static str| {
        s.request(Method::POST, "/ui/delete/lib/app@v1")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    // Looking at the confirmation deletes nothing.
    s.get("/ui/delete/lib/app@v1").await.assert_status(200);
    // Unconfirmed, or from elsewhere: refused.
    s.send(form("")).await.assert_status(400);
    s.send(form("confirm=yes").header("origin", "http://evil.example"))
        .await
        .assert_status(403);
    s.send(form("confirm=yes").header("sec-fetch-site", "cross-site"))
        .await
        .assert_status(403);
    assert_eq!(s.tags("lib/app").await, ["v1", "v2"]);
    // From this origin, confirmed: the tag goes, through the API's own delete.
    let host = s.addr.to_string();
    let r = s
        .send(
            form("confirm=yes")
                .header("origin", format!("http://{host}"))
                .header("sec-fetch-site", "same-origin"),
        )
        .await;
    r.assert_status(303);
    assert!(r.h("location").starts_with("/ui/r/lib/app?deleted="));
    assert_eq!(s.tags("lib/app").await, ["v2"]);
    // Unknown: the API's 404, as a page.
    s.send(form("confirm=yes")).await.assert_status(404);
}

#[tokio::test]
async fn deleting_is_refused_where_the_registry_does_not_delete() {
    let s = TestServer::start(Options::default()).await;
    s.push_image("lib/app", "v1", 1).await;
    let page = s.get("/ui/r/lib/app@v1").await;
    assert!(
        !String::from_utf8_lossy(&page.body).contains("/ui/delete/"),
        "no delete button where delete is disabled"
    );
    let r = s
        .send(
            s.request(Method::POST, "/ui/delete/lib/app@v1")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("confirm=yes"),
        )
        .await;
    r.assert_status(405);
    assert_eq!(s.tags("lib/app").await, ["v1"]);
}

#[tokio::test]
async fn the_repository_list_pages_and_searches_on_the_server() {
    let s = TestServer::start(Options::default()).await;
    for i in 0..120 {
        let image = s.push_image(&format!("team/r{i:03}"), "v1", 1).await;
        drop(image);
    }
    let first = s.get("/ui/").await;
    let body = String::from_utf8_lossy(&first.body);
    assert!(body.contains(">120 repositories<"), "{}", first.describe());
    assert_eq!(body.matches("data-name=").count(), 50);
    assert!(body.contains("Page 1 of 3"));
    let last = s.get("/ui/?page=3").await;
    assert_eq!(
        String::from_utf8_lossy(&last.body)
            .matches("data-name=")
            .count(),
        20
    );
    let found = s.get("/ui/?q=R11").await;
    let body = String::from_utf8_lossy(&found.body);
    assert!(body.contains(">10 repositories matching"), "{body}");
    assert!(body.contains("data-name=\"team/r119\""));
}
