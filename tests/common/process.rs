//! The gateway as a process of its own (`streamgate serve --config`), for tests that measure
//! what only a separate process shows: its resident memory (`/proc/PID/status`), or how it
//! holds up while the test floods it with sockets.
//!
//! Use with `#[path = "common/process.rs"] mod process;`. The upstream is usually a replay
//! started in the test ([`streamgate::replay::spawn`]); [`replay_providers`] writes its
//! `[providers]` and `[models]` tables.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `streamgate serve`, killed when dropped.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The listen address.
    pub addr: std::net::SocketAddr,
    // Holds the configuration file and the journal until the process is gone.
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts `streamgate serve` with `body` (TOML tables other than `[server] listen` and
    /// `[streams.journal] dir`, which this sets: a free loopback port and a temporary
    /// directory) and waits until it accepts connections. `body` may hold a `[server]` table
    /// of its own: the listen address goes in front of it.
    pub async fn serve(body: &str) -> GatewayProcess {
        GatewayProcess::serve_with_env(body, &[]).await
    }

    /// [`GatewayProcess::serve`] with environment variables set for the process (provider
    /// keys, which a test cannot set in its own process).
    pub async fn serve_with_env(body: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let journal = dir.path().join("journal");
        let server = format!("listen = \"127.0.0.1:{port}\"\n");
        let config = if body.contains("[server]\n") {
            body.replacen("[server]\n", &format!("[server]\n{server}"), 1)
        } else {
            format!("[server]\n{server}\n{body}")
        };
        let config = format!("{config}\n[streams.journal]\ndir = {journal:?}\n");
        let path: PathBuf = dir.path().join("streamgate.toml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut gateway = GatewayProcess {
            child,
            url: format!("http://{addr}"),
            addr,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!("the gateway exited before listening: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gateway
    }

    /// The configuration file the process was started with (a test may rewrite it).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("streamgate.toml")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// The most resident memory the process has had (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    /// Kills it with SIGKILL (no shutdown: what it held in Redis stays until it expires) and
    /// waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running (it did not crash or exit).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[providers]` and `[models]` tables of a replay upstream at `replay_url` (as
/// `streamgate::replay::Replay::url` gives it): providers `openai` and `anthropic`, no keys,
/// and every model name routed to the replay as it is (`openai/NAME`, `anthropic/NAME`).
pub fn replay_providers(replay_url: &str) -> String {
    format!(
        "[providers.openai]\ndialect = \"openai\"\nbase_url = \"{replay_url}/v1\"\n\
         [providers.anthropic]\ndialect = \"anthropic\"\nbase_url = \"{replay_url}\"\n"
    )
}

/// A free loopback port (bound, then released: the gateway binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
