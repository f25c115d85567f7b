//! One stream followed by a connection: started here (waiting for its first upstream event
//! without holding up the connection) or resumed from a subscription, then its events are
//! encoded into messages and queued on its lane until the stream ends or the connection
//! closes.

use std::sync::Arc;

use axum::extract::ws::Message;
use bytes::Bytes;
use providers::Dialect;

use super::connection::{Conn, LaneGuard};
use super::error_code;
use super::outbox::{Batch, LaneSender};
use crate::hub::{Entry, StoredEvent, Subscription};
use crate::server::streams::start_stream;
use crate::ws::{COMPRESS_MIN_BYTES, Compression, MIN_CHUNK_SIZE, ServerFrame, event_frame, shard};

/// How a lane gets its stream.
#[derive(Debug)]
pub(super) enum Follow {
    /// A `start` frame, its dialect settled.
    Start {
        /// The client's id (the stream's id in the hub, when given).
        id: Option<String>,
        /// Shape of the request.
        dialect: Dialect,
        /// The request as JSON.
        body: Bytes,
        /// False: cancel the stream when this connection closes.
        detach: bool,
    },
    /// A `resume` the hub accepted.
    Resume(Subscription),
}

/// Runs one lane: until its stream's last event is queued, or the connection closes.
pub(super) async fn run(guard: LaneGuard, lane: LaneSender, follow: Follow) {
    let conn = Arc::clone(guard.conn());
    let started = match follow {
        Follow::Resume(subscription) => (subscription, None, None),
        Follow::Start {
            id,
            dialect,
            body,
            detach,
        } => {
            // One access line per stream started on the connection, with its own id.
            let observed = conn.observed.child(http::Method::POST, "/v1/ws#start");
            let mut finisher = observed.finisher(200);
            let started = start(&conn, &guard, &lane, id, dialect, body, observed.clone());
            let (subscription, entry) =
                match tracing::Instrument::instrument(started, observed.span().clone()).await {
                    Ok(started) => started,
                    Err(status) => {
                        finisher.set_status(status);
                        finisher.ended();
                        return;
                    }
                };
            (subscription, (!detach).then_some(entry), Some(finisher))
        }
    };
    let (subscription, cancel_on_close, finisher) = started;
    tokio::select! {
        biased;
        () = conn.closed.cancelled() => {}
        ended = pump(&conn, &guard, &lane, subscription) => {
            if let (true, Some(finisher)) = (ended, finisher) {
                finisher.ended();
            }
        }
    }
    // Dropping the subscription (above) detached the stream; one started with
    // `detach: false` goes with its connection instead.
    if conn.closed.is_cancelled()
        && let Some(entry) = cancel_on_close
    {
        entry.cancel();
    }
}

/// Starts the stream and queues `started`; on a refusal, queues the `error` frame instead.
/// The start is never interrupted (the hub must not be left with a half-registered stream):
/// if the connection closed meanwhile, the caller detaches or cancels what started.
async fn start(
    conn: &Conn,
    guard: &LaneGuard,
    lane: &LaneSender,
    id: Option<String>,
    dialect: Dialect,
    body: Bytes,
    observed: crate::telemetry::request::Observed,
) -> Result<(Subscription, Arc<Entry>), u16> {
    let started = async {
        let entry = start_stream(
            &conn.state,
            conn.caller.clone(),
            dialect,
            id.clone(),
            body,
            &conn.headers,
            observed,
        )
        .await?;
        guard.name(entry.id());
        // Subscribed at once: between the start and here the stream counted as detached.
        let subscription = entry.subscribe(None)?;
        Ok::<_, crate::error::GatewayError>((subscription, entry))
    };
    match started.await {
        Ok((subscription, entry)) => {
            let frame = ServerFrame::Started {
                stream: entry.id().to_owned(),
                id,
            };
            lane.push(&conn.outbox, vec![conn.frame_message(&frame)])
                .await;
            Ok((subscription, entry))
        }
        Err(e) => {
            let status = e.status().as_u16();
            tracing::debug!(error = %e, "websocket: start refused");
            let frame = ServerFrame::Error {
                stream: id,
                code: error_code(&e),
                message: e.to_string(),
            };
            lane.push(&conn.outbox, vec![conn.frame_message(&frame)])
                .await;
            Err(status)
        }
    }
}

/// Queues every event of the subscription, waiting whenever the lane is full (the hub keeps
/// the rest meanwhile). False when the lane closed first.
async fn pump(
    conn: &Conn,
    guard: &LaneGuard,
    lane: &LaneSender,
    mut subscription: Subscription,
) -> bool {
    let stream = subscription.entry().id().to_owned();
    let chunk_size = conn.settings.chunk_size.max(MIN_CHUNK_SIZE);
    while let Some(batch) = subscription.next_batch().await {
        for event in &batch {
            if event.kind == "stream.end" {
                // The lane is done once this is queued: a client that read it may follow
                // the stream again (`resume`) and must not be told it already does.
                guard.release();
            }
            let messages = encode_event(conn.compression, chunk_size, &stream, event);
            if !lane.push(&conn.outbox, messages).await {
                return false;
            }
        }
    }
    true
}

/// One event's messages: its `event` frame, or the frame's shards when it is longer than
/// `chunk_size`, each compressed on its own (small ones go as text).
pub(super) fn encode_event(
    c: Compression,
    chunk_size: usize,
    stream: &str,
    event: &StoredEvent,
) -> Batch {
    let frame = event_frame(&event.json);
    if frame.len() <= chunk_size {
        return vec![to_message(c, &frame)];
    }
    // Envelopes are serde_json output: always UTF-8.
    let text = String::from_utf8(frame)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    shard(stream, event.seq, &text, chunk_size)
        .iter()
        .map(|piece| to_message(c, piece.as_bytes()))
        .collect()
}

/// One frame's JSON as the message of a connection using `c`.
pub(super) fn to_message(c: Compression, json: &[u8]) -> Message {
    match crate::ws::encode_server_message_min(c, json, COMPRESS_MIN_BYTES) {
        crate::ws::Message::Text(text) => Message::Text(text.into()),
        crate::ws::Message::Binary(bytes) => Message::Binary(bytes.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{ClientDecoder, DecoderLimits, Incoming};

    fn as_ws(m: Message) -> crate::ws::Message {
        match m {
            Message::Text(t) => crate::ws::Message::Text(t.as_str().to_owned()),
            Message::Binary(b) => crate::ws::Message::Binary(b.to_vec()),
            other => panic!("not a data message: {other:?}"),
        }
    }

    /// A 1 MiB event goes out as shards of at most the chunk size, in every mode, and the
    /// reference decoder gives back the very envelope.
    #[test]
    fn a_one_mib_event_is_sharded_and_reassembled_byte_exact() {
        let text: String = (0..(1 << 20))
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let envelope = serde_json::json!({
            "stream": "st_big", "seq": 7, "type": "text.delta", "index": 0, "text": text
        });
        let json = serde_json::to_vec(&envelope).unwrap();
        let event = StoredEvent {
            seq: 7,
            kind: "text.delta",
            json: Bytes::from(json.clone()),
        };
        for c in Compression::ALL {
            let messages = encode_event(c, 64 << 10, "st_big", &event);
            assert!(messages.len() >= 16, "{c}: {} messages", messages.len());
            let mut decoder = ClientDecoder::new(c, DecoderLimits::default());
            let mut got = None;
            for (i, m) in messages.into_iter().enumerate() {
                let m = as_ws(m);
                if c == Compression::None {
                    assert!(m.len() <= 64 << 10, "{c}: shard {i} is {} bytes", m.len());
                }
                if let Some(incoming) = decoder.decode(m).unwrap() {
                    assert!(got.is_none(), "{c}: one event only");
                    got = Some(incoming);
                }
            }
            let Some(Incoming::Event(back)) = got else {
                panic!("{c}: no event");
            };
            assert_eq!(serde_json::to_vec(&back).unwrap(), json, "{c}");
        }
    }

    #[test]
    fn small_events_are_one_message() {
        let event = StoredEvent {
            seq: 0,
            kind: "text.delta",
            json: Bytes::from_static(
                br#"{"stream":"s","seq":0,"type":"text.delta","index":0,"text":"hi"}"#,
            ),
        };
        let messages = encode_event(Compression::Zstd, 1024, "s", &event);
        assert_eq!(messages.len(), 1);
        // Under COMPRESS_MIN_BYTES: text even on a compressed connection.
        assert!(
            matches!(&messages[0], Message::Text(t) if t.as_str().starts_with(r#"{"op":"event","stream":"s""#))
        );
    }
}
