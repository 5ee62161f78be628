//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n`/`last` pagination.

use berth_registry::Options;
use berth_server::HttpOptions;
use serde_json::json;

use crate::common::*;

/// Tags all pointing at one manifest.
async fn tag_many(s: &TestServer, repo: &str, tags: &[&str]) {
    let image = s.push_image(repo, tags[0], 80).await;
    for tag in &tags[1..] {
        s.put_manifest_ok(repo, tag, DOCKER_MANIFEST, &image.manifest)
            .await;
    }
}

/// Pushes one small manifest into each repository.
async fn repos(s: &TestServer, names: &[&str]) {
    let config = br#"{"os":"linux"}"#;
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [],
    }));
    for name in names {
        s.push_blob(name, config).await;
        s.put_manifest_ok(name, "latest", OCI_MANIFEST, &body).await;
    }
}

#[tokio::test]
async fn tags_are_listed_in_lexical_order() {
    let s = TestServer::start(Options::default()).await;
    tag_many(
        &s,
        "a/b",
        &["latest", "v2", "1.0", "A", "_x", "10", "9", "v10"],
    )
    .await;
    let r = s.get("/v2/a/b/tags/list").await;
    r.assert_status(200);
    assert!(r.h("content-type").starts_with("application/json"));
    assert!(r.header("link").is_none());
    assert_eq!(
        r.json(),
        json!({ "name": "a/b", "tags": ["1.0", "10", "9", "A", "_x", "latest", "v10", "v2"] })
    );
}

#[tokio::test]
async fn tags_pagination_with_n_last_and_link() {
    let s = TestServer::start(Options::default()).await;
    tag_many(&s, "a", &["e", "c", "a", "d", "b"]).await;

    let r = s.get("/v2/a/tags/list?n=2").await;
    r.assert_status(200);
    assert_eq!(r.json()["tags"], json!(["a", "b"]));
    assert_eq!(
        r.h("link"),
        "</v2/a/tags/list?last=b&n=2>; rel=\"next\"",
        "{}",
        r.describe()
    );
    // Following the links walks the rest.
    let next = r.next_link().expect("link");
    let r = s.get(&next).await;
    assert_eq!(r.json()["tags"], json!(["c", "d"]));
    assert_eq!(r.next_link().as_deref(), Some("/v2/a/tags/list?last=d&n=2"));
    let r = s.get(&r.next_link().expect("link")).await;
    assert_eq!(r.json()["tags"], json!(["e"]));
    assert!(r.header("link").is_none(), "{}", r.describe());

    let cases: &[(&str, serde_json::Value, bool)] = &[
        ("last=b", json!(["c", "d", "e"]), false),
        ("last=bb", json!(["c", "d", "e"]), false),
        ("last=e", json!([]), false),
        ("n=5", json!(["a", "b", "c", "d", "e"]), false),
        ("n=10", json!(["a", "b", "c", "d", "e"]), false),
        ("n=1&last=c", json!(["d"]), true),
        ("n=2&last=c", json!(["d", "e"]), false),
    ];
    for (query, want, link) in cases {
        let r = s.get(&format!("/v2/a/tags/list?{query}")).await;
        r.assert_status(200);
        assert_eq!(&r.json()["tags"], want, "{query}");
        assert_eq!(
            r.header("link").is_some(),
            *link,
            "{query}: {}",
            r.describe()
        );
    }
}

#[tokio::test]
async fn tags_of_unknown_repository_is_name_unknown() {
    let s = TestServer::start(Options::default()).await;
    s.push_image("a", "latest", 81).await;
    for repo in ["nosuch", "a/b", "b/a"] {
        s.get(&format!("/v2/{repo}/tags/list"))
            .await
            .assert_error(404, "NAME_UNKNOWN");
    }
}

#[tokio::test]
async fn tags_with_bad_n_is_pagination_number_invalid() {
    let s = TestServer::start(Options::default()).await;
    s.push_image("a", "latest", 82).await;
    for n in ["abc", "-1", "1.5", "99999999999999999999999"] {
        s.get(&format!("/v2/a/tags/list?n={n}"))
            .await
            .assert_error(400, "PAGINATION_NUMBER_INVALID");
    }
}

#[tokio::test]
async fn catalog_lists_nested_names_sorted() {
    let s = TestServer::start(Options::default()).await;
    let r = s.get("/v2/_catalog").await;
    r.assert_status(200);
    assert_eq!(r.json(), json!({ "repositories": [] }));

    repos(&s, &["b", "a/b/c", "a", "c/d", "a/b"]).await;
    // Distribution lists a repository once it links a blob (`_layers`), manifest or not; an
    // upload session alone does not make one.
    s.push_blob("e/onlyblobs", b"x").await;
    s.start_upload("f/onlyupload").await;
    let r = s.get("/v2/_catalog").await;
    r.assert_status(200);
    assert!(r.h("content-type").starts_with("application/json"));
    assert_eq!(
        r.json(),
        json!({ "repositories": ["a", "a/b", "a/b/c", "b", "c/d", "e/onlyblobs"] })
    );
    assert!(r.header("link").is_none());
}

#[tokio::test]
async fn catalog_pagination_with_n_last_and_link() {
    let s = TestServer::start(Options::default()).await;
    repos(&s, &["a", "a/b", "a/b/c", "b", "c/d"]).await;

    let r = s.get("/v2/_catalog?n=2").await;
    r.assert_status(200);
    assert_eq!(r.json()["repositories"], json!(["a", "a/b"]));
    assert_eq!(
        r.h("link"),
        "</v2/_catalog?last=a%2Fb&n=2>; rel=\"next\"",
        "{}",
        r.describe()
    );
    let r = s.get(&r.next_link().expect("link")).await;
    assert_eq!(r.json()["repositories"], json!(["a/b/c", "b"]));
    let r = s.get(&r.next_link().expect("link")).await;
    assert_eq!(r.json()["repositories"], json!(["c/d"]));
    assert!(r.header("link").is_none(), "{}", r.describe());

    let r = s.get("/v2/_catalog?last=a/b").await;
    assert_eq!(r.json()["repositories"], json!(["a/b/c", "b", "c/d"]));
    let r = s.get("/v2/_catalog?n=1&last=b").await;
    assert_eq!(r.json()["repositories"], json!(["c/d"]));
    assert!(r.header("link").is_none());
}

#[tokio::test]
async fn catalog_page_size_is_bounded_by_max_entries() {
    let s = TestServer::start_with(
        Options::default(),
        HttpOptions {
            catalog_max_entries: 3,
            ..HttpOptions::default()
        },
    )
    .await;
    repos(&s, &["a", "b", "c", "d"]).await;
    s.get("/v2/_catalog?n=4")
        .await
        .assert_error(400, "PAGINATION_NUMBER_INVALID");
    s.get("/v2/_catalog?n=abc")
        .await
        .assert_error(400, "PAGINATION_NUMBER_INVALID");
    let r = s.get("/v2/_catalog?n=3").await;
    r.assert_status(200);
    assert_eq!(r.json()["repositories"], json!(["a", "b", "c"]));
    // Without n, a page is max entries long and links to the next.
    let r = s.get("/v2/_catalog").await;
    r.assert_status(200);
    assert_eq!(r.json()["repositories"], json!(["a", "b", "c"]));
    assert_eq!(r.next_link().as_deref(), Some("/v2/_catalog?last=c&n=3"));
    let r = s.get(&r.next_link().expect("link")).await;
    assert_eq!(r.json()["repositories"], json!(["d"]));
}

/// Another process (a second berth, or Distribution) changing the tree is seen by the next
/// listing once the 1 s cache bound has passed — including after the listings have been cached
/// with directory stamps, whose re-validation must notice a repository or tag that appears or
/// disappears on disk without this server's knowledge.
#[tokio::test]
async fn listings_see_changes_made_by_another_process() {
    let s = TestServer::start(Options::default()).await;
    repos(&s, &["one", "nest/two"]).await;
    tag_many(&s, "one", &["a", "b"]).await;
    let v2 = s.v2().join("repositories");
    async fn catalog(s: &TestServer) -> serde_json::Value {
        s.get("/v2/_catalog").await.json()["repositories"].clone()
    }
    async fn tags(s: &TestServer) -> serde_json::Value {
        s.get("/v2/one/tags/list").await.json()["tags"].clone()
    }
    // Let the directories settle so the walks below are stamped, then cache them.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(catalog(&s).await, json!(["nest/two", "one"]));
    assert_eq!(tags(&s).await, json!(["a", "b", "latest"]));
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        catalog(&s).await,
        json!(["nest/two", "one"]),
        "re-validated"
    );
    assert_eq!(tags(&s).await, json!(["a", "b", "latest"]), "re-validated");

    // Behind the server's back: a nested repository, a tag, a removed tag.
    std::fs::create_dir_all(v2.join("nest/two/deeper/_layers")).unwrap();
    let tag_dir = v2.join("one/_manifests/tags");
    std::fs::create_dir_all(tag_dir.join("c/current")).unwrap();
    std::fs::copy(
        tag_dir.join("a/current/link"),
        tag_dir.join("c/current/link"),
    )
    .unwrap();
    std::fs::remove_dir_all(tag_dir.join("b")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        catalog(&s).await,
        json!(["nest/two", "nest/two/deeper", "one"])
    );
    assert_eq!(tags(&s).await, json!(["a", "c", "latest"]));

    // A repository removed behind its back disappears too.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        catalog(&s).await,
        json!(["nest/two", "nest/two/deeper", "one"])
    );
    std::fs::remove_dir_all(v2.join("nest/two/deeper")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(catalog(&s).await, json!(["nest/two", "one"]));
}
