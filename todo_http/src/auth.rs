//! Authentication of API requests: `Authorization: Bearer <JWT>`.
//!
//! The HTTP layer asks an [`Authenticator`] for the [`Principal`] of every `/api/…` request
//! and answers `401` for any [`AuthError`] (with `WWW-Authenticate: Bearer realm="todo"`, plus
//! `error="invalid_token"` when a token was sent but is not valid). The built-in
//! implementation, [`JwtAuthenticator`], verifies JSON Web Tokens in one of two ways:
//!
//! * **Shared secret** (`TODO_JWT_SECRET`, falling back to `BETTER_AUTH_SECRET`): only `HS256`
//!   is accepted — `HS384`/`HS512`, asymmetric algorithms and `alg: none` are rejected.
//! * **JWKS** (`TODO_JWKS_URL`, e.g. Better Auth's `{BETTER_AUTH_URL}/api/auth/jwks`): only
//!   the public keys of the set verify tokens, each with its own algorithm (EdDSA/Ed25519,
//!   RS256 and the other RSA algorithms a key declares, ES256, ES384). Symmetric (`oct`) keys
//!   and encryption keys in the set are ignored. The key is chosen by the token's `kid`; a token
//!   without `kid` is accepted only when exactly one key of the set has the token's algorithm.
//!
//! In both modes `exp` and a non-empty `sub` are required, `exp` and `nbf` are enforced with
//! an explicit leeway ([`JwtConfig::leeway_secs`], default [`DEFAULT_LEEWAY_SECS`]), and
//! `iss`/`aud` are checked — and then required — only when configured; a token that carries
//! them is accepted when they are not configured (jsonwebtoken would otherwise reject any token
//! with an `aud` claim).
//!
//! # JWKS caching
//!
//! The key set is fetched once at start ([`JwtAuthenticator::new`] fails if that fetch fails)
//! and cached. A token whose `kid` is not in the cache triggers a refresh, but at most one fetch
//! per [`JwtConfig::jwks_min_refresh`]: concurrent requests wait for the fetch in flight instead
//! of starting their own, so a burst of forged `kid`s cannot stampede the endpoint. A set older
//! than [`JwtConfig::jwks_max_age`] is refreshed in the background (so keys removed from the set
//! stop verifying). A failed refresh (network error, timeout, non-2xx status, malformed body, no
//! usable key) keeps the last good key set. Every fetch is bounded by
//! [`JwtConfig::jwks_timeout`] and the body by [`MAX_JWKS_BYTES`].
//!
//! # HTTP client
//!
//! The JWKS is fetched with hyper-util's connection-pooling client over `hyper-rustls`, using
//! rustls with the `ring` provider and the Mozilla root store (`webpki-roots`). This is the
//! smallest addition to the build: hyper and hyper-util come with poem, and rustls, ring and
//! webpki-roots with sqlx; it needs no OpenSSL/native-tls and no aws-lc-rs (slow to build, and
//! a second rustls provider would make provider selection ambiguous). The `ring` provider is
//! passed explicitly, so no process-wide default provider is required. Redirects are not
//! followed: configure the final URL. `http://` URLs are accepted (for local development) with
//! a warning unless the host is a loopback address.
//!
//! Tokens and secrets are never logged and never appear in error messages.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::Uri;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Default clock-skew allowance, in seconds, for `exp` and `nbf` (jsonwebtoken's own default
/// of 60 s is deliberately not used).
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// Largest accepted leeway, in seconds (larger values are a configuration error).
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Default minimum interval between two JWKS fetches triggered by unknown `kid`s.
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(5);
/// Default age after which a cached JWKS is refreshed in the background.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Default time limit for one JWKS fetch (connect, request and body).
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted JWKS response body, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Longest accepted token, in bytes; longer ones are rejected before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Verified identity of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id: the token's `sub` claim (never empty), compared exactly.
    pub user_id: String,
    /// When the credentials stop being valid (a JWT's `exp`); `None` when they do not expire.
    /// Long-lived responses (event streams) end then.
    pub expires_at: Option<std::time::SystemTime>,
}

impl Principal {
    /// A principal for `user_id` whose credentials do not expire.
    pub fn new(user_id: impl Into<String>) -> Self {
        Principal {
            user_id: user_id.into(),
            expires_at: None,
        }
    }
}

/// Why a request is not authenticated (always mapped to 401 by the HTTP layer).
///
/// The display text is safe to show clients: it never echoes the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` credentials (no header, another scheme, or an empty token).
    #[error("missing bearer token")]
    Missing,
    /// A token was presented but is not acceptable; the text says why in general terms.
    #[error("invalid token: {0}")]
    Invalid(String),
}

fn invalid(reason: &str) -> AuthError {
    AuthError::Invalid(reason.to_owned())
}

/// Pluggable authentication: hosts that authenticate their own way implement this.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Returns the principal of `req`, or why it is not authenticated.
    async fn authenticate(&self, req: &poem::Request) -> Result<Principal, AuthError>;
}

/// Extracts the token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
///
/// No header, another scheme (e.g. `Basic`) or an empty token is [`AuthError::Missing`]; a
/// header value that is not visible ASCII is [`AuthError::Invalid`].
pub fn bearer_token(req: &poem::Request) -> Result<&str, AuthError> {
    let Some(value) = req.headers().get(poem::http::header::AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| invalid("malformed Authorization header"))?
        .trim();
    let (scheme, token) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    match token.trim() {
        "" => Err(AuthError::Missing),
        token => Ok(token),
    }
}

/// Configuration error at start (e.g. both `TODO_JWKS_URL` and `TODO_JWT_SECRET` set, an
/// empty secret, a bad URL, or a JWKS that cannot be loaded).
///
/// Messages name the setting at fault but never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// Both a JWKS URL and `TODO_JWT_SECRET` (or [`JwtConfig::secret`]) are set.
    #[error(
        "TODO_JWKS_URL and TODO_JWT_SECRET are both set; configure exactly one way to verify tokens"
    )]
    SecretAndJwks,
    /// Neither a secret nor a JWKS URL is configured, although JWT settings are.
    #[error(
        "no JWT key source: set TODO_JWKS_URL, TODO_JWT_SECRET or BETTER_AUTH_SECRET (TODO_JWT_ISSUER, TODO_JWT_AUDIENCE and TODO_JWT_LEEWAY_SECS alone are not enough)"
    )]
    NoKeySource,
    /// The named secret is set but empty (or only whitespace).
    #[error("{0} is set but empty")]
    EmptySecret(&'static str),
    /// The JWKS URL is not an absolute `http(s)://host/…` URL.
    #[error("invalid JWKS URL: {0}")]
    InvalidJwksUrl(String),
    /// Another setting has an unusable value.
    #[error("invalid {name}: {reason}")]
    InvalidValue {
        /// The setting (environment variable or field name).
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The key set could not be loaded at start.
    #[error("cannot load the JWKS: {0}")]
    Jwks(String),
    /// The TLS client for fetching the JWKS could not be built.
    #[error("cannot set up TLS for the JWKS client: {0}")]
    Tls(String),
}

/// How [`JwtAuthenticator`] verifies tokens. Exactly one of `secret` and `jwks_url` must be set.
///
/// Build it with [`JwtConfig::from_env`], [`JwtConfig::hs256`] or [`JwtConfig::jwks`] and adjust
/// fields as needed, e.g. `JwtConfig { issuer: Some(url.clone()), ..JwtConfig::jwks(jwks) }`.
/// `Debug` output redacts the secret.
#[derive(Clone)]
pub struct JwtConfig {
    /// Shared HS256 secret (used as raw bytes).
    pub secret: Option<String>,
    /// `http(s)` URL of a JSON Web Key Set.
    pub jwks_url: Option<String>,
    /// Required `iss` value; `None` accepts any (or no) issuer.
    pub issuer: Option<String>,
    /// Required `aud` value (the token's `aud` must be or contain it); `None` accepts any (or
    /// no) audience.
    pub audience: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds (default [`DEFAULT_LEEWAY_SECS`],
    /// at most [`MAX_LEEWAY_SECS`]).
    pub leeway_secs: u64,
    /// Minimum interval between JWKS fetches triggered by unknown `kid`s (default
    /// [`DEFAULT_JWKS_MIN_REFRESH`]). `Duration::ZERO` disables the rate limit; concurrent
    /// requests still share one fetch.
    pub jwks_min_refresh: Duration,
    /// Age after which the cached JWKS is refreshed in the background (default
    /// [`DEFAULT_JWKS_MAX_AGE`]).
    pub jwks_max_age: Duration,
    /// Time limit for one JWKS fetch (default [`DEFAULT_JWKS_TIMEOUT`]; must not be zero).
    pub jwks_timeout: Duration,
}

impl Default for JwtConfig {
    /// No key source (not usable as is) and the default limits.
    fn default() -> Self {
        Self {
            secret: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            jwks_min_refresh: DEFAULT_JWKS_MIN_REFRESH,
            jwks_max_age: DEFAULT_JWKS_MAX_AGE,
            jwks_timeout: DEFAULT_JWKS_TIMEOUT,
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("jwks_min_refresh", &self.jwks_min_refresh)
            .field("jwks_max_age", &self.jwks_max_age)
            .field("jwks_timeout", &self.jwks_timeout)
            .finish()
    }
}

impl JwtConfig {
    /// Reads the configuration from the process environment; see [`JwtConfig::from_lookup`].
    pub fn from_env() -> Result<Option<JwtConfig>, AuthConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (an environment-variable getter):
    ///
    /// * `TODO_JWKS_URL` — verify with this JWKS; `BETTER_AUTH_SECRET` is then ignored and
    ///   setting `TODO_JWT_SECRET` as well is an error ([`AuthConfigError::SecretAndJwks`]).
    /// * `TODO_JWT_SECRET`, else `BETTER_AUTH_SECRET` — HS256 shared secret, used exactly as
    ///   given; set but empty is an error.
    /// * `TODO_JWT_ISSUER`, `TODO_JWT_AUDIENCE` — required `iss` / `aud` values.
    /// * `TODO_JWT_LEEWAY_SECS` — clock-skew allowance (0 ..= [`MAX_LEEWAY_SECS`]).
    ///
    /// Values other than the secrets are trimmed, and an empty one counts as unset. Returns
    /// `Ok(None)` when none of these is set (the host decides what that means).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<JwtConfig>, AuthConfigError> {
        let setting = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let jwks_url = setting("TODO_JWKS_URL");
        let own_secret = lookup("TODO_JWT_SECRET");
        if jwks_url.is_some() && own_secret.is_some() {
            return Err(AuthConfigError::SecretAndJwks);
        }
        let secret = match (&jwks_url, own_secret) {
            (Some(_), _) => None,
            (None, Some(secret)) => Some(("TODO_JWT_SECRET", secret)),
            (None, None) => lookup("BETTER_AUTH_SECRET").map(|s| ("BETTER_AUTH_SECRET", s)),
        };
        if let Some((name, secret)) = &secret
            && secret.trim().is_empty()
        {
            return Err(AuthConfigError::EmptySecret(name));
        }
        let issuer = setting("TODO_JWT_ISSUER");
        let audience = setting("TODO_JWT_AUDIENCE");
        let leeway = setting("TODO_JWT_LEEWAY_SECS");
        let leeway_secs = match &leeway {
            None => DEFAULT_LEEWAY_SECS,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_LEEWAY_SECS)
                .ok_or_else(|| AuthConfigError::InvalidValue {
                    name: "TODO_JWT_LEEWAY_SECS",
                    reason: format!("expected whole seconds from 0 to {MAX_LEEWAY_SECS}"),
                })?,
        };
        if secret.is_none() && jwks_url.is_none() {
            if issuer.is_some() || audience.is_some() || leeway.is_some() {
                return Err(AuthConfigError::NoKeySource);
            }
            return Ok(None);
        }
        if let Some(url) = &jwks_url {
            parse_jwks_url(url)?;
        }
        Ok(Some(JwtConfig {
            secret: secret.map(|(_, s)| s),
            jwks_url,
            issuer,
            audience,
            leeway_secs,
            ..JwtConfig::default()
        }))
    }

    /// HS256 with a shared secret, default limits, no issuer/audience check.
    pub fn hs256(secret: impl Into<String>) -> Self {
        Self {
            secret: Some(secret.into()),
            ..Self::default()
        }
    }

    /// Keys from the JWKS at `url`, default limits, no issuer/audience check.
    pub fn jwks(url: impl Into<String>) -> Self {
        Self {
            jwks_url: Some(url.into()),
            ..Self::default()
        }
    }
}

fn parse_jwks_url(url: &str) -> Result<Uri, AuthConfigError> {
    let bad = |reason: &str| AuthConfigError::InvalidJwksUrl(reason.to_owned());
    let uri: Uri = url.parse().map_err(|_| bad("not a valid absolute URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    Ok(uri)
}

fn is_loopback(uri: &Uri) -> bool {
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Implements [`Authenticator`] from `Authorization: Bearer <jwt>`; see the module docs for
/// the rules.
pub struct JwtAuthenticator {
    mode: Mode,
}

enum Mode {
    Secret {
        key: DecodingKey,
        validation: Box<Validation>,
    },
    Jwks(Arc<JwksCache>),
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            Mode::Secret { .. } => f.write_str("JwtAuthenticator(HS256)"),
            Mode::Jwks(cache) => write!(f, "JwtAuthenticator(JWKS {})", cache.uri),
        }
    }
}

impl JwtAuthenticator {
    /// Builds the authenticator; with a JWKS, fetches the key set once (an error if that fetch
    /// fails or yields no usable key).
    pub async fn new(cfg: JwtConfig) -> Result<Self, AuthConfigError> {
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthConfigError::InvalidValue {
                name: "leeway_secs",
                reason: format!("at most {MAX_LEEWAY_SECS} seconds"),
            });
        }
        for (name, value) in [("issuer", &cfg.issuer), ("audience", &cfg.audience)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(AuthConfigError::InvalidValue {
                    name,
                    reason: "empty; use None to skip the check".to_owned(),
                });
            }
        }
        let base = base_validation(&cfg);
        let mode = match (&cfg.secret, &cfg.jwks_url) {
            (Some(_), Some(_)) => return Err(AuthConfigError::SecretAndJwks),
            (None, None) => return Err(AuthConfigError::NoKeySource),
            (Some(secret), None) => {
                if secret.trim().is_empty() {
                    return Err(AuthConfigError::EmptySecret("secret"));
                }
                if secret.len() < 32 {
                    tracing::warn!(
                        "the HS256 secret is shorter than 32 bytes; use a long random secret"
                    );
                }
                let mut validation = base;
                validation.algorithms = vec![Algorithm::HS256];
                Mode::Secret {
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    validation: Box::new(validation),
                }
            }
            (None, Some(url)) => {
                let uri = parse_jwks_url(url)?;
                if cfg.jwks_timeout.is_zero() {
                    return Err(AuthConfigError::InvalidValue {
                        name: "jwks_timeout",
                        reason: "must not be zero".to_owned(),
                    });
                }
                if uri.scheme_str() == Some("http") && !is_loopback(&uri) {
                    tracing::warn!(url = %uri, "the JWKS is fetched over plain HTTP");
                }
                let cache = JwksCache::start(uri, &cfg, base).await?;
                Mode::Jwks(Arc::new(cache))
            }
        };
        Ok(Self { mode })
    }

    /// Verifies a raw token string (used by [`Authenticator::authenticate`] and benchmarks).
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too long"));
        }
        if token.split('.').count() != 3
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
        {
            return Err(invalid("malformed token"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token header"))?;
        match &self.mode {
            Mode::Secret { key, validation } => {
                if header.alg != Algorithm::HS256 {
                    return Err(invalid("algorithm not accepted"));
                }
                decode_principal(token, key, validation)
            }
            Mode::Jwks(cache) => cache.verify(token, &header).await,
        }
    }
}

#[async_trait::async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, req: &poem::Request) -> Result<Principal, AuthError> {
        let token = bearer_token(req)?;
        self.verify(token).await
    }
}

/// The validation shared by all keys; `algorithms` is set per key.
fn base_validation(cfg: &JwtConfig) -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = cfg.leeway_secs;
    v.reject_tokens_expiring_in_less_than = 0;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &cfg.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &cfg.audience {
        Some(audience) => {
            v.set_audience(&[audience]);
            v.validate_aud = true;
            required.push("aud");
        }
        None => {
            v.aud = None;
            v.validate_aud = false;
        }
    }
    v.set_required_spec_claims(&required);
    v
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// A NumericDate: seconds, possibly fractional.
    #[serde(default)]
    exp: Option<f64>,
}

fn decode_principal(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Principal, AuthError> {
    let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(map_jwt_error)?;
    match data.claims.sub {
        Some(sub) if !sub.is_empty() => Ok(Principal {
            user_id: sub,
            expires_at: data
                .claims
                .exp
                .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                .and_then(|d| std::time::UNIX_EPOCH.checked_add(d)),
        }),
        _ => Err(invalid("missing `sub` claim")),
    }
}

/// Maps jsonwebtoken's errors to fixed messages (its own texts may quote token content).
fn map_jwt_error(err: jsonwebtoken::errors::Error) -> AuthError {
    let reason = match err.kind() {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => "algorithm not accepted",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "missing `exp` claim",
            "sub" => "missing `sub` claim",
            "iss" => "missing `iss` claim",
            "aud" => "missing `aud` claim",
            _ => "missing required claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "malformed time claim",
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => "signing key unusable",
        _ => "malformed token",
    };
    invalid(reason)
}

/// Mints an HS256 token with `sub`, `iat` and `exp = now + ttl` (whole seconds) — for
/// `cargo xtask token`, the dev server's demo token, and tests.
///
/// Fails (with [`AuthError::Invalid`]) for an empty secret or subject.
pub fn mint_hs256(secret: &str, sub: &str, ttl: Duration) -> Result<String, AuthError> {
    #[derive(Serialize)]
    struct MintClaims<'a> {
        sub: &'a str,
        iat: u64,
        exp: u64,
    }
    if secret.is_empty() {
        return Err(invalid("cannot mint a token with an empty secret"));
    }
    if sub.is_empty() {
        return Err(invalid("cannot mint a token with an empty subject"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid("system clock is before 1970"))?
        .as_secs();
    let claims = MintClaims {
        sub,
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|_| invalid("cannot sign the token"))
}

// ---------------------------------------------------------------------------------------------
// JWKS

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct KeyEntry {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

struct KeySet {
    entries: Vec<KeyEntry>,
    /// Incremented by each successful refresh.
    generation: u64,
    fetched_at: Instant,
}

enum Selection<'a> {
    Found(&'a KeyEntry),
    /// The `kid` is known, but not for the token's algorithm.
    AlgMismatch,
    /// No `kid`, and several keys have the token's algorithm.
    Ambiguous,
    NotFound,
}

impl KeySet {
    fn select(&self, header: &Header) -> Selection<'_> {
        match &header.kid {
            Some(kid) => {
                let mut same_kid = self
                    .entries
                    .iter()
                    .filter(|e| e.kid.as_deref() == Some(kid.as_str()))
                    .peekable();
                if same_kid.peek().is_none() {
                    return Selection::NotFound;
                }
                same_kid
                    .find(|e| e.alg == header.alg)
                    .map_or(Selection::AlgMismatch, Selection::Found)
            }
            None => {
                let mut suitable = self.entries.iter().filter(|e| e.alg == header.alg);
                match (suitable.next(), suitable.next()) {
                    (Some(entry), None) => Selection::Found(entry),
                    (Some(_), Some(_)) => Selection::Ambiguous,
                    (None, _) => Selection::NotFound,
                }
            }
        }
    }
}

struct JwksCache {
    uri: Uri,
    client: HttpClient,
    timeout: Duration,
    min_refresh: Duration,
    max_age: Duration,
    base: Validation,
    current: RwLock<Arc<KeySet>>,
    /// Serialises fetches; holds the time of the last fetch attempt.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    background_running: AtomicBool,
}

impl JwksCache {
    async fn start(uri: Uri, cfg: &JwtConfig, base: Validation) -> Result<Self, AuthConfigError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| AuthConfigError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        let mut cache = Self {
            uri,
            client,
            timeout: cfg.jwks_timeout,
            min_refresh: cfg.jwks_min_refresh,
            max_age: cfg.jwks_max_age,
            base,
            current: RwLock::new(Arc::new(KeySet {
                entries: Vec::new(),
                generation: 0,
                fetched_at: Instant::now(),
            })),
            last_attempt: tokio::sync::Mutex::new(None),
            background_running: AtomicBool::new(false),
        };
        let started = Instant::now();
        let entries = cache.fetch().await.map_err(AuthConfigError::Jwks)?;
        tracing::info!(url = %cache.uri, keys = entries.len(), "loaded JWKS");
        cache.current = RwLock::new(Arc::new(KeySet {
            entries,
            generation: 0,
            fetched_at: Instant::now(),
        }));
        cache.last_attempt = tokio::sync::Mutex::new(Some(started));
        Ok(cache)
    }

    fn snapshot(&self) -> Arc<KeySet> {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    async fn verify(
        self: &Arc<Self>,
        token: &str,
        header: &Header,
    ) -> Result<Principal, AuthError> {
        if !matches!(
            header.alg,
            Algorithm::EdDSA
                | Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
        ) {
            // Never refresh for HS*: the key set holds no usable symmetric keys.
            return Err(invalid("algorithm not accepted"));
        }
        let mut set = self.snapshot();
        if set.fetched_at.elapsed() >= self.max_age {
            self.spawn_background_refresh(set.generation);
        }
        let mut refreshed = false;
        loop {
            match set.select(header) {
                Selection::Found(entry) => {
                    return decode_principal(token, &entry.key, &entry.validation);
                }
                Selection::AlgMismatch => {
                    return Err(invalid("algorithm does not match the signing key"));
                }
                Selection::Ambiguous => {
                    return Err(invalid("token has no `kid` and several keys could match"));
                }
                Selection::NotFound if refreshed => return Err(invalid("unknown signing key")),
                Selection::NotFound => {
                    set = self.refresh(set.generation).await;
                    refreshed = true;
                }
            }
        }
    }

    /// Fetches a new key set unless another fetch already replaced `seen_generation` or the
    /// last attempt is more recent than `min_refresh`; returns the newest key set.
    async fn refresh(&self, seen_generation: u64) -> Arc<KeySet> {
        let mut last_attempt = self.last_attempt.lock().await;
        let current = self.snapshot();
        if current.generation != seen_generation {
            return current;
        }
        if last_attempt.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return current;
        }
        *last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(entries) => {
                tracing::info!(url = %self.uri, keys = entries.len(), "refreshed JWKS");
                let next = Arc::new(KeySet {
                    entries,
                    generation: current.generation.wrapping_add(1),
                    fetched_at: Instant::now(),
                });
                let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
                *guard = Arc::clone(&next);
                next
            }
            Err(error) => {
                tracing::warn!(
                    url = %self.uri,
                    %error,
                    "JWKS refresh failed; keeping the last good key set"
                );
                current
            }
        }
    }

    fn spawn_background_refresh(self: &Arc<Self>, seen_generation: u64) {
        // Skip when a fetch is in flight or was attempted recently.
        match self.last_attempt.try_lock() {
            Ok(last) if last.is_none_or(|t| t.elapsed() >= self.min_refresh) => {}
            _ => return,
        }
        if self.background_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.background_running.store(false, Ordering::Release);
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            this.refresh(seen_generation).await;
            this.background_running.store(false, Ordering::Release);
        });
    }

    async fn fetch(&self) -> Result<Vec<KeyEntry>, String> {
        let body = tokio::time::timeout(self.timeout, self.fetch_body())
            .await
            .map_err(|_| format!("timed out after {:?}", self.timeout))??;
        parse_jwks(&body, &self.base)
    }

    async fn fetch_body(&self) -> Result<Bytes, String> {
        let request = hyper::Request::get(self.uri.clone())
            .header(
                hyper::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .body(Empty::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("unexpected HTTP status {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the body: {e}"))?;
        Ok(body.to_bytes())
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWK set, keeping the usable signature-verification keys; fails if none is usable.
fn parse_jwks(body: &[u8], base: &Validation) -> Result<Vec<KeyEntry>, String> {
    let raw: RawJwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let total = raw.keys.len();
    let entries: Vec<KeyEntry> = raw
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| key_entry(&jwk, base))
        .collect();
    if entries.is_empty() {
        return Err(format!(
            "none of the {total} keys is a usable signature key"
        ));
    }
    if entries.len() < total {
        tracing::debug!(
            ignored = total - entries.len(),
            "ignored JWKS entries that are not usable signature keys"
        );
    }
    Ok(entries)
}

fn decoded_len(b64: &str) -> Option<usize> {
    URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .ok()
        .map(|bytes| bytes.len())
}

/// The verification entry for one JWK, or `None` when it is not a usable public signature key.
fn key_entry(jwk: &Jwk, base: &Validation) -> Option<KeyEntry> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) => match (&p.curve, declared) {
            (EllipticCurve::Ed25519, None | Some(KeyAlgorithm::EdDSA))
                if decoded_len(&p.x) == Some(32) =>
            {
                Algorithm::EdDSA
            }
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => match declared {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            Some(KeyAlgorithm::PS256) => Algorithm::PS256,
            Some(KeyAlgorithm::PS384) => Algorithm::PS384,
            Some(KeyAlgorithm::PS512) => Algorithm::PS512,
            _ => return None,
        },
        AlgorithmParameters::EllipticCurve(p) => {
            let (x, y) = (decoded_len(&p.x), decoded_len(&p.y));
            match (&p.curve, declared) {
                (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256))
                    if x == Some(32) && y == Some(32) =>
                {
                    Algorithm::ES256
                }
                (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384))
                    if x == Some(48) && y == Some(48) =>
                {
                    Algorithm::ES384
                }
                _ => return None,
            }
        }
        // Symmetric keys from a (public) key set must never verify tokens.
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let mut validation = base.clone();
    validation.algorithms = vec![alg];
    Some(KeyEntry {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
        validation,
    })
}
