//! `storage.maintenance.readonly`: every write is 405 UNSUPPORTED, every read still works.

use berth_registry::Options;
use berth_server::HttpOptions;
use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn read_only_refuses_writes_and_serves_reads() {
    // Data written by a writable server on the same root.
    let writer = TestServer::start(Options::default()).await;
    let image = writer.push_image("a", "latest", 70).await;
    let session = writer.path_of(&writer.start_upload("a").await);
    writer
        .patch_chunk(&session, 0, b"partial")
        .await
        .assert_status(202);
    let before = writer.files();

    let s = TestServer::start_on(
        writer.dir(),
        Options {
            read_only: true,
            // Read-only wins over delete.
            delete_enabled: true,
            ..Options::default()
        },
        HttpOptions::default(),
    )
    .await;
    let new_blob = b"new blob".to_vec();
    let nd = sha256(&new_blob);
    let writes: Vec<(Method, String, Vec<u8>)> = vec![
        (Method::POST, "/v2/a/blobs/uploads/".into(), vec![]),
        (Method::POST, "/v2/b/blobs/uploads/".into(), vec![]),
        (
            Method::POST,
            format!("/v2/a/blobs/uploads/?digest={nd}"),
            new_blob.clone(),
        ),
        (
            Method::POST,
            format!("/v2/b/blobs/uploads/?mount={}&from=a", sha256(&image.layer)),
            vec![],
        ),
        (Method::PATCH, session.clone(), b"more".to_vec()),
        (
            Method::PUT,
            format!("{session}?digest={}", sha256(b"partial")),
            vec![],
        ),
        (Method::DELETE, session.clone(), vec![]),
        (
            Method::PUT,
            "/v2/a/manifests/other".into(),
            image.manifest.clone(),
        ),
        (
            Method::PUT,
            format!("/v2/a/manifests/{}", image.digest),
            image.manifest.clone(),
        ),
        (Method::DELETE, "/v2/a/manifests/latest".into(), vec![]),
        (
            Method::DELETE,
            format!("/v2/a/manifests/{}", image.digest),
            vec![],
        ),
        (
            Method::DELETE,
            format!("/v2/a/blobs/{}", sha256(&image.layer)),
            vec![],
        ),
    ];
    for (method, path, body) in writes {
        let r = s
            .send(
                s.request(method, &path)
                    .header("content-type", DOCKER_MANIFEST)
                    .body(body),
            )
            .await;
        r.assert_error(405, "UNSUPPORTED");
    }
    assert_eq!(s.files(), before, "a read-only server changed storage");

    // Reads.
    s.get("/v2/").await.assert_status(200);
    let c = s.get("/v2/_catalog").await;
    c.assert_status(200);
    assert_eq!(c.json()["repositories"], serde_json::json!(["a"]));
    assert_eq!(s.tags("a").await, ["latest"]);
    for reference in ["latest", image.digest.as_str()] {
        let g = s.get(&format!("/v2/a/manifests/{reference}")).await;
        g.assert_status(200);
        assert_eq!(g.body, image.manifest);
        s.head(&format!("/v2/a/manifests/{reference}"))
            .await
            .assert_status(200);
    }
    for blob in [&image.config, &image.layer] {
        let path = format!("/v2/a/blobs/{}", sha256(blob));
        assert_eq!(&s.get(&path).await.body[..], &blob[..]);
        s.head(&path).await.assert_status(200);
    }
    let st = s.get(&session).await;
    st.assert_status(204);
    assert_eq!(st.h("range"), "0-6");
}
