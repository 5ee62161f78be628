//! `http.tls` over a real socket: HTTP/1.1 and HTTP/2 by ALPN with a CA made by rcgen,
//! mutual TLS (no client certificate and one from another CA are refused at the handshake),
//! `minimumtls`, and certificate rotation without a restart.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use berth_tests::in_process::{self, Served};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_registry::Options;
use berth_server::HttpOptions;
use berth_server::tls::{MinimumTls, TlsOptions};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf certificate and its key (PEM).
    fn leaf(&self, cn: &str, client: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

struct Server {
    port: u16,
    dir: tempfile::TempDir,
    _served: Served,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn server(ca: &Ca, client_cas: &[&Ca], minimum: MinimumTls) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf("server-1", false);
    let certificate = write(dir.path(), "server.crt", &cert);
    let key = write(dir.path(), "server.key", &key);
    let client_cas = client_cas
        .iter()
        .enumerate()
        .map(|(i, c)| write(dir.path(), &format!("client-ca-{i}.crt"), &c.issuer.pem()))
        .collect();
    let acceptor = berth_server::tls::acceptor(&TlsOptions {
        certificate,
        key,
        client_cas,
        minimum,
    })
    .unwrap();
    let registry = in_process::registry(&dir.path().join("storage"), Options::default());
    let served = in_process::serve_app(
        "127.0.0.1:0",
        berth_server::app(registry, HttpOptions::default()),
        berth_server::ServeOptions {
            tls: Some(acceptor),
            drain: Duration::from_secs(1),
            ..berth_server::ServeOptions::default()
        },
    )
    .await;
    Server {
        port: served.addr.port(),
        dir,
        _served: served,
    }
}

struct ClientOptions<'a> {
    alpn: &'a [&'a [u8]],
    identity: Option<(String, String)>,
    tls12_only: bool,
}

impl Default for ClientOptions<'_> {
    fn default() -> Self {
        ClientOptions {
            alpn: &[b"http/1.1"],
            identity: None,
            tls12_only: false,
        }
    }
}

struct Answer {
    status: u16,
    location: Option<String>,
    version: http::Version,
    body: Bytes,
    peer_certificate: CertificateDer<'static>,
}

/// One request over a fresh TLS connection; Err when the handshake or the exchange fails.
async fn request(
    port: u16,
    ca: &Ca,
    opts: &ClientOptions<'_>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Answer, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let versions: &[&'static rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match &opts.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = opts.alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let peer_certificate = session.peer_certificates().unwrap()[0].clone().into_owned();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let request = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{port}{path}"))
        .header("host", format!("localhost:{port}"))
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let version = response.version();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        location,
        version,
        body,
        peer_certificate,
    })
}

#[tokio::test]
async fn http1_and_http2_over_tls_with_a_test_ca() {
    let ca = Ca::new("test CA");
    let s = server(&ca, &[], MinimumTls::Tls12).await;
    let a = request(s.port, &ca, &ClientOptions::default(), "GET", "/v2/", b"")
        .await
        .unwrap();
    assert_eq!((a.status, a.version), (200, http::Version::HTTP_11));
    let h2 = ClientOptions {
        alpn: &[b"h2", b"http/1.1"],
        ..ClientOptions::default()
    };
    let a = request(s.port, &ca, &h2, "GET", "/v2/", b"").await.unwrap();
    assert_eq!((a.status, a.version), (200, http::Version::HTTP_2));

    // A blob pushed and pulled back over HTTP/2.
    let data = b"over tls".to_vec();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
    );
    let a = request(
        s.port,
        &ca,
        &h2,
        "POST",
        &format!("/v2/t/blobs/uploads/?digest={digest}"),
        &data,
    )
    .await
    .unwrap();
    assert_eq!(a.status, 201);
    let a = request(
        s.port,
        &ca,
        &h2,
        "GET",
        &format!("/v2/t/blobs/{digest}"),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, data);

    // Upload URLs are https on a TLS connection, over both protocols.
    for opts in [&ClientOptions::default(), &h2] {
        let a = request(s.port, &ca, opts, "POST", "/v2/t/blobs/uploads/", b"")
            .await
            .unwrap();
        assert_eq!(a.status, 202);
        let location = a.location.unwrap();
        let want = format!("https://localhost:{}/v2/t/blobs/uploads/", s.port);
        assert!(location.starts_with(&want), "{location}");
    }

    // TLS 1.2 is accepted by default.
    let tls12 = ClientOptions {
        tls12_only: true,
        ..ClientOptions::default()
    };
    assert_eq!(
        request(s.port, &ca, &tls12, "GET", "/v2/", b"")
            .await
            .unwrap()
            .status,
        200
    );
    // A client that does not trust the CA refuses the server.
    let stranger = Ca::new("other CA");
    assert!(
        request(
            s.port,
            &stranger,
            &ClientOptions::default(),
            "GET",
            "/v2/",
            b""
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn minimum_tls13_refuses_tls12_clients() {
    let ca = Ca::new("test CA");
    let s = server(&ca, &[], MinimumTls::Tls13).await;
    let tls12 = ClientOptions {
        tls12_only: true,
        ..ClientOptions::default()
    };
    let e = request(s.port, &ca, &tls12, "GET", "/v2/", b"").await;
    assert!(e.is_err(), "TLS 1.2 must be refused");
    let a = request(s.port, &ca, &ClientOptions::default(), "GET", "/v2/", b"")
        .await
        .unwrap();
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_configured_cas() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let other = Ca::new("another CA");
    let s = server(&ca, &[&clients], MinimumTls::Tls12).await;

    let good = ClientOptions {
        identity: Some(clients.leaf("alice", true)),
        ..ClientOptions::default()
    };
    let a = request(s.port, &ca, &good, "GET", "/v2/", b"")
        .await
        .unwrap();
    assert_eq!(a.status, 200);

    for (what, opts) in [
        ("no client certificate", ClientOptions::default()),
        (
            "a certificate from another CA",
            ClientOptions {
                identity: Some(other.leaf("mallory", true)),
                ..ClientOptions::default()
            },
        ),
        (
            "a self-signed certificate",
            ClientOptions {
                identity: {
                    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
                    Some((c.cert.pem(), c.signing_key.serialize_pem()))
                },
                ..ClientOptions::default()
            },
        ),
    ] {
        for tls12_only in [false, true] {
            let opts = ClientOptions {
                tls12_only,
                identity: opts.identity.clone(),
                ..ClientOptions::default()
            };
            let r = request(s.port, &ca, &opts, "GET", "/v2/", b"").await;
            // With TLS 1.3 the client finishes its side first and sees the server's alert on
            // its first read; either way no HTTP answer ever comes.
            match r {
                Err(e) => assert!(
                    e.contains("handshake") || e.contains("request"),
                    "{what} (tls12_only={tls12_only}): {e}"
                ),
                Ok(a) => panic!("{what} (tls12_only={tls12_only}) got HTTP {}", a.status),
            }
        }
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let ca = Ca::new("test CA");
    let s = server(&ca, &[], MinimumTls::Tls12).await;
    let first = request(s.port, &ca, &ClientOptions::default(), "GET", "/v2/", b"")
        .await
        .unwrap()
        .peer_certificate;

    let (cert, key) = ca.leaf("server-2", false);
    // A key that does not match the certificate is not taken: the old pair stays.
    let (_, wrong_key) = ca.leaf("unused", false);
    std::fs::write(s.dir.path().join("server.crt"), &cert).unwrap();
    std::fs::write(s.dir.path().join("server.key"), &wrong_key).unwrap();
    tokio::time::sleep(berth_server::tls::RECHECK + Duration::from_millis(300)).await;
    let a = request(s.port, &ca, &ClientOptions::default(), "GET", "/v2/", b"")
        .await
        .unwrap();
    assert_eq!(
        a.peer_certificate, first,
        "a mismatched pair keeps the old one"
    );

    std::fs::write(s.dir.path().join("server.key"), &key).unwrap();
    tokio::time::sleep(berth_server::tls::RECHECK + Duration::from_millis(300)).await;
    let a = request(s.port, &ca, &ClientOptions::default(), "GET", "/v2/", b"")
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let want = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_ne!(a.peer_certificate, first);
    assert_eq!(a.peer_certificate, want, "the new certificate is served");
}
