//! `[streams]`: how long streams live on without a client, how long and how much of them is
//! kept for resuming, the journal on disk, and the WebSocket door's knobs.
//!
//! # Configuration: `[streams]`
//!
//! ```toml
//! [streams]
//! detach_ms = 60000          # generation goes on this long after the last client left
//! retention_ms = 600000      # a finished stream stays resumable this long
//! max_bytes = 268435456      # event JSON kept in memory over all streams (256 MiB)
//! max_live = 1024            # live streams in the hub at once (0: no cap)
//! max_live_per_key = 64      # live streams of one gateway key at once (0: no cap)
//! doors_resumable = false    # every OpenAI/Anthropic door answer resumable (else: per request)
//! sse_keepalive_ms = 15000   # an SSE comment after this long without an event
//!
//! [streams.journal]
//! enabled = true
//! dir = "streamgate-journal" # relative to the working directory; one gateway per directory
//! fsync = "interval"         # always | interval | never
//! fsync_interval_ms = 100
//! segment_bytes = 67108864   # a new segment file after 64 MiB
//!
//! [streams.websocket]
//! chunkSize = 65536          # bytes of a server frame's JSON; bigger events go as shards
//! max_frame_bytes = 4194304  # largest client frame, after inflating
//! heartbeat_ms = 15000       # server pings; no answer for two of them: close 4001
//! idle_timeout_ms = 60000    # no frame at all from the client: close 4000
//! max_streams = 256          # streams one connection follows at once
//! buffer_events = 1024       # events of one stream queued for a slow connection
//! buffer_bytes = 4194304     # encoded bytes queued for one connection, all its streams
//! write_timeout_ms = 10000   # a client that takes no write for this long: close 4002
//! max_write_buffer_bytes = 131072  # encoded bytes waiting for the socket, per connection
//! max_pings_per_second = 10  # pings (protocol and `op: ping`) answered; more wait their turn
//! compression = ["none", "lz4", "zstd", "gzip"]  # modes offered (true = all, false = none)
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `detach_ms` | 60000 | when the last client of a live stream leaves, generation goes on this long; if nobody follows it again by then, the upstream call is dropped and the stream ends with an `error` event of code `detached_timeout` |
//! | `retention_ms` | 600000 | a finished stream can be fetched again (`GET /v1/streams/{id}`) this long after it ended |
//! | `max_bytes` | 268435456 | memory for kept event JSON over all streams, live ones included; above it the finished streams that ended first are forgotten first; if live streams alone are still over it, a live stream keeping more than its share (`max_bytes` / live streams) is ended with an `error` event of code `memory_cap` (its upstream call dropped, its events so far kept and resumable) |
//! | `max_live` | 1024 | streams generating in the hub at once (native `/v1/streams`, WebSocket `start`, resumable door answers; a stream without a client counts until it ends). One more is refused before any upstream call: 503 with `Retry-After`, OpenAI code `too_many_live_streams`, Anthropic `overloaded_error`, WebSocket `unavailable`. 0: no cap |
//! | `max_live_per_key` | 64 | the same per gateway key: 429 with `Retry-After` (Anthropic `rate_limit_error`, WebSocket `rate_limited`). An open gateway (no keys) has only `max_live`. 0: no cap |
//! | `doors_resumable` | false | every answer of `/v1/chat/completions` and `/v1/messages` goes through the hub and carries `streamgate-stream-id`; without it, a request opts in with the header `streamgate-resumable: true` |
//! | `sse_keepalive_ms` | 15000 | the native SSE door (`/v1/streams`) writes a `: keep-alive` comment after this long without an event, so proxies and clients can tell a slow stream from a dead connection (0: never) |
//! | `journal.enabled` | true | journal every event on disk before any client sees it; without it a restart forgets every stream |
//! | `journal.dir` | `streamgate-journal` | directory of the segment files; locked by one gateway process at a time (a second one refuses to start) |
//! | `journal.fsync` | `interval` | `always`: an event reaches clients only after an fdatasync covers it; `interval`: a background thread syncs every `fsync_interval_ms`; `never`: the OS writes back when it likes. A process crash loses nothing with any of them (docs/journal.md) |
//! | `journal.fsync_interval_ms` | 100 | with `interval`: the most a power failure loses |
//! | `journal.segment_bytes` | 67108864 | segment size before the next file starts; whole segments are deleted once every stream in them is forgotten |
//! | `websocket.chunkSize` | 65536 | bytes of a server frame's uncompressed JSON text; a larger event is split into `shard` frames of at most this size (minimum 256). Also settable as `streaming.chunkSize` |
//! | `websocket.max_frame_bytes` | 4194304 | largest client frame, measured after inflating a compressed one; larger: a `frame_too_large` (or `inflate_too_large`) error frame and the connection goes on; a message over twice this (at least 64 KiB) is not read at all: close 1009 |
//! | `websocket.heartbeat_ms` | 15000 | the server sends a WebSocket ping this often; nothing at all from the client for two of these: close 4001. 0: no heartbeats |
//! | `websocket.idle_timeout_ms` | 60000 | without any frame from the client (data, ping or pong) for this long the connection is closed with code 4000. 0: no idle timeout |
//! | `websocket.max_streams` | 256 | streams one connection may follow at once; beyond it `start`/`resume` get a `too_many_streams` error frame (the connection goes on) |
//! | `websocket.buffer_events` | 1024 | events of one stream queued for a connection; a stream whose queue is full stops pulling from the hub (nothing is lost, it catches up later) while the others go on. Also settable as `streaming.bufferSize` |
//! | `websocket.buffer_bytes` | 4194304 | bytes of encoded messages queued for one connection over all its streams; a stream that finds them spent waits (it stops pulling from the hub, nothing is lost) until the writer has sent enough. An event larger than this still goes, alone. At least 1 |
//! | `websocket.write_timeout_ms` | 10000 | while messages wait for a connection, a write (at most the write buffer: 4 KiB plus one message) that the client's socket does not take within this long closes the connection with 4002 (client not reading); its streams stay in the hub (detached) and resumable. At least 1 |
//! | `websocket.max_write_buffer_bytes` | 131072 | encoded bytes one connection may hold for its socket (tungstenite's `max_write_buffer_size`); raised to at least `chunkSize` plus 4 KiB and a compression margin so the largest message fits. A write that would overflow it closes the connection with 4002 |
//! | `websocket.max_pings_per_second` | 10 | pings one connection gets answered per second, WebSocket protocol pings and `{"op":"ping"}` frames together (bursts of as many); past it the gateway stops reading that connection until the next ping is due, so a flood waits in the client's own socket. At least 1 |
//! | `websocket.compression` | all | the per-message compression modes offered (`none`, `lz4`, `zstd`, `gzip`; one name, a list, `true` for all or `false` for `none` only). A client whose `Sec-WebSocket-Protocol` names only modes not offered is refused with 400 `websocket_upgrade_refused`, as for unknown names; a client sending no subprotocol gets `none` only when `none` is offered. Also settable as `streaming.compression` |

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
    /// Bytes of event JSON kept in memory over all streams, live ones included. Above it, the
    /// finished streams that ended first are forgotten first; if live streams alone are over
    /// it, a live stream over its share (`max_bytes` / live streams) is ended with a
    /// `memory_cap` error.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Live streams in the hub at once; one more is refused (503) before any upstream call.
    /// 0: no cap.
    #[serde(default = "default_max_live")]
    pub max_live: usize,
    /// Live streams of one gateway key at once; one more is refused (429) before any
    /// upstream call. An open gateway has only `max_live`. 0: no cap.
    #[serde(default = "default_max_live_per_key")]
    pub max_live_per_key: usize,
    /// Whether every answer of the OpenAI and Anthropic doors is resumable (else only those
    /// that ask with the `streamgate-resumable: true` header).
    #[serde(default)]
    pub doors_resumable: bool,
    /// Milliseconds without an event after which the native SSE door writes a comment line
    /// (0: never).
    #[serde(default = "default_sse_keepalive_ms")]
    pub sse_keepalive_ms: u64,
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
            max_live: default_max_live(),
            max_live_per_key: default_max_live_per_key(),
            doors_resumable: false,
            sse_keepalive_ms: default_sse_keepalive_ms(),
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
    /// Milliseconds between the server's WebSocket pings; nothing from the client for two of
    /// them closes the connection with 4001. 0: no heartbeats.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Milliseconds without any frame from the client (data, ping or pong) before the
    /// connection is closed with code 4000. 0: no idle timeout.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Streams one connection may follow at once.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// Events of one stream waiting for a slow connection before that stream is paused (it
    /// catches up from the hub later, so nothing is lost and other streams go on).
    #[serde(default = "default_buffer_events")]
    pub buffer_events: usize,
    /// Bytes of encoded messages queued for one connection over all its streams; a stream
    /// finding them spent waits as for a full `buffer_events` queue. An event larger than this
    /// still goes, alone.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    /// Milliseconds a write may wait for the client's socket while messages are waiting;
    /// past it the connection is closed with 4002 (a client that stopped reading is not
    /// buffered for). At least 1.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Encoded bytes one connection may hold for its socket; raised to fit the largest
    /// message (`chunkSize` plus a margin). Overflowing it closes the connection with 4002.
    #[serde(default = "default_max_write_buffer_bytes")]
    pub max_write_buffer_bytes: usize,
    /// Pings (protocol and `op: ping`) answered per second on one connection, in bursts of as
    /// many; past it the connection is not read until the next ping is due. At least 1.
    #[serde(default = "default_max_pings_per_second")]
    pub max_pings_per_second: u32,
    /// The compression modes offered: a client offering only subprotocols of other modes is
    /// refused at the upgrade (and one offering none needs `none` offered).
    #[serde(default)]
    pub compression: crate::ws::CompressionOffer,
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
            buffer_bytes: default_buffer_bytes(),
            write_timeout_ms: default_write_timeout_ms(),
            max_write_buffer_bytes: default_max_write_buffer_bytes(),
            max_pings_per_second: default_max_pings_per_second(),
            compression: crate::ws::CompressionOffer::default(),
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
fn default_max_live() -> usize {
    1024
}
fn default_max_live_per_key() -> usize {
    64
}
fn default_sse_keepalive_ms() -> u64 {
    15_000
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
fn default_buffer_bytes() -> usize {
    4 << 20
}
fn default_write_timeout_ms() -> u64 {
    10_000
}
fn default_max_write_buffer_bytes() -> usize {
    128 << 10
}
fn default_max_pings_per_second() -> u32 {
    10
}
