//! Token verification cost: `JwtAuthenticator::verify` with an HS256 shared secret and with an
//! EdDSA key from a JWKS (served by a throwaway key server on 127.0.0.1, fetched once at start;
//! verification itself never touches the network).
//!
//! `cargo bench -p todo_http --bench auth`

#![allow(missing_docs)]

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::listener::{Acceptor as _, Listener as _, TcpListener};
use poem::{Response, Server};
use serde_json::json;
use todo_http::auth::{JwtAuthenticator, JwtConfig, mint_hs256};

// Test-only key, copied from tests/jwks.rs (`openssl genpkey -algorithm ed25519`, DER, base64).
const ED_A_DER: &str = "MC4CAQAwBQYDK2VwBCIEIKUyVvIygfh88jvDFQNzpmXRuxAwpIIs+KGnbQ0ndHs/";
const SECRET: &str = "bench-secret-that-is-long-enough-0123456789";
const USER: &str = "bench-user-1";

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_der(&STANDARD.decode(ED_A_DER).expect("valid base64"))
}

fn exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600
}

/// Serves `{"keys": [<ed-a>]}` on 127.0.0.1; returns the JWKS URL.
async fn jwks_server() -> String {
    let mut jwk = Jwk::from_encoding_key(&ed_key(), Algorithm::EdDSA).expect("public JWK");
    jwk.common.key_id = Some("ed-a".to_owned());
    let body = json!({ "keys": [jwk] }).to_string();
    let ep = poem::endpoint::make(move |_req: poem::Request| {
        let body = body.clone();
        async move {
            Response::builder()
                .content_type("application/json")
                .body(body)
        }
    });
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("bind");
    let addr = *acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("socket address");
    tokio::spawn(Server::new_with_acceptor(acceptor).run(ep));
    format!("http://{addr}/api/auth/jwks")
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    let hs = rt
        .block_on(JwtAuthenticator::new(JwtConfig::hs256(SECRET)))
        .expect("HS256 config");
    let hs_token = mint_hs256(SECRET, USER, Duration::from_secs(3600)).expect("mint");
    // Signed with another secret: fails signature verification.
    let wrong_key = mint_hs256(
        "another-secret-another-secret-0123456789",
        USER,
        Duration::from_secs(3600),
    )
    .expect("mint");

    let url = rt.block_on(jwks_server());
    let ed = rt
        .block_on(JwtAuthenticator::new(JwtConfig {
            jwks_timeout: Duration::from_secs(2),
            ..JwtConfig::jwks(url)
        }))
        .expect("JWKS loads");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed-a".to_owned());
    let ed_token = jsonwebtoken::encode(&header, &json!({ "sub": USER, "exp": exp() }), &ed_key())
        .expect("sign");
    // Sanity: both verify (outside the measurement).
    rt.block_on(hs.verify(&hs_token)).expect("HS256 verifies");
    rt.block_on(ed.verify(&ed_token)).expect("EdDSA verifies");
    assert!(rt.block_on(hs.verify(&wrong_key)).is_err());

    let mut g = c.benchmark_group("verify");
    g.bench_function("hs256", |b| {
        b.iter(|| rt.block_on(hs.verify(std::hint::black_box(&hs_token))))
    });
    g.bench_function("hs256_wrong_key", |b| {
        b.iter(|| rt.block_on(hs.verify(std::hint::black_box(&wrong_key))))
    });
    g.bench_function("eddsa_jwks", |b| {
        b.iter(|| rt.block_on(ed.verify(std::hint::black_box(&ed_token))))
    });
    g.finish();

    c.bench_function("mint_hs256", |b| {
        b.iter(|| {
            mint_hs256(
                SECRET,
                std::hint::black_box(USER),
                Duration::from_secs(3600),
            )
        })
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);
