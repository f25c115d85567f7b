//! A `redis-server` of the test's own, on a free loopback port, for the tests of
//! `[state] backend = "redis"`: each test starts its own, so it may stop and restart it
//! mid-load without disturbing another test. `.ci/run` installs `redis-server` from Debian's
//! packages; where it is not installed, [`RedisServer::start`] says so and returns None (the
//! test is skipped with that message, never passed silently by accident: it prints it).
//!
//! Use with `#[path = "common/redis.rs"] mod redis_server;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    binary: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Where `redis-server` is, if anywhere.
fn binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

impl RedisServer {
    /// Starts one, or prints why it cannot and returns None (`redis-server` not installed).
    pub async fn start() -> Option<RedisServer> {
        let Some(binary) = binary() else {
            eprintln!(
                "SKIPPED: redis-server is not installed (apt-get install redis-server; .ci/run installs it)"
            );
            return None;
        };
        let port = free_port();
        let mut server = RedisServer {
            child: None,
            binary,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn().await;
        Some(server)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 16];
                if stream.write_all(b"PING\r\n").await.is_ok()
                    && matches!(
                        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
                        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
                    )
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it (SIGKILL: what it held is gone, as after a crash with no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
