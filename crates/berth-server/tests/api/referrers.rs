//! `GET /v2/<name>/referrers/<digest>` (OCI Distribution 1.1).

use berth_registry::Options;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn referrers_list_manifests_with_that_subject() {
    let s = TestServer::start(delete_enabled()).await;
    let image = s.push_image("a", "latest", 120).await;
    s.push_blob("a", b"{}").await;
    let artifact = |artifact_type: &str, n: u32| {
        to_body(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor(OCI_EMPTY, b"{}")],
            "subject": descriptor(DOCKER_MANIFEST, &image.manifest),
            "annotations": { "n": n.to_string() },
        }))
    };
    let sig = artifact("application/vnd.example.signature.v1", 1);
    let sbom = artifact("application/vnd.example.sbom.v1", 2);
    let sig_d = s
        .put_manifest_ok("a", &sha256(&sig), OCI_MANIFEST, &sig)
        .await;
    let sbom_d = s
        .put_manifest_ok("a", &sha256(&sbom), OCI_MANIFEST, &sbom)
        .await;

    let r = s.get(&format!("/v2/a/referrers/{}", image.digest)).await;
    r.assert_status(200);
    assert_eq!(r.h("content-type"), OCI_INDEX);
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let manifests = v["manifests"].as_array().expect("manifests");
    let mut got: Vec<(String, String, u64)> = manifests
        .iter()
        .map(|m| {
            assert_eq!(m["mediaType"], OCI_MANIFEST);
            (
                m["digest"].as_str().expect("digest").to_owned(),
                m["artifactType"].as_str().expect("artifactType").to_owned(),
                m["size"].as_u64().expect("size"),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (
            sig_d.clone(),
            "application/vnd.example.signature.v1".to_owned(),
            sig.len() as u64,
        ),
        (
            sbom_d.clone(),
            "application/vnd.example.sbom.v1".to_owned(),
            sbom.len() as u64,
        ),
    ];
    want.sort();
    assert_eq!(got, want);

    // Filtered by artifactType.
    let r = s
        .get(&format!(
            "/v2/a/referrers/{}?artifactType=application/vnd.example.sbom.v1",
            image.digest
        ))
        .await;
    r.assert_status(200);
    assert_eq!(r.h("oci-filters-applied"), "artifactType");
    let v = r.json();
    assert_eq!(v["manifests"].as_array().expect("manifests").len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sbom_d);

    // Deleting a referrer drops it from the list.
    s.delete(&format!("/v2/a/manifests/{sig_d}"))
        .await
        .assert_status(202);
    let v = s
        .get(&format!("/v2/a/referrers/{}", image.digest))
        .await
        .json();
    assert_eq!(v["manifests"].as_array().expect("manifests").len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sbom_d);
}

#[tokio::test]
async fn referrers_of_an_unknown_subject_is_an_empty_index() {
    let s = TestServer::start(Options::default()).await;
    s.push_image("a", "latest", 121).await;
    let r = s
        .get(&format!("/v2/a/referrers/{}", sha256(b"no such subject")))
        .await;
    r.assert_status(200);
    assert_eq!(r.h("content-type"), OCI_INDEX);
    assert_eq!(r.json()["manifests"], json!([]));
    assert!(r.header("oci-filters-applied").is_none());
}
