//! Fuzz target for `ByteRange::parse_request`, which sees the `Range` header of every blob GET.
//! Input: the content length in decimal on the first line (else the line's length), then the
//! header value. It must never panic, and a range it resolves must lie inside the content, be
//! non-empty, and resolve to itself when written back as `bytes=<start>-<end>`.
#![no_main]

use berth_oci::ByteRange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, header) = text.split_once('\n').unwrap_or(("", &text));
    let total = first.trim().parse::<u64>().unwrap_or(first.len() as u64);
    match ByteRange::parse_request(header, total) {
        Ok(Some(r)) => {
            assert!(r.start <= r.end, "{r:?} for {header:?} of {total}");
            assert!(r.end < total, "{r:?} ends beyond {total} for {header:?}");
            assert_eq!(r.len(), r.end - r.start + 1);
            assert!(r.len() <= total);
            let canonical = format!("bytes={}-{}", r.start, r.end);
            assert_eq!(ByteRange::parse_request(&canonical, total), Ok(Some(r)));
        }
        Ok(None) => assert!(header.contains(','), "whole content for {header:?}"),
        Err(_) => {}
    }
});
