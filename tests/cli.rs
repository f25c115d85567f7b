//! The `streamgate` binary end to end: `events` and `convert` over the fixtures, stdin,
//! cut and malformed bodies, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Fixture, all_fixtures, dialect_of, for_each_fixture, whole_fixtures};
use providers::{AgentEvent, DecodeError, Dialect, Envelope, FinishReason, StreamDecoder};

fn streamgate(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamgate");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
        drop(pipe);
    }
    child.wait_with_output().expect("wait streamgate")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses `events` output: one envelope per line, checking seq and stream id.
fn envelopes(o: &Output) -> Result<Vec<Envelope>, String> {
    let text = std::str::from_utf8(&o.stdout).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let env: Envelope =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}: {line}", i + 1))?;
        if env.seq != i as u64 {
            return Err(format!("line {}: seq {} (want {i})", i + 1, env.seq));
        }
        if let Some(first) = out.first().map(|e: &Envelope| e.stream.clone())
            && env.stream != first
        {
            return Err(format!(
                "line {}: stream {:?} != {first:?}",
                i + 1,
                env.stream
            ));
        }
        out.push(env);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("output does not end with a newline".into());
    }
    Ok(out)
}

fn run_events(f: &Fixture, extra: &[&str]) -> Output {
    let mut args = vec!["events", "--from", f.dialect, path_str(&f.path)];
    args.extend_from_slice(extra);
    streamgate(&args, None)
}

/// A recorded provider error: the events before it, then a failure naming it.
#[test]
fn events_of_a_provider_error_prints_what_came_before_and_fails() {
    let errors: Vec<Fixture> = all_fixtures()
        .into_iter()
        .filter(|f| common::expected(f.dialect, &f.body).error)
        .collect();
    assert!(!errors.is_empty(), "no provider error recording");
    for_each_fixture(&errors, |f| {
        let o = run_events(f, &[]);
        if o.status.success() {
            return Err("exit 0 for a provider error".into());
        }
        if !stderr(&o).contains("upstream sent an error") {
            return Err(format!("stderr does not name the error: {}", stderr(&o)));
        }
        let (want, result) = StreamDecoder::decode_all(dialect_of(f), &f.body);
        let Err(error) = result else {
            return Err("the library decodes it whole".into());
        };
        let got: Vec<AgentEvent> = envelopes(&o)?.into_iter().map(|e| e.event).collect();
        // What decoded, then the error and an error end.
        match &got[want.len().min(got.len())..] {
            [AgentEvent::Error(e), AgentEvent::StreamEnd(end)]
                if got[..want.len()] == want[..]
                    && e.message == error.to_string()
                    && end.reason == providers::FinishReason::Error =>
            {
                Ok(())
            }
            _ => Err(format!(
                "printed {got:?}, library decoded {want:?} then {error}"
            )),
        }
    });
}

#[test]
fn events_prints_the_decoded_events_as_envelopes() {
    for_each_fixture(&whole_fixtures(), |f| {
        let o = run_events(f, &[]);
        if !o.status.success() {
            return Err(format!("exit {:?}: {}", o.status.code(), stderr(&o)));
        }
        let envs = envelopes(&o)?;
        let Some(AgentEvent::StreamStart(start)) = envs.first().map(|e| &e.event) else {
            return Err("first event is not stream.start".into());
        };
        if envs[0].stream != start.id {
            return Err(format!(
                "stream id {:?}, want the response id {:?}",
                envs[0].stream, start.id
            ));
        }
        let (want, result) = StreamDecoder::decode_all(dialect_of(f), &f.body);
        result.map_err(|e| format!("library decode: {e}"))?;
        let got: Vec<AgentEvent> = envs.into_iter().map(|e| e.event).collect();
        if got != want {
            return Err(format!(
                "CLI printed {} events, library decoded {}",
                got.len(),
                want.len()
            ));
        }
        Ok(())
    });
}

fn first_fixture(name: &str) -> Fixture {
    all_fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("fixture {name}"))
}

#[test]
fn events_stream_id_option_overrides_the_response_id() {
    let f = first_fixture("anthropic/text_basic.sse");
    let o = run_events(&f, &["--stream-id", "req-42"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let envs = envelopes(&o).unwrap();
    assert!(!envs.is_empty());
    assert!(envs.iter().all(|e| e.stream == "req-42"));
}

#[test]
fn events_reads_stdin() {
    for name in [
        "openai_chat/tool_calls_parallel.sse",
        "anthropic/thinking_short.sse",
    ] {
        let f = first_fixture(name);
        let from_file = run_events(&f, &[]);
        let from_stdin = streamgate(&["events", "--from", f.dialect], Some(&f.body));
        assert!(
            from_stdin.status.success(),
            "{name}: {}",
            stderr(&from_stdin)
        );
        assert_eq!(
            String::from_utf8_lossy(&from_stdin.stdout),
            String::from_utf8_lossy(&from_file.stdout),
            "{name}"
        );
        assert!(!from_stdin.stdout.is_empty(), "{name}");
    }
}

#[test]
fn convert_output_decodes_in_the_target_dialect() {
    for_each_fixture(&whole_fixtures(), |f| {
        let mut errs = Vec::new();
        for to in providers::Dialect::ALL.map(providers::Dialect::as_str) {
            let o = streamgate(
                &[
                    "convert",
                    "--from",
                    f.dialect,
                    "--to",
                    to,
                    path_str(&f.path),
                ],
                None,
            );
            let n_choices = common::expected(f.dialect, &f.body).choices;
            if to == "anthropic" && n_choices > 1 {
                // Several choices cannot be written as Anthropic: exit 2, named on stderr.
                if o.status.code() != Some(2) || !stderr(&o).contains("cannot express") {
                    errs.push(format!(
                        "to {to}: want exit 2 + Unsupported, got {:?}: {}",
                        o.status.code(),
                        stderr(&o)
                    ));
                }
                continue;
            }
            let target: Dialect = to.parse().unwrap();
            if target == Dialect::OpenAiResponses
                && common::expected(f.dialect, &f.body).choices > 1
            {
                // One answer per response: refused as what the target cannot express.
                if o.status.code() != Some(2) || !stderr(&o).contains("more than one choice") {
                    errs.push(format!(
                        "to {to}: several choices not refused: {}",
                        stderr(&o)
                    ));
                }
                continue;
            }
            if !o.status.success() {
                errs.push(format!(
                    "to {to}: exit {:?}: {}",
                    o.status.code(),
                    stderr(&o)
                ));
                continue;
            }
            let (events, result) = StreamDecoder::decode_all(target, &o.stdout);
            if let Err(e) = result {
                errs.push(format!("to {to}: output does not decode: {e}"));
                continue;
            }
            if let Err(e) = common::check_structure(&events) {
                errs.push(format!("to {to}: {e}"));
            }
            if let (Dialect::OpenAi, Some(AgentEvent::StreamStart(s))) = (target, events.first()) {
                // Anthropic has no `created`: the CLI stamps the current time.
                if s.created.unwrap_or(0) < 1_600_000_000 {
                    errs.push(format!("to {to}: created = {:?}", s.created));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n  "))
        }
    });
}

#[test]
fn convert_no_usage_drops_the_openai_usage_chunk() {
    let f = first_fixture("openai_chat/text_basic.sse");
    let args = [
        "convert",
        "--from",
        "openai",
        "--to",
        "openai",
        path_str(&f.path),
    ];
    let with = streamgate(&args, None);
    let mut no = args.to_vec();
    no.push("--no-usage");
    let without = streamgate(&no, None);
    assert!(with.status.success() && without.status.success());
    let usage_chunk = "\"choices\":[]";
    assert!(String::from_utf8_lossy(&with.stdout).contains(usage_chunk));
    assert!(!String::from_utf8_lossy(&without.stdout).contains(usage_chunk));
}

/// The first half of a body: cut mid-answer.
fn cut(f: &Fixture) -> Vec<u8> {
    f.body[..f.body.len() / 2].to_vec()
}

#[test]
fn cut_stream_exits_1_with_a_terminal_error_event() {
    for name in [
        "anthropic/text_basic.sse",
        "openai_chat/json_object_long.sse",
    ] {
        let f = first_fixture(name);
        let o = streamgate(&["events", "--from", f.dialect], Some(&cut(&f)));
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        let envs = envelopes(&o).unwrap();
        assert!(envs.len() > 3, "{name}: decoded events are printed");
        assert!(
            matches!(envs[0].event, AgentEvent::StreamStart(_)),
            "{name}"
        );
        let n = envs.len();
        match (&envs[n - 2].event, &envs[n - 1].event) {
            (AgentEvent::Error(e), AgentEvent::StreamEnd(end)) => {
                assert_eq!(e.code, "incomplete_stream", "{name}");
                assert_eq!(end.reason, FinishReason::Error, "{name}");
            }
            other => panic!("{name}: last events {other:?}"),
        }
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.contains("ended before its finish reason"),
            "{name}: {err}"
        );
    }
}

#[test]
fn cut_stream_convert_ends_with_the_target_error_frame() {
    let f = first_fixture("anthropic/tool_use_with_text.sse");
    for to in ["openai", "anthropic"] {
        let o = streamgate(
            &["convert", "--from", "anthropic", "--to", to],
            Some(&cut(&f)),
        );
        assert_eq!(o.status.code(), Some(1), "to {to}: {}", stderr(&o));
        // Read back, the target dialect's error frame is a provider error.
        let target: Dialect = to.parse().unwrap();
        let (events, result) = StreamDecoder::decode_all(target, &o.stdout);
        assert!(
            matches!(&result, Err(DecodeError::Upstream { error, .. }) if error.code == "incomplete_stream"),
            "to {to}: {result:?}\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(
            matches!(events.first(), Some(AgentEvent::StreamStart(_))),
            "to {to}"
        );
    }
}

/// A body whose 2nd frame carrying a delta has broken JSON on its `data:` line; returns the
/// body and the 1-based line of the broken `data:` line (for Anthropic, the line below the
/// frame's `event:` line), which `DecodeError::Malformed` must name.
fn malformed(f: &Fixture) -> (Vec<u8>, usize) {
    let text = String::from_utf8(f.body.clone()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let data_lines: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("data: {") && l.contains("delta"))
        .map(|(i, _)| i)
        .collect();
    let i = data_lines[1];
    lines[i] = "data: {\"broken\": ".to_owned();
    let mut body = lines.join("\n");
    body.push('\n');
    (body.into_bytes(), i + 1)
}

/// Another dialect than `d`, for `convert --to`.
fn other(d: &str) -> &'static str {
    if d == "anthropic" {
        "openai"
    } else {
        "anthropic"
    }
}

#[test]
fn malformed_body_exits_2_naming_the_line() {
    for name in [
        "openai_chat/text_basic.sse",
        "anthropic/text_basic.sse",
        "openai_responses/text_basic.sse",
    ] {
        let f = first_fixture(name);
        let (body, line) = malformed(&f);
        for args in [
            vec!["events", "--from", f.dialect],
            vec!["convert", "--from", f.dialect, "--to", other(f.dialect)],
        ] {
            let o = streamgate(&args, Some(&body));
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{name} {args:?}: {err}");
            assert!(
                err.contains(&format!("line {line} ")),
                "{name} {args:?}: stderr does not name line {line}: {err}"
            );
            assert!(err.contains("byte "), "{name}: {err}");
            assert_eq!(err.lines().count(), 1, "{name}: {err}");
            if args[0] == "events" {
                // What decoded before the bad frame, then the terminal error.
                let envs = envelopes(&o).unwrap();
                let kinds: Vec<&str> = envs.iter().map(|e| e.event.kind()).collect();
                assert_eq!(kinds.first(), Some(&"stream.start"), "{name}");
                assert_eq!(kinds[kinds.len() - 2..], ["error", "stream.end"], "{name}");
                if let AgentEvent::Error(e) = &envs[envs.len() - 2].event {
                    assert_eq!(e.code, "malformed_upstream_stream", "{name}");
                }
            }
        }
    }
}

#[test]
fn missing_file_exits_2() {
    let o = streamgate(&["events", "--from", "openai", "/no/such/file.sse"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/no/such/file.sse"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let o = streamgate(
        &[
            "convert",
            "--from",
            "openai",
            "--to",
            "anthropic",
            "/no/such/file.sse",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let o = streamgate(&["events", "--from", "gemini"], Some(b""));
    assert_eq!(o.status.code(), Some(2));
    for args in [
        vec!["--help"],
        vec!["events", "--help"],
        vec!["convert", "--help"],
    ] {
        let o = streamgate(&args, None);
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Exit codes"), "{args:?}: {text}");
        if args.len() > 1 {
            assert!(text.contains("Examples:"), "{args:?}: {text}");
        }
    }
}

#[test]
fn empty_input_is_a_cut_stream() {
    let o = streamgate(&["events", "--from", "anthropic"], Some(b""));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let envs = envelopes(&o).unwrap();
    let kinds: Vec<&str> = envs.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds, ["error", "stream.end"]);
}

#[test]
fn provider_error_event_exits_1_with_its_code() {
    let anthropic = first_fixture("anthropic/text_basic.sse");
    let openai = first_fixture("openai_chat/text_basic.sse");
    // The answer so far (whole frames), then the provider's error frame.
    let head = |f: &Fixture| {
        let text = String::from_utf8(f.body.clone()).unwrap();
        let cut = text[..text.len() / 2].rfind("\n\n").unwrap() + 2;
        text[..cut].to_owned()
    };
    let cases = [
        (
            &anthropic,
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            "overloaded_error",
        ),
        (
            &openai,
            "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}\n\n",
            "server_error",
        ),
    ];
    for (f, error_frame, code) in cases {
        let body = format!("{}{error_frame}", head(f));
        let o = streamgate(&["events", "--from", f.dialect], Some(body.as_bytes()));
        assert_eq!(o.status.code(), Some(1), "{}: {}", f.name, stderr(&o));
        let envs = envelopes(&o).unwrap();
        let n = envs.len();
        assert!(n > 3, "{}: decoded events are printed", f.name);
        match (&envs[n - 2].event, &envs[n - 1].event) {
            (AgentEvent::Error(e), AgentEvent::StreamEnd(end)) => {
                assert_eq!(e.code, code, "{}", f.name);
                assert!(e.retryable, "{}", f.name);
                assert_eq!(end.reason, FinishReason::Error, "{}", f.name);
            }
            other => panic!("{}: last events {other:?}", f.name),
        }
        assert_eq!(stderr(&o).lines().count(), 1, "{}: {}", f.name, stderr(&o));
    }
}

/// Output is flushed per chunk read: the first events come out while stdin is still open.
#[test]
fn events_are_printed_live_before_the_input_ends() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    use std::time::Duration;

    // Small enough that half of its events stay far below any output buffer size.
    let f = first_fixture("openai_chat/text_basic.sse");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["events", "--from", "openai"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let half = f.body.len() / 2;
    stdin.write_all(&f.body[..half]).unwrap();
    stdin.flush().unwrap();
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no output while the input is still open");
    assert!(first.contains("\"type\":\"stream.start\""), "{first}");
    stdin.write_all(&f.body[half..]).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success());
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.last().is_some_and(|l| l.contains("stream.end")),
        "{rest:?}"
    );
}

/// `serve` says at start where the journal keeps prompts and answers, and names every
/// provider whose key variable is missing (with the variable, never a key), before it listens.
#[test]
fn serve_names_the_journal_and_each_provider_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let unset = format!("SG_TEST_UNSET_{}_{}", std::process::id(), line!());
    let config = dir.path().join("streamgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [providers.keyless]\ndialect = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
             api_key_env = \"{unset}\"\n\
             [providers.local]\ndialect = \"anthropic\"\nbase_url = \"http://127.0.0.1:1\"\n\
             [streams.journal]\ndir = {journal:?}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["serve", "--config", path_str(&config)])
        .env("RUST_LOG", "info")
        .env_remove(&unset)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !seen
        .iter()
        .any(|l: &String| l.contains("streamgate listening"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    assert!(log.contains("streamgate listening"), "{log}");
    let warned: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("key variable is not set"))
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "only the provider with a key variable: {log}"
    );
    assert!(
        warned[0].contains("keyless") && warned[0].contains(&unset),
        "{log}"
    );
    let journal_line = seen
        .iter()
        .find(|l| l.contains("journal:"))
        .unwrap_or_else(|| panic!("no journal line: {log}"));
    assert!(
        journal_line.contains(path_str(&journal)) && journal_line.contains("prompts"),
        "{journal_line}"
    );
}
