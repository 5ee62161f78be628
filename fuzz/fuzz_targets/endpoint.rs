//! Fuzz target for `berth_server::endpoint::parse`, which sees the path of every request. It
//! must never panic, never locate an empty repository name, and every endpoint it finds must
//! be the path it was parsed from: `Endpoint::path`, the inverse the `Location` URLs are
//! written with, gives a path that parses to the same endpoint and is the input again (up to
//! the trailing slash `path` documents), so nothing was dropped or invented on the way. The
//! same properties run on every `cargo test` as property tests in `endpoint.rs`.
#![no_main]

use berth_server::endpoint::{Endpoint, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let path: &str = &path;
    let Some(endpoint) = parse(path) else {
        return;
    };
    let canonical = endpoint.path();
    assert_eq!(
        parse(&canonical).as_ref(),
        Some(&endpoint),
        "{path:?} wrote back as {canonical:?}"
    );
    let alias = match endpoint {
        Endpoint::Base | Endpoint::UploadStart { .. } => canonical.strip_suffix('/'),
        _ => None,
    };
    assert!(
        path == canonical || Some(path) == alias,
        "{path:?} parsed as {endpoint:?}, which writes back as {canonical:?}"
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
    if let Endpoint::Upload { id, .. } = &endpoint {
        assert!(!id.is_empty(), "{path:?} parsed as {endpoint:?}");
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
});
