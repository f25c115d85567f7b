//! One WebSocket connection: a reader and a writer running side by side, and the close.
//!
//! - The **reader** takes the client's messages (every one of them, data or control, resets
//!   the idle and heartbeat clocks), decodes each into a client frame and acts on it without
//!   waiting: `start` and `resume` open a lane and spawn its task ([`super::lane`]), `cancel`
//!   asks the hub, `ping` and refusals queue a reply on the control queue. It also owns the
//!   clocks: a WebSocket ping every `heartbeat_ms`, close 4001 when nothing came for two
//!   heartbeats, close 4000 when nothing came for `idle_timeout_ms`, close 1001 at shutdown.
//!   Pings (protocol or `op: ping`) beyond `max_pings_per_second` pause the reading
//!   ([`super::pace`]).
//! - The **writer** sends control replies first, then one message of each lane in turn
//!   ([`super::outbox`]), flushing whenever nothing more is ready. A write the client's socket
//!   does not take within `write_timeout_ms`, or one overflowing the write buffer, closes
//!   the connection with 4002: a client that stopped reading is not buffered for.
//! - When either ends, the connection closes: lanes stop (their streams stay in the hub,
//!   detached, or are cancelled if started with `detach: false`), the close frame goes out
//!   (bounded by [`CLOSE_GRACE`]) and the client's close reply is awaited as long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::lane::{self, Follow};
use super::outbox::{LaneSender, Outbox};
use super::pace::PingPace;
use super::{error_code, lane::to_message};
use crate::error::GatewayError;
use crate::hub::WebSocketSettings;
use crate::server::state::AppState;
use crate::server::streams::request_dialect;
use crate::ws::{
    ClientFrame, CloseCode, Compression, ErrorCode, FrameLimits, ServerFrame, decode_client_message,
};

/// Replies (pongs, error frames, heartbeat pings) waiting for the writer. A client that sends
/// frames needing an answer faster than it reads the answers fills it: close 1008.
const CONTROL_QUEUE: usize = 1024;

/// How long the close frame may take to go out, and then the client's close reply to come.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What one connection shares with its lanes' tasks.
#[derive(Debug)]
pub(super) struct Conn {
    /// The engine and the hub that streams are started in and resumed from.
    pub(super) state: AppState,
    /// The upgrade request's headers: the credentials (`Authorization`, `x-api-key`) and
    /// pass-through headers of every `start`, and the dialect guess when a `start` names none.
    pub(super) headers: HeaderMap,
    /// The gateway key the upgrade authenticated: every stream of the connection is its.
    pub(super) caller: crate::keys::Caller,
    /// The negotiated per-message compression.
    pub(super) compression: Compression,
    /// `[streams.websocket]`.
    pub(super) settings: WebSocketSettings,
    /// The lanes' queues, which the writer takes from.
    pub(super) outbox: Outbox,
    /// Cancelled when the connection ends: lanes stop following.
    pub(super) closed: CancellationToken,
    /// The lanes alive, for `max_streams` and to refuse following a stream twice.
    following: Mutex<Following>,
    /// The upgrade request's record: each started stream gets a child record of its own.
    pub(super) observed: crate::telemetry::request::Observed,
}

#[derive(Debug, Default)]
struct Following {
    next_key: u64,
    /// Lane key -> the stream it follows (None while a `start` without id is starting).
    lanes: HashMap<u64, Option<String>>,
}

/// A lane's place in [`Conn::following`], freed when its task ends (however it ends).
#[derive(Debug)]
pub(super) struct LaneGuard {
    conn: Arc<Conn>,
    key: u64,
}

impl LaneGuard {
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Records the stream id the lane follows (once a `start` knows it).
    pub(super) fn name(&self, stream: &str) {
        if let Some(name) = self.conn.following().lanes.get_mut(&self.key) {
            *name = Some(stream.to_owned());
        }
    }
}

impl LaneGuard {
    /// Frees the lane's place (also done when the guard is dropped).
    pub(super) fn release(&self) {
        self.conn.following().lanes.remove(&self.key);
    }
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why a lane could not be opened.
enum Refusal {
    TooMany(usize),
    AlreadyFollowing,
}

/// How the reader (or the writer) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Close with this code.
    Close(CloseCode),
    /// The client sent its close frame (tungstenite queued the reply).
    PeerClosed,
    /// The socket is gone: nothing more can be said.
    Gone,
}

impl Conn {
    fn following(&self) -> MutexGuard<'_, Following> {
        // Single-step map operations: a poisoned lock still holds a valid map.
        self.following.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A frame as this connection's message.
    pub(super) fn frame_message(&self, frame: &ServerFrame) -> Message {
        to_message(self.compression, frame.to_json().as_bytes())
    }

    /// Takes a place for a new lane following `stream` (when known).
    fn open_lane(self: &Arc<Self>, stream: Option<&str>) -> Result<LaneGuard, Refusal> {
        let mut following = self.following();
        if following.lanes.len() >= self.settings.max_streams {
            return Err(Refusal::TooMany(self.settings.max_streams));
        }
        if let Some(stream) = stream
            && following
                .lanes
                .values()
                .any(|s| s.as_deref() == Some(stream))
        {
            return Err(Refusal::AlreadyFollowing);
        }
        let key = following.next_key;
        following.next_key += 1;
        following.lanes.insert(key, stream.map(str::to_owned));
        Ok(LaneGuard {
            conn: Arc::clone(self),
            key,
        })
    }

    fn spawn_lane(&self, guard: LaneGuard, follow: Follow) {
        let lane: LaneSender = self.outbox.open(self.settings.buffer_events);
        // In the connection's span (a started stream's lines are in a child span of it).
        let span = self.observed.span().clone();
        tokio::spawn(tracing::Instrument::instrument(
            lane::run(guard, lane, follow),
            span,
        ));
    }

    /// Acts on one client frame; the reply to queue, if any.
    async fn handle(self: &Arc<Self>, frame: ClientFrame) -> Option<ServerFrame> {
        match frame {
            ClientFrame::Ping { data } => Some(ServerFrame::Pong { data }),
            ClientFrame::Cancel { stream } => {
                match self
                    .state
                    .hub
                    .cancel_stream(self.caller.owner(), &stream)
                    .await
                {
                    Ok(_) => None,
                    Err(e) => Some(error_frame(Some(stream), &e.into())),
                }
            }
            ClientFrame::Resume { stream, after } => {
                let guard = match self.open_lane(Some(&stream)) {
                    Ok(guard) => guard,
                    Err(refusal) => return Some(refused(stream, refusal, ErrorCode::BadRequest)),
                };
                let subscription = self
                    .state
                    .hub
                    .get_or_follow(self.caller.owner(), &stream, after)
                    .await
                    .and_then(|entry| entry.subscribe(after));
                match subscription {
                    Ok(subscription) => {
                        self.spawn_lane(guard, Follow::Resume(subscription));
                        None
                    }
                    Err(e) => Some(error_frame(Some(stream), &e.into())),
                }
            }
            ClientFrame::Start {
                id,
                dialect,
                request,
                detach,
            } => {
                let dialect = match dialect.map_or_else(|| request_dialect(&self.headers), Ok) {
                    Ok(dialect) => dialect,
                    Err(e) => return Some(error_frame(id, &e)),
                };
                let guard = match self.open_lane(id.as_deref()) {
                    Ok(guard) => guard,
                    Err(refusal) => {
                        let id = id.unwrap_or_default();
                        return Some(refused(id, refusal, ErrorCode::DuplicateStream));
                    }
                };
                // Serializing a Value cannot fail; an empty body would be refused as bad JSON.
                let body = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
                self.spawn_lane(
                    guard,
                    Follow::Start {
                        id,
                        dialect,
                        body,
                        detach,
                    },
                );
                None
            }
        }
    }
}

fn error_frame(stream: Option<String>, e: &GatewayError) -> ServerFrame {
    ServerFrame::Error {
        stream,
        code: error_code(e),
        message: e.to_string(),
    }
}

/// The `error` frame of a refused lane; `following` is the code for "already followed here".
fn refused(stream: String, refusal: Refusal, following: ErrorCode) -> ServerFrame {
    let stream = (!stream.is_empty()).then_some(stream);
    let (code, message) = match (refusal, &stream) {
        (Refusal::TooMany(max), _) => (
            ErrorCode::TooManyStreams,
            format!(
                "this connection already follows {max} streams (streams.websocket.max_streams)"
            ),
        ),
        (Refusal::AlreadyFollowing, Some(s)) => (
            following,
            format!("this connection already follows stream {s:?}"),
        ),
        (Refusal::AlreadyFollowing, None) => (following, "already followed".to_owned()),
    };
    ServerFrame::Error {
        stream,
        code,
        message,
    }
}

/// Serves one upgraded connection until it closes.
pub(super) async fn run(
    socket: WebSocket,
    state: AppState,
    headers: HeaderMap,
    caller: crate::keys::Caller,
    compression: Compression,
    settings: WebSocketSettings,
    observed: crate::telemetry::request::Observed,
) {
    let conn = Arc::new(Conn {
        observed,
        state,
        headers,
        caller,
        compression,
        outbox: Outbox::new(settings.buffer_bytes),
        settings,
        closed: CancellationToken::new(),
        following: Mutex::new(Following::default()),
    });
    tracing::debug!(compression = %compression, "websocket: connected");
    let (mut sink, mut stream) = socket.split();
    let (control, mut replies) = mpsc::channel::<Message>(CONTROL_QUEUE);
    let outcome = tokio::select! {
        outcome = read(&conn, &mut stream, &control) => outcome,
        outcome = write(&conn, &mut sink, &mut replies) => outcome,
    };
    conn.closed.cancel();
    conn.outbox.close();
    tracing::debug!(?outcome, "websocket: closing");
    match outcome {
        Outcome::Close(code) => {
            let frame = CloseFrame {
                code: code.code(),
                reason: code.reason().into(),
            };
            let sent = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame))));
            if matches!(sent.await, Ok(Ok(()))) {
                // The closing handshake: read until the client's close (or the end).
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Some(Ok(message)) = stream.next().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        // tungstenite queued the reply to the client's close: flushing sends it.
        Outcome::PeerClosed => {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
        }
        Outcome::Gone => {}
    }
}

/// The reader: client messages and the clocks, until the connection must end.
async fn read(
    conn: &Arc<Conn>,
    stream: &mut SplitStream<WebSocket>,
    control: &mpsc::Sender<Message>,
) -> Outcome {
    let settings = &conn.settings;
    let idle = millis(settings.idle_timeout_ms);
    let heartbeat = millis(settings.heartbeat_ms);
    let limits = FrameLimits {
        max_frame: settings.max_frame_bytes,
        max_inflate: settings.max_frame_bytes,
    };
    let mut pings = heartbeat.map(|every| {
        let mut pings = tokio::time::interval_at(Instant::now() + every, every);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        pings
    });
    let mut last_seen = Instant::now();
    let mut pace = PingPace::new(settings.max_pings_per_second, last_seen);
    loop {
        let idle_at = idle.map(|d| last_seen + d);
        let lost_at = heartbeat.map(|h| last_seen + 2 * h);
        let message = tokio::select! {
            biased;
            () = conn.state.shutdown.cancelled() => return Outcome::Close(CloseCode::GoingAway),
            () = sleep_until(idle_at) => return Outcome::Close(CloseCode::IdleTimeout),
            () = sleep_until(lost_at) => return Outcome::Close(CloseCode::HeartbeatLost),
            () = tick(&mut pings) => {
                // A client too busy to read its replies skips a heartbeat: no harm.
                let _ = control.try_send(Message::Ping(Bytes::new()));
                continue;
            }
            message = stream.next() => message,
        };
        last_seen = Instant::now();
        let message = match message {
            None => return Outcome::Gone,
            Some(Err(e)) => return read_failed(e),
            Some(Ok(message)) => message,
        };
        let message = match message {
            Message::Text(text) => crate::ws::Message::Text(text.as_str().to_owned()),
            Message::Binary(bytes) => crate::ws::Message::Binary(bytes.into()),
            // tungstenite queued the pong already (keeping only the latest one).
            Message::Ping(_) => {
                if let Some(outcome) = wait(conn, pace.take(Instant::now())).await {
                    return outcome;
                }
                continue;
            }
            Message::Pong(_) => continue,
            Message::Close(_) => return Outcome::PeerClosed,
        };
        let mut paused = Duration::ZERO;
        let reply = match decode_client_message(conn.compression, message, limits) {
            Ok(frame) => {
                if matches!(frame, ClientFrame::Ping { .. }) {
                    paused = pace.take(Instant::now());
                }
                conn.handle(frame).await
            }
            Err(e) => {
                if let Some(code) = e.close_code() {
                    return Outcome::Close(code);
                }
                tracing::debug!(error = %e, "websocket: client frame refused");
                Some(e.to_frame())
            }
        };
        if let Some(reply) = reply {
            match control.try_send(conn.frame_message(&reply)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Outcome::Close(CloseCode::Policy);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Outcome::Gone,
            }
        }
        if let Some(outcome) = wait(conn, paused).await {
            return outcome;
        }
    }
}

/// Holds the reader back for `pause` (a ping over the rate), unless the gateway shuts down
/// meanwhile: then the close to send.
async fn wait(conn: &Conn, pause: Duration) -> Option<Outcome> {
    if pause.is_zero() {
        return None;
    }
    tokio::select! {
        () = conn.state.shutdown.cancelled() => Some(Outcome::Close(CloseCode::GoingAway)),
        () = tokio::time::sleep(pause) => None,
    }
}

/// A read error: which close it calls for.
fn read_failed(error: axum::Error) -> Outcome {
    use tungstenite::error::ProtocolError;
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        // Past `max_message_size` / `max_frame_size`: tungstenite stops reading it.
        Some(tungstenite::Error::Capacity(_)) => Outcome::Close(CloseCode::MessageTooBig),
        Some(tungstenite::Error::Utf8(_)) => Outcome::Close(CloseCode::InvalidPayload),
        // The client went away without a close frame: nobody to tell.
        Some(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
            Outcome::Gone
        }
        Some(tungstenite::Error::Protocol(_)) => Outcome::Close(CloseCode::ProtocolError),
        _ => {
            tracing::debug!(error = %inner, "websocket: read failed");
            Outcome::Gone
        }
    }
}

/// The writer: control replies first, then the lanes round-robin, until the socket is gone
/// (or the client stops taking writes: close 4002).
async fn write(
    conn: &Conn,
    sink: &mut SplitSink<WebSocket, Message>,
    replies: &mut mpsc::Receiver<Message>,
) -> Outcome {
    let timeout = Duration::from_millis(conn.settings.write_timeout_ms.max(1));
    loop {
        let next = match replies.try_recv() {
            Ok(message) => Some(message),
            Err(mpsc::error::TryRecvError::Empty) => conn.outbox.next_message(),
            Err(mpsc::error::TryRecvError::Disconnected) => return Outcome::Gone,
        };
        let message = match next {
            Some(message) => message,
            None => {
                if let Err(outcome) = within(timeout, sink.flush()).await {
                    return outcome;
                }
                tokio::select! {
                    reply = replies.recv() => match reply {
                        Some(message) => message,
                        None => return Outcome::Gone,
                    },
                    () = conn.outbox.woken() => continue,
                }
            }
        };
        // `feed` waits while tungstenite cannot write its buffer out: the client is not
        // reading and the kernel's buffers are full.
        if let Err(outcome) = within(timeout, sink.feed(message)).await {
            return outcome;
        }
    }
}

/// One write (or flush) the socket must take within `timeout`; the outcome ending the
/// connection when it does not.
async fn within(
    timeout: Duration,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), Outcome> {
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(write_failed(e)),
        Err(_) => {
            tracing::debug!(?timeout, "websocket: the client takes no writes");
            Err(Outcome::Close(CloseCode::SlowConsumer))
        }
    }
}

/// A write error: which close it calls for.
fn write_failed(error: axum::Error) -> Outcome {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        // `max_write_buffer_size`: what waits for the socket would pass the cap.
        Some(tungstenite::Error::WriteBufferFull(_)) => Outcome::Close(CloseCode::SlowConsumer),
        _ => {
            tracing::debug!(error = %inner, "websocket: write failed");
            Outcome::Gone
        }
    }
}

/// `ms` milliseconds, or None for 0 (the clock is off).
fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
