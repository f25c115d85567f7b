//! `[streams]`: how long streams live on without a client, how long and how much of them is
//! kept for resuming, the journal on disk, and the WebSocket door's knobs.

use std::path::PathBuf;

use serde::Deserialize;

/// `[streams]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    /// Milliseconds generation goes on after the last client of a stream went away; then the
    /// stream is cancelled (upstream call dropped) and ends with a `detached_timeout` error.
    #[serde(default = "default_detach_ms")]
    pub detach_ms: u64,
    /// Milliseconds a finished stream stays resumable.
    #[serde(default = "default_retention_ms")]
    pub retention_ms: u64,
    /// Bytes of event JSON kept in memory over all streams. Above it, the finished streams
    /// that ended first are forgotten first; live streams are never cut short.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Whether every answer of the OpenAI and Anthropic doors is resumable (else only those
    /// that ask with the `streamgate-resumable: true` header).
    #[serde(default)]
    pub doors_resumable: bool,
    /// `[streams.journal]`.
    #[serde(default)]
    pub journal: JournalSettings,
    /// `[streams.websocket]`.
    #[serde(default)]
    pub websocket: WebSocketSettings,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            detach_ms: default_detach_ms(),
            retention_ms: default_retention_ms(),
            max_bytes: default_max_bytes(),
            doors_resumable: false,
            journal: JournalSettings::default(),
            websocket: WebSocketSettings::default(),
        }
    }
}

/// `[streams.journal]`: the on-disk log every event is appended to (docs/journal.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    /// Whether streams are journaled at all (without it a restart forgets every stream).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Directory of the segment files, relative to the working directory.
    #[serde(default = "default_journal_dir")]
    pub dir: PathBuf,
    /// When appended records are forced to the disk.
    #[serde(default)]
    pub fsync: FsyncMode,
    /// With `fsync = "interval"`: milliseconds between syncs.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// A new segment file starts when the current one passes this many bytes.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            enabled: true,
            dir: default_journal_dir(),
            fsync: FsyncMode::default(),
            fsync_interval_ms: default_fsync_interval_ms(),
            segment_bytes: default_segment_bytes(),
        }
    }
}

/// `fsync` of `[streams.journal]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// Every append is synced before its events reach a client.
    Always,
    /// A background thread syncs every `fsync_interval_ms`.
    #[default]
    Interval,
    /// The operating system writes back when it likes.
    Never,
}

/// `[streams.websocket]`: the WebSocket door (docs/websocket.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    /// Largest server frame, in bytes of its uncompressed JSON: a bigger event is sent as
    /// `shard` frames (the original design's `chunkSize`).
    #[serde(default = "default_chunk_size", rename = "chunkSize")]
    pub chunk_size: usize,
    /// Largest client frame, in bytes after inflating; larger ones are refused.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Milliseconds between the server's WebSocket pings.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Milliseconds without any frame from the client (data, ping or pong) before the
    /// connection is closed with code 4000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Streams one connection may follow at once.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// Events of one stream waiting for a slow connection before that stream is paused (it
    /// catches up from the hub later, so nothing is lost and other streams go on).
    #[serde(default = "default_buffer_events")]
    pub buffer_events: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            chunk_size: default_chunk_size(),
            max_frame_bytes: default_max_frame_bytes(),
            heartbeat_ms: default_heartbeat_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_streams: default_max_streams(),
            buffer_events: default_buffer_events(),
        }
    }
}

fn default_detach_ms() -> u64 {
    60_000
}
fn default_retention_ms() -> u64 {
    600_000
}
fn default_max_bytes() -> usize {
    256 << 20
}
fn default_true() -> bool {
    true
}
fn default_journal_dir() -> PathBuf {
    PathBuf::from("streamgate-journal")
}
fn default_fsync_interval_ms() -> u64 {
    100
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_chunk_size() -> usize {
    64 << 10
}
fn default_max_frame_bytes() -> usize {
    4 << 20
}
fn default_heartbeat_ms() -> u64 {
    15_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_streams() -> usize {
    256
}
fn default_buffer_events() -> usize {
    1024
}
