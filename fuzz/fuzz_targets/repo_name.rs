//! Fuzz target for `RepoName::parse`, which sees the name part of every API path. It must
//! never panic; an accepted name prints back unchanged and can only be a sequence of
//! non-empty `[a-z0-9._-]` path components that are not `.` or `..` and do not start with
//! `_` (which would reach Distribution's `_uploads`, `_layers`, `_manifests`).
#![no_main]

use berth_oci::RepoName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(name) = RepoName::parse(&s) {
        assert_eq!(name.to_string(), s);
        assert!(s.len() <= 255);
        for c in name.components() {
            assert!(
                !c.is_empty() && c != "." && c != "..",
                "component {c:?} in {s:?}"
            );
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
                "component {c:?} in {s:?}"
            );
            let first = c.as_bytes()[0];
            assert!(
                first.is_ascii_lowercase() || first.is_ascii_digit(),
                "{s:?}"
            );
        }
        assert_eq!(RepoName::parse(name.as_str()).as_ref(), Ok(&name));
    }
});
