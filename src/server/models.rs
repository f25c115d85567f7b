//! `GET /v1/models` (in the shape of the SDK that asks), `GET /readyz`, and
//! `GET /admin/routes` (circuit breaker states).

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::state::EngineState;
use crate::config::Config;
use crate::respond::json_response;

/// Model ids a client may ask for: every alias, then every route an alias names.
pub fn model_ids(config: &Config) -> Vec<String> {
    let mut ids: Vec<String> = config.models.keys().cloned().collect();
    for alias in config.models.values() {
        for route in std::iter::once(&alias.route).chain(&alias.fallbacks) {
            if !ids.contains(route) {
                ids.push(route.clone());
            }
        }
    }
    ids
}

/// `GET /v1/models`: OpenAI's list shape, or Anthropic's when the Anthropic SDK asks.
pub async fn list(State(engine): State<EngineState>, headers: HeaderMap) -> Response {
    let dialect = super::common::door_dialect(&headers);
    let caller = match super::common::authenticate(&engine.keyring(), dialect, &headers) {
        Ok(caller) => caller,
        Err(e) => return super::common::error_response(dialect, &e),
    };
    // A key limited to some models sees only those.
    let mut ids = model_ids(&engine.config());
    ids.retain(|id| caller.allows(id));
    let body = dialect.wire().models_body(&ids);
    json_response(StatusCode::OK, &body)
}

/// `GET /readyz`: 200 when at least one provider can be called (its key variable is set, it
/// needs none, or clients may bring their own), 503 otherwise; the body says which.
pub async fn ready(State(engine): State<EngineState>) -> Response {
    let providers: serde_json::Map<String, Value> = engine
        .config()
        .providers
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                json!({"dialect": p.dialect, "ready": p.key_available()}),
            )
        })
        .collect();
    let ready = providers.values().any(|p| p["ready"] == true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({"ready": ready, "providers": providers}))
}

/// `GET /admin/routes`: every route's circuit breaker (`closed`, `open` with the time until
/// its probe, `half_open`), for operators.
pub async fn admin_routes(State(engine): State<EngineState>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "routes": engine.breakers().snapshot() }),
    )
}
