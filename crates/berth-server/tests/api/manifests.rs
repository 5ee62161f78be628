//! `PUT`, `GET` and `HEAD /v2/<name>/manifests/<reference>` for every accepted format, and
//! the ways a manifest is refused.

use berth_registry::Options;
use serde_json::{Value, json};

use crate::common::*;

/// PUTs `body` under `tag` and checks it reads back byte for byte, by tag and by digest,
/// with the expected media type.
async fn round_trip(
    s: &TestServer,
    repo: &str,
    tag: &str,
    content_type: &str,
    body: &[u8],
    served_as: &str,
) -> String {
    let digest = sha256(body);
    let r = s.put_manifest(repo, tag, Some(content_type), body).await;
    r.assert_status(201);
    assert_eq!(
        r.h("location"),
        format!("{}/v2/{repo}/manifests/{digest}", s.base)
    );
    assert_eq!(r.h("docker-content-digest"), digest);
    assert_eq!(r.h("content-length"), "0");
    assert!(r.header("oci-subject").is_none(), "{}", r.describe());

    for reference in [tag, digest.as_str()] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let g = s.get(&path).await;
        g.assert_status(200);
        assert_eq!(&g.body[..], body, "{reference}: bytes differ");
        assert_eq!(g.h("content-type"), served_as, "{reference}");
        assert_eq!(g.h("content-length"), body.len().to_string(), "{reference}");
        assert_eq!(g.h("docker-content-digest"), digest, "{reference}");

        let h = s.head(&path).await;
        h.assert_status(200);
        assert!(h.body.is_empty());
        assert_eq!(h.h("content-type"), served_as, "{reference}");
        assert_eq!(h.h("content-length"), body.len().to_string(), "{reference}");
        assert_eq!(h.h("docker-content-digest"), digest, "{reference}");
    }
    digest
}

/// Pushes a config and a layer into `repo` and returns an OCI image manifest body for them
/// (without `mediaType` when `with_media_type` is false).
async fn oci_image(s: &TestServer, repo: &str, seed: u8, with_media_type: bool) -> Vec<u8> {
    let config = to_body(&json!({ "architecture": "arm64", "os": "linux", "seed": seed }));
    let layer = content(seed.into(), 2000);
    s.push_blob(repo, &config).await;
    s.push_blob(repo, &layer).await;
    let mut m = json!({
        "schemaVersion": 2,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
        "annotations": { "org.opencontainers.image.title": format!("image {seed}") },
    });
    if with_media_type {
        m["mediaType"] = OCI_MANIFEST.into();
    }
    to_body(&m)
}

fn platform_entry(media_type: &str, body: &[u8], arch: &str) -> Value {
    let mut d = descriptor(media_type, body);
    d["platform"] = json!({ "os": "linux", "architecture": arch });
    d
}

#[tokio::test]
async fn docker_schema2_manifest() {
    let s = TestServer::start(Options::default()).await;
    let config = to_body(&json!({ "architecture": "amd64", "os": "linux" }));
    let layer = content(40, 1234);
    s.push_blob("lib/app", &config).await;
    s.push_blob("lib/app", &layer).await;
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }));
    round_trip(&s, "lib/app", "v1", DOCKER_MANIFEST, &body, DOCKER_MANIFEST).await;
}

#[tokio::test]
async fn oci_manifest_without_media_type_field_uses_content_type() {
    let s = TestServer::start(Options::default()).await;
    let body = oci_image(&s, "a", 41, false).await;
    round_trip(&s, "a", "latest", OCI_MANIFEST, &body, OCI_MANIFEST).await;
}

#[tokio::test]
async fn oci_artifact_with_artifact_type_and_empty_layers() {
    let s = TestServer::start(Options::default()).await;
    // An arbitrary config media type.
    let config = br#"{"tool":"example","version":3}"#.to_vec();
    s.push_blob("a", &config).await;
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1+json",
        "config": descriptor("application/vnd.example.config.v1+json", &config),
        "layers": [],
    }));
    round_trip(&s, "a", "sbom", OCI_MANIFEST, &body, OCI_MANIFEST).await;

    // The OCI 1.1 "empty" config form.
    s.push_blob("a", b"{}").await;
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature.v1",
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor(OCI_EMPTY, b"{}")],
    }));
    round_trip(&s, "a", "sig", OCI_MANIFEST, &body, OCI_MANIFEST).await;
}

#[tokio::test]
async fn oci_index() {
    let s = TestServer::start(Options::default()).await;
    let amd = oci_image(&s, "multi", 42, true).await;
    let arm = oci_image(&s, "multi", 43, true).await;
    s.put_manifest_ok("multi", &sha256(&amd), OCI_MANIFEST, &amd)
        .await;
    s.put_manifest_ok("multi", &sha256(&arm), OCI_MANIFEST, &arm)
        .await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            platform_entry(OCI_MANIFEST, &amd, "amd64"),
            platform_entry(OCI_MANIFEST, &arm, "arm64"),
        ],
    });
    round_trip(
        &s,
        "multi",
        "latest",
        OCI_INDEX,
        &to_body(&index),
        OCI_INDEX,
    )
    .await;

    // Without mediaType in the body, Content-Type decides.
    let mut bare = index.clone();
    bare.as_object_mut().expect("object").remove("mediaType");
    bare["annotations"] = json!({ "variant": "bare" });
    round_trip(&s, "multi", "bare", OCI_INDEX, &to_body(&bare), OCI_INDEX).await;
}

#[tokio::test]
async fn docker_manifest_list() {
    let s = TestServer::start(Options::default()).await;
    let one = s.push_image("multi", "one", 44).await;
    let two = s.push_image("multi", "two", 45).await;
    let list = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            platform_entry(DOCKER_MANIFEST, &one.manifest, "amd64"),
            platform_entry(DOCKER_MANIFEST, &two.manifest, "s390x"),
        ],
    }));
    round_trip(&s, "multi", "latest", DOCKER_LIST, &list, DOCKER_LIST).await;
}

#[tokio::test]
async fn put_by_digest() {
    let s = TestServer::start(Options::default()).await;
    let body = oci_image(&s, "a", 46, true).await;
    let digest = sha256(&body);

    // A digest that is not the body's.
    let wrong = sha256(b"another body");
    let r = s.put_manifest("a", &wrong, Some(OCI_MANIFEST), &body).await;
    r.assert_error(400, "DIGEST_INVALID");
    s.get(&format!("/v2/a/manifests/{wrong}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    s.get(&format!("/v2/a/manifests/{digest}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");

    // The right one.
    let r = s
        .put_manifest("a", &digest, Some(OCI_MANIFEST), &body)
        .await;
    r.assert_status(201);
    assert_eq!(
        r.h("location"),
        format!("{}/v2/a/manifests/{digest}", s.base)
    );
    assert_eq!(r.h("docker-content-digest"), digest);
    let g = s.get(&format!("/v2/a/manifests/{digest}")).await;
    g.assert_status(200);
    assert_eq!(&g.body[..], &body[..]);
    // No tag was made. (Distribution answers NAME_UNKNOWN for a repository without a tags
    // directory; an empty list is as good.)
    let t = s.get("/v2/a/tags/list").await;
    if t.status.as_u16() == 404 {
        t.assert_error(404, "NAME_UNKNOWN");
    } else {
        t.assert_status(200);
        assert_eq!(t.json()["tags"].as_array().map_or(0, Vec::len), 0);
    }
}

/// A manifest naming a blob the repository does not link is refused with
/// MANIFEST_BLOB_UNKNOWN. Distribution sends it with 400 Bad Request
/// (`registry/api/v2/errors.go`: `ErrorCodeManifestBlobUnknown`, `http.StatusBadRequest`).
#[tokio::test]
async fn manifest_referencing_an_unknown_blob_is_manifest_blob_unknown() {
    let s = TestServer::start(Options::default()).await;
    let config = to_body(&json!({ "os": "linux" }));
    let layer = content(47, 100);
    s.push_blob("a", &config).await;
    // The layer exists in the registry, but only in repository b.
    s.push_blob("b", &layer).await;
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }));
    let r = s
        .put_manifest("a", "latest", Some(DOCKER_MANIFEST), &body)
        .await;
    r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    // A config that exists nowhere.
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, b"no such config"),
        "layers": [],
    }));
    let r = s
        .put_manifest("a", "latest", Some(OCI_MANIFEST), &body)
        .await;
    r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    s.get("/v2/a/manifests/latest")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

/// The references are checked many at a time, yet the refusal names the first missing one
/// in the manifest's order, as checking one after another did: here the 21st of 40 layers,
/// not the 31st, which is missing too. Over HTTP the checks finish in about the order they
/// start; the unit tests of `first_missing` make them finish out of order.
#[tokio::test]
async fn the_first_missing_layer_in_order_is_the_one_named() {
    let s = TestServer::start(Options::default()).await;
    let config = to_body(&json!({ "os": "linux" }));
    s.push_blob("a", &config).await;
    let mut layers = Vec::new();
    for i in 0..40u8 {
        let layer = content(100 + u64::from(i), 64);
        if i != 20 && i != 30 {
            s.push_blob("a", &layer).await;
        }
        layers.push(layer);
    }
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    }));
    // Named first the 21st; once it is pushed, the 31st.
    for missing in [20, 30] {
        let r = s
            .put_manifest("a", "latest", Some(OCI_MANIFEST), &body)
            .await;
        r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
        assert_eq!(
            r.json()["errors"][0]["detail"]["digest"],
            sha256(&layers[missing]),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        s.push_blob("a", &layers[missing]).await;
    }
}

/// An index naming a manifest the repository lacks: the OCI spec says a manifest rejected
/// for a missing reference "MUST result in one or more MANIFEST_BLOB_UNKNOWN errors", and
/// Distribution (manifestlisthandler.go) does exactly that, with 400.
#[tokio::test]
async fn index_referencing_an_unknown_manifest_is_refused() {
    let s = TestServer::start(Options::default()).await;
    let present = oci_image(&s, "a", 48, true).await;
    s.put_manifest_ok("a", "present", OCI_MANIFEST, &present)
        .await;
    let index = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            platform_entry(OCI_MANIFEST, &present, "amd64"),
            platform_entry(OCI_MANIFEST, b"{\"not\":\"pushed\"}", "arm64"),
        ],
    }));
    let r = s.put_manifest("a", "latest", Some(OCI_INDEX), &index).await;
    r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    s.get("/v2/a/manifests/latest")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn invalid_manifests_are_manifest_invalid() {
    let s = TestServer::start(Options::default()).await;
    let docker = s.push_image("a", "good", 49).await;
    let schema1 = to_body(&json!({
        "schemaVersion": 1, "name": "a", "tag": "bad", "architecture": "amd64",
        "fsLayers": [], "history": [],
    }));
    let signed_schema1 = to_body(&json!({
        "schemaVersion": 1, "name": "a", "tag": "bad", "architecture": "amd64",
        "fsLayers": [], "history": [], "signatures": [],
    }));
    let no_media_type: Value = {
        let mut v: Value = serde_json::from_slice(&docker.manifest).expect("json");
        v.as_object_mut().expect("object").remove("mediaType");
        v
    };
    let cases: &[(&str, Option<&str>, Vec<u8>)] = &[
        ("schema 1", Some(DOCKER_SCHEMA1), schema1.clone()),
        ("signed schema 1", Some(DOCKER_SCHEMA1_SIGNED), signed_schema1),
        ("schema 1 without content type", None, schema1),
        ("not JSON", Some(OCI_MANIFEST), b"{ this is not json".to_vec()),
        ("empty body", Some(OCI_MANIFEST), Vec::new()),
        ("JSON array", Some(OCI_MANIFEST), b"[]".to_vec()),
        (
            "mediaType contradicts Content-Type",
            Some(OCI_MANIFEST),
            docker.manifest.clone(),
        ),
        (
            "Docker content type without mediaType",
            Some(DOCKER_MANIFEST),
            to_body(&no_media_type),
        ),
        (
            "schemaVersion 3",
            Some(OCI_MANIFEST),
            br#"{"schemaVersion":3,"config":{}}"#.to_vec(),
        ),
        (
            "bad digest in a descriptor",
            Some(OCI_MANIFEST),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:nothex","size":1},"layers":[]}"#.to_vec(),
        ),
    ];
    for (what, content_type, body) in cases {
        let r = s.put_manifest("a", "bad", *content_type, body).await;
        assert_eq!(r.status.as_u16(), 400, "{what}: {}", r.describe());
        r.assert_error(400, "MANIFEST_INVALID");
    }
    s.get("/v2/a/manifests/bad")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(s.tags("a").await, ["good"]);
}

/// Pads a valid OCI manifest with an annotation to exactly `size` bytes.
fn padded_manifest(config: &[u8], size: usize) -> Vec<u8> {
    let make = |pad: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [],
            "annotations": { "pad": "x".repeat(pad) },
        }))
        .expect("json")
    };
    let base = make(0).len();
    let body = make(size - base);
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn manifest_over_4_mib_is_manifest_invalid() {
    let s = TestServer::start(Options::default()).await;
    let config = br#"{"os":"linux"}"#;
    s.push_blob("a", config).await;
    let limit = 4 * 1024 * 1024;
    let r = s
        .put_manifest(
            "a",
            "big",
            Some(OCI_MANIFEST),
            &padded_manifest(config, limit + 1),
        )
        .await;
    r.assert_error(400, "MANIFEST_INVALID");
    s.get("/v2/a/manifests/big")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    // Exactly the limit is fine.
    let body = padded_manifest(config, limit);
    s.put_manifest_ok("a", "big", OCI_MANIFEST, &body).await;
    assert_eq!(s.get("/v2/a/manifests/big").await.body.len(), limit);
}

#[tokio::test]
async fn manifest_with_subject_gets_oci_subject() {
    let s = TestServer::start(Options::default()).await;
    let image = s.push_image("a", "latest", 50).await;
    s.push_blob("a", b"{}").await;
    let artifact = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature.v1",
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor(OCI_EMPTY, b"{}")],
        "subject": descriptor(DOCKER_MANIFEST, &image.manifest),
    }));
    let digest = sha256(&artifact);
    let r = s
        .put_manifest("a", &digest, Some(OCI_MANIFEST), &artifact)
        .await;
    r.assert_status(201);
    assert_eq!(r.h("oci-subject"), image.digest);
    assert_eq!(r.h("docker-content-digest"), digest);

    // A subject that is not (yet) in the registry is accepted too, as the spec requires.
    let dangling = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature.v1",
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [],
        "subject": descriptor(OCI_MANIFEST, b"not pushed yet"),
    }));
    let r = s
        .put_manifest("a", "dangling", Some(OCI_MANIFEST), &dangling)
        .await;
    r.assert_status(201);
    assert_eq!(r.h("oci-subject"), sha256(b"not pushed yet"));
}

#[tokio::test]
async fn unknown_manifests_are_404_manifest_unknown() {
    let s = TestServer::start(Options::default()).await;
    let image = s.push_image("a", "latest", 51).await;
    for path in [
        "/v2/a/manifests/nosuchtag".to_owned(),
        format!("/v2/a/manifests/{}", sha256(b"no such manifest")),
        // Another repository's manifest, by digest and by its tag's name.
        format!("/v2/b/manifests/{}", image.digest),
        "/v2/b/manifests/latest".to_owned(),
    ] {
        s.get(&path).await.assert_error(404, "MANIFEST_UNKNOWN");
        let h = s.head(&path).await;
        h.assert_status(404);
        assert!(h.body.is_empty());
    }
    // A layer digest is not a manifest.
    s.get(&format!("/v2/a/manifests/{}", sha256(&image.layer)))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn retagging_moves_the_tag() {
    let s = TestServer::start(Options::default()).await;
    let first = s.push_image("a", "t", 52).await;
    let second = s.push_image("a", "t", 53).await;
    assert_ne!(first.digest, second.digest);
    let g = s.get("/v2/a/manifests/t").await;
    assert_eq!(g.h("docker-content-digest"), second.digest);
    assert_eq!(g.body, second.manifest);
    // The old revision stays reachable by digest.
    let g = s.get(&format!("/v2/a/manifests/{}", first.digest)).await;
    g.assert_status(200);
    assert_eq!(g.body, first.manifest);
    assert_eq!(s.tags("a").await, ["t"]);
    // Moving it back works too.
    s.put_manifest_ok("a", "t", DOCKER_MANIFEST, &first.manifest)
        .await;
    assert_eq!(
        s.get("/v2/a/manifests/t").await.h("docker-content-digest"),
        first.digest
    );
}

/// Foreign layers are fetched from their URLs, so they need not be in the registry.
#[tokio::test]
async fn foreign_layers_with_urls_need_not_be_pushed() {
    let s = TestServer::start(Options::default()).await;
    let config = to_body(&json!({ "os": "windows" }));
    s.push_blob("win", &config).await;
    let mut foreign = descriptor(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        b"base layer kept elsewhere",
    );
    foreign["urls"] = json!(["https://example.com/layers/base.tar.gz"]);
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [foreign],
    }));
    round_trip(&s, "win", "ltsc", DOCKER_MANIFEST, &body, DOCKER_MANIFEST).await;
}

/// Regression: a 404 seen just before a push must not be served from the link cache after
/// the push (the cache remembers absence for up to a second).
#[tokio::test]
async fn a_manifest_missed_just_before_its_push_is_served_right_after() {
    let s = TestServer::start(Options::default()).await;
    s.get("/v2/cache/manifests/v1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    // Push the same image twice under different repositories to learn its digest first.
    let probe = s.push_image("cache-probe", "v1", 7).await;
    s.get(&format!("/v2/cache/manifests/{}", probe.digest))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    let image = s.push_image("cache", "v1", 7).await;
    assert_eq!(image.digest, probe.digest);
    let by_tag = s.get("/v2/cache/manifests/v1").await;
    by_tag.assert_status(200);
    assert_eq!(by_tag.h("docker-content-digest"), image.digest);
    s.get(&format!("/v2/cache/manifests/{}", image.digest))
        .await
        .assert_status(200);
}
