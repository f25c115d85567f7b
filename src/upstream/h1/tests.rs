//! The own client against a provider on 127.0.0.1 that behaves as told.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
async fn read_request(socket: &mut TcpStream) -> bool {
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
    let counters = Arc::<PoolCounters>::default();
    let target = Target::parse(&format!("http://127.0.0.1:{port}/v1/chat/completions")).unwrap();
    let tls = tls_config().unwrap();
    let client = Client::new(
        target,
        Duration::from_secs(5),
        &tls,
        Arc::clone(&counters),
        max_idle,
    );
    (client, counters)
}

async fn post(client: &Client) -> Result<Body, GatewayError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let (head, body) = client
        .post("p", headers, b"{\"stream\":true}".to_vec(), None)
        .await?;
    assert_eq!(head.status, 200);
    Ok(body)
}

/// The body's bytes to its end, or the error that cut it.
async fn read_all(mut body: Body) -> Result<Vec<u8>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
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
        let body = read_all(post(&client).await.unwrap()).await.unwrap();
        assert!(body.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(client.idle(), 1);
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
    let first = body.next().await.unwrap().unwrap();
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

/// Frames that arrive one at a time wake the reading task once each: the connection's own
/// hand-over of a chunk to the body (each side of the slot waking the other) wakes no one.
/// With the task's waker, each frame woke it about three times, and each wake polled the
/// whole connection task once more.
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
            let polled = body.poll_next_unpin(&mut Context::from_waker(&waker));
            match polled {
                Poll::Ready(Some(Ok(chunk))) => {
                    got += 1;
                    text.extend_from_slice(&chunk);
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
