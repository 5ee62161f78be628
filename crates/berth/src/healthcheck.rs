//! `berth healthcheck`: asks the berth serving a configuration whether it is ready, and exits
//! 0 (yes) or 1 (no, or no answer). It is the container image's `HEALTHCHECK`, which must work
//! without a shell or curl in the image, and fits any other probe that runs a command.
//!
//! What it asks: `GET /readyz` on this host at the configured `http.addr` (`:5000` means
//! 127.0.0.1:5000; HTTPS when `http.tls` is set, without verifying the certificate, since the
//! probe talks to its own host and checks readiness, not identity). A 200 is ready; a 404
//! (a server without `/readyz`, e.g. Distribution behind `--url`) is asked again at `/v2/`,
//! where a 200 or a 401 (the registry answers, and wants credentials) is ready. With `--url`
//! that URL is asked instead, and any 2xx or 401 is ready.
//!
//! One blocking HTTP/1.1 request on a std socket: no runtime, no client crate, no logging
//! set-up, so a probe every few seconds costs a fork, a connect and a few syscalls. With
//! `http.tls.clientcas` (mutual TLS) the probe has no client certificate and reports not
//! ready; give such a container a `HEALTHCHECK` of its own.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Uri;

use crate::config;

/// Runs the probe and reports on stdout (ready) or stderr (not ready).
pub fn run(config_path: Option<PathBuf>, url: Option<String>, timeout: Duration) -> ExitCode {
    let deadline = Instant::now() + timeout;
    let result = target(config_path, url).and_then(|(uri, fallback)| {
        let status = get(&uri, deadline)?;
        if fallback && status == 404 {
            let v2 = with_path(&uri, "/v2/")?;
            let again = get(&v2, deadline)?;
            return Ok((v2, again));
        }
        Ok((uri, status))
    });
    match result {
        Ok((uri, status)) if (200..300).contains(&status) || status == 401 => {
            println!("ready: GET {uri}: {status}");
            ExitCode::SUCCESS
        }
        Ok((uri, status)) => {
            eprintln!("not ready: GET {uri}: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("not ready: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The URL to ask, and whether a 404 there means "ask `/v2/`".
fn target(config_path: Option<PathBuf>, url: Option<String>) -> Result<(Uri, bool), String> {
    if let Some(url) = url {
        let uri: Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
        return Ok((uri, false));
    }
    let config_path = config_path.or_else(|| {
        std::env::var_os("REGISTRY_CONFIGURATION_PATH")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = config::load(config_path.as_deref(), &env)
        .map_err(|e| e.to_string())?
        .config;
    let scheme = match config.http.tls.as_ref().is_some_and(|t| t.enabled()) {
        true => "https",
        false => "http",
    };
    let addr = config.listen_addr();
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("http.addr {addr:?} has no port"))?;
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" | "::" => "[::1]",
        h => h,
    };
    let url = format!("{scheme}://{host}:{port}/readyz");
    let uri = url
        .parse()
        .map_err(|e| format!("http.addr {addr:?} gives no URL: {e}"))?;
    Ok((uri, true))
}

fn with_path(uri: &Uri, path: &str) -> Result<Uri, String> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path.parse().map_err(|e| format!("{path}: {e}"))?);
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// The status code of `GET uri`, answered before `deadline`.
fn get(uri: &Uri, deadline: Instant) -> Result<u16, String> {
    let fail = |e: &dyn std::fmt::Display| format!("GET {uri}: {e}");
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(fail(&"only http:// and https:// URLs")),
    };
    let host = uri.host().ok_or_else(|| fail(&"no host"))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = connect(bare_host, port, deadline).map_err(|e| fail(&e))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: berth-healthcheck/{}\r\n\
         Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let status_line = if tls {
        let name =
            rustls::pki_types::ServerName::try_from(bare_host.to_owned()).map_err(|e| fail(&e))?;
        let connection = rustls::ClientConnection::new(tls_config().map_err(|e| fail(&e))?, name)
            .map_err(|e| fail(&e))?;
        exchange(rustls::StreamOwned::new(connection, stream), &request)
    } else {
        exchange(stream, &request)
    }
    .map_err(|e| fail(&e))?;
    parse_status(&status_line).ok_or_else(|| fail(&format!("not HTTP: {status_line:?}")))
}

/// A connection to the first of `host`'s addresses that accepts one before `deadline`.
fn connect(host: &str, port: u16, deadline: Instant) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        let left = remaining(deadline)?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                let left = remaining(deadline)?;
                stream.set_read_timeout(Some(left))?;
                stream.set_write_timeout(Some(left))?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
}

/// Sends `request` and returns the response's first line (at most 1 KiB of it).
fn exchange(mut stream: impl Read + Write, request: &str) -> std::io::Result<String> {
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim_end().to_owned())
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(line: &str) -> Option<u16> {
    let mut words = line.split_ascii_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..600).contains(c))
}

/// A TLS client that accepts any certificate: the probe asks its own host whether the
/// registry there is ready; who it is was settled when the certificate was configured.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status("HTTP/1.1 99999 X"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn target_follows_http_addr() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        let cases = [
            ("", "http://127.0.0.1:5000/readyz"),
            ("http:\n  addr: :5001\n", "http://127.0.0.1:5001/readyz"),
            ("http:\n  addr: 0.0.0.0:80\n", "http://127.0.0.1:80/readyz"),
            ("http:\n  addr: '[::]:5000'\n", "http://[::1]:5000/readyz"),
            (
                "http:\n  addr: 10.1.2.3:5000\n",
                "http://10.1.2.3:5000/readyz",
            ),
        ];
        for (yaml, want) in cases {
            std::fs::write(&path, yaml).unwrap();
            let (uri, fallback) = target(Some(path.clone()), None).unwrap();
            assert_eq!(uri.to_string(), want, "{yaml:?}");
            assert!(fallback);
        }
        let (uri, fallback) = target(None, Some("https://reg:443/v2/".into())).unwrap();
        assert_eq!(
            (uri.to_string().as_str(), fallback),
            ("https://reg:443/v2/", false)
        );
    }

    #[test]
    fn probes_a_server_and_falls_back_to_v2() {
        // A one-shot server per connection: 404 for /readyz, 401 for /v2/.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answer = if req.starts_with("GET /readyz ") {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
                } else {
                    "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"
                };
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, format!("http:\n  addr: 127.0.0.1:{port}\n")).unwrap();
        assert_eq!(
            run(Some(path), None, Duration::from_secs(5)),
            ExitCode::SUCCESS
        );
        server.join().unwrap();
        // Nothing listens there any more: not ready.
        let url = format!("http://127.0.0.1:{port}/readyz");
        assert_eq!(
            run(None, Some(url), Duration::from_secs(2)),
            ExitCode::FAILURE
        );
    }
}
