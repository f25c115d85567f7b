//! Gateway load: C concurrent streaming clients issue R requests at a synthetic OpenAI upstream,
//! once directly and once through `streamgate serve`, in the same run, and the two are compared;
//! optionally a third time through nginx, a reference byte-forwarding proxy (`--reference nginx`).
//!
//!     cargo bench --bench load
//!     cargo bench --bench load -- --concurrency 100 --requests 2000 --chunks 50 --delay-ms 0
//!     cargo bench --bench load -- --reference nginx     # needs nginx installed (not in CI)
//!
//! The tool starts, all on 127.0.0.1:
//! - a synthetic OpenAI Chat Completions upstream (hyper, in this process): each answer is a
//!   role chunk, `--chunks` content chunks of one short token each, a finish chunk, a usage
//!   chunk and `data: [DONE]`, every SSE frame its own HTTP body chunk, `--delay-ms` between
//!   frames (0 by default: the gateway's own cost, not a model's pace, bounds the run);
//! - the gateway as a child process (`--gateway`, default cargo's built `streamgate`), with a
//!   temporary config whose `openai` provider points at that upstream; it is killed on exit,
//!   panics included;
//! - with `--reference nginx`, nginx as a child process (master + `--reference-workers` workers,
//!   `daemon off`), with a temporary config in the tool's temporary directory that
//!   `proxy_pass`es to the same upstream unbuffered over kept-alive HTTP/1.1 connections. It
//!   does no JSON work, only forwards bytes (de-chunking and re-chunking the HTTP body): a
//!   practical lower bound on what a proxy costs on this machine. Also stopped on exit, workers
//!   included. Its requests are the direct phase's (model `synthetic`).
//!
//! Each phase opens C keep-alive connections, sends one unmeasured warm-up request on each
//! (which also fills the gateway's upstream pool), then all C clients take requests from a
//! shared counter until R have been sent. Per request it records the time to first byte (from
//! sending the request to the first SSE body byte) and checks the stream is whole: the content
//! tokens all arrived in order, a `stop` finish, `data: [DONE]` last. It prints TTFB p50/p99,
//! streams/s, the proxy's CPU seconds (utime+stime over the measured phase, from /proc; for
//! nginx the master and its workers) and peak RSS (VmHWM; for nginx summed over its
//! processes), and the ratios to direct. The load tool itself (clients and upstream) runs on
//! the same machine and competes with the proxy for CPU; its own CPU seconds are printed too.
//! docs/performance-gateway.md records the figures.
//!
//! Flags (unknown ones, such as cargo's `--bench`, are ignored): `--concurrency N` (500),
//! `--requests N` (5000), `--chunks N` (50), `--delay-ms F` (0), `--warmup N` (1 per client),
//! `--gateway PATH`, `--gateway-log FILTER` (the gateway's RUST_LOG; default `info`, what
//! `serve` logs out of the box), `--quiet-gateway` (add a phase through a second gateway with
//! `[server] metrics = false` and `[log] access = false`: what metrics and access lines cost
//! per stream; `--quiet-config TEXT` replaces those settings, `\n` for a new line, and
//! `--quiet-config ""` makes both gateways alike, which measures the method's own bias),
//! `--pin` (this tool on CPU 0, every proxy on CPU 1, through taskset), `--reference nginx` (add the nginx phase), `--reference-bin
//! PATH` (default `nginx` from PATH, then /usr/sbin, /usr/local/sbin), `--reference-workers N`
//! (2). nginx is needed only with `--reference`; CI never runs this bench.
//!
//! `--state-redis` measures the stream hub instead (docs/performance.md, "Redis backend"): it
//! starts `redis-server` on a free loopback port (`--redis-server PATH`, default from PATH,
//! /usr/bin, /usr/sbin; killed at the end) and two gateways on the same upstream, one with the
//! embedded journal (the default) and one with `[state] backend = "redis"`, and streams through
//! the door that goes through the hub, the native `POST /v1/streams` (SSE Agent Events; each
//! stream checked whole: every token in order, `stream.end` last with reason `stop`). After a
//! direct phase and an unmeasured phase per gateway, the measured phases run embedded, redis,
//! redis, embedded (the order effect of `--quiet-gateway`, cancelled the same way), and the tool
//! prints per gateway the events delivered per second (every event is appended to the hub
//! before a client sees it), the added TTFB p50/p99 against direct (of the Chat Completions
//! request the native door wraps), the gateway's CPU per stream and Redis's own CPU per stream,
//! then Redis's memory and keys. With `--pin`, redis-server shares CPU 1 with the gateways (it
//! is part of what serves the stream), or CPU 0 with this tool with `--redis-cpu 0` (as a
//! Redis on a host of its own takes none of the gateway's CPU). `--quiet-gateway` and `--reference` do not combine with
//! it.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Barrier;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone)]
struct Args {
    concurrency: usize,
    requests: usize,
    chunks: usize,
    delay: Duration,
    warmup: usize,
    gateway: PathBuf,
    gateway_log: String,
    /// `--quiet-gateway`: add a phase through a second gateway with `[server] metrics = false`
    /// and `[log] access = false`, what metrics and access lines cost (docs/performance.md).
    quiet: bool,
    /// `--quiet-config TEXT`: the second gateway's extra `[server]` keys and tables (default
    /// [`QUIET`]); `--quiet-config ""` makes it identical, to measure the method's own bias.
    quiet_config: String,
    /// `--pin`: this tool (clients and upstream) on CPU 0, every proxy on CPU 1 (taskset).
    pin: bool,
    /// `--reference nginx`: add a phase through nginx.
    reference: bool,
    reference_bin: Option<PathBuf>,
    reference_workers: usize,
    /// `--state-redis`: the hub's cost with `[state] backend = "redis"` against the embedded
    /// journal, through the native `POST /v1/streams` door.
    state_redis: bool,
    /// `--redis-server PATH`.
    redis_bin: Option<PathBuf>,
    /// `--redis-cpu N` (with `--pin`): the CPU redis-server runs on: 1 (the default) beside
    /// the gateways, 0 beside this tool, as a Redis on a host of its own would not take the
    /// gateway's CPU.
    redis_cpu: u8,
}

/// The second gateway of `--quiet-gateway`: metrics and access lines off.
const QUIET: &str = "metrics = false\n\n[log]\naccess = false\n";

const USAGE: &str = "cargo bench --bench load -- [--concurrency N] [--requests N] [--chunks N] \
                     [--delay-ms F] [--warmup N] [--gateway PATH] [--gateway-log FILTER] \
                     [--quiet-gateway] [--quiet-config TEXT] [--pin] [--reference nginx] [--reference-bin PATH] \
                     [--reference-workers N] [--state-redis] [--redis-server PATH] [--redis-cpu 0|1]";

impl Args {
    fn parse() -> Res<Args> {
        let mut args = Args {
            concurrency: 500,
            requests: 5000,
            chunks: 50,
            delay: Duration::ZERO,
            warmup: 1,
            gateway: PathBuf::from(env!("CARGO_BIN_EXE_streamgate")),
            gateway_log: "info".to_owned(),
            quiet: false,
            quiet_config: QUIET.to_owned(),
            pin: false,
            reference: false,
            reference_bin: None,
            reference_workers: 2,
            state_redis: false,
            redis_bin: None,
            redis_cpu: 1,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let known = [
                "--concurrency",
                "--requests",
                "--chunks",
                "--delay-ms",
                "--warmup",
                "--gateway",
                "--gateway-log",
                "--reference",
                "--reference-bin",
                "--reference-workers",
                "--quiet-config",
                "--redis-server",
                "--redis-cpu",
            ];
            if name == "--help" || name == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            if name == "--quiet-gateway" {
                args.quiet = true;
                continue;
            }
            if name == "--pin" {
                args.pin = true;
                continue;
            }
            if name == "--state-redis" {
                args.state_redis = true;
                continue;
            }
            if !known.contains(&name.as_str()) {
                continue; // cargo's --bench, filters, anything else
            }
            let value = match inline {
                Some(v) => v,
                None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
            };
            let bad = |e: &dyn std::fmt::Display| format!("{name} {value}: {e}");
            match name.as_str() {
                "--concurrency" => args.concurrency = value.parse().map_err(|e| bad(&e))?,
                "--requests" => args.requests = value.parse().map_err(|e| bad(&e))?,
                "--chunks" => args.chunks = value.parse().map_err(|e| bad(&e))?,
                "--warmup" => args.warmup = value.parse().map_err(|e| bad(&e))?,
                "--delay-ms" => {
                    let ms: f64 = value.parse().map_err(|e| bad(&e))?;
                    if !(0.0..=60_000.0).contains(&ms) {
                        return Err(bad(&"must be between 0 and 60000").into());
                    }
                    args.delay = Duration::from_secs_f64(ms / 1000.0);
                }
                "--gateway" => args.gateway = PathBuf::from(value),
                "--gateway-log" => args.gateway_log = value,
                "--quiet-config" => {
                    args.quiet = true;
                    args.quiet_config = value.replace("\\n", "\n");
                }
                "--reference" if value == "nginx" => args.reference = true,
                "--reference" => return Err(bad(&"the only reference proxy is `nginx`").into()),
                "--reference-bin" => args.reference_bin = Some(PathBuf::from(value)),
                "--redis-server" => args.redis_bin = Some(PathBuf::from(value)),
                "--redis-cpu" => {
                    args.redis_cpu = match value.as_str() {
                        "0" => 0,
                        "1" => 1,
                        _ => return Err("--redis-cpu is 0 or 1".into()),
                    };
                }
                "--reference-workers" => {
                    args.reference_workers = value.parse().map_err(|e| bad(&e))?;
                }
                _ => {}
            }
        }
        if args.concurrency == 0 || args.requests == 0 || args.reference_workers == 0 {
            return Err(
                "--concurrency, --requests and --reference-workers must be at least 1".into(),
            );
        }
        if args.state_redis && (args.quiet || args.reference) {
            return Err(
                "--state-redis does not combine with --quiet-gateway or --reference".into(),
            );
        }
        Ok(args)
    }
}

// ---------------------------------------------------------------------------------------------
// The synthetic OpenAI upstream

const CHUNK_HEAD: &str = r#"{"id":"chatcmpl-LoadSynthetic0000000000000000","object":"chat.completion.chunk","created":1727346171,"model":"synthetic-2024-08-06","system_fingerprint":"fp_0000000000","choices":["#;

/// The frames of one answer, pre-rendered: role, `chunks` content tokens, finish, usage, DONE.
fn answer_frames(chunks: usize) -> Vec<Bytes> {
    let frame = |json: String| Bytes::from(format!("data: {CHUNK_HEAD}{json}\n\n"));
    let mut frames = Vec::with_capacity(chunks + 4);
    frames.push(frame(
        r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#.to_owned(),
    ));
    for i in 0..chunks {
        frames.push(frame(format!(
            r#"{{"index":0,"delta":{{"content":"{}"}},"logprobs":null,"finish_reason":null}}]}}"#,
            token(i)
        )));
    }
    frames.push(frame(
        r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#.to_owned(),
    ));
    frames.push(frame(format!(
        r#"],"usage":{{"prompt_tokens":12,"completion_tokens":{chunks},"total_tokens":{},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#,
        chunks + 12
    )));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    frames
}

/// Content token `i`: a few characters, like a real token.
fn token(i: usize) -> String {
    format!(" tok{i}")
}

/// The synthetic upstream's listen backlog (the kernel caps it at net.core.somaxconn).
const UPSTREAM_BACKLOG: u32 = 4096;

#[derive(Debug)]
struct Upstream {
    frames: Arc<Vec<Bytes>>,
    delay: Duration,
    hits: AtomicU64,
    connections: AtomicU64,
}

async fn start_upstream(frames: Vec<Bytes>, delay: Duration) -> Res<(SocketAddr, Arc<Upstream>)> {
    // Not `TcpListener::bind`: its backlog is 128 (mio's, like std's), and a proxy opening
    // hundreds of upstream connections at once overflows it; dropped SYNs are retried after
    // 1 s, which would show up as 1 s TTFBs.
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(UPSTREAM_BACKLOG)?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Upstream {
        frames: Arc::new(frames),
        delay,
        hits: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    let accept_state = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            accept_state.connections.fetch_add(1, Ordering::Relaxed);
            let state = accept_state.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| upstream_answer(req, state.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok((addr, state))
}

type UpBody = BoxBody<Bytes, Infallible>;

async fn upstream_answer(
    req: Request<Incoming>,
    state: Arc<Upstream>,
) -> Result<Response<UpBody>, Infallible> {
    let post = req.method() == http::Method::POST;
    let streaming = match req.into_body().collect().await {
        Ok(body) => memchr_find(&body.to_bytes(), br#""stream":true"#).is_some(),
        Err(_) => false,
    };
    if !post || !streaming {
        let mut r = Response::new(BoxBody::new(Full::new(Bytes::from_static(
            b"{\"error\":{\"message\":\"the load upstream only streams\",\"type\":\"invalid_request_error\"}}",
        ))));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(r);
    }
    state.hits.fetch_add(1, Ordering::Relaxed);
    let frames = state.frames.clone();
    let delay = state.delay;
    let body = futures_util::stream::unfold(0usize, move |i| {
        let frames = frames.clone();
        async move {
            let frame = frames.get(i)?.clone();
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(frame)), i + 1))
        }
    });
    let mut r = Response::new(BoxBody::new(StreamBody::new(body)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The gateway child

/// Kills the gateway and removes its temporary directory when dropped (panics included).
#[derive(Debug)]
struct Gateway {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    /// A gateway on `upstream`; `extra` is appended to its config file.
    fn spawn(
        binary: &Path,
        upstream: SocketAddr,
        log_filter: &str,
        extra: &str,
        pin: bool,
    ) -> Res<Gateway> {
        if !binary.is_file() {
            return Err(format!(
                "gateway binary {} not found: build it with `cargo build --release` or pass \
                 --gateway PATH",
                binary.display()
            )
            .into());
        }
        let addr = free_port()?;
        // One directory per gateway (config, log, journal): `--quiet-gateway` runs two.
        let dir = tool_dir().join(format!("gateway-{}", addr.port()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("gateway.toml");
        // Each gateway its own journal (two cannot share one), removed with the tool's dir.
        let journal = dir.join("journal");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{addr}\"\n{extra}\n[providers.openai]\ndialect = \"openai\"\n\
                 base_url = \"http://{upstream}/v1\"\n\n[streams.journal]\ndir = {journal:?}\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("gateway.log"))?;
        let child = pinned(binary, pin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(addr.to_string())
            .env("RUST_LOG", log_filter)
            .env_remove("STREAMGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let pid = child.id();
        Ok(Gateway {
            child,
            pid,
            addr,
            dir,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `GET /healthz` answers 200 (10 s at most).
    async fn ready(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("the gateway exited ({status}):\n{}", self.log_tail()).into());
            }
            if healthz(self.addr).await.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the gateway did not answer /healthz within 10 s:\n{}",
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The tool's temporary directory (the gateway's config and log; nginx's in `nginx/`).
fn tool_dir() -> PathBuf {
    std::env::temp_dir().join(format!("streamgate-load-{}", std::process::id()))
}

/// `binary` as a command, run on CPU 1 only when `pin` (through taskset: the proxy then sees
/// one CPU, and tokio and nginx size themselves to it).
fn pinned(binary: &Path, pin: bool) -> Command {
    pinned_on(binary, pin, 1)
}

/// [`pinned`] on `cpu`.
fn pinned_on(binary: &Path, pin: bool, cpu: u8) -> Command {
    if !pin {
        return Command::new(binary);
    }
    let mut command = Command::new("taskset");
    command.args(["-c", &cpu.to_string()]).arg(binary);
    command
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_port() -> Res<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

// ---------------------------------------------------------------------------------------------
// The reference proxy: nginx

/// nginx as a child process: a master (`daemon off`) and its workers. Dropping it stops the
/// master (SIGTERM, then SIGKILL), kills any worker left behind, and removes its directory.
#[derive(Debug)]
struct Nginx {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    dir: PathBuf,
    binary: PathBuf,
    /// Worker pids, as found once the master answers.
    workers: Vec<u32>,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        let signal = |pid: u32, sig: Signal| {
            if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, sig);
            }
        };
        // SIGTERM is nginx's fast shutdown: the master stops its workers and exits.
        signal(self.pid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Workers outlive a killed master: kill those still there (and still nginx).
        for &pid in &self.workers {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "nginx" {
                signal(pid, Signal::KILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    /// `--reference-bin`, else `nginx` on PATH, else in /usr/sbin or /usr/local/sbin.
    fn find(explicit: Option<&Path>) -> Res<PathBuf> {
        find_binary(
            explicit,
            "--reference-bin",
            "nginx",
            &["/usr/sbin", "/usr/local/sbin"],
        )
        .map_err(|e| format!("--reference nginx: {e}").into())
    }

    fn spawn(
        binary: PathBuf,
        upstream: SocketAddr,
        workers: usize,
        clients: usize,
        pin: bool,
    ) -> Res<Nginx> {
        let addr = free_port()?;
        let dir = tool_dir().join("nginx");
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        // Each worker may hold every client connection and as many upstream ones.
        let connections = 4 * clients + 1024;
        let keepalive = clients.max(512);
        let config = format!(
            r#"# benches/load.rs: nginx as a reference byte-forwarding proxy
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {connections};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    tcp_nodelay on;
    keepalive_requests 1000000;
    upstream synthetic {{
        server {upstream};
        keepalive {keepalive};
        keepalive_requests 1000000;
    }}
    server {{
        listen {addr} reuseport;
        location = /healthz {{ return 200 "ok\n"; }}
        location / {{
            proxy_pass http://synthetic;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config)?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let mut prefix = dir.clone().into_os_string();
        prefix.push("/");
        let child = pinned(&binary, pin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let pid = child.id();
        Ok(Nginx {
            child,
            pid,
            addr,
            dir,
            binary,
            workers: Vec::new(),
        })
    }

    fn log_tail(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `GET /healthz` answers 200 and all `workers` worker processes are up (10 s
    /// at most), and records their pids.
    async fn ready(&mut self, workers: usize) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("nginx exited ({status}):\n{}", self.log_tail()).into());
            }
            if healthz(self.addr).await.unwrap_or(false) {
                self.workers = children_of(self.pid);
                if self.workers.len() >= workers {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not answer /healthz with {workers} workers within 10 s:\n{}",
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The master and its workers.
    fn pids(&self) -> Vec<u32> {
        std::iter::once(self.pid)
            .chain(self.workers.iter().copied())
            .collect()
    }
}

/// `explicit` (given with `flag`), else `name` on PATH, else in one of `dirs`.
fn find_binary(explicit: Option<&Path>, flag: &str, name: &str, dirs: &[&str]) -> Res<PathBuf> {
    if let Some(path) = explicit {
        return match path.is_file() {
            true => Ok(path.to_owned()),
            false => Err(format!("{flag} {}: no such file", path.display()).into()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no {name} binary on PATH or in {}; install it (Debian: `apt-get install \
                 {name}`) or pass {flag} PATH",
                dirs.join(", ")
            )
            .into()
        })
}

/// Pids whose parent is `parent` (from /proc/*/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the parenthesized command name: state, then ppid.
            stat.rfind(')').and_then(|at| {
                stat[at + 1..]
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            }) == Some(parent)
        })
        .collect();
    pids.sort_unstable();
    pids
}

async fn healthz(addr: SocketAddr) -> Res<bool> {
    let mut sender = connect(addr).await?;
    let req = Request::get("/healthz")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    Ok(resp.status() == StatusCode::OK)
}

// ---------------------------------------------------------------------------------------------
// /proc

/// utime + stime of `pid` (or this process), in seconds.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) as f64 / hz)
}

/// Machine-wide CPU seconds from /proc/stat, all CPUs: (busy, steal). Busy is user + nice +
/// system + irq + softirq (not idle, iowait or steal).
fn box_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let at = |i: usize| v.get(i).copied().unwrap_or(0) as f64 / hz;
    Some((at(0) + at(1) + at(2) + at(5) + at(6), at(7)))
}

/// A `kB` field of /proc/PID/status (VmHWM, VmRSS), in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Raises the soft open-files limit toward `want` (children inherit it).
fn raise_fd_limit(want: u64) -> String {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return format!("{current}");
    }
    let target = limit.maximum.map_or(want, |max| want.min(max));
    limit.current = Some(target);
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) if target >= want => format!("{target} (raised from {current})"),
        Ok(()) => format!("{target} (raised from {current}; hard limit, below the {want} wanted)"),
        Err(e) => format!("{current} (raising to {want} failed: {e})"),
    }
}

// ---------------------------------------------------------------------------------------------
// The load

#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    path: &'static str,
    /// The native door (`POST /v1/streams`): Agent Events over SSE, checked as such.
    native: bool,
    body: Bytes,
}

#[derive(Debug)]
struct Expected {
    content: String,
}

#[derive(Debug, Default)]
struct WorkerResult {
    ttfb: Vec<Duration>,
    total: Vec<Duration>,
    frames: u64,
    errors: u64,
    warmup_errors: u64,
    first_error: Option<String>,
}

#[derive(Debug)]
struct Phase {
    ttfb: Vec<Duration>,
    total: Vec<Duration>,
    frames_per_stream: f64,
    errors: u64,
    warmup_errors: u64,
    first_error: Option<String>,
    wall: Duration,
    tool_cpu: f64,
    /// utime+stime of the proxy's processes over the phase (none for direct).
    proxy_cpu: Option<f64>,
    /// utime+stime over the phase of further processes serving it (Redis), counted apart.
    also_cpu: Option<f64>,
    /// CPU seconds used on the machine by everything else (other processes, interrupts)
    /// during the phase, and the hypervisor's steal time.
    other_cpu: Option<f64>,
    steal: Option<f64>,
    upstream_hits: u64,
    upstream_connections: u64,
}

impl Phase {
    fn ok(&self) -> usize {
        self.ttfb.len()
    }
    fn streams_per_s(&self) -> f64 {
        self.ok() as f64 / self.wall.as_secs_f64()
    }
    /// CPU microseconds per whole stream.
    fn per_stream_us(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.ok().max(1) as f64
    }
}

/// Sum of utime+stime over `pids`; none if any is gone.
fn cpu_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&p| cpu_seconds(Some(p))).sum()
}

async fn connect(addr: SocketAddr) -> Res<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One streaming request on the worker's keep-alive connection (reopened when closed).
async fn one(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    target: &Target,
    expected: &Expected,
) -> Res<(Duration, Duration, u64)> {
    let s = match sender {
        Some(s) if !s.is_closed() => s,
        _ => sender.insert(connect(target.addr).await?),
    };
    if s.ready().await.is_err() {
        *s = connect(target.addr).await?;
    }
    let mut req = Request::post(target.path)
        .header(header::HOST, target.addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .header(header::AUTHORIZATION, "Bearer sk-load-test");
    if target.native {
        req = req.header("streamgate-dialect", "openai");
    }
    let req = req.body(Full::new(target.body.clone()))?;
    let t0 = Instant::now();
    let result = async {
        let resp = s.send_request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&text)).into());
        }
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut ttfb = None;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data()
                && !data.is_empty()
            {
                ttfb.get_or_insert_with(|| t0.elapsed());
                buf.extend_from_slice(&data);
            }
        }
        let total = t0.elapsed();
        let frames = match target.native {
            true => verify_native(&buf, expected)?,
            false => verify(&buf, expected)?,
        };
        let ttfb = ttfb.ok_or("empty body")?;
        Ok::<_, BoxError>((ttfb, total, frames))
    }
    .await;
    if result.is_err() {
        *sender = None; // the connection may be half-way through a body: start afresh
    }
    result
}

/// Checks an OpenAI SSE body is whole: every content token in order, a `stop` finish, DONE
/// last. Returns the number of `data:` frames.
fn verify(body: &[u8], expected: &Expected) -> Res<u64> {
    let text = std::str::from_utf8(body)?;
    let mut content = String::with_capacity(expected.content.len());
    let mut frames = 0u64;
    let mut last = "";
    let mut stopped = false;
    for block in text.split("\n\n") {
        let Some(data) = block.trim_start().strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        frames += 1;
        last = data;
        if data.contains(r#""finish_reason":"stop""#) {
            stopped = true;
        }
        // Tokens carry no quotes or escapes, so the value ends at the next quote.
        if let Some(at) = data.find(r#""content":""#) {
            let rest = &data[at + 11..];
            if let Some(end) = rest.find('"') {
                content.push_str(&rest[..end]);
            }
        }
    }
    if last != "[DONE]" {
        return Err(format!("stream not terminated by [DONE] (last frame: {last:.200})").into());
    }
    if !stopped {
        return Err("no finish_reason stop".into());
    }
    if content != expected.content {
        return Err(format!(
            "content differs: {} bytes received, {} expected",
            content.len(),
            expected.content.len()
        )
        .into());
    }
    Ok(frames)
}

/// Checks an Agent Event SSE body of the native door is whole: every content token in order in
/// its `text.delta` events, `stream.end` last with reason `stop`. Returns the number of events.
fn verify_native(body: &[u8], expected: &Expected) -> Res<u64> {
    let text = std::str::from_utf8(body)?;
    let mut content = String::with_capacity(expected.content.len());
    let mut events = 0u64;
    let mut last = "";
    for block in text.split("\n\n") {
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
            continue;
        };
        let data = data.trim();
        events += 1;
        last = data;
        // Tokens carry no quotes or escapes, so the value ends at the next quote.
        if data.contains(r#""type":"text.delta""#)
            && let Some(at) = data.find(r#""text":""#)
        {
            let rest = &data[at + 8..];
            if let Some(end) = rest.find('"') {
                content.push_str(&rest[..end]);
            }
        }
    }
    if !(last.contains(r#""type":"stream.end""#) && last.contains(r#""reason":"stop""#)) {
        return Err(
            format!("stream not ended by stream.end, reason stop (last: {last:.200})").into(),
        );
    }
    if content != expected.content {
        return Err(format!(
            "content differs: {} bytes received, {} expected",
            content.len(),
            expected.content.len()
        )
        .into());
    }
    Ok(events)
}

async fn worker(
    target: Arc<Target>,
    expected: Arc<Expected>,
    next: Arc<AtomicUsize>,
    total: usize,
    warmup: usize,
    barrier: Arc<Barrier>,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    let mut sender = None;
    for _ in 0..warmup {
        if let Err(e) = one(&mut sender, &target, &expected).await {
            out.warmup_errors += 1;
            out.first_error
                .get_or_insert_with(|| format!("warm-up: {e}"));
        }
    }
    barrier.wait().await;
    while next.fetch_add(1, Ordering::Relaxed) < total {
        match one(&mut sender, &target, &expected).await {
            Ok((ttfb, all, frames)) => {
                out.ttfb.push(ttfb);
                out.total.push(all);
                out.frames += frames;
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out
}

async fn run_phase(
    args: &Args,
    target: Target,
    expected: Arc<Expected>,
    proxy_pids: &[u32],
    upstream: &Upstream,
) -> Res<Phase> {
    run_phase_with(args, target, expected, proxy_pids, &[], upstream).await
}

/// The phase straight to the synthetic upstream (Chat Completions), which every other phase's
/// added TTFB is measured against.
async fn direct_phase(
    args: &Args,
    up_addr: SocketAddr,
    expected: &Arc<Expected>,
    upstream: &Upstream,
) -> Res<Phase> {
    eprintln!("direct phase ...");
    let target = Target {
        addr: up_addr,
        path: "/v1/chat/completions",
        native: false,
        body: request_body("synthetic"),
    };
    run_phase(args, target, Arc::clone(expected), &[], upstream).await
}

/// [`run_phase`], also measuring the CPU of `also_pids` (apart from the proxy's).
async fn run_phase_with(
    args: &Args,
    target: Target,
    expected: Arc<Expected>,
    proxy_pids: &[u32],
    also_pids: &[u32],
    upstream: &Upstream,
) -> Res<Phase> {
    let target = Arc::new(target);
    // Measured hits = all hits of the phase minus the warm-ups.
    let hits0 = upstream.hits.load(Ordering::Relaxed) + (args.concurrency * args.warmup) as u64;
    let conns0 = upstream.connections.load(Ordering::Relaxed);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(args.concurrency + 1));
    let mut tasks = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        tasks.push(tokio::spawn(worker(
            target.clone(),
            expected.clone(),
            next.clone(),
            args.requests,
            args.warmup,
            barrier.clone(),
        )));
    }
    barrier.wait().await;
    let proxy0 = cpu_of(proxy_pids);
    let also0 = cpu_of(also_pids);
    let tool0 = cpu_seconds(None).unwrap_or(0.0);
    let box0 = box_cpu();
    let start = Instant::now();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await?);
    }
    let wall = start.elapsed();
    let box1 = box_cpu();
    let tool_cpu = cpu_seconds(None).unwrap_or(0.0) - tool0;
    let proxy_cpu = match (proxy0, cpu_of(proxy_pids)) {
        (Some(a), Some(b)) if !proxy_pids.is_empty() => Some(b - a),
        _ => None,
    };
    let also_cpu = match (also0, cpu_of(also_pids)) {
        (Some(a), Some(b)) if !also_pids.is_empty() => Some(b - a),
        _ => None,
    };
    let (other_cpu, steal) = match (box0, box1) {
        (Some((b0, s0)), Some((b1, s1))) => (
            Some(
                (b1 - b0 - tool_cpu - proxy_cpu.unwrap_or(0.0) - also_cpu.unwrap_or(0.0)).max(0.0),
            ),
            Some(s1 - s0),
        ),
        _ => (None, None),
    };
    let mut phase = Phase {
        ttfb: Vec::with_capacity(args.requests),
        total: Vec::with_capacity(args.requests),
        frames_per_stream: 0.0,
        errors: 0,
        warmup_errors: 0,
        first_error: None,
        wall,
        tool_cpu,
        proxy_cpu,
        also_cpu,
        other_cpu,
        steal,
        upstream_hits: upstream.hits.load(Ordering::Relaxed).saturating_sub(hits0),
        upstream_connections: upstream.connections.load(Ordering::Relaxed) - conns0,
    };
    let mut frames = 0u64;
    for r in results {
        phase.ttfb.extend(r.ttfb);
        phase.total.extend(r.total);
        phase.errors += r.errors;
        phase.warmup_errors += r.warmup_errors;
        frames += r.frames;
        if phase.first_error.is_none() {
            phase.first_error = r.first_error;
        }
    }
    phase.ttfb.sort_unstable();
    phase.total.sort_unstable();
    phase.frames_per_stream = frames as f64 / phase.ok().max(1) as f64;
    Ok(phase)
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn request_body(model: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"Write a short paragraph about load testing."}}]}}"#
    ))
}

// ---------------------------------------------------------------------------------------------
// Main

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Res<bool> {
    let args = Args::parse()?;
    if args.pin {
        // Before the runtime exists: every thread made later inherits CPU 0.
        let me = std::process::id().to_string();
        let ok = Command::new("taskset")
            .args(["-p", "-c", "0", &me])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("--pin needs taskset (util-linux): {e}"))?;
        if !ok.success() {
            return Err("--pin: taskset could not pin this process to CPU 0".into());
        }
    }
    // Per side: C client sockets + C upstream sockets in this process, C + C in the gateway.
    let fds = raise_fd_limit(4 * args.concurrency as u64 + 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.state_redis {
        true => runtime.block_on(run_state_redis(args, fds)),
        false => runtime.block_on(run_async(args, fds)),
    }
}

async fn run_async(args: Args, fds: String) -> Res<bool> {
    let frames = answer_frames(args.chunks);
    let frame_bytes: usize = frames.iter().map(Bytes::len).sum();
    let expected = Arc::new(Expected {
        content: (0..args.chunks).map(token).collect(),
    });
    let (up_addr, upstream) = start_upstream(frames.clone(), args.delay).await?;
    let mut gateway = Gateway::spawn(&args.gateway, up_addr, &args.gateway_log, "", args.pin)?;
    gateway.ready().await?;
    let idle_rss = status_mib(gateway.pid, "VmRSS");
    // `[log]` follows the `[server]` table's keys, so the server key goes first.
    let mut quiet = match args.quiet {
        true => {
            let extra = &args.quiet_config;
            let mut q = Gateway::spawn(&args.gateway, up_addr, &args.gateway_log, extra, args.pin)?;
            q.ready().await?;
            Some(q)
        }
        false => None,
    };
    let quiet_idle_rss = quiet.as_ref().and_then(|q| status_mib(q.pid, "VmRSS"));
    // Started up front so that a missing or broken nginx fails before the long phases.
    let mut nginx = match args.reference {
        true => {
            let binary = Nginx::find(args.reference_bin.as_deref())?;
            let mut n = Nginx::spawn(
                binary,
                up_addr,
                args.reference_workers,
                args.concurrency,
                args.pin,
            )?;
            n.ready(args.reference_workers).await?;
            Some(n)
        }
        false => None,
    };
    let nginx_idle_rss = nginx.as_ref().and_then(|n| rss_sum(&n.pids(), "VmRSS"));

    let cpus = cpu_count();
    println!("{}", describe_load(&args, frames.len(), frame_bytes));
    println!(
        "machine: {cpus} CPUs ({}); open-files limit {fds}; gateway {} (pid {}, RUST_LOG={})",
        cpu_model(),
        args.gateway.display(),
        gateway.pid,
        args.gateway_log
    );
    if let Some(n) = &nginx {
        println!(
            "reference: {} ({}), {} workers (pids {:?}, master {}), proxy_buffering off, \
             upstream keepalive, access_log off",
            n.binary.display(),
            nginx_version(&n.binary),
            n.workers.len(),
            n.workers,
            n.pid
        );
    }
    println!(
        "the load generator and the synthetic upstream share these CPUs with the proxy; load \
         average before the run: {}",
        loadavg()
    );

    let direct = direct_phase(&args, up_addr, &expected, &upstream).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    eprintln!("gateway phase ...");
    let via = run_phase(
        &args,
        Target {
            addr: gateway.addr,
            path: "/v1/chat/completions",
            native: false,
            body: request_body("openai/synthetic"),
        },
        expected.clone(),
        &[gateway.pid],
        &upstream,
    )
    .await?;
    let peak_rss = status_mib(gateway.pid, "VmHWM");
    let alive = gateway.child.try_wait()?.is_none();

    let mut columns = vec![Column {
        name: "gateway",
        phase: via,
        idle_rss,
        peak_rss,
    }];
    let mut quiet_alive = true;
    // A: as configured (its first phase above is its warm-up), B: metrics and access lines
    // off. B gets an unmeasured warm-up phase too, then the measured phases run B A A B: a
    // gateway's first phase costs it more than its later ones, and the box drifts, so each
    // side gets one early and one late measured phase.
    let mut observability = None;
    if let Some(q) = &mut quiet {
        let gateway_target = || Target {
            addr: gateway.addr,
            path: "/v1/chat/completions",
            native: false,
            body: request_body("openai/synthetic"),
        };
        let quiet_target = || Target {
            addr: q.addr,
            path: "/v1/chat/completions",
            native: false,
            body: request_body("openai/synthetic"),
        };
        eprintln!("gw-quiet warm-up phase (not measured) ...");
        run_phase(&args, quiet_target(), expected.clone(), &[q.pid], &upstream).await?;
        let mut phases = Vec::new();
        let order = [
            ("gw-quiet", false),
            ("gateway 2", true),
            ("gateway 3", true),
            ("gw-quiet 2", false),
        ];
        for (name, on) in order {
            tokio::time::sleep(Duration::from_millis(200)).await;
            eprintln!("{name} phase ...");
            let (target, pid) = match on {
                true => (gateway_target(), gateway.pid),
                false => (quiet_target(), q.pid),
            };
            let phase = run_phase(&args, target, expected.clone(), &[pid], &upstream).await?;
            phases.push((name, on, phase));
        }
        quiet_alive = q.child.try_wait()?.is_none();
        let per_stream = |on: bool| {
            let (cpu, streams) = phases
                .iter()
                .filter(|(_, side, _)| *side == on)
                .fold((0.0, 0usize), |(cpu, n), (_, _, p)| {
                    (cpu + p.proxy_cpu.unwrap_or(0.0), n + p.ok())
                });
            cpu * 1e6 / streams.max(1) as f64
        };
        observability = Some((per_stream(true), per_stream(false)));
        for (name, on, phase) in phases {
            let pid = if on { gateway.pid } else { q.pid };
            columns.push(Column {
                name,
                phase,
                idle_rss: if on { idle_rss } else { quiet_idle_rss },
                peak_rss: status_mib(pid, "VmHWM"),
            });
        }
    }
    let mut nginx_alive = true;
    if let Some(n) = &mut nginx {
        tokio::time::sleep(Duration::from_millis(200)).await;
        eprintln!("nginx phase ...");
        // The same requests as direct (the upstream ignores the model; nginx forwards bytes).
        let phase = run_phase(
            &args,
            Target {
                addr: n.addr,
                path: "/v1/chat/completions",
                native: false,
                body: request_body("synthetic"),
            },
            expected.clone(),
            &n.pids(),
            &upstream,
        )
        .await?;
        nginx_alive = n.child.try_wait()?.is_none() && children_of(n.pid) == n.workers;
        columns.push(Column {
            name: "nginx",
            phase,
            idle_rss: nginx_idle_rss,
            peak_rss: rss_sum(&n.pids(), "VmHWM"),
        });
    }

    print!("{}", report(&direct, &columns));
    if let Some((on, off)) = observability {
        println!(
            "metrics and access lines: {on:.0} us of gateway CPU per stream on, {off:.0} us off \
             (gateway 2 + gateway 3 against gw-quiet + gw-quiet 2): {:+.1}%",
            (on / off - 1.0) * 100.0
        );
    }
    println!("load average after the run: {}", loadavg());
    if !alive {
        println!("the gateway exited during the run:\n{}", gateway.log_tail());
    }
    if let Some(n) = nginx.as_ref().filter(|_| !nginx_alive) {
        println!(
            "nginx exited or lost a worker during the run:\n{}",
            n.log_tail()
        );
    }
    if let Some(q) = quiet.as_ref().filter(|_| !quiet_alive) {
        println!("the quiet gateway exited during the run:\n{}", q.log_tail());
    }
    drop(nginx);
    drop(quiet);
    drop(gateway);
    let failures: u64 = std::iter::once(&direct)
        .chain(columns.iter().map(|c| &c.phase))
        .map(|p| p.errors + p.warmup_errors)
        .sum();
    Ok(failures == 0 && alive && quiet_alive && nginx_alive)
}

/// The first line of the report: the load's shape.
fn describe_load(args: &Args, frames: usize, frame_bytes: usize) -> String {
    format!(
        "streamgate load: {} concurrent clients, {} streams per phase ({} warm-up per client), \
         {} content chunks per stream ({frames} frames, {frame_bytes} bytes upstream), {:.1} ms \
         between frames",
        args.concurrency,
        args.requests,
        args.warmup,
        args.chunks,
        args.delay.as_secs_f64() * 1000.0
    )
}

// ---------------------------------------------------------------------------------------------
// --state-redis: the hub with the embedded journal against the hub with Redis

/// `redis-server` as a child process (loopback, no persistence, its own directory), killed
/// and its directory removed when dropped.
#[derive(Debug)]
struct RedisServer {
    child: Child,
    pid: u32,
    port: u16,
    dir: PathBuf,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// `--redis-server`, else `redis-server` on PATH, else in /usr/bin or /usr/sbin.
    fn find(explicit: Option<&Path>) -> Res<PathBuf> {
        find_binary(
            explicit,
            "--redis-server",
            "redis-server",
            &["/usr/bin", "/usr/sbin"],
        )
        .map_err(|e| format!("--state-redis: {e}").into())
    }

    fn spawn(binary: &Path, pin: bool, cpu: u8) -> Res<RedisServer> {
        let port = free_port()?.port();
        let dir = tool_dir().join("redis");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("redis.log"))?;
        let child = pinned_on(binary, pin, cpu)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let pid = child.id();
        Ok(RedisServer {
            child,
            pid,
            port,
            dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Waits until it answers PING (10 s at most).
    async fn ready(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("redis-server exited ({status})").into());
            }
            if redis_call(self.port, "PING")
                .await
                .is_ok_and(|r| r == "PONG")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A field of `INFO section` (`used_memory`, ...).
    async fn info(&self, section: &str, field: &str) -> Option<String> {
        let text = redis_call(self.port, &format!("INFO {section}"))
            .await
            .ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')
                .map(|v| v.trim().to_owned())
        })
    }
}

/// One inline command to Redis on 127.0.0.1:`port`; the reply's text (a simple string,
/// integer or bulk string), within 5 s and 1 MiB.
async fn redis_call(port: u16, command: &str) -> Res<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let call = async {
        let mut tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        tcp.write_all(format!("{command}\r\n").as_bytes()).await?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            if tcp.read_buf(&mut buf).await? == 0 {
                return Err::<String, BoxError>("redis closed the connection".into());
            }
            if buf.len() > 2 << 20 {
                return Err("redis: reply too large".into());
            }
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&buf[1..eol])?;
            match buf[0] {
                b'+' | b':' => return Ok(head.to_owned()),
                b'-' => return Err(format!("redis: {head}").into()),
                b'$' => {
                    let len: usize = head.parse()?;
                    if len > 1 << 20 {
                        return Err("redis: reply too large".into());
                    }
                    if buf.len() >= eol + 2 + len {
                        return Ok(String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into());
                    }
                }
                _ => return Err("redis: unexpected reply".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "redis did not answer within 5 s")?
}

/// `--state-redis`: direct, then the native door of the embedded gateway and of the Redis
/// gateway, measured E R R E after an unmeasured phase each.
async fn run_state_redis(args: Args, fds: String) -> Res<bool> {
    let frames = answer_frames(args.chunks);
    let frame_bytes: usize = frames.iter().map(Bytes::len).sum();
    let expected = Arc::new(Expected {
        content: (0..args.chunks).map(token).collect(),
    });
    let (up_addr, upstream) = start_upstream(frames.clone(), args.delay).await?;
    let redis_bin = RedisServer::find(args.redis_bin.as_deref())?;
    let mut redis = RedisServer::spawn(&redis_bin, args.pin, args.redis_cpu)?;
    redis.ready().await?;
    let spawn =
        |extra: &str| Gateway::spawn(&args.gateway, up_addr, &args.gateway_log, extra, args.pin);
    let mut embedded = spawn("")?;
    embedded.ready().await?;
    let mut shared = spawn(&format!(
        "\n[state]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))?;
    shared.ready().await?;
    let idle = |g: &Gateway| status_mib(g.pid, "VmRSS");
    let (embedded_idle, shared_idle) = (idle(&embedded), idle(&shared));

    let cpus = cpu_count();
    println!("{}", describe_load(&args, frames.len(), frame_bytes));
    println!(
        "machine: {cpus} CPUs ({}); open-files limit {fds}; gateway {} (RUST_LOG={}): embedded \
         journal pid {}, [state] backend = \"redis\" pid {}; redis-server pid {} ({}){}",
        cpu_model(),
        args.gateway.display(),
        args.gateway_log,
        embedded.pid,
        shared.pid,
        redis.pid,
        redis
            .info("server", "redis_version")
            .await
            .map_or_else(|| "version unknown".into(), |v| format!("redis {v}")),
        match (args.pin, args.redis_cpu) {
            (false, _) => "",
            (true, 0) => "; pinned: this tool and redis-server on CPU 0, the gateways on CPU 1",
            (true, _) => "; pinned: this tool on CPU 0, the gateways and redis-server on CPU 1",
        }
    );
    println!(
        "streams through the native door (POST /v1/streams, Agent Events over SSE, through the \
         hub); load average before the run: {}",
        loadavg()
    );

    let direct = direct_phase(&args, up_addr, &expected, &upstream).await?;
    let native = |addr: SocketAddr| Target {
        addr,
        path: "/v1/streams",
        native: true,
        body: request_body("openai/synthetic"),
    };
    for (name, gateway) in [("embedded", &embedded), ("redis", &shared)] {
        eprintln!("{name} warm-up phase (not measured) ...");
        run_phase(
            &args,
            native(gateway.addr),
            expected.clone(),
            &[gateway.pid],
            &upstream,
        )
        .await?;
    }
    let order = [
        ("embedded", false),
        ("redis", true),
        ("redis 2", true),
        ("embedded 2", false),
    ];
    let mut columns = Vec::new();
    for (name, on_redis) in order {
        tokio::time::sleep(Duration::from_millis(200)).await;
        eprintln!("{name} phase ...");
        let gateway = if on_redis { &shared } else { &embedded };
        let phase = run_phase_with(
            &args,
            native(gateway.addr),
            expected.clone(),
            &[gateway.pid],
            &[redis.pid],
            &upstream,
        )
        .await?;
        columns.push(Column {
            name,
            phase,
            idle_rss: if on_redis { shared_idle } else { embedded_idle },
            peak_rss: status_mib(gateway.pid, "VmHWM"),
        });
    }
    let embedded_alive = embedded.child.try_wait()?.is_none();
    let shared_alive = shared.child.try_wait()?.is_none();
    let redis_alive = redis.child.try_wait()?.is_none();

    print!("{}", report(&direct, &columns));
    let (d50, d99) = (pct(&direct.ttfb, 0.50), pct(&direct.ttfb, 0.99));
    let mut redis_per_stream = [0.0; 2];
    for (i, on_redis) in [false, true].into_iter().enumerate() {
        let side: Vec<&Phase> = columns
            .iter()
            .zip(order)
            .filter(|(_, (_, r))| *r == on_redis)
            .map(|(c, _)| &c.phase)
            .collect();
        let streams: usize = side.iter().map(|p| p.ok()).sum();
        let wall: f64 = side.iter().map(|p| p.wall.as_secs_f64()).sum();
        let events: f64 = side
            .iter()
            .map(|p| p.frames_per_stream * p.ok() as f64)
            .sum();
        let cpu: f64 = side.iter().map(|p| p.proxy_cpu.unwrap_or(0.0)).sum();
        let redis_cpu: f64 = side.iter().map(|p| p.also_cpu.unwrap_or(0.0)).sum();
        let mean =
            |f: &dyn Fn(&Phase) -> f64| side.iter().map(|p| f(p)).sum::<f64>() / side.len() as f64;
        redis_per_stream[i] = redis_cpu * 1e6 / streams.max(1) as f64;
        println!(
            "{:<22} {:.0} events/s delivered ({:.1} per stream), added TTFB p50 {:+.3} ms, p99 {:+.3} \
             ms, gateway CPU {:.0} us per stream, redis-server CPU {:.0} us per stream (both \
             measured phases)",
            if on_redis {
                "hub, [state] redis:"
            } else {
                "hub, embedded journal:"
            },
            events / wall.max(1e-9),
            events / streams.max(1) as f64,
            mean(&|p| pct(&p.ttfb, 0.50)) - d50,
            mean(&|p| pct(&p.ttfb, 0.99)) - d99,
            cpu * 1e6 / streams.max(1) as f64,
            redis_per_stream[i],
        );
    }
    println!(
        "redis after the run: used_memory {} bytes, {} keys",
        redis
            .info("memory", "used_memory")
            .await
            .unwrap_or_else(|| "n/a".into()),
        redis_call(redis.port, "DBSIZE")
            .await
            .unwrap_or_else(|_| "n/a".into())
    );
    // Redis's own idle work (serverCron) costs a few us per stream; a gateway that appends its
    // events there costs it far more.
    if redis_per_stream[1] < 2.0 * redis_per_stream[0] + 5.0 {
        println!(
            "note: the Redis gateway cost redis-server no more than the embedded one did: this \
             binary keeps streams in its own hub (no Redis stream hub in it)"
        );
    }
    println!("load average after the run: {}", loadavg());
    for (alive, name, gateway) in [
        (embedded_alive, "embedded", &embedded),
        (shared_alive, "redis", &shared),
    ] {
        if !alive {
            println!(
                "the {name} gateway exited during the run:\n{}",
                gateway.log_tail()
            );
        }
    }
    if !redis_alive {
        println!("redis-server exited during the run");
    }
    drop(shared);
    drop(embedded);
    drop(redis);
    let failures: u64 = std::iter::once(&direct)
        .chain(columns.iter().map(|c| &c.phase))
        .map(|p| p.errors + p.warmup_errors)
        .sum();
    Ok(failures == 0 && embedded_alive && shared_alive && redis_alive)
}

/// Sum of a /proc/PID/status memory field over `pids` (shared pages count once per process).
fn rss_sum(pids: &[u32], field: &str) -> Option<f64> {
    pids.iter().map(|&p| status_mib(p, field)).sum()
}

/// `nginx -v` (it prints to stderr).
fn nginx_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "version unknown".to_owned())
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".to_owned())
}

/// One proxied phase in the report.
#[derive(Debug)]
struct Column {
    name: &'static str,
    phase: Phase,
    idle_rss: Option<f64>,
    peak_rss: Option<f64>,
}

fn report(direct: &Phase, columns: &[Column]) -> String {
    let mut s = String::new();
    let opt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
    };
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    // One line: the label, direct, each proxy, then a remark.
    let row = |s: &mut String, name: &str, d: String, each: &dyn Fn(&Column) -> String, extra| {
        let _ = write!(s, "{name:<28} {d:>12}");
        for c in columns {
            let _ = write!(s, " {:>12}", each(c));
        }
        let _ = writeln!(s, "   {extra}");
    };
    // A remark per proxy, " / "-separated in column order.
    let each_extra = |f: &dyn Fn(&Column) -> String| -> String {
        columns.iter().map(f).collect::<Vec<_>>().join(" / ")
    };
    let _ = writeln!(s);
    row(
        &mut s,
        "",
        "direct".into(),
        &|c| c.name.to_owned(),
        format!("{} vs direct", names.join(" / ")),
    );
    let (d50, d99) = (pct(&direct.ttfb, 0.50), pct(&direct.ttfb, 0.99));
    row(
        &mut s,
        "TTFB p50 (ms)",
        format!("{d50:.3}"),
        &|c| format!("{:.3}", pct(&c.phase.ttfb, 0.50)),
        format!(
            "{} ms",
            each_extra(&|c| format!("{:+.3}", pct(&c.phase.ttfb, 0.50) - d50))
        ),
    );
    row(
        &mut s,
        "TTFB p99 (ms)",
        format!("{d99:.3}"),
        &|c| format!("{:.3}", pct(&c.phase.ttfb, 0.99)),
        format!(
            "{} ms added p99 TTFB",
            each_extra(&|c| format!("{:+.3}", pct(&c.phase.ttfb, 0.99) - d99))
        ),
    );
    for (label, q) in [
        ("stream time p50 (ms)", 0.50),
        ("stream time p99 (ms)", 0.99),
    ] {
        row(
            &mut s,
            label,
            format!("{:.3}", pct(&direct.total, q)),
            &|c| format!("{:.3}", pct(&c.phase.total, q)),
            String::new(),
        );
    }
    let ratio = |c: &Column| c.phase.streams_per_s() / direct.streams_per_s();
    row(
        &mut s,
        "streams/s",
        format!("{:.0}", direct.streams_per_s()),
        &|c| format!("{:.0}", c.phase.streams_per_s()),
        format!(
            "{} of direct",
            each_extra(&|c| format!("{:.1}%", ratio(c) * 100.0))
        ),
    );
    let events_per_s = |p: &Phase| p.frames_per_stream * p.streams_per_s();
    row(
        &mut s,
        "SSE events/s",
        format!("{:.0}", events_per_s(direct)),
        &|c| format!("{:.0}", events_per_s(&c.phase)),
        "frames delivered per second (native door: Agent Events through the hub)".into(),
    );
    row(
        &mut s,
        "wall time (s)",
        format!("{:.3}", direct.wall.as_secs_f64()),
        &|c| format!("{:.3}", c.phase.wall.as_secs_f64()),
        String::new(),
    );
    row(
        &mut s,
        "streams ok / errors",
        format!("{} / {}", direct.ok(), direct.errors),
        &|c| format!("{} / {}", c.phase.ok(), c.phase.errors),
        format!(
            "warm-up errors {} / {}",
            direct.warmup_errors,
            each_extra(&|c| c.phase.warmup_errors.to_string())
        ),
    );
    row(
        &mut s,
        "SSE frames per stream",
        format!("{:.1}", direct.frames_per_stream),
        &|c| format!("{:.1}", c.phase.frames_per_stream),
        format!(
            "upstream hits {} / {}",
            direct.upstream_hits,
            each_extra(&|c| c.phase.upstream_hits.to_string())
        ),
    );
    row(
        &mut s,
        "upstream TCP connections",
        format!("{}", direct.upstream_connections),
        &|c| format!("{}", c.phase.upstream_connections),
        "opened during the phase, warm-up included".into(),
    );
    row(
        &mut s,
        "load tool CPU (s)",
        format!("{:.2}", direct.tool_cpu),
        &|c| format!("{:.2}", c.phase.tool_cpu),
        "clients + synthetic upstream".into(),
    );
    row(
        &mut s,
        "load tool CPU/stream (us)",
        format!("{:.0}", direct.per_stream_us(direct.tool_cpu)),
        &|c| format!("{:.0}", c.phase.per_stream_us(c.phase.tool_cpu)),
        String::new(),
    );
    row(
        &mut s,
        "proxy CPU (s)",
        "-".into(),
        &|c| opt(c.phase.proxy_cpu, 2),
        "utime+stime; nginx: master + workers".into(),
    );
    row(
        &mut s,
        "proxy CPU/stream (us)",
        "-".into(),
        &|c| opt(c.phase.proxy_cpu.map(|v| c.phase.per_stream_us(v)), 0),
        format!(
            "{} us per frame",
            each_extra(&|c| opt(
                c.phase
                    .proxy_cpu
                    .map(|v| c.phase.per_stream_us(v) / c.phase.frames_per_stream.max(1.0)),
                2
            ))
        ),
    );
    let all = |p: &Phase| p.tool_cpu + p.proxy_cpu.unwrap_or(0.0);
    row(
        &mut s,
        "tool+proxy CPU/stream (us)",
        format!("{:.0}", direct.per_stream_us(all(direct))),
        &|c| format!("{:.0}", c.phase.per_stream_us(all(&c.phase))),
        String::new(),
    );
    row(
        &mut s,
        "CPUs busy (tool+proxy)",
        format!("{:.2}", all(direct) / direct.wall.as_secs_f64()),
        &|c| format!("{:.2}", all(&c.phase) / c.phase.wall.as_secs_f64()),
        "CPU seconds / wall seconds".into(),
    );
    row(
        &mut s,
        "rest of the box CPU (s)",
        opt(direct.other_cpu, 2),
        &|c| opt(c.phase.other_cpu, 2),
        format!(
            "other processes during the phase; steal {} / {} s",
            opt(direct.steal, 2),
            each_extra(&|c| opt(c.phase.steal, 2))
        ),
    );
    row(
        &mut s,
        "proxy RSS (MiB)",
        "-".into(),
        &|c| opt(c.peak_rss, 1),
        format!(
            "peak (VmHWM, nginx: summed); {} MiB idle after start",
            each_extra(&|c| opt(c.idle_rss, 1))
        ),
    );
    let _ = writeln!(s);
    for c in columns {
        let added = pct(&c.phase.ttfb, 0.99) - d99;
        let r = ratio(c);
        let _ = writeln!(
            s,
            "targets ({}): added p99 TTFB < 1 ms: {} ({:+.3} ms); throughput >= 90% of direct: \
             {} ({:.1}%)",
            c.name,
            if added < 1.0 { "met" } else { "MISSED" },
            added,
            if r >= 0.9 { "met" } else { "MISSED" },
            r * 100.0
        );
    }
    if let Some(e) = &direct.first_error {
        let _ = writeln!(s, "first direct error: {e:.300}");
    }
    for c in columns {
        if let Some(e) = &c.phase.first_error {
            let _ = writeln!(s, "first {} error: {e:.300}", c.name);
        }
    }
    s
}

/// The machine's CPUs (from /proc/cpuinfo: with `--pin` this process may use only one).
fn cpu_count() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(0, usize::from))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
