//! Who is calling: HS256 JWTs with claims `sub`, `role` (`customer` | `admin`) and `exp` (API.md §2).
//! The signature check is the `jsonwebtoken` library's (constant time); only HS256 is accepted, so
//! `alg: none` and algorithm-swapped tokens fail. Secrets are never logged.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

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

#[derive(Clone)]
pub struct Authenticator {
    enabled: bool,
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings, secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        Self {
            enabled: settings.enabled,
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Checks an `Authorization` header value. With auth turned off, everyone is an admin.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        if !self.enabled {
            return Ok(Principal { subject: "anonymous".into(), role: Role::Admin });
        }
        let header = header.ok_or_else(|| AuthError("missing Authorization header".into()))?;
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthError("not a Bearer token".into())),
        };
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError(e.to_string()))?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 256 {
            return Err(AuthError("bad sub".into()));
        }
        Ok(Principal { subject: claims.sub, role: claims.role })
    }

    /// Mints a token valid for `ttl_secs` (the `token` CLI command and tests).
    pub fn mint(&self, subject: &str, role: Role, ttl_secs: u64) -> Result<String, AuthError> {
        let exp = jsonwebtoken::get_current_timestamp() + ttl_secs;
        let claims = Claims { sub: subject.to_owned(), role, exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| AuthError(e.to_string()))
    }
}

/// The configured secret, or (when it is empty) the one kept in `<data_dir>/jwt_secret`, generated on first
/// run. Returns the secret and whether it was just generated.
pub fn resolve_secret(settings: &AuthSettings, data_dir: &Path) -> std::io::Result<(String, bool)> {
    if !settings.jwt_secret.is_empty() {
        return Ok((settings.jwt_secret.clone(), false));
    }
    let path = data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok((secret.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match write_private(&path, &secret) {
        Ok(()) => Ok((secret, true)),
        // Another process (the server, or `orderflow token`) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((std::fs::read_to_string(&path)?.trim().to_owned(), false))
        }
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        let settings = AuthSettings { enabled: true, jwt_secret: "s3cret".into(), leeway_secs: 60 };
        Authenticator::new(&settings, "s3cret")
    }

    #[test]
    fn minted_tokens_round_trip() {
        let a = auth();
        let token = a.mint("c-1", Role::Customer, 60).unwrap();
        let p = a.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(p, Principal { subject: "c-1".into(), role: Role::Customer });
    }

    #[test]
    fn refuses_missing_garbage_expired_and_foreign_tokens() {
        let a = auth();
        assert!(a.authenticate(None).is_err());
        assert!(a.authenticate(Some("Bearer garbage")).is_err());
        assert!(a.authenticate(Some("Basic abc")).is_err());
        let other = Authenticator::new(
            &AuthSettings { enabled: true, jwt_secret: "x".into(), leeway_secs: 0 },
            "another secret",
        );
        let foreign = other.mint("c-1", Role::Admin, 60).unwrap();
        assert!(a.authenticate(Some(&format!("Bearer {foreign}"))).is_err());
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: "c".into(), role: Role::Admin, exp: jsonwebtoken::get_current_timestamp() - 120 },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(a.authenticate(Some(&format!("Bearer {expired}"))).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let body = b64.encode(format!(r#"{{"sub":"a","role":"admin","exp":{exp}}}"#));
        assert!(auth().authenticate(Some(&format!("Bearer {header}.{body}."))).is_err());
    }
}
