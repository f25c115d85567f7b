//! `streamgate serve`: load the configuration, bind, serve until Ctrl-C or SIGTERM; SIGHUP
//! reloads the configuration file.

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
    /// `[telemetry.otlp]` could not be started.
    #[error(transparent)]
    Otlp(#[from] crate::telemetry::otlp::OtlpError),
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
    let source = config.map(Path::to_path_buf);
    let config = Config::load(config);
    let otlp = config.as_ref().ok().and_then(|c| c.telemetry.otlp.as_ref());
    // Dropped after the runtime is done: exports the last spans (a few seconds at most).
    let _traces = init_logging_with(otlp)?;
    let mut config = config?;
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
        if let Some(path) = source {
            state.engine.set_source(path);
        }
        tokio::spawn(server::reload::on_hangup(std::sync::Arc::clone(
            &state.engine,
        )));
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

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    // Without `[telemetry.otlp]` nothing can fail.
    let _ = init_logging_with(None);
}

/// [`init_logging`], plus the OTLP trace exporter when `otlp` is set: its guard flushes the
/// last spans when dropped. `RUST_LOG` filters the log lines only; the exporter has its own
/// filter (docs/observability.md, "Traces").
pub fn init_logging_with(
    otlp: Option<&crate::telemetry::otlp::OtlpConfig>,
) -> Result<Option<crate::telemetry::otlp::OtlpGuard>, ServeError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let (traces, guard) = match crate::telemetry::otlp::layer(otlp)? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    // A second initialization (tests, demo) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(traces)
        .try_init();
    Ok(guard)
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
