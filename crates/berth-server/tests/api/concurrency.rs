//! Many clients pushing the same thing at once: every push succeeds and the result is whole.

use std::sync::Arc;

use berth_registry::Options;
use reqwest::Method;

use crate::common::*;

const TASKS: usize = 16;

fn no_leftovers(s: &TestServer) {
    for e in entries_under(&s.root()) {
        let name = e.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        assert!(!name.starts_with('.'), "leftover temporary {e}");
        assert!(
            e.split_once("/_uploads/")
                .is_none_or(|(_, rest)| rest.is_empty()),
            "leftover session {e}"
        );
    }
}

async fn assert_blob(s: &TestServer, repo: &str, data: &[u8]) {
    let g = s.get(&format!("/v2/{repo}/blobs/{}", sha256(data))).await;
    g.assert_status(200);
    assert_eq!(g.h("content-length"), data.len().to_string());
    assert!(g.body == data, "blob content differs");
    let hex = hex_of(&sha256(data)).to_owned();
    let on_disk = std::fs::read(
        s.v2()
            .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
    )
    .expect("blob file");
    assert!(on_disk == data, "stored blob differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_monolithic_pushes_of_one_blob() {
    let s = Arc::new(TestServer::start(Options::default()).await);
    let data = Arc::new(content(110, 512 * 1024));
    let digest = sha256(&data);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (s, data, digest) = (s.clone(), data.clone(), digest.clone());
            tokio::spawn(async move {
                let r = s
                    .send(
                        s.request(
                            Method::POST,
                            &format!("/v2/a/blobs/uploads/?digest={digest}"),
                        )
                        .body(data.to_vec()),
                    )
                    .await;
                r.assert_status(201);
                assert_eq!(r.h("docker-content-digest"), digest);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert_blob(&s, "a", &data).await;
    no_leftovers(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_chunked_pushes_of_one_blob() {
    let s = Arc::new(TestServer::start(Options::default()).await);
    let data = Arc::new(content(111, 300 * 1024));
    let digest = sha256(&data);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (s, data, digest) = (s.clone(), data.clone(), digest.clone());
            tokio::spawn(async move {
                let got = s.push_blob_chunked("a", &data, 64 * 1024).await;
                assert_eq!(got, digest);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert_blob(&s, "a", &data).await;
    no_leftovers(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_of_one_manifest_and_tag() {
    let s = Arc::new(TestServer::start(Options::default()).await);
    let image = s.push_image("a", "seed", 112).await;
    let manifest = Arc::new(image.manifest.clone());
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (s, manifest, digest) = (s.clone(), manifest.clone(), image.digest.clone());
            tokio::spawn(async move {
                // Everyone pushes the same tag; half also push a tag of their own.
                let got = s
                    .put_manifest_ok("a", "latest", DOCKER_MANIFEST, &manifest)
                    .await;
                assert_eq!(got, digest);
                if i % 2 == 0 {
                    s.put_manifest_ok("a", &format!("t{i:02}"), DOCKER_MANIFEST, &manifest)
                        .await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let g = s.get("/v2/a/manifests/latest").await;
    g.assert_status(200);
    assert_eq!(g.body, image.manifest);
    assert_eq!(g.h("docker-content-digest"), image.digest);
    let mut want: Vec<String> = (0..TASKS).step_by(2).map(|i| format!("t{i:02}")).collect();
    want.extend(["latest".to_owned(), "seed".to_owned()]);
    want.sort();
    assert_eq!(s.tags("a").await, want);
    no_leftovers(&s);
}

/// Pushes of the same blob racing through monolithic and chunked uploads into several
/// repositories at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mixed_pushes_into_several_repositories() {
    let s = Arc::new(TestServer::start(Options::default()).await);
    let data = Arc::new(content(113, 200 * 1024));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (s, data) = (s.clone(), data.clone());
            tokio::spawn(async move {
                let repo = format!("r{}", i % 4);
                if i % 2 == 0 {
                    s.push_blob(&repo, &data).await;
                } else {
                    s.push_blob_chunked(&repo, &data, 50 * 1024).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    for i in 0..4 {
        assert_blob(&s, &format!("r{i}"), &data).await;
    }
    no_leftovers(&s);
}

/// Pushes and deletes of one manifest racing: whatever order wins, a listed tag always
/// resolves to a manifest that can be fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_push_and_delete_of_one_manifest() {
    let s = Arc::new(TestServer::start(delete_enabled()).await);
    let image = s.push_image("a", "latest", 114).await;
    let manifest = Arc::new(image.manifest.clone());
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (s, manifest, digest) = (s.clone(), manifest.clone(), image.digest.clone());
            tokio::spawn(async move {
                for _ in 0..3 {
                    if i % 2 == 0 {
                        let r = s
                            .put_manifest("a", "latest", Some(DOCKER_MANIFEST), &manifest)
                            .await;
                        r.assert_status(201);
                    } else {
                        let r = s.delete(&format!("/v2/a/manifests/{digest}")).await;
                        assert!([202, 404].contains(&r.status.as_u16()), "{}", r.describe());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let tags = s.tags("a").await;
    let g = s.get("/v2/a/manifests/latest").await;
    if tags.contains(&"latest".to_owned()) {
        g.assert_status(200);
        assert_eq!(g.body, image.manifest);
    } else {
        g.assert_error(404, "MANIFEST_UNKNOWN");
    }
    // Whatever happened, one more push makes it whole again.
    s.put_manifest_ok("a", "latest", DOCKER_MANIFEST, &image.manifest)
        .await;
    assert_eq!(s.get("/v2/a/manifests/latest").await.body, image.manifest);
    no_leftovers(&s);
}
