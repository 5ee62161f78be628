//! `auth.token`: bearer tokens issued by an external token server, as in Distribution and
//! the Docker token specification.
//!
//! A JWT is accepted only when it is signed by a key from `rootcertbundle` (the public keys of
//! the PEM certificates in it) or from the `jwks` file, with an asymmetric algorithm that fits
//! that key (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA; never HMAC, so a public key can
//! never be used as a shared secret), and when its `iss` is `issuer`, its `aud` includes
//! `service`, `exp` is in the future and `nbf` (when present) in the past, each with
//! Distribution's 60 s of leeway. Its `access` claim then says what the request may do.
//!
//! Keys are matched by the header's `kid` when a `jwks` key carries that id; otherwise every
//! key of the right family is tried. A token whose `x5c` chain leads to a root through an
//! intermediate certificate is not supported: the signing key's certificate must itself be in
//! the bundle.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use super::Action;

/// Distribution's clock skew allowance.
const LEEWAY_SECONDS: u64 = 60;

/// The `auth.token` settings.
#[derive(Debug, Clone, Default)]
pub struct TokenOptions {
    /// Where clients get tokens (`realm` in the challenge).
    pub realm: String,
    /// This registry's name: the audience tokens must carry.
    pub service: String,
    /// The token server's name: the issuer tokens must carry.
    pub issuer: String,
    /// PEM certificates whose keys sign tokens.
    pub root_cert_bundle: Option<PathBuf>,
    /// A JSON Web Key Set file of keys that sign tokens.
    pub jwks: Option<PathBuf>,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// Verifies tokens.
pub struct TokenVerifier {
    pub(super) realm: String,
    pub(super) service: String,
    issuer: String,
    keys: Vec<Key>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("realm", &self.realm)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// One entry of the `access` claim.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct ResourceActions {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, `*`.
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    access: Vec<ResourceActions>,
}

/// What a verified token grants.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `sub`: the user the token was issued to (empty: anonymous).
    pub subject: String,
    /// The `access` claim.
    pub access: Vec<ResourceActions>,
    /// Issued by berth's own `/token` endpoint (so berth's policy semantics apply).
    pub issued_here: bool,
}

impl Grant {
    /// Whether the token grants `action` on repository `name`.
    pub fn allows(&self, name: &str, action: Action) -> bool {
        self.access.iter().any(|a| {
            a.kind == "repository"
                && a.name == name
                && a.actions.iter().any(|x| x == action.as_str() || x == "*")
        })
    }

    /// Whether the token grants `registry:catalog:*`.
    pub fn allows_catalog(&self) -> bool {
        self.access.iter().any(|a| {
            a.kind == "registry" && a.name == "catalog" && a.actions.iter().any(|x| x == "*")
        })
    }
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The signing keys of the PEM certificates in `path`.
fn keys_from_bundle(path: &Path) -> Result<Vec<Key>, String> {
    let at =
        |e: &dyn std::fmt::Display| format!("auth.token.rootcertbundle {}: {e}", path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| at(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| at(&e))?;
    if certs.is_empty() {
        return Err(at(&"no certificate in the file"));
    }
    let mut keys = Vec::new();
    for der in &certs {
        use x509_parser::prelude::FromDer as _;
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| at(&e))?;
        let spki = cert.public_key();
        let bits: &[u8] = &spki.subject_public_key.data;
        let oid = spki.algorithm.algorithm.to_id_string();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        let (key, algorithms) = match (oid.as_str(), curve.as_deref()) {
            ("1.2.840.113549.1.1.1", _) => {
                (DecodingKey::from_rsa_der(bits), RSA_ALGORITHMS.to_vec())
            }
            ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => {
                (DecodingKey::from_ec_der(bits), vec![Algorithm::ES256])
            }
            ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => {
                (DecodingKey::from_ec_der(bits), vec![Algorithm::ES384])
            }
            ("1.3.101.112", _) => (DecodingKey::from_ed_der(bits), vec![Algorithm::EdDSA]),
            other => {
                return Err(at(&format!(
                    "unsupported key type {other:?} (RSA, EC P-256/P-384 and Ed25519 are)"
                )));
            }
        };
        keys.push(Key {
            kid: None,
            key,
            algorithms,
        });
    }
    Ok(keys)
}

/// The keys of a JWKS file.
fn keys_from_jwks(path: &Path) -> Result<Vec<Key>, String> {
    let at = |e: &dyn std::fmt::Display| format!("auth.token.jwks {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(&e))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| at(&e))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithms = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return Err(at(&"unsupported elliptic curve")),
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => {
                return Err(at(&"symmetric keys are not accepted"));
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| at(&e))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            key,
            algorithms,
        });
    }
    Ok(keys)
}

impl TokenVerifier {
    /// Loads the keys; errors name the file at fault.
    pub fn new(options: &TokenOptions) -> Result<TokenVerifier, String> {
        for (name, value) in [
            ("realm", &options.realm),
            ("service", &options.service),
            ("issuer", &options.issuer),
        ] {
            if value.is_empty() {
                return Err(format!("auth.token.{name} is required"));
            }
        }
        let mut keys = Vec::new();
        if let Some(p) = &options.root_cert_bundle {
            keys.extend(keys_from_bundle(p)?);
        }
        if let Some(p) = &options.jwks {
            keys.extend(keys_from_jwks(p)?);
        }
        if keys.is_empty() {
            return Err("auth.token needs rootcertbundle or jwks with at least one key".into());
        }
        Ok(TokenVerifier {
            realm: options.realm.clone(),
            service: options.service.clone(),
            issuer: options.issuer.clone(),
            keys,
        })
    }

    /// Verifies a token: what it grants, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Grant, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let by_kid: Vec<&Key> = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&Key> = if by_kid.is_empty() {
            self.keys.iter().collect()
        } else {
            by_kid
        };
        let mut last = "no key of the token's algorithm".to_owned();
        for key in candidates
            .into_iter()
            .filter(|k| k.algorithms.contains(&header.alg))
        {
            let mut validation = Validation::new(header.alg);
            validation.algorithms = key.algorithms.clone();
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.service]);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    return Ok(Grant {
                        subject: data.claims.sub.unwrap_or_default(),
                        access: data.claims.access,
                        issued_here: false,
                    });
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        // Another key may have signed it.
                        ErrorKind::InvalidSignature
                        | ErrorKind::InvalidEcdsaKey
                        | ErrorKind::InvalidRsaKey(_)
                        | ErrorKind::Crypto(_) => {
                            last = format!("{e}");
                        }
                        // The signature checked out; the claims did not.
                        _ => return Err(format!("{e}")),
                    }
                }
            }
        }
        Err(format!("token refused: {last}"))
    }
}

/// The issuer and audience of the tokens berth's own `/token` endpoint issues.
pub const OWN_ISSUER: &str = "berth";

/// The `auth.tokenserver` settings (berth's own).
#[derive(Debug, Clone, Default)]
pub struct TokenServerOptions {
    /// The absolute URL of berth's `/token` as clients reach it (the challenge's realm).
    pub realm: String,
    /// The signing certificate (PEM).
    pub certificate: PathBuf,
    /// Its private key (PEM, PKCS#8 for EC and Ed25519).
    pub key: PathBuf,
    /// How long an issued token is valid.
    pub expiry: std::time::Duration,
}

/// berth's own token server: signs short-lived tokens for its htpasswd users, with the
/// access berth's policy gives them, and verifies them when they come back.
pub struct TokenIssuer {
    pub(super) realm: String,
    encoding: jsonwebtoken::EncodingKey,
    algorithm: Algorithm,
    pub(super) verifier: TokenVerifier,
    expiry: std::time::Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Loads the signing pair; errors name the file at fault.
    pub fn new(options: &TokenServerOptions) -> Result<TokenIssuer, String> {
        if options.realm.is_empty() {
            return Err("auth.tokenserver.realm is required (the URL of berth's /token)".into());
        }
        let keys = keys_from_bundle(&options.certificate)
            .map_err(|e| e.replace("auth.token.rootcertbundle", "auth.tokenserver.certificate"))?;
        let algorithm = keys
            .first()
            .and_then(|k| k.algorithms.first().copied())
            .ok_or("auth.tokenserver.certificate: no usable key")?;
        let pem = std::fs::read(&options.key)
            .map_err(|e| format!("auth.tokenserver.key {}: {e}", options.key.display()))?;
        let encoding = match algorithm {
            Algorithm::ES256 | Algorithm::ES384 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
        }
        .map_err(|e| format!("auth.tokenserver.key {}: {e}", options.key.display()))?;
        let verifier = TokenVerifier::new(&TokenOptions {
            realm: options.realm.clone(),
            service: OWN_ISSUER.into(),
            issuer: OWN_ISSUER.into(),
            root_cert_bundle: Some(options.certificate.clone()),
            jwks: None,
        })?;
        let issuer = TokenIssuer {
            realm: options.realm.clone(),
            encoding,
            algorithm,
            verifier,
            expiry: options.expiry.max(std::time::Duration::from_secs(10)),
        };
        // The key must fit the certificate: sign and verify one token now.
        let probe = issuer.issue("", Vec::new())?;
        issuer.verify(&probe).map_err(|e| {
            format!(
                "auth.tokenserver: key {} does not fit certificate {}: {e}",
                options.key.display(),
                options.certificate.display()
            )
        })?;
        Ok(issuer)
    }

    /// A signed token for `subject` with `access`.
    pub fn issue(&self, subject: &str, access: Vec<ResourceActions>) -> Result<String, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| format!("no randomness: {e}"))?;
        let claims = serde_json::json!({
            "iss": OWN_ISSUER,
            "sub": subject,
            "aud": OWN_ISSUER,
            "exp": now + self.expiry.as_secs(),
            "nbf": now.saturating_sub(10),
            "iat": now,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "access": access,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(self.algorithm),
            &claims,
            &self.encoding,
        )
        .map_err(|e| format!("cannot sign a token: {e}"))
    }

    /// Verifies a token this server issued.
    pub fn verify(&self, token: &str) -> Result<Grant, String> {
        self.verifier.verify(token).map(|mut g| {
            g.issued_here = true;
            g
        })
    }

    /// How long issued tokens are valid, in seconds.
    pub fn expires_in(&self) -> u64 {
        self.expiry.as_secs()
    }
}
