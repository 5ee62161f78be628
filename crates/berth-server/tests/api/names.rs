//! Hostile names, digests, tags and references, sent verbatim over a raw socket (an URL
//! library would resolve `..` and `%2e%2e` before they reach the server). Every one must be
//! a 4xx with the right code, and nothing may be written anywhere.

use berth_registry::Options;

use crate::common::*;

fn assert_nothing_written(s: &TestServer) {
    // Storage is `<tempdir>/storage`: an escape by `..` would land in `<tempdir>`.
    let outside = entries_under(s.dir().path());
    assert!(
        outside.iter().all(|e| e.starts_with("storage/")),
        "written outside the storage root: {outside:?}"
    );
    let files = s.files();
    assert!(
        files.iter().all(|f| f.starts_with(&format!("{V2}/"))),
        "{files:?}"
    );
}

#[tokio::test]
async fn invalid_repository_names_are_name_invalid() {
    let s = TestServer::start(delete_enabled()).await;
    let before = s.files();
    let d = sha256(b"x");
    let uuid = "3f2b8a1e-8c4f-4a53-9d1e-2b6f7c9a0e11";
    let long = "a".repeat(256);
    let names = [
        "Upper",
        "a/Upper",
        "..",
        "a/..",
        "../a",
        "a/../b",
        "../../../../tmp",
        "a/./b",
        ".",
        "%2e%2e",
        "a/%2e%2e/b",
        "%2e%2e/%2e%2e",
        "a%2fb",
        "a//b",
        "a/",
        long.as_str(),
        "_uploads",
        "a/_uploads",
        "a/_layers",
        "a/_manifests",
        "-a",
        "a-",
        "a..b",
        "a%00b",
        "a b",
        "\u{e4}",
    ];
    for name in names {
        let enc = name.replace(' ', "%20").replace('\u{e4}', "%C3%A4");
        let requests: Vec<(&str, String, Vec<u8>)> = vec![
            ("GET", format!("/v2/{enc}/tags/list"), vec![]),
            ("GET", format!("/v2/{enc}/manifests/latest"), vec![]),
            ("HEAD", format!("/v2/{enc}/manifests/latest"), vec![]),
            ("PUT", format!("/v2/{enc}/manifests/latest"), b"{}".to_vec()),
            ("DELETE", format!("/v2/{enc}/manifests/{d}"), vec![]),
            ("GET", format!("/v2/{enc}/blobs/{d}"), vec![]),
            ("DELETE", format!("/v2/{enc}/blobs/{d}"), vec![]),
            ("POST", format!("/v2/{enc}/blobs/uploads/"), vec![]),
            (
                "POST",
                format!("/v2/{enc}/blobs/uploads/?digest={}", sha256(b"x")),
                b"x".to_vec(),
            ),
            (
                "PATCH",
                format!("/v2/{enc}/blobs/uploads/{uuid}"),
                b"x".to_vec(),
            ),
            (
                "PUT",
                format!("/v2/{enc}/blobs/uploads/{uuid}?digest={d}"),
                vec![],
            ),
            ("GET", format!("/v2/{enc}/referrers/{d}"), vec![]),
        ];
        for (method, target, body) in requests {
            let r = s.raw(method, &target, &[], &body).await;
            assert!(!r.status.is_server_error(), "{name:?}: {}", r.describe());
            if method == "HEAD" {
                r.assert_status(400);
            } else {
                r.assert_error(400, "NAME_INVALID");
            }
        }
    }
    assert_eq!(s.files(), before);
    assert_nothing_written(&s);
}

#[tokio::test]
async fn malformed_digests_are_digest_invalid() {
    let s = TestServer::start(delete_enabled()).await;
    s.push_blob("a", b"x").await;
    let hex = hex_of(&sha256(b"x")).to_owned();
    let bad = [
        "sha256:xyz".to_owned(),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{hex}0"),
        format!("SHA256:{hex}"),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha512:{hex}"),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
        "sha256:".to_owned(),
        ":abc".to_owned(),
        "sha256:..%2f..%2f..%2fetc%2fpasswd".to_owned(),
        "sha256:%2e%2e".to_owned(),
        "latest".to_owned(),
        "..".to_owned(),
    ];
    for digest in &bad {
        for (method, target) in [
            ("GET", format!("/v2/a/blobs/{digest}")),
            ("DELETE", format!("/v2/a/blobs/{digest}")),
            ("GET", format!("/v2/a/referrers/{digest}")),
            ("POST", format!("/v2/a/blobs/uploads/?digest={digest}")),
        ] {
            let r = s.raw(method, &target, &[], b"x").await;
            assert!(!r.status.is_server_error(), "{}", r.describe());
            r.assert_error(400, "DIGEST_INVALID");
        }
        let r = s
            .raw("HEAD", &format!("/v2/a/blobs/{digest}"), &[], b"")
            .await;
        r.assert_status(400);
    }
    // A digest-shaped manifest reference (it has a colon) must be a valid digest.
    for digest in bad.iter().filter(|d| d.contains(':')) {
        for method in ["GET", "PUT", "DELETE"] {
            let r = s
                .raw(method, &format!("/v2/a/manifests/{digest}"), &[], b"{}")
                .await;
            r.assert_error(400, "DIGEST_INVALID");
        }
    }
    // And the digest that completes an upload.
    let loc = s.path_of(&s.start_upload("a").await);
    for digest in &bad {
        let r = s
            .raw("PUT", &format!("{loc}?digest={digest}"), &[], b"")
            .await;
        r.assert_error(400, "DIGEST_INVALID");
    }
    assert_nothing_written(&s);
}

#[tokio::test]
async fn malformed_tags_are_tag_invalid() {
    let s = TestServer::start(delete_enabled()).await;
    let image = s.push_image("a", "latest", 90).await;
    let long = "t".repeat(129);
    for tag in [
        "..",
        ".x",
        ".INVALID",
        "-x",
        "%2e%2e",
        "a%2fb",
        "a%00",
        "t%C3%BC",
        long.as_str(),
        "",
    ] {
        for method in ["PUT", "DELETE"] {
            let r = s
                .raw(
                    method,
                    &format!("/v2/a/manifests/{tag}"),
                    &[("Content-Type", DOCKER_MANIFEST)],
                    &image.manifest,
                )
                .await;
            assert!(!r.status.is_server_error(), "{}", r.describe());
            r.assert_error(400, "TAG_INVALID");
        }
        // Reading by a reference that is neither a tag nor a digest finds nothing, as in
        // Distribution and the conformance suite (`.INVALID`).
        if !tag.is_empty() {
            let r = s
                .raw("GET", &format!("/v2/a/manifests/{tag}"), &[], b"")
                .await;
            r.assert_error(404, "MANIFEST_UNKNOWN");
            let r = s
                .raw("HEAD", &format!("/v2/a/manifests/{tag}"), &[], b"")
                .await;
            r.assert_status(404);
        }
    }
    // The longest valid tag is fine.
    s.put_manifest_ok("a", &"t".repeat(128), DOCKER_MANIFEST, &image.manifest)
        .await;
    assert_nothing_written(&s);
}

#[tokio::test]
async fn traversal_through_other_segments_stays_inside() {
    let s = TestServer::start(Options::default()).await;
    let d = sha256(b"x");
    for (method, target) in [
        ("GET", "/v2/../../../etc/passwd".to_owned()),
        ("GET", "/v2/a/blobs/uploads/..".to_owned()),
        ("PUT", format!("/v2/a/blobs/uploads/..?digest={d}")),
        ("PATCH", "/v2/a/blobs/uploads/%2e%2e".to_owned()),
        ("GET", "/v2/a/blobs/uploads/../../../../x".to_owned()),
        (
            "POST",
            "/v2/a/blobs/uploads/../../../../_uploads/".to_owned(),
        ),
        ("GET", "/v2/_catalog/..".to_owned()),
        ("GET", "/../v2/".to_owned()),
    ] {
        let r = s.raw(method, &target, &[], b"x").await;
        assert!(
            r.status.is_client_error(),
            "{method} {target}: {}",
            r.describe()
        );
    }
    assert_nothing_written(&s);
}

/// Names made of the API's own words route to the right endpoint, since the endpoint is
/// matched from the end of the path.
#[tokio::test]
async fn repository_names_made_of_endpoint_words() {
    let s = TestServer::start(Options::default()).await;
    let long = "a".repeat(255);
    let names = [
        "x/blobs",
        "x/manifests",
        "x/tags",
        "tags/list",
        "x/blobs/uploads",
        "x/referrers",
        "blobs/uploads/manifests",
        "v2",
        long.as_str(),
    ];
    for name in names {
        let image = s.push_image(name, "uploads", 91).await;
        assert_eq!(s.tags(name).await, ["uploads"], "{name}");
        let g = s.get(&format!("/v2/{name}/manifests/uploads")).await;
        assert_eq!(g.body, image.manifest, "{name}");
        let layer = s
            .get(&format!("/v2/{name}/blobs/{}", sha256(&image.layer)))
            .await;
        assert_eq!(layer.body, image.layer, "{name}");
        let loc = s.start_upload(name).await;
        assert!(
            loc.ends_with(&format!(
                "/v2/{name}/blobs/uploads/{}",
                loc.rsplit('/').next().expect("uuid")
            )),
            "{loc}"
        );
        s.get(&loc).await.assert_status(204);
        s.push_blob_chunked(name, &image.config, 40).await;
    }
    let c = s.get("/v2/_catalog").await;
    let mut want: Vec<&str> = names.to_vec();
    want.sort();
    assert_eq!(c.json()["repositories"], serde_json::json!(want));
}
