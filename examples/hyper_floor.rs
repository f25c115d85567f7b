//! The floor of a hyper-based gateway (a benchmark reference, not a product): a reverse proxy
//! that forwards requests and streams response bytes unchanged, with hyper's HTTP/1.1 server
//! and client and nothing else (no parsing, translation, limits, logs or metrics). It measures
//! how much of streamgate's CPU per stream any gateway built on hyper and tokio pays, beside
//! nginx's.
//!
//!     cargo build --release --example hyper_floor --bench load --bin streamgate
//!     cargo bench --bench load -- --pin --reference nginx --gateway target/release/examples/hyper_floor
//!
//! It takes the load tool's gateway arguments (`serve --config FILE --listen ADDR`) and reads
//! the upstream from the config's first `base_url = "http://HOST:PORT/..."`. Each client
//! connection gets one upstream connection of its own, kept alive as nginx's `keepalive` does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Body = BoxBody<Bytes, hyper::Error>;
type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| format!("{name} is required"))
    };
    let listen: SocketAddr = value("--listen")?.parse()?;
    let config = std::fs::read_to_string(value("--config")?)?;
    let upstream =
        upstream_of(&config).ok_or("no base_url = \"http://HOST:PORT/...\" in the config")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

/// The `HOST:PORT` of the config's first plain-HTTP `base_url`.
fn upstream_of(config: &str) -> Option<String> {
    let line = config
        .lines()
        .find(|l| l.trim_start().starts_with("base_url"))?;
    let url = line.split('"').nth(1)?.strip_prefix("http://")?;
    Some(url.split('/').next()?.to_owned())
}

async fn serve(listen: SocketAddr, upstream: String) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).await?;
    let upstream: Arc<str> = upstream.into();
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let upstream = Arc::clone(&upstream);
        tokio::spawn(async move {
            // This client connection's own upstream connection, opened at its first request.
            let sender: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
            let service = hyper::service::service_fn(move |request| {
                forward(request, Arc::clone(&upstream), Arc::clone(&sender))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn forward(
    request: Request<Incoming>,
    upstream: Arc<str>,
    sender: Arc<Mutex<Option<SendRequest<Incoming>>>>,
) -> Result<Response<Body>, Infallible> {
    if request.uri().path() == "/healthz" {
        return Ok(Response::new(full("ok\n")));
    }
    match send(request, &upstream, &sender).await {
        Ok(response) => Ok(response.map(BodyExt::boxed)),
        Err(e) => {
            let mut response = Response::new(full(e.to_string()));
            *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}

async fn send(
    mut request: Request<Incoming>,
    upstream: &str,
    sender: &Mutex<Option<SendRequest<Incoming>>>,
) -> Result<Response<Incoming>, Error> {
    let mut slot = sender.lock().await;
    let reusable = match slot.as_mut() {
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        let tcp = TcpStream::connect(upstream).await?;
        let _ = tcp.set_nodelay(true);
        let (s, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        *slot = Some(s);
    }
    let s = slot.as_mut().ok_or("no upstream connection")?;
    request
        .headers_mut()
        .insert(hyper::header::HOST, upstream.parse()?);
    Ok(s.send_request(request).await?)
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}
