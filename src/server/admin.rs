//! Who may call `/admin/*`: the admin key (`[server] admin_key_env` or `admin_key_sha256`),
//! checked on every admin request, and where the admin routes are served at all.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;

use crate::config::ServerConfig;

/// Why the admin key settings are unusable (a startup error naming the setting).
#[derive(Debug, thiserror::Error)]
pub enum AdminKeyError {
    /// Both ways of giving the key are set.
    #[error("[server] admin_key_env and admin_key_sha256 are both set: keep one")]
    Both,
    /// The environment variable named by `admin_key_env` is unset or empty.
    #[error("[server] admin_key_env names {0}, which is unset or empty")]
    MissingEnv(String),
    /// `admin_key_sha256` is not 64 hex digits.
    #[error("[server] admin_key_sha256 must be 64 hex digits (the SHA-256 of the admin key)")]
    BadHash,
}

/// The SHA-256 of the admin key: only the digest is kept, so the key itself is not in
/// memory past startup, and comparing digests leaks nothing about the key through timing.
#[derive(Clone)]
pub struct AdminKey([u8; 32]);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

impl AdminKey {
    /// The admin key `[server]` configures, if any (reading `admin_key_env` from the process
    /// environment).
    pub fn from_config(server: &ServerConfig) -> Result<Option<AdminKey>, AdminKeyError> {
        match (&server.admin_key_env, &server.admin_key_sha256) {
            (Some(_), Some(_)) => Err(AdminKeyError::Both),
            (Some(name), None) => match std::env::var(name) {
                Ok(key) if !key.is_empty() => Ok(Some(AdminKey(sha256(key.as_bytes())))),
                _ => Err(AdminKeyError::MissingEnv(name.clone())),
            },
            (None, Some(hex)) => parse_hex(hex).map(|d| Some(AdminKey(d))),
            (None, None) => Ok(None),
        }
    }

    /// Whether `presented` is the admin key, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest = sha256(presented);
        let diff = digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

fn parse_hex(hex: &str) -> Result<[u8; 32], AdminKeyError> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return Err(AdminKeyError::BadHash);
    }
    let nibble = |c: u8| (c as char).to_digit(16).ok_or(AdminKeyError::BadHash);
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        // Each digit is < 16, so the pair fits a byte.
        *byte = u8::try_from(nibble(pair[0])? * 16 + nibble(pair[1])?)
            .map_err(|_| AdminKeyError::BadHash)?;
    }
    Ok(out)
}

/// Where the admin routes are served, decided once at startup.
#[derive(Debug, Clone)]
pub enum AdminPlacement {
    /// On the main listener, behind the admin key.
    Keyed(AdminKey),
    /// On their own listener (behind the key too when one is configured).
    Own {
        /// `[server] admin_listen`.
        addr: SocketAddr,
        /// The admin key, if configured.
        key: Option<AdminKey>,
    },
    /// On the main listener without a key: only when it is loopback (local use).
    LoopbackOpen,
    /// Nowhere: the main listener is reachable from the network and no key guards it.
    Hidden,
}

impl AdminPlacement {
    /// The placement on the main listener bound to `main` (no `admin_listen`), with the
    /// admin key if one is configured.
    pub fn decide(key: Option<AdminKey>, main: SocketAddr) -> Self {
        match key {
            Some(key) => AdminPlacement::Keyed(key),
            None if main.ip().is_loopback() => AdminPlacement::LoopbackOpen,
            None => AdminPlacement::Hidden,
        }
    }
}

/// Middleware: 401 with a JSON error unless the request bears the admin key as
/// `Authorization: Bearer KEY`.
pub(super) async fn require_key(
    State(key): State<AdminKey>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(token) if key.matches(token) => next.run(request).await,
        _ => {
            let mut answer = crate::respond::json_response(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": {
                    "type": "authentication_error",
                    "code": "invalid_admin_key",
                    "message": "the admin routes need the admin key as `Authorization: Bearer`",
                }}),
            );
            answer.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            answer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(d: &[u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    proptest! {
        #[test]
        fn hashed_key_matches_only_itself(key in proptest::collection::vec(any::<u8>(), 1..64),
                                          other in proptest::collection::vec(any::<u8>(), 0..64)) {
            let server = ServerConfig {
                admin_key_sha256: Some(hex(&sha256(&key)).to_uppercase()),
                ..ServerConfig::default()
            };
            let admin = AdminKey::from_config(&server).unwrap().unwrap();
            prop_assert!(admin.matches(&key));
            prop_assert_eq!(admin.matches(&other), other == key);
        }

        #[test]
        fn malformed_hash_is_refused(s in "[0-9a-fA-FxyZ ]{0,70}") {
            let server = ServerConfig { admin_key_sha256: Some(s.clone()), ..ServerConfig::default() };
            let ok = s.trim().len() == 64 && s.trim().chars().all(|c| c.is_ascii_hexdigit());
            prop_assert_eq!(AdminKey::from_config(&server).is_ok(), ok);
        }
    }

    #[test]
    fn unset_env_names_the_setting() {
        let server = ServerConfig {
            admin_key_env: Some("STREAMGATE_TEST_ADMIN_KEY_SURELY_UNSET".into()),
            ..ServerConfig::default()
        };
        let e = AdminKey::from_config(&server).unwrap_err().to_string();
        assert!(
            e.contains("admin_key_env") && e.contains("SURELY_UNSET"),
            "{e}"
        );
    }
}
