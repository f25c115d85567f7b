//! The HTTP front doors (axum on hyper): OpenAI and Anthropic dialect endpoints, the native
//! Agent Event Stream doors (SSE and WebSocket), model list, health. Each door is an encoder
//! from Agent Events to its dialect.

pub mod admin;
mod body;
mod common;
mod door;
pub mod drain;
pub mod exposure;
mod keys;
mod listen;

mod models;
mod panic;
mod passthrough;
pub mod reload;
mod state;
pub mod streams;
pub mod tls;
mod tokens;
mod ws;

use std::future::Future;

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use admin::{AdminKey, AdminPlacement};
pub use state::AppState;

/// The gateway's routes, with the admin routes where `admin` puts them (on this router,
/// keyed or not, or not at all).
pub fn router(state: AppState, admin: &AdminPlacement) -> Router {
    let public = public_routes();
    let routes = match admin {
        AdminPlacement::LoopbackOpen => public.merge(admin_routes()),
        AdminPlacement::Keyed(key) => public.merge(keyed(admin_routes(), key.clone())),
        AdminPlacement::Own { .. } | AdminPlacement::Hidden => public,
    };
    let telemetry = state.telemetry.clone();
    // Whatever the gateway does not answer itself (the routes above) passes through.
    let routes = routes.fallback(passthrough::forward);
    crate::telemetry::layer::wrap(routes, telemetry, panic::answer).with_state(state)
}

/// The one route of `[server] metrics_listen`'s listener.
fn metrics_router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/metrics", get(metrics))
        .fallback(door::not_found);
    crate::telemetry::layer::wrap(routes, state.telemetry.clone(), panic::answer).with_state(state)
}

/// The routes of `[server] admin_listen`'s own listener.
fn admin_router(state: AppState, key: Option<&AdminKey>) -> Router {
    let routes = match key {
        Some(key) => keyed(admin_routes(), key.clone()),
        None => admin_routes(),
    };
    let routes = routes.fallback(door::not_found);
    crate::telemetry::layer::wrap(routes, state.telemetry.clone(), panic::answer).with_state(state)
}

fn keyed(routes: Router<AppState>, key: AdminKey) -> Router<AppState> {
    routes.layer(axum::middleware::from_fn_with_state(
        key,
        admin::require_key,
    ))
}

fn public_routes() -> Router<AppState> {
    let mut routes = Router::new();
    for wire in providers::dialects::all() {
        let dialect = wire.dialect();
        for path in wire.door_paths() {
            routes = routes.route(
                path,
                post(move |State(state): State<AppState>, request: Request| {
                    door::chat(state, dialect, request)
                }),
            );
        }
    }
    routes
        .route("/v1/messages/count_tokens", post(tokens::count_tokens))
        .route("/v1/streams", post(streams::start))
        .route(
            "/v1/streams/{id}",
            get(streams::resume).delete(streams::cancel),
        )
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/models", get(models::list))
        .route("/models", get(models::list))
        .route("/healthz", get(health))
        .route("/readyz", get(models::ready))
}

fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/streams", get(streams::admin))
        .route("/admin/routes", get(models::admin_routes))
        .route("/admin/keys", get(keys::admin))
        .route("/admin/reload", post(reload::admin))
        .route("/metrics", get(metrics))
}

/// `GET /metrics`: the Prometheus exposition (OpenMetrics text), placed with the admin routes.
/// 404 with `[server] metrics = false`.
async fn metrics(State(state): State<AppState>, request: Request) -> axum::response::Response {
    let Some(text) = state.telemetry.encode() else {
        let (parts, _) = request.into_parts();
        return door::not_found(parts.headers, parts.uri).await;
    };
    let mut response = axum::response::Response::new(axum::body::Body::from(text));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

async fn health() -> &'static str {
    "ok\n"
}

/// Pending connections the kernel queues before `accept`: tokio's default of 128 overflows
/// when hundreds of clients connect at once, and each overflowed connect waits a second
/// for its SYN to be retried.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with a backlog fit for bursts of new clients.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting, closes
/// WebSocket connections with 1001 (waiting up to [`WEBSOCKET_DRAIN`]) and drains open
/// requests and hub streams for `[server] shutdown_grace_ms` ([`drain`]): returns by then
/// plus [`drain::END_WRITE`] whatever clients and upstreams do.
/// Binds `[server] admin_listen` when configured.
///
/// Connections are bounded as `[server]` says (`max_connections`, `header_read_timeout_ms`,
/// ...: see `listen`), on each listener. Accepted sockets get TCP_NODELAY: every SSE event is
/// written as it is encoded, and Nagle's algorithm would otherwise hold small frames back for
/// tens of milliseconds.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admin = match state.engine.config().server.admin_listen {
        Some(addr) => Some(bind(addr)?),
        None => None,
    };
    serve_with_admin(state, listener, admin, shutdown).await
}

/// [`serve`] with the admin listener already bound (`[server] admin_listen`'s, or None to
/// serve the admin routes on `listener` as [`AdminPlacement::decide`] says).
pub async fn serve_with_admin(
    state: AppState,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.engine.config();
    exposure::check_bound(
        &config,
        listener.local_addr()?,
        admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?,
    )
    .map_err(std::io::Error::other)?;
    let server_config = &config.server;
    let key = AdminKey::from_config(server_config).map_err(std::io::Error::other)?;
    let placement = match (&admin_listener, key) {
        (Some(own), key) => AdminPlacement::Own {
            addr: own.local_addr()?,
            key,
        },
        (None, key) => AdminPlacement::decide(key, listener.local_addr()?),
    };
    match &placement {
        AdminPlacement::Hidden => tracing::warn!(
            "the admin routes are off: the listener is not loopback and neither \
             [server] admin_key_env, admin_key_sha256 nor admin_listen is set"
        ),
        AdminPlacement::Own { addr, key: None } if !addr.ip().is_loopback() => tracing::warn!(
            %addr,
            "the admin listener is open to the network without an admin key \
             ([server] admin_key_env or admin_key_sha256)"
        ),
        _ => {}
    }
    let tls = server_config
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()
        .map_err(std::io::Error::other)?;
    let limits = listen::Limits::from_config(server_config);
    listen::fit_open_files(limits.max_connections());
    state.hub.spawn_janitor();
    let drain = state.drain.clone();
    let going_away = state.shutdown.clone();
    let websockets = state.websockets.clone();
    let hub = std::sync::Arc::clone(&state.hub);
    let grace = std::time::Duration::from_millis(server_config.shutdown_grace_ms);
    let admin_task = match (admin_listener, &placement) {
        (Some(own), AdminPlacement::Own { addr, key }) => {
            tracing::info!(%addr, keyed = key.is_some(), "admin routes listening");
            let stop = state.shutdown.clone();
            let app = admin_router(state.clone(), key.as_ref());
            let tls = tls.clone();
            let drain = drain.clone();
            Some(tokio::spawn(async move {
                listen::serve(own, tls, app, limits, stop.cancelled_owned(), drain).await
            }))
        }
        _ => None,
    };
    let metrics_task = match server_config.metrics_listen {
        Some(addr) => {
            let own = bind(addr)?;
            tracing::info!(addr = %own.local_addr()?, "metrics listening (GET /metrics, no key)");
            let stop = state.shutdown.clone();
            let app = metrics_router(state.clone());
            let tls = tls.clone();
            let drain = drain.clone();
            Some(tokio::spawn(async move {
                listen::serve(own, tls, app, limits, stop.cancelled_owned(), drain).await
            }))
        }
        None => None,
    };
    let app = router(state, &placement);
    let served = listen::serve(
        listener,
        tls,
        app,
        limits,
        going_away.clone().cancelled_owned(),
        drain.clone(),
    );
    // From the signal on: both listeners stop accepting, WebSocket connections close with
    // 1001, and the drain gives what runs its grace (hub streams nobody follows included).
    let drained = async {
        shutdown.await;
        drain
            .run(
                grace,
                || drain::running(&drain, &hub, websockets.len()),
                || going_away.cancel(),
            )
            .await;
    };
    let (served, ()) = tokio::join!(served, drained);
    websockets.close();
    let _ = tokio::time::timeout(WEBSOCKET_DRAIN, websockets.wait()).await;
    if let Some(task) = metrics_task
        && let Ok(Err(e)) = task.await
    {
        tracing::warn!(error = %e, "the metrics listener failed");
    }
    if let Some(task) = admin_task {
        // Its shutdown followed ours (the same token) and its connections the same kill; a
        // failed admin listener is logged.
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "the admin listener failed");
        }
    }
    served
}

/// The longest [`serve`] waits after shutdown for WebSocket connections to finish their
/// closing handshake (each bounds its own close; this bounds them all).
const WEBSOCKET_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
