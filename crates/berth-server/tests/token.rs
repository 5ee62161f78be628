//! `auth.token`: bearer JWTs minted here with test keys (RS256 from `fixtures/token-rsa.*`, a
//! key made for these tests only; ES256 and EdDSA made by rcgen), checked for signature,
//! issuer, audience, expiry, not-before and the `access` claim; the challenges name the scope.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use base64::Engine as _;
use berth_registry::Options;
use berth_server::HttpOptions;
use berth_server::auth::{Auth, TokenOptions, TokenVerifier};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

const REALM: &str = "https://auth.test/token";
const SERVICE: &str = "registry.test";
const ISSUER: &str = "auth.test";
const RSA_KEY: &str = include_str!("fixtures/token-rsa.key");
const RSA_CERT: &str = include_str!("fixtures/token-rsa.crt");

struct Signers {
    rsa: EncodingKey,
    ec: EncodingKey,
    ec_kid: String,
    ed: EncodingKey,
    /// Not in the server's bundle.
    stranger: EncodingKey,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn self_signed(key: &rcgen::KeyPair) -> String {
    rcgen::CertificateParams::new(vec!["signer".to_owned()])
        .unwrap()
        .self_signed(key)
        .unwrap()
        .pem()
}

/// A server trusting the RSA and Ed25519 signers through a root certificate bundle and the
/// P-256 signer through a JWKS file (with a `kid`).
async fn server() -> (TestServer, Signers, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, format!("{RSA_CERT}{}", self_signed(&ed))).unwrap();
    // The P-256 key as a JWK: x and y from the uncompressed point 04||x||y.
    let raw = ec.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig",
                          "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]})
        .to_string(),
    )
    .unwrap();
    let verifier = TokenVerifier::new(&TokenOptions {
        realm: REALM.into(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        root_cert_bundle: Some(bundle),
        jwks: Some(jwks),
    })
    .unwrap();
    let http = HttpOptions {
        auth: Some(Arc::new(Auth::token(verifier))),
        ..HttpOptions::default()
    };
    let mut s = TestServer::start_with(
        Options {
            delete_enabled: true,
            ..Options::default()
        },
        http,
    )
    .await;
    let signers = Signers {
        rsa: EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap(),
        ec: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
        ec_kid: "ec-1".into(),
        ed: EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
        stranger: EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap(),
    };
    // The helpers push as a token holder with every right on the repositories used here.
    let all = claims(json!([
        {"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete"]},
        {"type": "repository", "name": "other", "actions": ["pull", "push"]},
    ]));
    let token = sign(&signers, Algorithm::ES256, &all);
    s.client = client_with(Some(&token));
    (s, signers, dir)
}

fn claims(access: Value) -> Value {
    json!({
        "iss": ISSUER,
        "sub": "tester",
        "aud": SERVICE,
        "exp": now() + 300,
        "nbf": now() - 10,
        "iat": now() - 10,
        "jti": "x",
        "access": access,
    })
}

fn sign(s: &Signers, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    let key = match alg {
        Algorithm::RS256 => &s.rsa,
        Algorithm::ES256 => {
            header.kid = Some(s.ec_kid.clone());
            &s.ec
        }
        Algorithm::EdDSA => &s.ed,
        other => panic!("no test key for {other:?}"),
    };
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn call(s: &TestServer, token: Option<&str>, method: Method, target: &str) -> (u16, String) {
    let r = client_with(token)
        .request(method, s.url(target))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge)
}

fn pull_app() -> Value {
    claims(json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}]))
}

#[tokio::test]
async fn challenges_name_realm_service_and_the_scope_needed() {
    let (s, _k, _d) = server().await;
    let b = format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"");
    for (method, target, want) in [
        (Method::GET, "/v2/", b.clone()),
        (
            Method::GET,
            "/v2/team/app/tags/list",
            format!("{b},scope=\"repository:team/app:pull\""),
        ),
        (
            Method::POST,
            "/v2/team/app/blobs/uploads/",
            format!("{b},scope=\"repository:team/app:pull,push\""),
        ),
        (
            Method::DELETE,
            "/v2/team/app/manifests/latest",
            format!("{b},scope=\"repository:team/app:delete\""),
        ),
        (
            Method::GET,
            "/v2/_catalog",
            format!("{b},scope=\"registry:catalog:*\""),
        ),
    ] {
        let (status, challenge) = call(&s, None, method.clone(), target).await;
        assert_eq!(
            (status, challenge.as_str()),
            (401, want.as_str()),
            "{method} {target}"
        );
    }
}

#[tokio::test]
async fn valid_tokens_of_each_algorithm_are_accepted_for_their_scope() {
    let (s, k, _d) = server().await;
    s.push_image("team/app", "latest", 1).await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let t = sign(&k, alg, &pull_app());
        let (status, _) = call(&s, Some(&t), Method::GET, "/v2/team/app/tags/list").await;
        assert_eq!(status, 200, "{alg:?}");
        let (status, _) = call(&s, Some(&t), Method::GET, "/v2/team/app/manifests/latest").await;
        assert_eq!(status, 200, "{alg:?}");
        let (status, _) = call(&s, Some(&t), Method::GET, "/v2/").await;
        assert_eq!(status, 200, "{alg:?}: any valid token logs in");
    }
    // A pull token cannot push or delete: 401 insufficient_scope, so the client asks again.
    let t = sign(&k, Algorithm::ES256, &pull_app());
    let (status, challenge) = call(&s, Some(&t), Method::POST, "/v2/team/app/blobs/uploads/").await;
    assert_eq!(status, 401);
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:team/app:pull,push\""),
        "{challenge}"
    );
    let (status, _) = call(
        &s,
        Some(&t),
        Method::DELETE,
        "/v2/team/app/manifests/latest",
    )
    .await;
    assert_eq!(status, 401);
    // Push alone is not enough for a write (Distribution: pull and push).
    let push_only =
        claims(json!([{"type": "repository", "name": "team/app", "actions": ["push"]}]));
    let t = sign(&k, Algorithm::ES256, &push_only);
    let (status, _) = call(&s, Some(&t), Method::POST, "/v2/team/app/blobs/uploads/").await;
    assert_eq!(status, 401);
    let both =
        claims(json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]));
    let t = sign(&k, Algorithm::RS256, &both);
    let (status, _) = call(&s, Some(&t), Method::POST, "/v2/team/app/blobs/uploads/").await;
    assert_eq!(status, 202);
    // The catalog needs registry:catalog:*, and then lists everything.
    let (status, _) = call(&s, Some(&t), Method::GET, "/v2/_catalog").await;
    assert_eq!(status, 401);
    let cat = claims(json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]));
    let t = sign(&k, Algorithm::EdDSA, &cat);
    let r = client_with(Some(&t))
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["repositories"], json!(["team/app"]));
}

#[tokio::test]
async fn bad_tokens_are_each_refused() {
    let (s, k, _d) = server().await;
    s.push_image("team/app", "latest", 2).await;
    let target = "/v2/team/app/tags/list";
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = pull_app();
        f(&mut c);
        c
    };
    let good = sign(&k, Algorithm::ES256, &pull_app());
    assert_eq!(call(&s, Some(&good), Method::GET, target).await.0, 200);

    let mut cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(
                &k,
                Algorithm::ES256,
                &with(&|c| c["exp"] = json!(now() - 3600)),
            ),
        ),
        (
            "not yet valid",
            sign(
                &k,
                Algorithm::ES256,
                &with(&|c| c["nbf"] = json!(now() + 3600)),
            ),
        ),
        (
            "no expiry",
            sign(
                &k,
                Algorithm::ES256,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        (
            "wrong issuer",
            sign(
                &k,
                Algorithm::RS256,
                &with(&|c| c["iss"] = json!("evil.test")),
            ),
        ),
        (
            "wrong audience",
            sign(
                &k,
                Algorithm::EdDSA,
                &with(&|c| c["aud"] = json!("other-registry")),
            ),
        ),
        (
            "wrong scope (another repository)",
            sign(
                &k,
                Algorithm::ES256,
                &with(&|c| {
                    c["access"] =
                        json!([{"type": "repository", "name": "team/other", "actions": ["pull"]}])
                }),
            ),
        ),
        (
            "wrong scope (push only)",
            sign(
                &k,
                Algorithm::ES256,
                &with(&|c| {
                    c["access"] =
                        json!([{"type": "repository", "name": "team/app", "actions": ["push"]}])
                }),
            ),
        ),
        (
            "unknown signing key",
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &pull_app(), &k.stranger).unwrap(),
        ),
        (
            "HS256 with the public certificate as the secret",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &pull_app(),
                &EncodingKey::from_secret(RSA_CERT.as_bytes()),
            )
            .unwrap(),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    // Tampered: the payload of a valid token swapped for one granting more.
    let parts: Vec<&str> = good.split('.').collect();
    let mut more = pull_app();
    more["access"] =
        json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete"]}]);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(more.to_string());
    cases.push(("tampered", format!("{}.{payload}.{}", parts[0], parts[2])));
    // alg none
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    cases.push(("alg none", format!("{none_header}.{}.", parts[1])));

    for (what, token) in &cases {
        let (status, challenge) = call(&s, Some(token), Method::GET, target).await;
        assert_eq!(status, 401, "{what}");
        assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
    }
    // A tampered token for a delete must not delete.
    let (status, _) = call(
        &s,
        Some(&cases.last().unwrap().1),
        Method::DELETE,
        "/v2/team/app/manifests/latest",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        call(
            &s,
            Some(&good),
            Method::GET,
            "/v2/team/app/manifests/latest"
        )
        .await
        .0,
        200
    );
}
