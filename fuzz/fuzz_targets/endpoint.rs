//! Fuzz target for `berth_server::endpoint::parse`, which sees the path of every request. It
//! must never panic, never locate an empty repository name, and every endpoint it finds must
//! be the path it was parsed from: `Endpoint::path`, the inverse the `Location` URLs are
//! written with, gives a path that parses to the same endpoint and is the input again (up to
//! the trailing slash `path` documents), so nothing was dropped or invented on the way. The
//! same properties run on every `cargo test` as property tests in `endpoint.rs`.
#![no_main]

use berth_server::endpoint::check_inverse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check_inverse(&String::from_utf8_lossy(data)) {
        panic!("{violation}");
    }
});
