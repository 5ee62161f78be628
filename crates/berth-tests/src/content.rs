//! What tests push: deterministic bytes (tests keep seeds, not content), their digests, the
//! media types of the formats berth serves, and manifests over them.

use serde_json::{Value, json};
use sha2::Digest as _;

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `sha512:<hex>` of `data`.
pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// The hex part of a digest (everything after the colon).
pub fn hex_of(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, h)| h)
}

/// `len` pseudo-random bytes, the same for the same seed. xorshift64*: no dependency, fast
/// enough for the gigabyte tests, and bytes that neither compress nor repeat, so no layer of
/// the stack can shortcut them.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Media types of the formats berth stores and serves.
pub mod media {
    /// Docker image manifest (schema 2).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker schema 1 manifest (refused by berth, as by Distribution).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Signed Docker schema 1 manifest.
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// The OCI empty descriptor's media type.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
}

/// A descriptor: what a manifest says about a blob.
#[derive(Debug, Clone)]
pub struct Desc {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

impl Desc {
    /// The descriptor of `data`.
    pub fn of(data: &[u8]) -> Desc {
        Desc {
            digest: sha256(data),
            size: data.len() as u64,
        }
    }
}

/// A descriptor of `data` with `media_type`, as JSON.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

/// An OCI image manifest over `config` and `layers`; `note` makes otherwise equal manifests
/// distinct, and `pretty` varies the encoding so stored bytes must be kept exactly as sent.
pub fn image_manifest(config: &Desc, layers: &[Desc], note: &str, pretty: bool) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| json!({"mediaType": media::OCI_LAYER, "digest": l.digest, "size": l.size}))
        .collect();
    let v = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": layers,
        "annotations": {"org.example.test": note},
    });
    if pretty {
        to_body(&v)
    } else {
        v.to_string().into_bytes()
    }
}

/// `v` pretty-printed with a trailing newline, so stored bytes that were re-encoded (rather
/// than kept as pushed) would show.
pub fn to_body(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_distinct() {
        assert_eq!(content(1, 1000), content(1, 1000));
        assert_ne!(content(1, 1000), content(2, 1000));
        assert_eq!(content(3, 17).len(), 17);
        assert_eq!(&content(3, 100)[..17], &content(3, 17)[..]);
    }
}
