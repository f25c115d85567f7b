//! streamgate: a streaming gateway for LLM providers.
//!
//! # Layout
//!
//! - [`batch`]: batches of what a stream has ready, one write each.
//! - [`cli`]: the `streamgate` command line (`serve`, `demo`, `events`, `convert`, `tail`,
//!   `status`).
//! - [`client`]: the reference client of the native door: follows a stream from a seq and
//!   reconnects without repeating or skipping an event (`streamgate tail`).
//! - [`config`]: the TOML configuration; [`secret`]: keys that never print.
//! - [`caps`]: output caps per key and alias, applied to the unified request.
//! - [`route`]: requested model -> routes (alias, `provider/model`, family).
//! - [`upstream`]: one provider call (reqwest), its SSE body as Agent Events, with timeouts.
//! - [`engine`]: a door's request -> the chosen upstream's events.
//! - [`resilience`]: failure classes, backoff, circuit breakers, continuation requests.
//! - [`splice`]: joins the attempts of one answer into one client stream.
//! - [`stream_id`]: the one rule for stream ids, checked by every door.
//! - [`telemetry`]: request ids, access log, logging setup, the Prometheus registry.
//! - [`hub`]: streams detached from connections: fan-out, resume, retention, journal.
//! - [`respond`]: JSON responses, shared by the doors and the replay upstream.
//! - [`server`]: the HTTP doors (axum): OpenAI, Anthropic, models, health.
//! - [`ws`]: the WebSocket door's protocol without I/O: subprotocols, frames, per-message
//!   compression, sharding, and the reference client's decoder.
//! - [`estimate`]: token estimates where providers give none.
//! - [`counters`]: lock-free histograms the subsystems keep for the metrics.
//! - [`system_metrics`]: the subsystems' metrics, read at scrape time.
//! - [`keys`]: gateway keys: authentication, allowed models, the identity limits count.
//! - [`limit`]: rate limits per client key and model (governor), upstream rate-limit backoff.
//! - [`error`]: gateway errors, their status and their shape in each dialect.
//! - [`journal`]: the durable on-disk journal of every stream's Agent Events, and recovery.
//! - [`replay`]: a fake OpenAI + Anthropic upstream serving the recorded fixtures (demo, tests).
//!
//! The dialect adapters and the Agent Event Stream types live in the `providers` crate. The
//! modules form layers without cycles (docs/architecture.md, enforced by
//! `tests/module_graph.rs`).

pub mod batch;
pub mod caps;
pub mod civil;
pub mod cli;
pub mod client;
pub mod config;
pub mod counters;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod hub;
pub mod journal;
pub mod keys;
pub mod limit;
pub mod replay;
pub mod resilience;
pub mod respond;
pub mod route;
pub mod secret;
pub mod server;
pub mod splice;
pub mod state;
pub mod stream_id;
pub mod system_metrics;
pub mod telemetry;
pub mod upstream;
pub mod ws;
