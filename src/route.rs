//! Which upstreams answer a requested model: aliases, `provider/model`, then model families.

use std::fmt;

use providers::Dialect;
use providers::request::Capabilities;

use crate::config::Config;
use crate::error::GatewayError;

/// One upstream target: a configured provider and the model name sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Provider name (a key of `[providers]`).
    pub provider: String,
    /// Model name as the provider knows it.
    pub model: String,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// The routes to try for one request, primary first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Primary route, then the alias's fallbacks in order.
    pub routes: Vec<Route>,
}

/// Longest model name routed, in bytes.
pub const MAX_MODEL_LEN: usize = 256;

/// Resolves `model` against the configuration:
/// 1. an alias in `[models]`: its route, then its fallbacks;
/// 2. `PROVIDER/MODEL` where PROVIDER is configured (MODEL may itself contain `/`);
/// 3. a bare name of a known family: `claude-*` to the Anthropic provider, `gpt-*`, `o1*`,
///    `o3*`, `o4*`, `chatgpt-*` to the OpenAI one (the provider named `anthropic`/`openai`,
///    else the first configured provider of that dialect).
pub fn plan(config: &Config, model: &str) -> Result<Plan, GatewayError> {
    // No provider names a model so: refused before it reaches a route, a log line or a
    // provider (a newline in it would forge a log line).
    if model.len() > MAX_MODEL_LEN || model.chars().any(char::is_control) {
        return Err(GatewayError::UnknownModel {
            model: model.to_owned(),
        });
    }
    if let Some(alias) = config.models.get(model) {
        let routes = std::iter::once(&alias.route)
            .chain(&alias.fallbacks)
            .filter_map(|r| parse_route(config, r))
            .collect::<Vec<_>>();
        if !routes.is_empty() {
            return Ok(Plan { routes });
        }
    }
    if let Some(route) = parse_route(config, model) {
        return Ok(Plan {
            routes: vec![route],
        });
    }
    if let Some(dialect) = family(model)
        && let Some(provider) = provider_for(config, dialect)
    {
        return Ok(Plan {
            routes: vec![Route {
                provider,
                model: model.to_owned(),
            }],
        });
    }
    Err(GatewayError::UnknownModel {
        model: model.to_owned(),
    })
}

/// What `route`'s model can take when it answers a request for `requested`: the alias's
/// `reasoning` if `requested` is an alias, else the provider's, else the model family's.
pub fn capabilities(config: &Config, requested: &str, route: &Route) -> Capabilities {
    let family = Capabilities::of(&route.model);
    let reasons = config
        .models
        .get(requested)
        .and_then(|alias| alias.reasoning)
        .or_else(|| config.providers.get(&route.provider)?.reasoning)
        .or(family.reasons);
    Capabilities { reasons }
}

fn parse_route(config: &Config, text: &str) -> Option<Route> {
    let (provider, model) = text.split_once('/')?;
    (!model.is_empty() && config.providers.contains_key(provider)).then(|| Route {
        provider: provider.to_owned(),
        model: model.to_owned(),
    })
}

/// The dialect family a bare model name belongs to.
fn family(model: &str) -> Option<Dialect> {
    providers::dialects::all()
        .find(|w| w.model_prefixes().iter().any(|p| model.starts_with(p)))
        .map(|w| w.dialect())
}

fn provider_for(config: &Config, dialect: Dialect) -> Option<String> {
    let conventional = dialect.as_str();
    if config
        .providers
        .get(conventional)
        .is_some_and(|p| p.dialect == dialect)
    {
        return Some(conventional.to_owned());
    }
    config
        .providers
        .iter()
        .find(|(_, p)| p.dialect == dialect)
        .map(|(name, _)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_with_control_characters_or_too_long_never_route() {
        let c = config();
        for bad in [
            "anthropic/claude\nFORGED".to_owned(),
            "claude-x\r".to_owned(),
            "gpt-4o\u{1b}[31m".to_owned(),
            format!("anthropic/{}", "x".repeat(MAX_MODEL_LEN)),
        ] {
            let e = plan(&c, &bad).unwrap_err();
            assert!(matches!(e, GatewayError::UnknownModel { .. }), "{e:?}");
            assert!(!e.to_string().contains('\n') && !e.to_string().contains('\r'));
        }
        assert!(plan(&c, "anthropic/claude-x").is_ok());
    }

    fn config() -> Config {
        Config::parse(
            r#"
            [providers.anthropic]
            dialect = "anthropic"
            base_url = "https://api.anthropic.com"
            [providers.openai]
            dialect = "openai"
            base_url = "https://api.openai.com/v1"
            [providers.openrouter]
            dialect = "openai"
            base_url = "https://openrouter.ai/api/v1"
            [models.smart]
            route = "anthropic/claude-sonnet-4-5"
            fallbacks = ["openai/gpt-4o"]
            "#,
        )
        .unwrap()
    }

    fn routes(model: &str) -> Vec<String> {
        plan(&config(), model)
            .unwrap()
            .routes
            .iter()
            .map(Route::to_string)
            .collect()
    }

    #[test]
    fn alias_gives_route_then_fallbacks() {
        assert_eq!(
            routes("smart"),
            ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"]
        );
    }

    #[test]
    fn provider_prefix_keeps_the_rest_of_the_name() {
        assert_eq!(
            routes("openrouter/meta-llama/llama-3-70b"),
            ["openrouter/meta-llama/llama-3-70b"]
        );
    }

    #[test]
    fn bare_names_route_by_family() {
        assert_eq!(routes("claude-haiku-4-5"), ["anthropic/claude-haiku-4-5"]);
        for m in ["gpt-4o", "o1-mini", "o3", "o4-mini", "chatgpt-4o-latest"] {
            assert_eq!(routes(m), [format!("openai/{m}")]);
        }
    }

    #[test]
    fn reasoning_is_the_alias_then_the_provider_then_the_family() {
        let mut c = config();
        let reasons = |c: &Config, requested: &str| {
            plan(c, requested)
                .unwrap()
                .routes
                .iter()
                .map(|r| capabilities(c, requested, r).reasons)
                .collect::<Vec<_>>()
        };
        // Family defaults: Claude 4.5 reasons, gpt-4o does not, a llama is unknown.
        assert_eq!(reasons(&c, "smart"), [Some(true), Some(false)]);
        assert_eq!(reasons(&c, "openrouter/meta-llama/llama-3-70b"), [None]);
        c.providers.get_mut("openrouter").unwrap().reasoning = Some(true);
        assert_eq!(
            reasons(&c, "openrouter/meta-llama/llama-3-70b"),
            [Some(true)]
        );
        c.providers.get_mut("openai").unwrap().reasoning = Some(true);
        assert_eq!(reasons(&c, "smart"), [Some(true), Some(true)]);
        c.models.get_mut("smart").unwrap().reasoning = Some(false);
        assert_eq!(reasons(&c, "smart"), [Some(false), Some(false)]);
        // The alias's setting is for the alias: the same route asked for by name keeps the
        // provider's.
        assert_eq!(reasons(&c, "openai/gpt-4o"), [Some(true)]);
        // And the keys parse.
        let c = Config::parse(
            "[providers.local]\ndialect = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
             reasoning = true\n[models.fast]\nroute = \"local/m\"\nreasoning = false\n",
        )
        .unwrap();
        assert_eq!(c.providers["local"].reasoning, Some(true));
        assert_eq!(c.models["fast"].reasoning, Some(false));
    }

    #[test]
    fn unknown_names_are_404() {
        for m in ["llama3", "nope/x", "anthropic/"] {
            let e = plan(&config(), m).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::NOT_FOUND, "{m}");
        }
    }
}
