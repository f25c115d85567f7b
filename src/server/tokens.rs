//! `POST /v1/messages/count_tokens`: forwarded to Anthropic routes, estimated elsewhere.
//!
//! Claude Code calls it before every turn, so it must answer for any route. Over a non-Anthropic
//! route the count is [`crate::estimate::input_tokens`].

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use providers::Dialect;
use serde_json::{Value, json};

use super::common::{authenticate, client_key, error_response, read_body};
use super::state::EngineState;
use crate::error::GatewayError;
use crate::respond::json_response;
use crate::route;
use crate::upstream::ForwardHeaders;

/// Fields the count_tokens endpoint accepts; a messages body's others are refused by it.
const COUNT_FIELDS: [&str; 6] = [
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
];

/// `count_tokens` is an Anthropic Messages endpoint: it answers in that dialect, and only
/// that dialect's providers can count.
const DOOR: Dialect = Dialect::Anthropic;

/// The handler.
pub async fn count_tokens(State(engine): State<EngineState>, request: Request) -> Response {
    match count(&engine, request).await {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => error_response(DOOR, &e),
    }
}

async fn count(engine: &EngineState, request: Request) -> Result<Value, GatewayError> {
    let (parts, body) = request.into_parts();
    let caller = authenticate(&engine.keyring(), DOOR, &parts.headers)?;
    let bytes = read_body(body, engine.config().server.max_body_bytes).await?;
    let request =
        providers::parse::parse(DOOR, &bytes, engine.config().server.max_body_json_values)?;
    caller.check_model(&request.model)?;
    // One configuration for the whole call, as for an answer.
    let generation = engine.generation();
    let plan = route::plan(generation.config(), &request.model)?;
    let Some(route) = plan.routes.first() else {
        return Err(GatewayError::Internal("empty route plan".into()));
    };
    let provider = generation.provider(route)?;
    if provider.dialect != DOOR {
        return Ok(json!({ "input_tokens": crate::estimate::input_tokens(&request) }));
    }
    let mut upstream: Value = serde_json::from_slice(&generation.upstream_body(&request, route)?)
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    if let Value::Object(map) = &mut upstream {
        map.retain(|k, _| COUNT_FIELDS.contains(&k.as_str()));
    }
    let body = providers::json_write::to_vec(&upstream);
    let forward = ForwardHeaders::from_headers(&parts.headers);
    generation
        .upstream()
        .post_json(
            route,
            provider,
            "/v1/messages/count_tokens",
            body,
            &client_key(DOOR, &parts.headers, &engine.keyring()),
            &forward,
        )
        .await
}
