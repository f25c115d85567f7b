//! The own client against a provider on 127.0.0.1 that behaves as told.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::task::Poll;

use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::upstream::body::{EventStream, Source};

/// One OpenAI chunk frame.
const FRAME: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":null}]}\n\n";

/// What the provider does after the response head and one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Then {
    /// Ends the body and keeps the connection for the next request.
    KeepAlive,
    /// Ends the body, then closes the connection (no `connection: close` said).
    Close,
    /// Sends half a frame, then closes the connection.
    CutMidFrame,
    /// Sends nothing more until the client goes away.
    Hang,
}

struct Provider {
    port: u16,
    accepted: Arc<AtomicUsize>,
    closed: Arc<tokio::sync::Notify>,
}

async fn provider(then: Then) -> Provider {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(tokio::sync::Notify::new());
    let (count, notify) = (Arc::clone(&accepted), Arc::clone(&closed));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer(socket, then, Arc::clone(&notify)));
        }
    });
    Provider {
        port,
        accepted,
        closed,
    }
}

/// Answers each request on `socket` with one frame, then does `then`.
async fn answer(mut socket: TcpStream, then: Then, closed: Arc<tokio::sync::Notify>) {
    while read_request(&mut socket).await {
        let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        out.extend_from_slice(format!("{:x}\r\n{FRAME}\r\n", FRAME.len()).as_bytes());
        match then {
            Then::KeepAlive | Then::Close => {
                let done = "data: [DONE]\n\n";
                out.extend_from_slice(
                    format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).as_bytes(),
                );
            }
            Then::CutMidFrame => {
                out.extend_from_slice(format!("{:x}\r\n{}", FRAME.len(), &FRAME[..20]).as_bytes());
            }
            Then::Hang => {}
        }
        socket.write_all(&out).await.unwrap();
        match then {
            Then::KeepAlive => {}
            Then::Close | Then::CutMidFrame => {
                drop(socket);
                closed.notify_one();
                return;
            }
            Then::Hang => {
                let mut sink = [0u8; 1024];
                while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                return;
            }
        }
    }
}

/// Reads one request (head and `content-length` body); false at the end of the connection.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(socket: &mut S) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(
        head.starts_with("post /v1/chat/completions http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nhost: 127.0.0.1:"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    while buf.len() < head_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

fn client(port: u16, max_idle: usize) -> (Client, Arc<PoolCounters>) {
    crate::upstream::install_crypto_provider();
    client_at("http", port, &tls_config().unwrap(), max_idle)
}

/// A client of `scheme://127.0.0.1:port/v1/chat/completions` with `tls` for https.
fn client_at(
    scheme: &str,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    max_idle: usize,
) -> (Client, Arc<PoolCounters>) {
    let counters = Arc::<PoolCounters>::default();
    let url = format!("{scheme}://127.0.0.1:{port}/v1/chat/completions");
    let target = Target::parse(&url).unwrap();
    let client = Client::new(
        target,
        Duration::from_secs(5),
        tls,
        Arc::clone(&counters),
        max_idle,
    );
    (client, counters)
}

/// A streamed-answer request: the response head and body, whatever the status.
async fn send(client: &Client) -> Result<(http::response::Parts, Body), GatewayError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    client
        .post("p", headers, b"{\"stream\":true}".to_vec(), None)
        .await
}

/// [`send`], for a 200.
async fn post(client: &Client) -> Result<Body, GatewayError> {
    let (head, body) = send(client).await?;
    assert_eq!(head.status, 200);
    Ok(body)
}

/// The body's next data, None at its end.
async fn next_data(body: &mut Body) -> Option<Result<Vec<u8>, TransportError>> {
    std::future::poll_fn(|cx| {
        body.poll_data(cx)
            .map(|item| item.map(|data| data.map(<[u8]>::to_vec)))
    })
    .await
}

/// The body's bytes to its end, or the error that cut it.
async fn read_all(mut body: Body) -> Result<Vec<u8>, TransportError> {
    let mut out = Vec::new();
    while let Some(chunk) = next_data(&mut body).await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn opened(counters: &PoolCounters) -> u64 {
    counters.stats("p").connections_opened
}

#[tokio::test]
async fn a_second_request_reuses_the_connection() {
    let p = provider(Then::KeepAlive).await;
    let (client, counters) = client(p.port, 8);
    for _ in 0..3 {
        let body = post(&client).await.unwrap();
        // The answer holds the one read buffer; it is kept for the next once dropped.
        assert_eq!(client.inner.spare.len(), 0);
        let body = read_all(body).await.unwrap();
        assert!(body.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(client.idle(), 1);
        assert_eq!(client.inner.spare.len(), 1);
    }
    assert_eq!(opened(&counters), 1);
    assert_eq!(p.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_provider_closed_while_idle_is_not_used() {
    let p = provider(Then::Close).await;
    let (client, counters) = client(p.port, 8);
    let closed = p.closed.notified();
    read_all(post(&client).await.unwrap()).await.unwrap();
    closed.await;
    // Lets the runtime's I/O driver see the close (it is not a timing condition of the
    // test: a connection not seen closed would be retried on a fresh one anyway).
    tokio::time::sleep(Duration::from_millis(1)).await;
    let body = read_all(post(&client).await.unwrap()).await.unwrap();
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(opened(&counters), 2);
    assert_eq!(p.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_cut_mid_frame_is_an_error_and_its_connection_is_not_pooled() {
    let p = provider(Then::CutMidFrame).await;
    let (client, counters) = client(p.port, 8);
    let cut = read_all(post(&client).await.unwrap()).await;
    assert!(cut.is_err(), "{cut:?}");
    assert_eq!(client.idle(), 0);
    // The next request connects afresh.
    let _body = post(&client).await.unwrap();
    assert_eq!(opened(&counters), 2);
}

#[tokio::test]
async fn a_cut_answer_reads_as_incomplete_as_before() {
    let p = provider(Then::CutMidFrame).await;
    let (client, _) = client(p.port, 8);
    let body = post(&client).await.unwrap();
    let mut stream = EventStream::new(
        "p".into(),
        providers::Dialect::OpenAi,
        Source::Own(body),
        Duration::from_secs(5),
        Arc::from(Vec::new()),
    );
    let first = stream.first_events().await.unwrap();
    assert!(!first.is_empty());
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    match last {
        Some(Err(GatewayError::Stream {
            source: providers::DecodeError::Incomplete { .. },
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(client.idle(), 0);
}

#[tokio::test]
async fn a_body_dropped_mid_stream_closes_its_connection() {
    let p = provider(Then::Hang).await;
    let (client, counters) = client(p.port, 8);
    let mut body = post(&client).await.unwrap();
    let first = next_data(&mut body).await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    assert_eq!(client.idle(), 0);
    let _body = post(&client).await.unwrap();
    assert_eq!(opened(&counters), 2);
    assert_eq!(p.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_is_refused() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (client, counters) = client(port, 8);
    let e = post(&client).await.unwrap_err();
    assert!(
        matches!(
            e,
            GatewayError::Connection {
                fault: ConnectionFault::Refused,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(opened(&counters), 0);
}

#[tokio::test]
async fn the_pool_keeps_no_more_than_its_cap() {
    let p = provider(Then::KeepAlive).await;
    let (client, counters) = client(p.port, 1);
    // Both in flight at once: two connections.
    let (a, b) = tokio::join!(post(&client), post(&client));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(opened(&counters), 2);
    read_all(a).await.unwrap();
    read_all(b).await.unwrap();
    assert_eq!(client.idle(), 1);
}

#[test]
fn only_plain_http_urls_are_taken() {
    let t = Target::parse("https://api.example.com/v1/chat/completions?x=1").unwrap();
    assert_eq!(t.host, "api.example.com");
    assert_eq!(t.path, "/v1/chat/completions?x=1");
    assert_eq!(t.origin, "https://api.example.com/");
    assert_eq!(
        Target::parse("http://[::1]:8080/v1").unwrap().host,
        "[::1]:8080"
    );
    assert_eq!(Target::parse("http://h:80/v1").unwrap().host, "h");
    assert!(Target::parse("http://user:pw@h/v1").is_none());
    assert!(Target::parse("ftp://h/v1").is_none());
    assert!(Target::parse("/v1").is_none());
}

/// A provider that answers one request with a head padded to `head_bytes` and one chunk of
/// `frame_bytes` of body, then ends the body.
async fn padded_provider(head_bytes: usize, frame_bytes: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        if !read_request(&mut socket).await {
            return;
        }
        let start = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nx-pad: ";
        let mut out = format!(
            "{start}{}\r\n\r\n",
            "p".repeat(head_bytes - start.len() - 4)
        )
        .into_bytes();
        assert_eq!(out.len(), head_bytes);
        let frame = format!("data: {}\n\n", "x".repeat(frame_bytes - 8));
        out.extend_from_slice(format!("{:x}\r\n{frame}\r\n0\r\n\r\n", frame.len()).as_bytes());
        let _ = socket.write_all(&out).await;
        // Kept open until the client is done with it.
        let _ = socket.read(&mut [0u8; 1]).await;
    });
    port
}

/// The connection's read buffer is a fixed 8 KiB: heads up to it are read, longer ones fail
/// the call, and a body frame of any size streams through it whole. Sizes are seeded.
#[tokio::test]
async fn heads_are_capped_by_the_read_buffer_and_bodies_are_not() {
    let mut rng = fastrand::Rng::with_seed(0x8_0000);
    let mut next = |bound: usize| rng.usize(..bound);
    for case in 0..8 {
        let fits = case % 2 == 0;
        let head = if fits {
            READ_BUFFER_BYTES - 64 - next(4096)
        } else {
            READ_BUFFER_BYTES + 64 + next(16 * 1024)
        };
        let frame = 64 + next(256 * 1024);
        let port = padded_provider(head, frame).await;
        let (client, _) = client(port, 0);
        match post(&client).await {
            Ok(body) if fits => {
                let bytes = read_all(body).await.unwrap();
                assert_eq!(bytes.len(), frame, "head {head}, frame {frame}");
            }
            Ok(_) => panic!("a head of {head} bytes was read"),
            Err(e) if fits => panic!("a head of {head} bytes failed: {e}"),
            Err(_) => {}
        }
    }
}

/// A provider that sends one frame each time `next` says so, then the end of the body.
async fn gated_provider(frames: usize) -> (u16, tokio::sync::mpsc::UnboundedSender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (next, mut go) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        assert!(read_request(&mut socket).await);
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head).await.unwrap();
        for _ in 0..frames {
            if go.recv().await.is_none() {
                return;
            }
            let frame = format!("{:x}\r\n{FRAME}\r\n", FRAME.len());
            socket.write_all(frame.as_bytes()).await.unwrap();
        }
        let _ = go.recv().await;
        socket.write_all(b"0\r\n\r\n").await.unwrap();
        let _ = go.recv().await; // the client's end
    });
    (port, next)
}

/// Counts the wakes of the task that reads the body.
#[derive(Default)]
struct Wakes {
    count: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// Frames that arrive one at a time wake the reading task once each: the socket's readiness
/// is the only wake. (With hyper's client and the task's waker, each frame woke it about
/// three times, and each wake polled the whole connection task once more.)
#[tokio::test]
async fn a_frame_wakes_the_reader_once() {
    let frames = 20;
    let (port, next) = gated_provider(frames).await;
    let (client, _) = client(port, 1);
    let mut body = post(&client).await.unwrap();
    let wakes = Arc::new(Wakes::default());
    let waker = std::task::Waker::from(Arc::clone(&wakes));
    let mut got = 0;
    let mut text = Vec::new();
    next.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let notified = wakes.notify.notified();
            let polled = body.poll_data(&mut std::task::Context::from_waker(&waker));
            match polled {
                Poll::Ready(Some(Ok(chunk))) => {
                    got += 1;
                    text.extend_from_slice(chunk);
                    // The next frame only once this one was read: they arrive one at a time.
                    let _ = next.send(());
                }
                Poll::Ready(Some(Err(e))) => panic!("the body broke: {e}"),
                Poll::Ready(None) => return,
                Poll::Pending => notified.await,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the body did not end ({got} chunks)");
    assert_eq!(got, frames, "one chunk per frame");
    assert_eq!(text, FRAME.repeat(frames).into_bytes());
    let woken = wakes.count.load(Ordering::SeqCst);
    // One per frame and one for the end, with room for a wake the reader polls in vain.
    assert!(
        woken <= frames + 3,
        "{woken} task wakes for {frames} frames"
    );
}

/// One reply of a scripted provider: its bytes, and whether the provider closes the
/// connection after them.
#[derive(Debug, Clone)]
struct Reply {
    bytes: Vec<u8>,
    close: bool,
}

/// A provider that answers each request, on whatever connection it comes, with the next of
/// `replies`, written in pieces cut at seeded offsets.
async fn scripted(replies: Vec<Reply>, seed: u64) -> Provider {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        replies,
    )));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut seed = seed;
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            seed += 1;
            tokio::spawn(answer_scripted(socket, Arc::clone(&queue), seed));
        }
    });
    Provider {
        port,
        accepted,
        closed: Arc::new(tokio::sync::Notify::new()),
    }
}

async fn answer_scripted<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut socket: S,
    queue: Arc<std::sync::Mutex<std::collections::VecDeque<Reply>>>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while read_request(&mut socket).await {
        let Some(reply) = queue.lock().unwrap().pop_front() else {
            return;
        };
        let mut rest = &reply.bytes[..];
        while !rest.is_empty() {
            let n = rng.usize(1..=rest.len().min(700));
            if socket.write_all(&rest[..n]).await.is_err() {
                return;
            }
            let _ = socket.flush().await;
            rest = &rest[n..];
            if rng.u8(..4) == 0 {
                tokio::task::yield_now().await;
            }
        }
        if reply.close {
            return;
        }
    }
}

/// How a generated reply frames its body, and whether its connection may be reused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framed {
    Chunked,
    Length,
    /// No length: the body runs to the close.
    ToClose,
    /// HTTP/1.0 with a length: closed after.
    Http10,
    /// `connection: close` with a length.
    SaysClose,
    /// 204: no body at all.
    NoContent,
}

/// A reply framed as `framed` carrying `body`, with informational heads before it maybe.
fn reply(rng: &mut fastrand::Rng, framed: Framed, body: &[u8]) -> (Reply, bool) {
    let mut out = Vec::new();
    for _ in 0..rng.usize(..3) {
        out.extend_from_slice(
            [
                &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
                b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
            ][rng.usize(..2)],
        );
    }
    let version = if framed == Framed::Http10 {
        "1.0"
    } else {
        "1.1"
    };
    let status = if framed == Framed::NoContent {
        "204 No Content"
    } else {
        "200 OK"
    };
    out.extend_from_slice(
        format!("HTTP/{version} {status}\r\ncontent-type: text/event-stream\r\n").as_bytes(),
    );
    match framed {
        Framed::Chunked => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = body;
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len().min(900));
                let ext = if rng.u8(..4) == 0 { ";x=1" } else { "" };
                out.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\n");
            if rng.bool() {
                out.extend_from_slice(b"x-trailer: t\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        Framed::Length | Framed::Http10 | Framed::SaysClose => {
            if framed == Framed::SaysClose {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        }
        Framed::ToClose => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
        Framed::NoContent => out.extend_from_slice(b"\r\n"),
    }
    let reusable = matches!(framed, Framed::Chunked | Framed::Length | Framed::NoContent);
    // The provider closes what its head said it would not keep (closing a reusable one
    // would race the next request, which no client can tell apart from a cut).
    (
        Reply {
            bytes: out,
            close: !reusable,
        },
        reusable,
    )
}

/// Generated replies in every framing, written in random pieces, read back whole; each
/// connection goes back to the pool exactly when its head allows it, and the next request
/// reuses it or connects afresh accordingly.
#[tokio::test]
async fn every_framing_reads_whole_and_pools_as_its_head_allows() {
    let mut rng = fastrand::Rng::with_seed(0x11_0001);
    let kinds = [
        Framed::Chunked,
        Framed::Length,
        Framed::ToClose,
        Framed::Http10,
        Framed::SaysClose,
        Framed::NoContent,
    ];
    let mut script = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..60 {
        let framed = kinds[rng.usize(..kinds.len())];
        let body: Vec<u8> = if framed == Framed::NoContent {
            Vec::new()
        } else {
            (0..rng.usize(..20_000)).map(|_| rng.u8(..)).collect()
        };
        let (reply, pooled) = reply(&mut rng, framed, &body);
        script.push(reply);
        expected.push((framed, body, pooled));
    }
    let p = scripted(script, 7).await;
    let (client, counters) = client(p.port, 8);
    let mut opened_expected = 0;
    let mut was_pooled = false;
    for (i, (framed, body, pooled)) in expected.into_iter().enumerate() {
        if !was_pooled {
            opened_expected += 1;
        }
        let (head, got) = send(&client).await.unwrap();
        let status = if framed == Framed::NoContent {
            204
        } else {
            200
        };
        assert_eq!(head.status, status, "reply {i} ({framed:?})");
        let got = read_all(got).await.unwrap();
        assert!(
            got == body,
            "reply {i} ({framed:?}): {} bytes of {}",
            got.len(),
            body.len()
        );
        assert_eq!(client.idle(), usize::from(pooled), "reply {i} ({framed:?})");
        was_pooled = pooled;
        assert_eq!(opened(&counters), opened_expected, "reply {i} ({framed:?})");
    }
    assert_eq!(p.accepted.load(Ordering::SeqCst) as u64, opened_expected);
}

/// A provider that writes past the end of a body has broken the framing of the connection:
/// the body reads whole, and the connection is not used again.
#[tokio::test]
async fn bytes_past_the_body_keep_its_connection_out_of_the_pool() {
    let body = b"data: {}\n\n";
    let mut bytes =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let ok = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
    let mut ok = ok.into_bytes();
    ok.extend_from_slice(body);
    let p = scripted(
        vec![
            Reply {
                bytes,
                close: false,
            },
            Reply {
                bytes: ok,
                close: false,
            },
        ],
        3,
    )
    .await;
    let (client, counters) = client(p.port, 8);
    for _ in 0..2 {
        let got = read_all(post(&client).await.unwrap()).await.unwrap();
        assert_eq!(got, body);
    }
    assert_eq!(opened(&counters), 2);
}

/// Malformed replies fail the call or the body with the transport's words, never hang nor
/// panic, and leave nothing in the pool.
#[tokio::test]
async fn malformed_replies_fail_and_are_not_pooled() {
    let cases: [&[u8]; 6] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabcdeXY",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nabcde",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    ];
    for (i, case) in cases.iter().enumerate() {
        let p = scripted(
            vec![Reply {
                bytes: case.to_vec(),
                close: true,
            }],
            i as u64,
        )
        .await;
        let (client, _) = client(p.port, 8);
        let outcome = match send(&client).await {
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        GatewayError::Connection {
                            fault: ConnectionFault::ClosedBeforeResponse,
                            ..
                        }
                    ),
                    "case {i}: {e:?}"
                );
                None
            }
            Ok((_, body)) => Some(read_all(body).await),
        };
        assert!(
            !matches!(outcome, Some(Ok(_))),
            "case {i} read as a whole body: {outcome:?}"
        );
        assert_eq!(client.idle(), 0, "case {i}");
    }
}

/// The same client over TLS (a self-signed certificate trusted by the test's client
/// config): requests are flushed through TLS, bodies read whole, the connection reused.
#[tokio::test]
async fn streamed_answers_over_tls_read_whole_and_reuse_the_connection() {
    crate::upstream::install_crypto_provider();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = made.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let mut rng = fastrand::Rng::with_seed(0x7_15);
    let mut script = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let body: Vec<u8> = (0..rng.usize(1..30_000)).map(|_| rng.u8(..)).collect();
        let framed = [Framed::Chunked, Framed::Length][rng.usize(..2)];
        let (mut reply, _) = reply(&mut rng, framed, &body);
        reply.close = false;
        script.push(reply);
        bodies.push(body);
    }
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        script,
    )));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(tls) = acceptor.accept(socket).await else {
                continue;
            };
            tokio::spawn(answer_scripted(tls, Arc::clone(&queue), 1));
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let (client, counters) = client_at("https", port, &tls, 8);
    for body in bodies {
        let got = read_all(post(&client).await.unwrap()).await.unwrap();
        assert!(got == body, "{} bytes of {}", got.len(), body.len());
    }
    assert_eq!(opened(&counters), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
