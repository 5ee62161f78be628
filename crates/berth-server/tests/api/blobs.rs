//! `GET`, `HEAD` and `DELETE /v2/<name>/blobs/<digest>`, ranges included.

use berth_registry::Options;
use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn get_and_head_a_blob() {
    let s = TestServer::start(Options::default()).await;
    let data = content(30, 100_000);
    let digest = s.push_blob("a", &data).await;
    let path = format!("/v2/a/blobs/{digest}");

    let h = s.head(&path).await;
    h.assert_status(200);
    assert_eq!(h.h("content-length"), data.len().to_string());
    assert_eq!(h.h("docker-content-digest"), digest);
    assert_eq!(h.h("accept-ranges"), "bytes");
    assert!(h.body.is_empty());

    let g = s.get(&path).await;
    g.assert_status(200);
    assert_eq!(g.h("content-length"), data.len().to_string());
    assert_eq!(g.h("docker-content-digest"), digest);
    assert_eq!(g.h("accept-ranges"), "bytes");
    assert_eq!(g.h("content-type"), "application/octet-stream");
    assert_eq!(sha256(&g.body), digest);
    assert_eq!(g.body, data);
}

#[tokio::test]
async fn range_requests_are_206_with_content_range() {
    let s = TestServer::start(Options::default()).await;
    let data = content(31, 100);
    let digest = s.push_blob("a", &data).await;
    let path = format!("/v2/a/blobs/{digest}");
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=2-5", 2, 5),
        ("bytes=-3", 97, 99),
        ("bytes=90-", 90, 99),
        ("bytes=0-0", 0, 0),
        ("bytes=99-99", 99, 99),
        ("bytes=95-1000", 95, 99),
        ("bytes=-1000", 0, 99),
    ];
    for &(range, start, end) in cases {
        let r = s
            .send(s.request(Method::GET, &path).header("range", range))
            .await;
        r.assert_status(206);
        assert_eq!(
            r.h("content-range"),
            format!("bytes {start}-{end}/100"),
            "{range}"
        );
        assert_eq!(
            r.h("content-length"),
            (end - start + 1).to_string(),
            "{range}"
        );
        assert_eq!(r.h("docker-content-digest"), digest, "{range}");
        assert_eq!(&r.body[..], &data[start..=end], "{range}");
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416_with_the_size() {
    let s = TestServer::start(Options::default()).await;
    let data = content(32, 100);
    let digest = s.push_blob("a", &data).await;
    let path = format!("/v2/a/blobs/{digest}");
    for range in ["bytes=100-", "bytes=1000-2000", "bytes=-0"] {
        let r = s
            .send(s.request(Method::GET, &path).header("range", range))
            .await;
        r.assert_status(416);
        assert_eq!(r.h("content-range"), "bytes */100", "{range}");
    }
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let s = TestServer::start(Options::default()).await;
    s.push_blob("a", b"something").await;
    let path = format!("/v2/a/blobs/{}", sha256(b"nothing"));
    s.get(&path).await.assert_error(404, "BLOB_UNKNOWN");
    let h = s.head(&path).await;
    h.assert_status(404);
    assert!(h.body.is_empty());
    // In a repository that does not exist at all.
    s.get(&format!("/v2/nosuch/blobs/{}", sha256(b"nothing")))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn a_blob_is_only_served_by_repositories_that_link_it() {
    let s = TestServer::start(Options::default()).await;
    let digest = s.push_blob("a", b"only in a").await;
    s.push_blob("b", b"b has another").await;
    s.get(&format!("/v2/a/blobs/{digest}"))
        .await
        .assert_status(200);
    s.get(&format!("/v2/b/blobs/{digest}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    s.head(&format!("/v2/b/blobs/{digest}"))
        .await
        .assert_status(404);
    s.get(&format!("/v2/a/b/blobs/{digest}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn delete_blob_is_405_when_deletes_are_disabled() {
    let s = TestServer::start(Options::default()).await;
    let digest = s.push_blob("a", b"keep me").await;
    s.delete(&format!("/v2/a/blobs/{digest}"))
        .await
        .assert_error(405, "UNSUPPORTED");
    s.get(&format!("/v2/a/blobs/{digest}"))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn delete_blob_unlinks_it_when_enabled() {
    let s = TestServer::start(delete_enabled()).await;
    let data = b"delete me".to_vec();
    let digest = s.push_blob("a", &data).await;
    s.push_blob("b", &data).await;
    let path = format!("/v2/a/blobs/{digest}");
    let r = s.delete(&path).await;
    r.assert_status(202);
    s.get(&path).await.assert_error(404, "BLOB_UNKNOWN");
    s.head(&path).await.assert_status(404);
    s.delete(&path).await.assert_error(404, "BLOB_UNKNOWN");
    // Only repository a's link went.
    assert_eq!(s.get(&format!("/v2/b/blobs/{digest}")).await.body, data);
}

/// Range forms berth does not honour are answered with the whole blob, as RFC 9110 allows.
#[tokio::test]
async fn unusable_range_headers_get_the_whole_blob() {
    let s = TestServer::start(Options::default()).await;
    let data = content(33, 100);
    let digest = s.push_blob("a", &data).await;
    let path = format!("/v2/a/blobs/{digest}");
    for range in ["bytes=0-1,5-6", "bytes=5-1", "items=0-1", "bytes=x-y"] {
        let r = s
            .send(s.request(Method::GET, &path).header("range", range))
            .await;
        r.assert_status(200);
        assert!(r.header("content-range").is_none(), "{range}");
        assert_eq!(r.body, data, "{range}");
    }
}

/// A link whose content was removed from the blob store (say, by garbage collection).
#[tokio::test]
async fn a_link_without_content_is_blob_unknown() {
    let s = TestServer::start(Options::default()).await;
    let digest = s.push_blob("a", b"soon gone").await;
    let hex = hex_of(&digest).to_owned();
    std::fs::remove_file(
        s.v2()
            .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
    )
    .expect("remove");
    let path = format!("/v2/a/blobs/{digest}");
    s.get(&path).await.assert_error(404, "BLOB_UNKNOWN");
    s.head(&path).await.assert_status(404);
    // Nor can a mount or a manifest use it.
    s.post(&format!("/v2/b/blobs/uploads/?mount={digest}&from=a"))
        .await
        .assert_status(202);
}
