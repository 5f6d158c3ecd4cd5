//! Who is making an HTTP request, and what they may do: HTTP Basic against the
//! `[[web.users]]` list (argon2 password hashes), a bearer token whose SHA-256 a user lists
//! (tokens are 256 random bits, so a fast hash is enough: nothing to guess), or an anonymous
//! user when `[web] allow_anonymous` is set. What the principal may do is the one
//! [`crate::service::AccessPolicy`]'s to say.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::WebConfig;
use crate::service::Principal;

/// Why a request's credentials were not accepted (answered with 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("credentials required")]
    Missing,
    #[error("unsupported Authorization scheme (Basic or Bearer)")]
    Scheme,
    #[error("malformed Basic credentials")]
    Malformed,
    #[error("unknown user or wrong password")]
    Wrong,
    #[error("unknown bearer token")]
    Token,
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

struct User {
    /// The PHC string, parsed at each verification (it borrows); `None`: tokens only.
    password_hash: Option<String>,
}

/// At most this many verified credentials are remembered, so that a viewer's hundreds of
/// requests cost one argon2 verification, not hundreds.
const REMEMBERED: usize = 1024;

/// The `[web]` users and the anonymous rule.
pub struct Users {
    allow_anonymous: bool,
    users: HashMap<String, User>,
    /// SHA-256 of each bearer token, with its user's name.
    tokens: HashMap<[u8; 32], String>,
    /// SHA-256 of `name:password` pairs that verified, with the name.
    verified: Mutex<HashMap<[u8; 32], String>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("allow_anonymous", &self.allow_anonymous)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Users {
    pub fn from_config(config: &WebConfig) -> Users {
        Users {
            allow_anonymous: config.allow_anonymous,
            users: config
                .users
                .iter()
                .map(|u| {
                    let user = User {
                        password_hash: u.password_hash.clone(),
                    };
                    (u.name.clone(), user)
                })
                .collect(),
            tokens: config
                .users
                .iter()
                .flat_map(|u| {
                    u.token_sha256
                        .iter()
                        .filter_map(|hex| Some((from_hex(hex)?, u.name.clone())))
                })
                .collect(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of a request with this `Authorization` header value (if any). Runs an
    /// argon2 verification for credentials not seen before: call it off the async runtime
    /// (or try [`Users::remembered`] first).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        self.decide(authorization, true)?.ok_or(AuthError::Wrong)
    }

    /// The principal when it is decided without an argon2 verification (no credentials, a
    /// malformed header, credentials verified before); `Ok(None)` when one is needed.
    pub fn remembered(&self, authorization: Option<&str>) -> Result<Option<Principal>, AuthError> {
        self.decide(authorization, false)
    }

    fn decide(
        &self,
        authorization: Option<&str>,
        verify: bool,
    ) -> Result<Option<Principal>, AuthError> {
        let Some(header) = authorization else {
            return if self.allow_anonymous {
                Ok(Some(Principal::Anonymous))
            } else {
                Err(AuthError::Missing)
            };
        };
        let (scheme, credentials) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let digest: [u8; 32] = Sha256::digest(credentials.trim().as_bytes()).into();
            return match self.tokens.get(&digest) {
                Some(name) => Ok(Some(Principal::User(name.clone()))),
                None => Err(AuthError::Token),
            };
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthError::Scheme);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .map_err(|_| AuthError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (name, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        let fingerprint: [u8; 32] = Sha256::digest(decoded.as_bytes()).into();
        if let Some(known) = self.lock().get(&fingerprint) {
            return Ok(Some(Principal::User(known.clone())));
        }
        if !verify {
            return Ok(None);
        }
        let user = self.users.get(name).ok_or(AuthError::Wrong)?;
        let phc = user.password_hash.as_deref().ok_or(AuthError::Wrong)?;
        let hash = PasswordHash::new(phc).map_err(|_| AuthError::Wrong)?;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .map_err(|_| AuthError::Wrong)?;
        let mut verified = self.lock();
        if verified.len() >= REMEMBERED {
            verified.clear();
        }
        verified.insert(fingerprint, name.to_string());
        Ok(Some(Principal::User(name.to_string())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], String>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new bearer token (256 random bits, URL-safe base64 after `strata_`) and the SHA-256
/// hex a `[[web.users]] token_sha256` lists for it (`strata new-token`).
pub fn new_token() -> (String, String) {
    use argon2::password_hash::rand_core::RngCore;
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let token = format!(
        "strata_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let digest = Sha256::digest(token.as_bytes());
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    (token, hex)
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An argon2id PHC string for `password`, with a random salt (`strata hash-password`).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Service, WebUserConfig};

    fn users(allow_anonymous: bool) -> Users {
        Users::from_config(&WebConfig {
            allow_anonymous,
            users: vec![WebUserConfig {
                name: "viewer".into(),
                password_hash: Some(hash_password("s3cret").unwrap()),
                token_sha256: Vec::new(),
                allow: vec![Service::Find, Service::Get],
            }],
            ..WebConfig::default()
        })
    }

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    #[test]
    fn basic_credentials_are_checked_against_the_hash() {
        let users = users(false);
        let viewer = Principal::User("viewer".into());
        assert_eq!(
            users.authenticate(Some(&basic("viewer:s3cret"))),
            Ok(viewer.clone())
        );
        // Remembered: the second time needs no argon2, and gives the same answer.
        assert_eq!(
            users.authenticate(Some(&basic("viewer:s3cret"))),
            Ok(viewer.clone())
        );
        assert_eq!(
            users.authenticate(Some(&basic("viewer:wrong"))),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            users.authenticate(Some(&basic("nobody:s3cret"))),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            users.authenticate(Some("Basic !!!")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            users.authenticate(Some("Bearer abc")),
            Err(AuthError::Token)
        );
        assert_eq!(
            users.authenticate(Some("Digest abc")),
            Err(AuthError::Scheme)
        );
        assert_eq!(users.authenticate(None), Err(AuthError::Missing));
    }

    #[test]
    fn bearer_tokens_name_their_user_by_hash() {
        let (token, hex) = new_token();
        let (other, _) = new_token();
        assert_ne!(token, other);
        let users = Users::from_config(&WebConfig {
            users: vec![WebUserConfig {
                name: "pipeline".into(),
                password_hash: None,
                token_sha256: vec![hex],
                allow: vec![Service::Store],
            }],
            ..WebConfig::default()
        });
        let pipeline = Principal::User("pipeline".into());
        assert_eq!(
            users.remembered(Some(&format!("Bearer {token}"))),
            Ok(Some(pipeline.clone()))
        );
        assert_eq!(
            users.authenticate(Some(&format!("bearer {other}"))),
            Err(AuthError::Token)
        );
        // A token-only user has no password to log in with.
        assert_eq!(
            users.authenticate(Some(&basic(&format!("pipeline:{token}")))),
            Err(AuthError::Wrong)
        );
    }

    #[test]
    fn anonymous_only_when_allowed() {
        assert_eq!(users(true).authenticate(None), Ok(Principal::Anonymous));
        assert_eq!(users(false).authenticate(None), Err(AuthError::Missing));
    }
}
