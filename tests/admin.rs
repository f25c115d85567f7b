//! Who reaches `/admin/*`, through real sockets: open on a loopback listener without a key,
//! absent on a non-loopback one without a key, behind the admin key when one is configured,
//! on its own listener with `[server] admin_listen`; `streamgate status` sends the key from
//! STREAMGATE_ADMIN_KEY; a non-loopback listen address without keys or `--allow-open` is a
//! startup error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde_json::Value;
use streamgate::config::Config;
use streamgate::replay;
use streamgate::server::AppState;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ADMIN_PATHS: [&str; 2] = ["/admin/streams", "/admin/routes"];

fn sha256_hex(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A high-entropy key of `seed`, as `streamgate keys new` would print one.
fn key_of(seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..43).map(|_| rng.alphanumeric()).collect()
}

/// The gateway over a fresh replay with `edit` applied, served on `main` (and on `admin`
/// when given). Returns the main address, the admin address, a stop sender and the temp dir.
async fn gateway(
    edit: impl FnOnce(&mut Config),
    main: &str,
    admin: Option<&str>,
) -> (
    SocketAddr,
    Option<SocketAddr>,
    oneshot::Sender<()>,
    tempfile::TempDir,
    replay::Replay,
) {
    let replay = replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut config = replay.config();
    edit(&mut config);
    let journal = tempfile::tempdir().unwrap();
    config.streams.journal.dir = journal.path().to_owned();
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind(main).await.unwrap();
    // A listener on 0.0.0.0 is reached through 127.0.0.1: the test traffic stays local.
    let addr = SocketAddr::from(([127, 0, 0, 1], listener.local_addr().unwrap().port()));
    let admin = match admin {
        Some(a) => Some(TcpListener::bind(a).await.unwrap()),
        None => None,
    };
    let admin_addr = admin.as_ref().map(|l| l.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(streamgate::server::serve_with_admin(
        state,
        listener,
        admin,
        async move {
            let _ = rx.await;
        },
    ));
    (addr, admin_addr, tx, journal, replay)
}

async fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut request = gw::client().get(format!("http://{addr}{path}"));
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test]
async fn loopback_without_key_serves_admin() {
    let (addr, _, _stop, _dir, _replay) = gateway(|_| {}, "127.0.0.1:0", None).await;
    for path in ADMIN_PATHS {
        assert_eq!(get(addr, path, None).await.0, 200, "{path}");
    }
}

#[tokio::test]
async fn non_loopback_without_key_hides_admin() {
    let (addr, _, _stop, _dir, _replay) =
        gateway(|c| c.server.open = true, "0.0.0.0:0", None).await;
    for path in ADMIN_PATHS {
        assert_eq!(get(addr, path, None).await.0, 404, "{path}");
        // A made-up key changes nothing: there is no key to match.
        assert_eq!(get(addr, path, Some("anything")).await.0, 404, "{path}");
    }
    assert_eq!(get(addr, "/healthz", None).await.0, 200);
}

#[tokio::test]
async fn keyed_admin_needs_the_key_on_any_listener() {
    for (seed, main) in [(1, "127.0.0.1:0"), (2, "0.0.0.0:0")] {
        let key = key_of(seed);
        let hash = sha256_hex(&key);
        let (addr, _, _stop, _dir, _replay) = gateway(
            |c| {
                c.server.open = true;
                c.server.admin_key_sha256 = Some(hash);
            },
            main,
            None,
        )
        .await;
        for path in ADMIN_PATHS {
            assert_eq!(get(addr, path, Some(&key)).await.0, 200, "{path} {main}");
            let mut wrong: Vec<String> = (0..8).map(|i| key_of(seed * 100 + i)).collect();
            // Near misses: a prefix, one more character, one character changed.
            wrong.push(key[..key.len() - 1].to_owned());
            wrong.push(format!("{key}x"));
            wrong.push(format!("{}{}", &key[..10], key[10..].to_uppercase()));
            // The hash the gateway holds is not the key.
            wrong.push(sha256_hex(&key));
            for bad in wrong.iter().map(|w| Some(w.as_str())).chain([None]) {
                let (status, body) = get(addr, path, bad).await;
                assert_eq!(status, 401, "{path} {main} {bad:?}");
                let json: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(json["error"]["code"], "invalid_admin_key", "{body}");
                assert!(!body.contains(&key), "the key is never echoed");
            }
        }
        // Non-admin routes do not ask for the admin key.
        assert_eq!(get(addr, "/healthz", None).await.0, 200);
    }
}

#[tokio::test]
async fn admin_listener_serves_only_admin() {
    let (addr, admin, _stop, _dir, _replay) =
        gateway(|_| {}, "127.0.0.1:0", Some("127.0.0.1:0")).await;
    let admin = admin.unwrap();
    for path in ADMIN_PATHS {
        assert_eq!(get(addr, path, None).await.0, 404, "main {path}");
        assert_eq!(get(admin, path, None).await.0, 200, "admin {path}");
    }
    assert_eq!(get(admin, "/v1/models", None).await.0, 404);
    assert_eq!(get(addr, "/v1/models", None).await.0, 200);

    // With a key as well, the admin listener asks for it.
    let key = key_of(7);
    let hash = sha256_hex(&key);
    let (_, admin, _stop, _dir, _replay) = gateway(
        |c| c.server.admin_key_sha256 = Some(hash),
        "127.0.0.1:0",
        Some("127.0.0.1:0"),
    )
    .await;
    let admin = admin.unwrap();
    assert_eq!(get(admin, "/admin/streams", None).await.0, 401);
    assert_eq!(get(admin, "/admin/streams", Some(&key)).await.0, 200);
}

/// `streamgate status` against a keyed gateway: refused without STREAMGATE_ADMIN_KEY, shown
/// with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_sends_the_admin_key() {
    let key = key_of(11);
    let hash = sha256_hex(&key);
    let (addr, _, _stop, _dir, _replay) = gateway(
        |c| c.server.admin_key_sha256 = Some(hash),
        "127.0.0.1:0",
        None,
    )
    .await;
    let status = |admin_key: Option<String>| {
        let url = format!("http://{addr}");
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_streamgate"));
            command
                .args(["status", "--url", &url])
                .env_remove("STREAMGATE_ADMIN_KEY")
                .env_remove("STREAMGATE_URL")
                .stdin(Stdio::null());
            if let Some(k) = admin_key {
                command.env("STREAMGATE_ADMIN_KEY", k);
            }
            command.output().unwrap()
        })
    };
    let refused = status(None).await.unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    let wrong = status(Some(key_of(12))).await.unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    let shown = status(Some(key.clone())).await.unwrap();
    assert_eq!(shown.status.code(), Some(0), "{shown:?}");
}

/// `serve` on a non-loopback address without keys or `--allow-open` stops at startup with an
/// error naming the setting; loopback addresses start.
#[test]
fn serve_refuses_an_open_listen_address() {
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--listen", listen])
            .env_remove("STREAMGATE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{listen}: {stderr}");
        assert!(
            stderr.contains("[server] open") && stderr.contains("--allow-open"),
            "{listen}: {stderr}"
        );
    }
}

/// An unset `admin_key_env` variable is a startup error naming the setting.
#[test]
fn missing_admin_key_env_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_key_env = \"STREAMGATE_TEST_NO_SUCH_VAR\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env_remove("STREAMGATE_TEST_NO_SUCH_VAR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("admin_key_env") && stderr.contains("STREAMGATE_TEST_NO_SUCH_VAR"),
        "{stderr}"
    );
}

/// `demo` refuses a non-loopback address the same way.
#[test]
fn demo_refuses_an_open_listen_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["demo", "--json", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--allow-open"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing was served");
}

/// With `--allow-open` and no gateway keys, `serve` starts and warns (each start).
#[test]
fn open_without_keys_warns_at_start() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    for _start in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--allow-open", "--listen", "0.0.0.0:0"])
            .env_remove("STREAMGATE_CONFIG")
            .env("RUST_LOG", "info")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let mut warned = false;
        while let Ok(line) = rx.recv_timeout(gw::BOUND) {
            warned |= line.contains("WARN") && line.contains("without gateway keys");
            let listening = line.contains("streamgate listening");
            seen.push(line);
            if listening {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(warned, "{seen:#?}");
    }
}

/// The library's `serve` checks the listeners it is given too, not only the CLI.
#[tokio::test]
async fn serve_refuses_a_bound_open_listener() {
    let replay = replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let journal = tempfile::tempdir().unwrap();
    let mut config = replay.config();
    config.streams.journal.dir = journal.path().to_owned();
    for (main, admin) in [("0.0.0.0:0", None), ("127.0.0.1:0", Some("0.0.0.0:0"))] {
        let state = AppState::new(config.clone()).unwrap();
        let listener = TcpListener::bind(main).await.unwrap();
        let admin = match admin {
            Some(a) => Some(TcpListener::bind(a).await.unwrap()),
            None => None,
        };
        let served = tokio::time::timeout(
            gw::BOUND,
            streamgate::server::serve_with_admin(state, listener, admin, std::future::pending()),
        )
        .await
        .expect("refused at once, not served");
        let e = served.unwrap_err().to_string();
        assert!(e.contains("[server] open"), "{e}");
    }
}
