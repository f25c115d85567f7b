//! `GET /admin/keys`: every gateway key by name, with its limits, output caps and what it
//! spent today and this month (UTC). Never the key nor its hash.

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::state::EngineState;
use crate::limit::ClientId;
use crate::respond::json_response;

/// The handler.
pub async fn admin(State(engine): State<EngineState>) -> Response {
    let config = engine.config();
    let limiter = engine.limiter();
    let keyring = engine.keyring();
    let mut data: Vec<Value> = Vec::new();
    for name in keyring.names() {
        // Across instances with shared limits: one bounded Redis read per key.
        let (spent, budget) = limiter.spent(name).await;
        let quotas = limiter.key_quotas(&ClientId::gateway_key(name));
        let key = config.keys.get(name);
        let models = key.map(|k| k.models.clone());
        let caps = key.map(|k| k.output_caps()).unwrap_or_default();
        data.push(json!({
            "name": name,
            "models": models.unwrap_or_default(),
            "spent_tokens_today": spent.today,
            "spent_tokens_this_month": spent.this_month,
            "budget_tokens_per_day": budget.per_day,
            "budget_tokens_per_month": budget.per_month,
            "requests_per_minute": quotas.requests_per_minute,
            "tokens_per_minute": quotas.tokens_per_minute,
            "concurrent_streams": quotas.concurrent_streams,
            "max_output_tokens": caps.max_output_tokens,
            "max_n": caps.max_n,
        }));
    }
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}
