//! A lossy TCP relay on 127.0.0.1 for the chaos test: every accepted connection is proxied to
//! one target, and a seeded RNG injects faults. Loaded with `#[path]` by `tests/chaos.rs`;
//! docs/chaos.md explains the fault model.
//!
//! TCP never loses data silently, so "a link that drops packets" is modeled by what a lossy
//! link does to TCP connections:
//! - **lost packets** are retransmitted late: each forwarded chunk (either direction) is held
//!   back, with probability [`Faults::delay_p`], for a random 0..=[`Faults::max_delay`];
//! - **resets**: each exchange on a connection (a burst of gateway bytes, the request, then the
//!   upstream's answer) draws, with probability [`Faults::reset_p`], a byte offset of that
//!   exchange: half uniform in 0..[`Faults::reset_near`] (the request, the response head, a
//!   small answer's body), half log-uniform in 1..=[`Faults::reset_span`] (every depth of a
//!   long stream). When the traffic reaches it, the bytes before it are forwarded and both
//!   sockets are closed with `SO_LINGER 0` (an RST to each side);
//! - **stalls**: with probability [`Faults::stall_p`], an exchange goes silent after a random
//!   offset in 0..[`Faults::stall_span`] bytes, connection open, until the gateway gives up
//!   (its first-byte or idle timer) and closes it, or [`Faults::stall_hold`] passed. Stalls
//!   are capped ([`Faults::max_stalls`]) and spaced ([`Faults::stall_spacing`]): a stall makes
//!   the gateway fail over, and a second stall in the same answer would leave no route.
//!
//! Accept order depends on scheduling, so one seed gives the same fault *mix* but not the same
//! fault at the same byte of the same request from run to run.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// What the relay does to the traffic.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Seed of the relay's master RNG (each connection gets its own RNG seeded from it).
    pub seed: u64,
    /// Probability that a forwarded chunk is delayed (a lost packet, retransmitted).
    pub delay_p: f64,
    /// Longest such delay.
    pub max_delay: Duration,
    /// Probability that an exchange is reset.
    pub reset_p: f64,
    /// Half the reset offsets are uniform in 0..this many bytes of the exchange.
    pub reset_near: u64,
    /// The other half are log-uniform in 1..=this many bytes of the exchange.
    pub reset_span: u64,
    /// Probability that an exchange stalls.
    pub stall_p: f64,
    /// Stall offsets are uniform in 0..this many bytes of the exchange.
    pub stall_span: u64,
    /// Longest a stalled connection is held open.
    pub stall_hold: Duration,
    /// Most stalls in one run.
    pub max_stalls: u64,
    /// Least time between two stalls.
    pub stall_spacing: Duration,
    /// Read buffer per direction.
    pub chunk: usize,
}

/// What the relay did.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub exchanges: AtomicU64,
    pub resets: AtomicU64,
    pub stalls: AtomicU64,
    pub delays: AtomicU64,
    pub chunks: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Connections the relay could not open to the target.
    pub connect_errors: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections: u64,
    pub exchanges: u64,
    pub resets: u64,
    pub stalls: u64,
    pub delays: u64,
    pub chunks: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub connect_errors: u64,
}

struct Shared {
    faults: Faults,
    target: SocketAddr,
    master: Mutex<fastrand::Rng>,
    last_stall: Mutex<Option<Instant>>,
    counters: Counters,
}

/// A running relay; dropping it stops accepting (open connections run on to their end).
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Listens on 127.0.0.1:0 and relays every connection to `target` under `faults`.
    pub async fn start(target: SocketAddr, faults: Faults) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            master: Mutex::new(fastrand::Rng::with_seed(faults.seed)),
            faults,
            target,
            last_stall: Mutex::new(None),
            counters: Counters::default(),
        });
        let accept = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let seed = accept.master.lock().unwrap().u64(..);
                accept.counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(
                    accept.clone(),
                    inbound,
                    fastrand::Rng::with_seed(seed),
                ));
            }
        });
        Relay { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections: get(&c.connections),
            exchanges: get(&c.exchanges),
            resets: get(&c.resets),
            stalls: get(&c.stalls),
            delays: get(&c.delays),
            chunks: get(&c.chunks),
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
            connect_errors: get(&c.connect_errors),
        }
    }
}

/// The fate of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Clean,
    /// Reset once this many bytes of the exchange went through.
    Reset(u64),
    /// Go silent once this many bytes of the exchange went through.
    Stall(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

fn draw_fate(shared: &Shared, rng: &mut fastrand::Rng) -> Fate {
    let f = &shared.faults;
    let roll = rng.f64();
    if roll < f.reset_p {
        if rng.bool() {
            // Inside a small answer (or its request, or its head).
            return Fate::Reset(rng.u64(..f.reset_near.max(1)));
        }
        // Log-uniform in 1..=reset_span: at every scale of a long stream.
        let span = (f.reset_span.max(2) as f64).ln();
        return Fate::Reset((rng.f64() * span).exp() as u64);
    }
    if roll < f.reset_p + f.stall_p {
        let mut last = shared.last_stall.lock().unwrap();
        let now = Instant::now();
        let spaced = last.is_none_or(|t| now.duration_since(t) >= f.stall_spacing);
        if spaced && shared.counters.stalls.load(Ordering::Relaxed) < f.max_stalls {
            // Reserve the slot now, so that two exchanges cannot both take it.
            *last = Some(now);
            shared.counters.stalls.fetch_add(1, Ordering::Relaxed);
            return Fate::Stall(rng.u64(..f.stall_span.max(1)));
        }
    }
    Fate::Clean
}

/// Sets `SO_LINGER 0` so that dropping the socket sends an RST instead of a FIN.
#[allow(deprecated)]
fn abort(stream: &TcpStream) {
    // A zero linger does not block on drop: the kernel discards the buffer and resets.
    let _ = stream.set_linger(Some(Duration::ZERO));
}

async fn relay(shared: Arc<Shared>, mut inbound: TcpStream, mut rng: fastrand::Rng) {
    let Ok(mut outbound) = TcpStream::connect(shared.target).await else {
        shared
            .counters
            .connect_errors
            .fetch_add(1, Ordering::Relaxed);
        abort(&inbound);
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let f = shared.faults.clone();
    let c = &shared.counters;
    let mut up = vec![0u8; f.chunk];
    let mut down = vec![0u8; f.chunk];
    let mut last_dir = Dir::Down;
    let mut fate = Fate::Clean;
    let mut done: u64 = 0; // bytes of the current exchange
    loop {
        let (dir, n) = {
            let (ir, _) = inbound.split();
            let (or, _) = outbound.split();
            let (mut ir, mut or) = (ir, or);
            tokio::select! {
                r = ir.read(&mut up) => (Dir::Up, r),
                r = or.read(&mut down) => (Dir::Down, r),
            }
        };
        let n = match n {
            Ok(0) | Err(_) => {
                // One side closed (or reset): pass the end on as an end.
                let _ = inbound.shutdown().await;
                let _ = outbound.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if dir == Dir::Up && last_dir == Dir::Down {
            // The gateway speaks after the upstream did (or first): a new exchange.
            c.exchanges.fetch_add(1, Ordering::Relaxed);
            fate = draw_fate(&shared, &mut rng);
            done = 0;
        }
        last_dir = dir;
        c.chunks.fetch_add(1, Ordering::Relaxed);
        if rng.f64() < f.delay_p {
            c.delays.fetch_add(1, Ordering::Relaxed);
            let ms = rng.u64(..=f.max_delay.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let data = match dir {
            Dir::Up => &up[..n],
            Dir::Down => &down[..n],
        };
        let (cut, fault) = match fate {
            Fate::Reset(at) | Fate::Stall(at) if done + n as u64 >= at => {
                ((at.saturating_sub(done)) as usize, true)
            }
            _ => (n, false),
        };
        let (to, counter) = match dir {
            Dir::Up => (&mut outbound, &c.bytes_up),
            Dir::Down => (&mut inbound, &c.bytes_down),
        };
        if cut > 0 && to.write_all(&data[..cut]).await.is_err() {
            return;
        }
        counter.fetch_add(cut as u64, Ordering::Relaxed);
        done += cut as u64;
        if !fault {
            continue;
        }
        match fate {
            Fate::Reset(_) => {
                c.resets.fetch_add(1, Ordering::Relaxed);
                let _ = to.flush().await;
                abort(&inbound);
                abort(&outbound);
                return;
            }
            Fate::Stall(_) => {
                // Silence both ways; wait for the gateway to give up (it closes its side).
                let deadline = tokio::time::sleep(f.stall_hold);
                tokio::pin!(deadline);
                let mut sink = vec![0u8; 4096];
                loop {
                    tokio::select! {
                        () = &mut deadline => break,
                        r = inbound.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { break },
                    }
                }
                abort(&inbound);
                abort(&outbound);
                return;
            }
            Fate::Clean => {}
        }
    }
}
