//! Which HTTP version a client connection speaks, known before hyper reads a byte of it: from
//! ALPN behind TLS, from its first bytes (peeked, so they stay in the socket) on plain TCP.
//!
//! hyper-util's `auto` connection finds the version by reading the 24 bytes of the HTTP/2
//! preface and handing them back to hyper's HTTP/1.1 reader, whose first read then returns
//! those 24 bytes alone. Its next read reserves another 8 KiB beside them, so the connection's
//! read buffer doubled to 16 KiB for its whole life: 4 MiB over 500 connections. Served by
//! hyper's HTTP/1.1 or HTTP/2 connection directly, its read buffer stays at 8 KiB.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;

use super::Service;

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest wait between two looks at a connection whose first bytes are a strict prefix
/// of the preface (the waits double from 1 ms): a client that stops there costs a wake-up
/// this often until the head's deadline.
const MAX_SNIFF_WAIT: Duration = Duration::from_millis(64);

/// An HTTP version a connection was found to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2 with prior knowledge, or negotiated by ALPN.
    Http2,
}

/// The version the first bytes of a connection say, if they say one yet: HTTP/2 once the
/// whole preface is there, HTTP/1 as soon as a byte differs from it.
fn from_first_bytes(first: &[u8]) -> Option<Version> {
    let n = first.len().min(PREFACE.len());
    if n == 0 {
        return None;
    }
    if first[..n] != PREFACE[..n] {
        return Some(Version::Http1);
    }
    (n == PREFACE.len()).then_some(Version::Http2)
}

/// The version of a plain TCP connection, from the bytes waiting in its socket; None when it
/// closes (or fails) first. Waits for the bytes: the caller bounds the wait.
pub(super) async fn sniff(tcp: &TcpStream) -> Option<Version> {
    let mut first = [0u8; PREFACE.len()];
    let mut wait = Duration::from_millis(1);
    loop {
        let n = tcp.peek(&mut first).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(version) = from_first_bytes(&first[..n]) {
            return Some(version);
        }
        // The bytes so far begin the preface, and they stay readable: the socket has nothing
        // to wait on until more come, so look again after a while.
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_SNIFF_WAIT);
    }
}

/// The version a TLS handshake agreed on by ALPN. Without ALPN it is HTTP/1.1: HTTP/2 over
/// TLS is negotiated by ALPN only (RFC 9113, section 3.2).
pub(super) fn from_alpn(protocol: Option<&[u8]>) -> Version {
    match protocol {
        Some(b"h2") => Version::Http2,
        _ => Version::Http1,
    }
}

/// hyper's connection builders, one per version.
pub(super) struct Builders {
    pub(super) http1: http1::Builder,
    pub(super) http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    /// Serves `io` with `service` as `version`.
    pub(super) fn serve<I>(&self, version: Version, io: I, service: Service) -> Served<I>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        match version {
            Version::Http1 => {
                Served::Http1(self.http1.serve_connection(io, service).with_upgrades())
            }
            Version::Http2 => Served::Http2(Box::new(self.http2.serve_connection(io, service))),
        }
    }
}

/// One client connection being served. HTTP/2's state is boxed: it is twice HTTP/1.1's, and
/// inline it would size every HTTP/1.1 connection's task too.
#[expect(
    clippy::large_enum_variant,
    reason = "HTTP/1.1 is the common case: boxing it too would cost every connection an allocation"
)]
pub(super) enum Served<I> {
    Http1(http1::UpgradeableConnection<I, Service>),
    Http2(Box<http2::Connection<I, Service, TokioExecutor>>),
}

impl<I> Served<I>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    /// Finishes the requests in flight, takes no new one, then ends (keep polling it).
    pub(super) fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.get_mut() {
            Served::Http1(conn) => Pin::new(conn).graceful_shutdown(),
            Served::Http2(conn) => Pin::new(conn.as_mut()).graceful_shutdown(),
        }
    }
}

impl<I> Future for Served<I>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    type Output = Result<(), Box<dyn Error + Send + Sync>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Served::Http1(conn) => Pin::new(conn).poll(cx).map_err(Into::into),
            Served::Http2(conn) => Pin::new(conn.as_mut()).poll(cx).map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cut of the preface is undecided, the whole preface (with or without what
    /// follows) is HTTP/2, and any byte off it at any place is HTTP/1.
    #[test]
    fn the_first_bytes_decide_only_once_they_can() {
        assert_eq!(from_first_bytes(b""), None);
        for n in 1..PREFACE.len() {
            assert_eq!(from_first_bytes(&PREFACE[..n]), None, "{n}");
        }
        assert_eq!(from_first_bytes(PREFACE), Some(Version::Http2));
        let mut more = PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(from_first_bytes(&more), Some(Version::Http2));
        for at in 0..PREFACE.len() {
            for len in at + 1..=PREFACE.len() {
                let mut bytes = PREFACE[..len].to_vec();
                bytes[at] ^= 0x20;
                assert_eq!(from_first_bytes(&bytes), Some(Version::Http1), "{at} {len}");
            }
        }
        for request in [
            &b"POST /v1/chat/completions HTTP/1.1\r\n"[..],
            b"GET / HTTP/1.0\r\n",
            b"P",
        ] {
            let want = (request != b"P").then_some(Version::Http1);
            assert_eq!(from_first_bytes(request), want);
        }
    }

    #[test]
    fn alpn_names_the_version_and_http1_is_the_default() {
        assert_eq!(from_alpn(Some(b"h2")), Version::Http2);
        assert_eq!(from_alpn(Some(b"http/1.1")), Version::Http1);
        assert_eq!(from_alpn(None), Version::Http1);
    }
}
