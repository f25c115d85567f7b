//! What a reload may change: the settings read once at start (which keep their running
//! values until a restart) and the changes between two configurations, by name.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::Serialize;

use super::Config;

/// Settings read once at start: the listeners and their connection limits, TLS, the admin
/// key and where the admin routes are served, and the stream hub (its journal, caps and
/// WebSocket door, `[streaming]`'s `bufferSize`/`chunkSize`/`compression` included). A reload
/// keeps their running values and names those the file changed.
pub const NEEDS_RESTART: &[&str] = &[
    "server.listen",
    "server.open",
    "server.admin_key_env",
    "server.admin_key_sha256",
    "server.admin_listen",
    "server.tls",
    "server.max_connections",
    "server.max_connections_per_address",
    "server.header_read_timeout_ms",
    "server.keep_alive_idle_ms",
    "server.body_read_timeout_ms",
    "server.shutdown_grace_ms",
    "server.metrics_listen",
    "server.metrics",
    "streams",
    "state",
];

/// Gives `next` the running values of the [`NEEDS_RESTART`] settings, and returns the names
/// of those whose value in `next` differed (they take effect at the next start).
pub fn keep_restart_settings(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut differs = Vec::new();
    let (old, new) = (&running.server, &mut next.server);
    let mut keep = |name: &'static str, same: bool| {
        if !same {
            differs.push(name);
        }
    };
    keep("server.listen", old.listen == new.listen);
    keep("server.open", old.open == new.open);
    keep(
        "server.admin_key_env",
        old.admin_key_env == new.admin_key_env,
    );
    keep(
        "server.admin_key_sha256",
        old.admin_key_sha256 == new.admin_key_sha256,
    );
    keep("server.admin_listen", old.admin_listen == new.admin_listen);
    keep("server.tls", same(&old.tls, &new.tls));
    keep(
        "server.max_connections",
        old.max_connections == new.max_connections,
    );
    keep(
        "server.max_connections_per_address",
        old.max_connections_per_address == new.max_connections_per_address,
    );
    keep(
        "server.header_read_timeout_ms",
        old.header_read_timeout_ms == new.header_read_timeout_ms,
    );
    keep(
        "server.keep_alive_idle_ms",
        old.keep_alive_idle_ms == new.keep_alive_idle_ms,
    );
    keep(
        "server.body_read_timeout_ms",
        old.body_read_timeout_ms == new.body_read_timeout_ms,
    );
    keep(
        "server.shutdown_grace_ms",
        old.shutdown_grace_ms == new.shutdown_grace_ms,
    );
    keep(
        "server.metrics_listen",
        old.metrics_listen == new.metrics_listen,
    );
    keep("server.metrics", old.metrics == new.metrics);
    keep("streams", same(&running.streams, &next.streams));
    keep("state", running.state == next.state);
    // Everything of [server] but the two body limits, which every request reads anew.
    let body = (new.max_body_bytes, new.max_body_json_values);
    *new = old.clone();
    (new.max_body_bytes, new.max_body_json_values) = body;
    next.streams = running.streams.clone();
    next.state = running.state.clone();
    differs
}

/// Names added, removed and changed in one section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delta {
    /// In the new configuration only.
    pub added: Vec<String>,
    /// In the running configuration only.
    pub removed: Vec<String>,
    /// In both, with different settings.
    pub changed: Vec<String>,
}

impl Delta {
    fn of<V: Debug>(old: &BTreeMap<String, V>, new: &BTreeMap<String, V>) -> Delta {
        Delta {
            added: new
                .keys()
                .filter(|k| !old.contains_key(*k))
                .cloned()
                .collect(),
            removed: old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .cloned()
                .collect(),
            changed: old
                .iter()
                .filter(|(k, v)| new.get(*k).is_some_and(|n| !same(*v, n)))
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    /// Nothing added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What a reload changes, by name (never a key or a key's digest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// `[models.ALIAS]`.
    pub aliases: Delta,
    /// `[providers.NAME]`.
    pub providers: Delta,
    /// The `provider/model` routes the aliases use (primary or fallback).
    pub routes: Delta,
    /// `[keys.NAME]`.
    pub keys: Delta,
    /// Other sections that changed and take effect: `limits`, `translation`,
    /// `streaming.retryPolicy`, `streaming.circuitBreaker`, `passthrough`,
    /// `server.max_body_bytes`, `server.max_body_json_values`.
    pub settings: Vec<&'static str>,
}

impl Changes {
    /// From `old` to `new` (after [`keep_restart_settings`]).
    pub fn between(old: &Config, new: &Config) -> Changes {
        let routes = |c: &Config| -> BTreeMap<String, ()> {
            c.models
                .values()
                .flat_map(|m| std::iter::once(&m.route).chain(&m.fallbacks))
                .map(|r| (r.clone(), ()))
                .collect()
        };
        let settings = [
            ("limits", same(&old.limits, &new.limits)),
            ("translation", same(&old.translation, &new.translation)),
            (
                "streaming.retryPolicy",
                same(&old.streaming.retry_policy, &new.streaming.retry_policy),
            ),
            (
                "streaming.circuitBreaker",
                same(
                    &old.streaming.circuit_breaker,
                    &new.streaming.circuit_breaker,
                ),
            ),
            ("passthrough", same(&old.passthrough, &new.passthrough)),
            (
                "server.max_body_bytes",
                old.server.max_body_bytes == new.server.max_body_bytes,
            ),
            (
                "server.max_body_json_values",
                old.server.max_body_json_values == new.server.max_body_json_values,
            ),
        ];
        Changes {
            aliases: Delta::of(&old.models, &new.models),
            providers: Delta::of(&old.providers, &new.providers),
            routes: Delta::of(&routes(old), &routes(new)),
            keys: Delta::of(&old.keys, &new.keys),
            settings: settings
                .into_iter()
                .filter(|(_, same)| !same)
                .map(|(name, _)| name)
                .collect(),
        }
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
            && self.providers.is_empty()
            && self.routes.is_empty()
            && self.keys.is_empty()
            && self.settings.is_empty()
    }
}

/// Whether two settings are equal, by their full `Debug` form: the config structs are plain
/// data without `PartialEq`, and their `Debug` shows every field (variable names, never a
/// key's value).
fn same<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The `[server]` settings a reload applies; every other one is in [`NEEDS_RESTART`].
    const RELOADED: &[&str] = &["server.max_body_bytes", "server.max_body_json_values"];

    /// A `[server]` setting added later must be sorted into one list or the other (this fails
    /// until it is): the `Debug` form names every field.
    #[test]
    fn every_server_setting_is_reloaded_or_needs_a_restart() {
        let debug = format!("{:?}", crate::config::ServerConfig::default());
        let inner = debug
            .split_once('{')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let mut depth = 0i32;
        let mut field = String::new();
        let mut fields = Vec::new();
        for c in inner.chars() {
            match c {
                '{' | '(' | '[' => depth += 1,
                '}' | ')' | ']' => depth -= 1,
                ':' if depth == 0 && !field.trim().is_empty() => {
                    fields.push(field.trim().to_owned());
                    field.clear();
                }
                ',' if depth == 0 => field.clear(),
                _ if depth == 0 => field.push(c),
                _ => {}
            }
        }
        // Only names before a ':' at depth 0 are fields; values were cleared at each ','.
        let fields: Vec<String> = fields
            .into_iter()
            .filter(|f| {
                f.starts_with(|c: char| c.is_ascii_lowercase())
                    && f.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        assert!(fields.len() >= 13, "{fields:?}");
        for f in fields {
            let name = format!("server.{f}");
            assert!(
                NEEDS_RESTART.contains(&name.as_str()) ^ RELOADED.contains(&name.as_str()),
                "{name}: add it to NEEDS_RESTART (and keep_restart_settings) or to RELOADED"
            );
        }
    }

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    const BASE: &str = "[providers.a]\ndialect = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n\
                        [providers.b]\ndialect = \"anthropic\"\nbase_url = \"http://127.0.0.1:2\"\n";

    /// For random alias maps over two providers, the changes name exactly the aliases and
    /// routes that differ, and a configuration compared with itself has none.
    #[test]
    fn changes_name_what_differs() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for case in 0..100 {
            let mut maps = [BTreeMap::new(), BTreeMap::new()];
            for map in &mut maps {
                for alias in 0..4 {
                    if next() % 3 > 0 {
                        let route = format!("{}/m{}", ["a", "b"][next() % 2], next() % 3);
                        map.insert(format!("x{alias}"), route);
                    }
                }
            }
            let text = |map: &BTreeMap<String, String>| {
                let mut t = BASE.to_owned();
                for (alias, route) in map {
                    t.push_str(&format!("[models.{alias}]\nroute = \"{route}\"\n"));
                }
                parse(&t)
            };
            let (old, new) = (text(&maps[0]), text(&maps[1]));
            let changes = Changes::between(&old, &new);
            let [o, n] = &maps;
            let added: Vec<String> = n.keys().filter(|k| !o.contains_key(*k)).cloned().collect();
            let removed: Vec<String> = o.keys().filter(|k| !n.contains_key(*k)).cloned().collect();
            let changed: Vec<String> = o
                .iter()
                .filter(|(k, v)| n.get(*k).is_some_and(|w| w != *v))
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(changes.aliases.added, added, "case {case}");
            assert_eq!(changes.aliases.removed, removed, "case {case}");
            assert_eq!(changes.aliases.changed, changed, "case {case}");
            let routes = |m: &BTreeMap<String, String>| -> BTreeSet<String> {
                m.values().cloned().collect()
            };
            let (ro, rn) = (routes(o), routes(n));
            let added: Vec<String> = rn.difference(&ro).cloned().collect();
            let removed: Vec<String> = ro.difference(&rn).cloned().collect();
            assert_eq!(changes.routes.added, added, "case {case}");
            assert_eq!(changes.routes.removed, removed, "case {case}");
            assert!(changes.providers.is_empty() && changes.settings.is_empty());
            assert!(Changes::between(&new, &new).is_empty());
        }
    }

    /// Every setting that needs a restart keeps its running value and is named; the body
    /// limits and the rest of the file are taken.
    #[test]
    fn restart_settings_keep_their_running_values() {
        let running = parse(BASE);
        let mut next = parse(&format!(
            "{BASE}[server]\nlisten = \"127.0.0.1:9\"\nmax_connections = 3\n\
             max_body_bytes = 1234\nkeep_alive_idle_ms = 5\n\
             [streams]\nmax_live = 7\n[translation]\nanthropic_default_max_tokens = 99\n"
        ));
        let differs = keep_restart_settings(&running, &mut next);
        assert_eq!(
            differs,
            [
                "server.listen",
                "server.max_connections",
                "server.keep_alive_idle_ms",
                "streams"
            ]
        );
        assert_eq!(next.server.listen, running.server.listen);
        assert_eq!(next.server.max_connections, running.server.max_connections);
        assert_eq!(next.streams.max_live, running.streams.max_live);
        assert_eq!(next.server.max_body_bytes, 1234);
        assert_eq!(next.translation.anthropic_default_max_tokens, 99);
        assert_eq!(
            Changes::between(&running, &next).settings,
            ["translation", "server.max_body_bytes"]
        );
        let mut same = running.clone();
        assert!(keep_restart_settings(&running, &mut same).is_empty());
    }
}
