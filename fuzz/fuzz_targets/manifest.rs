//! Fuzz target for `Manifest::parse` (every pushed manifest or index body with its
//! `Content-Type`) and `Manifest::sniff_media_type` (every stored manifest served). Input: the
//! `Content-Type` on the first line (absent when the line is empty), then the body. Neither
//! may panic; a parsed manifest has the fields of its kind, and when the body names its
//! `mediaType` the type berth serves it with later is the one it was accepted as.
#![no_main]

use berth_oci::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    let content_type = content_type.filter(|c| !c.is_empty());
    let sniffed = Manifest::sniff_media_type(body);
    let Ok(m) = Manifest::parse(body, content_type) else {
        return;
    };
    if m.kind.is_index() {
        assert!(m.config.is_none() && m.layers.is_empty());
    } else {
        assert!(m.config.is_some() && m.manifests.is_empty());
    }
    assert!(m.required_blobs().count() <= 1 + m.layers.len());
    let _ = m.effective_artifact_type();
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        media_type: Option<String>,
    }
    if let Ok(Named {
        media_type: Some(_),
    }) = serde_json::from_slice::<Named>(body)
    {
        assert_eq!(
            sniffed,
            m.media_type(),
            "stored as one type, served as another"
        );
    }
});
