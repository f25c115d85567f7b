//! `[state]`: where the state several instances share lives. Its settings live with the
//! client (`crate::state`), which imports nothing of the gateway: the limiter, below
//! `config` and `error`, uses the client without a cycle; `config` re-exports them as
//! `config::state`.
//!
//! # Configuration: `[state]`
//!
//! ```toml
//! [state]
//! backend = "redis"             # "embedded" (default: one process, its own journal) | "redis"
//! url_env = "STREAMGATE_REDIS"  # the variable holding the URL (redis://[user:pass@]host:port/db)
//! # url = "redis://127.0.0.1:6379/0"   # or the URL itself, when it holds no password
//! prefix = "streamgate"         # every key and channel starts with "PREFIX:"
//! pool_size = 4                 # multiplexed connections for commands (1..=64)
//! timeout_ms = 1000             # one command's longest wait before Redis counts as unavailable
//! lease_ms = 3000               # a stream's owner renews its lease within this; a dead
//!                               # owner's streams are taken over after at most ~4/3 of it
//! ```
//!
//! docs/deployment.md says what each setting costs and how instances share the state.

use serde::Deserialize;

/// Where shared state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// Every piece of state in this process (the journal on local disk): one instance.
    #[default]
    Embedded,
    /// Streams, leases, rate limits and breakers in Redis: any number of instances.
    Redis,
}

/// `[state]`: the shared state's backend and its Redis connection.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The backend (default embedded).
    #[serde(default)]
    pub backend: StateBackend,
    /// The Redis URL. Must hold no password (use `url_env` for one): the file is not a
    /// secret store.
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the Redis URL (read at start; never logged).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Every key and channel starts with `PREFIX:` (several gateways may share one Redis).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Multiplexed connections for commands (pub/sub has one more of its own).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// One command's longest wait, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A stream owner's lease, in milliseconds: renewed every third of it.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig {
            backend: StateBackend::Embedded,
            url: None,
            url_env: None,
            prefix: default_prefix(),
            pool_size: default_pool_size(),
            timeout_ms: default_timeout_ms(),
            lease_ms: default_lease_ms(),
        }
    }
}

fn default_prefix() -> String {
    "streamgate".into()
}

fn default_pool_size() -> usize {
    4
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_lease_ms() -> u64 {
    3000
}

/// The most connections `pool_size` may ask for.
pub const MAX_POOL_SIZE: usize = 64;
/// The longest prefix: it is in every key.
const MAX_PREFIX_LEN: usize = 64;

impl StateConfig {
    /// Whether instances share state through Redis.
    pub fn is_redis(&self) -> bool {
        self.backend == StateBackend::Redis
    }

    /// The Redis URL: `url`, else the value of `url_env` read through `env`.
    pub fn redis_url(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        match &self.url_env {
            Some(var) => env(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("state.url_env: environment variable {var} is not set")),
            None => Err("state: backend = \"redis\" needs url or url_env".into()),
        }
    }

    /// Every inconsistency, for [`crate::config::Config`]'s report.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.url.is_some() && self.url_env.is_some() {
            problems.push("state: set url or url_env, not both".into());
        }
        if self.is_redis() && self.url.is_none() && self.url_env.is_none() {
            problems.push("state: backend = \"redis\" needs url or url_env".into());
        }
        if let Some(url) = &self.url {
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                // Never echoed: a URL may hold a password.
                problems.push("state.url must start with redis:// or unix://".into());
            } else if has_password(url) {
                problems.push(
                    "state.url holds a password: put the URL in an environment variable and name it in state.url_env".into(),
                );
            }
        }
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            problems.push(format!("state.pool_size must be 1..={MAX_POOL_SIZE}"));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > MAX_PREFIX_LEN
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            problems.push(format!(
                "state.prefix must be 1..={MAX_PREFIX_LEN} of [A-Za-z0-9_.-]"
            ));
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            problems.push("state.timeout_ms must be 10..=60000".into());
        }
        if !(300..=600_000).contains(&self.lease_ms) {
            problems.push("state.lease_ms must be 300..=600000".into());
        }
        problems
    }
}

/// Whether a `redis://` URL carries a password (`redis://user:pass@host` or `redis://:pass@host`).
fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> StateConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_default_is_embedded_and_valid() {
        let config = StateConfig::default();
        assert!(!config.is_redis());
        assert!(config.problems().is_empty());
        assert_eq!(parse(""), config);
    }

    #[test]
    fn redis_needs_a_url_and_never_one_with_a_password_in_the_file() {
        assert!(!parse("backend = \"redis\"").problems().is_empty());
        let ok = parse("backend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"");
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        let secret = parse("backend = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:6379\"");
        let problems = secret.problems().join(";");
        assert!(problems.contains("password"), "{problems}");
        assert!(!problems.contains("hunter2"), "{problems}");
        let env = parse("backend = \"redis\"\nurl_env = \"R\"");
        assert!(env.problems().is_empty());
        assert_eq!(
            env.redis_url(|v| (v == "R").then(|| "redis://:x@h".into())),
            Ok("redis://:x@h".into())
        );
        assert!(env.redis_url(|_| None).is_err());
    }

    #[test]
    fn bounds_are_checked() {
        for bad in [
            "pool_size = 0",
            "pool_size = 65",
            "prefix = \"\"",
            "prefix = \"a b\"",
            "timeout_ms = 1",
            "lease_ms = 10",
        ] {
            assert!(!parse(bad).problems().is_empty(), "{bad}");
        }
        assert!(toml::from_str::<StateConfig>("backend = \"etcd\"").is_err());
        assert!(toml::from_str::<StateConfig>("nope = 1").is_err());
    }

    #[test]
    fn passwords_are_found_wherever_the_url_puts_them() {
        assert!(has_password("redis://u:p@h:1/0"));
        assert!(has_password("redis://:p@h"));
        assert!(!has_password("redis://u@h"));
        assert!(!has_password("redis://h:6379/0?x=a@b"));
    }
}
