//! The listener: accepts client connections under `[server]`'s caps and timeouts and serves
//! each with hyper (HTTP/1.1 and HTTP/2, behind TLS when configured), draining them on
//! shutdown.
//!
//! Why not `axum::serve`: it has no connection cap and no read timeout, so 2,000 slowloris
//! connections or 20,000 idle sockets held every file descriptor and shut other clients out.
//!
//! - Caps ([`admit`]): over `max_connections` a connection gets `503` with `Retry-After`, over
//!   `max_connections_per_address` a `429`, written straight to the socket before it is
//!   closed (TLS listeners close without a word: the TLS handshake comes after the check, so
//!   an over-cap socket costs no handshake). The listener keeps accepting at the cap rather
//!   than pausing: a paused listener leaves new clients in the kernel's backlog with no answer
//!   until they time out, while a refusal tells SDKs and load balancers to retry.
//! - Clocks ([`watch`]): the request head within `header_read_timeout_ms`, idle connections
//!   closed after `keep_alive_idle_ms`; neither touches a request in flight (a long streaming
//!   answer runs as long as it runs).
//! - Bodies ([`bodies`]): the whole request body within `body_read_timeout_ms` of its head.
//! - Descriptors ([`files`]): the soft open-file limit is raised to fit `max_connections`.
//! - Versions ([`protocol`]): HTTP/1.1 or HTTP/2, told from ALPN or from the first bytes
//!   (peeked) before hyper reads any.

mod admit;
mod bodies;
mod files;
mod protocol;
mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::drain::Drain;
use crate::config::ServerConfig;
use admit::{Admission, Refusal, Slot};
pub(crate) use bodies::BodyTimedOut;
pub(crate) use files::fit as fit_open_files;
use protocol::{Builders, Version};
use watch::{Activity, Clocks, Watched};

/// `[server]`'s bounds on client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    max_connections: usize,
    max_connections_per_address: usize,
    clocks: Clocks,
    body_read: Duration,
}

impl Limits {
    /// `[server] max_connections`.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The bounds `server` sets.
    pub fn from_config(server: &ServerConfig) -> Self {
        Limits {
            max_connections: server.max_connections,
            max_connections_per_address: server.max_connections_per_address,
            clocks: Clocks {
                header_read: Duration::from_millis(server.header_read_timeout_ms),
                keep_alive_idle: Duration::from_millis(server.keep_alive_idle_ms),
            },
            body_read: Duration::from_millis(server.body_read_timeout_ms),
        }
    }
}

/// The largest request head (HTTP/1.1 request line and headers, HTTP/2 header list): hyper's
/// read buffer never grows past it, so a client sending endless headers costs at most this.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// HTTP/2 requests open at once on one connection (hyper's default is 200).
const HTTP2_MAX_STREAMS: u32 = 100;
/// HTTP/2 pings to tell a vanished client from a slow one, and how long their answer may take.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Refused connections being answered at once; beyond that one is closed without an answer.
const REFUSALS: usize = 1024;
/// How long a refused connection is kept to read what its client sends: closing a socket
/// with unread input sends a reset, which can destroy the answer before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// The most read from a refused connection before it is closed anyway.
const REFUSAL_READ_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` (TLS-terminated with `tls`) under `limits` until `shutdown`,
/// then stops accepting and waits for open requests to finish (connections between requests,
/// a slow head included, close at once; HTTP/2 ones with requests open get GOAWAY) until
/// `drain`'s kill, which drops the connections still open. Every response is counted in
/// `drain` until written.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> std::io::Result<()> {
    let admission = Admission::new(limits.max_connections, limits.max_connections_per_address);
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    let builders = Arc::new(builders());
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to close.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match admission.admit(peer.ip()) {
            Ok(slot) => {
                // A socket that refuses NODELAY still works, only slower to flush.
                let _ = tcp.set_nodelay(true);
                let connection = Connection {
                    peer,
                    slot,
                    app: app.clone(),
                    builders: Arc::clone(&builders),
                    limits,
                    stop: stop.clone(),
                    drain: drain.clone(),
                };
                connections.spawn(connection.run(tcp, tls.clone()));
            }
            Err(refusal) => refuse(tcp, peer, refusal, tls.is_none(), &refusals),
        }
    }
    drop(listener);
    stop.cancel();
    connections.close();
    // Each connection returns at the kill: no task outlives the drain.
    connections.wait().await;
    Ok(())
}

/// hyper's connection settings: HTTP/1.1 or HTTP/2 by what the client speaks (or ALPN).
fn builders() -> Builders {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .max_buf_size(MAX_HEAD_BYTES)
        // The buffer's cap alone is soft: hyper reads into all the room a buffer has, and a
        // doubled buffer can hold a whole head well past the cap before it is parsed.
        .max_header_size(MAX_HEAD_BYTES)
        // The watchdog times heads (see `watch`); hyper's timer would also cut idle
        // keep-alive connections.
        .header_read_timeout(None);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        .timer(TokioTimer::new())
        // WebSocket over HTTP/2 (RFC 8441), as axum's own server allows.
        .enable_connect_protocol();
    Builders { http1, http2 }
}

/// Answers an over-cap connection (plain HTTP only) and closes it.
fn refuse(
    mut tcp: TcpStream,
    peer: SocketAddr,
    refusal: Refusal,
    plain: bool,
    refusals: &Arc<Semaphore>,
) {
    tracing::debug!(%peer, ?refusal, "connection refused");
    if !plain {
        return;
    }
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            tcp.write_all(&refusal.response()).await?;
            tcp.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut read = 0;
            while read < REFUSAL_READ_BYTES {
                match tcp.read(&mut sink).await? {
                    0 => break,
                    n => read += n,
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// One admitted connection, before its TLS handshake.
struct Connection {
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    builders: Arc<Builders>,
    limits: Limits,
    stop: CancellationToken,
    drain: Drain,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let opened = Instant::now();
        let activity = Activity::new(opened);
        // The handshake, and the wait for the first bytes, count towards the first head's time.
        let deadline = opened + self.limits.clocks.header_read;
        let Some(acceptor) = tls else {
            let sniffed = tokio::select! {
                sniffed = tokio::time::timeout_at(deadline, protocol::sniff(&tcp)) => sniffed,
                () = self.stop.cancelled() => return,
            };
            match sniffed {
                Ok(Some(version)) => self.serve(tcp, version, activity).await,
                Ok(None) => {}
                Err(_) => tracing::debug!(peer = %self.peer, "no request head in time"),
            }
            return;
        };
        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp));
        let peer = self.peer;
        tokio::select! {
            shaken = handshake => match shaken {
                Ok(Ok(stream)) => {
                    let version = protocol::from_alpn(stream.get_ref().1.alpn_protocol());
                    // Boxed: TLS state would otherwise size every plain connection's task too.
                    Box::pin(self.serve(stream, version, activity)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            },
            () = self.stop.cancelled() => {}
        }
    }

    async fn serve<I>(self, io: I, version: Version, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            peer,
            slot,
            app,
            builders,
            limits,
            stop,
            drain,
        } = self;
        let io = TokioIo::new(Watched::new(io, Arc::clone(&activity), slot));
        let kill = drain.kill().clone();
        let service = Service {
            app: TowerToHyperService::new(app),
            activity: Arc::clone(&activity),
            body_read: limits.body_read,
            drain,
        };
        let mut conn = pin!(builders.serve(version, io, service));
        let mut stopping = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = stop.cancelled(), if !stopping => {
                    // Between requests (a slow head included) there is nothing to drain.
                    if !activity.busy() {
                        return;
                    }
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                expiry = activity.expired(limits.clocks) => {
                    // Nothing is in flight: dropping the connection closes the socket.
                    tracing::debug!(%peer, ?expiry, "closing a connection");
                    return;
                }
                () = kill.cancelled() => {
                    // The shutdown's grace and the time to write the ends are over.
                    tracing::debug!(%peer, "dropping a connection at the end of the drain");
                    return;
                }
            }
        }
    }
}

/// The app as hyper's service for one connection: marks each request in flight until its
/// response is written, and puts the body deadline on its body.
#[derive(Clone)]
struct Service {
    app: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    body_read: Duration,
    drain: Drain,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    /// Served as it is, not boxed once more into an axum `Body`: every chunk of a streamed
    /// answer goes through each box.
    type Response = Response<bodies::Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = (self.activity.request(request.version()), self.drain.count());
        let body_read = self.body_read;
        let request: Request<Body> = request.map(|body| bodies::with_deadline(body, body_read));
        let answer = self.app.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| bodies::tracked(body, in_flight)))
        })
    }
}
