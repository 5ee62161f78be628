//! The base endpoint, paths outside the API and methods an endpoint does not have.

use berth_registry::Options;
use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn get_base_is_200_with_empty_json_object() {
    let s = TestServer::start(Options::default()).await;
    let r = s.get("/v2/").await;
    r.assert_status(200);
    assert!(r.h("content-type").starts_with("application/json"));
    assert_eq!(r.json(), serde_json::json!({}));
    assert_eq!(r.h("content-length"), r.body.len().to_string());
}

#[tokio::test]
async fn head_base_is_200_without_body() {
    let s = TestServer::start(Options::default()).await;
    let r = s.head("/v2/").await;
    r.assert_status(200);
    assert!(r.body.is_empty());
    // Without the trailing slash too, as Distribution routes it.
    s.get("/v2").await.assert_status(200);
}

#[tokio::test]
async fn unknown_paths_are_404_with_a_json_error() {
    let s = TestServer::start(Options::default()).await;
    for path in [
        "/v2/a",
        "/v2/a/b",
        "/v2/a/blobs",
        "/v2/a/manifest/latest",
        "/v2/a/tags",
        "/v2/a/tags/lists",
        "/v2/manifests/latest",
        "/v3/",
        "/v2x/a/tags/list",
        "/foo",
    ] {
        let r = s.get(path).await;
        r.assert_status(404);
        // Some code, in the spec's envelope.
        let code = r.error_code();
        assert!(!code.is_empty(), "{}", r.describe());
        r.assert_error_body(&code);
    }
}

#[tokio::test]
async fn wrong_method_is_405_unsupported() {
    let s = TestServer::start(Options::default()).await;
    let d = sha256(b"x");
    let cases: &[(Method, String)] = &[
        (Method::POST, "/v2/_catalog".into()),
        (Method::DELETE, "/v2/_catalog".into()),
        (Method::PUT, "/v2/".into()),
        (Method::DELETE, "/v2/".into()),
        (Method::POST, "/v2/".into()),
        (Method::POST, "/v2/a/tags/list".into()),
        (Method::DELETE, "/v2/a/tags/list".into()),
        (Method::POST, "/v2/a/manifests/latest".into()),
        (Method::PATCH, "/v2/a/manifests/latest".into()),
        (Method::POST, format!("/v2/a/blobs/{d}")),
        (Method::PUT, format!("/v2/a/blobs/{d}")),
        (Method::PATCH, format!("/v2/a/blobs/{d}")),
        (Method::GET, "/v2/a/blobs/uploads/".into()),
        (Method::PUT, "/v2/a/blobs/uploads/".into()),
        (Method::POST, format!("/v2/a/referrers/{d}")),
    ];
    for (method, path) in cases {
        let r = s.send(s.request(method.clone(), path)).await;
        r.assert_error(405, "UNSUPPORTED");
    }
}
