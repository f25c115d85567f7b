//! The WebSocket door, `GET /v1/ws`: one connection multiplexes any number of Agent Event
//! Streams of the hub (docs/websocket.md). The protocol itself (frames, compression,
//! sharding) is the I/O-free [`crate::ws`]; this module is its sockets and timers.
//!
//! # Layout
//!
//! - here: the upgrade (subprotocol negotiation in the client's order, transport limits) and
//!   the mapping of gateway errors to `error` frame codes;
//! - [`connection`]: one connection's life: the reader (client frames, heartbeats, idle
//!   timeout, shutdown), the writer, and the close;
//! - [`lane`]: one followed stream: start it (or take a resumed subscription), encode its
//!   events into messages, queue them for the writer;
//! - [`outbox`]: the lanes' bounded queues and the writer's round-robin over them;
//! - [`pace`]: how fast a connection's pings are answered.

mod connection;
mod lane;
mod outbox;
mod pace;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};

use super::common::{door_dialect, error_response};
use super::state::AppState;
use crate::error::GatewayError;
use crate::hub::{HubError, WebSocketSettings};
use crate::ws::{Compression, ErrorCode};

/// `GET /v1/ws`: upgrades to a WebSocket speaking `streamgate.v1` with the compression the
/// client prefers among those offered (`streams.websocket.compression`). A client that offers
/// no subprotocol at all gets plain `streamgate.v1` and an answer without
/// `Sec-WebSocket-Protocol` (answering a name it did not offer would fail its handshake),
/// when `none` is offered; one that offers only names we do not speak or offer is refused
/// with 400.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: http::Extensions,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let observed = super::common::observed(&extensions);
    let ws = match ws {
        Ok(ws) => ws,
        // Not an upgrade (wrong method, headers or HTTP version): axum's own answer.
        Err(rejection) => return rejection.into_response(),
    };
    // Browsers cannot set headers: they offer the key as a subprotocol instead.
    let presented = crate::keys::ws_presented(&headers)
        .or_else(|| crate::keys::presented(door_dialect(&headers), &headers));
    let caller = match state.engine.keyring().authenticate(presented) {
        Ok(caller) => caller,
        Err(failure) => {
            let error = GatewayError::Unauthenticated(failure);
            return error_response(door_dialect(&headers), &error);
        }
    };
    let settings = state.hub.config().websocket.clone();
    let (ws, compression) = match offered(&headers) {
        None if settings.compression.contains(Compression::None) => (ws, Compression::None),
        None => return refuse(&headers, "no WebSocket subprotocol offered", &settings),
        Some(offer) => match settings.compression.negotiate(&offer) {
            Some(c) => (ws.protocols([c.subprotocol()]), c),
            None => {
                let why =
                    format!("none of the offered WebSocket subprotocols ({offer}) is spoken here");
                return refuse(&headers, &why, &settings);
            }
        },
    };
    let limit = transport_limit(&settings);
    let tracked = state.websockets.token();
    // The connection's access line is written when it closes (or if the upgrade never
    // completes); the telemetry layer leaves this response's record alone.
    let finisher = observed.finisher(StatusCode::SWITCHING_PROTOCOLS.as_u16());
    let span = observed.span().clone();
    // Small buffers: tungstenite's 128 KiB default read buffer is allocated (and zeroed) per
    // connection, which alone would put 10,000 idle connections past a gigabyte. Reads and
    // writes still go in larger pieces when there is more to move.
    let response = ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(write_buffer_limit(&settings))
        .on_upgrade(move |socket| {
            let connection = async move {
                connection::run(
                    socket,
                    state,
                    headers,
                    caller,
                    compression,
                    settings,
                    observed,
                )
                .await;
                finisher.ended();
                drop(tracked);
            };
            tracing::Instrument::instrument(connection, span)
        });
    let mut response = response;
    response
        .extensions_mut()
        .insert(crate::telemetry::layer::Upgraded);
    response
}

/// The 400 of an upgrade whose subprotocols are none of those offered (`compression`).
fn refuse(headers: &HeaderMap, why: &str, settings: &WebSocketSettings) -> Response {
    let error = GatewayError::Upgrade(format!(
        "{why}; offer one of {}",
        settings.compression.subprotocols().join(", ")
    ));
    error_response(door_dialect(headers), &error)
}

/// Bytes read from the socket at a time per connection.
const READ_BUFFER: usize = 2 << 10;
/// Bytes of encoded messages gathered before a write (the writer also flushes when idle).
const WRITE_BUFFER: usize = 4 << 10;

/// Most bytes tungstenite may hold for the socket (`max_write_buffer_bytes`), never less
/// than [`WRITE_BUFFER`] plus the largest message the gateway writes: an event frame or shard
/// of `chunkSize` bytes, grown a little by compression (a 64th covers lz4, zstd and gzip on
/// incompressible input) and its frame header. Below that, a message could never be written
/// (and tungstenite refuses a cap at or below its write buffer).
fn write_buffer_limit(settings: &WebSocketSettings) -> usize {
    let largest = settings.chunk_size.max(crate::ws::MIN_CHUNK_SIZE);
    let fits = WRITE_BUFFER
        .saturating_add(largest)
        .saturating_add(largest / 64 + (4 << 10));
    settings.max_write_buffer_bytes.max(fits)
}

/// Every `Sec-WebSocket-Protocol` entry of the request but a key
/// ([`crate::keys::WS_PROTOCOL_PREFIX`], which is never chosen, nor named in an error),
/// joined with `,` (None without one).
fn offered(headers: &HeaderMap) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .flat_map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && !p.starts_with(crate::keys::WS_PROTOCOL_PREFIX))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The largest message (and WebSocket frame) the transport reads at all: twice
/// `max_frame_bytes`, at least 64 KiB. Up to it, a frame over `max_frame_bytes` is read and
/// answered `frame_too_large` (the connection goes on); beyond it tungstenite stops reading
/// and the connection is closed with 1009.
fn transport_limit(settings: &WebSocketSettings) -> usize {
    settings.max_frame_bytes.saturating_mul(2).max(64 << 10)
}

/// The `error` frame code for a refusal of `start` or `resume`.
fn error_code(error: &GatewayError) -> ErrorCode {
    match error {
        GatewayError::Hub(HubError::UnknownStream { .. }) => ErrorCode::UnknownStream,
        GatewayError::Hub(HubError::SeqBeyondEnd { .. }) => ErrorCode::SeqBeyondEnd,
        GatewayError::Hub(HubError::DuplicateStream { .. }) => ErrorCode::DuplicateStream,
        GatewayError::Internal(_) => ErrorCode::Internal,
        e => match e.status() {
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            s if s.is_client_error() => ErrorCode::BadRequest,
            // 5xx: no route could serve it now (unreachable, timed out, upstream 5xx, no key).
            _ => ErrorCode::Unavailable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_errors_map_to_error_codes() {
        let hub = |e: HubError| error_code(&GatewayError::Hub(e));
        assert_eq!(
            hub(HubError::UnknownStream { id: "x".into() }),
            ErrorCode::UnknownStream
        );
        assert_eq!(
            hub(HubError::SeqBeyondEnd {
                id: "x".into(),
                after: 9,
                last: Some(3)
            }),
            ErrorCode::SeqBeyondEnd
        );
        assert_eq!(
            hub(HubError::DuplicateStream { id: "x".into() }),
            ErrorCode::DuplicateStream
        );
        assert_eq!(
            hub(HubError::InvalidId { id: "x y".into() }),
            ErrorCode::BadRequest
        );
        assert_eq!(
            error_code(&GatewayError::UnknownModel { model: "m".into() }),
            ErrorCode::BadRequest
        );
        assert_eq!(
            error_code(&GatewayError::MalformedJson("x".into())),
            ErrorCode::BadRequest
        );
        assert_eq!(
            error_code(&GatewayError::Unavailable {
                message: "x".into(),
                retry_after: None,
            }),
            ErrorCode::Unavailable
        );
        assert_eq!(
            error_code(&GatewayError::UpstreamStatus {
                provider: "p".into(),
                status: 429,
                error_type: "rate_limit_error".into(),
                message: "slow down".into(),
                retry_after: None,
            }),
            ErrorCode::RateLimited
        );
        assert_eq!(
            error_code(&GatewayError::Connection {
                provider: "p".into(),
                fault: crate::error::ConnectionFault::ClosedBeforeResponse,
            }),
            ErrorCode::Unavailable
        );
        assert_eq!(
            error_code(&GatewayError::Internal("bug".into())),
            ErrorCode::Internal
        );
    }

    #[test]
    fn the_transport_reads_twice_the_frame_limit() {
        let mut settings = WebSocketSettings::default();
        assert_eq!(transport_limit(&settings), 8 << 20);
        settings.max_frame_bytes = 1000;
        assert_eq!(transport_limit(&settings), 64 << 10);
    }

    #[test]
    fn the_write_buffer_cap_fits_the_largest_message() {
        let mut settings = WebSocketSettings::default();
        assert_eq!(write_buffer_limit(&settings), 128 << 10);
        settings.max_write_buffer_bytes = 0;
        for chunk in [0, 256, 4096, 64 << 10, 1 << 20, usize::MAX] {
            settings.chunk_size = chunk;
            let limit = write_buffer_limit(&settings);
            assert!(limit > WRITE_BUFFER, "{chunk}: {limit}");
            assert!(
                limit >= WRITE_BUFFER.saturating_add(chunk.max(crate::ws::MIN_CHUNK_SIZE)),
                "{chunk}: {limit}"
            );
        }
        // Every mode's message of an incompressible full chunk fits beside a full buffer.
        settings.chunk_size = 64 << 10;
        let mut noise = 0x2545_f491_4f6c_dd1du64;
        let json: Vec<u8> = (0..settings.chunk_size)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                b' ' + (noise % 94) as u8
            })
            .collect();
        for c in Compression::ALL {
            let message = crate::ws::encode_server_message_min(c, &json, 0);
            // 14: the largest frame header of a server (unmasked) frame.
            assert!(
                WRITE_BUFFER + message.len() + 14 <= write_buffer_limit(&settings),
                "{c}: {}",
                message.len()
            );
        }
    }

    #[test]
    fn offers_join_across_header_lines() {
        let mut headers = HeaderMap::new();
        assert_eq!(offered(&headers), None);
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static("chat"),
        );
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static("streamgate.v1+gzip, streamgate.v1"),
        );
        let offer = offered(&headers).unwrap_or_default();
        assert_eq!(crate::ws::negotiate(&offer), Some(Compression::Gzip));
    }
}
