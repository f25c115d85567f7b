//! docs/protocol.md's examples are produced from the fixtures by the codecs, never typed by
//! hand: this test regenerates every `<!-- BEGIN GENERATED: ... -->` section and fails when the
//! file differs. `STREAMGATE_BLESS=1 cargo test --test protocol_doc` rewrites the file.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use providers::{AgentEvent, Dialect, EncodeOptions, Stamper, StreamDecoder, StreamEncoder};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn dialect_of(fixture: &str) -> Dialect {
    if fixture.starts_with("anthropic/") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
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
    for dir in ["anthropic", "openai_chat"] {
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
        for event in decode(fixture) {
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
        Dialect::OpenAi => Dialect::Anthropic,
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

fn generate(name: &str) -> String {
    match name {
        "event-catalog" => event_catalog(),
        other => match other.strip_prefix("example ") {
            Some(fixture) => example(fixture),
            None => panic!("unknown generated section {name:?}"),
        },
    }
}

#[test]
fn protocol_doc_examples_are_generated_from_fixtures() {
    let path = root().join("docs/protocol.md");
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
        sections >= 3,
        "docs/protocol.md lost its generated sections"
    );
    if std::env::var_os("STREAMGATE_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    } else {
        assert!(
            out == text,
            "docs/protocol.md is out of date: run `STREAMGATE_BLESS=1 cargo test --test protocol_doc`"
        );
    }
}
