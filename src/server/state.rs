//! The state every handler shares.

use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::GatewayError;
use crate::hub::Hub;
use crate::telemetry::Telemetry;

/// Shared by every handler: the engine that answers and the hub that keeps streams.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The request path.
    pub engine: Arc<Engine>,
    /// Streams detached from their connections.
    pub hub: Arc<Hub>,
    /// Cancelled when [`serve`](super::serve)'s shutdown signal fires: upgraded WebSocket
    /// connections are no longer hyper's to drain, so they watch this to close with 1001
    /// (going away).
    pub shutdown: CancellationToken,
    /// The open WebSocket connections, which [`serve`](super::serve) waits for (a little) after
    /// shutdown so that their close frames go out before the process ends.
    pub websockets: TaskTracker,
    /// The shutdown drain: responses in flight, and the end of the grace that the OpenAI,
    /// Responses and Anthropic doors' answers watch.
    pub drain: super::drain::Drain,
    /// Request ids, access log and the registry behind `GET /metrics`.
    pub telemetry: Telemetry,
}

/// For handlers that need only the engine.
pub(crate) type EngineState = Arc<Engine>;

impl FromRef<AppState> for Arc<Engine> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.engine)
    }
}

impl FromRef<AppState> for Arc<Hub> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.hub)
    }
}

impl AppState {
    /// The engine and the hub for `config` (opening the journal and continuing the streams it
    /// holds, so call it inside a tokio runtime).
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let streams = config.streams.clone();
        let engine = Arc::new(Engine::new(config)?);
        let hub = Hub::open(streams, &engine)
            .map_err(|e| GatewayError::Internal(format!("opening the journal: {e}")))?;
        let websockets = TaskTracker::new();
        let sources = crate::system_metrics::SystemSources {
            engine: Arc::clone(&engine),
            hub: Arc::clone(&hub),
            websockets: websockets.clone(),
        };
        let telemetry = Telemetry::new(
            engine.config().log.access,
            engine.config().server.metrics,
            |registry| {
                crate::system_metrics::register(registry, sources);
            },
        );
        Ok(AppState {
            telemetry,
            engine,
            hub,
            shutdown: CancellationToken::new(),
            websockets,
            drain: super::drain::Drain::default(),
        })
    }
}
