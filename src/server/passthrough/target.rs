//! Where a forwarded request goes: which paths may be forwarded at all, and which provider
//! gets one (the door's pass-through provider, or the route of the model its JSON body names).

use bytes::Bytes;
use providers::Dialect;
use providers::request::{CensusError, Tree};
use serde_json::Value;

use crate::config::{Config, ProviderConfig};
use crate::error::GatewayError;

/// Paths under `/v1` that are the gateway's own even where no route of the router matches
/// them (`/v1/streams/{id}/more`): never forwarded.
const GATEWAY_PREFIXES: [&str; 2] = ["/v1/streams", "/v1/ws"];

/// Whether `path` may be forwarded: under `/v1/`, not one of the gateway's own, and without
/// a segment that would climb out of the provider's API root once the URL is resolved (`..`,
/// written plain or percent-encoded, or a backslash, which URL parsers read as `/`).
pub fn forwardable(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    if rest.is_empty()
        || GATEWAY_PREFIXES
            .iter()
            .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
    {
        return false;
    }
    !path.contains('\\')
        && path.split('/').all(|segment| {
            let plain = segment.to_ascii_lowercase().replace("%2e", ".");
            plain != "." && plain != ".."
        })
}

/// The provider a request goes to, and its body when the gateway had to change it.
#[derive(Debug)]
pub struct Target<'a> {
    /// Provider name.
    pub name: &'a str,
    /// Its configuration.
    pub provider: &'a ProviderConfig,
    /// The model the client named (an alias stays the alias), for key restrictions and
    /// rate limits.
    pub model: Option<String>,
    /// The body to send: the client's, or the client's with the route's model in `model`.
    pub body: Bytes,
}

impl<'a> Target<'a> {
    /// The door's provider, with a body the gateway does not look at.
    pub fn untouched((name, provider): (&'a str, &'a ProviderConfig)) -> Self {
        Target {
            name,
            provider,
            model: None,
            body: Bytes::new(),
        }
    }
}

/// The target of a JSON `body` at `door`, whose pass-through provider is `default`. A body
/// naming a model goes where that model routes, as long as the route's provider speaks the
/// door's dialect: an alias to its first such route (with the route's model name written
/// into the body), `provider/model` to that provider (with `model`). Any other model, or a
/// body that is not a JSON object, goes to `default` untouched (the provider judges it).
pub fn for_json<'a>(
    config: &'a Config,
    door: Dialect,
    default: (&'a str, &'a ProviderConfig),
    body: Bytes,
    max_values: usize,
) -> Result<Target<'a>, GatewayError> {
    let untouched = |model: Option<String>, body: Bytes| Target {
        model,
        body,
        ..Target::untouched(default)
    };
    let mut object = match providers::request::parse_bounded(&body, max_values) {
        Err(CensusError::TooManyValues { limit }) => {
            return Err(GatewayError::TooManyJsonValues { limit });
        }
        Ok(Tree::Object(members)) => providers::request::object(members),
        Err(CensusError::Syntax(_)) | Ok(_) => return Ok(untouched(None, body)),
    };
    let Some(model) = object
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Ok(untouched(None, body));
    };
    let Some((name, provider, upstream_model)) = route(config, door, &model)? else {
        return Ok(untouched(Some(model), body));
    };
    object.insert("model".into(), Value::String(upstream_model));
    let body = providers::json_write::to_vec(&Value::Object(object));
    Ok(Target {
        name,
        provider,
        model: Some(model),
        body: Bytes::from(body),
    })
}

/// The provider and model name `model` routes to at `door`: None when it names no alias and
/// no configured provider (it goes to the door's provider as it is). An alias none of whose
/// routes speaks the door's dialect is refused: forwarding its name unchanged would ask a
/// provider for a model it has never heard of.
fn route<'a>(
    config: &'a Config,
    door: Dialect,
    model: &str,
) -> Result<Option<(&'a str, &'a ProviderConfig, String)>, GatewayError> {
    let in_dialect = |route: &str| {
        let (provider, upstream) = route.split_once('/')?;
        let (name, config) = config.providers.get_key_value(provider)?;
        (config.dialect == door && !upstream.is_empty())
            .then(|| (name.as_str(), config, upstream.to_owned()))
    };
    if let Some(alias) = config.models.get(model) {
        return std::iter::once(&alias.route)
            .chain(&alias.fallbacks)
            .find_map(|r| in_dialect(r))
            .map(Some)
            .ok_or_else(|| GatewayError::UnknownModel {
                model: model.to_owned(),
            });
    }
    Ok(in_dialect(model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> Config {
        Config::parse(
            r#"
[providers.oa]
dialect = "openai"
base_url = "http://127.0.0.1:1/v1"
[providers.ob]
dialect = "openai"
base_url = "http://127.0.0.1:2/v1"
[providers.an]
dialect = "anthropic"
base_url = "http://127.0.0.1:3"
[models.embed]
route = "an/claude-x"
fallbacks = ["ob/text-embedding-3-small"]
[models.chatty]
route = "an/claude-y"
"#,
        )
        .unwrap()
    }

    fn target(
        config: &Config,
        body: &str,
    ) -> Result<(String, Option<String>, Value), GatewayError> {
        let default = config
            .passthrough
            .provider(&config.providers, Dialect::OpenAi)
            .unwrap();
        let t = for_json(
            config,
            Dialect::OpenAi,
            default,
            Bytes::from(body.to_owned()),
            1000,
        )?;
        let sent = serde_json::from_slice(&t.body).unwrap_or(Value::Null);
        Ok((t.name.to_owned(), t.model, sent))
    }

    #[test]
    fn an_alias_goes_to_its_first_route_in_the_doors_dialect() {
        let c = config();
        let (name, model, sent) = target(&c, r#"{"model":"embed","input":"x"}"#).unwrap();
        assert_eq!(name, "ob");
        assert_eq!(model.as_deref(), Some("embed"));
        assert_eq!(sent["model"], "text-embedding-3-small");
        assert_eq!(sent["input"], "x");
        // No route speaks the door's dialect: refused, never sent under the alias's name.
        let err = target(&c, r#"{"model":"chatty"}"#).unwrap_err();
        assert!(matches!(err, GatewayError::UnknownModel { .. }));
    }

    #[test]
    fn provider_prefixes_route_and_other_bodies_pass_untouched() {
        let c = config();
        let (name, _, sent) = target(&c, r#"{"model":"ob/m"}"#).unwrap();
        assert_eq!((name.as_str(), sent["model"].as_str()), ("ob", Some("m")));
        // The default is the first provider of the dialect by name.
        for body in [
            r#"{"model":"an/claude"}"#,
            r#"{"model":"text-embedding-3-large"}"#,
            r#"{"input":"no model"}"#,
            r#"["not", "an object"]"#,
            r#"{"model": "#,
        ] {
            let c2 = config();
            let default = c2
                .passthrough
                .provider(&c2.providers, Dialect::OpenAi)
                .unwrap();
            let t = for_json(&c2, Dialect::OpenAi, default, Bytes::from(body), 1000).unwrap();
            assert_eq!(t.name, "oa", "{body}");
            assert_eq!(t.body, body.as_bytes(), "{body}: bytes untouched");
        }
        let err = target(&c, &format!("[{}0]", "0,".repeat(2000))).unwrap_err();
        assert!(matches!(err, GatewayError::TooManyJsonValues { .. }));
    }

    #[test]
    fn each_door_names_a_provider_of_its_dialect_or_none() {
        let base = "[providers.oa]\ndialect = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
                    [providers.an]\ndialect = \"anthropic\"\nbase_url = \"http://127.0.0.1:3\"\n";
        let c = Config::parse(&format!(
            "{base}[passthrough]\nopenai = \"oa\"\nanthropic = false\n"
        ))
        .unwrap();
        let chosen = c.passthrough.provider(&c.providers, Dialect::OpenAi);
        assert_eq!(chosen.map(|(n, _)| n), Some("oa"));
        assert!(
            c.passthrough
                .provider(&c.providers, Dialect::Anthropic)
                .is_none()
        );
        for bad in ["openai = \"an\"", "anthropic = \"nobody\"", "openai = 3"] {
            let err = Config::parse(&format!("{base}[passthrough]\n{bad}\n"));
            assert!(err.is_err(), "{bad}");
        }
    }

    /// A door's pass-through falls back to a provider of a dialect sharing its platform
    /// (a gateway with only a Responses provider still forwards `/v1/embeddings` there), and
    /// is configured under the platform's name only.
    #[test]
    fn a_platform_shares_its_pass_through() {
        let responses = "[providers.r]\ndialect = \"openai-responses\"\n\
                         base_url = \"http://127.0.0.1:1/v1\"\n";
        let c = Config::parse(responses).unwrap();
        for door in [Dialect::OpenAi, Dialect::OpenAiResponses] {
            let chosen = c.passthrough.provider(&c.providers, door);
            assert_eq!(chosen.map(|(n, _)| n), Some("r"), "{door}");
        }
        assert!(
            c.passthrough
                .provider(&c.providers, Dialect::Anthropic)
                .is_none()
        );
        let both = format!(
            "{responses}[providers.s]\ndialect = \"openai\"\nbase_url = \"http://127.0.0.1:2/v1\"\n"
        );
        let c = Config::parse(&both).unwrap();
        let chosen = c.passthrough.provider(&c.providers, Dialect::OpenAi);
        assert_eq!(
            chosen.map(|(n, _)| n),
            Some("s"),
            "the door's own dialect first"
        );
        let named = Config::parse(&format!("{both}[passthrough]\nopenai = \"r\"\n")).unwrap();
        let chosen = named
            .passthrough
            .provider(&named.providers, Dialect::OpenAi);
        assert_eq!(chosen.map(|(n, _)| n), Some("r"));
        for bad in [
            "\"openai-responses\" = true",
            "gemini = true",
            "anthropic = \"r\"",
        ] {
            let err = Config::parse(&format!("{both}[passthrough]\n{bad}\n"));
            assert!(err.is_err(), "{bad}");
        }
    }

    #[test]
    fn only_paths_under_v1_that_stay_there_are_forwarded() {
        for path in [
            "/v1/embeddings",
            "/v1/files/f-1/content",
            "/v1/messages/batches",
            "/v1/streamsx",
        ] {
            assert!(forwardable(path), "{path}");
        }
        for path in [
            "/v1/",
            "/v2/x",
            "/admin/keys",
            "/embeddings",
            "/v1/streams",
            "/v1/streams/abc/x",
            "/v1/ws/x",
            "/v1/../admin",
            "/v1/files/%2E%2e/x",
            "/v1/./x",
            "/v1/a\\..\\b",
        ] {
            assert!(!forwardable(path), "{path}");
        }
    }

    proptest::proptest! {
        /// Whatever the path, a forwarded URL stays under the provider's base URL.
        #[test]
        fn forwarded_urls_never_leave_the_api_root(
            segments in proptest::collection::vec("[a-zA-Z0-9._%\\\\-]{0,6}", 1..6)
        ) {
            let path = format!("/v1/{}", segments.join("/"));
            let c = config();
            if forwardable(&path) {
                for name in ["oa", "an"] {
                    let provider = &c.providers[name];
                    let url = crate::upstream::forward_url(provider, &path);
                    if let Ok(parsed) = reqwest::Url::parse(&url) {
                        let root = crate::upstream::forward_url(provider, "/v1/");
                        proptest::prop_assert!(
                            parsed.as_str().starts_with(&root),
                            "{path} -> {parsed} leaves {root}"
                        );
                    }
                }
            }
        }
    }
}
