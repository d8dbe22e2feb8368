//! Who is calling. Two kinds of bearer JWT (docs/api.md §2):
//! - HS256 with `auth.jwt_secret` and claims `sub`, `role` (`customer` | `admin`), `exp` — the default;
//! - RS256 / ES256 from an identity provider, verified against a JWKS (`auth.jwks`: a file or an URL), with the
//!   role and the customer id read from configurable claims (e.g. Cognito's `cognito:groups`), and optional
//!   `iss` / `aud` checks.
//!
//! The key decides the algorithm, never the token: an HS256 token is checked with the secret only, an RS256 /
//! ES256 token only with the JWKS key its `kid` names and only with that key's algorithm, so `alg: none` and
//! algorithm-confusion tokens (HS256 "signed" with a public key) fail. Signature checks are the `jsonwebtoken`
//! library's (constant time). Secrets and tokens are never logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::AuthSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "customer" => Some(Self::Customer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    exp: u64,
}

/// Why a token was refused. The detail is for logs at debug level; clients only ever see "401".
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct AuthError(String);

/// The longest subject accepted (it becomes a customer id and a rate-limit key).
const MAX_SUBJECT: usize = 256;

#[derive(Clone)]
pub struct Authenticator {
    enabled: bool,
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    jwks: Option<Arc<Jwks>>,
    verified: Arc<Verified>,
}

/// HS256 tokens verified recently, so that a client sending the same token with every request pays for the
/// signature check and the claims' parse once. Only HS256: its key cannot change while the service runs (a JWKS
/// key can be withdrawn). An entry is good until the token's `exp` plus the leeway, as the full check would say;
/// the set is bounded (emptied when full) so that a stream of fresh tokens cannot grow it.
#[derive(Default)]
struct Verified(Mutex<HashMap<String, (Principal, u64)>>);

/// Most tokens [`Verified`] holds.
const VERIFIED_MAX: usize = 10_000;

impl Verified {
    fn get(&self, token: &str, leeway: u64) -> Option<Principal> {
        let entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (principal, exp) = entries.get(token)?;
        (jsonwebtoken::get_current_timestamp() <= exp.saturating_add(leeway)).then(|| principal.clone())
    }

    fn put(&self, token: &str, principal: &Principal, exp: u64) {
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= VERIFIED_MAX {
            entries.clear();
        }
        entries.insert(token.to_owned(), (principal.clone(), exp));
    }
}

impl Authenticator {
    /// HS256 only (the CLI's `token` command, tests). The service uses [`Authenticator::from_settings`].
    pub fn new(settings: &AuthSettings, secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Self {
            enabled: settings.enabled,
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
            jwks: None,
            verified: Arc::default(),
        }
    }

    /// HS256 and, when `auth.jwks` is set, RS256 / ES256 against that JWKS, loaded now: a JWKS that cannot be
    /// read at startup is a configuration error.
    pub async fn from_settings(settings: &AuthSettings, secret: &str) -> anyhow::Result<Self> {
        let mut auth = Self::new(settings, secret);
        if settings.enabled && !settings.jwks.trim().is_empty() {
            let jwks = Jwks::new(settings)?;
            let count = jwks.load().await.map_err(|e| anyhow::anyhow!("auth.jwks {}: {e}", settings.jwks))?;
            tracing::info!(source = %settings.jwks, keys = count, "JWKS loaded");
            auth.jwks = Some(Arc::new(jwks));
        }
        Ok(auth)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Checks an `Authorization` header value. With auth turned off, everyone is an admin.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        if !self.enabled {
            return Ok(Principal { subject: "anonymous".into(), role: Role::Admin });
        }
        let header = header.ok_or_else(|| AuthError("missing Authorization header".into()))?;
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthError("not a Bearer token".into())),
        };
        if let Some(principal) = self.verified.get(token, self.validation.leeway) {
            return Ok(principal);
        }
        let alg = jsonwebtoken::decode_header(token).map_err(|e| AuthError(e.to_string()))?.alg;
        match (alg, &self.jwks) {
            (Algorithm::HS256, _) => {
                let (principal, exp) = self.hs256(token)?;
                self.verified.put(token, &principal, exp);
                Ok(principal)
            }
            (Algorithm::RS256 | Algorithm::ES256, Some(jwks)) => jwks.authenticate(token).await,
            (other, _) => Err(AuthError(format!("algorithm {other:?} is not accepted"))),
        }
    }

    /// The caller and the token's `exp`.
    fn hs256(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError(e.to_string()))?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_SUBJECT {
            return Err(AuthError("bad sub".into()));
        }
        Ok((Principal { subject: claims.sub, role: claims.role }, claims.exp))
    }

    /// Mints a token valid for `ttl_secs` (the `token` CLI command and tests).
    pub fn mint(&self, subject: &str, role: Role, ttl_secs: u64) -> Result<String, AuthError> {
        let exp = jsonwebtoken::get_current_timestamp() + ttl_secs;
        let claims = Claims { sub: subject.to_owned(), role, exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError(e.to_string()))
    }
}

/// A key set is read again at most this often when a token names a `kid` it does not hold (a rotation), so
/// a stream of tokens with made-up `kid`s cannot turn into a stream of requests to the identity provider.
const MISS_REFRESH_EVERY: Duration = Duration::from_secs(1);

enum JwksSource {
    File(PathBuf),
    Url(String),
}

/// The public keys of an identity provider, by `kid`, each with the one algorithm it verifies. Read again on a
/// timer (`auth.jwks_refresh_secs`) and on a `kid` miss; a failed read keeps the keys it had.
struct Jwks {
    source: JwksSource,
    http: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, (DecodingKey, Algorithm)>>>,
    /// When the last read was tried (successful or not).
    tried: Mutex<Option<Instant>>,
    /// One read at a time.
    reading: tokio::sync::Mutex<()>,
    refresh_every: Duration,
    validation: HashMap<Algorithm, Validation>,
    role_claim: String,
    admin_role: String,
    customer_claim: String,
    audience: Audience,
}

/// A JWKS URL must be `https`, or `http` to a loopback host (a local test or sidecar): keys read over plain
/// HTTP from elsewhere could be replaced on the way, and whoever replaces them mints any token.
fn check_jwks_url(location: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(location).map_err(|e| anyhow::anyhow!("auth.jwks {location}: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(
        url.scheme() == "https" || loopback,
        "auth.jwks {location}: a JWKS must be fetched over https (plain http only from a loopback host)"
    );
    Ok(())
}

/// Claims a user of the identity provider can set on their own account (Cognito lets users change `email`,
/// `preferred_username` and `name`; a username can be given to a new account once the old one is deleted).
const MUTABLE_CLAIMS: [&str; 4] = ["email", "preferred_username", "cognito:username", "name"];

/// The customer id must come from a claim users cannot choose, unless the configuration says otherwise.
fn check_customer_claim(settings: &AuthSettings) -> anyhow::Result<()> {
    let claim = settings.customer_claim.as_str();
    anyhow::ensure!(
        settings.allow_mutable_customer_claim || !MUTABLE_CLAIMS.contains(&claim),
        "auth.customer_claim = {claim:?} is a claim users can change, so one could take another's orders; use \
         `sub`, or set auth.allow_mutable_customer_claim = true if the identity provider forbids the change"
    );
    Ok(())
}

/// Who a JWKS token must be meant for: `aud` naming `auth.audience` or one of `auth.client_ids`; or, for a
/// Cognito access token (no `aud`), `token_use: access` with a `client_id` in `auth.client_ids`. With neither
/// setting, any audience.
struct Audience {
    accepted: Vec<String>,
    client_ids: Vec<String>,
}

impl Audience {
    fn new(settings: &AuthSettings) -> Self {
        let client_ids: Vec<String> = settings.client_ids.iter().filter(|c| !c.is_empty()).cloned().collect();
        let mut accepted = client_ids.clone();
        if !settings.audience.is_empty() {
            accepted.push(settings.audience.clone());
        }
        Self { accepted, client_ids }
    }

    fn check(&self, claims: &serde_json::Map<String, Value>) -> Result<(), AuthError> {
        if self.accepted.is_empty() {
            return Ok(());
        }
        let named = |value: &str| self.accepted.iter().any(|a| a == value);
        match claims.get("aud") {
            Some(Value::String(aud)) if named(aud) => Ok(()),
            Some(Value::Array(auds)) if auds.iter().filter_map(Value::as_str).any(named) => Ok(()),
            Some(_) => Err(AuthError("aud names another audience".into())),
            None => {
                let access = claims.get("token_use").and_then(Value::as_str) == Some("access");
                let client = claims.get("client_id").and_then(Value::as_str);
                match client {
                    Some(client) if access && self.client_ids.iter().any(|c| c == client) => Ok(()),
                    _ => Err(AuthError("no aud, and not an access token of a configured client id".into())),
                }
            }
        }
    }
}

impl Jwks {
    fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        let location = settings.jwks.trim();
        let source = if location.starts_with("https://") || location.starts_with("http://") {
            check_jwks_url(location)?;
            JwksSource::Url(location.to_owned())
        } else {
            JwksSource::File(PathBuf::from(location))
        };
        check_customer_claim(settings)?;
        let validation = [Algorithm::RS256, Algorithm::ES256]
            .into_iter()
            .map(|alg| {
                let mut v = Validation::new(alg);
                v.leeway = settings.leeway_secs;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_required_spec_claims(&["exp"]);
                if !settings.issuer.is_empty() {
                    v.set_issuer(&[&settings.issuer]);
                }
                // The audience is checked by `Audience` (Cognito access tokens have none).
                v.validate_aud = false;
                (alg, v)
            })
            .collect();
        Ok(Self {
            source,
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?,
            keys: RwLock::new(Arc::new(HashMap::new())),
            tried: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
            refresh_every: Duration::from_secs(settings.jwks_refresh_secs.max(1)),
            validation,
            role_claim: settings.role_claim.clone(),
            admin_role: settings.admin_role.clone(),
            customer_claim: settings.customer_claim.clone(),
            audience: Audience::new(settings),
        })
    }

    async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError(e.to_string()))?;
        let kid = header.kid.ok_or_else(|| AuthError("no kid".into()))?;
        if self.older_than(self.refresh_every) {
            self.refresh(self.refresh_every).await;
        }
        let mut key = self.key(&kid);
        if key.is_none() && self.older_than(MISS_REFRESH_EVERY) {
            self.refresh(MISS_REFRESH_EVERY).await;
            key = self.key(&kid);
        }
        let (key, alg) = key.ok_or_else(|| AuthError(format!("unknown kid {kid:?}")))?;
        if header.alg != alg {
            return Err(AuthError(format!("kid {kid:?} is a {alg:?} key, the token says {:?}", header.alg)));
        }
        let validation = self.validation.get(&alg).ok_or_else(|| AuthError("no validation".into()))?;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, validation)
            .map_err(|e| AuthError(e.to_string()))?
            .claims;
        self.audience.check(&claims)?;
        self.principal(&claims)
    }

    /// The customer id from `customer_claim`, the role from `role_claim` (a string or a list of strings, like
    /// Cognito's groups): admin when it holds `admin_role`, a customer otherwise.
    fn principal(&self, claims: &serde_json::Map<String, Value>) -> Result<Principal, AuthError> {
        let subject = claims
            .get(&self.customer_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= MAX_SUBJECT)
            .ok_or_else(|| AuthError(format!("no usable {:?} claim", self.customer_claim)))?;
        let admin = match claims.get(&self.role_claim) {
            Some(Value::String(role)) => *role == self.admin_role,
            Some(Value::Array(roles)) => roles.iter().any(|r| r.as_str() == Some(self.admin_role.as_str())),
            _ => false,
        };
        Ok(Principal { subject: subject.to_owned(), role: if admin { Role::Admin } else { Role::Customer } })
    }

    fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        keys.get(kid).cloned()
    }

    fn older_than(&self, age: Duration) -> bool {
        let tried = *self.tried.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tried.is_none_or(|t| t.elapsed() >= age)
    }

    /// Reads the set again unless another task did within `age` while this one waited.
    async fn refresh(&self, age: Duration) {
        let _one = self.reading.lock().await;
        if !self.older_than(age) {
            return;
        }
        if let Err(e) = self.load().await {
            tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys already loaded");
        }
    }

    /// Reads and installs the key set; returns how many keys it holds.
    async fn load(&self) -> anyhow::Result<usize> {
        *self.tried.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let body = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path).await?,
            JwksSource::Url(url) => self.http.get(url).send().await?.error_for_status()?.bytes().await?.to_vec(),
        };
        let set: JwkSet = serde_json::from_slice(&body)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            match verifying_key(jwk) {
                Ok(Some((kid, key, alg))) => {
                    keys.insert(kid, (key, alg));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(kid = ?jwk.common.key_id, error = %e, "JWKS key skipped"),
            }
        }
        anyhow::ensure!(!keys.is_empty(), "no usable RS256 or ES256 key with a kid");
        let count = keys.len();
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(count)
    }
}

/// A JWKS entry as (kid, key, the one algorithm it verifies): RSA keys verify RS256, P-256 keys ES256. Keys
/// without a `kid`, encryption keys and other kinds (e.g. symmetric `oct` keys) are left out.
fn verifying_key(jwk: &Jwk) -> anyhow::Result<Option<(String, DecodingKey, Algorithm)>> {
    use jsonwebtoken::jwk::PublicKeyUse;
    let Some(kid) = jwk.common.key_id.clone() else { return Ok(None) };
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return Ok(None),
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let matches = format!("{declared:?}") == format!("{alg:?}");
        anyhow::ensure!(matches, "declares {declared:?}, orderflow uses this key type for {alg:?}");
    }
    Ok(Some((kid, DecodingKey::from_jwk(jwk)?, alg)))
}

/// Where the HS256 secret comes from: `auth.jwt_secret`, or a file of the data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Config,
    File(PathBuf),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config => f.write_str("auth.jwt_secret"),
            Self::File(path) => write!(f, "{}", std::path::absolute(path).unwrap_or_else(|_| path.clone()).display()),
        }
    }
}

/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size, 256 bits). A shorter
/// one, above all an empty one, would let anyone who guesses it mint admin tokens, so the service refuses to
/// start with it rather than sign with it.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why no usable secret could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{origin} is {len} bytes long; an HS256 secret must have at least {MIN_SECRET_BYTES}")]
    TooShort { origin: String, len: usize },
    #[error("cannot read or create {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Refuses a secret shorter than [`MIN_SECRET_BYTES`]; `origin` names where it came from.
pub fn check_secret(origin: &str, secret: &str) -> Result<(), SecretError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort { origin: origin.to_owned(), len: secret.len() });
    }
    Ok(())
}

/// The secret the service uses, found the way `serve` finds it, without ever creating one: the configured
/// secret, else the one kept in `<data_dir>/jwt_secret`. `None` when neither exists (yet). A secret shorter than
/// [`MIN_SECRET_BYTES`] is an error, wherever it comes from: an empty or truncated file is never a key.
pub fn find_secret(settings: &AuthSettings, data_dir: &Path) -> Result<Option<(String, SecretSource)>, SecretError> {
    if !settings.jwt_secret.is_empty() {
        check_secret("auth.jwt_secret", &settings.jwt_secret)?;
        return Ok(Some((settings.jwt_secret.clone(), SecretSource::Config)));
    }
    let path = data_dir.join("jwt_secret");
    let io = |source| SecretError::Io { path: path.display().to_string(), source };
    match std::fs::read_to_string(&path) {
        Ok(secret) => {
            // A file left by an older version may be wider than 0600.
            crate::files::private_file(&path).map_err(io)?;
            let secret = secret.trim().to_owned();
            check_secret(&path.display().to_string(), &secret)?;
            Ok(Some((secret, SecretSource::File(path))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// The configured secret, or (when it is empty) the one kept in `<data_dir>/jwt_secret`, generated on first
/// run. Returns the secret and whether it was just generated.
pub fn resolve_secret(settings: &AuthSettings, data_dir: &Path) -> Result<(String, bool), SecretError> {
    if let Some((secret, _)) = find_secret(settings, data_dir)? {
        return Ok((secret, false));
    }
    let path = data_dir.join("jwt_secret");
    let io = |source| SecretError::Io { path: path.display().to_string(), source };
    crate::files::private_dir(data_dir).map_err(io)?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match crate::files::create_atomically(&path, secret.as_bytes()) {
        Ok(()) => Ok((secret, true)),
        // Another process created it first: use theirs. It was written whole before it got its name, so it is
        // complete.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match find_secret(settings, data_dir)? {
            Some((secret, _)) => Ok((secret, false)),
            None => Err(io(e)),
        },
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings { jwt_secret: "s3cret".into(), ..AuthSettings::default() }
    }

    fn auth() -> Authenticator {
        Authenticator::new(&settings(), "s3cret")
    }

    /// A verified token is remembered only until its `exp` plus the leeway, like the full check.
    #[test]
    fn remembered_tokens_expire_with_their_exp() {
        let verified = Verified::default();
        let who = Principal { subject: "c-1".into(), role: Role::Customer };
        let now = jsonwebtoken::get_current_timestamp();
        verified.put("fresh", &who, now + 30);
        verified.put("in-leeway", &who, now - 30);
        verified.put("expired", &who, now - 61);
        assert_eq!(verified.get("fresh", 60), Some(who.clone()));
        assert_eq!(verified.get("in-leeway", 60), Some(who));
        assert_eq!(verified.get("expired", 60), None);
        assert_eq!(verified.get("unknown", 60), None);
    }

    #[tokio::test]
    async fn minted_tokens_round_trip() {
        let a = auth();
        let token = a.mint("c-1", Role::Customer, 60).unwrap();
        let p = a.authenticate(Some(&format!("Bearer {token}"))).await.unwrap();
        assert_eq!(p, Principal { subject: "c-1".into(), role: Role::Customer });
    }

    #[tokio::test]
    async fn refuses_missing_garbage_expired_and_foreign_tokens() {
        let a = auth();
        assert!(a.authenticate(None).await.is_err());
        assert!(a.authenticate(Some("Bearer garbage")).await.is_err());
        assert!(a.authenticate(Some("Basic abc")).await.is_err());
        let other = Authenticator::new(&AuthSettings { leeway_secs: 0, ..settings() }, "another secret");
        let foreign = other.mint("c-1", Role::Admin, 60).unwrap();
        assert!(a.authenticate(Some(&format!("Bearer {foreign}"))).await.is_err());
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: "c".into(), role: Role::Admin, exp: jsonwebtoken::get_current_timestamp() - 120 },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(a.authenticate(Some(&format!("Bearer {expired}"))).await.is_err());
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let body = b64.encode(format!(r#"{{"sub":"a","role":"admin","exp":{exp}}}"#));
        assert!(auth().authenticate(Some(&format!("Bearer {header}.{body}."))).await.is_err());
    }

    #[test]
    fn secrets_shorter_than_32_bytes_are_refused_wherever_they_come_from() {
        let dir = tempfile::tempdir().expect("dir");
        let short = AuthSettings { jwt_secret: "x".repeat(31), ..AuthSettings::default() };
        assert!(matches!(resolve_secret(&short, dir.path()), Err(SecretError::TooShort { len: 31, .. })));
        let long = AuthSettings { jwt_secret: "x".repeat(32), ..AuthSettings::default() };
        assert_eq!(resolve_secret(&long, dir.path()).expect("32 bytes").0, "x".repeat(32));
        let generated = AuthSettings::default();
        for contents in ["", "  \n", "short"] {
            std::fs::write(dir.path().join("jwt_secret"), contents).expect("write");
            let refused = resolve_secret(&generated, dir.path());
            assert!(matches!(refused, Err(SecretError::TooShort { .. })), "{contents:?}");
        }
    }

    #[test]
    fn racing_first_starts_agree_on_one_whole_secret() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let secrets: Vec<(String, bool)> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| resolve_secret(&AuthSettings::default(), &data).expect("secret")))
                .collect();
            starts.into_iter().map(|s| s.join().expect("thread")).collect()
        });
        assert_eq!(secrets.iter().filter(|(_, generated)| *generated).count(), 1, "one process generates it");
        assert!(secrets.iter().all(|(s, _)| *s == secrets[0].0 && s.len() >= MIN_SECRET_BYTES));
        assert_eq!(std::fs::read_to_string(data.join("jwt_secret")).expect("file"), secrets[0].0);
    }

    #[test]
    fn jwks_urls_must_be_https_unless_loopback() {
        for ok in ["https://idp.example/jwks.json", "http://127.0.0.1:8080/j", "http://localhost/j", "http://[::1]/j"] {
            assert!(check_jwks_url(ok).is_ok(), "{ok}");
        }
        for refused in ["http://idp.example/jwks.json", "http://10.0.0.1/j", "http://127.0.0.1.evil.example/j"] {
            assert!(check_jwks_url(refused).is_err(), "{refused}");
        }
    }

    // ---- JWKS (RS256 / ES256): the throwaway keys of tests/fixtures/jwks ----

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwks");

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).expect("signed")
    }

    fn rsa(kid: &str, claims: Value) -> String {
        let file = if kid == "rsa-2" { "rsa2.pem" } else { "rsa1.pem" };
        sign(Algorithm::RS256, kid, &EncodingKey::from_rsa_pem(&pem(file)).expect("rsa key"), claims)
    }

    fn ec(claims: Value) -> String {
        sign(Algorithm::ES256, "ec-1", &EncodingKey::from_ec_pem(&pem("ec1.pem")).expect("ec key"), claims)
    }

    fn claims(extra: Value) -> Value {
        let mut c = serde_json::json!({
            "sub": "user-1",
            "exp": jsonwebtoken::get_current_timestamp() + 300,
            "iss": "https://idp.example",
            "aud": "orderflow",
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    }

    async fn jwks_auth(dir: &Path) -> Authenticator {
        let jwks = dir.join("jwks.json");
        if !jwks.exists() {
            std::fs::copy(format!("{FIXTURES}/jwks.json"), &jwks).expect("copy");
        }
        let settings = AuthSettings {
            jwks: jwks.display().to_string(),
            issuer: "https://idp.example".into(),
            audience: "orderflow".into(),
            role_claim: "cognito:groups".into(),
            ..settings()
        };
        Authenticator::from_settings(&settings, "s3cret").await.expect("jwks loads")
    }

    async fn check(a: &Authenticator, token: &str) -> Result<Principal, AuthError> {
        a.authenticate(Some(&format!("Bearer {token}"))).await
    }

    #[tokio::test]
    async fn rs256_and_es256_tokens_are_accepted_with_the_mapped_role() {
        let dir = tempfile::tempdir().expect("dir");
        let a = jwks_auth(dir.path()).await;
        let admin = rsa("rsa-1", claims(serde_json::json!({"cognito:groups": ["staff", "admin"]})));
        assert_eq!(check(&a, &admin).await.expect("rs256"), Principal { subject: "user-1".into(), role: Role::Admin });
        let customer = ec(claims(serde_json::json!({"sub": "c-9"})));
        assert_eq!(
            check(&a, &customer).await.expect("es256"),
            Principal { subject: "c-9".into(), role: Role::Customer }
        );
        // HS256 tokens keep working beside them.
        let hs = a.mint("c-1", Role::Customer, 60).expect("mint");
        assert_eq!(check(&a, &hs).await.expect("hs256").subject, "c-1");
    }

    #[tokio::test]
    async fn bad_jwks_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let a = jwks_auth(dir.path()).await;
        let now = jsonwebtoken::get_current_timestamp();
        let refused = [
            (
                "unknown kid",
                sign(
                    Algorithm::RS256,
                    "nope",
                    &EncodingKey::from_rsa_pem(&pem("rsa1.pem")).expect("k"),
                    claims(Value::Null),
                ),
            ),
            (
                "signed by a key the set does not hold",
                sign(
                    Algorithm::RS256,
                    "rsa-1",
                    &EncodingKey::from_rsa_pem(&pem("rsa2.pem")).expect("k"),
                    claims(Value::Null),
                ),
            ),
            ("wrong iss", rsa("rsa-1", claims(serde_json::json!({"iss": "https://evil.example"})))),
            ("wrong aud", rsa("rsa-1", claims(serde_json::json!({"aud": "someone-else"})))),
            ("expired", rsa("rsa-1", claims(serde_json::json!({"exp": now - 120})))),
            ("not yet valid", rsa("rsa-1", claims(serde_json::json!({"nbf": now + 600})))),
            ("no customer claim", rsa("rsa-1", claims(serde_json::json!({"sub": ""})))),
            // An RSA kid with the EC algorithm, and the EC kid with RSA: the key decides.
            (
                "alg/kid mismatch",
                sign(
                    Algorithm::ES256,
                    "rsa-1",
                    &EncodingKey::from_ec_pem(&pem("ec1.pem")).expect("k"),
                    claims(Value::Null),
                ),
            ),
            // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
            (
                "hs256 with the public key",
                sign(
                    Algorithm::HS256,
                    "rsa-1",
                    &EncodingKey::from_secret(&pem("rsa1.pub.pem")),
                    claims(serde_json::json!({"role": "admin"})),
                ),
            ),
        ];
        for (why, token) in refused {
            assert!(check(&a, &token).await.is_err(), "{why} was accepted");
        }
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","kid":"rsa-1"}"#),
            b64.encode(claims(Value::Null).to_string())
        );
        assert!(check(&a, &none).await.is_err(), "alg none was accepted");
    }

    #[tokio::test]
    async fn a_rotated_jwks_file_is_picked_up_without_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let a = jwks_auth(dir.path()).await;
        let old = rsa("rsa-1", claims(Value::Null));
        let new = rsa("rsa-2", claims(Value::Null));
        assert!(check(&a, &old).await.is_ok());
        assert!(check(&a, &new).await.is_err(), "rsa-2 is not published yet");
        std::fs::copy(format!("{FIXTURES}/jwks-rotated.json"), dir.path().join("jwks.json")).expect("rotate");
        // A kid miss reads the set again, at most once a second.
        tokio::time::sleep(MISS_REFRESH_EVERY + Duration::from_millis(100)).await;
        assert_eq!(check(&a, &new).await.expect("rotated key accepted").subject, "user-1");
        assert!(check(&a, &old).await.is_err(), "the retired key is no longer accepted");
    }

    #[tokio::test]
    async fn a_jwks_without_usable_keys_is_a_startup_error() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, r#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0"}]}"#).expect("write");
        let no_keys = AuthSettings { jwks: file.display().to_string(), ..settings() };
        assert!(Authenticator::from_settings(&no_keys, "s3cret").await.is_err());
        let missing = AuthSettings { jwks: dir.path().join("absent.json").display().to_string(), ..settings() };
        assert!(Authenticator::from_settings(&missing, "s3cret").await.is_err());
    }
}
