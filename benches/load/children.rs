//! The proxies under test as child processes: the gateway and nginx, the reference.

use super::*;

/// Kills the gateway and removes its temporary directory when dropped (panics included).
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    /// A gateway on `upstream`; `extra` is appended to its config file.
    pub(crate) fn spawn(
        binary: &Path,
        upstream: SocketAddr,
        log_filter: &str,
        extra: &str,
        pin: bool,
    ) -> Res<Gateway> {
        if !binary.is_file() {
            return Err(format!(
                "gateway binary {} not found: build it with `cargo build --release` or pass \
                 --gateway PATH",
                binary.display()
            )
            .into());
        }
        let addr = free_port()?;
        // One directory per gateway (config, log, journal): `--quiet-gateway` runs two.
        let dir = tool_dir().join(format!("gateway-{}", addr.port()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("gateway.toml");
        // Each gateway its own journal (two cannot share one), removed with the tool's dir.
        let journal = dir.join("journal");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{addr}\"\n{extra}\n[providers.openai]\ndialect = \"openai\"\n\
                 base_url = \"http://{upstream}/v1\"\n\n[streams.journal]\ndir = {journal:?}\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("gateway.log"))?;
        let child = pinned(binary, pin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(addr.to_string())
            .env("RUST_LOG", log_filter)
            .env_remove("STREAMGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let pid = child.id();
        Ok(Gateway {
            child,
            pid,
            addr,
            dir,
        })
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `GET /healthz` answers 200 (10 s at most).
    pub(crate) async fn ready(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("the gateway exited ({status}):\n{}", self.log_tail()).into());
            }
            if healthz(self.addr).await.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the gateway did not answer /healthz within 10 s:\n{}",
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The tool's temporary directory (the gateway's config and log; nginx's in `nginx/`).
pub(crate) fn tool_dir() -> PathBuf {
    std::env::temp_dir().join(format!("streamgate-load-{}", std::process::id()))
}

/// `binary` as a command, run on CPU 1 only when `pin` (through taskset: the proxy then sees
/// one CPU, and tokio and nginx size themselves to it).
pub(crate) fn pinned(binary: &Path, pin: bool) -> Command {
    pinned_on(binary, pin, 1)
}

/// [`pinned`] on `cpu`.
pub(crate) fn pinned_on(binary: &Path, pin: bool, cpu: u8) -> Command {
    if !pin {
        return Command::new(binary);
    }
    let mut command = Command::new("taskset");
    command.args(["-c", &cpu.to_string()]).arg(binary);
    command
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
pub(crate) fn free_port() -> Res<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

// ---------------------------------------------------------------------------------------------
// The reference proxy: nginx

/// nginx as a child process: a master (`daemon off`) and its workers. Dropping it stops the
/// master (SIGTERM, then SIGKILL), kills any worker left behind, and removes its directory.
#[derive(Debug)]
pub(crate) struct Nginx {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: PathBuf,
    pub(crate) binary: PathBuf,
    /// Worker pids, as found once the master answers.
    pub(crate) workers: Vec<u32>,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        let signal = |pid: u32, sig: Signal| {
            if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, sig);
            }
        };
        // SIGTERM is nginx's fast shutdown: the master stops its workers and exits.
        signal(self.pid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Workers outlive a killed master: kill those still there (and still nginx).
        for &pid in &self.workers {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "nginx" {
                signal(pid, Signal::KILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    /// `--reference-bin`, else `nginx` on PATH, else in /usr/sbin or /usr/local/sbin.
    pub(crate) fn find(explicit: Option<&Path>) -> Res<PathBuf> {
        find_binary(
            explicit,
            "--reference-bin",
            "nginx",
            &["/usr/sbin", "/usr/local/sbin"],
        )
        .map_err(|e| format!("--reference nginx: {e}").into())
    }

    pub(crate) fn spawn(
        binary: PathBuf,
        upstream: SocketAddr,
        workers: usize,
        clients: usize,
        pin: bool,
    ) -> Res<Nginx> {
        let addr = free_port()?;
        let dir = tool_dir().join("nginx");
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        // Each worker may hold every client connection and as many upstream ones.
        let connections = 4 * clients + 1024;
        let keepalive = clients.max(512);
        let config = format!(
            r#"# benches/load/: nginx as a reference byte-forwarding proxy
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {connections};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    tcp_nodelay on;
    keepalive_requests 1000000;
    upstream synthetic {{
        server {upstream};
        keepalive {keepalive};
        keepalive_requests 1000000;
    }}
    server {{
        listen {addr} reuseport;
        location = /healthz {{ return 200 "ok\n"; }}
        location / {{
            proxy_pass http://synthetic;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            # A forwarder, both ways: a request body streams to the upstream as it comes,
            # never through a temp file (nginx's default beyond 16 kB, which stalled a
            # `--history 40` request's first byte by ~44 ms).
            proxy_request_buffering off;
            client_body_buffer_size 1m;
        }}
    }}
}}
"#
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config)?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let mut prefix = dir.clone().into_os_string();
        prefix.push("/");
        let child = pinned(&binary, pin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let pid = child.id();
        Ok(Nginx {
            child,
            pid,
            addr,
            dir,
            binary,
            workers: Vec::new(),
        })
    }

    pub(crate) fn log_tail(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `GET /healthz` answers 200 and all `workers` worker processes are up (10 s
    /// at most), and records their pids.
    pub(crate) async fn ready(&mut self, workers: usize) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("nginx exited ({status}):\n{}", self.log_tail()).into());
            }
            if healthz(self.addr).await.unwrap_or(false) {
                self.workers = children_of(self.pid);
                if self.workers.len() >= workers {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not answer /healthz with {workers} workers within 10 s:\n{}",
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The master and its workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        std::iter::once(self.pid)
            .chain(self.workers.iter().copied())
            .collect()
    }
}

/// `explicit` (given with `flag`), else `name` on PATH, else in one of `dirs`.
pub(crate) fn find_binary(
    explicit: Option<&Path>,
    flag: &str,
    name: &str,
    dirs: &[&str],
) -> Res<PathBuf> {
    if let Some(path) = explicit {
        return match path.is_file() {
            true => Ok(path.to_owned()),
            false => Err(format!("{flag} {}: no such file", path.display()).into()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no {name} binary on PATH or in {}; install it (Debian: `apt-get install \
                 {name}`) or pass {flag} PATH",
                dirs.join(", ")
            )
            .into()
        })
}

/// Pids whose parent is `parent` (from /proc/*/stat).
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the parenthesized command name: state, then ppid.
            stat.rfind(')').and_then(|at| {
                stat[at + 1..]
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            }) == Some(parent)
        })
        .collect();
    pids.sort_unstable();
    pids
}

pub(crate) async fn healthz(addr: SocketAddr) -> Res<bool> {
    let mut sender = connect(addr).await?;
    let req = Request::get("/healthz")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    Ok(resp.status() == StatusCode::OK)
}

/// `nginx -v` (it prints to stderr).
pub(crate) fn nginx_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "version unknown".to_owned())
}
