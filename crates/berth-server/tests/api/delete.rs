//! `DELETE /v2/<name>/manifests/<reference>`: by digest, by tag, and when switched off.

use berth_registry::Options;
use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn delete_by_digest_removes_the_revision_and_its_tags() {
    let s = TestServer::start(delete_enabled()).await;
    let image = s.push_image("a", "t1", 60).await;
    s.put_manifest_ok("a", "t2", DOCKER_MANIFEST, &image.manifest)
        .await;
    let other = s.push_image("a", "t3", 61).await;
    assert_eq!(s.tags("a").await, ["t1", "t2", "t3"]);

    let r = s.delete(&format!("/v2/a/manifests/{}", image.digest)).await;
    r.assert_status(202);

    for reference in [image.digest.as_str(), "t1", "t2"] {
        let path = format!("/v2/a/manifests/{reference}");
        s.get(&path).await.assert_error(404, "MANIFEST_UNKNOWN");
        s.head(&path).await.assert_status(404);
    }
    assert_eq!(s.tags("a").await, ["t3"]);
    // The other manifest is untouched.
    let g = s.get("/v2/a/manifests/t3").await;
    assert_eq!(g.h("docker-content-digest"), other.digest);
    // Deleting again: it is gone.
    s.delete(&format!("/v2/a/manifests/{}", image.digest))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let s = TestServer::start(delete_enabled()).await;
    let image = s.push_image("a", "t1", 62).await;
    s.put_manifest_ok("a", "t2", DOCKER_MANIFEST, &image.manifest)
        .await;
    let r = s.delete("/v2/a/manifests/t1").await;
    r.assert_status(202);
    s.get("/v2/a/manifests/t1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    let g = s.get(&format!("/v2/a/manifests/{}", image.digest)).await;
    g.assert_status(200);
    assert_eq!(g.body, image.manifest);
    assert_eq!(
        s.get("/v2/a/manifests/t2").await.h("docker-content-digest"),
        image.digest
    );
    assert_eq!(s.tags("a").await, ["t2"]);
    s.delete("/v2/a/manifests/t1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

/// The Distribution docs' walkthrough: HEAD with the Docker Accept header for the digest,
/// then DELETE by that digest with the same header.
#[tokio::test]
async fn delete_walkthrough_with_docker_accept_header() {
    let s = TestServer::start(delete_enabled()).await;
    let image = s.push_image("lib/app", "v1", 63).await;
    let h = s
        .send(
            s.request(Method::HEAD, "/v2/lib/app/manifests/v1")
                .header("accept", DOCKER_MANIFEST),
        )
        .await;
    h.assert_status(200);
    let digest = h.h("docker-content-digest").to_owned();
    assert_eq!(digest, image.digest);
    let r = s
        .send(
            s.request(Method::DELETE, &format!("/v2/lib/app/manifests/{digest}"))
                .header("accept", DOCKER_MANIFEST),
        )
        .await;
    r.assert_status(202);
    s.get("/v2/lib/app/manifests/v1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn delete_manifest_is_405_when_deletes_are_disabled() {
    let s = TestServer::start(Options::default()).await;
    let image = s.push_image("a", "t1", 64).await;
    for reference in [image.digest.as_str(), "t1"] {
        s.delete(&format!("/v2/a/manifests/{reference}"))
            .await
            .assert_error(405, "UNSUPPORTED");
    }
    assert_eq!(
        s.get("/v2/a/manifests/t1").await.h("docker-content-digest"),
        image.digest
    );
}

#[tokio::test]
async fn delete_unknown_manifest_is_404() {
    let s = TestServer::start(delete_enabled()).await;
    s.push_image("a", "t1", 65).await;
    for reference in [sha256(b"nothing").as_str(), "nosuchtag"] {
        s.delete(&format!("/v2/a/manifests/{reference}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
}

/// A tag that moved away from a manifest survives that manifest's deletion; one that moved
/// back onto it does not.
#[tokio::test]
async fn delete_by_digest_follows_where_tags_point_now() {
    let s = TestServer::start(delete_enabled()).await;
    let m1 = s.push_image("a", "moved", 66).await;
    let m2 = s.push_image("a", "other", 67).await;
    s.put_manifest_ok("a", "back", DOCKER_MANIFEST, &m1.manifest)
        .await;
    // moved: m1 -> m2; back: m1 -> m2 -> m1; retagged: m1, deleted by tag, then m1 again.
    s.put_manifest_ok("a", "moved", DOCKER_MANIFEST, &m2.manifest)
        .await;
    s.put_manifest_ok("a", "back", DOCKER_MANIFEST, &m2.manifest)
        .await;
    s.put_manifest_ok("a", "back", DOCKER_MANIFEST, &m1.manifest)
        .await;
    s.put_manifest_ok("a", "retagged", DOCKER_MANIFEST, &m1.manifest)
        .await;
    s.delete("/v2/a/manifests/retagged")
        .await
        .assert_status(202);
    s.put_manifest_ok("a", "retagged", DOCKER_MANIFEST, &m1.manifest)
        .await;

    s.delete(&format!("/v2/a/manifests/{}", m1.digest))
        .await
        .assert_status(202);
    assert_eq!(s.tags("a").await, ["moved", "other"]);
    for tag in ["moved", "other"] {
        let g = s.get(&format!("/v2/a/manifests/{tag}")).await;
        assert_eq!(g.h("docker-content-digest"), m2.digest, "{tag}");
    }
    for tag in ["back", "retagged"] {
        s.get(&format!("/v2/a/manifests/{tag}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
}

#[tokio::test]
async fn a_deleted_manifest_can_be_pushed_again() {
    let s = TestServer::start(delete_enabled()).await;
    let image = s.push_image("a", "t1", 68).await;
    s.delete(&format!("/v2/a/manifests/{}", image.digest))
        .await
        .assert_status(202);
    s.get("/v2/a/manifests/t1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    // The blobs are still linked; the same manifest goes back under a tag.
    s.put_manifest_ok("a", "t1", DOCKER_MANIFEST, &image.manifest)
        .await;
    let g = s.get("/v2/a/manifests/t1").await;
    g.assert_status(200);
    assert_eq!(g.body, image.manifest);
    assert_eq!(s.tags("a").await, ["t1"]);
    // And is deletable again.
    s.delete(&format!("/v2/a/manifests/{}", image.digest))
        .await
        .assert_status(202);
    s.get("/v2/a/manifests/t1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}
