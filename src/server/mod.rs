//! The HTTP front doors (axum on hyper): OpenAI and Anthropic dialect endpoints, the native
//! Agent Event Stream door, model list, health. Each door is an encoder from Agent Events to
//! its dialect.

mod door;

pub(crate) use door::json_response;
mod models;
pub mod streams;
mod tokens;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use providers::Dialect;
use tokio::net::TcpListener;

use crate::engine::Engine;

/// Shared by every handler.
pub type AppState = Arc<Engine>;

/// The gateway's routes.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(door::openai))
        .route("/chat/completions", post(door::openai))
        .route("/v1/messages", post(door::anthropic))
        .route("/v1/messages/count_tokens", post(tokens::count_tokens))
        .route("/v1/streams", post(streams::start))
        .route("/v1/models", get(models::list))
        .route("/models", get(models::list))
        .route("/healthz", get(health))
        .route("/readyz", get(models::ready))
        .route("/admin/routes", get(models::admin_routes))
        .fallback(door::not_found)
        .with_state(engine)
}

async fn health() -> &'static str {
    "ok\n"
}

/// Serves `engine` on `listener` until `shutdown` resolves, then drains open requests.
///
/// Accepted sockets get TCP_NODELAY: every SSE event is written as it is encoded, and Nagle's
/// algorithm would otherwise hold small frames back for tens of milliseconds.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        // A socket that refuses NODELAY still works, only slower to flush.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The dialect a door speaks, for rendering errors on routes shared by both.
pub(crate) fn door_dialect(headers: &http::HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}
