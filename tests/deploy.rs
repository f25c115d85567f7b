//! `deploy/two-instances.sh --check`, the deployment docs/deployment.md describes, run for
//! real: redis-server, the demo's replay upstream, two `streamgate serve` with `[state]
//! backend = "redis"` and nginx in front, one stream through nginx, verified, then its resume
//! on each instance. Skipped with a message when redis-server, nginx or curl is missing
//! (`.ci/run` installs redis-server and nginx).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a whole run may take (debug binaries, a loaded 2-CPU box): it takes 1 to 5 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/two-instances.sh")
}

/// `name` from `$var` (when given), PATH or the usual system directories, as the script
/// looks for it.
fn installed(name: &str, var: Option<&str>) -> Option<PathBuf> {
    if let Some(path) = var.and_then(std::env::var_os) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whatever the script needs that is not installed, or None.
fn missing() -> Option<String> {
    let missing: Vec<&str> = [
        ("redis-server", Some("REDIS_SERVER")),
        ("nginx", Some("NGINX")),
        ("curl", None),
        ("bash", None),
    ]
    .into_iter()
    .filter(|(name, var)| installed(name, *var).is_none())
    .map(|(name, _)| name)
    .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Runs the script with `args`, its own temporary directory and the test's `streamgate`;
/// returns its exit status and its standard error. Bounded by [`RUN_TIMEOUT`]: past it the
/// script gets SIGTERM (it stops what it started) and the test fails.
fn run(args: &[&str]) -> (ExitStatus, String) {
    // One run at a time: two scripts picking free ports at once could pick the same one.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("script.log");
    let mut child = Command::new("bash")
        .arg(script())
        .args(args)
        .env("STREAMGATE", env!("CARGO_BIN_EXE_streamgate"))
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(tmp.path().join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let stopping = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() && Instant::now() < stopping {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "two-instances.sh {args:?} ran past {RUN_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(&log).unwrap())
}

#[test]
fn two_instances_behind_nginx_serve_a_whole_stream_and_resume_it() {
    if let Some(missing) = missing() {
        eprintln!("SKIPPED: not installed: {missing} (.ci/run installs redis-server and nginx)");
        return;
    }
    let (status, log) = run(&["--check"]);
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("through nginx:"), "{log}");
    assert!(log.contains("ended with stream.end"), "{log}");
    assert!(
        log.contains("WebSocket upgrade through nginx: 101"),
        "{log}"
    );
    assert!(log.contains("came through nginx event by event"), "{log}");
    // On both instances: the one that generated the stream and the other, through Redis.
    for instance in ["a", "b"] {
        let line = format!("on instance {instance}: the same");
        assert!(log.contains(&line), "{line} missing:\n{log}");
    }
    assert!(log.trim_end().ends_with("check: ok"), "{log}");
}

#[test]
fn the_check_fails_when_the_stream_through_nginx_is_not_whole() {
    if let Some(missing) = missing() {
        eprintln!("SKIPPED: not installed: {missing} (.ci/run installs redis-server and nginx)");
        return;
    }
    // A replay fault after the answer began: the stream ends in an error event (no retry
    // can help: the replay injects it on every attempt).
    let (status, log) = run(&["--check", "--model", "anthropic/error_after=3:text_basic"]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("check: the stream ended in an error"), "{log}");
    assert!(!log.contains("check: ok"), "{log}");
    // A model nobody serves: refused before any stream.
    let (status, log) = run(&["--check", "--model", "no-such-model"]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("check: not 200"), "{log}");
}
