//! Fuzz target for `Reference::parse`, which sees what follows `/manifests/` in every
//! manifest URL. It must never panic; an accepted reference prints back unchanged, and is a
//! digest exactly when it contains `:`.
#![no_main]

use berth_oci::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(r) = Reference::parse(&s) {
        assert_eq!(r.to_string(), s);
        assert_eq!(matches!(r, Reference::Digest(_)), s.contains(':'), "{s:?}");
        assert!(
            !s.contains('/') && !s.contains('\\') && !s.contains('\0'),
            "{s:?}"
        );
        assert_eq!(Reference::parse(&r.to_string()).as_ref(), Ok(&r));
    }
});
