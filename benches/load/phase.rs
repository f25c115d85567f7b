//! One phase of load: C clients on keep-alive connections, R streams, timed and checked.

use super::*;

/// The door a phase's requests knock on: it decides their path and body, and how the answer
/// is checked and where its content tokens are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// `POST /v1/chat/completions`: a Chat Completions stream back (the upstream's own dialect).
    OpenAi,
    /// `POST /v1/messages` with an Anthropic Messages body: an Anthropic event stream back,
    /// translated from the OpenAI upstream by the gateway.
    Anthropic,
    /// The native door (`POST /v1/streams`): Agent Events over SSE, through the hub.
    Native,
}

impl Door {
    fn path(self) -> &'static str {
        match self {
            Door::OpenAi => "/v1/chat/completions",
            Door::Anthropic => "/v1/messages",
            Door::Native => "/v1/streams",
        }
    }

    /// A streaming request for `model` in this door's shape, after `history` earlier turns.
    fn body(self, model: &str, history: usize) -> Bytes {
        let messages = messages(history);
        match self {
            Door::OpenAi | Door::Native => request_body(model, &messages),
            Door::Anthropic => Bytes::from(format!(
                r#"{{"model":"{model}","max_tokens":1024,"stream":true,"messages":{messages}}}"#
            )),
        }
    }

    /// Whether a body chunk carries a content token: an OpenAI chunk with non-empty
    /// `content`, an Anthropic `content_block_delta`, an Agent Events `text.delta`.
    fn has_content(self, chunk: &[u8]) -> bool {
        match self {
            Door::OpenAi => {
                const KEY: &[u8] = br#""content":""#;
                let mut rest = chunk;
                while let Some(at) = memchr_find(rest, KEY) {
                    rest = &rest[at + KEY.len()..];
                    // The role chunk's `"content":""` carries none.
                    if rest.first().is_some_and(|&b| b != b'"') {
                        return true;
                    }
                }
                false
            }
            Door::Anthropic => memchr_find(chunk, b"content_block_delta").is_some(),
            Door::Native => memchr_find(chunk, br#""type":"text.delta""#).is_some(),
        }
    }

    /// Checks a whole answer body; the number of SSE events in it.
    fn verify(self, body: &[u8], expected: &Expected) -> Res<u64> {
        match self {
            Door::OpenAi => verify(body, expected),
            Door::Anthropic => verify_anthropic(body, expected),
            Door::Native => verify_native(body, expected),
        }
    }
}

/// Where a phase sends its requests, and through which door.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) door: Door,
    body: Bytes,
}

impl Target {
    /// `door` at `addr`, asking for `model` (`synthetic` direct and through nginx, which
    /// forward it as it is; `openai/synthetic` through the gateway, routed to its provider),
    /// after `history` earlier turns (`--history`).
    pub(crate) fn new(addr: SocketAddr, door: Door, model: &str, history: usize) -> Target {
        Target {
            addr,
            door,
            body: door.body(model, history),
        }
    }
}

/// A streamed answer larger than this is an error (the synthetic one is ~14 kB for 50 chunks).
const MAX_BODY: usize = 8 << 20;

#[derive(Debug)]
pub(crate) struct Expected {
    pub(crate) content: String,
}

#[derive(Debug, Default)]
pub(crate) struct WorkerResult {
    pub(crate) ttfb: Vec<Duration>,
    pub(crate) total: Vec<Duration>,
    pub(crate) gaps: Vec<Duration>,
    pub(crate) frames: u64,
    pub(crate) errors: u64,
    pub(crate) warmup_errors: u64,
    pub(crate) first_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Phase {
    pub(crate) ttfb: Vec<Duration>,
    pub(crate) total: Vec<Duration>,
    /// Time between consecutive body chunks carrying content tokens, all streams, sorted.
    pub(crate) gaps: Vec<Duration>,
    pub(crate) frames_per_stream: f64,
    pub(crate) errors: u64,
    pub(crate) warmup_errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) wall: Duration,
    pub(crate) tool_cpu: f64,
    /// utime+stime of the proxy's processes over the phase (none for direct).
    pub(crate) proxy_cpu: Option<f64>,
    /// utime+stime over the phase of further processes serving it (Redis), counted apart.
    pub(crate) also_cpu: Option<f64>,
    /// CPU seconds used on the machine by everything else (other processes, interrupts)
    /// during the phase, and the hypervisor's steal time.
    pub(crate) other_cpu: Option<f64>,
    pub(crate) steal: Option<f64>,
    pub(crate) upstream_hits: u64,
    pub(crate) upstream_connections: u64,
}

impl Phase {
    pub(crate) fn ok(&self) -> usize {
        self.ttfb.len()
    }
    pub(crate) fn streams_per_s(&self) -> f64 {
        self.ok() as f64 / self.wall.as_secs_f64()
    }
    /// CPU microseconds per whole stream.
    pub(crate) fn per_stream_us(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.ok().max(1) as f64
    }
}

/// Sum of utime+stime over `pids`; none if any is gone.
pub(crate) fn cpu_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&p| cpu_seconds(Some(p))).sum()
}

pub(crate) async fn connect(addr: SocketAddr) -> Res<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One streaming request on the worker's keep-alive connection (reopened when closed): its
/// TTFB, total time and SSE events; the gaps between its content chunks go to `gaps`.
pub(crate) async fn one(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    target: &Target,
    expected: &Expected,
    gaps: &mut Vec<Duration>,
) -> Res<(Duration, Duration, u64)> {
    let s = match sender {
        Some(s) if !s.is_closed() => s,
        _ => sender.insert(connect(target.addr).await?),
    };
    if s.ready().await.is_err() {
        *s = connect(target.addr).await?;
    }
    let mut req = Request::post(target.door.path())
        .header(header::HOST, target.addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .header(header::AUTHORIZATION, "Bearer sk-load-test");
    match target.door {
        Door::Native => req = req.header("streamgate-dialect", "openai"),
        Door::Anthropic => req = req.header("anthropic-version", "2023-06-01"),
        Door::OpenAi => {}
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
        let mut last_content: Option<Instant> = None;
        // No more gaps than content tokens: a stream cannot grow the list past that.
        let gap_cap = gaps.len() + expected.content.len();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data()
                && !data.is_empty()
            {
                let now = Instant::now();
                ttfb.get_or_insert_with(|| now - t0);
                if target.door.has_content(&data) {
                    if let Some(last) = last_content
                        && gaps.len() < gap_cap
                    {
                        gaps.push(now - last);
                    }
                    last_content = Some(now);
                }
                if buf.len() + data.len() > MAX_BODY {
                    return Err(format!("answer larger than {MAX_BODY} bytes").into());
                }
                buf.extend_from_slice(&data);
            }
        }
        let total = t0.elapsed();
        let frames = target.door.verify(&buf, expected)?;
        let ttfb = ttfb.ok_or("empty body")?;
        Ok::<_, BoxError>((ttfb, total, frames))
    }
    .await;
    if result.is_err() {
        *sender = None; // the connection may be half-way through a body: start afresh
    }
    result
}

pub(crate) async fn worker(
    target: Arc<Target>,
    expected: Arc<Expected>,
    next: Arc<AtomicUsize>,
    total: usize,
    warmup: usize,
    barrier: Arc<Barrier>,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    let mut sender = None;
    let mut scratch = Vec::new();
    for _ in 0..warmup {
        scratch.clear();
        if let Err(e) = one(&mut sender, &target, &expected, &mut scratch).await {
            out.warmup_errors += 1;
            out.first_error
                .get_or_insert_with(|| format!("warm-up: {e}"));
        }
    }
    barrier.wait().await;
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let gaps0 = out.gaps.len();
        match one(&mut sender, &target, &expected, &mut out.gaps).await {
            Ok((ttfb, all, frames)) => {
                out.ttfb.push(ttfb);
                out.total.push(all);
                out.frames += frames;
            }
            Err(e) => {
                out.gaps.truncate(gaps0);
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out
}

pub(crate) async fn run_phase(
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
pub(crate) async fn direct_phase(
    args: &Args,
    up_addr: SocketAddr,
    expected: &Arc<Expected>,
    upstream: &Upstream,
) -> Res<Phase> {
    eprintln!("direct phase ...");
    let target = Target::new(up_addr, Door::OpenAi, "synthetic", args.history);
    run_phase(args, target, Arc::clone(expected), &[], upstream).await
}

/// [`run_phase`], also measuring the CPU of `also_pids` (apart from the proxy's).
pub(crate) async fn run_phase_with(
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
        gaps: Vec::new(),
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
        phase.gaps.extend(r.gaps);
        phase.errors += r.errors;
        phase.warmup_errors += r.warmup_errors;
        frames += r.frames;
        if phase.first_error.is_none() {
            phase.first_error = r.first_error;
        }
    }
    phase.ttfb.sort_unstable();
    phase.total.sort_unstable();
    phase.gaps.sort_unstable();
    phase.frames_per_stream = frames as f64 / phase.ok().max(1) as f64;
    Ok(phase)
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
pub(crate) fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

pub(crate) fn request_body(model: &str, messages: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"messages":{messages}}}"#
    ))
}

/// The messages array: `history` earlier turns of prose (with the escapes real text has),
/// then the question. The same in both doors' shapes (string contents).
fn messages(history: usize) -> String {
    const USER: &str = "Here is the next part of the log I mentioned, with the \"retry\" lines \
        kept as they were:\n  12:01:07 upstream answered 429, retry-after 2 s\n  12:01:09 \
        retried; answer streamed in 3.1 s\nWhy did the second attempt take so much longer \
        than the first one, and is that something the gateway should smooth out?";
    const ASSISTANT: &str = "The second attempt waited for the provider's retry-after and then \
        queued behind the requests that arrived during the pause, so its first token came \
        late even though its stream itself was normal. A gateway can spread such retries with \
        jitter, keep one client's burst from taking every slot, and report the wait in its \
        logs so that the latency is explained rather than hidden. Shall I show the settings \
        that do each of those, with the numbers from your log?";
    let turn = [
        serde_json::json!({"role": "user", "content": USER}),
        serde_json::json!({"role": "assistant", "content": ASSISTANT}),
    ];
    let question = serde_json::json!({"role": "user", "content": "Write a short paragraph about load testing."});
    let all: Vec<&serde_json::Value> = (0..history)
        .flat_map(|_| turn.iter())
        .chain(std::iter::once(&question))
        .collect();
    serde_json::to_string(&all).unwrap_or_default()
}
