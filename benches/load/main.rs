//! Gateway load: concurrent streaming clients against a synthetic OpenAI upstream, directly and
//! through proxies started as child processes, in the same run, compared. A benchmark: CI never
//! runs it. docs/performance-gateway.md documents the flags and records the figures.
//!
//!     cargo bench --bench load                                  # direct, then streamgate
//!     cargo bench --bench load -- --concurrency 50 --requests 2000 --delay-ms 20
//!     cargo bench --bench load -- --pin --reference nginx       # needs nginx and taskset
//!     cargo bench --bench load -- --matrix --matrix-scale 0.1   # issue #14's matrix, quick
//!
//! Everything listens on 127.0.0.1. The tool runs:
//! - a synthetic OpenAI Chat Completions upstream in this process ([`upstream`]): each answer a
//!   role chunk, `--chunks` one-token content chunks, a finish chunk, a usage chunk and
//!   `data: [DONE]`, each SSE frame its own HTTP body chunk, a settable pause between frames;
//! - the proxies under test ([`children`]): `streamgate serve` with a temporary config whose
//!   `openai` provider is that upstream, and with `--reference nginx` an unbuffered nginx
//!   forwarding bytes to it, the floor any proxy costs here. Both are killed on exit, panics
//!   included. With `--pin` (taskset) this tool runs on CPU 0 and every proxy on CPU 1, nginx
//!   with one worker unless `--reference-workers` says otherwise;
//! - phases of load ([`phase`]): C clients on keep-alive connections, one unmeasured warm-up
//!   request each, then R streams from a shared counter, through a door (OpenAI, Anthropic or
//!   native). Per stream: TTFB, total time, the gaps between body chunks carrying content
//!   tokens, and a check that the stream is whole ([`verify`]); per phase, the proxy's CPU
//!   (utime+stime from /proc over the measured part) and RSS ([`procfs`]).
//!
//! Modes:
//! - default: direct, streamgate, and nginx with `--reference nginx`, at one `--concurrency`
//!   and `--delay-ms`, one column each ([`report`]); `--quiet-gateway` adds a gateway without
//!   metrics and access lines, measured in the order B A A B against the first;
//! - `--matrix` ([`matrix`]): issue #14's measurement, pinned, with nginx: four settings
//!   (1 client; 50 and 500 clients at 20 ms between chunks; 500 clients without delay), each
//!   with a same-dialect row (OpenAI door) and a cross-dialect row (Anthropic door over the
//!   OpenAI upstream), three repetitions of the last setting for memory flatness, and a
//!   markdown summary against the targets (reported, not enforced);
//! - `--state-redis` ([`state_redis`]): the hub with the embedded journal against the hub with
//!   `[state] backend = "redis"`, through the native door.
//!
//! The exit code is 0 when every stream was whole and the proxies stayed up, 1 when not, 2 when
//! the run could not be set up.

mod args;
mod children;
mod matrix;
mod phase;
mod procfs;
mod report;
mod state_redis;
mod upstream;
mod verify;

use args::*;
use children::*;
use matrix::run_matrix;
use phase::*;
use procfs::*;
use report::*;
use state_redis::run_state_redis;
use upstream::*;
use verify::*;

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
    let clients = match args.matrix {
        true => matrix::max_clients(),
        false => args.concurrency,
    };
    let fds = raise_fd_limit(4 * clients as u64 + 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = if args.matrix {
        runtime.block_on(run_matrix(args, fds))
    } else if args.state_redis {
        runtime.block_on(run_state_redis(args, fds))
    } else {
        runtime.block_on(run_async(args, fds))
    };
    // Each child removes its own directory when dropped; the tool's, left empty, goes here.
    let _ = std::fs::remove_dir(tool_dir());
    outcome
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
             proxy_request_buffering off, upstream keepalive, access_log off",
            n.binary.display(),
            nginx_version(&n.binary),
            n.workers.len(),
            n.workers,
            n.pid
        );
    }
    println!(
        "{}; load average before the run: {}",
        match args.pin {
            true => "pinned: this tool (clients and upstream) on CPU 0, every proxy on CPU 1",
            false =>
                "the load generator and the synthetic upstream share these CPUs with the proxy",
        },
        loadavg()
    );

    let direct = direct_phase(&args, up_addr, &expected, &upstream).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    eprintln!("gateway phase ...");
    let via = run_phase(
        &args,
        Target::new(gateway.addr, Door::OpenAi, "openai/synthetic", args.history),
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
        let gateway_target =
            || Target::new(gateway.addr, Door::OpenAi, "openai/synthetic", args.history);
        let quiet_target = || Target::new(q.addr, Door::OpenAi, "openai/synthetic", args.history);
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
            Target::new(n.addr, Door::OpenAi, "synthetic", args.history),
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
