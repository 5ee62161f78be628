//! The `berth` command: reads Distribution's configuration, wires the storage driver into
//! the registry and the registry into the HTTP server, and runs it. This is the only crate
//! that reads the environment.

mod config;
mod healthcheck;
mod logging;

/// jemalloc rather than glibc's malloc. Request bodies arrive as chunks of about 128 KiB
/// that live until their S3 part or disk write is done; glibc serves these from per-thread
/// arenas once its mmap threshold has adapted upwards, and never gives the fragmented arenas
/// back: after 32 concurrent 100 MiB pushes to S3 berth kept 669 MiB of RSS while idle.
/// jemalloc returns unused pages within about 10 s of the next allocation (37 MiB), and its
/// thread caches made manifest HEAD/GET about 45% faster in a quick berth-bench run. Figures
/// in commits 20f155e and ebfb41b. Its compiled-in options (one arena, for a low peak RSS)
/// are in `.cargo/config.toml`, which cargo reads only when building from the repository;
/// `cargo install --path` from elsewhere gets jemalloc's defaults.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use berth_registry::{Options, Registry};
use berth_server::HttpOptions;
use berth_storage::FsDriver;
use clap::{Parser, Subcommand};
use http::{HeaderName, HeaderValue};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A container registry compatible with CNCF Distribution",
    after_help = "`berth FILE` (a config file) is `berth serve FILE`, as the registry:2 image's \
                  entrypoint runs `registry serve FILE`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API.
    Serve {
        /// Distribution-format config.yml; defaults to $REGISTRY_CONFIGURATION_PATH if set.
        config: Option<PathBuf>,
    },
    /// Delete blobs no manifest references (Distribution's `garbage-collect`, safe to run
    /// while berth serves the same storage).
    GarbageCollect {
        /// List what would be deleted and the bytes it would free; delete nothing.
        #[arg(short = 'd', long)]
        dry_run: bool,
        /// Also delete manifests no tag reaches (an index's children and the referrers of a
        /// kept manifest count as reached).
        #[arg(short = 'm', long)]
        delete_untagged: bool,
        /// Keep anything younger than this (Go duration, e.g. `0s`, `1h`); default
        /// storage.maintenance.garbagecollect.graceperiod (1h).
        #[arg(long, value_parser = config::parse_go_duration)]
        grace_period: Option<std::time::Duration>,
        /// Distribution-format config.yml.
        config: Option<PathBuf>,
    },
    /// Verify every blob against its digest and every link against what it names; exit 1
    /// if something is wrong (and, with --repair, could not be fixed).
    Check {
        /// Remove or fix what is safe: dangling layer links, stale referrer entries,
        /// corrupt blobs, orphaned uploads, old temporary files, abandoned quarantines.
        #[arg(long)]
        repair: bool,
        /// Distribution-format config.yml.
        config: Option<PathBuf>,
    },
    /// Exit 0 if the berth serving this config answers GET /readyz with 200 on this host
    /// (http.addr's port; /v2/ if /readyz is 404), else 1: the container image's HEALTHCHECK.
    Healthcheck {
        /// Ask this URL instead (http:// or https://); a 2xx or 401 answer is ready.
        #[arg(long)]
        url: Option<String>,
        /// Give up after this long (Go duration).
        #[arg(long, default_value = "5s", value_parser = config::parse_go_duration)]
        timeout: std::time::Duration,
        /// Distribution-format config.yml; defaults to $REGISTRY_CONFIGURATION_PATH if set.
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(entrypoint_args(std::env::args_os().collect()));
    match cli.command {
        Command::Healthcheck {
            url,
            timeout,
            config,
        } => healthcheck::run(config, url, timeout),
        Command::Serve { config } => serve(config),
        Command::GarbageCollect {
            dry_run,
            delete_untagged,
            grace_period,
            config,
        } => offline(config, |registry, config| async move {
            let gc = &config.storage.maintenance.garbagecollect;
            let options = berth_registry::GcOptions {
                dry_run,
                delete_untagged,
                grace_period: grace_period.unwrap_or(gc.graceperiod),
                upload_age: upload_age(&config),
            };
            let report = registry
                .garbage_collect(&options)
                .await
                .map_err(|e| e.to_string())?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for (repo, digest) in &report.manifests_deleted {
                println!("{verb} manifest {repo}@{digest}");
            }
            for (digest, size) in &report.blobs_swept {
                println!("{verb} blob {digest} ({size} bytes)");
            }
            println!(
                "{} manifests and {} blobs marked, {} blobs {verb}, {} bytes freed{}, {} untagged manifests {verb}, {} uploads purged, {} temporary files removed, in {:.3}s",
                report.manifests_marked,
                report.blobs_marked,
                report.blobs_swept.len(),
                report.bytes_freed,
                if dry_run { " (dry run)" } else { "" },
                report.manifests_deleted.len(),
                report.uploads_purged.len(),
                report.temporaries_removed,
                report.duration.as_secs_f64()
            );
            Ok(true)
        }),
        Command::Check { repair, config } => offline(config, |registry, config| async move {
            let options = berth_registry::CheckOptions {
                repair,
                grace_period: config.storage.maintenance.garbagecollect.graceperiod,
                upload_age: config.storage.maintenance.uploadpurging.age,
                cached_prefixes: proxy_config(&config.proxy)?
                    .map(|p| p.upstreams.into_iter().map(|u| u.prefix).collect())
                    .unwrap_or_default(),
            };
            let report = registry.check(&options).await.map_err(|e| e.to_string())?;
            for p in &report.problems {
                let fixed = if p.repaired { " [repaired]" } else { "" };
                println!("{}: {}: {}{fixed}", p.kind, p.path, p.detail);
            }
            let unrepaired = report.problems.iter().filter(|p| !p.repaired).count();
            println!(
                "checked {} blobs ({} bytes) and {} links: {} problems, {} repaired",
                report.blobs_checked,
                report.bytes_checked,
                report.links_checked,
                report.problems.len(),
                report.problems.len() - unrepaired
            );
            Ok(unrepaired == 0)
        }),
    }
}

/// registry:2's entrypoint script: a first argument that is a file (and no subcommand) is the
/// config to serve, so `docker run IMAGE /etc/docker/registry/config.yml` works on an image
/// without a shell.
fn entrypoint_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    if let Some(first) = args.get(1)
        && std::path::Path::new(first).is_file()
        && Cli::command().find_subcommand(first).is_none()
    {
        args.insert(1, "serve".into());
    }
    args
}

/// Upload sessions older than this are purged by garbage collection too (if purging is on).
fn upload_age(config: &config::Config) -> Option<std::time::Duration> {
    let purging = &config.storage.maintenance.uploadpurging;
    purging.enabled.then_some(purging.age)
}

/// Loads the configuration (the argument, else `$REGISTRY_CONFIGURATION_PATH`) and starts
/// logging. Exit code 2 on a configuration error, as Distribution.
fn load_config(config_path: Option<PathBuf>) -> Result<config::Config, ExitCode> {
    let config_path = config_path.or_else(|| {
        std::env::var_os("REGISTRY_CONFIGURATION_PATH")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let env: Vec<(String, String)> = std::env::vars().collect();
    let loaded = match config::load(config_path.as_deref(), &env) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let config = loaded.config;
    if let Err(e) = logging::init(&config.log) {
        eprintln!("berth: {e}");
        return Err(ExitCode::from(2));
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// The registry the configuration describes.
/// With `metrics`, every storage call is timed into them.
async fn build_registry(
    config: &config::Config,
    metrics: Option<&berth_metrics::Metrics>,
) -> Result<(Registry, String), String> {
    let (driver, storage) = build_driver(config).await?;
    let driver = match metrics {
        Some(m) => m.time_storage(driver),
        None => driver,
    };
    let options = Options {
        delete_enabled: config.storage.delete.enabled,
        read_only: config.storage.maintenance.readonly.enabled,
        max_manifest_size: config.validation.manifests.maxsize,
        pin_lease: config.storage.maintenance.garbagecollect.graceperiod / 2,
    };
    Ok((Registry::new(driver, options), storage))
}

/// Runs a maintenance command over the configured storage: exit 0 when it returns true, 1
/// when false or on error, 2 on a configuration error.
fn offline<F, Fut>(config_path: Option<PathBuf>, command: F) -> ExitCode
where
    F: FnOnce(Registry, config::Config) -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let (registry, _) = build_registry(&config, None).await?;
        command(registry, config).await
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime every command runs on; failing to start it is exit 1.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("berth: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Before the runtime: an unusable htpasswd file or policy is a configuration error (2).
    let auth = match build_auth(config.auth.as_ref()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match build_tls(config.http.tls.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    // `health`: built before the runtime, so an unusable check is a configuration error (2).
    let checks = match health_checks(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run(config, auth, tls, checks)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: config::Config,
    auth: Option<Arc<berth_server::Auth>>,
    tls: Option<berth_server::tls::TlsAcceptor>,
    checks: Vec<berth_server::health::Check>,
) -> Result<(), String> {
    let metrics = build_metrics(&config);
    let (registry, storage) = build_registry(&config, metrics.as_deref()).await?;
    if let Some(m) = &metrics {
        m.watch(&registry);
    }
    let health = berth_server::health::Health::start(registry.clone(), checks);
    let notifier = match notification_settings(&config) {
        Some(settings) => Some(berth_notify::Notifier::start(registry.storage(), settings).await?),
        None => None,
    };
    // `berth_notifications_*{endpoint}`: the notifier's own counters, read at each scrape.
    if let (Some(m), Some(n)) = (&metrics, &notifier) {
        let stats = n.stats();
        m.notifications().watch(move || {
            stats
                .iter()
                .map(|s| berth_metrics::NotificationCounts {
                    endpoint: s.name().to_owned(),
                    pending: s.pending(),
                    delivered: s.delivered(),
                    failed: s.failed(),
                    dropped: s.dropped(),
                })
                .collect()
        });
    }

    let proxy = match proxy_config(&config.proxy)? {
        Some(settings) => {
            let proxy = berth_proxy::Proxy::new(registry.clone(), settings)?;
            proxy.start();
            if let Some(m) = &metrics {
                let watched = proxy.clone();
                m.proxy().watch(move || {
                    watched
                        .stats()
                        .into_iter()
                        .map(|(upstream, s)| berth_metrics::ProxyCounts {
                            upstream,
                            hits: s.hits,
                            revalidated: s.revalidated,
                            misses: s.misses,
                            stale: s.stale,
                            errors: s.errors,
                            bytes: s.bytes,
                        })
                        .collect()
                });
            }
            Some(proxy)
        }
        None => None,
    };

    let mut headers = Vec::new();
    for (name, values) in &config.http.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|e| format!("http.headers: invalid header name {name:?}: {e}"))?;
        for value in values {
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| format!("http.headers.{name}: invalid value {value:?}: {e}"))?;
            headers.push((name.clone(), value));
        }
    }
    let http = HttpOptions {
        host: config.http.host.clone().filter(|h| !h.is_empty()),
        relative_urls: config.http.relativeurls,
        headers,
        catalog_max_entries: config.catalog.maxentries,
        body_idle_timeout: config
            .http
            .bodyidletimeout
            .max(std::time::Duration::from_secs(1)),
        auth,
        trusted_proxies: trusted_proxies(&config.http.trustedproxies)?,
        health: Some(health.clone()),
        notifier: notifier.clone(),
        access_log: !config.log.accesslog.disabled,
        metrics: metrics.clone(),
        proxy,
        ui: berth_server::UiOptions {
            enabled: config.ui.enabled,
            gc_grace_period: config.storage.maintenance.garbagecollect.graceperiod,
        },
    };

    let maintenance = &config.storage.maintenance;
    let (purging, gc) = (&maintenance.uploadpurging, &maintenance.garbagecollect);
    registry.start_maintenance(berth_registry::Maintenance {
        read_only: maintenance.readonly.enabled,
        purging: purging.enabled.then_some(berth_registry::Purging {
            age: purging.age,
            interval: purging.interval,
            dry_run: purging.dryrun,
        }),
        collection: gc.enabled.then(|| {
            let options = berth_registry::GcOptions {
                dry_run: gc.dryrun,
                delete_untagged: gc.deleteuntagged,
                grace_period: gc.graceperiod,
                upload_age: upload_age(&config),
            };
            (options, gc.interval)
        }),
        grace_period: gc.graceperiod,
    });

    let limits = connection_limits(&config.http, raise_file_limit());
    let shutdown = shutdown_signal();
    let addr = config.listen_addr();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        addr = %local,
        storage = %storage,
        delete = config.storage.delete.enabled,
        readonly = config.storage.maintenance.readonly.enabled,
        tls = tls.is_some(),
        max_connections = limits.max_connections,
        version = env!("CARGO_PKG_VERSION"),
        "berth listening"
    );
    // The debug server (`http.debug.addr`), bound after "berth listening" is logged: the test
    // kit takes the first port it sees.
    serve_debug(&config, health.debug_router(), metrics).await?;
    berth_server::serve_with(
        listener,
        berth_server::app(registry, http),
        shutdown,
        berth_server::ServeOptions {
            tls,
            drain: config.http.draintimeout,
            limits,
        },
    )
    .await;
    // After the last request: their events are stored; the cursors and leases are written
    // so that whatever is undelivered is resumed at once by the next start or a replica.
    if let Some(notifier) = notifier {
        notifier.shutdown().await;
    }
    Ok(())
}

/// The `proxy` section for `berth-proxy`; `None` when no upstream is configured.
fn proxy_config(p: &config::Proxy) -> Result<Option<berth_proxy::ProxyConfig>, String> {
    let mut upstreams = Vec::new();
    let remote = p.remote();
    let top = remote.remoteurl.as_deref().is_some_and(|u| !u.is_empty());
    let entries = top
        .then_some(&remote)
        .into_iter()
        .chain(&p.upstreams)
        .enumerate();
    for (i, u) in entries {
        let Some(url) = u.remoteurl.as_deref().filter(|u| !u.is_empty()) else {
            return Err(format!("proxy.upstreams[{i}]: remoteurl is required"));
        };
        let prefix = u.prefix.as_deref().unwrap_or("");
        if prefix.is_empty() && !(top && i == 0) {
            return Err(format!(
                "proxy.upstreams[{i}]: prefix is required (the upstream of every other repository is proxy.remoteurl)"
            ));
        }
        let mut c = berth_proxy::UpstreamConfig::new(prefix, url);
        c.credentials = match (&u.username, &u.password) {
            (Some(user), password) if !user.is_empty() => {
                Some((user.clone(), password.clone().unwrap_or_default()))
            }
            _ => None,
        };
        c.tag_ttl = u.tagttl;
        c.ttl = (!u.ttl.is_zero()).then_some(u.ttl);
        if !u.timeout.is_zero() {
            c.timeout = u.timeout;
        }
        if let Some(library) = u.implicitlibrary {
            c.implicit_library = library;
        }
        c.repositories = u.repositories.clone();
        upstreams.push(c);
    }
    if upstreams.is_empty() {
        return Ok(None);
    }
    Ok(Some(berth_proxy::ProxyConfig {
        upstreams,
        max_size: (p.maxsize > 0).then_some(p.maxsize),
    }))
}

/// The `notifications` section for `berth-notify`; `None` when no endpoint is enabled, so
/// that requests do nothing for notifications at all.
fn notification_settings(config: &config::Config) -> Option<berth_notify::Settings> {
    let n = &config.notifications;
    let mut endpoints = Vec::new();
    for e in &n.endpoints {
        let name = e.name.clone().unwrap_or_default();
        if e.disabled {
            tracing::info!(endpoint = name, "notification endpoint disabled, skipping");
            continue;
        }
        for action in &e.ignore.actions {
            if !matches!(action.as_str(), "pull" | "push" | "mount" | "delete") {
                tracing::warn!(
                    endpoint = name,
                    action,
                    "ignore.actions names an action berth never sends (pull, push, mount, delete)"
                );
            }
        }
        endpoints.push(berth_notify::EndpointSettings {
            name,
            url: e.url.clone().unwrap_or_default(),
            headers: e
                .headers
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
            timeout: e.timeout,
            threshold: u32::try_from(e.threshold.max(0)).unwrap_or(u32::MAX),
            backoff: e.backoff,
            ignored_media_types: e
                .ignoredmediatypes
                .iter()
                .chain(&e.ignore.mediatypes)
                .cloned()
                .collect(),
            ignored_actions: e.ignore.actions.clone(),
            max_pending: e.maxpending,
        });
    }
    if endpoints.is_empty() {
        return None;
    }
    // Distribution's `source.addr`: the host's name and the port of `http.addr`.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()));
    let listen = config.listen_addr();
    let source_addr = match (hostname, listen.rsplit_once(':')) {
        (Some(host), Some((_, port))) => format!("{host}:{port}"),
        (Some(host), None) => host,
        (None, _) => listen,
    };
    Some(berth_notify::Settings {
        include_references: n.events.includereferences,
        endpoints,
        lease: if n.leaseduration.is_zero() {
            berth_notify::DEFAULT_LEASE
        } else {
            n.leaseduration
        },
        source_addr,
    })
}

/// The checks the `health` section asks for, as Distribution registers them: the storage
/// check named after the configured driver, Go's zero values meaning defaults, and two checks
/// of one name refused (Distribution panics on them).
fn health_checks(config: &config::Config) -> Result<Vec<berth_server::health::Check>, String> {
    use berth_server::health::Check;
    let h = &config.health;
    let threshold = |t: i64| u32::try_from(t.max(0)).unwrap_or(u32::MAX);
    let timeout = |d: std::time::Duration| Some(d).filter(|d| !d.is_zero());
    let mut checks = Vec::new();
    if h.storagedriver.enabled {
        let driver = if config.storage.s3.is_some() {
            "s3"
        } else {
            "filesystem"
        };
        let (interval, limit) = (h.storagedriver.interval, h.storagedriver.threshold);
        checks.push(Check::storage(driver, interval, threshold(limit)));
    }
    for f in &h.file {
        checks.push(Check::file(f.file.as_deref().unwrap_or(""), f.interval)?);
    }
    for c in &h.http {
        let uri = c.uri.as_deref().unwrap_or("");
        let mut headers = Vec::new();
        for (name, values) in &c.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| format!("health.http {uri}: invalid header name {name:?}: {e}"))?;
            for value in values {
                // The value is not repeated: it may be a credential.
                let value = HeaderValue::try_from(value.as_str())
                    .map_err(|e| format!("health.http {uri}: invalid value of {name}: {e}"))?;
                headers.push((name.clone(), value));
            }
        }
        let (status, limit) = (c.statuscode, threshold(c.threshold));
        let check = Check::http(uri, headers, status, timeout(c.timeout), c.interval, limit)?;
        checks.push(check);
    }
    for c in &h.tcp {
        let addr = c.addr.as_deref().unwrap_or("");
        let check = Check::tcp(addr, timeout(c.timeout), c.interval, threshold(c.threshold))?;
        checks.push(check);
    }
    let mut names = std::collections::HashSet::new();
    for c in &checks {
        if !names.insert(c.name.as_str()) {
            return Err(format!("health: two checks are named {:?}", c.name));
        }
    }
    Ok(checks)
}

/// The metrics `http.debug.prometheus` asks for; `None` when off (nothing is then recorded
/// anywhere). They are served only by the debug server, so without `http.debug.addr` they
/// stay off, as in Distribution, where they would have nowhere to be scraped.
fn build_metrics(config: &config::Config) -> Option<Arc<berth_metrics::Metrics>> {
    let debug = &config.http.debug;
    if !debug.prometheus.enabled {
        return None;
    }
    if debug.addr.as_deref().is_none_or(str::is_empty) {
        tracing::warn!(
            "http.debug.prometheus.enabled is set without http.debug.addr: metrics are off"
        );
        return None;
    }
    Some(Arc::new(berth_metrics::Metrics::new(env!(
        "CARGO_PKG_VERSION"
    ))))
}

/// Starts Distribution's debug server on `http.debug.addr`, when set: plain HTTP, for
/// operators only, serving `/debug/health` (`health`) and, with `metrics`, Prometheus
/// metrics at `http.debug.prometheus.path`. Runs until the process exits.
async fn serve_debug(
    config: &config::Config,
    health: axum::Router,
    metrics: Option<Arc<berth_metrics::Metrics>>,
) -> Result<(), String> {
    let debug = &config.http.debug;
    let Some(addr) = debug.addr.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    let addr = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_owned(),
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on http.debug.addr {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let prometheus = metrics.as_ref().map(|_| debug.prometheus.path());
    let mut router = health;
    if let Some(m) = metrics {
        let path = debug.prometheus.path().to_owned();
        router = router.merge(berth_server::metrics_router(m, path));
    }
    tracing::info!(addr = %bound, prometheus, "berth debug server listening");
    tokio::spawn(berth_server::serve(
        listener,
        router,
        std::future::pending(),
        std::time::Duration::ZERO,
    ));
    Ok(())
}

/// `http.trustedproxies`: networks, or single addresses.
fn trusted_proxies(entries: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    entries
        .iter()
        .map(|e| {
            e.parse::<ipnet::IpNet>()
                .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!(
                        "http.trustedproxies: {e:?} is not an address or a network (10.0.0.0/8)"
                    )
                })
        })
        .collect()
}

/// The connection limits of the `http` section, under the open-file limit `soft_limit`.
/// Timeouts under a second are raised to one (a zero would close every connection at once).
fn connection_limits(http: &config::Http, soft_limit: Option<u64>) -> berth_server::Limits {
    let at_least_1s = |d: std::time::Duration| d.max(std::time::Duration::from_secs(1));
    let max_connections = match http.maxconnections {
        0 => berth_server::connections::max_connections_for(soft_limit),
        n => {
            if soft_limit.is_some_and(|soft| n as u64 > soft / 2) {
                tracing::warn!(
                    maxconnections = n,
                    file_limit = soft_limit,
                    "http.maxconnections is more than half the open-file limit: connections \
                     may take the handles storage needs"
                );
            }
            n
        }
    };
    berth_server::Limits {
        header_timeout: at_least_1s(http.headertimeout),
        idle_timeout: at_least_1s(http.idletimeout),
        handshake_timeout: at_least_1s(http.handshaketimeout),
        max_connections,
    }
}

/// Raises the soft open-file limit to the hard one, as Go programs (Distribution among them)
/// do at start: the soft default of 1,024 is a relic of `select()`, which berth does not use.
/// Returns the soft limit now in force.
fn raise_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit.current = limit.maximum,
            Err(e) => tracing::debug!(error = %e, "cannot raise the open-file limit"),
        }
    }
    limit.current
}

/// The storage driver the config names (filesystem unless `storage.s3` is given), and a
/// description of where it stores for the startup log.
async fn build_driver(
    config: &config::Config,
) -> Result<(Arc<dyn berth_storage::StorageDriver>, String), String> {
    if let Some(s3) = &config.storage.s3 {
        let mut options = s3.options();
        options.redirect = !config.storage.redirect.disable;
        let described = format!(
            "s3://{}/{} ({})",
            options.bucket,
            options.root_directory.trim_matches('/'),
            options.endpoint.as_deref().unwrap_or("AWS")
        );
        let driver = berth_storage::S3Driver::new(options)
            .await
            .map_err(|e| format!("storage.s3: {e}"))?;
        return Ok((Arc::new(driver), described));
    }
    let root = config.root_directory();
    let mut driver = FsDriver::new(&root)
        .map_err(|e| format!("cannot use storage root {}: {e}", root.display()))?;
    if config.storage.maintenance.readonly.enabled {
        driver = driver.without_probe();
    }
    Ok((Arc::new(driver), root.display().to_string()))
}

/// The TLS acceptor `http.tls` asks for (`None`: plain HTTP).
fn build_tls(tls: Option<&config::Tls>) -> Result<Option<berth_server::tls::TlsAcceptor>, String> {
    use berth_server::tls::{MinimumTls, TlsOptions, acceptor};
    let Some(tls) = tls.filter(|t| t.enabled()) else {
        return Ok(None);
    };
    if tls.ciphersuites.as_ref().is_some_and(|c| !c.is_empty()) {
        tracing::warn!(
            "http.tls.ciphersuites is ignored: rustls offers only suites without known weaknesses"
        );
    }
    let options = TlsOptions {
        certificate: tls.certificate.clone().unwrap_or_default().into(),
        key: tls.key.clone().unwrap_or_default().into(),
        client_cas: tls.clientcas.iter().map(Into::into).collect(),
        minimum: MinimumTls::parse(tls.minimumtls.as_deref().unwrap_or(""))?,
    };
    let acceptor = acceptor(&options)?;
    tracing::info!(
        certificate = %options.certificate.display(),
        mutual = !options.client_cas.is_empty(),
        minimum = ?options.minimum,
        "TLS enabled"
    );
    Ok(Some(acceptor))
}

/// The access control the `auth` section asks for (`None`: none configured).
fn build_auth(auth: Option<&config::Auth>) -> Result<Option<Arc<berth_server::Auth>>, String> {
    use berth_server::auth::{Auth, Htpasswd, Policy, TokenOptions, TokenVerifier};
    let Some(auth) = auth else { return Ok(None) };
    if let Some(t) = &auth.token {
        let options = TokenOptions {
            realm: t.realm.clone().unwrap_or_default(),
            service: t.service.clone().unwrap_or_default(),
            issuer: t.issuer.clone().unwrap_or_default(),
            root_cert_bundle: t
                .rootcertbundle
                .clone()
                .filter(|p| !p.is_empty())
                .map(Into::into),
            jwks: t.jwks.clone().filter(|p| !p.is_empty()).map(Into::into),
        };
        let verifier = TokenVerifier::new(&options)?;
        tracing::info!(
            realm = options.realm,
            service = options.service,
            issuer = options.issuer,
            "token authentication enabled"
        );
        return Ok(Some(Arc::new(Auth::token(verifier))));
    }
    let policy = auth.policy.as_ref().map(Policy::new).transpose()?;
    let Some(h) = &auth.htpasswd else {
        return Ok(None);
    };
    let path = h.path.as_deref().unwrap_or_default();
    let file = Htpasswd::open(path)?;
    let realm = h.realm.clone().unwrap_or_else(|| "berth".to_owned());
    tracing::info!(
        path,
        realm,
        policy = policy.is_some(),
        "htpasswd authentication enabled"
    );
    let mut built = Auth::htpasswd(realm, file, policy);
    if let Some(t) = &auth.tokenserver {
        let options = berth_server::auth::TokenServerOptions {
            realm: t.realm.clone().unwrap_or_default(),
            certificate: t.certificate.clone().unwrap_or_default().into(),
            key: t.key.clone().unwrap_or_default().into(),
            expiry: t.expiry,
        };
        let issuer = berth_server::auth::TokenIssuer::new(&options)?;
        tracing::info!(realm = options.realm, expiry = ?options.expiry, "token server enabled at /token");
        built = built.with_token_server(issuer);
    }
    Ok(Some(Arc::new(built)))
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled: a signal that arrives between binding the listener and the
/// accept loop's first poll must stop berth gracefully, not kill it by the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let (term, int) = signals;
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}
