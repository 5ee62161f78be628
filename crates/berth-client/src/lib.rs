//! The one way berth builds an HTTP client for talking to other servers (webhook endpoints,
//! upstream registries): HTTP/1.1, TLS for `https` URLs through rustls with ring (the
//! provider the server and the S3 client already build) and the system's root certificates.
//!
//! Without any root certificates berth still starts, as Distribution does: the client then
//! trusts nothing, so `https` requests fail to verify (and say so) while `http` ones work.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The connector every client here uses: plain TCP or rustls.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How to build a client.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Load the system's root certificates (false: `https` is never verified, as when none
    /// are found; for callers that only talk plain HTTP).
    pub system_roots: bool,
    /// What the client talks to, for the warning when no root certificates are found
    /// ("https upstreams").
    pub serving: &'a str,
    /// Give up connecting after this long (`None`: the OS's limit).
    pub connect_timeout: Option<Duration>,
}

/// A pooled client (idle connections kept 30 s) sending bodies of type `B`.
pub fn build<B>(options: Options<'_>) -> Result<Client<Connector, B>, String>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let native = if options.system_roots {
        match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "no system root certificates: {} cannot be verified",
                    options.serving
                );
                None
            }
        }
    } else {
        None
    };
    let builder = match native {
        Some(b) => b,
        None => {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS for {}: {e}", options.serving))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(options.connect_timeout);
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}
