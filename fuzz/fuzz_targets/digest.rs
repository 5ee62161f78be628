//! Fuzz target for `Digest::parse`, which sees every digest a client puts in a URL, a query
//! (`?digest=`, `?mount=`) or a manifest. It must never panic, and what it accepts must print
//! back byte for byte (one spelling per blob) with a hex part that is safe as a path component.
#![no_main]

use berth_oci::{Algorithm, Digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(d) = Digest::parse(&s) {
        assert_eq!(d.to_string(), s, "a parsed digest prints differently");
        let hex_len = match d.algorithm() {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        };
        assert_eq!(d.hex().len(), hex_len);
        assert!(
            d.hex()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "hex part {:?} is not lowercase hex",
            d.hex()
        );
        assert_eq!(Digest::parse(&d.to_string()).as_ref(), Ok(&d));
    }
});
