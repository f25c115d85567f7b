//! `streamgate serve`: load the configuration, bind, serve until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;
use crate::server;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] crate::error::GatewayError),
    /// The listen address would expose the gateway without keys.
    #[error(transparent)]
    Exposure(#[from] crate::server::exposure::ExposureError),
    /// The admin key settings are unusable.
    #[error(transparent)]
    AdminKey(#[from] crate::server::admin::AdminKeyError),
    /// `[server.tls]` is unusable.
    #[error(transparent)]
    Tls(#[from] crate::server::tls::TlsError),
    /// `[log]` is unusable.
    #[error(transparent)]
    Log(#[from] crate::telemetry::logging::LogError),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Loads the config (`--config`, else `STREAMGATE_CONFIG`, else the built-in default) and
/// serves it on `listen` (else the config's `server.listen`). `allow_open` is
/// `--allow-open`, the same as `[server] open = true`.
pub fn run(
    config: Option<&Path>,
    listen: Option<SocketAddr>,
    allow_open: bool,
) -> Result<(), ServeError> {
    // Logging follows `[log]`, so it starts once the config is read; a config error is
    // printed by `main` all the same.
    let mut config = Config::load(config)?;
    crate::telemetry::logging::init(&config.log)?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    config.server.open |= allow_open;
    server::exposure::check(&config)?;
    // Checked again by `serve`; here so that a bad setting stops before the journal opens.
    server::admin::AdminKey::from_config(&config.server)?;
    if let Some(tls) = &config.server.tls {
        server::tls::acceptor(tls)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr = config.server.listen;
        log_startup(&config);
        let state = server::AppState::new(config)?;
        let listener = server::bind(addr)?;
        tracing::info!(addr = %listener.local_addr()?, "streamgate listening");
        server::serve(state, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// What an operator needs to know at start: where the journal keeps what, and every provider
/// whose key variable is missing (its requests fail, and `/readyz` says it is not ready).
fn log_startup(config: &Config) {
    let journal = &config.streams.journal;
    if journal.enabled {
        tracing::info!(
            dir = %journal.dir.display(),
            fsync = ?journal.fsync,
            "journal: every stream's request body (prompts) and events, kept for resuming \
             after a restart (docs/journal.md)"
        );
    } else {
        tracing::info!("journal off: streams are kept in memory only and lost on restart");
    }
    for (name, provider) in &config.providers {
        if !provider.key_available() {
            tracing::warn!(
                provider = %name,
                var = provider.api_key_env.as_deref().unwrap_or_default(),
                "the provider's key variable is not set: its requests fail and /readyz \
                 reports it not ready"
            );
        }
    }
}

/// Logs to stderr as the default `[log]` says (text, `info`); `RUST_LOG` filters. For
/// commands without a config file (the demo).
pub fn init_logging() {
    if let Err(e) = crate::telemetry::logging::init(&crate::config::LogConfig::default()) {
        // Only a bad RUST_LOG gets here: say so and go on without logs.
        eprintln!("streamgate: {e}");
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, only SIGTERM stops us.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
