//! Blob upload sessions: POST, PATCH (with and without Content-Range), PUT, GET, DELETE.

use berth_registry::Options;
use reqwest::Method;

use crate::common::*;

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_digit() || ('a'..='f').contains(&c)
            }
        })
}

#[tokio::test]
async fn post_starts_a_session() {
    let s = TestServer::start(Options::default()).await;
    // With and without the trailing slash.
    for path in ["/v2/a/b/blobs/uploads/", "/v2/a/b/blobs/uploads"] {
        let r = s.post(path).await;
        r.assert_status(202);
        let uuid = r.h("docker-upload-uuid");
        assert!(is_uuid(uuid), "{}", r.describe());
        assert_eq!(
            r.h("location"),
            format!("{}/v2/a/b/blobs/uploads/{uuid}", s.base)
        );
        assert_eq!(r.h("range"), "0-0");
        assert_eq!(r.h("content-length"), "0");
        assert!(r.body.is_empty());
    }
}

#[tokio::test]
async fn monolithic_post_with_digest_creates_the_blob() {
    let s = TestServer::start(Options::default()).await;
    let data = content(1, 3000);
    let digest = sha256(&data);
    let r = s
        .send(
            s.request(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .body(data.clone()),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.h("location"), format!("{}/v2/a/blobs/{digest}", s.base));
    assert_eq!(r.h("docker-content-digest"), digest);
    assert_eq!(r.h("content-length"), "0");
    let g = s.get(&format!("/v2/a/blobs/{digest}")).await;
    g.assert_status(200);
    assert_eq!(g.body, data);
}

#[tokio::test]
async fn monolithic_post_with_wrong_digest_is_refused_and_links_nothing() {
    let s = TestServer::start(Options::default()).await;
    let data = content(2, 100);
    let claimed = sha256(b"something else");
    let r = s
        .send(
            s.request(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={claimed}"),
            )
            .body(data.clone()),
        )
        .await;
    r.assert_error(400, "DIGEST_INVALID");
    for d in [claimed, sha256(&data)] {
        s.head(&format!("/v2/a/blobs/{d}")).await.assert_status(404);
    }
    assert!(
        !s.files().iter().any(|f| f.contains("/blobs/")),
        "{:?}",
        s.files()
    );
}

#[tokio::test]
async fn monolithic_post_with_malformed_digest_is_digest_invalid() {
    let s = TestServer::start(Options::default()).await;
    for bad in ["sha256:abc", "nope", "sha256:", "SHA256:abc"] {
        let r = s
            .send(
                s.request(Method::POST, &format!("/v2/a/blobs/uploads/?digest={bad}"))
                    .body("x"),
            )
            .await;
        r.assert_error(400, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn chunked_patches_then_put_without_body() {
    let s = TestServer::start(Options::default()).await;
    let data = content(3, 20);
    let digest = sha256(&data);
    let loc = s.start_upload("a").await;
    let uuid = loc.rsplit('/').next().expect("uuid").to_owned();

    let r = s.patch_chunk(&loc, 0, &data[..10]).await;
    r.assert_status(202);
    assert_eq!(r.h("range"), "0-9");
    assert_eq!(r.h("docker-upload-uuid"), uuid);
    assert_eq!(r.h("location"), loc);
    assert_eq!(r.h("content-length"), "0");

    let r = s.patch_chunk(&loc, 10, &data[10..]).await;
    r.assert_status(202);
    assert_eq!(r.h("range"), "0-19");
    assert_eq!(r.h("docker-upload-uuid"), uuid);

    let r = s.finish_upload(&loc, &digest, b"").await;
    r.assert_status(201);
    assert_eq!(r.h("location"), format!("{}/v2/a/blobs/{digest}", s.base));
    assert_eq!(r.h("docker-content-digest"), digest);
    assert_eq!(r.h("content-length"), "0");

    let g = s.get(&format!("/v2/a/blobs/{digest}")).await;
    g.assert_status(200);
    assert_eq!(g.body, data);
    // The session is over.
    s.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn content_range_forms_with_unit_are_accepted() {
    let s = TestServer::start(Options::default()).await;
    let data = content(4, 30);
    let loc = s.start_upload("a").await;
    for (range, part) in [
        ("0-9", &data[..10]),
        ("bytes 10-19/*", &data[10..20]),
        ("bytes 20-29/30", &data[20..]),
    ] {
        let r = s
            .send(
                s.request(Method::PATCH, &loc)
                    .header("content-range", range)
                    .body(part.to_vec()),
            )
            .await;
        r.assert_status(202);
    }
    s.finish_upload(&loc, &sha256(&data), b"")
        .await
        .assert_status(201);
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let s = TestServer::start(Options::default()).await;
    let data = content(5, 300_000);
    let half = data.len() / 2;
    let loc = s.start_upload("a").await;
    let mut offset = 0;
    for part in [&data[..half], &data[half..]] {
        // Several body chunks, no Content-Length: chunked transfer encoding.
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = part
            .chunks(16 * 1024 + 7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
        let r = s
            .send(
                s.request(Method::PATCH, &loc)
                    .header("content-type", "application/octet-stream")
                    .body(body),
            )
            .await;
        r.assert_status(202);
        offset += part.len();
        assert_eq!(r.h("range"), format!("0-{}", offset - 1));
        assert_eq!(r.h("location"), loc);
    }
    let digest = sha256(&data);
    s.finish_upload(&loc, &digest, b"").await.assert_status(201);
    let g = s.get(&format!("/v2/a/blobs/{digest}")).await;
    assert_eq!(g.h("content-length"), data.len().to_string());
    assert_eq!(sha256(&g.body), digest);
}

#[tokio::test]
async fn put_with_a_final_body() {
    let s = TestServer::start(Options::default()).await;
    let data = content(6, 50);
    let digest = sha256(&data);
    // PATCH part, PUT the rest.
    let loc = s.start_upload("a").await;
    s.patch_chunk(&loc, 0, &data[..20]).await.assert_status(202);
    let r = s.finish_upload(&loc, &digest, &data[20..]).await;
    r.assert_status(201);
    assert_eq!(r.h("docker-content-digest"), digest);
    assert_eq!(s.get(&format!("/v2/a/blobs/{digest}")).await.body, data);

    // POST then a single PUT carrying everything.
    let data2 = content(7, 50);
    let digest2 = sha256(&data2);
    let loc = s.start_upload("a").await;
    s.finish_upload(&loc, &digest2, &data2)
        .await
        .assert_status(201);
    assert_eq!(s.get(&format!("/v2/a/blobs/{digest2}")).await.body, data2);
}

#[tokio::test]
async fn chunk_not_at_the_current_size_is_416() {
    let s = TestServer::start(Options::default()).await;
    let data = content(8, 20);
    let loc = s.start_upload("a").await;
    let uuid = loc.rsplit('/').next().expect("uuid").to_owned();

    // On an empty session, a first chunk must start at 0.
    let r = s
        .send(
            s.request(Method::PATCH, &loc)
                .header("content-range", "1-10")
                .body(data[..10].to_vec()),
        )
        .await;
    r.assert_error(416, "RANGE_INVALID");
    assert_eq!(r.h("range"), "0-0");

    s.patch_chunk(&loc, 0, &data[..10]).await.assert_status(202);
    let cases = [
        ("gap", "20-29"),
        ("repeated chunk", "0-9"),
        ("overlap", "5-14"),
        ("one past", "11-20"),
        ("malformed", "ten-twenty"),
    ];
    for (what, range) in cases {
        let r = s
            .send(
                s.request(Method::PATCH, &loc)
                    .header("content-range", range)
                    .body(data[10..].to_vec()),
            )
            .await;
        assert_eq!(r.status.as_u16(), 416, "{what}: {}", r.describe());
        r.assert_error(416, "RANGE_INVALID");
        // Where the session stands, so the client can resume.
        assert_eq!(r.h("range"), "0-9", "{what}");
        assert_eq!(r.h("docker-upload-uuid"), uuid, "{what}");
        assert_eq!(r.h("location"), loc, "{what}");
        // Nothing was appended.
        let st = s.get(&loc).await;
        st.assert_status(204);
        assert_eq!(st.h("range"), "0-9", "{what}");
    }
    // The session is still good.
    s.patch_chunk(&loc, 10, &data[10..])
        .await
        .assert_status(202);
    s.finish_upload(&loc, &sha256(&data), b"")
        .await
        .assert_status(201);
    assert_eq!(
        s.get(&format!("/v2/a/blobs/{}", sha256(&data))).await.body,
        data
    );
}

/// Distribution refuses a chunk whose Content-Length disagrees with its Content-Range
/// (`SIZE_INVALID`, 400), so the offsets a client believes in stay true.
#[tokio::test]
async fn content_range_disagreeing_with_content_length_is_size_invalid() {
    let s = TestServer::start(Options::default()).await;
    let loc = s.start_upload("a").await;
    let r = s
        .send(
            s.request(Method::PATCH, &loc)
                .header("content-range", "0-9")
                .body(vec![7u8; 5]),
        )
        .await;
    r.assert_error(400, "SIZE_INVALID");
}

#[tokio::test]
async fn get_session_reports_progress() {
    let s = TestServer::start(Options::default()).await;
    let loc = s.start_upload("a").await;
    let uuid = loc.rsplit('/').next().expect("uuid").to_owned();
    let r = s.get(&loc).await;
    r.assert_status(204);
    assert_eq!(r.h("range"), "0-0");
    assert_eq!(r.h("location"), loc);
    assert_eq!(r.h("docker-upload-uuid"), uuid);
    assert!(r.body.is_empty());

    s.patch_chunk(&loc, 0, &[1u8; 7]).await.assert_status(202);
    let r = s.get(&loc).await;
    r.assert_status(204);
    assert_eq!(r.h("range"), "0-6");
    assert_eq!(r.h("location"), loc);
    assert_eq!(r.h("docker-upload-uuid"), uuid);
}

#[tokio::test]
async fn delete_session_cancels_it() {
    let s = TestServer::start(Options::default()).await;
    let loc = s.start_upload("a").await;
    let uuid = loc.rsplit('/').next().expect("uuid").to_owned();
    s.patch_chunk(&loc, 0, b"abc").await.assert_status(202);
    let r = s.delete(&loc).await;
    r.assert_status(204);
    assert!(r.body.is_empty());

    s.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.delete(&loc)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.patch_chunk(&loc, 3, b"def")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.finish_upload(&loc, &sha256(b"abc"), b"")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    assert!(
        !s.files().iter().any(|f| f.contains(&uuid)),
        "{:?}",
        s.files()
    );
}

#[tokio::test]
async fn put_with_wrong_digest_is_refused_and_links_nothing() {
    let s = TestServer::start(Options::default()).await;
    let data = content(9, 40);
    let claimed = sha256(b"not the content");
    let loc = s.start_upload("a").await;
    s.patch_chunk(&loc, 0, &data).await.assert_status(202);
    let r = s.finish_upload(&loc, &claimed, b"").await;
    r.assert_error(400, "DIGEST_INVALID");
    for d in [&claimed, &sha256(&data)] {
        s.head(&format!("/v2/a/blobs/{d}")).await.assert_status(404);
        s.get(&format!("/v2/a/blobs/{d}"))
            .await
            .assert_error(404, "BLOB_UNKNOWN");
    }
    let files = s.files();
    assert!(!files.iter().any(|f| f.contains("/_layers/")), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("/blobs/")), "{files:?}");
    // As in Distribution, a failed finish ends the session.
    s.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn put_without_or_with_malformed_digest_is_digest_invalid() {
    let s = TestServer::start(Options::default()).await;
    let loc = s.start_upload("a").await;
    s.patch_chunk(&loc, 0, b"hello").await.assert_status(202);
    let r = s.send(s.request(Method::PUT, &loc)).await;
    r.assert_error(400, "DIGEST_INVALID");
    for bad in ["sha256:abc", "hello", "sha256:"] {
        let loc = s.start_upload("a").await;
        let r = s
            .send(s.request(Method::PUT, &format!("{loc}?digest={bad}")))
            .await;
        r.assert_error(400, "DIGEST_INVALID");
    }
    let files = s.files();
    assert!(!files.iter().any(|f| f.contains("/_layers/")), "{files:?}");
}

#[tokio::test]
async fn unknown_or_malformed_upload_id_is_blob_upload_unknown() {
    let s = TestServer::start(Options::default()).await;
    // The repository exists and has a live session, so only the id is wrong.
    let live = s.start_upload("a").await;
    let live_id = live.rsplit('/').next().expect("uuid").to_owned();
    let d = sha256(b"x");
    let ids = [
        "3f2b8a1e-8c4f-4a53-9d1e-2b6f7c9a0e11".to_owned(),
        "not-a-uuid".to_owned(),
        live_id.to_uppercase(),
        live_id.replace('-', ""),
        format!("{live_id}0"),
        "_uploads".to_owned(),
    ];
    for id in &ids {
        let path = format!("/v2/a/blobs/uploads/{id}");
        for (method, target) in [
            (Method::GET, path.clone()),
            (Method::PATCH, path.clone()),
            (Method::PUT, format!("{path}?digest={d}")),
            (Method::DELETE, path.clone()),
        ] {
            let r = s.send(s.request(method, &target).body("x")).await;
            r.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
        }
    }
    s.get(&live).await.assert_status(204);
}

#[tokio::test]
async fn a_session_belongs_to_its_repository() {
    let s = TestServer::start(Options::default()).await;
    let loc = s.start_upload("a").await;
    let other = s.path_of(&loc).replace("/v2/a/", "/v2/b/");
    s.get(&other).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.patch_chunk(&other, 0, b"x")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.finish_upload(&other, &sha256(b""), b"")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.delete(&other)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.get(&loc).await.assert_status(204);
}

#[tokio::test]
async fn sha512_digests_work_monolithic_and_chunked() {
    let s = TestServer::start(Options::default()).await;
    let data = content(10, 5000);
    let digest = sha512(&data);

    let r = s
        .send(
            s.request(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={digest}"),
            )
            .body(data.clone()),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.h("docker-content-digest"), digest);
    assert_eq!(r.h("location"), format!("{}/v2/a/blobs/{digest}", s.base));

    let data2 = content(11, 5000);
    let digest2 = sha512(&data2);
    let loc = s.start_upload("a").await;
    s.patch_chunk(&loc, 0, &data2[..2500])
        .await
        .assert_status(202);
    s.patch_chunk(&loc, 2500, &data2[2500..])
        .await
        .assert_status(202);
    let r = s.finish_upload(&loc, &digest2, b"").await;
    r.assert_status(201);
    assert_eq!(r.h("docker-content-digest"), digest2);

    for (d, want) in [(&digest, &data), (&digest2, &data2)] {
        let g = s.get(&format!("/v2/a/blobs/{d}")).await;
        g.assert_status(200);
        assert_eq!(g.h("docker-content-digest"), d.as_str());
        assert_eq!(&g.body[..], &want[..]);
        let hex = hex_of(d);
        assert!(
            s.v2()
                .join(format!("blobs/sha512/{}/{hex}/data", &hex[..2]))
                .is_file()
        );
    }
    // A sha512 claim for sha256-hashed content still has to match.
    let r = s
        .send(
            s.request(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={}", sha512(b"other")),
            )
            .body(data.clone()),
        )
        .await;
    r.assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn empty_blob() {
    let s = TestServer::start(Options::default()).await;
    let digest = s.push_blob("a", b"").await;
    let r = s.get(&format!("/v2/a/blobs/{digest}")).await;
    r.assert_status(200);
    assert_eq!(r.h("content-length"), "0");
    assert!(r.body.is_empty());
    let r = s
        .send(
            s.request(Method::GET, &format!("/v2/a/blobs/{digest}"))
                .header("range", "bytes=0-"),
        )
        .await;
    r.assert_status(416);
    assert_eq!(r.h("content-range"), "bytes */0");
}

/// Session state lives in storage: two servers over one root (as behind a load balancer)
/// can take turns serving one upload, and the digest is still checked over every byte.
#[tokio::test]
async fn an_upload_can_move_between_servers_sharing_storage() {
    let a = TestServer::start(Options::default()).await;
    let b = TestServer::start_on(
        a.dir(),
        Options::default(),
        berth_server::HttpOptions::default(),
    )
    .await;
    let data = content(12, 30_000);
    let loc = a.path_of(&a.start_upload("r").await);
    a.patch_chunk(&loc, 0, &data[..10_000])
        .await
        .assert_status(202);
    b.patch_chunk(&loc, 10_000, &data[10_000..20_000])
        .await
        .assert_status(202);
    // a's cached hash state is stale now; it must not be trusted.
    a.patch_chunk(&loc, 20_000, &data[20_000..])
        .await
        .assert_status(202);
    let st = b.get(&loc).await;
    assert_eq!(st.h("range"), "0-29999");
    // A wrong digest is still caught after the hand-overs...
    let loc2 = a.path_of(&a.start_upload("r").await);
    a.patch_chunk(&loc2, 0, &data[..100])
        .await
        .assert_status(202);
    b.patch_chunk(&loc2, 100, &data[100..200])
        .await
        .assert_status(202);
    a.finish_upload(&loc2, &sha256(&data[..100]), b"")
        .await
        .assert_error(400, "DIGEST_INVALID");
    // ...and the right one accepted.
    let r = a.finish_upload(&loc, &sha256(&data), b"").await;
    r.assert_status(201);
    assert_eq!(
        b.get(&format!("/v2/r/blobs/{}", sha256(&data))).await.body,
        data
    );
}

#[tokio::test]
async fn streamed_bodies_on_monolithic_post_and_final_put() {
    let s = TestServer::start(Options::default()).await;
    let stream = |data: &[u8]| {
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = data
            .chunks(10_000)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
    };
    let data = content(13, 55_555);
    let digest = sha256(&data);
    let r = s
        .send(
            s.request(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={digest}"),
            )
            .body(stream(&data)),
        )
        .await;
    r.assert_status(201);
    assert_eq!(s.get(&format!("/v2/a/blobs/{digest}")).await.body, data);

    let data = content(14, 44_444);
    let digest = sha256(&data);
    let loc = s.start_upload("a").await;
    let r = s
        .send(
            s.request(Method::PUT, &format!("{loc}?digest={digest}"))
                .body(stream(&data)),
        )
        .await;
    r.assert_status(201);
    assert_eq!(s.get(&format!("/v2/a/blobs/{digest}")).await.body, data);
}
