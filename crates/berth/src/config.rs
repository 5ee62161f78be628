//! Distribution's `config.yml`, and the `REGISTRY_*` environment variables that override it.
//!
//! Any config written for Distribution must load: keys berth does not implement are logged
//! and ignored — except the ones whose absence would silently weaken security (`auth`,
//! `http.tls`, `storage.s3.encrypt`) or lose data (a storage driver other than `filesystem`
//! and `s3`), which are refused.
//! Errors name the key and, for the file, the line. Environment overrides follow
//! Distribution: `REGISTRY_` + the key path upper-cased and joined by `_`, the value read as
//! YAML (`REGISTRY_STORAGE_DELETE_ENABLED=true`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The parts of the configuration berth honours.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Config format version; Distribution's is `0.1`.
    #[serde(deserialize_with = "lenient_string")]
    pub version: Option<String>,
    /// `log`
    pub log: Log,
    /// `storage`
    pub storage: Storage,
    /// `http`
    pub http: Http,
    /// `catalog`
    pub catalog: Catalog,
    /// `validation` (berth adds `validation.manifests.maxsize`).
    pub validation: Validation,
    /// `auth`: htpasswd and berth's own policy; other kinds are refused, not ignored.
    pub auth: Option<Auth>,
    /// `health`
    pub health: Health,
    /// `notifications`: webhooks (`berth-notify`).
    pub notifications: Notifications,
    /// `proxy`: the pull-through cache (`berth-proxy`).
    pub proxy: Proxy,
    /// `ui` (berth's own): the web UI at `/ui/`.
    pub ui: Ui,
}

/// `ui` (berth's own section): the web UI, on unless `enabled: false`
/// (`REGISTRY_UI_ENABLED=false`).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Ui {
    #[serde(deserialize_with = "yaml11_bool")]
    pub enabled: bool,
}

impl Default for Ui {
    fn default() -> Self {
        Ui { enabled: true }
    }
}

/// `proxy`: Distribution's one upstream for the whole registry (`remoteurl`, `username`,
/// `password`, `ttl`), plus berth's own `tagttl`, `timeout`, `upstreams` (more upstreams,
/// each for the repositories under a prefix) and `maxsize`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Proxy {
    #[serde(deserialize_with = "lenient_string")]
    pub remoteurl: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub username: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub password: Option<String>,
    #[serde(deserialize_with = "go_duration")]
    pub ttl: Duration,
    #[serde(deserialize_with = "go_duration")]
    pub tagttl: Duration,
    #[serde(deserialize_with = "go_duration")]
    pub timeout: Duration,
    pub implicitlibrary: Option<bool>,
    pub repositories: Vec<String>,
    pub upstreams: Vec<ProxyUpstream>,
    /// Bound on the bytes of cached content (0: none).
    #[serde(deserialize_with = "lenient_u64")]
    pub maxsize: u64,
}

impl Proxy {
    /// The top-level upstream (Distribution's), with the empty prefix.
    pub fn remote(&self) -> ProxyUpstream {
        ProxyUpstream {
            prefix: None,
            remoteurl: self.remoteurl.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            ttl: self.ttl,
            tagttl: self.tagttl,
            timeout: self.timeout,
            implicitlibrary: self.implicitlibrary,
            repositories: self.repositories.clone(),
        }
    }
}

/// One upstream. `ttl` keeps Distribution's meaning, how long cached content is kept
/// unused (zero or unset: until `maxsize` evicts it); `tagttl` is how long a cached tag is
/// trusted before a HEAD asks the upstream (zero: every pull by tag asks); `timeout` zero
/// means 30 s.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProxyUpstream {
    /// Repository-name prefix (berth's `upstreams` only; empty: every other repository).
    #[serde(deserialize_with = "lenient_string")]
    pub prefix: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub remoteurl: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub username: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub password: Option<String>,
    #[serde(deserialize_with = "go_duration")]
    pub ttl: Duration,
    #[serde(deserialize_with = "go_duration")]
    pub tagttl: Duration,
    #[serde(deserialize_with = "go_duration")]
    pub timeout: Duration,
    /// `hub/alpine` is `library/alpine` upstream; unset: on for Docker Hub's URLs.
    pub implicitlibrary: Option<bool>,
    /// Allow-list of upstream repository names (`x/*`: everything under `x/`).
    pub repositories: Vec<String>,
}

/// `notifications` (Distribution's `configuration.Notifications`, plus berth's own
/// `leaseduration` and `endpoints[].maxpending`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Notifications {
    /// `notifications.events`
    pub events: NotificationEvents,
    /// `notifications.endpoints`
    pub endpoints: Vec<NotificationEndpoint>,
    /// berth's own: how long a process's queue lease lasts without renewal before another
    /// process delivers its events (0: the default, 30 s).
    #[serde(deserialize_with = "go_duration")]
    pub leaseduration: Duration,
}

/// `notifications.events`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NotificationEvents {
    #[serde(deserialize_with = "yaml11_bool")]
    pub includereferences: bool,
}

/// One of `notifications.endpoints`. Zero `timeout`, `threshold` and `backoff` mean
/// Distribution's defaults (1 s, 10, 1 s).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NotificationEndpoint {
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "yaml11_bool")]
    pub disabled: bool,
    #[serde(deserialize_with = "lenient_string")]
    pub url: Option<String>,
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(deserialize_with = "go_duration")]
    pub timeout: Duration,
    pub threshold: i64,
    #[serde(deserialize_with = "go_duration")]
    pub backoff: Duration,
    pub ignoredmediatypes: Vec<String>,
    pub ignore: NotificationIgnore,
    /// berth's own: undelivered events kept at most (0: the default, 10,000).
    pub maxpending: usize,
}

/// `notifications.endpoints[].ignore`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NotificationIgnore {
    pub mediatypes: Vec<String>,
    pub actions: Vec<String>,
}

/// `health`: Distribution's periodic checks (`berth_server::health` runs them). Go's zero
/// values keep Go's meaning: an interval of 0 is 10 s, a threshold of 0 (or unset) fails at
/// the first failure, a timeout of 0 is berth's default (10 s), a statuscode of 0 is 200.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Health {
    /// `health.storagedriver`
    pub storagedriver: StorageDriverHealth,
    /// `health.file`: each fails while its file exists.
    pub file: Vec<FileHealth>,
    /// `health.http`: each fails while a HEAD of its URI answers another status.
    pub http: Vec<HttpHealth>,
    /// `health.tcp`: each fails while its address refuses connections.
    pub tcp: Vec<TcpHealth>,
}

/// `health.storagedriver`
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct StorageDriverHealth {
    #[serde(deserialize_with = "yaml11_bool")]
    pub enabled: bool,
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
    pub threshold: i64,
}

impl Default for StorageDriverHealth {
    fn default() -> Self {
        StorageDriverHealth {
            enabled: false,
            interval: Duration::from_secs(10),
            threshold: 0,
        }
    }
}

/// One of `health.file`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FileHealth {
    #[serde(deserialize_with = "lenient_string")]
    pub file: Option<String>,
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
}

/// One of `health.http`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HttpHealth {
    #[serde(deserialize_with = "lenient_string")]
    pub uri: Option<String>,
    pub headers: BTreeMap<String, Vec<String>>,
    pub statuscode: u16,
    #[serde(deserialize_with = "go_duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
    pub threshold: i64,
}

/// One of `health.tcp`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TcpHealth {
    #[serde(deserialize_with = "lenient_string")]
    pub addr: Option<String>,
    #[serde(deserialize_with = "go_duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
    pub threshold: i64,
}

/// The `auth` section.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Auth {
    /// `auth.htpasswd`
    pub htpasswd: Option<Htpasswd>,
    /// `auth.token`
    pub token: Option<Token>,
    /// `auth.policy` (berth's own): who may do what on which repositories.
    pub policy: Option<berth_server::auth::PolicyConfig>,
    /// `auth.tokenserver` (berth's own): issue tokens to htpasswd users at `/token`.
    pub tokenserver: Option<TokenServer>,
    /// Any other kind (`silly`, `token` before it is implemented, typos): refused.
    #[serde(flatten)]
    pub other: BTreeMap<String, yaml_serde::Value>,
}

/// `auth.token`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Token {
    #[serde(deserialize_with = "lenient_string")]
    pub realm: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub service: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub issuer: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub rootcertbundle: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub jwks: Option<String>,
}

/// `auth.tokenserver` (berth's own)
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenServer {
    #[serde(deserialize_with = "lenient_string")]
    pub realm: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub certificate: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub key: Option<String>,
    #[serde(deserialize_with = "go_duration")]
    pub expiry: Duration,
}

impl Default for TokenServer {
    fn default() -> Self {
        TokenServer {
            realm: None,
            certificate: None,
            key: None,
            expiry: Duration::from_secs(300),
        }
    }
}

/// `auth.htpasswd`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Htpasswd {
    #[serde(deserialize_with = "lenient_string")]
    pub realm: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Log {
    #[serde(deserialize_with = "lenient_string")]
    pub level: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub formatter: Option<String>,
    /// Added to every log line, both formatters (`logging.rs`), as Distribution does.
    pub fields: Option<BTreeMap<String, yaml_serde::Value>>,
    /// `log.accesslog`
    pub accesslog: AccessLog,
}

/// `log.accesslog`: Distribution's access log (on unless disabled), one line per request on
/// stdout (`berth-server`'s `observe.rs` says what it holds).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AccessLog {
    #[serde(deserialize_with = "yaml11_bool")]
    pub disabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Storage {
    pub filesystem: Option<Filesystem>,
    pub delete: Enabled,
    pub maintenance: Maintenance,
    /// `storage.redirect.disable`: serve blob bytes through berth even from object storage.
    pub redirect: Redirect,
    pub s3: Option<S3>,
    pub azure: Option<yaml_serde::Value>,
    pub gcs: Option<yaml_serde::Value>,
    pub swift: Option<yaml_serde::Value>,
    pub oss: Option<yaml_serde::Value>,
    pub inmemory: Option<yaml_serde::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filesystem {
    #[serde(deserialize_with = "lenient_string")]
    pub rootdirectory: Option<String>,
}

/// `storage.redirect`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Redirect {
    #[serde(deserialize_with = "yaml11_bool")]
    pub disable: bool,
}

/// `storage.s3`: Distribution's keys and defaults (`registry/storage/driver/s3-aws`). Keys
/// berth does not use (`v4auth`, `storageclass`, `multipartcopychunksize`, …) are logged and
/// ignored; `encrypt` and `keyid` are refused, since ignoring them would store unencrypted.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct S3 {
    #[serde(deserialize_with = "lenient_string")]
    pub region: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub regionendpoint: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub bucket: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub accesskey: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub secretkey: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub rootdirectory: Option<String>,
    #[serde(deserialize_with = "yaml11_bool")]
    pub forcepathstyle: bool,
    #[serde(deserialize_with = "lenient_u64")]
    pub chunksize: u64,
    #[serde(deserialize_with = "yaml11_bool")]
    pub secure: bool,
    #[serde(deserialize_with = "lenient_u64")]
    pub multipartcopythresholdsize: u64,
    #[serde(deserialize_with = "yaml11_bool")]
    pub encrypt: bool,
    #[serde(deserialize_with = "lenient_string")]
    pub keyid: Option<String>,
}

impl Default for S3 {
    fn default() -> Self {
        let defaults = berth_storage::S3Options::default();
        S3 {
            region: None,
            regionendpoint: None,
            bucket: None,
            accesskey: None,
            secretkey: None,
            rootdirectory: None,
            forcepathstyle: defaults.force_path_style,
            chunksize: defaults.chunk_size,
            secure: defaults.secure,
            multipartcopythresholdsize: defaults.multipart_copy_threshold,
            encrypt: false,
            keyid: None,
        }
    }
}

impl S3 {
    /// The driver options; credentials only when both keys are given (else the AWS chain).
    /// Redirects follow `storage.redirect.disable`, set by the caller.
    pub fn options(&self) -> berth_storage::S3Options {
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        berth_storage::S3Options {
            region: nonempty(&self.region).unwrap_or_default(),
            bucket: nonempty(&self.bucket).unwrap_or_default(),
            endpoint: nonempty(&self.regionendpoint),
            credentials: nonempty(&self.accesskey).zip(nonempty(&self.secretkey)),
            root_directory: self.rootdirectory.clone().unwrap_or_default(),
            force_path_style: self.forcepathstyle,
            chunk_size: self.chunksize,
            secure: self.secure,
            multipart_copy_threshold: self.multipartcopythresholdsize,
            redirect: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Enabled {
    #[serde(deserialize_with = "yaml11_bool")]
    pub enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Maintenance {
    pub uploadpurging: UploadPurging,
    pub readonly: Enabled,
    /// berth's: online garbage collection (Distribution has only the offline command).
    pub garbagecollect: GarbageCollect,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct GarbageCollect {
    #[serde(deserialize_with = "yaml11_bool")]
    pub enabled: bool,
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
    /// Nothing younger than this is swept; pushes re-pin after half of it.
    #[serde(deserialize_with = "go_duration")]
    pub graceperiod: Duration,
    #[serde(deserialize_with = "yaml11_bool")]
    pub dryrun: bool,
    #[serde(deserialize_with = "yaml11_bool")]
    pub deleteuntagged: bool,
}

impl Default for GarbageCollect {
    fn default() -> Self {
        GarbageCollect {
            enabled: false,
            interval: Duration::from_secs(24 * 3600),
            graceperiod: Duration::from_secs(3600),
            dryrun: false,
            deleteuntagged: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct UploadPurging {
    #[serde(deserialize_with = "yaml11_bool")]
    pub enabled: bool,
    #[serde(deserialize_with = "go_duration")]
    pub age: Duration,
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "yaml11_bool")]
    pub dryrun: bool,
}

impl Default for UploadPurging {
    /// Distribution's defaults.
    fn default() -> Self {
        UploadPurging {
            enabled: true,
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
            dryrun: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Http {
    #[serde(deserialize_with = "lenient_string")]
    pub addr: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub net: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub host: Option<String>,
    #[serde(deserialize_with = "yaml11_bool")]
    pub relativeurls: bool,
    pub headers: BTreeMap<String, Vec<String>>,
    /// Accepted for compatibility: berth's upload state needs no shared secret.
    #[serde(deserialize_with = "lenient_string")]
    pub secret: Option<String>,
    /// `http.tls`
    pub tls: Option<Tls>,
    /// How long in-flight requests may run after a stop signal.
    #[serde(deserialize_with = "go_duration")]
    pub draintimeout: Duration,
    /// berth's own: how long an upload body may send nothing before it is cut off.
    #[serde(deserialize_with = "go_duration")]
    pub bodyidletimeout: Duration,
    /// berth's own: how long a new connection may take to send its first request head.
    #[serde(deserialize_with = "go_duration")]
    pub headertimeout: Duration,
    /// berth's own: how long a kept-alive connection may wait for its next request.
    #[serde(deserialize_with = "go_duration")]
    pub idletimeout: Duration,
    /// berth's own: how long a TLS handshake may take.
    #[serde(deserialize_with = "go_duration")]
    pub handshaketimeout: Duration,
    /// berth's own: open connections at most (0: half the file-handle limit, at most 16,384).
    pub maxconnections: usize,
    /// berth's own: addresses or networks (`10.0.0.0/8`) of proxies whose `X-Forwarded-For`
    /// is believed for the failed-login limits.
    pub trustedproxies: Vec<String>,
    /// `http.debug`: the debug listener (`/debug/health`, metrics).
    pub debug: DebugServer,
}

/// `http.debug`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DebugServer {
    #[serde(deserialize_with = "lenient_string")]
    pub addr: Option<String>,
    /// `http.debug.prometheus`: metrics on the debug server.
    pub prometheus: Prometheus,
}

/// `http.debug.prometheus`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Prometheus {
    #[serde(deserialize_with = "yaml11_bool")]
    pub enabled: bool,
    /// Where the metrics are served; empty or unset is Distribution's `/metrics`.
    #[serde(deserialize_with = "lenient_string")]
    pub path: Option<String>,
}

impl Prometheus {
    /// The path the metrics are served at.
    pub fn path(&self) -> &str {
        self.path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("/metrics")
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            addr: None,
            net: None,
            host: None,
            relativeurls: false,
            headers: BTreeMap::new(),
            secret: None,
            tls: None,
            draintimeout: Duration::from_secs(30),
            bodyidletimeout: Duration::from_secs(60),
            headertimeout: Duration::from_secs(30),
            idletimeout: Duration::from_secs(60),
            handshaketimeout: Duration::from_secs(10),
            maxconnections: 0,
            trustedproxies: Vec::new(),
            debug: DebugServer::default(),
        }
    }
}

/// `http.tls`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Tls {
    #[serde(deserialize_with = "lenient_string")]
    pub certificate: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub key: Option<String>,
    pub clientcas: Vec<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub minimumtls: Option<String>,
    /// Accepted and ignored with a warning: rustls offers only suites without known weaknesses.
    pub ciphersuites: Option<Vec<String>>,
    /// Not implemented: refused, since ignoring it would serve plain HTTP.
    pub letsencrypt: Option<yaml_serde::Value>,
}

impl Tls {
    /// Whether TLS is asked for at all (Distribution serves plain HTTP for an empty section).
    pub fn enabled(&self) -> bool {
        self.certificate.as_deref().is_some_and(|c| !c.is_empty())
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Catalog {
    pub maxentries: usize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog { maxentries: 1000 }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Validation {
    pub manifests: ManifestValidation,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct ManifestValidation {
    pub maxsize: usize,
}

impl Default for ManifestValidation {
    fn default() -> Self {
        ManifestValidation {
            maxsize: 4 * 1024 * 1024,
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded configuration and the warnings found while loading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Loads `path` (if any), then applies `REGISTRY_*` overrides from `env`.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let (text, source) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("cannot read config {}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (String::new(), "(no config file)".to_owned()),
    };
    let mut warnings = Vec::new();
    // First pass: the file alone, so type errors carry its line numbers.
    let config = if text.trim().is_empty() {
        Config::default()
    } else {
        parse_typed(yaml_serde::Deserializer::from_str(&text), &mut warnings)
            .map_err(|e| ConfigError(format!("config {source}: {e}")))?
    };
    let mut overrides: Vec<(Vec<String>, &str, &str)> = env
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("REGISTRY_")?;
            // Not configuration keys, but Distribution's own variables.
            if rest == "CONFIGURATION_PATH" || rest.is_empty() {
                return None;
            }
            let path = rest.split('_').map(|s| s.to_ascii_lowercase()).collect();
            Some((path, k.as_str(), v.as_str()))
        })
        .collect();
    // Parents before children, whatever order the environment lists them in (Distribution
    // sorts too): `REGISTRY_STORAGE` must not undo `REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY`.
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    let config = if overrides.is_empty() {
        config
    } else {
        let mut tree: yaml_serde::Value = if text.trim().is_empty() {
            yaml_serde::Value::Mapping(Default::default())
        } else {
            yaml_serde::from_str(&text).map_err(|e| ConfigError(format!("config {source}: {e}")))?
        };
        for (path, name, value) in &overrides {
            let value: yaml_serde::Value = yaml_serde::from_str(value)
                .unwrap_or_else(|_| yaml_serde::Value::String((*value).to_owned()));
            set_path(&mut tree, path, value).map_err(|e| ConfigError(format!("{name}: {e}")))?;
        }
        let mut env_warnings = Vec::new();
        let merged = parse_typed(tree, &mut env_warnings).map_err(|e| {
            let names: Vec<&str> = overrides.iter().map(|(_, k, _)| *k).collect();
            ConfigError(format!(
                "config {source} with environment overrides {}: {e}",
                names.join(", ")
            ))
        })?;
        for w in env_warnings {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        merged
    };
    refuse_unsupported(&config)?;
    Ok(Loaded { config, warnings })
}

fn parse_typed<'de, D>(de: D, warnings: &mut Vec<String>) -> Result<Config, String>
where
    D: Deserializer<'de>,
    D::Error: fmt::Display,
{
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(de, &mut track);
    let result = serde_ignored::deserialize(tracked, |path| {
        warnings.push(format!("unknown configuration key \"{path}\" is ignored"));
    });
    result.map_err(|e| {
        let path = track.path().to_string();
        if path == "." || path.is_empty() {
            e.to_string()
        } else {
            format!("key {path}: {e}")
        }
    })
}

/// Sets the value at `path`. A number indexes a list, as in Distribution
/// (`REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL`): an existing item, or one past the last to
/// add an item; further is an error.
fn set_path(
    tree: &mut yaml_serde::Value,
    path: &[String],
    value: yaml_serde::Value,
) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *tree = value;
        return Ok(());
    };
    if let Ok(index) = first.parse::<usize>()
        && (tree.is_sequence() || tree.is_null())
    {
        if tree.is_null() {
            *tree = yaml_serde::Value::Sequence(Vec::new());
        }
        let Some(items) = tree.as_sequence_mut() else {
            return Ok(());
        };
        if index > items.len() {
            return Err(format!(
                "index {index} is past the end of a list of {} items",
                items.len()
            ));
        }
        if index == items.len() {
            items.push(yaml_serde::Value::Null);
        }
        return set_path(&mut items[index], rest, value);
    }
    if !tree.is_mapping() {
        *tree = yaml_serde::Value::Mapping(Default::default());
    }
    let map = tree.as_mapping_mut().expect("just made a mapping");
    // Match existing keys case-insensitively, as Distribution does for struct fields.
    let existing = map
        .keys()
        .find(|k| k.as_str().is_some_and(|s| s.eq_ignore_ascii_case(first)))
        .cloned();
    let key = existing.unwrap_or_else(|| yaml_serde::Value::String(first.clone()));
    let child = map.entry(key).or_insert(yaml_serde::Value::Null);
    set_path(child, rest, value)
}

fn refuse_unsupported(config: &Config) -> Result<(), ConfigError> {
    if let Some(auth) = &config.auth {
        if let Some(kind) = auth.other.keys().next() {
            return Err(ConfigError(format!(
                "auth.{kind} is not supported (berth implements auth.htpasswd, auth.token, \
                 auth.policy and auth.tokenserver); refusing to serve without the access control the config asks for"
            )));
        }
        if auth.htpasswd.is_some() && auth.token.is_some() {
            return Err(ConfigError(
                "auth: configure one of htpasswd and token, not both".into(),
            ));
        }
        if auth.tokenserver.is_some() && auth.htpasswd.is_none() {
            return Err(ConfigError(
                "auth.tokenserver issues tokens to auth.htpasswd users; configure htpasswd".into(),
            ));
        }
        if auth.token.is_some() && auth.policy.is_some() {
            return Err(ConfigError(
                "auth.policy applies to htpasswd users; with auth.token the token server \
                 decides access"
                    .into(),
            ));
        }
        match &auth.htpasswd {
            Some(h) if h.path.as_deref().is_none_or(str::is_empty) => {
                return Err(ConfigError("auth.htpasswd.path is required".into()));
            }
            Some(_) => {}
            None if auth.policy.is_some() => {
                return Err(ConfigError(
                    "auth.policy needs auth.htpasswd to authenticate its users".into(),
                ));
            }
            None => {}
        }
    }
    if let Some(tls) = &config.http.tls {
        if tls.letsencrypt.as_ref().is_some_and(|l| !l.is_null()) {
            return Err(ConfigError(
                "http.tls.letsencrypt is not supported; give http.tls.certificate and \
                 http.tls.key (refusing to serve plain HTTP instead)"
                    .into(),
            ));
        }
        let has_key = tls.key.as_deref().is_some_and(|k| !k.is_empty());
        if tls.enabled() != has_key {
            return Err(ConfigError(
                "http.tls needs both certificate and key".into(),
            ));
        }
        if !tls.enabled() && !tls.clientcas.is_empty() {
            return Err(ConfigError(
                "http.tls.clientcas needs http.tls.certificate and http.tls.key".into(),
            ));
        }
        if let Some(m) = &tls.minimumtls {
            berth_server::tls::MinimumTls::parse(m).map_err(ConfigError)?;
        }
    }
    let s = &config.storage;
    if let Some(s3) = &s.s3 {
        if s.filesystem.is_some() {
            return Err(ConfigError(
                "storage: configure one driver, filesystem or s3, not both".into(),
            ));
        }
        if s3.encrypt || s3.keyid.as_deref().is_some_and(|k| !k.is_empty()) {
            return Err(ConfigError(
                "storage.s3.encrypt and keyid are not supported; use the bucket's default \
                 encryption (refusing to store unencrypted what the config asks to encrypt)"
                    .into(),
            ));
        }
        for (key, value) in [("bucket", &s3.bucket), ("region", &s3.region)] {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError(format!("storage.s3.{key} is required")));
            }
        }
    }
    for (name, section) in [
        ("azure", &s.azure),
        ("gcs", &s.gcs),
        ("swift", &s.swift),
        ("oss", &s.oss),
        ("inmemory", &s.inmemory),
    ] {
        if section.is_some() {
            return Err(ConfigError(format!(
                "storage driver {name:?} is not supported yet; use storage.filesystem"
            )));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, e) in config.notifications.endpoints.iter().enumerate() {
        if e.disabled {
            continue;
        }
        let name = e.name.clone().unwrap_or_default();
        if e.url.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError(format!(
                "notifications.endpoints[{i}] ({name:?}): url is required"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(ConfigError(format!(
                "notifications.endpoints: two enabled endpoints are named {name:?}; berth's \
                 queue tells endpoints apart by name"
            )));
        }
    }
    if let Some(net) = &config.http.net
        && net != "tcp"
    {
        return Err(ConfigError(format!(
            "http.net {net:?} is not supported; use tcp"
        )));
    }
    let prometheus = &config.http.debug.prometheus;
    if prometheus.enabled && !prometheus.path().starts_with('/') {
        return Err(ConfigError(format!(
            "http.debug.prometheus.path {:?} must start with /",
            prometheus.path()
        )));
    }
    Ok(())
}

/// A boolean as Distribution's YAML 1.1 reader (`yaml.v2`) takes it: besides `true`/`false`,
/// `yes`/`no`, `on`/`off` and `y`/`n` in their usual casings, which YAML 1.2 reads as strings.
fn yaml11_bool<'de, D: Deserializer<'de>>(de: D) -> Result<bool, D::Error> {
    match yaml_serde::Value::deserialize(de)? {
        yaml_serde::Value::Bool(b) => Ok(b),
        yaml_serde::Value::String(s) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
                Ok(true)
            }
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
            | "FALSE" => Ok(false),
            _ => Err(serde::de::Error::custom(format!(
                "expected a boolean (true/false, yes/no, on/off), not {s:?}"
            ))),
        },
        _ => Err(serde::de::Error::custom("expected a boolean")),
    }
}

/// Accepts any scalar as a string, as Go's YAML decoder does for string fields (so that
/// `version: 0.1` and `REGISTRY_HTTP_SECRET=1234` load).
fn lenient_string<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let v = Option::<yaml_serde::Value>::deserialize(de)?;
    match v {
        None | Some(yaml_serde::Value::Null) => Ok(None),
        Some(yaml_serde::Value::String(s)) => Ok(Some(s)),
        Some(yaml_serde::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(yaml_serde::Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(serde::de::Error::custom("expected a string")),
    }
}

/// A size as Distribution reads it: a number or a string holding one.
fn lenient_u64<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    match yaml_serde::Value::deserialize(de)? {
        yaml_serde::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("expected a size in bytes")),
        yaml_serde::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a size in bytes, not {s:?}"))),
        _ => Err(serde::de::Error::custom("expected a size in bytes")),
    }
}

fn go_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let v = yaml_serde::Value::deserialize(de)?;
    let s = match &v {
        yaml_serde::Value::String(s) => s.clone(),
        // A bare number is nanoseconds, as in Go.
        yaml_serde::Value::Number(n) => format!("{n}ns"),
        _ => return Err(serde::de::Error::custom("expected a duration such as 24h")),
    };
    parse_go_duration(&s).map_err(serde::de::Error::custom)
}

/// Parses Go's `time.ParseDuration` format: `1h30m`, `168h`, `10s`, `250ms`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 24h, 30m, 10s)");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let term = Duration::try_from_secs_f64(value * seconds).map_err(|_| bad())?;
        total = total.checked_add(term).ok_or_else(bad)?;
        rest = tail;
    }
    Ok(total)
}

impl Config {
    /// Where blobs and repositories live.
    pub fn root_directory(&self) -> PathBuf {
        self.storage
            .filesystem
            .as_ref()
            .and_then(|f| f.rootdirectory.clone())
            .map(PathBuf::from)
            .unwrap_or_else(default_root_directory)
    }

    /// The address to listen on; Distribution's `:5000` form means every interface.
    pub fn listen_addr(&self) -> String {
        match self.http.addr.as_deref() {
            None | Some("") => "0.0.0.0:5000".to_owned(),
            Some(a) if a.starts_with(':') => format!("0.0.0.0{a}"),
            Some(a) => a.to_owned(),
        }
    }
}

/// `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`, else `./berth-data`: somewhere an
/// ordinary user can write, unlike Distribution's `/var/lib/registry`.
pub fn default_root_directory() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("berth");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/berth");
    }
    PathBuf::from("berth-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yml");
        std::fs::write(&p, yaml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(Some(&p), &env)
    }

    #[test]
    fn distribution_default_config_loads_with_warnings() {
        let yaml = "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\nhealth:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\n";
        let l = load_str(yaml, &[]).unwrap();
        assert_eq!(l.config.version.as_deref(), Some("0.1"));
        assert_eq!(
            l.config.root_directory(),
            PathBuf::from("/var/lib/registry")
        );
        assert_eq!(l.config.listen_addr(), "0.0.0.0:5000");
        assert_eq!(
            l.config.http.headers["X-Content-Type-Options"],
            vec!["nosniff"]
        );
        assert!(
            l.warnings.iter().any(|w| w.contains("storage.cache")),
            "{:?}",
            l.warnings
        );
        assert!(
            !l.warnings.iter().any(|w| w.contains("health")),
            "health is understood: {:?}",
            l.warnings
        );
        let sd = &l.config.health.storagedriver;
        assert!(sd.enabled);
        assert_eq!(sd.interval, Duration::from_secs(10));
        assert_eq!(sd.threshold, 3);
    }

    #[test]
    fn health_sections_load_with_env_overrides() {
        let yaml = "health:\n  storagedriver:\n    enabled: false\n  file:\n    - file: /run/down\n      interval: 5s\n  http:\n    - uri: http://auth:8080/ping\n      headers:\n        Authorization: [Basic QQ==]\n      statuscode: 204\n      timeout: 3s\n      threshold: 2\n  tcp:\n    - addr: redis:6379\n      timeout: 1s\n      interval: 30s\n      threshold: 3\n";
        let l = load_str(
            yaml,
            &[
                ("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED", "true"),
                ("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "250ms"),
            ],
        )
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let h = &l.config.health;
        assert!(h.storagedriver.enabled, "the override wins over the file");
        assert_eq!(h.storagedriver.interval, Duration::from_millis(250));
        assert_eq!(
            h.storagedriver.threshold, 0,
            "unset: the first failure counts"
        );
        assert_eq!(h.file[0].file.as_deref(), Some("/run/down"));
        assert_eq!(h.file[0].interval, Duration::from_secs(5));
        let http = &h.http[0];
        assert_eq!(http.uri.as_deref(), Some("http://auth:8080/ping"));
        assert_eq!(http.headers["Authorization"], vec!["Basic QQ=="]);
        assert_eq!(http.statuscode, 204);
        assert_eq!(http.timeout, Duration::from_secs(3));
        assert_eq!(http.interval, Duration::ZERO, "0: the default interval");
        assert_eq!(http.threshold, 2);
        let tcp = &h.tcp[0];
        assert_eq!(tcp.addr.as_deref(), Some("redis:6379"));
        assert_eq!(
            (tcp.timeout, tcp.interval, tcp.threshold),
            (Duration::from_secs(1), Duration::from_secs(30), 3)
        );

        // Without a file: the variable alone turns the check on, with Distribution's interval.
        let l = load(
            None,
            &[("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED".into(), "yes".into())],
        )
        .unwrap();
        assert!(l.config.health.storagedriver.enabled);
        assert_eq!(
            l.config.health.storagedriver.interval,
            Duration::from_secs(10)
        );
        let e = load_str("health:\n  storagedriver:\n    enabled: sometimes\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("health.storagedriver.enabled"), "{e}");
        let l = load_str(
            "health:\n  storagedriver:\n    enabled: true\n    intervall: 1s\n",
            &[],
        )
        .unwrap();
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("health.storagedriver.intervall")),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = load_str(
            "version: 0.1\nstorage:\n  delete:\n    enabled: maybe\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("storage.delete.enabled"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn the_ui_is_on_unless_switched_off() {
        assert!(load_str("version: 0.1\n", &[]).unwrap().config.ui.enabled);
        let off = load_str("version: 0.1\nui:\n  enabled: false\n", &[]).unwrap();
        assert!(!off.config.ui.enabled);
        assert!(off.warnings.is_empty(), "{:?}", off.warnings);
        let env = load_str("version: 0.1\n", &[("REGISTRY_UI_ENABLED", "false")]).unwrap();
        assert!(!env.config.ui.enabled);
    }

    #[test]
    fn env_overrides_win() {
        let l = load_str(
            "version: 0.1\nhttp:\n  addr: :5000\n",
            &[
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:5001"),
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/data"),
                ("REGISTRY_CATALOG_MAXENTRIES", "5"),
                ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "2h"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert!(l.config.storage.delete.enabled);
        assert_eq!(l.config.listen_addr(), "127.0.0.1:5001");
        assert_eq!(l.config.root_directory(), PathBuf::from("/data"));
        assert_eq!(l.config.catalog.maxentries, 5);
        assert_eq!(
            l.config.storage.maintenance.uploadpurging.age,
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn proxy_sections_load_as_distribution_and_berth_write_them() {
        // Distribution's single upstream, from the environment as registry:2 users set it.
        let l = load_str(
            "version: 0.1\n",
            &[
                ("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io"),
                ("REGISTRY_PROXY_USERNAME", "alice"),
                ("REGISTRY_PROXY_PASSWORD", "secret"),
                ("REGISTRY_PROXY_TTL", "168h"),
            ],
        )
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let p = &l.config.proxy.remote();
        assert_eq!(p.remoteurl.as_deref(), Some("https://registry-1.docker.io"));
        assert_eq!(p.username.as_deref(), Some("alice"));
        assert_eq!(p.password.as_deref(), Some("secret"));
        assert_eq!(p.ttl, Duration::from_secs(168 * 3600));
        // berth's list beside it.
        let yaml = "proxy:\n  remoteurl: http://127.0.0.1:1\n  tagttl: 5m\n  maxsize: 1000\n  upstreams:\n    - prefix: ghcr\n      remoteurl: https://ghcr.io\n      timeout: 10s\n      implicitlibrary: false\n      repositories: [\"team/*\"]\n";
        let l = load_str(yaml, &[]).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let p = &l.config.proxy;
        assert_eq!(p.tagttl, Duration::from_secs(300));
        assert_eq!(p.maxsize, 1000);
        let u = &p.upstreams[0];
        assert_eq!(u.prefix.as_deref(), Some("ghcr"));
        assert_eq!(u.timeout, Duration::from_secs(10));
        assert_eq!(u.implicitlibrary, Some(false));
        assert_eq!(u.repositories, vec!["team/*"]);
        // A typo is reported, not silently ignored.
        let l = load_str("proxy:\n  remoteur1: http://x\n", &[]).unwrap();
        assert!(
            l.warnings.iter().any(|w| w.contains("remoteur1")),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn env_type_error_names_the_variable() {
        let e = load_str(
            "version: 0.1\n",
            &[("REGISTRY_STORAGE_DELETE_ENABLED", "perhaps")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("REGISTRY_STORAGE_DELETE_ENABLED"), "{e}");
        assert!(e.contains("storage.delete.enabled"), "{e}");
    }

    #[test]
    fn security_relevant_sections_are_refused() {
        assert!(load_str("auth:\n  silly:\n    realm: r\n    service: s\n", &[]).is_err());
        assert!(load_str("auth:\n  htpasswd:\n    realm: r\n", &[]).is_err());
        assert!(
            load_str(
                "auth:\n  htpasswd:\n    realm: r\n    path: /x\n    pth: y\n",
                &[]
            )
            .is_err()
        );
        assert!(load_str("auth:\n  policy:\n    admins: [a]\n", &[]).is_err());
        assert!(
            load_str(
                "auth:\n  htpasswd:\n    path: /x\n  policy:\n    admns: [a]\n",
                &[]
            )
            .is_err(),
            "a typo in the policy must not be ignored"
        );
        assert!(load_str("http:\n  tls:\n    certificate: /x\n", &[]).is_err());
        assert!(load_str("http:\n  tls:\n    clientcas: [/ca]\n", &[]).is_err());
        assert!(
            load_str(
                "http:\n  tls:\n    letsencrypt:\n      cachefile: /c\n",
                &[]
            )
            .is_err()
        );
        assert!(
            load_str(
                "http:\n  tls:\n    certificate: /c\n    key: /k\n    minimumtls: ssl3\n",
                &[]
            )
            .is_err()
        );
        let l = load_str(
            "http:\n  tls:\n    certificate: /c\n    key: /k\n    clientcas: [/a, /b]\n    minimumtls: tls1.3\n",
            &[],
        )
        .unwrap();
        let tls = l.config.http.tls.unwrap();
        assert!(tls.enabled());
        assert_eq!(tls.clientcas, vec!["/a", "/b"]);
        assert!(load_str("storage:\n  azure:\n    accountname: a\n", &[]).is_err());
    }

    #[test]
    fn storage_s3_loads_with_distribution_keys() {
        let yaml = "storage:\n  s3:\n    region: garage\n    bucket: b\n    regionendpoint: http://127.0.0.1:3900\n    accesskey: AK\n    secretkey: SK\n    rootdirectory: /reg\n    forcepathstyle: true\n    chunksize: \"20971520\"\n    v4auth: true\n";
        let l = load_str(yaml, &[("REGISTRY_STORAGE_S3_SECURE", "false")]).unwrap();
        let o = l.config.storage.s3.as_ref().unwrap().options();
        assert_eq!(o.bucket, "b");
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(o.credentials, Some(("AK".into(), "SK".into())));
        assert_eq!(o.root_directory, "/reg");
        assert!(o.force_path_style && !o.secure);
        assert_eq!(o.chunk_size, 20 * 1024 * 1024);
        assert_eq!(o.multipart_copy_threshold, 32 * 1024 * 1024);
        assert!(
            l.warnings.iter().any(|w| w.contains("v4auth")),
            "{:?}",
            l.warnings
        );
        assert!(load_str("storage:\n  s3:\n    region: r\n", &[]).is_err());
        assert!(
            load_str(
                "storage:\n  s3:\n    region: r\n    bucket: b\n    encrypt: true\n",
                &[]
            )
            .is_err()
        );
        assert!(
            load_str(
                "storage:\n  filesystem:\n    rootdirectory: /x\n  s3:\n    region: r\n    bucket: b\n",
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn auth_htpasswd_and_policy_load() {
        let yaml = "auth:\n  htpasswd:\n    realm: berth\n    path: /etc/berth/htpasswd\n  policy:\n    admins: [alice]\n    groups: {team-a: [bob, carol]}\n    rules:\n      - repositories: [\"team-a/**\"]\n        groups: [team-a]\n        actions: [pull, push]\n      - repositories: [\"public/**\"]\n        anonymous: true\n        actions: [pull]\n";
        let l = load_str(yaml, &[("REGISTRY_AUTH_HTPASSWD_REALM", "other")]).unwrap();
        let auth = l.config.auth.unwrap();
        let h = auth.htpasswd.unwrap();
        assert_eq!(h.realm.as_deref(), Some("other"));
        assert_eq!(h.path.as_deref(), Some("/etc/berth/htpasswd"));
        let p = auth.policy.unwrap();
        assert_eq!(p.admins, vec!["alice"]);
        assert_eq!(p.rules.len(), 2);
        assert!(p.rules[1].anonymous);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn auth_token_loads_and_conflicts_are_refused() {
        let yaml = "auth:\n  token:\n    realm: https://auth.example.com/token\n    service: registry.example.com\n    issuer: auth.example.com\n    rootcertbundle: /certs/bundle.pem\n";
        let l = load_str(yaml, &[]).unwrap();
        let t = l.config.auth.unwrap().token.unwrap();
        assert_eq!(t.service.as_deref(), Some("registry.example.com"));
        assert_eq!(t.rootcertbundle.as_deref(), Some("/certs/bundle.pem"));
        assert!(
            load_str(
                &format!("{yaml}  htpasswd:\n    realm: r\n    path: /p\n"),
                &[]
            )
            .is_err()
        );
        assert!(load_str(&format!("{yaml}  policy:\n    admins: [a]\n"), &[]).is_err());
    }

    #[test]
    fn auth_tokenserver_loads_and_needs_htpasswd() {
        let ts = "  tokenserver:\n    realm: https://r.example.com/token\n    certificate: /c\n    key: /k\n    expiry: 10m\n";
        let l = load_str(&format!("auth:\n  htpasswd:\n    path: /p\n{ts}"), &[]).unwrap();
        let t = l.config.auth.unwrap().tokenserver.unwrap();
        assert_eq!(t.expiry, Duration::from_secs(600));
        assert_eq!(t.realm.as_deref(), Some("https://r.example.com/token"));
        assert!(load_str(&format!("auth:\n{ts}"), &[]).is_err());
        assert!(
            load_str(
                &format!("auth:\n  htpasswd:\n    path: /p\n{ts}    kye: x\n"),
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn yaml_1_1_booleans() {
        let l = load_str(
            "storage:\n  delete:\n    enabled: yes\n  maintenance:\n    uploadpurging:\n      enabled: off\nhttp:\n  relativeurls: on\n",
            &[],
        )
        .unwrap();
        assert!(l.config.storage.delete.enabled);
        assert!(!l.config.storage.maintenance.uploadpurging.enabled);
        assert!(l.config.http.relativeurls);
    }

    #[test]
    fn garbage_collect_keys_and_env_overrides() {
        let l = load_str(
            "storage:\n  maintenance:\n    garbagecollect:\n      enabled: true\n      interval: 10m\n",
            &[("REGISTRY_STORAGE_MAINTENANCE_GARBAGECOLLECT_GRACEPERIOD", "90s")],
        )
        .unwrap();
        let gc = &l.config.storage.maintenance.garbagecollect;
        assert!(gc.enabled && !gc.dryrun && !gc.deleteuntagged);
        assert_eq!(gc.interval, Duration::from_secs(600));
        assert_eq!(gc.graceperiod, Duration::from_secs(90));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn notifications_load_with_distribution_keys_and_list_overrides() {
        let yaml = "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: alistener\n      disabled: false\n      url: https://mylistener.example.com/event\n      headers:\n        Authorization: [Bearer <token>]\n      timeout: 500ms\n      threshold: 5\n      backoff: 1s\n      ignoredmediatypes:\n        - application/octet-stream\n      ignore:\n        mediatypes:\n           - application/vnd.oci.image.index.v1+json\n        actions:\n           - pull\n    - name: off\n      disabled: true\n";
        let l = load_str(
            yaml,
            &[
                ("REGISTRY_NOTIFICATIONS_ENDPOINTS_0_TIMEOUT", "2s"),
                ("REGISTRY_NOTIFICATIONS_ENDPOINTS_1_DISABLED", "false"),
                (
                    "REGISTRY_NOTIFICATIONS_ENDPOINTS_1_URL",
                    "http://audit:8080/",
                ),
                ("REGISTRY_NOTIFICATIONS_ENDPOINTS_2_NAME", "third"),
                ("REGISTRY_NOTIFICATIONS_ENDPOINTS_2_URL", "http://third/"),
                ("REGISTRY_NOTIFICATIONS_LEASEDURATION", "10s"),
            ],
        )
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let n = &l.config.notifications;
        assert!(n.events.includereferences);
        assert_eq!(n.leaseduration, Duration::from_secs(10));
        assert_eq!(n.endpoints.len(), 3);
        let a = &n.endpoints[0];
        assert_eq!(a.name.as_deref(), Some("alistener"));
        assert_eq!(
            a.url.as_deref(),
            Some("https://mylistener.example.com/event")
        );
        assert_eq!(a.headers["Authorization"], vec!["Bearer <token>"]);
        assert_eq!(a.timeout, Duration::from_secs(2), "the variable wins");
        assert_eq!((a.threshold, a.backoff), (5, Duration::from_secs(1)));
        assert_eq!(a.ignoredmediatypes, vec!["application/octet-stream"]);
        assert_eq!(
            a.ignore.mediatypes,
            vec!["application/vnd.oci.image.index.v1+json"]
        );
        assert_eq!(a.ignore.actions, vec!["pull"]);
        assert_eq!(a.maxpending, 0, "unset: berth's default");
        let b = &n.endpoints[1];
        assert!(
            !b.disabled,
            "an item of the file's list is overridden in place"
        );
        assert_eq!(b.url.as_deref(), Some("http://audit:8080/"));
        assert_eq!(
            n.endpoints[2].name.as_deref(),
            Some("third"),
            "one past the end adds"
        );

        // The whole list as one variable, as YAML; and a list from variables alone.
        let l = load(
            None,
            &[(
                "REGISTRY_NOTIFICATIONS_ENDPOINTS".into(),
                "[{name: x, url: 'http://x/', maxpending: 5}]".into(),
            )],
        )
        .unwrap();
        assert_eq!(l.config.notifications.endpoints[0].maxpending, 5);
        let l = load(
            None,
            &[(
                "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL".into(),
                "http://y/".into(),
            )],
        )
        .unwrap();
        assert_eq!(
            l.config.notifications.endpoints[0].url.as_deref(),
            Some("http://y/")
        );
        let e = load(
            None,
            &[(
                "REGISTRY_NOTIFICATIONS_ENDPOINTS_3_URL".into(),
                "http://y/".into(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("REGISTRY_NOTIFICATIONS_ENDPOINTS_3_URL"), "{e}");
        assert!(e.contains("past the end"), "{e}");

        // No url, or two enabled endpoints of one name (the queue's key): refused.
        let e = load_str("notifications:\n  endpoints:\n    - name: a\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("url is required"), "{e}");
        let twice = "notifications:\n  endpoints:\n    - {name: a, url: 'http://a/'}\n    - {name: a, url: 'http://b/'}\n";
        assert!(load_str(twice, &[]).is_err());
        let one_off = "notifications:\n  endpoints:\n    - {name: a, url: 'http://a/'}\n    - {name: a, disabled: true}\n";
        assert!(load_str(one_off, &[]).is_ok());
        // Unknown keys inside an endpoint are reported, as anywhere else.
        let l = load_str(
            "notifications:\n  endpoints:\n    - {name: a, url: 'http://a/', treshold: 3}\n",
            &[],
        )
        .unwrap();
        assert!(
            l.warnings.iter().any(|w| w.contains("treshold")),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_go_duration("168h"),
            Ok(Duration::from_secs(168 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("h").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("18000000000000000000s18000000000000000000s").is_err());
    }

    #[test]
    fn observability_keys_load_with_env_overrides() {
        // Distribution's defaults: access log on, no debug server, metrics off at /metrics.
        let l = load_str("version: 0.1\n", &[]).unwrap();
        assert!(!l.config.log.accesslog.disabled);
        assert_eq!(l.config.http.debug.addr, None);
        assert!(!l.config.http.debug.prometheus.enabled);
        assert_eq!(l.config.http.debug.prometheus.path(), "/metrics");
        assert!(l.config.log.fields.is_none());

        let yaml = "log:\n  accesslog:\n    disabled: true\n  fields:\n    service: registry\n    replica: 3\nhttp:\n  debug:\n    addr: :5001\n    prometheus:\n      enabled: true\n      path: /prom\n";
        let l = load_str(yaml, &[]).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert!(l.config.log.accesslog.disabled);
        let fields = l.config.log.fields.as_ref().unwrap();
        assert_eq!(fields["service"], yaml_serde::Value::from("registry"));
        assert_eq!(fields["replica"], yaml_serde::Value::from(3));
        assert_eq!(l.config.http.debug.addr.as_deref(), Some(":5001"));
        assert!(l.config.http.debug.prometheus.enabled);
        assert_eq!(l.config.http.debug.prometheus.path(), "/prom");

        // Every key from the environment, over the file and without one.
        let env = [
            ("REGISTRY_LOG_ACCESSLOG_DISABLED", "false"),
            ("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:5002"),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "false"),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/m"),
            ("REGISTRY_LOG_FIELDS_SERVICE", "other"),
        ];
        let l = load_str(yaml, &env).unwrap();
        assert!(!l.config.log.accesslog.disabled);
        assert_eq!(l.config.http.debug.addr.as_deref(), Some("127.0.0.1:5002"));
        assert!(!l.config.http.debug.prometheus.enabled);
        assert_eq!(l.config.http.debug.prometheus.path(), "/m");
        let fields = l.config.log.fields.as_ref().unwrap();
        assert_eq!(fields["service"], yaml_serde::Value::from("other"));
        assert_eq!(
            fields["replica"],
            yaml_serde::Value::from(3),
            "kept from the file"
        );
        let env: Vec<(String, String)> = [
            ("REGISTRY_LOG_ACCESSLOG_DISABLED", "yes"),
            ("REGISTRY_HTTP_DEBUG_ADDR", ":5003"),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let l = load(None, &env).unwrap();
        assert!(l.config.log.accesslog.disabled);
        assert_eq!(l.config.http.debug.addr.as_deref(), Some(":5003"));
        assert!(l.config.http.debug.prometheus.enabled);
        assert_eq!(l.config.http.debug.prometheus.path(), "/metrics");

        // Mistakes name their key.
        let e = load_str("log:\n  accesslog:\n    disabled: maybe\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.accesslog.disabled"), "{e}");
        let e = load_str(
            "version: 0.1\n",
            &[("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "sure")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED"), "{e}");
        let e = load_str(
            "http:\n  debug:\n    prometheus:\n      enabled: true\n      path: metrics\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("http.debug.prometheus.path"), "{e}");
        let l = load_str("log:\n  accesslog:\n    disabld: true\n", &[]).unwrap();
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("log.accesslog.disabld")),
            "{:?}",
            l.warnings
        );
    }
}
