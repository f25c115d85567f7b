//! The WebSocket door `GET /v1/ws` through real sockets: tokio-tungstenite as the client,
//! `streamgate::ws::ClientDecoder` as its reading side, the gateway over the replay upstream.
//! Many streams on one connection in every compression mode, a 1 MiB event sharded, bad input
//! of every kind next to a stream that must come out whole, resume, cancel, detach, the
//! clocks (heartbeat, idle timeout), limits and the close codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/openai_deltas.rs"]
mod openai_deltas;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gw::chat_body;
use openai_deltas::openai_deltas;
use providers::{AgentEvent, Dialect, Envelope, StreamDecoder};
use serde_json::{Value, json};
use streamgate::ws::{
    ClientDecoder, ClientFrame, Compression, DecoderLimits, ErrorCode, Incoming, ServerFrame,
    compress, decompress, encode_client_frame,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A long recording dripped at 2 ms a frame (~300 events): still flowing while a test does
/// other things on the same connection.
const LONG: &str = "openai/drip=2:text_long_obfuscation";

/// Streams of both dialects' recordings, short and long, small and big events (web search
/// results of ~40 KB), tool calls, reasoning.
const MIX: [&str; 10] = [
    "anthropic/text_simple",
    "openai/text_basic",
    "anthropic/tool_use_with_text",
    "openai/tool_calls_parallel",
    "anthropic/thinking_signature",
    "openai/json_object_long",
    "anthropic/web_search_citations",
    LONG,
    "anthropic/pause_turn_web_search_long",
    "openai/n3_multiple_choices",
];

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One client connection and its decoder.
struct Client {
    ws: Ws,
    c: Compression,
    decoder: ClientDecoder,
    /// Shard messages read (each but the last of a sharded event).
    shards: usize,
}

/// What the client read next.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one at a time, in tests
enum Got {
    In(Incoming),
    Ping,
    Close(Option<u16>),
    /// The connection ended without (or after) a close frame.
    End,
}

async fn connect(h: &gw::Harness, offer: Option<&str>) -> Client {
    connect_to(h.gateway, offer, &[]).await
}

/// The upgrade request to `addr`, offering `offer`, with `headers`.
fn upgrade_request(
    addr: SocketAddr,
    offer: Option<&str>,
    headers: &[(&str, &str)],
) -> tungstenite::handshake::client::Request {
    let url = format!("ws://{addr}/v1/ws");
    let mut request = url.into_client_request().unwrap();
    if let Some(offer) = offer {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offer.parse().unwrap());
    }
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

async fn connect_to(addr: SocketAddr, offer: Option<&str>, headers: &[(&str, &str)]) -> Client {
    let request = upgrade_request(addr, offer, headers);
    let (ws, response) = tokio::time::timeout(gw::BOUND, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    Client::upgraded(ws, &response, offer)
}

/// A connection whose socket has a receive buffer of about `bytes` (the kernel doubles it and
/// has a floor), so that a client that does not read stops the gateway's writes soon.
async fn connect_with_receive_buffer(addr: SocketAddr, bytes: u32, offer: Option<&str>) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let request = upgrade_request(addr, offer, &[]);
    let (ws, response) = tokio::time::timeout(
        gw::BOUND,
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)),
    )
    .await
    .unwrap()
    .unwrap();
    Client::upgraded(ws, &response, offer)
}

fn start(id: Option<&str>, dialect: Dialect, model: &str, detach: bool) -> ClientFrame {
    ClientFrame::Start {
        id: id.map(str::to_owned),
        dialect: Some(dialect),
        request: chat_body(dialect, model, true),
        detach,
    }
}

fn to_tungstenite(m: streamgate::ws::Message) -> Message {
    match m {
        streamgate::ws::Message::Text(t) => Message::Text(t.into()),
        streamgate::ws::Message::Binary(b) => Message::Binary(b.into()),
    }
}

impl Client {
    /// The client of an upgraded connection, checking the subprotocol answered to `offer`.
    fn upgraded(
        ws: Ws,
        response: &tungstenite::handshake::client::Response,
        offer: Option<&str>,
    ) -> Client {
        let answered = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        let c = match (&answered, offer) {
            (None, None) => Compression::None,
            (Some(name), Some(offer)) => {
                let c = streamgate::ws::negotiate(name).unwrap();
                assert_eq!(
                    streamgate::ws::negotiate(offer),
                    Some(c),
                    "the first offered name wins"
                );
                c
            }
            other => panic!("subprotocol answer {other:?} for offer {offer:?}"),
        };
        Client {
            ws,
            c,
            decoder: ClientDecoder::new(c, DecoderLimits::default()),
            shards: 0,
        }
    }

    async fn send(&mut self, frame: &ClientFrame) {
        let message = to_tungstenite(encode_client_frame(self.c, frame));
        self.ws.send(message).await.unwrap();
    }

    async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next thing the gateway said (shards are reassembled on the way).
    async fn recv(&mut self) -> Got {
        loop {
            let next = tokio::time::timeout(gw::BOUND, self.ws.next())
                .await
                .expect("the gateway said nothing for too long");
            let message = match next {
                None | Some(Err(_)) => return Got::End,
                Some(Ok(message)) => message,
            };
            let data = match message {
                Message::Text(t) => streamgate::ws::Message::Text(t.as_str().to_owned()),
                Message::Binary(b) => streamgate::ws::Message::Binary(b.to_vec()),
                Message::Ping(_) => return Got::Ping,
                Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(frame) => return Got::Close(frame.map(|f| u16::from(f.code))),
            };
            match self.decoder.decode(data).unwrap() {
                Some(incoming) => return Got::In(incoming),
                None => self.shards += 1,
            }
        }
    }

    /// The next frame, skipping heartbeats; a close is a failure.
    async fn incoming(&mut self) -> Incoming {
        loop {
            match self.recv().await {
                Got::In(incoming) => return incoming,
                Got::Ping => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// The next `error` frame, collecting any events that come before it into `streams`.
    async fn error(&mut self, streams: &mut Streams) -> (Option<String>, ErrorCode, String) {
        loop {
            match self.incoming().await {
                Incoming::Error {
                    stream,
                    code,
                    message,
                } => return (stream, code, message),
                other => streams.take(other),
            }
        }
    }

    /// The next `started`, collecting events that come before it.
    async fn started(&mut self, streams: &mut Streams) -> (String, Option<String>) {
        loop {
            match self.incoming().await {
                Incoming::Started { stream, id } => return (stream, id),
                other => streams.take(other),
            }
        }
    }

    /// The close code the gateway ends with (events and pings before it are skipped).
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                Got::Close(code) => return code,
                Got::End => return None,
                Got::In(_) | Got::Ping => continue,
            }
        }
    }
}

/// Everything read so far, per stream, and the client ids `started` named.
#[derive(Default, Debug)]
struct Streams {
    events: HashMap<String, Vec<Envelope>>,
    ids: HashMap<String, String>,
    ended: usize,
}

impl Streams {
    fn take(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Event(envelope) => {
                if matches!(envelope.event, AgentEvent::StreamEnd(_)) {
                    self.ended += 1;
                }
                self.events
                    .entry(envelope.stream.clone())
                    .or_default()
                    .push(envelope);
            }
            Incoming::Started { stream, id } => {
                self.ids.insert(id.unwrap_or_default(), stream);
            }
            other => panic!("unexpected: {other:?}"),
        }
    }

    /// Reads until `ends` streams in all have ended.
    async fn until_ended(&mut self, client: &mut Client, ends: usize) {
        while self.ended < ends {
            let incoming = client.incoming().await;
            self.take(incoming);
        }
    }

    fn of(&self, stream: &str) -> &[Envelope] {
        self.events.get(stream).map_or(&[], Vec::as_slice)
    }
}

/// What decoding the recording behind `model` gives: what the gateway must send.
fn recorded(model: &str) -> Vec<AgentEvent> {
    let (provider, rest) = model.split_once('/').unwrap();
    let name = rest.rsplit(':').next().unwrap();
    let dialect = match provider {
        "openai" => Dialect::OpenAi,
        _ => Dialect::Anthropic,
    };
    let body = streamgate::replay::fixture(dialect, name).unwrap();
    let (events, result) = StreamDecoder::decode_all(dialect, body);
    result.unwrap();
    events.into_iter().map(plain).collect()
}

/// The events of the same request through the SSE door (`POST /v1/streams`), as this
/// client would compare them (see [`agent_events`]).
async fn through_sse(h: &gw::Harness, dialect: Dialect, model: &str) -> Vec<AgentEvent> {
    let body = h
        .client
        .post(h.url("/v1/streams"))
        .header("streamgate-dialect", dialect.as_str())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&chat_body(dialect, model, true)).unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut parser = providers::sse::SseParser::new();
    let mut events = Vec::new();
    parser
        .feed::<providers::sse::SseError>(&body, &mut |frame| {
            let envelope: Envelope = serde_json::from_str(frame.data).unwrap();
            events.push(plain(envelope.event));
            Ok(())
        })
        .unwrap();
    events
}

/// Gap-free from seq 0, all of `stream`, ending with its `stream.end`.
fn assert_whole(events: &[Envelope], stream: &str) {
    assert!(!events.is_empty(), "{stream}: no events");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "{stream}: seq {i} of {}", events.len());
        assert_eq!(e.stream, stream);
    }
    assert!(
        matches!(events.last().unwrap().event, AgentEvent::StreamEnd(_)),
        "{stream}: does not end with stream.end"
    );
}

/// The events of a stream, without what the gateway adds to `stream.start` (its request id,
/// the provider, the time), for comparing with the recording.
fn agent_events(events: &[Envelope]) -> Vec<AgentEvent> {
    events.iter().map(|e| e.event.clone()).map(plain).collect()
}

/// How a stream's events differ from the recording of `model` (text, reasoning, tool calls,
/// finish, usage); empty when they agree.
fn differences_from_recording(model: &str, events: &[Envelope]) -> Vec<String> {
    gw::differences(
        &gw::seen_events(&recorded(model), false),
        &gw::seen_events(&agent_events(events), false),
        false,
    )
}

fn plain(mut event: AgentEvent) -> AgentEvent {
    if let AgentEvent::StreamStart(start) = &mut event {
        start.created = None;
        start.request_id = None;
        start.provider = None;
    }
    event
}

/// Starts 100 streams of [`MIX`] (both request dialects) on one connection and checks each
/// one whole and equal to its recording; the number of shard messages read.
async fn hundred_streams(offer: &str, edit: impl FnOnce(&mut streamgate::config::Config)) -> usize {
    let h = gw::start_with(edit).await;
    let mut client = connect(&h, Some(offer)).await;
    let began = Instant::now();
    for i in 0..100 {
        let dialect = if i % 2 == 0 {
            Dialect::OpenAi
        } else {
            Dialect::Anthropic
        };
        let model = MIX[(i / 2 + i) % MIX.len()];
        client
            .send(&start(Some(&format!("job-{i}")), dialect, model, true))
            .await;
    }
    let mut streams = Streams::default();
    streams.until_ended(&mut client, 100).await;
    assert_eq!(streams.ids.len(), 100, "one started per start");
    eprintln!("{offer}: 100 streams in {:?}", began.elapsed());
    let mut sse: HashMap<(Dialect, &str), Vec<AgentEvent>> = HashMap::new();
    for i in 0..100usize {
        let id = format!("job-{i}");
        let stream = &streams.ids[&id];
        assert_eq!(stream, &id, "a client id is the stream's id");
        let events = streams.of(stream);
        assert_whole(events, stream);
        let model = MIX[(i / 2 + i) % MIX.len()];
        let dialect = if i % 2 == 0 {
            Dialect::OpenAi
        } else {
            Dialect::Anthropic
        };
        let got = agent_events(events);
        // What the recording says (text, reasoning, tool calls, finish, usage)...
        let differences = differences_from_recording(model, events);
        assert!(
            differences.is_empty(),
            "{offer}: {id} ({model}) differs from its recording: {differences:?}"
        );
        // ...and event for event what the SSE door gives for the same request.
        let want = match sse.entry((dialect, model)) {
            std::collections::hash_map::Entry::Occupied(kept) => kept.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(through_sse(&h, dialect, model).await)
            }
        };
        assert_eq!(
            &got, want,
            "{offer}: {id} ({model}) differs from the SSE door"
        );
    }
    assert_eq!(streams.events.len(), 100);
    client.shards
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_streams_on_one_connection_uncompressed() {
    let shards = hundred_streams("streamgate.v1", |_| {}).await;
    assert_eq!(
        shards, 0,
        "the largest recorded event is under the default chunk size"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_streams_on_one_connection_lz4_with_tiny_buffers() {
    // Two events per lane, 16 KiB for all lanes together: every stream keeps stopping and
    // catching up from the hub, and web search results (~40 KB) go alone.
    hundred_streams("streamgate.v1+lz4, streamgate.v1", |config| {
        config.streams.websocket.buffer_events = 2;
        config.streams.websocket.buffer_bytes = 16 << 10;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_streams_on_one_connection_zstd() {
    hundred_streams("streamgate.v1+zstd", |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_streams_on_one_connection_gzip_with_small_chunks() {
    // Web search results (~40 KB) go as ~40 shards each, interleaved with other streams.
    let shards = hundred_streams("streamgate.v1+gzip", |config| {
        config.streams.websocket.chunk_size = 1024;
    })
    .await;
    assert!(shards > 1000, "only {shards} shard messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_event_is_sharded_and_reassembled_byte_exact() {
    const CHUNK: usize = 64 << 10;
    let h = gw::start().await;
    // 1 MiB of text with quotes, backslashes, newlines, 2- and 4-byte characters: what JSON
    // escapes and what a cut must not split.
    let unit = "Lorem \"ipsum\" \\ dolor\nsit amet, é café 😀 ";
    let text: String = unit.repeat((1 << 20) / unit.len() + 1);
    assert!(text.len() >= 1 << 20);
    h.replay.insert_fixture(
        Dialect::OpenAi,
        "one_mib_delta",
        openai_deltas([text.clone()]),
    );
    for offer in streamgate::ws::SUBPROTOCOLS {
        let mut client = connect(&h, Some(offer)).await;
        let c = client.c;
        client
            .send(&start(None, Dialect::OpenAi, "openai/one_mib_delta", true))
            .await;
        // Read raw messages: each shard's size and data, and the decoder's result.
        let mut shards: HashMap<u64, String> = HashMap::new();
        let mut next_index: HashMap<u64, u32> = HashMap::new();
        let mut shard_count = 0;
        let mut events: Vec<Envelope> = Vec::new();
        let mut stream = String::new();
        while !matches!(
            events.last().map(|e| &e.event),
            Some(AgentEvent::StreamEnd(_))
        ) {
            let message = tokio::time::timeout(gw::BOUND, client.ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let data = match message {
                Message::Text(t) => streamgate::ws::Message::Text(t.as_str().to_owned()),
                Message::Binary(b) => streamgate::ws::Message::Binary(b.to_vec()),
                _ => continue,
            };
            let json = match &data {
                streamgate::ws::Message::Text(t) => t.as_bytes().to_vec(),
                streamgate::ws::Message::Binary(b) => decompress(c, b, 16 << 20).unwrap(),
            };
            assert!(
                json.len() <= CHUNK,
                "{offer}: a message of {} bytes",
                json.len()
            );
            if let ServerFrame::Shard(shard) = serde_json::from_slice(&json).unwrap() {
                let next = next_index.entry(shard.seq).or_default();
                assert_eq!(shard.index, *next, "{offer}: shards in order");
                *next += 1;
                assert!(shard.index < shard.count);
                shard_count += 1;
                shards.entry(shard.seq).or_default().push_str(&shard.data);
            }
            match client.decoder.decode(data).unwrap() {
                Some(Incoming::Event(envelope)) => events.push(envelope),
                Some(Incoming::Started { stream: s, .. }) => stream = s,
                Some(other) => panic!("{offer}: {other:?}"),
                None => {}
            }
        }
        assert_whole(&events, &stream);
        assert!(shard_count >= 16, "{offer}: {shard_count} shards for 1 MiB");
        assert_eq!(shards.len(), 1, "{offer}: only the big event is sharded");
        let (&seq, joined) = shards.iter().next().unwrap();
        let AgentEvent::TextDelta { text: got, .. } = &events[seq as usize].event else {
            panic!("{offer}: seq {seq} is not the text delta");
        };
        assert_eq!(got, &text, "{offer}: text");
        // Byte-exact: the shards join into the `event` frame of the envelope the hub keeps
        // (the SSE door's `data:` of the same event).
        let kept = h
            .client
            .get(h.url(&format!("/v1/streams/{stream}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let data = kept
            .split("\n\n")
            .find(|frame| frame.starts_with(&format!("id: {seq}\n")))
            .and_then(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
            .unwrap();
        let frame = streamgate::ws::event_frame(data.as_bytes());
        assert_eq!(
            joined.as_bytes(),
            frame.as_slice(),
            "{offer}: shards join byte-exact"
        );
    }
}

/// How long the garbage test's stream runs: long enough to still be flowing while every bad
/// frame is answered (~300 events at 10 ms: at least 3 s, for a dozen round trips).
const SLOW: &str = "openai/drip=10:text_long_obfuscation";

fn text(s: impl Into<String>) -> Message {
    Message::Text(s.into().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_while_the_other_streams_flow_on() {
    let h = gw::start_with(|config| config.streams.websocket.max_frame_bytes = 64 << 10).await;
    let mut client = connect(&h, Some("streamgate.v1")).await;
    let mut streams = Streams::default();
    // A finished stream to resume wrongly, and a long one flowing throughout.
    client
        .send(&start(
            Some("short"),
            Dialect::Anthropic,
            "anthropic/text_simple",
            true,
        ))
        .await;
    streams.until_ended(&mut client, 1).await;
    client
        .send(&start(Some("long"), Dialect::OpenAi, SLOW, true))
        .await;
    assert_eq!(client.started(&mut streams).await.0, "long");

    let short_len = streams.of("short").len() as u64;
    let oversized = format!(r#"{{"op":"ping","data":"{}"}}"#, "a".repeat(100 << 10));
    let bad: Vec<(Message, Option<&str>, ErrorCode, &str)> = vec![
        (
            text("not json"),
            None,
            ErrorCode::MalformedFrame,
            "not a JSON object",
        ),
        (
            text(r#"{"op":"launch"}"#),
            None,
            ErrorCode::MalformedFrame,
            "unknown op",
        ),
        (
            text(r#"{"op":"resume","stream":"short","afer":3}"#),
            None,
            ErrorCode::MalformedFrame,
            "afer",
        ),
        (
            text(r#"{"op":"start","request":[1]}"#),
            None,
            ErrorCode::MalformedFrame,
            "object",
        ),
        (
            text(oversized),
            None,
            ErrorCode::FrameTooLarge,
            "larger than the limit",
        ),
        (
            text(r#"{"op":"resume","stream":"st_nope"}"#),
            Some("st_nope"),
            ErrorCode::UnknownStream,
            "st_nope",
        ),
        (
            text(format!(
                r#"{{"op":"resume","stream":"short","after":{}}}"#,
                short_len + 5
            )),
            Some("short"),
            ErrorCode::SeqBeyondEnd,
            "last seq is",
        ),
        (
            text(r#"{"op":"cancel","stream":"st_nope"}"#),
            Some("st_nope"),
            ErrorCode::UnknownStream,
            "st_nope",
        ),
        (
            to_tungstenite(encode_client_frame(
                Compression::None,
                &start(Some("short"), Dialect::OpenAi, "openai/text_basic", true),
            )),
            Some("short"),
            ErrorCode::DuplicateStream,
            "already in use",
        ),
        (
            to_tungstenite(encode_client_frame(
                Compression::None,
                &start(Some("bad"), Dialect::OpenAi, "nope/nothing", true),
            )),
            Some("bad"),
            ErrorCode::BadRequest,
            "nope/nothing",
        ),
        (
            text(r#"{"op":"resume","stream":"long"}"#),
            Some("long"),
            ErrorCode::BadRequest,
            "already follows",
        ),
    ];
    for (message, stream, code, words) in bad {
        let shown = format!("{message:?}").chars().take(80).collect::<String>();
        client.send_raw(message).await;
        let (got_stream, got_code, got_message) = client.error(&mut streams).await;
        assert_eq!(got_code, code, "{shown}: {got_message}");
        assert_eq!(got_stream.as_deref(), stream, "{shown}");
        assert!(got_message.contains(words), "{shown}: {got_message:?}");
    }
    // Still talking, and the long stream was flowing all along.
    client
        .send(&ClientFrame::Ping {
            data: Some(json!("still here")),
        })
        .await;
    loop {
        match client.incoming().await {
            Incoming::Pong(data) => {
                assert_eq!(data, Some(json!("still here")));
                break;
            }
            other => streams.take(other),
        }
    }
    assert!(
        streams.ended == 1,
        "the long stream should still be flowing while bad frames are answered"
    );
    streams.until_ended(&mut client, 2).await;
    let long = streams.of("long");
    assert_whole(long, "long");
    let differences = differences_from_recording(SLOW, long);
    assert!(differences.is_empty(), "{differences:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_and_the_stream_beside_them_completes() {
    let h = gw::start_with(|config| config.streams.websocket.max_frame_bytes = 1 << 20).await;
    // A ping 16 times the limit once inflated, well under the limit compressed.
    let mut bomb = br#"{"op":"ping","data":""#.to_vec();
    bomb.resize(16 << 20, b'a');
    bomb.extend_from_slice(br#""}"#);
    for c in [Compression::Lz4, Compression::Zstd, Compression::Gzip] {
        let mut client = connect(&h, Some(c.subprotocol())).await;
        let mut streams = Streams::default();
        let id = format!("long-{}", c.subprotocol().replace('+', "-"));
        client
            .send(&start(Some(&id), Dialect::OpenAi, LONG, true))
            .await;
        assert_eq!(client.started(&mut streams).await.0, id);
        let compressed = compress(c, &bomb);
        assert!(
            compressed.len() < 1 << 20,
            "{c}: {} bytes",
            compressed.len()
        );
        client.send_raw(Message::Binary(compressed.into())).await;
        let (stream, code, message) = client.error(&mut streams).await;
        assert_eq!(code, ErrorCode::InflateTooLarge, "{c}: {message}");
        assert_eq!(stream, None);
        client.send(&ClientFrame::Ping { data: None }).await;
        loop {
            match client.incoming().await {
                Incoming::Pong(None) => break,
                other => streams.take(other),
            }
        }
        streams.until_ended(&mut client, 1).await;
        let long = streams.of(&id);
        assert_whole(long, &id);
        let differences = differences_from_recording(LONG, long);
        assert!(differences.is_empty(), "{c}: {differences:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_breaking_messages_close_the_connection_with_their_code() {
    let h = gw::start_with(|config| config.streams.websocket.max_frame_bytes = 64 << 10).await;
    // A binary message on streamgate.v1: 1002.
    let mut client = connect(&h, None).await;
    client
        .send_raw(Message::Binary(b"{}".to_vec().into()))
        .await;
    assert_eq!(client.close_code().await, Some(1002));
    // A text message that is not UTF-8: 1007.
    let mut client = connect(&h, None).await;
    let frame = Frame::message(
        b"{\"op\":\"p\xffng\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    client.send_raw(Message::Frame(frame)).await;
    assert_eq!(client.close_code().await, Some(1007));
    // A compressed message that inflates to something not UTF-8: 1007.
    let mut client = connect(&h, Some("streamgate.v1+zstd")).await;
    let payload = compress(Compression::Zstd, b"{\"op\":\"p\xff\xfeng\"}");
    client.send_raw(Message::Binary(payload.into())).await;
    assert_eq!(client.close_code().await, Some(1007));
    // A message larger than the transport reads (twice max_frame_bytes, at least 64 KiB): 1009.
    let mut client = connect(&h, None).await;
    let huge = format!(r#"{{"op":"ping","data":"{}"}}"#, "a".repeat(200 << 10));
    client.send_raw(text(huge)).await;
    assert_eq!(client.close_code().await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_on_another_with_exactly_the_rest() {
    let h = gw::start().await;
    let mut client = connect(&h, Some("streamgate.v1+zstd")).await;
    let mut streams = Streams::default();
    client
        .send(&start(Some("r1"), Dialect::OpenAi, LONG, true))
        .await;
    while streams.of("r1").len() < 30 {
        let incoming = client.incoming().await;
        streams.take(incoming);
    }
    // Gone without a close frame, mid-stream.
    drop(client);
    let mut first = streams.events.remove("r1").unwrap();
    let after = first.last().unwrap().seq;

    let mut client = connect(&h, Some("streamgate.v1+lz4")).await;
    client
        .send(&ClientFrame::Resume {
            stream: "r1".into(),
            after: Some(after),
        })
        .await;
    let mut streams = Streams::default();
    streams.until_ended(&mut client, 1).await;
    let rest = streams.events.remove("r1").unwrap();
    assert_eq!(rest[0].seq, after + 1, "exactly the rest");
    first.extend(rest);
    assert_whole(&first, "r1");
    assert_eq!(
        differences_from_recording(LONG, &first),
        Vec::<String>::new()
    );
    // Once it ended, a resume from the start replays all of it, on the same connection.
    client
        .send(&ClientFrame::Resume {
            stream: "r1".into(),
            after: None,
        })
        .await;
    let mut again = Streams::default();
    again.until_ended(&mut client, 1).await;
    assert_eq!(again.of("r1"), first.as_slice());
}

/// A stream's envelopes as the SSE door replays them (`GET /v1/streams/{id}`).
async fn replayed(h: &gw::Harness, id: &str) -> Vec<Envelope> {
    let body = h
        .client
        .get(h.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut parser = providers::sse::SseParser::new();
    let mut events = Vec::new();
    parser
        .feed::<providers::sse::SseError>(&body, &mut |frame| {
            events.push(serde_json::from_str(frame.data).unwrap());
            Ok(())
        })
        .unwrap();
    events
}

fn error_code_of(events: &[Envelope]) -> Option<String> {
    events.iter().find_map(|e| match &e.event {
        AgentEvent::Error(info) => Some(info.code.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_false_streams_go_with_their_connection_the_others_go_on() {
    let h = gw::start().await;
    let mut client = connect(&h, None).await;
    let mut streams = Streams::default();
    client
        .send(&start(Some("tied"), Dialect::OpenAi, LONG, false))
        .await;
    client
        .send(&start(Some("free"), Dialect::OpenAi, LONG, true))
        .await;
    while streams.of("tied").len() < 5 || streams.of("free").len() < 5 {
        let incoming = client.incoming().await;
        streams.take(incoming);
    }
    drop(client);
    let tied = replayed(&h, "tied").await;
    assert_whole(&tied, "tied");
    assert_eq!(error_code_of(&tied).as_deref(), Some("cancelled"));
    assert!(tied.len() < recorded(LONG).len(), "cut short");
    let free = replayed(&h, "free").await;
    assert_whole(&free, "free");
    assert_eq!(error_code_of(&free), None);
    assert_eq!(
        differences_from_recording(LONG, &free),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_stream_with_its_own_terminal_events() {
    let h = gw::start().await;
    let mut client = connect(&h, Some("streamgate.v1+gzip")).await;
    let mut streams = Streams::default();
    client
        .send(&start(None, Dialect::Anthropic, LONG, true))
        .await;
    let (stream, id) = client.started(&mut streams).await;
    assert_eq!(id, None);
    assert!(stream.starts_with("st_"), "{stream}");
    while streams.of(&stream).len() < 3 {
        let incoming = client.incoming().await;
        streams.take(incoming);
    }
    client
        .send(&ClientFrame::Cancel {
            stream: stream.clone(),
        })
        .await;
    streams.until_ended(&mut client, 1).await;
    let events = streams.of(&stream);
    assert_whole(events, &stream);
    assert_eq!(error_code_of(events).as_deref(), Some("cancelled"));
    assert!(events.len() < recorded(LONG).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_its_data() {
    let h = gw::start().await;
    for offer in [None, Some("streamgate.v1+lz4")] {
        let mut client = connect(&h, offer).await;
        let data = json!({"t": 1_732_650_000_123u64, "note": "x".repeat(300)});
        client
            .send(&ClientFrame::Ping {
                data: Some(data.clone()),
            })
            .await;
        assert_eq!(client.incoming().await, Incoming::Pong(Some(data)));
        client.send(&ClientFrame::Ping { data: None }).await;
        assert_eq!(client.incoming().await, Incoming::Pong(None));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_waiting_for_its_upstream_does_not_hold_up_the_connection() {
    let h = gw::start().await;
    let mut client = connect(&h, None).await;
    let mut streams = Streams::default();
    // Never answers: this start waits for its first upstream event.
    client
        .send(&start(
            Some("hung"),
            Dialect::OpenAi,
            "openai/hang:text_basic",
            true,
        ))
        .await;
    client
        .send(&start(
            Some("quick"),
            Dialect::Anthropic,
            "anthropic/text_simple",
            true,
        ))
        .await;
    streams.until_ended(&mut client, 1).await;
    assert_whole(streams.of("quick"), "quick");
    client.send(&ClientFrame::Ping { data: None }).await;
    assert_eq!(client.incoming().await, Incoming::Pong(None));
    assert!(!streams.ids.contains_key("hung"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_streams_on_one_connection_get_an_error_frame() {
    let h = gw::start_with(|config| config.streams.websocket.max_streams = 1).await;
    let mut client = connect(&h, None).await;
    let mut streams = Streams::default();
    client
        .send(&start(Some("one"), Dialect::OpenAi, LONG, true))
        .await;
    client
        .send(&start(
            Some("two"),
            Dialect::OpenAi,
            "openai/text_basic",
            true,
        ))
        .await;
    let (stream, code, message) = client.error(&mut streams).await;
    assert_eq!(
        (stream.as_deref(), code),
        (Some("two"), ErrorCode::TooManyStreams)
    );
    assert!(message.contains("max_streams"), "{message}");
    streams.until_ended(&mut client, 1).await;
    assert_whole(streams.of("one"), "one");
    // Its place is free again.
    client
        .send(&start(
            Some("three"),
            Dialect::OpenAi,
            "openai/text_basic",
            true,
        ))
        .await;
    streams.until_ended(&mut client, 2).await;
    assert_whole(streams.of("three"), "three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_upgrade_request() {
    let h = gw::start_with(|config| {
        for provider in config.providers.values_mut() {
            provider.pass_through_client_key = true;
        }
    })
    .await;
    let mut client = connect_to(
        h.gateway,
        None,
        &[("authorization", "Bearer sk-ws-client-1")],
    )
    .await;
    let mut streams = Streams::default();
    client
        .send(&start(
            Some("keyed"),
            Dialect::OpenAi,
            "openai/text_basic",
            true,
        ))
        .await;
    streams.until_ended(&mut client, 1).await;
    let request = h.replay.requests().pop().unwrap();
    assert_eq!(
        request.header("authorization"),
        Some("Bearer sk-ws-client-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_with_4000() {
    const IDLE_MS: u64 = 1500;
    let h = gw::start_with(|config| config.streams.websocket.idle_timeout_ms = IDLE_MS).await;
    let mut client = connect(&h, None).await;
    // Talking keeps it open past the timeout: a ping every 50 ms for twice the timeout. A
    // stall of the whole 1.5 s between two pings would be needed to close it early.
    let talking = Instant::now();
    while talking.elapsed() < Duration::from_millis(2 * IDLE_MS) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.send(&ClientFrame::Ping { data: None }).await;
        assert_eq!(client.incoming().await, Incoming::Pong(None));
    }
    // ...silence closes it, never before the timeout (a timer does not fire early).
    let silent = Instant::now();
    assert_eq!(client.close_code().await, Some(4000));
    assert!(
        silent.elapsed() >= Duration::from_millis(IDLE_MS - 100),
        "{:?}",
        silent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_arrive_and_a_client_that_stops_answering_is_closed_with_4001() {
    const HEARTBEAT_MS: u64 = 300;
    let h = gw::start_with(|config| config.streams.websocket.heartbeat_ms = HEARTBEAT_MS).await;
    let mut client = connect(&h, None).await;
    // A reading client answers every ping (tungstenite does it): the connection stays for as
    // many heartbeats as it takes (counted, not timed: a loaded machine sends them late).
    let began = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        match client.recv().await {
            Got::Ping => pings += 1,
            other => panic!("after {pings} pings: {other:?}"),
        }
    }
    assert!(
        began.elapsed() >= Duration::from_millis(3 * HEARTBEAT_MS - 50),
        "4 pings in {:?} at one per {HEARTBEAT_MS} ms",
        began.elapsed()
    );
    // Stop answering: from here the socket is read raw, which answers nothing (a tungstenite
    // reader would answer each ping). 4001 after two heartbeats, however late they come.
    let mut raw = client.ws.into_inner();
    let code = tokio::time::timeout(gw::BOUND, raw_close_code(&mut raw))
        .await
        .expect("no close within the bound");
    assert_eq!(code, Some(4001));
}

/// Reads server frames off the socket without answering any: the code of the first close
/// frame (None if the connection ends before one).
async fn raw_close_code(socket: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<u16> {
    raw_until_close(socket, &mut Vec::new()).await
}

/// Reads server frames off the socket without answering any (and as fast as the socket
/// gives them, decoding nothing), keeping text messages in `texts`: the code of the first
/// close frame (None if the connection ends before one).
async fn raw_until_close(
    socket: &mut (impl tokio::io::AsyncRead + Unpin),
    texts: &mut Vec<String>,
) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut head = [0u8; 2];
        socket.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => u64::from(socket.read_u16().await.ok()?),
            127 => socket.read_u64().await.ok()?,
            n => u64::from(n),
        };
        // Server frames are never masked, nor fragmented (one frame per message).
        assert!(len < 1 << 20, "a {len}-byte frame");
        assert!(head[0] & 0x80 != 0, "a fragmented message");
        let mut payload = vec![0u8; len as usize];
        socket.read_exact(&mut payload).await.ok()?;
        match head[0] & 0x0f {
            0x1 => texts.push(String::from_utf8(payload).unwrap()),
            0x8 => {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
            _ => {}
        }
    }
}

/// A stream's envelopes as the SSE door gives them once it exists (it may still be starting
/// on a WebSocket connection), following it live to its end.
async fn followed_when_started(h: &gw::Harness, id: &str) -> Vec<Envelope> {
    let deadline = Instant::now() + gw::BOUND;
    loop {
        let status = h
            .client
            .head(h.url(&format!("/v1/streams/{id}")))
            .send()
            .await
            .unwrap()
            .status();
        if status.is_success() {
            return replayed(h, id).await;
        }
        assert!(Instant::now() < deadline, "{id} never started: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that stops reading while the gateway has megabytes for it: once its socket takes
/// no write for `write_timeout_ms`, the gateway closes it with 4002 (the close frame goes
/// out when the client reads again within the close grace), a `detach: false` stream of it
/// is cancelled, and the detached one stays whole in the hub: a new connection resumes it
/// right after the last event the slow client read. Meanwhile another client on the same
/// gateway streams a whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_4002_and_its_stream_resumes_elsewhere() {
    // A probe that would take 15 s (300 frames, 50 ms apart) unless cancelled by the close.
    const PROBE: &str = "openai/drip=50:text_long_obfuscation";
    let h = gw::start_with(|config| {
        config.streams.websocket.write_timeout_ms = 300;
        config.streams.websocket.buffer_events = 8;
    })
    .await;
    // ~8 MiB of events: more than the kernel buffers of a loopback connection take.
    h.replay.insert_fixture(
        Dialect::OpenAi,
        "megabytes",
        openai_deltas((0..8000).map(|i| format!("{i:06} {} ", "streamgate ".repeat(93)))),
    );
    let mut slow = connect_with_receive_buffer(h.gateway, 4096, None).await;
    slow.send(&start(
        Some("big"),
        Dialect::OpenAi,
        "openai/megabytes",
        true,
    ))
    .await;
    slow.send(&start(Some("probe"), Dialect::OpenAi, PROBE, false))
        .await;

    // Another client keeps getting whole answers meanwhile.
    let mut other = connect(&h, Some("streamgate.v1+zstd")).await;
    other
        .send(&start(Some("meanwhile"), Dialect::OpenAi, LONG, true))
        .await;
    let mut theirs = Streams::default();
    theirs.until_ended(&mut other, 1).await;
    assert_whole(theirs.of("meanwhile"), "meanwhile");
    assert_eq!(
        differences_from_recording(LONG, theirs.of("meanwhile")),
        Vec::<String>::new()
    );

    // The probe ends cancelled long before its 15 s: the slow connection was closed.
    let probe = followed_when_started(&h, "probe").await;
    assert_eq!(error_code_of(&probe).as_deref(), Some("cancelled"));
    assert!(probe.len() < recorded(PROBE).len(), "cut short");

    // Reading again, raw and fast (the close frame waits at most 2 s for the client to take
    // what is buffered before it): what was in the buffers, then the close frame.
    let mut texts = Vec::new();
    let mut raw = tokio::io::BufReader::with_capacity(64 << 10, slow.ws.into_inner());
    let code = tokio::time::timeout(gw::BOUND, raw_until_close(&mut raw, &mut texts))
        .await
        .expect("no close within the bound");
    let mut read = Streams::default();
    for text in texts {
        let incoming = slow.decoder.decode(streamgate::ws::Message::Text(text));
        if let Some(incoming) = incoming.unwrap() {
            read.take(incoming);
        }
    }
    assert_eq!(code, Some(4002), "closed as a slow consumer");
    let mut first = read.events.remove("big").unwrap_or_default();
    assert!(
        !first
            .iter()
            .any(|e| matches!(e.event, AgentEvent::StreamEnd(_))),
        "the slow client got all of it: nothing was held back"
    );

    // The stream went on in the hub; a new connection gets exactly the rest.
    let after = first.last().map(|e| e.seq);
    let mut client = connect(&h, Some("streamgate.v1+lz4")).await;
    client
        .send(&ClientFrame::Resume {
            stream: "big".into(),
            after,
        })
        .await;
    let mut rest = Streams::default();
    rest.until_ended(&mut client, 1).await;
    let rest = rest.events.remove("big").unwrap();
    assert_eq!(rest[0].seq, after.map_or(0, |s| s + 1), "exactly the rest");
    first.extend(rest);
    assert_whole(&first, "big");
    assert!(first.len() > 8000, "{} events for 8000 deltas", first.len());
    assert_eq!(first, replayed(&h, "big").await, "what the hub kept");
}

/// A client flooding WebSocket pings and `{"op":"ping"}` frames while reading: the answers
/// (tungstenite's pongs and `pong` frames together) stay within the configured rate, counted
/// over the time the client measured (the gateway cannot have read a ping before the first
/// was sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_answered_at_most_at_the_configured_rate() {
    const RATE: u32 = 5;
    const FLOOD: Duration = Duration::from_secs(2);
    let h = gw::start_with(|config| config.streams.websocket.max_pings_per_second = RATE).await;
    let client = connect(&h, None).await;
    let (mut tx, mut rx) = client.ws.split();
    let began = Instant::now();
    let flood = tokio::spawn(async move {
        let op_ping = to_tungstenite(encode_client_frame(
            Compression::None,
            &ClientFrame::Ping { data: None },
        ));
        let mut sent = 0u64;
        while began.elapsed() < FLOOD {
            let ping = if sent.is_multiple_of(2) {
                Message::Ping(Default::default())
            } else {
                op_ping.clone()
            };
            // A send that waits: the gateway stopped reading, the kernel buffers are full.
            if let Ok(result) = tokio::time::timeout(Duration::from_millis(50), tx.send(ping)).await
            {
                result.unwrap();
                sent += 1;
            }
        }
        sent
    });
    let mut pongs = 0u64;
    loop {
        let left = FLOOD.saturating_sub(began.elapsed());
        let Ok(next) = tokio::time::timeout(left, rx.next()).await else {
            break;
        };
        match next.unwrap().unwrap() {
            Message::Pong(_) => pongs += 1,
            Message::Text(text) if text.as_str().starts_with(r#"{"op":"pong""#) => pongs += 1,
            Message::Ping(_) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let sent = flood.await.unwrap();
    // The burst, the ping read before each wait, then the rate.
    let bound = f64::from(RATE) + 1.0 + f64::from(RATE) * elapsed;
    assert!(pongs >= 1, "no ping answered at all");
    assert!(
        pongs as f64 <= bound,
        "{pongs} answers in {elapsed:.2} s at {RATE}/s (bound {bound:.1})"
    );
    assert!(
        sent as f64 > 4.0 * bound,
        "only {sent} pings sent: not a flood"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocols_follow_the_clients_order_and_unknown_ones_are_refused() {
    let h = gw::start().await;
    // connect() checks that the first name we speak was chosen.
    let client = connect(&h, Some("chat, streamgate.v1+gzip, streamgate.v1+zstd")).await;
    assert_eq!(client.c, Compression::Gzip);
    let client = connect(&h, Some("streamgate.v1+zstd,streamgate.v1+gzip")).await;
    assert_eq!(client.c, Compression::Zstd);
    // No offer: plain streamgate.v1, no subprotocol in the answer (checked by connect()).
    let mut client = connect(&h, None).await;
    client.send(&ClientFrame::Ping { data: None }).await;
    assert_eq!(client.incoming().await, Incoming::Pong(None));

    let request = upgrade_request(h.gateway, Some("streamgate.v2, chat"), &[]);
    let Err(tungstenite::Error::Http(response)) = tokio_tungstenite::connect_async(request).await
    else {
        panic!("an offer of nothing we speak must be refused");
    };
    assert_eq!(response.status(), 400);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["code"], "websocket_upgrade_refused", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("streamgate.v2") && message.contains("streamgate.v1+zstd"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_with_1001() {
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let journal = tempfile::tempdir().unwrap();
    let mut config = replay.config();
    config.streams.journal.dir = journal.path().to_owned();
    let (addr, stop) = gw::serve_gateway(config).await;
    let mut client = connect_to(addr, Some("streamgate.v1+zstd"), &[]).await;
    client.send(&ClientFrame::Ping { data: None }).await;
    assert_eq!(client.incoming().await, Incoming::Pong(None));
    stop.send(()).unwrap();
    assert_eq!(client.close_code().await, Some(1001));
}

/// An HTTP/1.1 request written by hand, so that every generated id reaches the gateway as
/// the path says it (a URL library would resolve `.` and `..` as dot segments): its status.
async fn raw_status(addr: SocketAddr, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 256 {
        let n = tokio::time::timeout(gw::BOUND, socket.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "connection closed before the status line");
        head.push(byte[0]);
    }
    let line = String::from_utf8(head).unwrap();
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// `/v1/streams/{id}` with every byte of `id` but letters and digits percent-encoded.
fn stream_path(id: &str) -> String {
    let mut path = String::from("/v1/streams/");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// Stream ids near the rule and far from it: valid ones, valid ones with one character of
/// another kind inserted, printable ASCII, any Unicode, and lengths around 128.
fn generated_ids(cases: usize) -> Vec<String> {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};
    let valid = "[A-Za-z0-9._:\\-]{1,12}";
    let strategy = proptest::prop_oneof![
        valid.prop_map(String::from),
        (valid, "[^A-Za-z0-9._:\\-]", valid).prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        "[ -~]{0,10}".prop_map(String::from),
        "\\PC{1,4}".prop_map(String::from),
        (127usize..=129, "[A-Za-z0-9_]").prop_map(|(n, c)| c.repeat(n)),
    ];
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    // The edges by name: dot segments, the character `start` used to refuse, a gateway id,
    // whitespace around an id, and an empty one.
    let mut ids: Vec<String> = [".", "..", "_", "st_19a2b3c4d5e0001", " pad ", ""]
        .map(String::from)
        .to_vec();
    while ids.len() < cases {
        let id = strategy.new_tree(&mut runner).unwrap().current();
        // Each case is its own stream: a repeat would be a duplicate, not an id question.
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Issue #9 point 13: one rule for stream ids, and every door that takes one agrees with it.
/// For generated ids, each door either refuses the id as such (HTTP 400 `invalid_stream_id`,
/// WebSocket `malformed_frame`), exactly when `stream_id::is_valid` refuses it, or does its
/// real work: unknown (404, `unknown_stream`) before the stream exists, started by
/// `POST /v1/streams` (half of the ids) or WebSocket `start` (the other half), found by
/// `GET`/`DELETE`, and a duplicate for the other starting door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_agrees_with_the_stream_id_rule() {
    let h = gw::start().await;
    let model = "anthropic/text_simple";
    let ids = generated_ids(48);
    assert!(ids.iter().any(|id| streamgate::stream_id::is_valid(id)));
    assert!(ids.iter().any(|id| !streamgate::stream_id::is_valid(id)));
    assert!(
        ids.iter()
            .any(|id| id.contains('_') && streamgate::stream_id::is_valid(id))
    );
    for (case, id) in ids.iter().enumerate() {
        let valid = streamgate::stream_id::is_valid(id);
        let path = stream_path(id);
        let http_refusal = |status: u16| if valid { status } else { 400 };
        // An empty path segment is no stream path at all (`/v1/streams/` has no route).
        let by_path = async |method: &str, expected_ok: u16| {
            let expected = if id.is_empty() {
                404
            } else {
                http_refusal(expected_ok)
            };
            let status = raw_status(h.gateway, method, &path).await;
            assert_eq!(status, expected, "{method} {id:?}");
        };
        by_path("GET", 404).await;
        by_path("DELETE", 404).await;
        let mut client = connect(&h, Some("streamgate.v1")).await;
        let mut streams = Streams::default();
        let ws_refusal = |code: ErrorCode| {
            if valid {
                code
            } else {
                ErrorCode::MalformedFrame
            }
        };
        for frame in [
            json!({"op": "resume", "stream": id}),
            json!({"op": "cancel", "stream": id}),
        ] {
            client
                .send_raw(Message::Text(frame.to_string().into()))
                .await;
            let (_, code, message) = client.error(&mut streams).await;
            assert_eq!(
                code,
                ws_refusal(ErrorCode::UnknownStream),
                "{frame}: {message}"
            );
        }

        // A header value cannot carry control characters, and HTTP drops whitespace around
        // it: such ids are checked at the WebSocket door only.
        let header = http::HeaderValue::from_bytes(id.as_bytes())
            .ok()
            .filter(|_| id.trim_matches([' ', '\t']) == id);
        let post = async |expected_ok: u16| {
            let Some(header) = header.clone() else { return };
            let response = h
                .client
                .post(h.url("/v1/streams"))
                .header("streamgate-dialect", "openai")
                .header("streamgate-stream-id", header)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&chat_body(Dialect::OpenAi, model, true)).unwrap())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert_eq!(status, http_refusal(expected_ok), "POST {id:?}");
            if !valid {
                let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
                assert_eq!(body["error"]["code"], "invalid_stream_id", "{body}");
            } else if status == 200 {
                assert_eq!(gw::stream_id(&response), *id);
            }
        };
        let ws_start = async |client: &mut Client, streams: &mut Streams, expect_started: bool| {
            client
                .send(&start(Some(id), Dialect::Anthropic, model, true))
                .await;
            if valid && expect_started {
                let (stream, echoed) = client.started(streams).await;
                assert_eq!(
                    (stream.as_str(), echoed.as_deref()),
                    (id.as_str(), Some(id.as_str()))
                );
            } else {
                let (_, code, message) = client.error(streams).await;
                assert_eq!(
                    code,
                    ws_refusal(ErrorCode::DuplicateStream),
                    "start {id:?}: {message}"
                );
            }
        };
        let by_post = case % 2 == 0 && header.is_some();
        if by_post {
            post(200).await;
            ws_start(&mut client, &mut streams, false).await;
        } else {
            ws_start(&mut client, &mut streams, true).await;
            post(409).await;
        }
        by_path("GET", 200).await;
        by_path("DELETE", 200).await;
    }
}

/// Issue #9 point 8: the original design's `[streaming]` block, written as it was (inline
/// tables), starts a gateway, and each of its keys shows in what a client sees: the offered
/// compression in the upgrade, the chunk size in every message's size, the buffer size in
/// `/admin/streams`, the retry policy in the attempts the upstream receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_streaming_block_starts_a_gateway_and_every_key_acts() {
    const CHUNK: usize = 1024;
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let journal = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        [providers.openai]
        dialect = "openai"
        base_url = "{url}/v1"
        [providers.anthropic]
        dialect = "anthropic"
        base_url = "{url}"
        [streams.journal]
        dir = {dir:?}

        [streaming]
        bufferSize = 64
        chunkSize = {CHUNK}
        compression = ["gzip", "zstd"]
        retryPolicy = {{ maxAttempts = 2, backoffMs = 50 }}
        reconnect = {{ maxAttempts = 4, initialBackoff = 200, maxBackoff = 3000, jitter = 0.2 }}
        "#,
        url = replay.url(),
        dir = journal.path().display().to_string(),
    );
    let config = streamgate::config::Config::parse(&text).unwrap();
    let (addr, _stop) = gw::serve_gateway(config).await;
    let http = gw::client();

    let admin: Value = serde_json::from_slice(
        &http
            .get(format!("http://{addr}/admin/streams"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        admin["websocket"],
        json!({"buffer_events": 64, "chunk_size": CHUNK, "compression": ["zstd", "gzip"]})
    );

    // compression: only the offered modes are negotiated; a client that cannot speak one of
    // them (plain text, lz4, or no subprotocol at all) is refused.
    for offer in [Some("streamgate.v1"), Some("streamgate.v1+lz4"), None] {
        let request = upgrade_request(addr, offer, &[]);
        let Err(tungstenite::Error::Http(response)) =
            tokio_tungstenite::connect_async(request).await
        else {
            panic!("{offer:?} must be refused: the gateway offers only gzip and zstd");
        };
        assert_eq!(response.status(), 400, "{offer:?}");
        let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("streamgate.v1+zstd, streamgate.v1+gzip"),
            "{message}"
        );
    }
    for (offer, answer) in [
        (
            "streamgate.v1+lz4, streamgate.v1+zstd",
            "streamgate.v1+zstd",
        ),
        ("streamgate.v1, streamgate.v1+gzip", "streamgate.v1+gzip"),
    ] {
        let request = upgrade_request(addr, Some(offer), &[]);
        let (_ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        let answered = response.headers().get("sec-websocket-protocol").unwrap();
        assert_eq!(answered, answer, "{offer}");
    }

    // chunkSize: every message, inflated, is at most CHUNK bytes, and events of ~40 KB come
    // as shards that reassemble into the recording.
    let mut client = connect_to(addr, Some("streamgate.v1+gzip"), &[]).await;
    assert_eq!(client.c, Compression::Gzip);
    let model = "anthropic/web_search_citations";
    client
        .send(&start(Some("seed"), Dialect::Anthropic, model, true))
        .await;
    let mut events = Vec::new();
    let mut messages = 0;
    loop {
        let message = tokio::time::timeout(gw::BOUND, client.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let data = match message {
            Message::Text(t) => streamgate::ws::Message::Text(t.as_str().to_owned()),
            Message::Binary(b) => streamgate::ws::Message::Binary(b.to_vec()),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        };
        let inflated = match &data {
            streamgate::ws::Message::Text(t) => t.len(),
            streamgate::ws::Message::Binary(b) => {
                decompress(Compression::Gzip, b, 1 << 20).unwrap().len()
            }
        };
        assert!(inflated <= CHUNK, "a message of {inflated} bytes");
        messages += 1;
        match client.decoder.decode(data).unwrap() {
            None => client.shards += 1,
            Some(Incoming::Started { stream, .. }) => assert_eq!(stream, "seed"),
            Some(Incoming::Event(envelope)) => {
                let end = matches!(envelope.event, AgentEvent::StreamEnd(_));
                events.push(envelope);
                if end {
                    break;
                }
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_whole(&events, "seed");
    assert_eq!(
        differences_from_recording(model, &events),
        Vec::<String>::new()
    );
    assert!(
        client.shards > 40,
        "{} shards in {messages} messages",
        client.shards
    );

    // retryPolicy: maxAttempts = 2 attempts on a route that always answers 503.
    let failing = "openai/status=503:text_basic";
    let response = http
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&chat_body(Dialect::OpenAi, failing, false)).unwrap())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    let attempts = replay
        .requests()
        .iter()
        .filter(|r| r.body["model"] == "status=503:text_basic")
        .count();
    assert_eq!(attempts, 2);
}
