//! Manifests and indexes: which media types berth stores, how a pushed body is validated,
//! and which blobs and manifests it references.
//!
//! berth keeps the bytes a client pushed exactly as sent (their digest is the manifest's
//! identity) and parses them only to validate and to learn the references. The rules for the
//! effective media type follow Distribution: the body's `mediaType` wins and must agree with
//! `Content-Type`; without one, `Content-Type` decides; OCI manifests may omit both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Media types berth knows by name.
pub mod media_types {
    /// Docker image manifest v2, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker schema 1 (refused).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Docker signed schema 1 (refused).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
}

use media_types::*;

/// The four manifest formats berth accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// Docker image manifest v2 schema 2.
    DockerManifest,
    /// Docker manifest list.
    DockerManifestList,
    /// OCI image manifest (also used for artifacts).
    OciManifest,
    /// OCI image index.
    OciIndex,
}

impl ManifestKind {
    /// The kind a media type names, if it is one berth stores.
    pub fn from_media_type(media_type: &str) -> Option<ManifestKind> {
        match media_type {
            DOCKER_MANIFEST => Some(ManifestKind::DockerManifest),
            DOCKER_MANIFEST_LIST => Some(ManifestKind::DockerManifestList),
            OCI_MANIFEST => Some(ManifestKind::OciManifest),
            OCI_INDEX => Some(ManifestKind::OciIndex),
            _ => None,
        }
    }

    /// The media type this kind is served with.
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::DockerManifest => DOCKER_MANIFEST,
            ManifestKind::DockerManifestList => DOCKER_MANIFEST_LIST,
            ManifestKind::OciManifest => OCI_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
        }
    }

    /// True for lists and indexes, whose entries are manifests rather than blobs.
    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::DockerManifestList | ManifestKind::OciIndex
        )
    }
}

/// Why a manifest body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("manifest is not valid JSON of a known shape: {0}")]
    Malformed(String),
    /// Docker schema 1.
    #[error(
        "Docker schema 1 manifests are not supported (deprecated since 2015); push schema 2 or OCI"
    )]
    Schema1,
    /// `schemaVersion` other than 2.
    #[error("unsupported schemaVersion {0}; expected 2")]
    SchemaVersion(i64),
    /// The body's `mediaType` contradicts `Content-Type`.
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch {
        /// From the body.
        body: String,
        /// From the request header.
        header: String,
    },
    /// A media type that is not a manifest.
    #[error("unsupported manifest media type {0:?}")]
    UnknownMediaType(String),
    /// A required field is missing.
    #[error("manifest has no {0:?} field")]
    MissingField(&'static str),
}

/// A content descriptor as it appears in manifests and indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// External locations; a layer with URLs need not be in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A parsed, validated manifest or index.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Its format.
    pub kind: ManifestKind,
    /// The config blob (manifests only).
    pub config: Option<Descriptor>,
    /// Layer blobs (manifests only).
    pub layers: Vec<Descriptor>,
    /// Child manifests (indexes only).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 `subject`).
    pub subject: Option<Descriptor>,
    /// OCI 1.1 `artifactType`.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses and validates a pushed body, given the request's `Content-Type` if any.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        // Parameters such as `; charset=utf-8` do not change the type.
        let header = content_type
            .map(|h| h.split(';').next().unwrap_or("").trim())
            .filter(|h| !h.is_empty());
        if matches!(header, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)) {
            return Err(ManifestError::Schema1);
        }
        let raw: RawManifest =
            serde_json::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if raw.schema_version == Some(1)
            || matches!(
                raw.media_type.as_deref(),
                Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
            )
        {
            return Err(ManifestError::Schema1);
        }
        match raw.schema_version {
            Some(2) => {}
            Some(v) => return Err(ManifestError::SchemaVersion(v)),
            None => return Err(ManifestError::MissingField("schemaVersion")),
        }
        let header_kind = header.and_then(ManifestKind::from_media_type);
        let kind = match raw.media_type.as_deref() {
            Some(body_type) => {
                let kind = ManifestKind::from_media_type(body_type)
                    .ok_or_else(|| ManifestError::UnknownMediaType(body_type.to_owned()))?;
                if let Some(h) = header
                    && h != body_type
                    && header_kind.is_some()
                {
                    return Err(ManifestError::MediaTypeMismatch {
                        body: body_type.to_owned(),
                        header: h.to_owned(),
                    });
                }
                kind
            }
            None => match header_kind {
                Some(k @ (ManifestKind::OciManifest | ManifestKind::OciIndex)) => k,
                // Docker formats always carry mediaType in the body.
                Some(_) => return Err(ManifestError::MissingField("mediaType")),
                None if raw.manifests.is_some() => ManifestKind::OciIndex,
                None if raw.config.is_some() => ManifestKind::OciManifest,
                None => {
                    return Err(ManifestError::UnknownMediaType(
                        header.unwrap_or("").to_owned(),
                    ));
                }
            },
        };
        if kind.is_index() {
            let manifests = raw
                .manifests
                .ok_or(ManifestError::MissingField("manifests"))?;
            Ok(Manifest {
                kind,
                config: None,
                layers: Vec::new(),
                manifests,
                subject: raw.subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        } else {
            let config = raw.config.ok_or(ManifestError::MissingField("config"))?;
            let layers = match (kind, raw.layers) {
                (_, Some(layers)) => layers,
                // OCI 1.1 artifacts are sometimes pushed without layers; Docker requires them.
                (ManifestKind::OciManifest, None) => Vec::new(),
                (_, None) => return Err(ManifestError::MissingField("layers")),
            };
            Ok(Manifest {
                kind,
                config: Some(config),
                layers,
                manifests: Vec::new(),
                subject: raw.subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        }
    }

    /// The media type to serve stored manifest bytes with. Lenient, because the bytes may have
    /// been written by another registry: it never fails, falling back to the OCI manifest type.
    pub fn sniff_media_type(body: &[u8]) -> String {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Sniff {
            schema_version: Option<i64>,
            media_type: Option<String>,
            manifests: Option<serde::de::IgnoredAny>,
            signatures: Option<serde::de::IgnoredAny>,
        }
        match serde_json::from_slice::<Sniff>(body) {
            Ok(Sniff {
                media_type: Some(m),
                ..
            }) => m,
            Ok(Sniff {
                schema_version: Some(1),
                signatures,
                ..
            }) => if signatures.is_some() {
                DOCKER_SCHEMA1_SIGNED
            } else {
                DOCKER_SCHEMA1
            }
            .to_owned(),
            Ok(Sniff {
                manifests: Some(_), ..
            }) => OCI_INDEX.to_owned(),
            _ => OCI_MANIFEST.to_owned(),
        }
    }

    /// The effective media type of this manifest.
    pub fn media_type(&self) -> &'static str {
        self.kind.media_type()
    }

    /// The artifact type a referrers response lists for this manifest: `artifactType`, else
    /// the config's media type (OCI 1.1 rule).
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }

    /// Blobs that must be present in the repository: the config and every layer that has no
    /// external `urls` (foreign layers are fetched from elsewhere, as Distribution allows).
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(
            self.layers
                .iter()
                .filter(|l| l.urls.as_ref().is_none_or(|u| u.is_empty())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 0},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D, "size": 0}],
        });
        if let Some(m) = media_type {
            v["mediaType"] = m.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn body_media_type_wins_and_must_match_header() {
        let m = Manifest::parse(&image(Some(DOCKER_MANIFEST)), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::DockerManifest);
        assert_eq!(m.required_blobs().count(), 2);
        assert!(matches!(
            Manifest::parse(&image(Some(DOCKER_MANIFEST)), Some(OCI_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        // A generic header such as application/json does not contradict the body.
        assert!(Manifest::parse(&image(Some(OCI_MANIFEST)), Some("application/json")).is_ok());
    }

    #[test]
    fn oci_without_media_type_uses_header_or_shape() {
        let m = Manifest::parse(&image(None), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::OciManifest);
        let m = Manifest::parse(&image(None), None).unwrap();
        assert_eq!(m.kind, ManifestKind::OciManifest);
        assert!(matches!(
            Manifest::parse(&image(None), Some(DOCKER_MANIFEST)),
            Err(ManifestError::MissingField("mediaType"))
        ));
    }

    #[test]
    fn schema1_and_garbage_are_refused() {
        let s1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert_eq!(
            Manifest::parse(s1, None).unwrap_err(),
            ManifestError::Schema1
        );
        assert_eq!(
            Manifest::parse(&image(None), Some(DOCKER_SCHEMA1_SIGNED)).unwrap_err(),
            ManifestError::Schema1
        );
        assert!(matches!(
            Manifest::parse(b"{", None),
            Err(ManifestError::Malformed(_))
        ));
        assert!(matches!(
            Manifest::parse(b"[]", None),
            Err(ManifestError::Malformed(_))
        ));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":3}"#, None),
            Err(ManifestError::SchemaVersion(3))
        ));
        let bad_digest = String::from_utf8(image(Some(OCI_MANIFEST)))
            .unwrap()
            .replace(D, "sha256:nothex");
        assert!(matches!(
            Manifest::parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn index_lists_manifests() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": D, "size": 1,
                           "platform": {"os": "linux", "architecture": "amd64"}}]
        });
        let m = Manifest::parse(&serde_json::to_vec(&body).unwrap(), Some(OCI_INDEX)).unwrap();
        assert!(m.kind.is_index());
        assert_eq!(m.manifests.len(), 1);
        assert_eq!(m.required_blobs().count(), 0);
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D, "size": 0},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                        "digest": D, "size": 0, "urls": ["https://example.com/layer"]}]
        });
        let m = Manifest::parse(&serde_json::to_vec(&body).unwrap(), None).unwrap();
        assert_eq!(m.required_blobs().count(), 1);
    }

    #[test]
    fn sniffing_stored_bytes() {
        assert_eq!(
            Manifest::sniff_media_type(&image(Some(DOCKER_MANIFEST))),
            DOCKER_MANIFEST
        );
        assert_eq!(Manifest::sniff_media_type(&image(None)), OCI_MANIFEST);
        assert_eq!(
            Manifest::sniff_media_type(br#"{"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(Manifest::sniff_media_type(b"garbage"), OCI_MANIFEST);
    }
}

/// Properties of manifest parsing over generated bodies (the fuzz target `manifest` in
/// `fuzz/` checks the same ones for longer): neither `parse` nor `sniff_media_type` panics, a
/// parsed manifest has the fields of its kind, and one whose body names its `mediaType` is
/// served later (sniffed from the stored bytes) as the type it was accepted as.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 1500,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn media_type() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => prop::sample::select(vec![
                OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1,
                DOCKER_SCHEMA1_SIGNED, "application/vnd.oci.image.config.v1+json",
                "application/json", "",
            ]).prop_map(Value::from),
            1 => Just(Value::Null),
            1 => any::<i64>().prop_map(Value::from),
            1 => "\\PC{0,20}".prop_map(Value::from),
        ]
    }

    fn digest() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => "sha256:[0-9a-f]{64}".prop_map(Value::from),
            1 => "sha512:[0-9a-f]{128}".prop_map(Value::from),
            1 => "(sha256|md5)?:?[0-9a-fA-F./]{0,70}".prop_map(Value::from),
            1 => Just(Value::Null),
        ]
    }

    fn size() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (0u64..100_000).prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<f64>().prop_map(|f| json!(f)),
            1 => Just(json!("12")),
        ]
    }

    fn descriptor() -> impl Strategy<Value = Value> {
        (
            media_type(),
            digest(),
            size(),
            prop::option::of(prop::collection::vec("\\PC{0,10}", 0..2)),
            prop::option::of(prop::collection::btree_map(
                "[a-z.]{1,8}",
                "\\PC{0,8}",
                0..3,
            )),
            prop::option::of(media_type()),
        )
            .prop_map(|(m, d, s, urls, ann, at)| {
                let mut v = json!({ "mediaType": m, "digest": d, "size": s });
                if let Some(urls) = urls {
                    v["urls"] = json!(urls);
                }
                if let Some(ann) = ann {
                    v["annotations"] = json!(ann);
                }
                if let Some(at) = at {
                    v["artifactType"] = at;
                }
                v
            })
    }

    fn field<S: Strategy<Value = Value>>(s: S) -> impl Strategy<Value = Option<Value>> {
        prop::option::weighted(0.6, s)
    }

    fn manifest() -> impl Strategy<Value = Value> {
        (
            field(prop_oneof![
                4 => Just(json!(2)),
                1 => prop::sample::select(vec![json!(1), json!(3), json!(-1), json!("2"), Value::Null]),
            ]),
            field(media_type()),
            field(descriptor()),
            field(prop::collection::vec(descriptor(), 0..3).prop_map(Value::from)),
            field(prop::collection::vec(descriptor(), 0..3).prop_map(Value::from)),
            field(descriptor()),
            field(media_type()),
            field(Just(json!([]))),
        )
            .prop_map(|(sv, mt, config, layers, manifests, subject, at, signatures)| {
                let mut v = json!({});
                for (k, f) in [
                    ("schemaVersion", sv),
                    ("mediaType", mt),
                    ("config", config),
                    ("layers", layers),
                    ("manifests", manifests),
                    ("subject", subject),
                    ("artifactType", at),
                    ("signatures", signatures),
                ] {
                    if let Some(f) = f {
                        v[k] = f;
                    }
                }
                v
            })
    }

    fn content_type() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            prop::sample::select(vec![
                OCI_MANIFEST,
                OCI_INDEX,
                DOCKER_MANIFEST,
                DOCKER_MANIFEST_LIST,
                DOCKER_SCHEMA1,
                DOCKER_SCHEMA1_SIGNED,
                "application/json",
                "",
                ";",
                " ; charset=utf-8",
            ])
            .prop_map(str::to_owned),
            "\\PC{0,30}",
            "application/vnd\\.oci\\.image\\.(manifest|index)\\.v1\\+json( ?; ?charset=utf-8)?",
        ])
    }

    fn check(body: &[u8], content_type: Option<&str>) {
        let sniffed = Manifest::sniff_media_type(body);
        let Ok(m) = Manifest::parse(body, content_type) else {
            return;
        };
        if m.kind.is_index() {
            assert!(m.config.is_none() && m.layers.is_empty());
        } else {
            assert!(m.config.is_some() && m.manifests.is_empty());
        }
        let named = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("mediaType").cloned())
            .is_some_and(|m| !m.is_null());
        if named {
            assert_eq!(
                sniffed,
                m.media_type(),
                "accepted as one type, served as another"
            );
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn generated_manifests(v in manifest(), ct in content_type()) {
            let body = serde_json::to_vec(&v).unwrap();
            check(&body, ct.as_deref());
        }

        #[test]
        fn truncated_manifests(v in manifest(), cut in any::<prop::sample::Index>(), ct in content_type()) {
            let body = serde_json::to_vec_pretty(&v).unwrap();
            check(&body[..cut.index(body.len() + 1)], ct.as_deref());
        }

        #[test]
        fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..300), ct in content_type()) {
            check(&body, ct.as_deref());
        }
    }
}
