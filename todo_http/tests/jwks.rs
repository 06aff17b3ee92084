//! Token verification: HS256 with a shared secret, and JWKS (EdDSA / RS256 / ES256) served by
//! a fake key server on 127.0.0.1 that counts its requests and can rotate, fail or hang.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::listener::{Acceptor as _, Listener as _, TcpListener};
use poem::{Response, Server, http::StatusCode};
use serde_json::{Value, json};
use todo_http::auth::{
    AuthConfigError, AuthError, Authenticator, JwtAuthenticator, JwtConfig, Principal, mint_hs256,
};

// Test-only keys, generated once with `openssl genpkey -algorithm ed25519`, `openssl genrsa
// -traditional 2048` (PKCS#1) and `openssl ecparam -name prime256v1` + `pkcs8 -topk8` (DER,
// base64). jsonwebtoken is built without `use_pem`, so DER is what its EncodingKey accepts.
const ED_A_DER: &str = "MC4CAQAwBQYDK2VwBCIEIKUyVvIygfh88jvDFQNzpmXRuxAwpIIs+KGnbQ0ndHs/";
const ED_B_DER: &str = "MC4CAQAwBQYDK2VwBCIEIK2es1/vnyMymRziSh4nICrTbzdFaNDMJpyCfDzha6Yf";
const ED_X_DER: &str = "MC4CAQAwBQYDK2VwBCIEIERArQdNUx5J3zLejdfIIiU9v7PeGlZNAFXth5WAFDqx";
const EC_DER: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjO7fhnlRKmpfTjpyOkBR2/B9wa/3zjynGIiVW4csRGShRANCAASTCuLDkOFI/YK2i739IgLcjvfS+YjfrQOBdcIk+gNLLCt3Z9a4bcfixavMNOvB0EJX3tIVAIecpoL4bbqIynmv";
const RSA_DER: &str = "MIIEowIBAAKCAQEAsJ+UTvQTPC83c74qSFNfsFRTwbmM4VRKqSxu/OaNBz2Dq5WVSY/5TwvDxR8sS4ypmm5rXLF6YUfrm9xfYdW5SVt5+I8Dx3nboWz9WrNuGNbmz9FcAky6MZ0gKlDHTPsb1WWPe5s9bOSxMlmo9mfJHSbai1K+rFkDJ1EA4HjiFFaC+xIVcQoaiBxkr9p6c9ryPcUWcSQfSBnyUPq+wRceBE8eGr/MnODopTGNhCn9D4VIu1VvSyFL7Ie9fjkp8iGTDcm4a8BJRhJAeTG4YjLau93x1y7wBEyFMXjWxvbvov58FzvemR5qxAls8uqW+l1Z/5o6YdccNwzIS9pgHkYtHwIDAQABAoIBADUyaz34f46h/garYRrVmb2HOI7hrw/zDmWzz132psVmfrEAZa15YrKvLXDCudmrbS3pUgbiIaUJP2p7TnMuJxd0KOF3WcEL793H8OsPnfp3R5+SRC8hIvdshtKX7988xp5Yb4XgNPkGTGSI4r4MdmOEX1CVRH6udKez2xrA7f8Hq1u8C/q0uy/VfUMsOZRsm1wMn0x60SU+eKDbdhThZx0zQzA6N6smI7XaloGK4XUYAR9l9yp8jaYX7NWxQnKprN25TJ6QImjjCIrYRIGwYuK+ceVYFZZpwN8iM4cOz4U100ZBmj93SAGHay3ZP2iF8hP3FBZf27fO6N/gSfLok9kCgYEA2hxptfAkBzB/R7IT1pXVFAt2XT/GURnEoHGfuth7dj8mQFOpe2ZFmPOxSpoJEGcP9YI7NhjD/D7AUwbzhLuUupZInlmZc62atrQa2xUbNi2ulRlM+NQWLwIbIi7BwoJmVooAYgEcEANAlAbcX1vjOor7LhisIIfVoAXd/SrXOXMCgYEAz04szkbuEOWNqmY/+HuzXEMXB2i3ud7PkdHQgSXyQEfb3OOxK+IQCU8wtA59R0mYYM9CXnBFNm6pxOR4zqadqOqXXZcxhXilyz1/j4ZuSGuQ2ARlkMAxQxHffjyxO4yByArXVOTe/oSqpVBhTtLyLzONcrK2XMoeVpoxbtqnwqUCgYBx9nSZlr8Mbp+ik35gGeu6zH5tHLx/dapSduwR0bk4wKg45j3g90AYOgSByVhBFMi26/QKQQhuTU9qUnB9AxIkKBALhR9z3NrA6fw6Sp3sQhQ9XXnlbdOlfkE1LB8bhcz5HKQ0kQXbrAdbEPamcLmaxjGWFVgiqzbIpSgndvH71wKBgDU+HsPb88jjLD9Xg5aOLsLDeGauvoE+eJE7EhIZbN6VliJlWFus8/FwJVIZZpOokzpKAQHAVAZm5bNr+psYr+VyWu3upwlgszQ/10NFg42WEt1oQ62prv1K2dvSOrLQo4R9RFDJd3xnFmze+B8Gjq0Q0INk4vFx99jGQWv3PJ8BAoGBANLavykBKDR0P4wzZ5GHj3jIR9qPaO/IUxHZq9Rw6qwsAsgGUnLp09c36Bll177PvhQJ5u9mF5oUzJE8pAG3MqdZq0LvLezRqg6dqJ1cNE9WEho9Gki29adsMwZg8SsoG5aHnwQJbzaWkqPF9GW2WbPLte+ccRYMZnchqm0oVqbr";

const SECRET: &str = "test-secret-that-is-long-enough-0123456789";

fn der(b64: &str) -> Vec<u8> {
    STANDARD.decode(b64).expect("test key is valid base64")
}
fn ed_key(b64: &str) -> EncodingKey {
    EncodingKey::from_ed_der(&der(b64))
}
fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_der(&der(RSA_DER))
}
fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_der(&der(EC_DER))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `{"sub": "user-1", "exp": now + 600}` plus `extra` fields (a `null` removes a field).
fn claims(extra: Value) -> Value {
    let mut c = json!({ "sub": "user-1", "exp": now() + 600 });
    if let (Some(map), Value::Object(extra)) = (c.as_object_mut(), extra) {
        for (k, v) in extra {
            if v.is_null() {
                map.remove(&k);
            } else {
                map.insert(k, v);
            }
        }
    }
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signing works")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A hand-made unsigned token: `{"alg": alg}` header, payload, empty signature.
fn unsigned(alg: &str, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(&json!({ "alg": alg, "typ": "JWT" })),
        b64(claims)
    )
}

async fn hs_auth(cfg: JwtConfig) -> JwtAuthenticator {
    JwtAuthenticator::new(cfg).await.expect("valid config")
}

/// Any principal of one user, whatever its expiry.
#[derive(Debug)]
struct UserIs(String);

impl PartialEq<UserIs> for Principal {
    fn eq(&self, other: &UserIs) -> bool {
        self.user_id == other.0
    }
}

fn user(id: &str) -> UserIs {
    UserIs(id.to_owned())
}

#[track_caller]
fn assert_invalid(result: Result<Principal, AuthError>, what: &str) {
    match result {
        Err(AuthError::Invalid(_)) => {}
        other => panic!("{what}: expected AuthError::Invalid, got {other:?}"),
    }
}

fn request(authorization: Option<&str>) -> poem::Request {
    let mut builder = poem::Request::builder();
    if let Some(value) = authorization {
        builder = builder.header("Authorization", value);
    }
    builder.finish()
}

// ---------------------------------------------------------------------------------------------
// HS256

#[tokio::test]
async fn hs256_valid_token_accepted() {
    let auth = hs_auth(JwtConfig::hs256(SECRET)).await;
    let token = hs256(&claims(json!({ "sub": "Alice.B@x:1-2" })));
    assert_eq!(
        auth.verify(&token).await.expect("valid"),
        user("Alice.B@x:1-2")
    );
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let req = request(Some(&format!("{scheme} {token}")));
        assert_eq!(
            auth.authenticate(&req).await.expect("valid"),
            user("Alice.B@x:1-2"),
            "scheme {scheme}"
        );
    }
}

#[tokio::test]
async fn hs256_expiry_and_not_before_enforced_with_explicit_leeway() {
    let auth = hs_auth(JwtConfig::hs256(SECRET)).await;
    let t = now();
    // jsonwebtoken's default leeway (60 s) would accept these two.
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "exp": t - 30 })))).await,
        "exp -30 s",
    );
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "exp": t - 3600 }))))
            .await,
        "exp -1 h",
    );
    // jsonwebtoken does not check nbf by default.
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "nbf": t + 30 })))).await,
        "nbf +30 s",
    );
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "nbf": t + 86_400 }))))
            .await,
        "nbf +1 d",
    );
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "exp": null })))).await,
        "no exp",
    );
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "exp": "soon" })))).await,
        "text exp",
    );
    assert_eq!(
        auth.verify(&hs256(&claims(json!({ "nbf": t - 30, "iat": t - 30 }))))
            .await
            .expect("nbf in the past"),
        user("user-1")
    );

    let lenient = hs_auth(JwtConfig {
        leeway_secs: 60,
        ..JwtConfig::hs256(SECRET)
    })
    .await;
    lenient
        .verify(&hs256(&claims(json!({ "exp": t - 30 }))))
        .await
        .expect("within a 60 s leeway");
    lenient
        .verify(&hs256(&claims(json!({ "nbf": t + 30 }))))
        .await
        .expect("within a 60 s leeway");
    assert_invalid(
        lenient
            .verify(&hs256(&claims(json!({ "exp": t - 120 }))))
            .await,
        "-120 s",
    );
}

#[tokio::test]
async fn hs256_rejects_bad_signatures_and_other_algorithms() {
    let auth = hs_auth(JwtConfig::hs256(SECRET)).await;
    let c = claims(json!({}));
    let other = EncodingKey::from_secret(b"another-secret-another-secret-0123456789");
    assert_invalid(
        auth.verify(&sign(Algorithm::HS256, None, &other, &c)).await,
        "wrong key",
    );

    // Payload swapped under a valid signature.
    let good = hs256(&c);
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims(json!({ "sub": "admin" }))),
        parts[2]
    );
    assert_invalid(auth.verify(&forged).await, "tampered payload");
    let truncated = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 2]
    );
    assert_invalid(auth.verify(&truncated).await, "truncated signature");

    let same_secret = EncodingKey::from_secret(SECRET.as_bytes());
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        assert_invalid(
            auth.verify(&sign(alg, None, &same_secret, &c)).await,
            "HS384/HS512",
        );
    }
    for alg in ["none", "None", "NONE", "nOnE"] {
        assert_invalid(auth.verify(&unsigned(alg, &c)).await, "alg none");
        // Even with the HS256 signature of the same header+payload appended.
        assert_invalid(
            auth.verify(&format!("{}{}", unsigned(alg, &c), parts[2]))
                .await,
            "alg none with signature",
        );
    }
    // Asymmetric tokens are not accepted with a shared secret.
    assert_invalid(
        auth.verify(&sign(Algorithm::EdDSA, None, &ed_key(ED_A_DER), &c))
            .await,
        "EdDSA",
    );
}

#[tokio::test]
async fn hs256_requires_a_non_empty_string_sub() {
    let auth = hs_auth(JwtConfig::hs256(SECRET)).await;
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "sub": null })))).await,
        "no sub",
    );
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "sub": "" })))).await,
        "empty sub",
    );
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "sub": 42 })))).await,
        "numeric sub",
    );
    assert_invalid(
        auth.verify(&hs256(&claims(json!({ "sub": ["a"] })))).await,
        "array sub",
    );
}

#[tokio::test]
async fn garbled_tokens_are_invalid_and_never_echoed() {
    let auth = hs_auth(JwtConfig::hs256(SECRET)).await;
    let good = hs256(&claims(json!({})));
    let long = "A".repeat(100_000);
    let cases = [
        "garbled-token-value".to_owned(),
        "a.b".to_owned(),
        "a.b.c".to_owned(),
        "a.b.c.d".to_owned(),
        "..".to_owned(),
        "....".to_owned(),
        "ü.ü.ü".to_owned(),
        "\u{0}.\u{0}.\u{0}".to_owned(),
        format!("{good}.extra"),
        format!("{good} "),
        good.replace('.', ""),
        format!("{}.{}.sig", b64(&json!("not an object")), b64(&json!({}))),
        format!("{}.{}.", b64(&json!({ "alg": 7 })), b64(&json!({}))),
        format!("{}.{}.", b64(&json!({ "alg": "HS256" })), "%%%"),
        format!(
            "{}.{}.AAAA",
            b64(&json!({ "alg": "HS256" })),
            b64(&json!([1, 2]))
        ),
        format!("{long}.{long}.{long}"),
    ];
    for token in &cases {
        let err = auth.verify(token).await.expect_err("must be rejected");
        assert!(matches!(err, AuthError::Invalid(_)), "{token:.40}: {err:?}");
        let text = err.to_string();
        assert!(
            !text.contains("garbled") && text.len() < 120,
            "echoed token: {text}"
        );
    }
    let err = auth
        .verify(&hs256(&claims(
            json!({ "sub": "", "secret-ish": "zzz-top" }),
        )))
        .await
        .expect_err("empty sub");
    assert!(!err.to_string().contains("zzz-top"));
}

#[tokio::test]
async fn authorization_header_parsing() {
    let auth = hs_auth(JwtConfig::hs256(SECRET)).await;
    let token = hs256(&claims(json!({})));
    assert!(matches!(
        auth.authenticate(&request(None)).await,
        Err(AuthError::Missing)
    ));
    for value in [
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
    ] {
        assert!(
            matches!(
                auth.authenticate(&request(Some(value))).await,
                Err(AuthError::Missing)
            ),
            "{value:?}"
        );
    }
    // The token alone (no scheme), or with another scheme, is not a bearer token.
    assert!(matches!(
        auth.authenticate(&request(Some(&token))).await,
        Err(AuthError::Missing)
    ));
    assert!(matches!(
        auth.authenticate(&request(Some(&format!("Basic {token}"))))
            .await,
        Err(AuthError::Missing)
    ));
    assert!(matches!(
        auth.authenticate(&request(Some("Bearer not-a-jwt"))).await,
        Err(AuthError::Invalid(_))
    ));
    let req = poem::Request::builder()
        .header(
            "Authorization",
            poem::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("opaque bytes"),
        )
        .finish();
    assert!(matches!(
        auth.authenticate(&req).await,
        Err(AuthError::Invalid(_))
    ));
    assert_eq!(
        auth.authenticate(&request(Some(&format!("Bearer   {token}  "))))
            .await
            .expect("extra spaces"),
        user("user-1")
    );
    assert_eq!(AuthError::Missing.to_string(), "missing bearer token");
}

#[tokio::test]
async fn iss_and_aud_accepted_when_not_configured() {
    let auth = hs_auth(JwtConfig::hs256(SECRET)).await;
    for extra in [
        json!({ "aud": "http://localhost:3000" }),
        json!({ "aud": ["a", "b"] }),
        json!({ "iss": "http://localhost:3000" }),
        json!({ "iss": "x", "aud": "y" }),
    ] {
        assert_eq!(
            auth.verify(&hs256(&claims(extra.clone())))
                .await
                .expect("accepted"),
            user("user-1"),
            "{extra}"
        );
    }
}

#[tokio::test]
async fn iss_and_aud_checked_and_required_when_configured() {
    let auth = hs_auth(JwtConfig {
        issuer: Some("https://app.example".into()),
        audience: Some("todo-api".into()),
        ..JwtConfig::hs256(SECRET)
    })
    .await;
    let ok = json!({ "iss": "https://app.example", "aud": "todo-api" });
    auth.verify(&hs256(&claims(ok)))
        .await
        .expect("right iss and aud");
    let ok = json!({ "iss": "https://app.example", "aud": ["other", "todo-api"] });
    auth.verify(&hs256(&claims(ok)))
        .await
        .expect("aud list containing ours");
    for bad in [
        json!({ "iss": "https://evil.example", "aud": "todo-api" }),
        json!({ "iss": "https://app.example", "aud": "other-api" }),
        json!({ "iss": "https://app.example", "aud": ["a", "b"] }),
        json!({ "aud": "todo-api" }),
        json!({ "iss": "https://app.example" }),
        json!({ "iss": "https://APP.example", "aud": "todo-api" }),
    ] {
        assert_invalid(
            auth.verify(&hs256(&claims(bad.clone()))).await,
            &bad.to_string(),
        );
    }
}

#[tokio::test]
async fn mint_hs256_round_trip() {
    let token = mint_hs256(SECRET, "demo-user", Duration::from_secs(3600)).expect("mint");
    let auth = hs_auth(JwtConfig::hs256(SECRET)).await;
    assert_eq!(auth.verify(&token).await.expect("valid"), user("demo-user"));
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, Algorithm::HS256);
    let payload = token.split('.').nth(1).expect("payload");
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    let exp = payload["exp"].as_u64().expect("exp");
    assert!(exp.abs_diff(now() + 3600) <= 2, "exp = {exp}");
    assert_eq!(payload["sub"], "demo-user");

    let other = hs_auth(JwtConfig::hs256("a-different-secret-of-sufficient-length")).await;
    assert_invalid(other.verify(&token).await, "other secret");
    assert!(mint_hs256("", "u", Duration::from_secs(60)).is_err());
    assert!(mint_hs256(SECRET, "", Duration::from_secs(60)).is_err());
}

// ---------------------------------------------------------------------------------------------
// Configuration

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn from_lookup_precedence() {
    assert!(JwtConfig::from_lookup(lookup(&[])).expect("ok").is_none());

    let cfg = JwtConfig::from_lookup(lookup(&[("BETTER_AUTH_SECRET", "ba-secret")]))
        .expect("ok")
        .expect("configured");
    assert_eq!(cfg.secret.as_deref(), Some("ba-secret"));
    assert_eq!(cfg.jwks_url, None);

    let cfg = JwtConfig::from_lookup(lookup(&[
        ("BETTER_AUTH_SECRET", "ba-secret"),
        ("TODO_JWT_SECRET", "own-secret"),
    ]))
    .expect("ok")
    .expect("configured");
    assert_eq!(cfg.secret.as_deref(), Some("own-secret"));

    let cfg = JwtConfig::from_lookup(lookup(&[
        ("BETTER_AUTH_SECRET", "ba-secret"),
        ("TODO_JWKS_URL", "http://localhost:3000/api/auth/jwks"),
        ("TODO_JWT_ISSUER", " http://localhost:3000 "),
        ("TODO_JWT_AUDIENCE", "http://localhost:3000"),
        ("TODO_JWT_LEEWAY_SECS", "10"),
    ]))
    .expect("ok")
    .expect("configured");
    assert_eq!(
        cfg.secret, None,
        "BETTER_AUTH_SECRET is ignored with a JWKS"
    );
    assert_eq!(
        cfg.jwks_url.as_deref(),
        Some("http://localhost:3000/api/auth/jwks")
    );
    assert_eq!(cfg.issuer.as_deref(), Some("http://localhost:3000"));
    assert_eq!(cfg.audience.as_deref(), Some("http://localhost:3000"));
    assert_eq!(cfg.leeway_secs, 10);

    let debug = format!("{:?}", JwtConfig::hs256("super-secret-value"));
    assert!(!debug.contains("super-secret-value"), "{debug}");
}

#[test]
fn from_lookup_errors() {
    let err = |vars: &[(&str, &str)]| {
        JwtConfig::from_lookup(lookup(vars)).expect_err(&format!("{vars:?} must be rejected"))
    };
    assert!(matches!(
        err(&[
            ("TODO_JWKS_URL", "https://a.example/jwks"),
            ("TODO_JWT_SECRET", "s")
        ]),
        AuthConfigError::SecretAndJwks
    ));
    assert!(matches!(
        err(&[("TODO_JWT_SECRET", "")]),
        AuthConfigError::EmptySecret(_)
    ));
    assert!(matches!(
        err(&[("BETTER_AUTH_SECRET", "  ")]),
        AuthConfigError::EmptySecret(_)
    ));
    for url in [
        "ftp://a.example/jwks",
        "not a url",
        "/relative/jwks",
        "https://u:p@a.example/",
    ] {
        assert!(
            matches!(
                err(&[("TODO_JWKS_URL", url)]),
                AuthConfigError::InvalidJwksUrl(_)
            ),
            "{url}"
        );
    }
    for leeway in ["abc", "-1", "100000"] {
        assert!(matches!(
            err(&[("TODO_JWT_SECRET", "s"), ("TODO_JWT_LEEWAY_SECS", leeway)]),
            AuthConfigError::InvalidValue { .. }
        ));
    }
    assert!(matches!(
        err(&[("TODO_JWT_ISSUER", "x")]),
        AuthConfigError::NoKeySource
    ));
    // The error text names the variable, not the secret.
    let text = err(&[
        ("TODO_JWKS_URL", "https://a.example/"),
        ("TODO_JWT_SECRET", "hunter2"),
    ])
    .to_string();
    assert!(!text.contains("hunter2"));
}

#[tokio::test]
async fn new_rejects_bad_configs() {
    let err = |cfg: JwtConfig| async move {
        JwtAuthenticator::new(cfg)
            .await
            .expect_err("must be rejected")
    };
    assert!(matches!(
        err(JwtConfig::default()).await,
        AuthConfigError::NoKeySource
    ));
    assert!(matches!(
        err(JwtConfig {
            secret: Some("s".into()),
            ..JwtConfig::jwks("http://127.0.0.1:9/jwks")
        })
        .await,
        AuthConfigError::SecretAndJwks
    ));
    assert!(matches!(
        err(JwtConfig::hs256("")).await,
        AuthConfigError::EmptySecret(_)
    ));
    assert!(matches!(
        err(JwtConfig {
            leeway_secs: u64::MAX,
            ..JwtConfig::hs256(SECRET)
        })
        .await,
        AuthConfigError::InvalidValue { .. }
    ));
    assert!(matches!(
        err(JwtConfig {
            issuer: Some(String::new()),
            ..JwtConfig::hs256(SECRET)
        })
        .await,
        AuthConfigError::InvalidValue { .. }
    ));
    assert!(matches!(
        err(JwtConfig::jwks("gopher://x/")).await,
        AuthConfigError::InvalidJwksUrl(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// JWKS

#[derive(Clone)]
enum Reply {
    Keys(Value),
    SlowKeys(Value),
    Status(u16),
    Body(&'static str),
    Hang,
}

struct FakeJwks {
    url: String,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
}

impl FakeJwks {
    async fn start(reply: Reply) -> Self {
        let reply = Arc::new(Mutex::new(reply));
        let hits = Arc::new(AtomicUsize::new(0));
        let ep = {
            let (reply, hits) = (Arc::clone(&reply), Arc::clone(&hits));
            poem::endpoint::make(move |_req: poem::Request| {
                let (reply, hits) = (Arc::clone(&reply), Arc::clone(&hits));
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let current = reply.lock().expect("lock").clone();
                    match current {
                        Reply::Keys(keys) => Response::builder()
                            .content_type("application/json")
                            .body(keys.to_string()),
                        Reply::SlowKeys(keys) => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Response::builder()
                                .content_type("application/json")
                                .body(keys.to_string())
                        }
                        Reply::Body(body) => Response::builder()
                            .content_type("application/json")
                            .body(body),
                        Reply::Status(code) => Response::builder()
                            .status(StatusCode::from_u16(code).expect("status"))
                            .body("nope"),
                        Reply::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            Response::builder().body("{}")
                        }
                    }
                }
            })
        };
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind");
        let addr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("socket address");
        tokio::spawn(Server::new_with_acceptor(acceptor).run(ep));
        Self {
            url: format!("http://{addr}/api/auth/jwks"),
            reply,
            hits,
        }
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock().expect("lock") = reply;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).expect("json")
}

const OCT_SECRET: &[u8] = b"symmetric-key-published-in-jwks!";

/// Ed25519 `ed-a`, RSA `rsa-a`, P-256 `ec-a`, plus entries that must be ignored.
fn initial_set() -> Value {
    json!({ "keys": [
        jwk(&ed_key(ED_A_DER), Algorithm::EdDSA, "ed-a"),
        jwk(&rsa_key(), Algorithm::RS256, "rsa-a"),
        jwk(&ec_key(), Algorithm::ES256, "ec-a"),
        { "kty": "oct", "kid": "oct-1", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(OCT_SECRET) },
        { "kty": "OKP", "crv": "X25519", "kid": "x25519", "x": URL_SAFE_NO_PAD.encode([7u8; 32]) },
        { "kty": "OKP", "crv": "Ed25519", "kid": "short", "x": URL_SAFE_NO_PAD.encode([7u8; 5]) },
        { "kty": "unknown", "kid": "weird" },
        with_field(jwk(&ed_key(ED_X_DER), Algorithm::EdDSA, "ed-enc"), "use", json!("enc")),
    ]})
}

fn with_field(mut v: Value, name: &str, value: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.insert(name.to_owned(), value);
    }
    v
}

async fn jwks_auth(server: &FakeJwks, min_refresh: Duration) -> Arc<JwtAuthenticator> {
    let cfg = JwtConfig {
        jwks_min_refresh: min_refresh,
        jwks_timeout: Duration::from_millis(500),
        ..JwtConfig::jwks(server.url.clone())
    };
    Arc::new(JwtAuthenticator::new(cfg).await.expect("JWKS loads"))
}

#[tokio::test]
async fn jwks_verifies_its_keys_and_nothing_else() {
    let server = FakeJwks::start(Reply::Keys(initial_set())).await;
    let auth = jwks_auth(&server, Duration::from_secs(60)).await;
    assert_eq!(server.hits(), 1, "fetched once at start");
    let c = claims(json!({}));

    let ed = ed_key(ED_A_DER);
    for (alg, kid, key) in [
        (Algorithm::EdDSA, "ed-a", &ed),
        (Algorithm::RS256, "rsa-a", &rsa_key()),
        (Algorithm::ES256, "ec-a", &ec_key()),
    ] {
        let token = sign(alg, Some(kid), key, &c);
        assert_eq!(
            auth.verify(&token).await.expect(kid),
            user("user-1"),
            "{kid}"
        );
        let req = request(Some(&format!("Bearer {token}")));
        assert_eq!(auth.authenticate(&req).await.expect(kid), user("user-1"));
    }
    // No kid: the only EdDSA key of the set is used.
    assert_eq!(
        auth.verify(&sign(Algorithm::EdDSA, None, &ed, &c))
            .await
            .expect("no kid"),
        user("user-1")
    );
    // Claims rules apply as with a secret.
    let expired = claims(json!({ "exp": now() - 30 }));
    assert_invalid(
        auth.verify(&sign(Algorithm::EdDSA, Some("ed-a"), &ed, &expired))
            .await,
        "exp",
    );
    let no_sub = claims(json!({ "sub": null }));
    assert_invalid(
        auth.verify(&sign(Algorithm::EdDSA, Some("ed-a"), &ed, &no_sub))
            .await,
        "sub",
    );

    let stranger = ed_key(ED_X_DER);
    let cases = [
        (
            "unknown key",
            sign(Algorithm::EdDSA, Some("ed-x"), &stranger, &c),
        ),
        (
            "unknown key, known kid",
            sign(Algorithm::EdDSA, Some("ed-a"), &stranger, &c),
        ),
        (
            "unknown key, no kid",
            sign(Algorithm::EdDSA, None, &stranger, &c),
        ),
        (
            "encryption key",
            sign(Algorithm::EdDSA, Some("ed-enc"), &stranger, &c),
        ),
        (
            "invalid published key",
            sign(Algorithm::EdDSA, Some("short"), &stranger, &c),
        ),
        (
            "alg of another key",
            sign(Algorithm::EdDSA, Some("rsa-a"), &ed, &c),
        ),
        (
            "RS256 under an Ed kid",
            sign(Algorithm::RS256, Some("ed-a"), &rsa_key(), &c),
        ),
        (
            "PS256 with the RSA key",
            sign(Algorithm::PS256, Some("rsa-a"), &rsa_key(), &c),
        ),
        (
            "HS256 with the secret",
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                &c,
            ),
        ),
        (
            "HS256 with a published oct key",
            sign(
                Algorithm::HS256,
                Some("oct-1"),
                &EncodingKey::from_secret(OCT_SECRET),
                &c,
            ),
        ),
        (
            "HS256 keyed with the RSA modulus",
            sign(
                Algorithm::HS256,
                Some("rsa-a"),
                &EncodingKey::from_secret(&der(RSA_DER)),
                &c,
            ),
        ),
        ("alg none", unsigned("none", &c)),
    ];
    for (what, token) in &cases {
        assert_invalid(auth.verify(token).await, what);
    }
    assert_eq!(
        server.hits(),
        1,
        "no refetch inside the minimum refresh interval"
    );
}

#[tokio::test]
async fn jwks_with_better_auth_style_iss_and_aud() {
    let server = FakeJwks::start(Reply::Keys(initial_set())).await;
    let auth = JwtAuthenticator::new(JwtConfig {
        issuer: Some("http://localhost:3000".into()),
        audience: Some("http://localhost:3000".into()),
        ..JwtConfig::jwks(server.url.clone())
    })
    .await
    .expect("JWKS loads");
    let ed = ed_key(ED_A_DER);
    let good = claims(json!({ "iss": "http://localhost:3000", "aud": "http://localhost:3000" }));
    auth.verify(&sign(Algorithm::EdDSA, Some("ed-a"), &ed, &good))
        .await
        .expect("valid");
    let bad = claims(json!({ "iss": "http://localhost:3000", "aud": "http://other" }));
    assert_invalid(
        auth.verify(&sign(Algorithm::EdDSA, Some("ed-a"), &ed, &bad))
            .await,
        "aud",
    );
    let none = claims(json!({}));
    assert_invalid(
        auth.verify(&sign(Algorithm::EdDSA, Some("ed-a"), &ed, &none))
            .await,
        "iss",
    );
}

#[tokio::test]
async fn jwks_token_without_kid_needs_a_single_candidate() {
    let set = json!({ "keys": [
        jwk(&ed_key(ED_A_DER), Algorithm::EdDSA, "ed-a"),
        jwk(&ed_key(ED_B_DER), Algorithm::EdDSA, "ed-b"),
    ]});
    let server = FakeJwks::start(Reply::Keys(set)).await;
    let auth = jwks_auth(&server, Duration::from_secs(60)).await;
    let c = claims(json!({}));
    assert_invalid(
        auth.verify(&sign(Algorithm::EdDSA, None, &ed_key(ED_A_DER), &c))
            .await,
        "two EdDSA keys, no kid",
    );
    auth.verify(&sign(Algorithm::EdDSA, Some("ed-b"), &ed_key(ED_B_DER), &c))
        .await
        .expect("with kid");
}

async fn verify_burst(
    auth: &Arc<JwtAuthenticator>,
    tokens: Vec<String>,
) -> Vec<Result<Principal, AuthError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let auth = Arc::clone(auth);
        tasks.spawn(async move { (i, auth.verify(&token).await) });
    }
    let mut results: Vec<_> = tasks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_with_rate_limited_refresh() {
    // Generous: "no fetch within the interval" must hold even on a loaded machine.
    let interval = Duration::from_secs(2);
    let c = claims(json!({}));
    let (ed_a, ed_b, stranger) = (ed_key(ED_A_DER), ed_key(ED_B_DER), ed_key(ED_X_DER));
    let token_a = sign(Algorithm::EdDSA, Some("ed-a"), &ed_a, &c);
    let token_b = sign(Algorithm::EdDSA, Some("ed-b"), &ed_b, &c);
    let rsa_token = sign(Algorithm::RS256, Some("rsa-a"), &rsa_key(), &c);
    let forged = |prefix: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                sign(
                    Algorithm::EdDSA,
                    Some(&format!("{prefix}-{i}")),
                    &stranger,
                    &c,
                )
            })
            .collect()
    };
    let mut first_burst = forged("forged", 40);
    first_burst.extend(std::iter::repeat_n(token_b.clone(), 10));
    let mut second_burst = forged("again", 20);
    second_burst.push(token_a.clone());
    let third_burst = forged("later", 10);
    let rotated = json!({ "keys": [
        jwk(&ed_b, Algorithm::EdDSA, "ed-b"),
        jwk(&rsa_key(), Algorithm::RS256, "rsa-a"),
    ]});

    let server = FakeJwks::start(Reply::Keys(initial_set())).await;
    let auth = jwks_auth(&server, interval).await;
    // Rotate: ed-a is replaced by ed-b.
    server.set(Reply::Keys(rotated));
    assert_invalid(auth.verify(&token_b).await, "new kid before the interval");
    auth.verify(&token_a)
        .await
        .expect("initial key still cached");
    assert_eq!(
        server.hits(),
        1,
        "unknown kid right after start does not refetch"
    );

    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    // A burst of unknown kids and new-kid tokens: one fetch serves them all.
    let results = verify_burst(&auth, first_burst).await;
    assert_eq!(server.hits(), 2, "a burst triggers exactly one fetch");
    for result in &results[..40] {
        assert!(matches!(result, Err(AuthError::Invalid(_))), "{result:?}");
    }
    for result in &results[40..] {
        assert_eq!(result.as_ref().expect("rotated key"), &user("user-1"));
    }

    // Right after: more unknown kids and the withdrawn key cause no fetch.
    let results = verify_burst(&auth, second_burst).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(AuthError::Invalid(_))))
    );
    assert_eq!(server.hits(), 2, "at most one fetch per interval");
    auth.verify(&token_b).await.expect("still cached");
    auth.verify(&rsa_token).await.expect("kept key");

    // After the interval, an unknown kid may refresh again (once).
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    verify_burst(&auth, third_burst).await;
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn jwks_failed_refresh_keeps_last_good_keys() {
    let interval = Duration::from_millis(150);
    let server = FakeJwks::start(Reply::Keys(initial_set())).await;
    let auth = jwks_auth(&server, interval).await;
    let c = claims(json!({}));
    let token_a = sign(Algorithm::EdDSA, Some("ed-a"), &ed_key(ED_A_DER), &c);
    let token_b = sign(Algorithm::EdDSA, Some("ed-b"), &ed_key(ED_B_DER), &c);
    let rsa_token = sign(Algorithm::RS256, Some("rsa-a"), &rsa_key(), &c);

    let failures = [
        Reply::Status(500),
        Reply::Status(404),
        Reply::Body("this is not json"),
        Reply::Body(r#"{"keys": []}"#),
        Reply::Body(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "ed-a"}]}"#),
        Reply::Hang,
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        server.set(failure);
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let started = Instant::now();
        assert_invalid(
            auth.verify(&token_b).await,
            "unknown kid while the endpoint fails",
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "fetch has a timeout"
        );
        assert_eq!(server.hits(), i + 2, "refresh attempted");
        auth.verify(&token_a).await.expect("last good Ed key kept");
        auth.verify(&rsa_token)
            .await
            .expect("last good RSA key kept");
    }

    // The endpoint recovers with a rotated set.
    server.set(Reply::Keys(
        json!({ "keys": [jwk(&ed_key(ED_B_DER), Algorithm::EdDSA, "ed-b")] }),
    ));
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    auth.verify(&token_b).await.expect("recovered");
}

#[tokio::test]
async fn jwks_start_fails_without_a_usable_key_set() {
    let server = FakeJwks::start(Reply::Status(503)).await;
    let start = |url: String| async move {
        JwtAuthenticator::new(JwtConfig {
            jwks_timeout: Duration::from_millis(300),
            ..JwtConfig::jwks(url)
        })
        .await
    };
    assert!(matches!(
        start(server.url.clone()).await,
        Err(AuthConfigError::Jwks(_))
    ));
    server.set(Reply::Body(
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    ));
    assert!(matches!(
        start(server.url.clone()).await,
        Err(AuthConfigError::Jwks(_))
    ));
    server.set(Reply::Body("<html>"));
    assert!(matches!(
        start(server.url.clone()).await,
        Err(AuthConfigError::Jwks(_))
    ));

    server.set(Reply::Hang);
    let started = Instant::now();
    assert!(matches!(
        start(server.url.clone()).await,
        Err(AuthConfigError::Jwks(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "start fetch has a timeout"
    );

    // Nothing listens on this port any more.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/jwks");
    assert!(matches!(start(url).await, Err(AuthConfigError::Jwks(_))));
}

#[tokio::test]
async fn jwks_stale_set_is_refreshed_in_the_background() {
    let max_age = Duration::from_millis(1500);
    let token_a = sign(
        Algorithm::EdDSA,
        Some("ed-a"),
        &ed_key(ED_A_DER),
        &claims(json!({})),
    );
    let rotated = json!({ "keys": [jwk(&ed_key(ED_B_DER), Algorithm::EdDSA, "ed-b")] });
    let server = FakeJwks::start(Reply::Keys(initial_set())).await;
    let auth = JwtAuthenticator::new(JwtConfig {
        jwks_min_refresh: Duration::from_millis(50),
        jwks_max_age: max_age,
        ..JwtConfig::jwks(server.url.clone())
    })
    .await
    .expect("JWKS loads");
    // ed-a is withdrawn (e.g. compromised); its kid stays known until the set is refreshed.
    server.set(Reply::Keys(rotated));
    auth.verify(&token_a)
        .await
        .expect("fresh cache still has ed-a");
    assert_eq!(server.hits(), 1);

    tokio::time::sleep(max_age + Duration::from_millis(100)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while auth.verify(&token_a).await.is_ok() {
        assert!(Instant::now() < deadline, "withdrawn key still accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.hits() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_concurrent_requests_share_one_fetch_even_without_rate_limit() {
    let server = FakeJwks::start(Reply::Keys(initial_set())).await;
    let auth = jwks_auth(&server, Duration::ZERO).await;
    let token_b = sign(
        Algorithm::EdDSA,
        Some("ed-b"),
        &ed_key(ED_B_DER),
        &claims(json!({})),
    );
    // A slow endpoint, so that every request finds the key missing before the fetch completes.
    server.set(Reply::SlowKeys(
        json!({ "keys": [jwk(&ed_key(ED_B_DER), Algorithm::EdDSA, "ed-b")] }),
    ));
    let results = verify_burst(&auth, vec![token_b; 30]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        server.hits(),
        2,
        "requests waiting for a fetch reuse its result"
    );
}
