//! Fuzz target for `berth_server::endpoint::parse`, which sees the path of every request. It
//! must never panic, never locate an empty repository name, and every endpoint it finds must
//! be the path it was parsed from: writing the parts back into the endpoint's template gives
//! the path again, so nothing was dropped or invented on the way.
#![no_main]

use berth_server::endpoint::{Endpoint, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let Some(endpoint) = parse(&path) else {
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
            assert!(!id.is_empty());
            vec![format!("/v2/{name}/blobs/uploads/{id}")]
        }
        Endpoint::Referrers { name, digest } => vec![format!("/v2/{name}/referrers/{digest}")],
    };
    assert!(
        rebuilt.iter().any(|r| *r == path),
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
    match &endpoint {
        Endpoint::Manifest {
            reference: last, ..
        }
        | Endpoint::Blob { digest: last, .. }
        | Endpoint::Upload { id: last, .. }
        | Endpoint::Referrers { digest: last, .. } => {
            assert!(!last.contains('/'), "{path:?} parsed as {endpoint:?}");
        }
        _ => {}
    }
});
