//! How `Location` URLs are built (`http.host`, `http.relativeurls`, the request's Host and
//! `X-Forwarded-*`), and `http.headers` on every response.

use berth_registry::Options;
use berth_server::HttpOptions;
use http::{HeaderName, HeaderValue};

use crate::common::*;

/// The three Locations a push produces: upload session, blob, manifest.
async fn locations(s: &TestServer, headers: &[(&str, &str)]) -> [String; 3] {
    let config = br#"{"os":"linux"}"#;
    let r = s
        .raw("POST", "/v2/lib/app/blobs/uploads/", headers, b"")
        .await;
    r.assert_status(202);
    let upload = r.h("location").to_owned();
    let uuid = r.h("docker-upload-uuid").to_owned();
    let d = sha256(config);
    let r = s
        .raw(
            "PUT",
            &format!("/v2/lib/app/blobs/uploads/{uuid}?digest={d}"),
            headers,
            config,
        )
        .await;
    r.assert_status(201);
    let blob = r.h("location").to_owned();
    let body = to_body(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [],
    }));
    let mut with_ct = headers.to_vec();
    with_ct.push(("Content-Type", OCI_MANIFEST));
    let r = s
        .raw("PUT", "/v2/lib/app/manifests/v1", &with_ct, &body)
        .await;
    r.assert_status(201);
    let manifest = r.h("location").to_owned();
    let tail = [
        format!("/v2/lib/app/blobs/uploads/{uuid}"),
        format!("/v2/lib/app/blobs/{d}"),
        format!("/v2/lib/app/manifests/{}", sha256(&body)),
    ];
    for (got, want) in [&upload, &blob, &manifest].iter().zip(&tail) {
        assert!(got.ends_with(want.as_str()), "{got} vs {want}");
    }
    [upload, blob, manifest]
}

fn paths(s: &TestServer, prefix: &str, ls: &[String; 3]) -> Vec<String> {
    ls.iter()
        .map(|l| {
            l.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{l} does not start with {prefix} ({})", s.base))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn default_location_uses_the_request_host() {
    let s = TestServer::start(Options::default()).await;
    // reqwest's Host is 127.0.0.1:<port>.
    let loc = s.start_upload("a").await;
    assert!(
        loc.starts_with(&format!("{}/v2/a/blobs/uploads/", s.base)),
        "{loc}"
    );

    let ls = locations(&s, &[("Host", "registry.internal:5000")]).await;
    let p = paths(&s, "http://registry.internal:5000", &ls);
    assert!(p.iter().all(|p| p.starts_with("/v2/lib/app/")), "{p:?}");

    // Behind a proxy.
    let ls = locations(
        &s,
        &[
            ("Host", "10.0.0.1:5000"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "registry.example.com"),
        ],
    )
    .await;
    paths(&s, "https://registry.example.com/v2/", &ls);
}

#[tokio::test]
async fn http_host_makes_locations_absolute_on_that_host() {
    let s = TestServer::start_with(
        Options::default(),
        HttpOptions {
            host: Some("https://registry.example.com:8443".into()),
            ..HttpOptions::default()
        },
    )
    .await;
    for headers in [
        &[][..],
        &[
            ("Host", "elsewhere:1234"),
            ("X-Forwarded-Host", "proxy.example"),
        ][..],
    ] {
        let ls = locations(&s, headers).await;
        paths(&s, "https://registry.example.com:8443/v2/lib/app/", &ls);
    }
}

#[tokio::test]
async fn relative_urls_makes_locations_paths() {
    let s = TestServer::start_with(
        Options::default(),
        HttpOptions {
            relative_urls: true,
            ..HttpOptions::default()
        },
    )
    .await;
    let ls = locations(&s, &[("X-Forwarded-Host", "proxy.example")]).await;
    paths(&s, "/v2/lib/app/", &ls);
    // A relative Location is usable as is.
    let r = s.post("/v2/a/blobs/uploads/").await;
    let loc = r.h("location").to_owned();
    assert!(loc.starts_with("/v2/a/blobs/uploads/"), "{loc}");
    s.get(&loc).await.assert_status(204);
}

#[tokio::test]
async fn configured_headers_are_on_every_response() {
    let s = TestServer::start_with(
        Options::default(),
        HttpOptions {
            headers: vec![(
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            )],
            ..HttpOptions::default()
        },
    )
    .await;
    for r in [
        s.get("/v2/").await,
        s.get("/v2/nosuch/tags/list").await,
        s.get("/v2/a/manifests/latest").await,
        s.get("/nowhere").await,
        s.post("/v2/_catalog").await,
        s.post("/v2/a/blobs/uploads/").await,
    ] {
        assert_eq!(r.h("x-content-type-options"), "nosniff", "{}", r.describe());
    }
}
