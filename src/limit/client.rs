//! [`ClientId`]: who a request counts against, derived from the client's credential without
//! keeping the credential.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// A client's identity for rate limits: a keyed hash of its credential, or anonymous. Prints
/// as `key-<hex>` or `anonymous`, safe for logs.
///
/// On one instance the hash is SipHash under a seed drawn once per process (it cannot be
/// reversed or precomputed). Instances sharing limits through Redis must agree on every
/// client's identity, so there [`ClientId::share_seed`] makes it a SHA-256 keyed by the
/// deployment's `[state] prefix` instead: stable across processes and builds, the same on
/// every instance (docs/deployment.md, "Redis trouble: limits and breakers").
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(Option<u64>);

/// How identities are hashed in this process.
enum Seed {
    /// One instance: a random SipHash seed.
    Process(RandomState),
    /// Instances sharing limits: SHA-256 keyed by this material.
    Shared([u8; 32]),
}

impl Seed {
    fn hash(&self, tag: &str, value: &str) -> u64 {
        match self {
            Seed::Process(state) => state.hash_one((tag, value)),
            Seed::Shared(key) => {
                let mut sha = Sha256::new();
                sha.update(key);
                // Lengths first: no (tag, value) pair is another's concatenation.
                sha.update((tag.len() as u64).to_le_bytes());
                sha.update(tag.as_bytes());
                sha.update((value.len() as u64).to_le_bytes());
                sha.update(value.as_bytes());
                let digest = sha.finalize();
                let mut first = [0u8; 8];
                first.copy_from_slice(&digest[..8]);
                u64::from_le_bytes(first)
            }
        }
    }
}

static SEED: OnceLock<Seed> = OnceLock::new();

fn seed() -> &'static Seed {
    SEED.get_or_init(|| Seed::Process(RandomState::new()))
}

impl ClientId {
    /// Clients that sent no credential; they share one budget.
    pub const ANONYMOUS: ClientId = ClientId(None);

    /// The identity of `credential`; none (or an empty one) is [`ClientId::ANONYMOUS`].
    pub fn from_credential(credential: Option<&str>) -> ClientId {
        match credential {
            Some(key) if !key.is_empty() => ClientId(Some(seed().hash("credential", key))),
            _ => ClientId::ANONYMOUS,
        }
    }

    /// The identity of the gateway key named `name` ([`crate::keys`]): every request
    /// authenticated by that key counts against it, whatever else it carries.
    pub fn gateway_key(name: &str) -> ClientId {
        // Tagged, so that no credential hashes to a key name's identity by construction.
        ClientId(Some(seed().hash("gateway-key", name)))
    }

    /// Makes every identity of this process the one any other process sharing `material`
    /// computes (instances sharing limits through Redis pass their `[state] prefix`). Must
    /// run before the first identity is made; false when it came too late (identities are
    /// then per process, and the caller should say so).
    pub fn share_seed(material: &str) -> bool {
        let mut sha = Sha256::new();
        sha.update(b"streamgate client id v1\0");
        sha.update(material.as_bytes());
        let key: [u8; 32] = sha.finalize().into();
        SEED.set(Seed::Shared(key)).is_ok()
            || matches!(SEED.get(), Some(Seed::Shared(k)) if *k == key)
    }

    /// A short stable name for Redis keys: `anon` or 16 hex digits (never the credential).
    pub(crate) fn tag(&self) -> String {
        match self.0 {
            Some(hash) => format!("{hash:016x}"),
            None => "anon".into(),
        }
    }

    /// The identity of a wrapped key, such as the one a client presented at a door (the same
    /// key at either door is the same client).
    pub fn from_secret(key: Option<&Secret>) -> ClientId {
        ClientId::from_credential(key.map(Secret::expose))
    }

    /// Whether the client sent no credential.
    pub fn is_anonymous(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(hash) => write!(f, "key-{hash:016x}"),
            None => f.write_str("anonymous"),
        }
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_id_and_the_key_never_prints() {
        let a = ClientId::from_credential(Some("sk-live-123"));
        assert_eq!(a, ClientId::from_credential(Some("sk-live-123")));
        assert_ne!(a, ClientId::from_credential(Some("sk-live-124")));
        assert!(!format!("{a} {a:?}").contains("sk-live"));
        assert_eq!(ClientId::from_credential(Some("")), ClientId::ANONYMOUS);
        assert_eq!(ClientId::from_credential(None).to_string(), "anonymous");
    }

    /// Shared identities are a function of the material and the credential alone: what
    /// another process computes, never the credential, different for another deployment.
    #[test]
    fn shared_identities_agree_across_processes_and_differ_across_deployments() {
        let key = |m: &str| {
            let mut sha = Sha256::new();
            sha.update(b"streamgate client id v1\0");
            sha.update(m.as_bytes());
            Seed::Shared(sha.finalize().into())
        };
        let (a, again, other) = (key("prod"), key("prod"), key("staging"));
        let mut rng = fastrand::Rng::with_seed(13);
        for _ in 0..200 {
            let credential: String = (0..rng.usize(1..40)).map(|_| rng.alphanumeric()).collect();
            let h = a.hash("credential", &credential);
            assert_eq!(h, again.hash("credential", &credential));
            assert_ne!(h, other.hash("credential", &credential));
            assert_ne!(h, a.hash("gateway-key", &credential));
        }
    }
}
