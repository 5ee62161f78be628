//! `http.tls`: TLS with rustls (ring), HTTP/1.1 and HTTP/2 by ALPN, optional mutual TLS, and
//! certificate rotation without a restart.
//!
//! - `certificate` / `key`: PEM files; the certificate file may hold the chain.
//! - `clientcas`: PEM files of CAs; when given, every client must present a certificate
//!   signed by one of them, checked during the handshake (no certificate, or one from another
//!   CA, never reaches HTTP).
//! - `minimumtls`: `tls1.2` (default) or `tls1.3`. rustls has no TLS 1.0/1.1, so those
//!   settings (Distribution's old default) mean 1.2.
//!
//! Rotation: the certificate resolver checks the files' modification times and sizes at most
//! every [`RECHECK`] and loads the new pair when they change. A pair that does not load (a
//! half-written file, a key that does not match the certificate) is logged and the previous
//! pair stays in use, retried at the next check. Client CAs are read at start-up only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

pub use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for changes.
pub const RECHECK: Duration = Duration::from_secs(5);

/// The lowest protocol version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinimumTls {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinimumTls {
    /// Parses Distribution's `http.tls.minimumtls` words.
    pub fn parse(s: &str) -> Result<MinimumTls, String> {
        match s {
            "" | "tls1.0" | "tls1.1" | "tls1.2" => Ok(MinimumTls::Tls12),
            "tls1.3" => Ok(MinimumTls::Tls13),
            other => Err(format!(
                "http.tls.minimumtls {other:?} is not one of tls1.2, tls1.3"
            )),
        }
    }
}

/// The `http.tls` settings.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Certificate (chain) PEM file.
    pub certificate: PathBuf,
    /// Private key PEM file.
    pub key: PathBuf,
    /// CA PEM files for client certificates; empty: no client certificates asked for.
    pub client_cas: Vec<PathBuf>,
    /// Lowest protocol version.
    pub minimum: MinimumTls,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the acceptor; errors name the file at fault.
pub fn acceptor(options: &TlsOptions) -> Result<TlsAcceptor, String> {
    let provider = provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = match options.minimum {
        MinimumTls::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinimumTls::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("http.tls: {e}"))?;
    let builder = if options.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for path in &options.client_cas {
            let certs = read_certs(path)?;
            if certs.is_empty() {
                return Err(format!(
                    "http.tls.clientcas: no certificate in {}",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("http.tls.clientcas: {}: {e}", path.display()))?;
            }
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("http.tls.clientcas: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let resolver = ReloadingCert::new(options.certificate.clone(), options.key.clone(), provider)?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

type Stamps = (Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

/// Serves the certificate and key from their files, reloading them when they change.
#[derive(Debug)]
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Arc<CertifiedKey>, Stamps)>,
    last_check: Mutex<Instant>,
}

impl ReloadingCert {
    fn new(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, String> {
        let stamps = (stamp(&cert_path), stamp(&key_path));
        let key = load_pair(&cert_path, &key_path, &provider)?;
        Ok(ReloadingCert {
            cert_path,
            key_path,
            provider,
            current: RwLock::new((Arc::new(key), stamps)),
            last_check: Mutex::new(Instant::now()),
        })
    }

    fn maybe_reload(&self) {
        {
            let Ok(mut last) = self.last_check.lock() else {
                return;
            };
            if last.elapsed() < RECHECK {
                return;
            }
            *last = Instant::now();
        }
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        let unchanged = self.current.read().map(|c| c.1 == stamps).unwrap_or(true);
        if unchanged {
            return;
        }
        match load_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                tracing::info!(certificate = %self.cert_path.display(), "TLS certificate reloaded");
                if let Ok(mut c) = self.current.write() {
                    *c = (Arc::new(key), stamps);
                }
            }
            // Not recorded as seen: retried at the next check (the other file may be on its way).
            Err(e) => tracing::warn!("TLS certificate not reloaded, keeping the previous one: {e}"),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        self.current.read().ok().map(|c| c.0.clone())
    }
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert)?;
    if chain.is_empty() {
        return Err(format!(
            "http.tls.certificate: no certificate in {}",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("http.tls.key: {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        format!(
            "http.tls: key {} does not fit certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })
}
