//! `--state-redis`: the hub with the embedded journal against the hub with Redis.

use super::*;

// --state-redis: the hub with the embedded journal against the hub with Redis

/// `redis-server` as a child process (loopback, no persistence, its own directory), killed
/// and its directory removed when dropped.
#[derive(Debug)]
pub(crate) struct RedisServer {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// `--redis-server`, else `redis-server` on PATH, else in /usr/bin or /usr/sbin.
    pub(crate) fn find(explicit: Option<&Path>) -> Res<PathBuf> {
        find_binary(
            explicit,
            "--redis-server",
            "redis-server",
            &["/usr/bin", "/usr/sbin"],
        )
        .map_err(|e| format!("--state-redis: {e}").into())
    }

    pub(crate) fn spawn(binary: &Path, pin: bool, cpu: u8) -> Res<RedisServer> {
        let port = free_port()?.port();
        let dir = tool_dir().join("redis");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("redis.log"))?;
        let child = pinned_on(binary, pin, cpu)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let pid = child.id();
        Ok(RedisServer {
            child,
            pid,
            port,
            dir,
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Waits until it answers PING (10 s at most).
    pub(crate) async fn ready(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("redis-server exited ({status})").into());
            }
            if redis_call(self.port, "PING")
                .await
                .is_ok_and(|r| r == "PONG")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A field of `INFO section` (`used_memory`, ...).
    pub(crate) async fn info(&self, section: &str, field: &str) -> Option<String> {
        let text = redis_call(self.port, &format!("INFO {section}"))
            .await
            .ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')
                .map(|v| v.trim().to_owned())
        })
    }
}

/// One inline command to Redis on 127.0.0.1:`port`; the reply's text (a simple string,
/// integer or bulk string), within 5 s and 1 MiB.
pub(crate) async fn redis_call(port: u16, command: &str) -> Res<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let call = async {
        let mut tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        tcp.write_all(format!("{command}\r\n").as_bytes()).await?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            if tcp.read_buf(&mut buf).await? == 0 {
                return Err::<String, BoxError>("redis closed the connection".into());
            }
            if buf.len() > 2 << 20 {
                return Err("redis: reply too large".into());
            }
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&buf[1..eol])?;
            match buf[0] {
                b'+' | b':' => return Ok(head.to_owned()),
                b'-' => return Err(format!("redis: {head}").into()),
                b'$' => {
                    let len: usize = head.parse()?;
                    if len > 1 << 20 {
                        return Err("redis: reply too large".into());
                    }
                    if buf.len() >= eol + 2 + len {
                        return Ok(String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into());
                    }
                }
                _ => return Err("redis: unexpected reply".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "redis did not answer within 5 s")?
}

/// `--state-redis`: direct, then the native door of the embedded gateway and of the Redis
/// gateway, measured E R R E after an unmeasured phase each.
pub(crate) async fn run_state_redis(args: Args, fds: String) -> Res<bool> {
    let frames = answer_frames(args.chunks);
    let frame_bytes: usize = frames.iter().map(Bytes::len).sum();
    let expected = Arc::new(Expected {
        content: (0..args.chunks).map(token).collect(),
    });
    let (up_addr, upstream) = start_upstream(frames.clone(), args.delay).await?;
    let redis_bin = RedisServer::find(args.redis_bin.as_deref())?;
    let mut redis = RedisServer::spawn(&redis_bin, args.pin, args.redis_cpu)?;
    redis.ready().await?;
    let spawn =
        |extra: &str| Gateway::spawn(&args.gateway, up_addr, &args.gateway_log, extra, args.pin);
    let mut embedded = spawn("")?;
    embedded.ready().await?;
    let mut shared = spawn(&format!(
        "\n[state]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))?;
    shared.ready().await?;
    let idle = |g: &Gateway| status_mib(g.pid, "VmRSS");
    let (embedded_idle, shared_idle) = (idle(&embedded), idle(&shared));

    let cpus = cpu_count();
    println!("{}", describe_load(&args, frames.len(), frame_bytes));
    println!(
        "machine: {cpus} CPUs ({}); open-files limit {fds}; gateway {} (RUST_LOG={}): embedded \
         journal pid {}, [state] backend = \"redis\" pid {}; redis-server pid {} ({}){}",
        cpu_model(),
        args.gateway.display(),
        args.gateway_log,
        embedded.pid,
        shared.pid,
        redis.pid,
        redis
            .info("server", "redis_version")
            .await
            .map_or_else(|| "version unknown".into(), |v| format!("redis {v}")),
        match (args.pin, args.redis_cpu) {
            (false, _) => "",
            (true, 0) => "; pinned: this tool and redis-server on CPU 0, the gateways on CPU 1",
            (true, _) => "; pinned: this tool on CPU 0, the gateways and redis-server on CPU 1",
        }
    );
    println!(
        "streams through the native door (POST /v1/streams, Agent Events over SSE, through the \
         hub); load average before the run: {}",
        loadavg()
    );

    let direct = direct_phase(&args, up_addr, &expected, &upstream).await?;
    let native =
        |addr: SocketAddr| Target::new(addr, Door::Native, "openai/synthetic", args.history);
    for (name, gateway) in [("embedded", &embedded), ("redis", &shared)] {
        eprintln!("{name} warm-up phase (not measured) ...");
        run_phase(
            &args,
            native(gateway.addr),
            expected.clone(),
            &[gateway.pid],
            &upstream,
        )
        .await?;
    }
    let order = [
        ("embedded", false),
        ("redis", true),
        ("redis 2", true),
        ("embedded 2", false),
    ];
    let mut columns = Vec::new();
    for (name, on_redis) in order {
        tokio::time::sleep(Duration::from_millis(200)).await;
        eprintln!("{name} phase ...");
        let gateway = if on_redis { &shared } else { &embedded };
        let phase = run_phase_with(
            &args,
            native(gateway.addr),
            expected.clone(),
            &[gateway.pid],
            &[redis.pid],
            &upstream,
        )
        .await?;
        columns.push(Column {
            name,
            phase,
            idle_rss: if on_redis { shared_idle } else { embedded_idle },
            peak_rss: status_mib(gateway.pid, "VmHWM"),
        });
    }
    let embedded_alive = embedded.child.try_wait()?.is_none();
    let shared_alive = shared.child.try_wait()?.is_none();
    let redis_alive = redis.child.try_wait()?.is_none();

    print!("{}", report(&direct, &columns));
    let (d50, d99) = (pct(&direct.ttfb, 0.50), pct(&direct.ttfb, 0.99));
    let mut redis_per_stream = [0.0; 2];
    for (i, on_redis) in [false, true].into_iter().enumerate() {
        let side: Vec<&Phase> = columns
            .iter()
            .zip(order)
            .filter(|(_, (_, r))| *r == on_redis)
            .map(|(c, _)| &c.phase)
            .collect();
        let streams: usize = side.iter().map(|p| p.ok()).sum();
        let wall: f64 = side.iter().map(|p| p.wall.as_secs_f64()).sum();
        let events: f64 = side
            .iter()
            .map(|p| p.frames_per_stream * p.ok() as f64)
            .sum();
        let cpu: f64 = side.iter().map(|p| p.proxy_cpu.unwrap_or(0.0)).sum();
        let redis_cpu: f64 = side.iter().map(|p| p.also_cpu.unwrap_or(0.0)).sum();
        let mean =
            |f: &dyn Fn(&Phase) -> f64| side.iter().map(|p| f(p)).sum::<f64>() / side.len() as f64;
        redis_per_stream[i] = redis_cpu * 1e6 / streams.max(1) as f64;
        println!(
            "{:<22} {:.0} events/s delivered ({:.1} per stream), added TTFB p50 {:+.3} ms, p99 {:+.3} \
             ms, gateway CPU {:.0} us per stream, redis-server CPU {:.0} us per stream (both \
             measured phases)",
            if on_redis {
                "hub, [state] redis:"
            } else {
                "hub, embedded journal:"
            },
            events / wall.max(1e-9),
            events / streams.max(1) as f64,
            mean(&|p| pct(&p.ttfb, 0.50)) - d50,
            mean(&|p| pct(&p.ttfb, 0.99)) - d99,
            cpu * 1e6 / streams.max(1) as f64,
            redis_per_stream[i],
        );
    }
    println!(
        "redis after the run: used_memory {} bytes, {} keys",
        redis
            .info("memory", "used_memory")
            .await
            .unwrap_or_else(|| "n/a".into()),
        redis_call(redis.port, "DBSIZE")
            .await
            .unwrap_or_else(|_| "n/a".into())
    );
    // Redis's own idle work (serverCron) costs a few us per stream; a gateway that appends its
    // events there costs it far more.
    if redis_per_stream[1] < 2.0 * redis_per_stream[0] + 5.0 {
        println!(
            "note: the Redis gateway cost redis-server no more than the embedded one did: this \
             binary keeps streams in its own hub (no Redis stream hub in it)"
        );
    }
    println!("load average after the run: {}", loadavg());
    for (alive, name, gateway) in [
        (embedded_alive, "embedded", &embedded),
        (shared_alive, "redis", &shared),
    ] {
        if !alive {
            println!(
                "the {name} gateway exited during the run:\n{}",
                gateway.log_tail()
            );
        }
    }
    if !redis_alive {
        println!("redis-server exited during the run");
    }
    drop(shared);
    drop(embedded);
    drop(redis);
    let failures: u64 = std::iter::once(&direct)
        .chain(columns.iter().map(|c| &c.phase))
        .map(|p| p.errors + p.warmup_errors)
        .sum();
    Ok(failures == 0 && embedded_alive && shared_alive && redis_alive)
}
