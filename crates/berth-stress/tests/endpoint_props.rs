//! Property tests of `berth_server::endpoint::parse`, the first parser every request path
//! meets, so that `cargo test` checks its properties on every run (the fuzz target `endpoint`
//! in `fuzz/` checks the same ones for longer, but needs cargo-fuzz): it never panics, never
//! locates an empty repository name, and every endpoint it finds writes back to the path it
//! came from, so nothing was dropped or invented. It lives here rather than in berth-server
//! because berth-server's sources are not this test's to edit.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use berth_server::endpoint::{Endpoint, parse};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 4000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Paths built from the API's own words, names and hostile segments.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        3 => prop::sample::select(vec![
            "v2", "manifests", "blobs", "uploads", "tags", "list", "referrers", "_catalog", "",
            "..", ".", "%2e%2e", "a", "library", "ubuntu", "latest",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "3f2b8a1e-8c4f-4a53-9d1e-2b6f7c9a0e11",
        ]).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9._%:\\\\-]{0,12}",
        1 => "\\PC{0,8}",
    ];
    (
        prop::sample::select(vec!["/v2/", "/v2", "/", "", "/v3/", "//v2/"]),
        prop::collection::vec(segment, 0..8),
        prop::bool::ANY,
    )
        .prop_map(|(prefix, segs, slash)| {
            let mut p = format!("{prefix}{}", segs.join("/"));
            if slash {
                p.push('/');
            }
            p
        })
}

fn check(path: &str) {
    let Some(endpoint) = parse(path) else {
        return;
    };
    let rebuilt: Vec<String> = match &endpoint {
        Endpoint::Base => vec!["/v2".into(), "/v2/".into()],
        Endpoint::Catalog => vec!["/v2/_catalog".into()],
        Endpoint::Tags { name } => vec![format!("/v2/{name}/tags/list")],
        Endpoint::Manifest { name, reference } => {
            vec![format!("/v2/{name}/manifests/{reference}")]
        }
        Endpoint::Blob { name, digest } => vec![format!("/v2/{name}/blobs/{digest}")],
        Endpoint::UploadStart { name } => vec![
            format!("/v2/{name}/blobs/uploads"),
            format!("/v2/{name}/blobs/uploads/"),
        ],
        Endpoint::Upload { name, id } => {
            assert!(!id.is_empty(), "{path:?}");
            vec![format!("/v2/{name}/blobs/uploads/{id}")]
        }
        Endpoint::Referrers { name, digest } => vec![format!("/v2/{name}/referrers/{digest}")],
    };
    assert!(
        rebuilt.iter().any(|r| r == path),
        "{path:?} parsed as {endpoint:?}"
    );
    match &endpoint {
        Endpoint::Base | Endpoint::Catalog => {}
        Endpoint::Tags { name }
        | Endpoint::Manifest { name, .. }
        | Endpoint::Blob { name, .. }
        | Endpoint::UploadStart { name }
        | Endpoint::Upload { name, .. }
        | Endpoint::Referrers { name, .. } => {
            assert!(!name.is_empty(), "{path:?} parsed as {endpoint:?}");
        }
    }
    if let Endpoint::Manifest {
        reference: last, ..
    }
    | Endpoint::Blob { digest: last, .. }
    | Endpoint::Upload { id: last, .. }
    | Endpoint::Referrers { digest: last, .. } = &endpoint
    {
        assert!(!last.contains('/'), "{path:?} parsed as {endpoint:?}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn api_shaped_paths(p in path()) {
        check(&p);
    }

    #[test]
    fn any_text(p in "\\PC{0,120}") {
        check(&p);
        check(&format!("/v2/{p}"));
    }

    #[test]
    fn every_endpoint_finds_its_parts(
        name in "[a-z0-9]{1,5}(/[a-z0-9]{1,5}){0,3}",
        last in "[a-zA-Z0-9:._-]{1,20}",
    ) {
        let tags = format!("/v2/{name}/tags/list");
        prop_assert_eq!(parse(&tags), Some(Endpoint::Tags { name: &name }));
        let manifest = format!("/v2/{name}/manifests/{last}");
        prop_assert_eq!(
            parse(&manifest),
            Some(Endpoint::Manifest { name: &name, reference: &last })
        );
        let referrers = format!("/v2/{name}/referrers/{last}");
        prop_assert_eq!(
            parse(&referrers),
            Some(Endpoint::Referrers { name: &name, digest: &last })
        );
        let start = format!("/v2/{name}/blobs/uploads/");
        prop_assert_eq!(parse(&start), Some(Endpoint::UploadStart { name: &name }));
        if last != "uploads" {
            let blob = format!("/v2/{name}/blobs/{last}");
            prop_assert_eq!(parse(&blob), Some(Endpoint::Blob { name: &name, digest: &last }));
            let upload = format!("/v2/{name}/blobs/uploads/{last}");
            prop_assert_eq!(parse(&upload), Some(Endpoint::Upload { name: &name, id: &last }));
        }
    }
}
