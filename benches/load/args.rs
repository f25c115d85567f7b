//! The command line.

use super::*;

#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    /// Whether `--requests` was given (the matrix then uses it for every setting).
    pub(crate) requests_given: bool,
    pub(crate) chunks: usize,
    /// `--history N`: earlier turns (a user and an assistant message each, ~830 bytes of body)
    /// before the request's question, for a request the size of a real conversation's.
    pub(crate) history: usize,
    pub(crate) delay: Duration,
    pub(crate) warmup: usize,
    pub(crate) gateway: PathBuf,
    pub(crate) gateway_log: String,
    /// `--quiet-gateway`: add a phase through a second gateway with `[server] metrics = false`
    /// and `[log] access = false`, what metrics and access lines cost (docs/performance.md).
    pub(crate) quiet: bool,
    /// `--quiet-config TEXT`: the second gateway's extra `[server]` keys and tables (default
    /// [`QUIET`]); `--quiet-config ""` makes it identical, to measure the method's own bias.
    pub(crate) quiet_config: String,
    /// `--pin`: this tool (clients and upstream) on CPU 0, every proxy on CPU 1 (taskset).
    pub(crate) pin: bool,
    /// `--reference nginx`: add a phase through nginx.
    pub(crate) reference: bool,
    pub(crate) reference_bin: Option<PathBuf>,
    /// nginx `worker_processes`: `--reference-workers`, else 1 when pinned (one CPU for
    /// the proxy), else 2.
    pub(crate) reference_workers: usize,
    /// `--state-redis`: the hub's cost with `[state] backend = "redis"` against the embedded
    /// journal, through the native `POST /v1/streams` door.
    pub(crate) state_redis: bool,
    /// `--redis-server PATH`.
    pub(crate) redis_bin: Option<PathBuf>,
    /// `--redis-cpu N` (with `--pin`): the CPU redis-server runs on: 1 (the default) beside
    /// the gateways, 0 beside this tool, as a Redis on a host of its own would not take the
    /// gateway's CPU.
    pub(crate) redis_cpu: u8,
    /// `--matrix`: direct, streamgate (OpenAI and Anthropic doors) and nginx at four load
    /// settings, pinned, with a summary against issue #14's targets.
    pub(crate) matrix: bool,
    /// `--matrix-scale F`: multiplies the matrix's request counts (quick runs).
    pub(crate) matrix_scale: f64,
}

/// The second gateway of `--quiet-gateway`: metrics and access lines off.
pub(crate) const QUIET: &str = "metrics = false\n\n[log]\naccess = false\n";

/// Turns `--history` takes at most (about 830 kB of request body; the gateway's default body
/// limit is 8 MiB).
const MAX_HISTORY: usize = 1000;

pub(crate) const USAGE: &str = "cargo bench --bench load -- [--concurrency N] [--requests N] [--chunks N] [--history N] \
                     [--delay-ms F] [--warmup N] [--gateway PATH] [--gateway-log FILTER] \
                     [--quiet-gateway] [--quiet-config TEXT] [--pin] [--reference nginx] [--reference-bin PATH] \
                     [--reference-workers N] [--state-redis] [--redis-server PATH] [--redis-cpu 0|1] \
                     [--matrix] [--matrix-scale F]";

impl Args {
    pub(crate) fn parse() -> Res<Args> {
        let mut args = Args {
            concurrency: 500,
            requests: 5000,
            requests_given: false,
            chunks: 50,
            history: 0,
            delay: Duration::ZERO,
            warmup: 1,
            gateway: PathBuf::from(env!("CARGO_BIN_EXE_streamgate")),
            gateway_log: "info".to_owned(),
            quiet: false,
            quiet_config: QUIET.to_owned(),
            pin: false,
            reference: false,
            reference_bin: None,
            reference_workers: 0,
            state_redis: false,
            redis_bin: None,
            redis_cpu: 1,
            matrix: false,
            matrix_scale: 1.0,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let known = [
                "--concurrency",
                "--requests",
                "--chunks",
                "--history",
                "--delay-ms",
                "--warmup",
                "--gateway",
                "--gateway-log",
                "--reference",
                "--reference-bin",
                "--reference-workers",
                "--quiet-config",
                "--redis-server",
                "--redis-cpu",
                "--matrix-scale",
            ];
            if name == "--help" || name == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            if name == "--quiet-gateway" {
                args.quiet = true;
                continue;
            }
            if name == "--pin" {
                args.pin = true;
                continue;
            }
            if name == "--matrix" {
                args.matrix = true;
                continue;
            }
            if name == "--state-redis" {
                args.state_redis = true;
                continue;
            }
            if !known.contains(&name.as_str()) {
                continue; // cargo's --bench, filters, anything else
            }
            let value = match inline {
                Some(v) => v,
                None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
            };
            let bad = |e: &dyn std::fmt::Display| format!("{name} {value}: {e}");
            match name.as_str() {
                "--concurrency" => args.concurrency = value.parse().map_err(|e| bad(&e))?,
                "--requests" => {
                    args.requests = value.parse().map_err(|e| bad(&e))?;
                    args.requests_given = true;
                }
                "--matrix-scale" => {
                    let scale: f64 = value.parse().map_err(|e| bad(&e))?;
                    if !(scale > 0.0 && scale <= 100.0) {
                        return Err(bad(&"must be above 0 and at most 100").into());
                    }
                    args.matrix_scale = scale;
                }
                "--chunks" => args.chunks = value.parse().map_err(|e| bad(&e))?,
                "--warmup" => args.warmup = value.parse().map_err(|e| bad(&e))?,
                "--history" => {
                    args.history = value.parse().map_err(|e| bad(&e))?;
                    if args.history > MAX_HISTORY {
                        return Err(bad(&format!("at most {MAX_HISTORY} turns")).into());
                    }
                }
                "--delay-ms" => {
                    let ms: f64 = value.parse().map_err(|e| bad(&e))?;
                    if !(0.0..=60_000.0).contains(&ms) {
                        return Err(bad(&"must be between 0 and 60000").into());
                    }
                    args.delay = Duration::from_secs_f64(ms / 1000.0);
                }
                "--gateway" => args.gateway = PathBuf::from(value),
                "--gateway-log" => args.gateway_log = value,
                "--quiet-config" => {
                    args.quiet = true;
                    args.quiet_config = value.replace("\\n", "\n");
                }
                "--reference" if value == "nginx" => args.reference = true,
                "--reference" => return Err(bad(&"the only reference proxy is `nginx`").into()),
                "--reference-bin" => args.reference_bin = Some(PathBuf::from(value)),
                "--redis-server" => args.redis_bin = Some(PathBuf::from(value)),
                "--redis-cpu" => {
                    args.redis_cpu = match value.as_str() {
                        "0" => 0,
                        "1" => 1,
                        _ => return Err("--redis-cpu is 0 or 1".into()),
                    };
                }
                "--reference-workers" => {
                    args.reference_workers = value.parse().map_err(|e| bad(&e))?;
                    if args.reference_workers == 0 {
                        return Err("--reference-workers must be at least 1".into());
                    }
                }
                _ => {}
            }
        }
        if args.concurrency == 0 || args.requests == 0 {
            return Err("--concurrency and --requests must be at least 1".into());
        }
        if args.matrix {
            if args.state_redis || args.quiet {
                return Err(
                    "--matrix does not combine with --state-redis or --quiet-gateway".into(),
                );
            }
            // The matrix is the pinned comparison with nginx: both are implied.
            args.pin = true;
            args.reference = true;
        }
        if args.reference_workers == 0 {
            // Pinned, the proxy has one CPU: one nginx worker, as streamgate's runtime sizes
            // itself to that CPU too.
            args.reference_workers = if args.pin { 1 } else { 2 };
        }
        if args.state_redis && (args.quiet || args.reference) {
            return Err(
                "--state-redis does not combine with --quiet-gateway or --reference".into(),
            );
        }
        Ok(args)
    }
}
