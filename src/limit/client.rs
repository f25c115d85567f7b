//! [`ClientId`]: who a request counts against, derived from the client's credential without
//! keeping the credential.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use crate::secret::Secret;

/// A client's identity for rate limits: a keyed hash of its credential (SipHash under a seed
/// drawn once per process, so it cannot be reversed or precomputed), or anonymous. Prints as
/// `key-<hex>` or `anonymous`, safe for logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(Option<u64>);

impl ClientId {
    /// Clients that sent no credential; they share one budget.
    pub const ANONYMOUS: ClientId = ClientId(None);

    /// The identity of `credential`; none (or an empty one) is [`ClientId::ANONYMOUS`].
    pub fn from_credential(credential: Option<&str>) -> ClientId {
        match credential {
            Some(key) if !key.is_empty() => ClientId(Some(seed().hash_one(key))),
            _ => ClientId::ANONYMOUS,
        }
    }

    /// The identity of the gateway key named `name` ([`crate::keys`]): every request
    /// authenticated by that key counts against it, whatever else it carries.
    pub fn gateway_key(name: &str) -> ClientId {
        // Tagged, so that no credential hashes to a key name's identity by construction.
        ClientId(Some(seed().hash_one(("gateway-key", name))))
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

/// The per-process hash seed of every identity.
fn seed() -> &'static RandomState {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    SEED.get_or_init(RandomState::new)
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
}
