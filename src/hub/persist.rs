//! The hub's side of the journal: opening it (one process per directory), the records of a
//! stream's life, and bringing streams back after a restart.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use providers::{AgentEvent, Dialect, Envelope, Stamper};

use super::entry::{Entry, StoredEvent};
use super::{FsyncMode, Hub, JournalSettings};
use crate::engine::{Call, Engine};
use crate::error::GatewayError;
use crate::journal::{
    Appender, FsyncPolicy, Journal, JournalConfig, JournalError, OwnedRecord, RecoveredStream,
};
use crate::telemetry::request::Observed;
use crate::upstream::{ClientKey, ForwardHeaders};

/// The open journal, behind its writer thread, and the lock that keeps a second gateway off
/// its directory.
#[derive(Debug)]
pub(super) struct Persist {
    /// Dropped (its thread joined) before the lock is released.
    pub(super) appender: Appender,
    /// Held (flock) for the process's life; the OS releases it on any exit, `kill -9` too.
    _lock: File,
}

/// Why the journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory's lock is held.
    #[error(
        "journal directory {dir} is in use by another streamgate process (set [streams.journal] dir to another directory)"
    )]
    Locked {
        /// The directory.
        dir: String,
    },
    /// Creating or locking the directory failed.
    #[error("journal directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The journal itself failed to open.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Persist {
    /// Locks and opens the journal of `settings`, returning what it holds.
    pub(super) fn open(
        settings: &JournalSettings,
    ) -> Result<(Persist, Vec<RecoveredStream>), OpenError> {
        let dir = settings.dir.display().to_string();
        let io = |source| OpenError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&settings.dir).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(settings.dir.join("LOCK"))
            .map_err(io)?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(OpenError::Locked { dir }),
            Err(e) => return Err(io(e.into())),
        }
        let fsync = match settings.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => {
                FsyncPolicy::Interval(Duration::from_millis(settings.fsync_interval_ms))
            }
            FsyncMode::Never => FsyncPolicy::Never,
        };
        let (journal, recovered) = Journal::open(JournalConfig {
            dir: settings.dir.clone(),
            fsync,
            segment_bytes: settings.segment_bytes,
        })?;
        if recovered.torn_bytes > 0 || recovered.corrupt_segments > 0 {
            tracing::warn!(
                torn_bytes = recovered.torn_bytes,
                corrupt_segments = recovered.corrupt_segments,
                "journal: damaged records were skipped"
            );
        }
        Ok((
            Persist {
                appender: Appender::start(journal)?,
                _lock: lock,
            },
            recovered.streams,
        ))
    }

    /// Appends `record` on the journal's writer thread and waits for it (and for the disk,
    /// under `fsync = "always"`); the async workers never block on the journal. A failed
    /// append is logged: the stream goes on (only a restart would miss it).
    pub(super) async fn append(&self, record: OwnedRecord) {
        let stream = record.as_record().stream().to_owned();
        if let Err(e) = self.appender.append(record).await {
            tracing::error!(stream, error = %e, "journal append failed");
        }
    }

    /// Queues `record` without waiting (for records whose loss a restart tolerates: the end
    /// of a stream whose last event is journaled, a forget). Still written in order: after
    /// every record appended or queued before it.
    pub(super) fn append_now(&self, record: OwnedRecord) {
        self.appender.submit(record);
    }
}

/// The pass-through headers as the journal keeps them (never credentials).
pub(super) fn forward_pairs(forward: &ForwardHeaders) -> Vec<(String, String)> {
    let beta = forward
        .anthropic_beta
        .iter()
        .map(|v| ("anthropic-beta".to_owned(), v.clone()));
    let id = forward
        .request_id
        .iter()
        .map(|v| (crate::telemetry::request_id::HEADER.to_owned(), v.clone()));
    beta.chain(id).collect()
}

pub(super) fn forward_headers(pairs: &[(String, String)]) -> ForwardHeaders {
    let mut headers = http::HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value.as_str()),
        ) {
            headers.append(n, v);
        }
    }
    ForwardHeaders::from_headers(&headers)
}

/// A journaled event back as a kept one.
pub(super) fn stored(json: Bytes) -> Option<(StoredEvent, AgentEvent)> {
    let envelope: Envelope = serde_json::from_slice(&json).ok()?;
    Some((
        StoredEvent {
            seq: envelope.seq,
            kind: envelope.event.kind(),
            json,
        },
        envelope.event,
    ))
}

impl Hub {
    /// Brings back the streams the journal holds: finished ones as they were (resumable for
    /// their retention, counted from now), interrupted ones continued by the engine from the
    /// journaled partial answer, as after any upstream break.
    pub(super) fn recover(self: &Arc<Self>, engine: &Arc<Engine>, streams: Vec<RecoveredStream>) {
        for stream in streams {
            let door: Dialect = match stream.door.parse() {
                Ok(d) => d,
                Err(_) => {
                    tracing::warn!(
                        stream = stream.stream,
                        door = stream.door,
                        "journal: unknown door, stream skipped"
                    );
                    continue;
                }
            };
            let mut kept = Vec::with_capacity(stream.events.len());
            let mut prior = Vec::with_capacity(stream.events.len());
            for json in stream.events {
                match stored(json) {
                    Some((s, e)) if s.seq == kept.len() as u64 => {
                        kept.push(s);
                        prior.push(e);
                    }
                    _ => break,
                }
            }
            // What the journal says answered first; a journal older than that field has only
            // the model the upstream reported.
            let route = Some(stream.route.clone())
                .filter(|r| !r.is_empty())
                .or_else(|| {
                    prior.iter().find_map(|e| match e {
                        AgentEvent::StreamStart(s) => Some(format!(
                            "{}/{}",
                            s.provider.as_deref().unwrap_or("?"),
                            s.model
                        )),
                        _ => None,
                    })
                })
                .unwrap_or_default();
            let entry = Arc::new(Entry::new(
                stream.stream.clone(),
                door,
                route,
                stream.created_ms,
                true,
            ));
            let next = kept.len() as u64;
            entry.append(kept);
            let complete = matches!(prior.last(), Some(AgentEvent::StreamEnd(_)));
            if stream.ended {
                entry.finish();
            }
            self.insert(Arc::clone(&entry));
            if stream.ended {
                continue;
            }
            if complete {
                self.finish(&entry);
                continue;
            }
            // Admitted before the restart: continued past the live caps, but counted.
            let slot = self.live.force(entry.owner());
            tracing::info!(
                stream = stream.stream,
                events = next,
                "journal: continuing an interrupted stream"
            );
            let body = Bytes::from(stream.body);
            let forward = forward_headers(&stream.forward);
            continue_answer(
                Arc::clone(self),
                Arc::clone(engine),
                entry,
                prior,
                body,
                forward,
                slot,
            );
        }
    }
}

/// Continues `entry`'s interrupted answer, whose events so far are `prior`, with the engine's
/// continue path (a `retry` seam, then the rest), as after any upstream break: after a
/// restart on the journal, and on the instance that took over a dead one's stream. `body`
/// and `forward` are the request as it came; `slot` is held until the stream ends.
pub(super) fn continue_answer(
    hub: Arc<Hub>,
    engine: Arc<Engine>,
    entry: Arc<Entry>,
    prior: Vec<AgentEvent>,
    body: Bytes,
    forward: ForwardHeaders,
    slot: super::LiveSlot,
) {
    let door = entry.door();
    let next = prior.len() as u64;
    tokio::spawn(async move {
        let mut stamper = Stamper::resume(entry.id().to_owned(), next);
        let answer = async {
            // Counted when it came in; a lower limit since must not lose it.
            let request = providers::parse::parse(door, &body, usize::MAX)?;
            // No HTTP request to log: the request id it came with, if kept.
            let observed = Observed::detached(
                forward
                    .request_id
                    .clone()
                    .unwrap_or_else(crate::telemetry::request_id::fresh),
            );
            let call = Call {
                door,
                request,
                // Client credentials are never journaled: a continued stream uses the
                // gateway's own provider keys.
                key: ClientKey { door, key: None },
                forward,
                // Its owner's limits and budgets go on counting it, as long as the key is
                // configured; it was admitted when it started.
                caller: entry
                    .owner()
                    .and_then(|name| engine.keyring().caller_named(name))
                    .unwrap_or_default(),
                observed,
            };
            engine.resume(call, &prior).await
        };
        match answer.await {
            Ok(answer) => {
                let detach = Duration::from_millis(hub.config.detach_ms);
                super::generate::run(hub, entry, stamper, answer.events, detach, slot).await;
            }
            Err(e) => {
                let e: GatewayError = e;
                tracing::warn!(stream = entry.id(), error = %e, "the interrupted stream could not be continued");
                let events = AgentEvent::terminal_failure(e.to_error_info()).into();
                super::generate::publish(&hub, &entry, &mut stamper, events, false).await;
                hub.finish_shared(&entry).await;
                drop(slot);
            }
        }
    });
}
