//! Gateway keys: who may call the gateway, which models each key may use, and under which
//! name its rate limits (and its streams) count.
//!
//! Keys are configured by hash (`[keys.NAME] sha256 = "…"`) or by environment variable
//! (`env = "VAR"`), never in clear in the file. A presented key is hashed with SHA-256 and
//! compared with every configured hash in constant time, so neither the comparison nor which
//! entry matched shows in the timing. With no `[keys]` at all the gateway is open, as before.
//! See docs/configuration.md, "Gateway keys".

mod config;

use crate::caps::OutputCaps;
use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

pub use crate::error::AuthFailure;
pub use config::{GatewayKeyConfig, MAX_NAME_LEN};

use crate::error::GatewayError;
use crate::limit::ClientId;

/// Prefix of the keys `streamgate keys new` makes (so that a leaked one is recognisable).
pub const KEY_PREFIX: &str = "sg-";

/// The `Sec-WebSocket-Protocol` entry that carries a key on the WebSocket door, for browsers
/// (which cannot set headers): `streamgate.key.<key>`. It is never chosen as the answer's
/// subprotocol.
pub const WS_PROTOCOL_PREFIX: &str = "streamgate.key.";

/// The header carrying a client's own provider key when gateway keys are on (then
/// `Authorization` and `x-api-key` carry the gateway key): see [`crate::upstream::ClientKey`].
pub const PROVIDER_KEY_HEADER: &str = "streamgate-provider-key";

/// Longest presented key hashed at all: longer ones are refused without hashing.
const MAX_KEY_LEN: usize = 512;

/// A configured key could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The configuration is inconsistent (see [`GatewayKeyConfig::validate`]).
    #[error("{0}")]
    Invalid(String),
    /// `env = "VAR"` names a variable that is unset or empty.
    #[error("keys.{name}: environment variable {var} is not set")]
    MissingVar {
        /// The key's name.
        name: String,
        /// The variable (never its value).
        var: String,
    },
}

/// One configured key, as the request path sees it.
#[derive(Debug)]
pub struct GatewayKey {
    name: String,
    models: Vec<String>,
    caps: OutputCaps,
}

impl GatewayKey {
    /// The key's name from the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Who is calling: a gateway key, or anyone (no keys configured).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    key: Option<Arc<GatewayKey>>,
}

impl Caller {
    /// A caller of an open gateway (no keys configured).
    pub fn open() -> Caller {
        Caller { key: None }
    }

    /// The authenticated key, None on an open gateway.
    pub fn key(&self) -> Option<&GatewayKey> {
        self.key.as_deref()
    }

    /// The name of the key, which owns the streams it starts (None on an open gateway).
    pub fn owner(&self) -> Option<&str> {
        self.key.as_deref().map(GatewayKey::name)
    }

    /// The key's rate-limit identity, None on an open gateway (then the client's credential,
    /// whatever it is, identifies it as before).
    pub fn client_id(&self) -> Option<ClientId> {
        self.key.as_ref().map(|k| ClientId::gateway_key(&k.name))
    }

    /// Refuses (403) a model the key may not use.
    pub fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        match &self.key {
            Some(key) if !key.models.is_empty() && !key.models.iter().any(|m| m == model) => {
                Err(GatewayError::ModelNotAllowed {
                    model: model.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The key's output caps (none on an open gateway).
    pub fn output_caps(&self) -> OutputCaps {
        self.key.as_ref().map(|k| k.caps).unwrap_or_default()
    }

    /// Whether the key may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.check_model(model).is_ok()
    }
}

/// The configured keys, resolved to hashes.
#[derive(Debug, Default)]
pub struct Keyring {
    entries: Vec<(Arc<GatewayKey>, [u8; 32])>,
}

impl Keyring {
    /// The keys of `config`, reading `env` keys from the process environment.
    pub fn new(config: &BTreeMap<String, GatewayKeyConfig>) -> Result<Keyring, KeyringError> {
        Keyring::with_env(config, |var| std::env::var(var).ok())
    }

    /// The keys of `config`, reading `env` keys through `env`.
    pub fn with_env(
        config: &BTreeMap<String, GatewayKeyConfig>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Keyring, KeyringError> {
        let mut entries = Vec::with_capacity(config.len());
        for (name, key) in config {
            key.validate(name).map_err(KeyringError::Invalid)?;
            let hash = match (&key.sha256, &key.env) {
                (Some(hex), _) => config::parse_sha256(hex),
                (None, Some(var)) => {
                    let value = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                        KeyringError::MissingVar {
                            name: name.clone(),
                            var: var.clone(),
                        }
                    })?;
                    Some(sha256(&value))
                }
                (None, None) => None,
            };
            let hash = hash.ok_or_else(|| KeyringError::Invalid(format!("keys.{name}")))?;
            let key = GatewayKey {
                name: name.clone(),
                models: key.models.clone(),
                caps: key.output_caps(),
            };
            entries.push((Arc::new(key), hash));
        }
        Ok(Keyring { entries })
    }

    /// No keys configured: every caller is let in.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller presenting `presented`. On an open gateway anyone; else the key whose hash
    /// matches, compared with every configured hash in constant time.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Caller, AuthFailure> {
        if self.is_open() {
            return Ok(Caller::open());
        }
        let presented = match presented {
            None | Some("") => return Err(AuthFailure::Missing),
            Some(k) if k.len() > MAX_KEY_LEN => return Err(AuthFailure::Invalid),
            Some(k) => k,
        };
        let hash = sha256(presented);
        // Every entry is compared; the match is picked without a branch on secret data.
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (_, expected)) in self.entries.iter().enumerate() {
            let hit = hash.ct_eq(expected);
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            index.conditional_assign(&i, hit);
            found |= hit;
        }
        if bool::from(found) {
            let index = usize::try_from(index).unwrap_or(usize::MAX);
            if let Some((key, _)) = self.entries.get(index) {
                return Ok(Caller {
                    key: Some(Arc::clone(key)),
                });
            }
        }
        Err(AuthFailure::Invalid)
    }

    /// The caller of the key named `name`, if it is still configured (a stream recovered from
    /// the journal goes on counting against its owner).
    pub fn caller_named(&self, name: &str) -> Option<Caller> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, _)| Caller {
                key: Some(Arc::clone(k)),
            })
    }

    /// `caller` as these keys see it: a request authenticated against an earlier set of keys
    /// (before a reload) is judged by this one, its key's models and caps included, so that
    /// the keys and the aliases a request meets are of one configuration. A key no longer
    /// configured is invalid; a caller without a key needs one now if keys were added.
    pub fn recheck(&self, caller: &Caller) -> Result<Caller, AuthFailure> {
        match caller.owner() {
            _ if self.is_open() => Ok(Caller::open()),
            Some(name) => self.caller_named(name).ok_or(AuthFailure::Invalid),
            None => Err(AuthFailure::Missing),
        }
    }

    /// The configured keys' names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.name.as_str())
    }
}

/// The SHA-256 of `key`.
pub fn sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// A fresh key: [`KEY_PREFIX`] and 32 bytes from the operating system's CSPRNG, in hex (a
/// valid header value and `Sec-WebSocket-Protocol` token as is).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", hex(&bytes)))
}

/// The key a client presented in HTTP headers: `Authorization: Bearer` (every SDK can send
/// it) or a dialect's own key header (the Anthropic SDK's `x-api-key`), whichever is there,
/// the door's own first.
pub fn presented(door: providers::Dialect, headers: &http::HeaderMap) -> Option<&str> {
    let bearer = bearer(headers).map(str::trim).filter(|k| !k.is_empty());
    let named = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    };
    let own = door.wire().key_header().map_or(bearer, named);
    own.or_else(|| {
        providers::dialects::all()
            .filter_map(|w| w.key_header())
            .find_map(named)
    })
    .or(bearer)
}

/// The credential of an `Authorization: Bearer` header, if any.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

/// The key a WebSocket client offered as a subprotocol (`streamgate.key.<key>`), if any.
pub fn ws_presented(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_PROTOCOL_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[(&str, &str)]) -> Keyring {
        let config = keys
            .iter()
            .map(|(name, key)| {
                let c = GatewayKeyConfig {
                    sha256: Some(hex(&sha256(key))),
                    ..GatewayKeyConfig::default()
                };
                ((*name).to_owned(), c)
            })
            .collect();
        Keyring::with_env(&config, |_| None).unwrap()
    }

    #[test]
    fn each_key_authenticates_as_its_own_name() {
        let ring = ring(&[("a", "sg-aaa"), ("b", "sg-bbb"), ("c", "sg-ccc")]);
        for (name, key) in [("a", "sg-aaa"), ("b", "sg-bbb"), ("c", "sg-ccc")] {
            let caller = ring.authenticate(Some(key)).unwrap();
            assert_eq!(caller.key().map(GatewayKey::name), Some(name));
        }
        assert_eq!(ring.authenticate(None).err(), Some(AuthFailure::Missing));
        assert_eq!(
            ring.authenticate(Some("sg-aab")).err(),
            Some(AuthFailure::Invalid)
        );
    }

    proptest::proptest! {
        /// Any string but a configured key is refused, however close to one it is.
        #[test]
        fn only_configured_keys_authenticate(
            guess in "\\PC{0,80}|sg-[0-9a-f]{60,68}",
            flip in 0usize..67,
        ) {
            let real = ["sg-aaa", "sg-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"];
            let ring = ring(&[("a", real[0]), ("b", real[1])]);
            let mut near = real[1].to_owned().into_bytes();
            near[flip] ^= 1;
            let near = String::from_utf8_lossy(&near).into_owned();
            for presented in [guess.as_str(), near.as_str()] {
                let got = ring.authenticate(Some(presented));
                proptest::prop_assert_eq!(got.is_ok(), real.contains(&presented), "{:?}", presented);
            }
        }
    }

    #[test]
    fn generated_keys_differ_and_parse_back() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        let hash = hex(&sha256(&a));
        assert_eq!(config::parse_sha256(&hash), Some(sha256(&a)));
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = [
            ("ok", GatewayKeyConfig::default()),
            (
                "ok",
                GatewayKeyConfig {
                    sha256: Some("abc".into()),
                    ..GatewayKeyConfig::default()
                },
            ),
            (
                "bad name",
                GatewayKeyConfig {
                    env: Some("X".into()),
                    ..GatewayKeyConfig::default()
                },
            ),
        ];
        for (name, c) in bad {
            assert!(c.validate(name).is_err(), "{name} {c:?}");
        }
        let config = BTreeMap::from([(
            "k".to_owned(),
            GatewayKeyConfig {
                env: Some("SG_TEST_NOPE".into()),
                ..GatewayKeyConfig::default()
            },
        )]);
        assert!(matches!(
            Keyring::with_env(&config, |_| None),
            Err(KeyringError::MissingVar { .. })
        ));
        let ring = Keyring::with_env(&config, |_| Some("sg-from-env".into())).unwrap();
        assert!(ring.authenticate(Some("sg-from-env")).is_ok());
    }
}
