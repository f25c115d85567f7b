//! WebSocket door benchmark (not a test): what `GET /v1/ws` costs in memory per idle
//! connection and per active stream, and events/s and bytes on the wire per compression mode
//! on the largest recordings.
//!
//!     cargo build --release
//!     cargo bench --bench ws                        # 9990 idle, 1000 active, 4 modes
//!     cargo bench --bench ws -- --idle 2000 --active 200 --streams 40
//!
//! It starts `target/release/streamgate demo --listen 127.0.0.1:PORT --json` as a child (the
//! gateway plus its replay upstream in one process, journal in a temporary directory), then:
//! 1. **Idle connections**: opens `--idle` WebSocket connections (`streamgate.v1`) that only
//!    answer the gateway's pings, and reads the gateway's resident memory (VmRSS) before and
//!    after: bytes per idle connection, and the total against the 200 MiB target.
//! 2. **Active streams**: on 10 more connections, starts `--active` streams of a slow
//!    recording (one frame every 500 ms, so they stay live) and reads VmRSS again: bytes per
//!    active stream (hub entry, journal, generation task, upstream call, connection queue).
//! 3. **Throughput per compression mode**: for none, lz4, zstd and gzip, one connection starts
//!    `--streams` streams of the largest recordings at once (no delay) and reads every event
//!    to its `stream.end` with the reference decoder; prints events/s, wire bytes per event
//!    (WebSocket payloads, 2–4 bytes of frame header not counted) and the gateway's CPU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use streamgate::ws::{ClientDecoder, ClientFrame, Compression, DecoderLimits, Incoming};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The largest recordings, by events and by bytes per event.
const BIG: [&str; 4] = [
    "anthropic/pause_turn_web_search_long",
    "openai/text_long_obfuscation",
    "anthropic/web_search_citations",
    "openai/json_object_long",
];

struct Args {
    idle: usize,
    active: usize,
    streams: usize,
    binary: PathBuf,
}

fn args() -> Res<Args> {
    let mut a = Args {
        // With the active phase's 10 connections, the gateway's default `max_connections`
        // (10,000): one more would be refused with 503.
        idle: 9_990,
        active: 1_000,
        streams: 100,
        binary: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/streamgate"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--idle" => a.idle = value()?.parse()?,
            "--active" => a.active = value()?.parse()?,
            "--streams" => a.streams = value()?.parse()?,
            "--gateway" => a.binary = PathBuf::from(value()?),
            _ => {} // cargo bench's own flags
        }
    }
    Ok(a)
}

struct Demo {
    child: Child,
    url: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo(binary: &PathBuf) -> Res<Demo> {
    if !binary.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release`",
            binary.display()
        )
        .into());
    }
    let mut child = Command::new(binary)
        .args(["demo", "--json", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?),
        &mut line,
    )?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    let url = v["gateway"].as_str().ok_or("no gateway url")?.to_owned();
    Ok(Demo { child, url })
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / rustix::param::clock_ticks_per_second() as f64
}

fn raise_fd_limit(want: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.unwrap_or(u64::MAX) < want {
        limit.current = Some(limit.maximum.map_or(want, |m| want.min(m)));
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, compression: Compression) -> Res<Socket> {
    connect_from(url, compression, std::net::Ipv4Addr::LOCALHOST).await
}

/// A connection from `source` (any 127.x.y.z on Linux): the gateway caps connections per
/// client address (`max_connections_per_address`, 1000 by default), so the idle phase spreads
/// its connections over several.
async fn connect_from(
    url: &str,
    compression: Compression,
    source: std::net::Ipv4Addr,
) -> Res<Socket> {
    let ws = url.replacen("http://", "ws://", 1) + "/v1/ws";
    let mut request = ws.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", compression.subprotocol().parse()?);
    let gateway: std::net::SocketAddr = url.trim_start_matches("http://").parse()?;
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.bind((source, 0).into())?;
    let tcp = tcp.connect(gateway).await?;
    let (socket, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await?;
    Ok(socket)
}

fn to_ws(message: streamgate::ws::Message) -> WsMessage {
    match message {
        streamgate::ws::Message::Text(t) => WsMessage::text(t),
        streamgate::ws::Message::Binary(b) => WsMessage::binary(b),
    }
}

fn start_frame(model: &str) -> ClientFrame {
    ClientFrame::Start {
        id: None,
        dialect: Some(providers::Dialect::OpenAi),
        request: serde_json::json!({
            "model": model, "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
        }),
        detach: true,
    }
}

/// Phase 1: idle connections that only answer pings. Returns them (to keep them open).
async fn idle(url: &str, n: usize) -> Res<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(n);
    let mut opened = 0;
    while opened < n {
        let batch = (n - opened).min(250);
        let mut pending = Vec::with_capacity(batch);
        for i in opened..opened + batch {
            // 500 per address, under the default cap of 1000.
            let source = std::net::Ipv4Addr::new(127, 0, 1 + (i / 500) as u8, 1);
            pending.push(connect_from(url, Compression::None, source));
        }
        for socket in futures_util::future::join_all(pending).await {
            let mut socket = socket?;
            handles.push(tokio::spawn(async move {
                // Reading answers the gateway's pings (tungstenite queues the pong).
                while let Some(Ok(_)) = socket.next().await {}
            }));
        }
        opened += batch;
    }
    Ok(handles)
}

/// Phase 2: `n` live streams over 10 connections.
async fn active(url: &str, n: usize) -> Res<Vec<tokio::task::JoinHandle<usize>>> {
    let mut handles = Vec::new();
    let per = n.div_ceil(10);
    for c in 0..10 {
        let count = per.min(n.saturating_sub(c * per));
        if count == 0 {
            break;
        }
        let mut socket = connect(url, Compression::None).await?;
        for _ in 0..count {
            let frame = start_frame("openai/drip=500:text_long_obfuscation");
            socket
                .send(to_ws(streamgate::ws::encode_client_frame(
                    Compression::None,
                    &frame,
                )))
                .await?;
        }
        handles.push(tokio::spawn(async move {
            let mut started = 0;
            while let Some(Ok(m)) = socket.next().await {
                if let WsMessage::Text(t) = &m
                    && t.as_str().contains("\"op\":\"started\"")
                {
                    started += 1;
                }
            }
            started
        }));
    }
    Ok(handles)
}

struct Throughput {
    events: u64,
    wire_bytes: u64,
    json_bytes: u64,
    secs: f64,
    cpu: f64,
}

/// Phase 3: `streams` streams of the big recordings on one connection, read to their ends.
async fn throughput(url: &str, pid: u32, c: Compression, streams: usize) -> Res<Throughput> {
    let mut socket = connect(url, c).await?;
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    for i in 0..streams {
        let frame = start_frame(BIG[i % BIG.len()]);
        socket
            .send(to_ws(streamgate::ws::encode_client_frame(c, &frame)))
            .await?;
    }
    let mut decoder = ClientDecoder::new(c, DecoderLimits::default());
    let (mut events, mut wire, mut json, mut ended) = (0u64, 0u64, 0u64, 0usize);
    while ended < streams {
        let m = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await?
            .ok_or("connection closed")??;
        let message = match m {
            WsMessage::Text(t) => streamgate::ws::Message::Text(t.as_str().to_owned()),
            WsMessage::Binary(b) => streamgate::ws::Message::Binary(b.to_vec()),
            _ => continue,
        };
        wire += message.len() as u64;
        match decoder.decode(message)? {
            Some(Incoming::Event(envelope)) => {
                events += 1;
                json += serde_json::to_vec(&envelope)?.len() as u64;
                if matches!(envelope.event, providers::AgentEvent::StreamEnd(_)) {
                    ended += 1;
                }
            }
            Some(Incoming::Error { code, message, .. }) => {
                return Err(format!("error frame {code:?}: {message}").into());
            }
            _ => {}
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(Throughput {
        events,
        wire_bytes: wire,
        json_bytes: json,
        secs,
        cpu: cpu_seconds(pid) - cpu0,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ws bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Res<()> {
    let args = args()?;
    raise_fd_limit((args.idle as u64) * 2 + 4096);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let demo = start_demo(&args.binary)?;
        let pid = demo.child.id();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let base = status_kib(pid, "VmRSS");
        println!("gateway (demo) pid {pid}, VmRSS at start {:.1} MiB", base / 1024.0);

        let t = Instant::now();
        let idle_conns = idle(&demo.url, args.idle).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_idle = status_kib(pid, "VmRSS");
        println!(
            "idle: {} connections open in {:.1} s; VmRSS {:.1} MiB ({:+.1} MiB, {:.1} KiB per connection); target: under 200 MiB -> {}",
            idle_conns.len(),
            t.elapsed().as_secs_f64(),
            after_idle / 1024.0,
            (after_idle - base) / 1024.0,
            (after_idle - base) / args.idle.max(1) as f64,
            if after_idle / 1024.0 < 200.0 { "met" } else { "NOT met" }
        );

        let active_conns = active(&demo.url, args.active).await?;
        // Let every stream open its upstream call and send a few frames.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after_active = status_kib(pid, "VmRSS");
        println!(
            "active: {} live streams on 10 connections; VmRSS {:.1} MiB ({:+.1} MiB, {:.1} KiB per stream)",
            args.active,
            after_active / 1024.0,
            (after_active - after_idle) / 1024.0,
            (after_active - after_idle) / args.active.max(1) as f64
        );
        for h in active_conns {
            h.abort();
        }
        for h in idle_conns {
            h.abort();
        }
        drop(demo);

        println!(
            "\nthroughput: {} streams of {} at once on one connection, per mode",
            args.streams,
            BIG.join(", ")
        );
        println!("| mode | events | events/s | JSON bytes/event | wire bytes/event | wire/JSON | gateway CPU s |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for c in Compression::ALL {
            let demo = start_demo(&args.binary)?;
            let pid = demo.child.id();
            let r = throughput(&demo.url, pid, c, args.streams).await?;
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.2} |",
                c.subprotocol(),
                r.events,
                r.events as f64 / r.secs,
                r.json_bytes as f64 / r.events as f64,
                r.wire_bytes as f64 / r.events as f64,
                100.0 * r.wire_bytes as f64 / r.json_bytes as f64,
                r.cpu
            );
        }
        Ok(())
    })
}
