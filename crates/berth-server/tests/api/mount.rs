//! Cross-repository blob mounts: `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`.

use berth_registry::Options;

use crate::common::*;

#[tokio::test]
async fn mount_from_a_repository_that_has_the_blob_is_201() {
    let s = TestServer::start(Options::default()).await;
    let data = content(20, 700);
    let digest = s.push_blob("a", &data).await;
    let r = s
        .post(&format!("/v2/b/blobs/uploads/?mount={digest}&from=a"))
        .await;
    r.assert_status(201);
    assert_eq!(r.h("location"), format!("{}/v2/b/blobs/{digest}", s.base));
    assert_eq!(r.h("docker-content-digest"), digest);
    assert_eq!(r.h("content-length"), "0");
    assert!(r.header("docker-upload-uuid").is_none(), "{}", r.describe());

    let g = s.get(&format!("/v2/b/blobs/{digest}")).await;
    g.assert_status(200);
    assert_eq!(g.body, data);
    // A mount opens no session.
    assert!(
        !s.files().iter().any(|f| f.contains("/_uploads/")),
        "{:?}",
        s.files()
    );
    // Nested names on both sides.
    s.post(&format!("/v2/x/y/blobs/uploads/?mount={digest}&from=b"))
        .await
        .assert_status(201);
    s.head(&format!("/v2/x/y/blobs/{digest}"))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn mount_from_a_repository_without_the_blob_starts_an_upload() {
    let s = TestServer::start(Options::default()).await;
    let data = content(21, 300);
    let digest = sha256(&data);
    s.push_blob("a", b"another blob").await;
    let r = s
        .post(&format!("/v2/b/blobs/uploads/?mount={digest}&from=a"))
        .await;
    r.assert_status(202);
    let uuid = r.h("docker-upload-uuid").to_owned();
    let loc = r.h("location").to_owned();
    assert_eq!(loc, format!("{}/v2/b/blobs/uploads/{uuid}", s.base));
    assert_eq!(r.h("range"), "0-0");
    // The session is a normal one.
    s.finish_upload(&loc, &digest, &data)
        .await
        .assert_status(201);
    assert_eq!(s.get(&format!("/v2/b/blobs/{digest}")).await.body, data);
}

#[tokio::test]
async fn mount_does_not_leak_a_blob_the_source_repository_lacks() {
    let s = TestServer::start(Options::default()).await;
    let data = content(22, 300);
    // The blob is in the store, but only repository c links it.
    let digest = s.push_blob("c", &data).await;
    s.push_blob("a", b"a has something else").await;
    for from in ["a", "nosuchrepo", "Invalid_Name!", ""] {
        let r = s
            .post(&format!("/v2/b/blobs/uploads/?mount={digest}&from={from}"))
            .await;
        r.assert_status(202);
        s.head(&format!("/v2/b/blobs/{digest}"))
            .await
            .assert_status(404);
        s.get(&format!("/v2/b/blobs/{digest}"))
            .await
            .assert_error(404, "BLOB_UNKNOWN");
        s.head(&format!("/v2/a/blobs/{digest}"))
            .await
            .assert_status(404);
    }
    assert!(
        !s.files()
            .iter()
            .any(|f| f.contains("repositories/b/_layers")),
        "{:?}",
        s.files()
    );
}

/// A mount without `from`: the spec lets the registry find a source itself. berth mounts
/// when some repository links the stored blob (201), and otherwise starts an upload (202).
#[tokio::test]
async fn mount_without_from_finds_a_repository_that_links_the_blob() {
    let s = TestServer::start(Options::default()).await;
    let data = content(23, 500);
    let digest = s.push_blob("team/app", &data).await;
    let r = s
        .post(&format!("/v2/b/blobs/uploads/?mount={digest}"))
        .await;
    r.assert_status(201);
    assert_eq!(r.h("location"), format!("{}/v2/b/blobs/{digest}", s.base));
    assert_eq!(r.h("docker-content-digest"), digest);
    assert!(r.header("docker-upload-uuid").is_none(), "{}", r.describe());
    assert_eq!(s.get(&format!("/v2/b/blobs/{digest}")).await.body, data);

    // Not stored anywhere: an ordinary session, which completes the push.
    let other = content(24, 300);
    let other_digest = sha256(&other);
    let r = s
        .post(&format!("/v2/c/blobs/uploads/?mount={other_digest}"))
        .await;
    r.assert_status(202);
    let loc = r.h("location").to_owned();
    s.finish_upload(&loc, &other_digest, &other)
        .await
        .assert_status(201);
    assert!(
        !s.files().iter().any(|f| f.contains("/_uploads/")),
        "{:?}",
        s.files()
    );
}
