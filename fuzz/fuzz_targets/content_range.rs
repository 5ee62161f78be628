//! Fuzz target for `ContentRange::parse`, which sees the `Content-Range` header of every
//! upload PATCH. It must never panic; an accepted range is ordered and reads back the same from
//! the spec's `<start>-<end>` form. (The server computes `end - start + 1` from it: the length
//! check is asserted here so an overflow shows up as a crash.)
#![no_main]

use berth_oci::ContentRange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(r) = ContentRange::parse(&s) {
        assert!(r.start <= r.end, "{r:?} from {s:?}");
        assert_eq!(
            ContentRange::parse(&format!("{}-{}", r.start, r.end)),
            Ok(r)
        );
        assert_eq!(
            ContentRange::parse(&format!("bytes {}-{}/*", r.start, r.end)),
            Ok(r)
        );
    }
});
