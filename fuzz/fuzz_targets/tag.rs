//! Fuzz target for `Tag::parse`, which sees every tag in a manifest URL and every `last=` of
//! a tag listing. It must never panic; an accepted tag prints back unchanged, fits the spec's
//! `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` and so is a safe single path component.
#![no_main]

use berth_oci::Tag;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(tag) = Tag::parse(&s) {
        assert_eq!(tag.to_string(), s);
        assert!(!s.is_empty() && s.len() <= 128, "{s:?}");
        assert!(s != "." && s != "..");
        let b = s.as_bytes();
        assert!(b[0].is_ascii_alphanumeric() || b[0] == b'_', "{s:?}");
        assert!(
            b.iter()
                .all(|&x| x.is_ascii_alphanumeric() || b"._-".contains(&x)),
            "{s:?}"
        );
        assert_eq!(Tag::parse(tag.as_str()).as_ref(), Ok(&tag));
    }
});
