//! Reloading the configuration without a restart: `SIGHUP` and `POST /admin/reload` read the
//! file the gateway started with again, check all of it, and swap it in whole or not at all
//! ([`crate::engine::Engine::reload`]). Running answers finish on the configuration they
//! started with. See docs/operations.md, "Reload".

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::Serialize;

use super::state::EngineState;
use crate::config::Config;
use crate::config::reload::{Changes, keep_restart_settings};
use crate::engine::Engine;

/// Why a reload applied nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The configuration is built in (no `--config` or `STREAMGATE_CONFIG`): no file to read.
    NoFile,
    /// The file could not be read or parsed, or is inconsistent: `errors` says how.
    Invalid,
}

/// The answer of one reload (the JSON of `POST /admin/reload`, and what `SIGHUP` logs).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Whether the new configuration is in force.
    pub applied: bool,
    /// Why not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// The file read.
    pub file: Option<String>,
    /// Every problem found (empty when applied).
    pub errors: Vec<String>,
    /// What changed (empty when not applied).
    pub changes: Changes,
    /// Settings the file changed that keep their running value until a restart.
    pub needs_restart: Vec<&'static str>,
    /// Applied, but worth knowing: providers whose key variable is not set.
    pub warnings: Vec<String>,
}

impl ReloadReport {
    fn refused(refusal: Refusal, file: Option<String>, errors: Vec<String>) -> ReloadReport {
        ReloadReport {
            applied: false,
            refused: Some(refusal),
            file,
            errors,
            changes: Changes::default(),
            needs_restart: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// What a successful reload found besides applying.
struct Applied {
    changes: Changes,
    needs_restart: Vec<&'static str>,
}

/// Reads the engine's configuration file again and swaps it in if it is entirely valid.
/// Blocking (it reads the file and builds HTTP clients): call it off the async workers.
pub fn reload(engine: &Engine) -> ReloadReport {
    let Some(path) = engine.source() else {
        return ReloadReport::refused(
            Refusal::NoFile,
            None,
            vec![
                "the configuration is built in (started without --config or STREAMGATE_CONFIG): \
                 there is no file to reload; restart with a file to change it"
                    .to_owned(),
            ],
        );
    };
    let file = Some(path.display().to_string());
    let result = engine.reload(|running| {
        let (mut next, mut problems) = Config::load_unchecked(path).map_err(|e| e.problems())?;
        problems.extend(crate::engine::missing_key_vars(&next));
        let needs_restart = keep_restart_settings(running, &mut next);
        // Checked with the running listeners, which a reload keeps.
        let server = &next.server;
        problems.extend(
            super::exposure::check_bound(&next, server.listen, server.admin_listen)
                .err()
                .map(|e| e.to_string()),
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        let changes = Changes::between(running, &next);
        Ok((
            next,
            Applied {
                changes,
                needs_restart,
            },
        ))
    });
    match result {
        Ok(applied) => {
            let config = engine.config();
            let warnings = config
                .providers
                .iter()
                .filter(|(_, p)| !p.key_available())
                .map(|(name, p)| {
                    format!(
                        "provider {name}: its key variable {} is not set (its requests fail)",
                        p.api_key_env.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            ReloadReport {
                applied: true,
                refused: None,
                file,
                errors: Vec::new(),
                changes: applied.changes,
                needs_restart: applied.needs_restart,
                warnings,
            }
        }
        Err(errors) => ReloadReport::refused(Refusal::Invalid, file, errors),
    }
}

/// [`reload`] on a blocking thread, logged as [`log`] says.
pub async fn reload_logged(engine: Arc<Engine>) -> ReloadReport {
    let report = match tokio::task::spawn_blocking(move || reload(&engine)).await {
        Ok(report) => report,
        Err(e) => ReloadReport::refused(
            Refusal::Invalid,
            None,
            vec![format!("the reload task failed: {e}")],
        ),
    };
    log(&report);
    report
}

/// Logs a reload: what changed (info), each setting that needs a restart (warning), or why
/// nothing was applied (error, every problem).
pub fn log(report: &ReloadReport) {
    let file = report.file.as_deref().unwrap_or("(built in)");
    if report.applied {
        let changes = serde_json::to_string(&report.changes).unwrap_or_default();
        tracing::info!(file, %changes, "configuration reloaded");
        for setting in &report.needs_restart {
            tracing::warn!(
                file,
                setting,
                "configuration reloaded, but this setting needs a restart: the running value \
                 stays"
            );
        }
        for warning in &report.warnings {
            tracing::warn!(file, "{warning}");
        }
    } else {
        tracing::error!(
            file,
            errors = report.errors.len(),
            "configuration not reloaded, nothing changed: {}",
            report.errors.join("; ")
        );
    }
}

/// `POST /admin/reload`: 200 with the report when applied, 409 when there is no file to
/// read, 422 when the file has problems (all listed; nothing changed).
pub(super) async fn admin(State(engine): State<EngineState>) -> Response {
    let report = reload_logged(engine).await;
    let status = match report.refused {
        None => StatusCode::OK,
        Some(Refusal::NoFile) => StatusCode::CONFLICT,
        Some(Refusal::Invalid) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let body = serde_json::to_value(&report).unwrap_or_default();
    crate::respond::json_response(status, &body)
}

/// Reloads on every `SIGHUP` until the process ends (nothing where signals do not exist).
pub async fn on_hangup(engine: Arc<Engine>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: reload with POST /admin/reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            reload_logged(Arc::clone(&engine)).await;
        }
    }
    #[cfg(not(unix))]
    drop(engine);
}
