//! The files a push leaves on disk: Distribution's layout, byte for byte, and nothing else.

use berth_registry::Options;
use serde_json::json;

use crate::common::*;

fn blob_path(digest: &str) -> String {
    let hex = hex_of(digest);
    format!("{V2}/blobs/sha256/{}/{hex}/data", &hex[..2])
}

#[tokio::test]
async fn on_disk_layout_after_a_push() {
    let s = TestServer::start(Options::default()).await;
    let repo = "lib/app";
    let config = to_body(&json!({ "architecture": "amd64", "os": "linux" }));
    let layer = content(100, 70_000);
    // One blob monolithic, one chunked, then the manifest by tag.
    let config_d = s.push_blob(repo, &config).await;
    let layer_d = s.push_blob_chunked(repo, &layer, 30_000).await;
    let manifest = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }));
    let manifest_d = s
        .put_manifest_ok(repo, "v1", DOCKER_MANIFEST, &manifest)
        .await;

    let r = format!("{V2}/repositories/{repo}");
    let links = [
        (
            format!("{r}/_layers/sha256/{}/link", hex_of(&config_d)),
            &config_d,
        ),
        (
            format!("{r}/_layers/sha256/{}/link", hex_of(&layer_d)),
            &layer_d,
        ),
        (
            format!(
                "{r}/_manifests/revisions/sha256/{}/link",
                hex_of(&manifest_d)
            ),
            &manifest_d,
        ),
        (format!("{r}/_manifests/tags/v1/current/link"), &manifest_d),
        (
            format!(
                "{r}/_manifests/tags/v1/index/sha256/{}/link",
                hex_of(&manifest_d)
            ),
            &manifest_d,
        ),
    ];
    let blobs = [
        (blob_path(&config_d), &config),
        (blob_path(&layer_d), &layer),
        (blob_path(&manifest_d), &manifest),
    ];
    let mut want: Vec<String> = links
        .iter()
        .map(|(p, _)| p.clone())
        .chain(blobs.iter().map(|(p, _)| p.clone()))
        .collect();
    want.sort();
    // berth's own index and garbage collection's pins (documented in berth-registry's
    // layout module) live in `_`-prefixed directories Distribution never reads; everything
    // else is Distribution's.
    let berth_only = [format!("{r}/_referrers/"), format!("{V2}/_berth/pins/")];
    let files: Vec<String> = s
        .files()
        .into_iter()
        .filter(|f| !berth_only.iter().any(|b| f.starts_with(b.as_str())))
        .collect();
    assert_eq!(files, want);

    for (path, digest) in &links {
        let text = std::fs::read(s.root().join(path)).expect("link");
        // `sha256:<hex>`, no newline.
        assert_eq!(text, digest.as_bytes(), "{path}");
    }
    for (path, data) in &blobs {
        assert_eq!(
            &std::fs::read(s.root().join(path)).expect("blob"),
            *data,
            "{path}"
        );
    }
    // No temporaries, and no session directories (an empty `_uploads` may stay).
    let entries = entries_under(&s.root());
    for e in &entries {
        let name = e.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        assert!(!name.starts_with('.'), "leftover temporary {e}");
    }
    let uploads = s.root().join(&r).join("_uploads");
    if uploads.exists() {
        assert_eq!(entries_under(&uploads), Vec::<String>::new());
    }
}

#[tokio::test]
async fn failed_and_cancelled_uploads_leave_no_session_behind() {
    let s = TestServer::start(Options::default()).await;
    // Wrong digest on PUT.
    let loc = s.start_upload("a").await;
    s.patch_chunk(&loc, 0, b"abc").await.assert_status(202);
    s.finish_upload(&loc, &sha256(b"xyz"), b"")
        .await
        .assert_error(400, "DIGEST_INVALID");
    // Wrong digest on a monolithic POST.
    let r = s
        .send(
            s.request(
                reqwest::Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={}", sha256(b"xyz")),
            )
            .body("abc"),
        )
        .await;
    r.assert_error(400, "DIGEST_INVALID");
    // Cancelled.
    let loc = s.start_upload("a").await;
    s.patch_chunk(&loc, 0, b"abc").await.assert_status(202);
    s.delete(&loc).await.assert_status(204);

    let entries = entries_under(&s.root());
    assert!(
        entries.iter().all(|e| e
            .split_once("/_uploads/")
            .is_none_or(|(_, rest)| rest.is_empty())),
        "{entries:?}"
    );
    let files = s.files();
    assert!(files.iter().all(|f| !f.contains("/blobs/")), "{files:?}");
}

fn write(root: &std::path::Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

/// A tree as Distribution writes it (no berth indexes) is served as is, and deleting a
/// manifest there removes the tags pointing at it, found from their history or, for a tag
/// without one, from its `current` link.
#[tokio::test]
async fn serves_and_deletes_in_a_tree_distribution_wrote() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let root = dir.path().join("storage");
    let repo = "library/ubuntu";
    let config = to_body(&json!({ "architecture": "amd64", "os": "linux" }));
    let layer = content(101, 5000);
    let manifest = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }));
    let other = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [],
    }));
    let r = format!("{V2}/repositories/{repo}");
    for data in [&config, &layer, &manifest, &other] {
        write(&root, &blob_path(&sha256(data)), data);
    }
    for data in [&config, &layer] {
        let d = sha256(data);
        write(
            &root,
            &format!("{r}/_layers/sha256/{}/link", hex_of(&d)),
            d.as_bytes(),
        );
    }
    for (tag, data) in [("v1", &manifest), ("latest", &manifest), ("old", &other)] {
        let d = sha256(data);
        let hex = hex_of(&d);
        write(
            &root,
            &format!("{r}/_manifests/revisions/sha256/{hex}/link"),
            d.as_bytes(),
        );
        write(
            &root,
            &format!("{r}/_manifests/tags/{tag}/current/link"),
            d.as_bytes(),
        );
        write(
            &root,
            &format!("{r}/_manifests/tags/{tag}/index/sha256/{hex}/link"),
            d.as_bytes(),
        );
    }
    // A tag with no history, as neither program writes one but a hand or another tool may:
    // a delete by digest still finds it.
    let d = sha256(&manifest);
    write(
        &root,
        &format!("{r}/_manifests/tags/bare/current/link"),
        d.as_bytes(),
    );
    let uuid = "0f6b5c4e-2a1d-4c3b-9e8f-7a6b5c4d3e2f";
    write(&root, &format!("{r}/_uploads/{uuid}/data"), b"12345");
    write(
        &root,
        &format!("{r}/_uploads/{uuid}/startedat"),
        b"2024-01-01T00:00:00Z",
    );

    let s = TestServer::start_on(dir, delete_enabled(), berth_server::HttpOptions::default()).await;
    let c = s.get("/v2/_catalog").await;
    assert_eq!(c.json()["repositories"], json!([repo]));
    assert_eq!(s.tags(repo).await, ["bare", "latest", "old", "v1"]);
    let g = s.get(&format!("/v2/{repo}/manifests/v1")).await;
    g.assert_status(200);
    assert_eq!(g.body, manifest);
    assert_eq!(g.h("content-type"), DOCKER_MANIFEST);
    assert_eq!(
        s.get(&format!("/v2/{repo}/blobs/{}", sha256(&layer)))
            .await
            .body,
        layer
    );
    let st = s.get(&format!("/v2/{repo}/blobs/uploads/{uuid}")).await;
    st.assert_status(204);
    assert_eq!(st.h("range"), "0-4");

    s.delete(&format!("/v2/{repo}/manifests/{}", sha256(&manifest)))
        .await
        .assert_status(202);
    assert_eq!(s.tags(repo).await, ["old"]);
    for tag in ["v1", "latest", "bare"] {
        s.get(&format!("/v2/{repo}/manifests/{tag}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
    assert_eq!(
        s.get(&format!("/v2/{repo}/manifests/old")).await.body,
        other
    );
}
