//! Shared helpers for berth's torture tests (`tests/`): finding and running the real `berth`
//! binary as a child process that can be SIGKILLed, a small registry client that tells a
//! dead connection apart from an HTTP error, deterministic test content, and a checker that
//! walks the storage tree for half-written blobs and dangling links.
//!
//! The tests drive the binary rather than the library so that a kill is a real process death
//! (no destructors, no flushes) and a full disk is a real `ENOSPC`. They run
//! `target/<profile>/berth` as built and do not build it: `cargo test --workspace` (what
//! `scripts/test.sh` runs) builds it first; before `cargo test -p berth-torture` alone, run
//! `cargo build -p berth`, or set `BERTH_BIN` (to any Distribution-compatible binary taking
//! `serve CONFIG`, such as Distribution's own, to compare).

pub mod client;
pub mod disk;
pub mod server;

use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sha2::Digest as _;

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The hex part of a digest (everything after the colon).
pub fn hex_of(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, h)| h)
}

/// `len` pseudo-random bytes, the same for the same seed: tests keep seeds, not content.
pub fn content(seed: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

/// OCI media types the tests push.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

/// A descriptor: what a manifest says about a blob.
#[derive(Debug, Clone)]
pub struct Desc {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// An OCI image manifest over `config` and `layers`; `note` makes otherwise equal manifests
/// distinct, and `pretty` varies the encoding so stored bytes must be kept exactly as sent.
pub fn image_manifest(config: &Desc, layers: &[Desc], note: &str, pretty: bool) -> Bytes {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": media::OCI_LAYER, "digest": l.digest, "size": l.size}))
        .collect();
    let v = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": layers,
        "annotations": {"org.example.torture": note},
    });
    let body = if pretty {
        serde_json::to_vec_pretty(&v)
    } else {
        serde_json::to_vec(&v)
    };
    // Serialising a `json!` value cannot fail; an empty body would be refused loudly anyway.
    Bytes::from(body.unwrap_or_default())
}
