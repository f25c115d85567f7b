//! The docs' examples and tables come from the code, never typed by hand: this test regenerates
//! every `<!-- BEGIN GENERATED: ... -->` section of docs/protocol.md (examples decoded from the
//! fixtures), docs/translation.md (the decision table of the request translator's module doc)
//! and docs/configuration.md (the rate limiter's keys) and fails when a file differs. `STREAMGATE_BLESS=1 cargo test --test protocol_doc`
//! rewrites them.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use providers::{AgentEvent, Dialect, EncodeOptions, Stamper, StreamDecoder, StreamEncoder};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The dialect whose fixture directory holds `fixture` (`dir/name.sse`).
fn dialect_of(fixture: &str) -> Dialect {
    let dir = fixture.split('/').next().unwrap_or_default();
    providers::dialects::all()
        .find(|w| w.fixture_dir() == dir)
        .unwrap_or_else(|| panic!("{fixture}: no dialect has this directory"))
        .dialect()
}

fn decode(fixture: &str) -> Vec<AgentEvent> {
    let body = std::fs::read(root().join("fixtures").join(fixture)).unwrap();
    let (events, result) = StreamDecoder::decode_all(dialect_of(fixture), &body);
    result.unwrap_or_else(|e| panic!("{fixture}: {e}"));
    events
}

fn stamped_lines(events: &[AgentEvent]) -> String {
    let mut stamper = Stamper::new("st_example");
    events
        .iter()
        .map(|e| serde_json::to_string(&stamper.stamp(e.clone())).unwrap() + "\n")
        .collect()
}

/// The first event of each type, over every fixture, in a fixed type order.
fn event_catalog() -> String {
    let mut fixtures: Vec<String> = Vec::new();
    for dir in providers::dialects::all().map(|w| w.fixture_dir()) {
        let mut names: Vec<String> = std::fs::read_dir(root().join("fixtures").join(dir))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".sse"))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        fixtures.extend(names);
    }
    let mut seen: Vec<(&'static str, String, String)> = Vec::new();
    for fixture in &fixtures {
        let body = std::fs::read(root().join("fixtures").join(fixture)).unwrap();
        // A recorded provider error is shown by its own decoder's tests, not here.
        let (events, _) = StreamDecoder::decode_all(dialect_of(fixture), &body);
        for event in events {
            let kind = event.kind();
            if seen.iter().all(|(k, _, _)| *k != kind) {
                let mut json = serde_json::to_string(&event).unwrap();
                if json.len() > 400 {
                    let cut = (0..=400).rev().find(|&i| json.is_char_boundary(i));
                    json.truncate(cut.unwrap_or(0));
                    json.push_str(" …(cut for the doc)");
                }
                seen.push((kind, fixture.clone(), json));
            }
        }
    }
    seen.sort_by_key(|(k, _, _)| *k);
    let mut out = String::from("| type | first seen in | example |\n|---|---|---|\n");
    for (kind, fixture, json) in seen {
        let json = json.replace('|', "\\|");
        writeln!(out, "| `{kind}` | `{fixture}` | `{json}` |").unwrap();
    }
    out
}

/// A fixture shown three ways: the provider's bytes, the events, the other dialect.
fn example(fixture: &str) -> String {
    let dialect = dialect_of(fixture);
    let body = std::fs::read_to_string(root().join("fixtures").join(fixture)).unwrap();
    let events = decode(fixture);
    let other = match dialect {
        Dialect::OpenAi | Dialect::OpenAiResponses => Dialect::Anthropic,
        Dialect::Anthropic => Dialect::OpenAi,
    };
    let encoded = StreamEncoder::encode_all(
        other,
        EncodeOptions {
            include_usage: true,
        },
        &events,
    )
    .unwrap();
    format!(
        "Provider stream (`fixtures/{fixture}`, {dialect}):\n\n```text\n{}\n```\n\n\
         Agent Events (`streamgate events --from {dialect} fixtures/{fixture}`):\n\n```json\n{}```\n\n\
         Re-encoded for a {other} client (`streamgate convert --from {dialect} --to {other} ...`):\n\n```text\n{}```\n",
        body.trim_end(),
        stamped_lines(&events),
        String::from_utf8(encoded).unwrap()
    )
}

/// A section of a module's documentation: from the line `heading` to the next `# ` heading.
fn module_doc(file: &str, heading: &str) -> String {
    let source = std::fs::read_to_string(root().join(file)).unwrap();
    // A `# ` line inside a code block is a TOML comment, not the next heading.
    let mut in_code = false;
    let doc: Vec<&str> = source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| {
            in_code ^= l.starts_with("```");
            in_code || !l.starts_with("# ")
        })
        .collect();
    assert!(!doc.is_empty(), "{file} has no section {heading:?}");
    // Intra-doc links read as plain code in Markdown.
    doc.join("\n")
        .replace("[`", "`")
        .replace("`]", "`")
        .trim()
        .to_owned()
        + "\n"
}

/// A fixture cut inside its first tool call: the events up to the cut, then the terminal
/// error the gateway (and `streamgate events`) append, and how each dialect's client sees it.
fn cut_example(fixture: &str) -> String {
    let dialect = dialect_of(fixture);
    let body = std::fs::read(root().join("fixtures").join(fixture)).unwrap();
    let text = String::from_utf8_lossy(&body);
    let at = text
        .find("input_json_delta")
        .or_else(|| text.find("\"arguments\":\"{"))
        .unwrap();
    let cut = &body[..at];
    let (mut events, result) = StreamDecoder::decode_all(dialect, cut);
    let error = result.unwrap_err();
    events.extend(AgentEvent::terminal_failure(error.to_error_info()));
    let tail = |d: Dialect| {
        let bytes = StreamEncoder::encode_all(
            d,
            EncodeOptions {
                include_usage: true,
            },
            &events,
        )
        .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let frames: Vec<&str> = text.split_terminator("\n\n").collect();
        frames[frames.len().saturating_sub(2)..].join("\n\n") + "\n"
    };
    format!(
        "`fixtures/{fixture}` cut after {at} bytes, inside the first tool call:\n\n\
         ```text\n{error}\n```\n\nThe last Agent Events:\n\n```json\n{}```\n\n\
         The end of the stream an OpenAI client receives (no `[DONE]`):\n\n```text\n{}```\n\n\
         The end of the stream an Anthropic client receives (no `message_stop`):\n\n```text\n{}```\n\n\
         The end of the stream an OpenAI Responses client receives (`response.failed`, never \
         `response.completed`):\n\n```text\n{}```\n",
        stamped_lines(&events)
            .lines()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
        tail(Dialect::OpenAi),
        tail(Dialect::Anthropic),
        tail(Dialect::OpenAiResponses),
    )
}

fn generate(name: &str) -> String {
    match name {
        "event-catalog" => event_catalog(),
        "request-decisions" => module_doc("providers/src/request/mod.rs", "# Decisions"),
        "responses-decisions" => module_doc(
            "providers/src/openai_responses/request_in.rs",
            "# Decisions",
        ),
        "limits-config" => module_doc("src/limit/mod.rs", "# Configuration: `[limits]`"),
        "streams-config" => module_doc("src/config/streams.rs", "# Configuration: `[streams]`"),
        "log-config" => module_doc("src/config/log.rs", "# Configuration: `[log]`"),
        "state-config" => module_doc("src/state/config.rs", "# Configuration: `[state]`"),
        other => match (
            other.strip_prefix("example "),
            other.strip_prefix("cut-example "),
        ) {
            (Some(fixture), _) => example(fixture),
            (_, Some(fixture)) => cut_example(fixture),
            _ => panic!("unknown generated section {name:?}"),
        },
    }
}

#[test]
fn protocol_doc_examples_are_generated_from_fixtures() {
    check_generated("docs/protocol.md", 3);
}

#[test]
fn translation_doc_table_is_the_translators_own() {
    check_generated("docs/translation.md", 2);
}

#[test]
fn configuration_doc_limits_are_the_limiters_own() {
    check_generated("docs/configuration.md", 3);
}

fn check_generated(file: &str, min_sections: usize) {
    let path = root().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    let mut sections = 0;
    while let Some(start) = rest.find("<!-- BEGIN GENERATED: ") {
        let header_end = start + rest[start..].find("-->").unwrap() + 3;
        let name = rest[start + 22..header_end - 3].trim().to_owned();
        let end_marker = "<!-- END GENERATED -->";
        let end = header_end + rest[header_end..].find(end_marker).unwrap();
        out.push_str(&rest[..header_end]);
        out.push('\n');
        out.push_str(&generate(&name));
        out.push_str(end_marker);
        rest = &rest[end + end_marker.len()..];
        sections += 1;
    }
    out.push_str(rest);
    assert!(
        sections >= min_sections,
        "{file} lost its generated sections"
    );
    if std::env::var_os("STREAMGATE_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    } else {
        assert!(
            out == text,
            "{file} is out of date: run `STREAMGATE_BLESS=1 cargo test --test protocol_doc`"
        );
    }
}
