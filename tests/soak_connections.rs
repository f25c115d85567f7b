//! Soak: a gateway process under 2,000 slowloris connections and a burst of idle sockets keeps
//! answering normal clients, closes every one of the hostile sockets itself, and stays within
//! a stated resident-memory bound (measured through /proc, not timed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/process.rs"]
mod process;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use process::GatewayProcess;
use providers::Dialect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Slowloris connections, each trickling a request head that never completes.
const SLOWLORIS: usize = 2_000;
/// Sockets that connect and send nothing at all.
const IDLE: usize = 1_000;
/// Source addresses the hostile sockets come from (127.0.0.10 ...): under the per-address cap
/// each, so every one of them is admitted and has to be closed by the timeouts.
const HOSTILE_SOURCES: u8 = 10;
/// The gateway's header read timeout here (small, so that the test stays short).
const HEADER_TIMEOUT_MS: u64 = 2_000;
/// Peak resident memory allowed to the gateway over the whole run (VmHWM). A debug build
/// idles at about 23 MiB here, and hyper holds a read buffer and a task of a few KiB per
/// connection: 3,000 open connections peaked at 75 MiB when measured. 160 MiB leaves room for
/// a loaded machine's allocator slack and still fails loudly if a connection starts holding
/// buffers of its own.
const PEAK_RSS_BOUND: u64 = 160 * 1024 * 1024;
/// How long any hostile socket may live before the test calls it "not closed by the gateway".
const HOSTILE_LIFETIME: Duration = Duration::from_secs(30);

async fn connect_from(source: Ipv4Addr, gateway: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::from((source, 0))).ok()?;
    socket.connect(gateway).await.ok()
}

fn hostile_source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + (i % usize::from(HOSTILE_SOURCES)) as u8)
}

/// A slowloris client: a partial head, then one byte every 500 ms. True when the gateway
/// closed the connection (reading ends, or a write fails) within [`HOSTILE_LIFETIME`].
async fn slowloris(gateway: SocketAddr, i: usize) -> bool {
    let Some(mut stream) = connect_from(hostile_source(i), gateway).await else {
        return false;
    };
    if stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nx-slow: ")
        .await
        .is_err()
    {
        return true;
    }
    let (mut read, mut write) = stream.split();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let watched = async {
        tokio::select! {
            () = trickle => {}
            () = closed => {}
        }
    };
    tokio::time::timeout(HOSTILE_LIFETIME, watched)
        .await
        .is_ok()
}

/// A socket that sends nothing; true when the gateway closed it within [`HOSTILE_LIFETIME`].
async fn idle(gateway: SocketAddr, i: usize) -> bool {
    let Some(mut stream) = connect_from(hostile_source(i), gateway).await else {
        return false;
    };
    let mut buf = [0u8; 64];
    tokio::time::timeout(HOSTILE_LIFETIME, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_sockets_do_not_shut_out_normal_clients() {
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut gateway = GatewayProcess::serve(&format!(
        "[server]\nheader_read_timeout_ms = {HEADER_TIMEOUT_MS}\nkeep_alive_idle_ms = 5000\n\
         max_connections = 5000\nmax_connections_per_address = 400\n\n{}",
        process::replay_providers(&replay.url())
    ))
    .await;
    let addr = gateway.addr;
    let pid = gateway.pid();
    let fds_before = open_fds(pid);
    let rss_before = gateway.rss_bytes();

    let mut hostile = tokio::task::JoinSet::new();
    for i in 0..SLOWLORIS {
        hostile.spawn(slowloris(addr, i));
    }
    for i in 0..IDLE {
        hostile.spawn(idle(addr, i));
    }

    // Normal clients from 127.0.0.1, one request after another, while the hostile sockets
    // are open; each must get its whole answer.
    let done = Arc::new(AtomicBool::new(false));
    let normal = tokio::spawn({
        let done = Arc::clone(&done);
        let url = format!("{}/v1/chat/completions", gateway.url);
        async move {
            let client = gw::client();
            let body =
                serde_json::to_vec(&gw::chat_body(Dialect::OpenAi, "openai/text_basic", false))
                    .unwrap();
            let mut answered = 0usize;
            while !done.load(Ordering::Relaxed) || answered < 10 {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let json: serde_json::Value =
                    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
                assert!(
                    json["choices"][0]["message"]["content"].is_string(),
                    "{json}"
                );
                answered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answered
        }
    });

    let mut peak_fds = 0;
    let mut closed_by_gateway = 0;
    let mut results = 0;
    while let Some(closed) = hostile.join_next().await {
        peak_fds = peak_fds.max(open_fds(pid));
        results += 1;
        closed_by_gateway += usize::from(closed.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let answered = normal.await.unwrap();
    assert_eq!(results, SLOWLORIS + IDLE);
    assert_eq!(
        closed_by_gateway,
        SLOWLORIS + IDLE,
        "hostile sockets the gateway did not close"
    );
    assert!(gateway.is_running(), "the gateway died");

    // Every hostile socket's descriptor is gone from the gateway, not parked somewhere.
    let settled = tokio::time::timeout(Duration::from_secs(10), async {
        while open_fds(pid) > fds_before + 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let fds_after = open_fds(pid);
    let peak = gateway.peak_rss_bytes();
    eprintln!(
        "soak: rss before {} KiB, peak {} KiB, now {} KiB; fds before {fds_before}, \
         peak seen {peak_fds}, after {fds_after}; {answered} normal answers",
        rss_before / 1024,
        peak / 1024,
        gateway.rss_bytes() / 1024,
    );
    assert!(
        settled.is_ok(),
        "the gateway still holds {fds_after} descriptors"
    );
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak RSS {peak} bytes is over {PEAK_RSS_BOUND}"
    );
}
