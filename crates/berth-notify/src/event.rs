//! Distribution's event, field for field (`notifications/event.go`), so a consumer written
//! for Distribution parses berth's unchanged.
//!
//! An envelope is `{"events":[...]}` sent with [`EVENTS_MEDIA_TYPE`]. Each event has an `id`
//! (a UUID), a `timestamp` (RFC 3339, UTC, nanoseconds), an `action` (`pull`, `push`,
//! `mount`, `delete`), a `target`, the `request` that caused it, the `actor` who made it and
//! the `source` that generated it. Empty fields are left out as Go's `omitempty` leaves them
//! out; `request.id`, `request.method` and `request.useragent` are always present, and
//! `actor` is `{}` for an anonymous caller, as in Distribution.

use serde::Serialize;

/// The envelope's media type, as registry:2 (Distribution 2.x) sends it. Distribution 3
/// sends `...events.v2+json` with the same envelope; the v1 name is what consumers written
/// for registry:2 match on.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// The media type Distribution gives every blob in events (it does not know a blob's type).
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A manifest or blob was read (GET or HEAD, as in Distribution).
    Pull,
    /// A manifest was stored, or a blob upload completed.
    Push,
    /// A blob was linked from another repository.
    Mount,
    /// A manifest, tag or blob was deleted.
    Delete,
}

impl Action {
    /// The name in events and in `ignore.actions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Mount => "mount",
            Action::Delete => "delete",
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What an event is about. Field order is Distribution's: the descriptor's fields
/// (`mediaType`, `size`, `digest`), then `length`, `repository`, `fromRepository`, `url`,
/// `tag`, `references`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Target {
    /// The manifest's media type, or [`BLOB_MEDIA_TYPE`].
    #[serde(rename = "mediaType", skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// Size in bytes.
    #[serde(skip_serializing_if = "is_zero")]
    pub size: u64,
    /// `<alg>:<hex>`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// The size again, for consumers of Distribution before 2.1.
    #[serde(skip_serializing_if = "is_zero")]
    pub length: u64,
    /// The repository.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repository: String,
    /// Where a mounted blob came from.
    #[serde(rename = "fromRepository", skip_serializing_if = "String::is_empty")]
    pub from_repository: String,
    /// Where the content can be fetched (by digest).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The tag a manifest was pushed or pulled by, or the tag deleted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// What a manifest references (`events.includereferences`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<berth_oci::Descriptor>,
}

impl Target {
    /// A manifest pushed or pulled: its media type, digest, size, repository, URL and, when
    /// it was named by one, tag.
    pub fn manifest(
        repository: &str,
        digest: &str,
        media_type: &str,
        size: u64,
        url: String,
        tag: Option<&str>,
    ) -> Target {
        Target {
            media_type: media_type.to_owned(),
            size,
            digest: digest.to_owned(),
            length: size,
            repository: repository.to_owned(),
            url,
            tag: tag.unwrap_or("").to_owned(),
            ..Target::default()
        }
    }

    /// A blob pushed, pulled or mounted (set [`Target::from_repository`] for a mount).
    pub fn blob(repository: &str, digest: &str, size: u64, url: String) -> Target {
        Target {
            media_type: BLOB_MEDIA_TYPE.to_owned(),
            size,
            digest: digest.to_owned(),
            length: size,
            repository: repository.to_owned(),
            url,
            ..Target::default()
        }
    }

    /// A deleted manifest or blob: only the digest and repository, as Distribution sends.
    pub fn deleted(repository: &str, digest: &str) -> Target {
        Target {
            digest: digest.to_owned(),
            repository: repository.to_owned(),
            ..Target::default()
        }
    }

    /// A deleted tag: only the repository and tag.
    pub fn deleted_tag(repository: &str, tag: &str) -> Target {
        Target {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            ..Target::default()
        }
    }
}

/// The request that caused an event.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RequestRecord {
    /// The request's id.
    pub id: String,
    /// The client's address (`ip:port` of the connection, or the client a trusted proxy
    /// names).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// The `Host` the client asked for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// `GET`, `HEAD`, `PUT`, ...
    pub method: String,
    /// The `User-Agent` header.
    pub useragent: String,
}

/// Who made the request.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Actor {
    /// The authenticated user (empty: anonymous, or no auth).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Which registry process generated the event.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Source {
    /// `<hostname>:<port>`, the port taken from `http.addr` as Distribution does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Changes at every start.
    #[serde(rename = "instanceID", skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
}

/// One event as sent.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    /// A new UUID.
    pub id: String,
    /// When it happened.
    pub timestamp: String,
    /// What happened.
    pub action: Action,
    /// To what.
    pub target: &'a Target,
    /// Through which request.
    pub request: &'a RequestRecord,
    /// By whom.
    pub actor: &'a Actor,
    /// Where.
    pub source: &'a Source,
}

impl<'a> Event<'a> {
    /// A new event, stamped now with a fresh id.
    pub fn new(
        action: Action,
        target: &'a Target,
        request: &'a RequestRecord,
        actor: &'a Actor,
        source: &'a Source,
    ) -> Self {
        Event {
            id: new_id(),
            timestamp: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            action,
            target,
            request,
            actor,
            source,
        }
    }
}

/// A new id, for an event or for a request that came without one: a UUID, as
/// Distribution's.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The envelope around already-serialized events.
pub fn envelope<'a>(events: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("{\"events\":[");
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_distributions_and_empty_ones_are_left_out() {
        let target = Target::manifest(
            "library/app",
            "sha256:abc",
            "application/vnd.oci.image.manifest.v1+json",
            708,
            "http://r:5000/v2/library/app/manifests/sha256:abc".into(),
            Some("latest"),
        );
        let request = RequestRecord {
            id: "r1".into(),
            addr: "10.0.0.1:4242".into(),
            host: "r:5000".into(),
            method: "PUT".into(),
            useragent: String::new(),
        };
        let actor = Actor::default();
        let source = Source {
            addr: "node:5000".into(),
            instance_id: "i1".into(),
        };
        let event = Event::new(Action::Push, &target, &request, &actor, &source);
        let v: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(v["action"], "push");
        assert_eq!(
            v["target"],
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": 708, "digest": "sha256:abc", "length": 708,
                "repository": "library/app",
                "url": "http://r:5000/v2/library/app/manifests/sha256:abc",
                "tag": "latest",
            })
        );
        // id, method and useragent are never omitted (no omitempty in Distribution).
        assert_eq!(
            v["request"],
            serde_json::json!({"id": "r1", "addr": "10.0.0.1:4242", "host": "r:5000",
                "method": "PUT", "useragent": ""})
        );
        assert_eq!(v["actor"], serde_json::json!({}));
        assert_eq!(
            v["source"],
            serde_json::json!({"addr": "node:5000", "instanceID": "i1"})
        );
        assert!(
            humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).is_ok(),
            "{}",
            v["timestamp"]
        );
        assert_eq!(
            uuid::Uuid::parse_str(v["id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        let deleted = serde_json::to_value(Target::deleted("a", "sha256:d")).unwrap();
        assert_eq!(
            deleted,
            serde_json::json!({"digest": "sha256:d", "repository": "a"})
        );
        let tag = serde_json::to_value(Target::deleted_tag("a", "v1")).unwrap();
        assert_eq!(tag, serde_json::json!({"repository": "a", "tag": "v1"}));
    }

    #[test]
    fn the_envelope_holds_the_events_as_given() {
        assert_eq!(
            envelope(["{\"a\":1}", "{\"b\":2}"]),
            "{\"events\":[{\"a\":1},{\"b\":2}]}"
        );
        let v: serde_json::Value = serde_json::from_str(&envelope(["{}"])).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 1);
    }
}
