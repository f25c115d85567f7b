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
    let source = config.map(Path::to_path_buf);
    // Logging follows `[log]`, so it starts once the config is read; a config error is
    // printed by `main` all the same.
    let mut config = Config::load(config)?;
    // Dropped after the runtime is done: writes the last lines and exports the last spans (a
    // few seconds at most).
    let _logs = crate::telemetry::logging::init(&config.log, config.telemetry.otlp.as_ref())?;
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
    let hub = runtime.block_on(async move {
        let addr = config.server.listen;
        log_startup(&config);
        let state = server::AppState::new(config)?;
        if let Some(path) = source {
            state.engine.set_source(path);
        }
        tokio::spawn(server::reload::on_hangup(std::sync::Arc::clone(
            &state.engine,
        )));
        let stop = shutdown_signal();
        let listener = server::bind(addr)?;
        tracing::info!(addr = %listener.local_addr()?, "streamgate listening");
        let hub = std::sync::Arc::clone(&state.hub);
        server::serve(state, listener, stop).await?;
        Ok::<_, ServeError>(hub)
    })?;
    close(runtime, hub);
    Ok(())
}

/// How long the tasks still running after the drain (hub streams' generation, upstream
/// calls) get to notice that the runtime is going away.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// Stops what still runs and closes the journal: its writer thread writes every record
/// queued, then the journal syncs (docs/operations.md). Streams still generating are not
/// ended: the journal keeps them as interrupted, and the next start continues them.
fn close(runtime: tokio::runtime::Runtime, hub: std::sync::Arc<crate::hub::Hub>) {
    runtime.shutdown_timeout(RUNTIME_STOP);
    let journaled = hub.config().journal.enabled;
    match std::sync::Arc::into_inner(hub) {
        Some(hub) => {
            drop(hub);
            if journaled {
                tracing::info!("journal closed and synced; exiting");
            }
        }
        None => tracing::warn!(
            "the stream hub is still referenced at exit: the journal's last records may not \
             be synced (they are written; a restart recovers them unless the machine fails)"
        ),
    }
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
/// commands without a config file (the demo). Keep the guard for as long as logs are wanted.
pub fn init_logging() -> Option<crate::telemetry::logging::LogGuard> {
    crate::telemetry::logging::init(&crate::config::LogConfig::default(), None)
        .map_err(|e| {
            // Only a bad RUST_LOG gets here: say so and go on without logs.
            eprintln!("streamgate: {e}");
        })
        .ok()
}

/// A signal that stops the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, Kubernetes, systemd).
    Terminate,
}

impl Stop {
    /// The shell's code for a process a signal ended: 128 + the signal number (130, 143).
    fn exit_code(self) -> i32 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }
}

/// The stop signals, listened to from the first call on (so that a second one is not lost to
/// the default action or ignored).
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // A handler that cannot be installed leaves the other signal to stop us.
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.interrupt) => Stop::Interrupt,
                () = recv(&mut self.terminate) => Stop::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            Stop::Interrupt
        }
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM: the gateway then drains for
/// `[server] shutdown_grace_ms`. A second one during the drain exits the process at once
/// with 130 (SIGINT) or 143 (SIGTERM); what the journal has written survives as after a crash.
///
/// The handlers are installed when this is called, not when the future is first polled: called
/// before the listener is bound, a signal sent as soon as the port answers is never met by the
/// default action (which would end the process without draining or closing the journal).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let signals = Signals::new();
    stop_on(signals)
}

async fn stop_on(mut signals: Signals) {
    let first = signals.next().await;
    tracing::info!(
        signal = ?first,
        "shutting down: no new connections; a second SIGTERM or SIGINT exits at once"
    );
    tokio::spawn(async move {
        let second = signals.next().await;
        tracing::warn!(signal = ?second, "second stop signal: exiting now, without draining");
        crate::telemetry::logging::flush_before_exit();
        std::process::exit(second.exit_code());
    });
}
