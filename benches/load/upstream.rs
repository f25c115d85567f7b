//! The synthetic OpenAI Chat Completions upstream, inside this process.

use super::*;

pub(crate) const CHUNK_HEAD: &str = r#"{"id":"chatcmpl-LoadSynthetic0000000000000000","object":"chat.completion.chunk","created":1727346171,"model":"synthetic-2024-08-06","system_fingerprint":"fp_0000000000","choices":["#;

/// The frames of one answer, pre-rendered: role, `chunks` content tokens, finish, usage, DONE.
pub(crate) fn answer_frames(chunks: usize) -> Vec<Bytes> {
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
pub(crate) fn token(i: usize) -> String {
    format!(" tok{i}")
}

/// The synthetic upstream's listen backlog (the kernel caps it at net.core.somaxconn).
pub(crate) const UPSTREAM_BACKLOG: u32 = 4096;

#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) frames: Arc<Vec<Bytes>>,
    /// Nanoseconds between frames: the matrix changes it between its settings.
    delay_ns: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) connections: AtomicU64,
}

pub(crate) async fn start_upstream(
    frames: Vec<Bytes>,
    delay: Duration,
) -> Res<(SocketAddr, Arc<Upstream>)> {
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
        delay_ns: AtomicU64::new(nanos(delay)),
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

impl Upstream {
    /// The pause before every frame after the first, for answers started from now on.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.delay_ns.store(nanos(delay), Ordering::Relaxed);
    }

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_ns.load(Ordering::Relaxed))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) type UpBody = BoxBody<Bytes, Infallible>;

pub(crate) async fn upstream_answer(
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
    let delay = state.delay();
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

pub(crate) fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
