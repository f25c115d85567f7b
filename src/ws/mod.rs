//! The WebSocket door's protocol, without I/O: what the `GET /v1/ws` handler and a client
//! say to each other, and the codecs for it. The handler (sockets, heartbeats, timeouts) and
//! the stream hub live elsewhere; `docs/websocket.md` is the normative description.
//!
//! # The protocol in one screen
//!
//! - **Subprotocol** ([`protocol`]): the client offers `streamgate.v1`, `streamgate.v1+lz4`,
//!   `streamgate.v1+zstd` and/or `streamgate.v1+gzip`; [`negotiate`] takes the first one the
//!   client lists. It fixes the connection's [`Compression`].
//! - **Frames** ([`frame`]): one JSON object per WebSocket message, tagged by `op`.
//!   Client: `start`, `resume`, `cancel`, `ping` ([`ClientFrame`]). Gateway: `started`,
//!   `event`, `shard`, `pong`, `error` ([`ServerFrame`]). An `event` frame is the Agent Event
//!   envelope with `"op":"event"` spliced in first ([`event_frame`]); a stream ends with its
//!   `stream.end` event. One connection carries many streams: every frame names its stream.
//! - **Refusals** ([`parse`]): a bad client frame is answered by an `error` frame
//!   ([`FrameError::code`]); a few break the connection ([`FrameError::close_code`], see
//!   [`CloseCode`]).
//! - **Compression** ([`compress`](mod@compress)): on compressed connections each message is
//!   a binary frame compressed on its own (small frames may go as text); inflating is bounded
//!   ([`InflateError::TooLarge`]).
//! - **Sharding** ([`shard`](mod@shard)): an `event` frame longer than the chunk size (bytes of
//!   uncompressed JSON) goes as `shard` frames, reassembled by [`Reassembler`]
//!   ([`reassemble`]).
//! - **Messages** ([`message`]): frame JSON <-> [`Message`] (text or binary) for both sides.
//! - **Reference client** ([`decoder`]): [`ClientDecoder`] turns the gateway's messages back
//!   into events and replies.
//!
//! # Sending an event (server side)
//!
//! ```
//! use streamgate::ws::{COMPRESS_MIN_BYTES, Compression, encode_server_message_min};
//! use streamgate::ws::{event_frame, shard};
//! # let envelope_json = br#"{"stream":"st_1","seq":3,"type":"text.delta","index":0,"text":"Hi"}"#;
//! let frame = event_frame(envelope_json); // {"op":"event","stream":"st_1",...}
//! let frame = String::from_utf8(frame).unwrap_or_default();
//! for piece in shard("st_1", 3, &frame, 64 * 1024) {
//!     let message =
//!         encode_server_message_min(Compression::Zstd, piece.as_bytes(), COMPRESS_MIN_BYTES);
//!     // socket.send(message) ...
//! #   assert!(!message.is_empty());
//! }
//! ```

pub mod compress;
pub mod decoder;
pub mod frame;
pub mod message;
pub mod parse;
pub mod protocol;
pub mod reassemble;
pub mod shard;

pub use compress::{InflateError, compress, decompress};
pub use decoder::{ClientDecoder, DecodeError, DecoderLimits, Incoming};
pub use frame::{ClientFrame, ErrorCode, ServerFrame, Shard, event_frame};
pub use message::{
    COMPRESS_MIN_BYTES, FrameLimits, Message, decode_client_message, encode_client_frame,
    encode_server_message, encode_server_message_min,
};
pub use parse::{FrameError, MAX_ID_LEN, parse_client_frame};
pub use protocol::{CloseCode, Compression, CompressionOffer, SUBPROTOCOLS, negotiate};
pub use reassemble::{Reassembler, ReassemblyLimits, ShardError};
pub use shard::{MIN_CHUNK_SIZE, shard};
