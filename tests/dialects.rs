//! Every dialect in the registry (`providers::dialects`) is checked here without being named:
//! registering a dialect puts it through its fixtures, its request translation, its error
//! shapes and its gateway door. (The fixture-driven suites — conformance, roundtrip, split,
//! finish_reasons, cli — list their fixtures from the same registry.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/gateway.rs"]
mod gw;

use proptest::prelude::*;
use providers::dialects::{self, WireDialect};
use providers::error::ErrorReport;
use providers::request::{AnthropicDefaults, Capabilities};
use providers::{Assembler, DecodeError, Dialect, StreamDecoder};
use serde_json::Value;

#[test]
fn every_dialect_has_recordings_listed_in_the_provenance() {
    let provenance =
        std::fs::read_to_string(common::fixtures_root().join("PROVENANCE.md")).unwrap();
    for wire in dialects::all() {
        let dir = wire.fixture_dir();
        // fixtures_in panics on a missing or empty folder.
        let fixtures = common::fixtures_in(wire.dialect().as_str(), dir);
        for f in &fixtures {
            assert!(
                provenance.contains(&format!("`{}`", f.name)),
                "{} is not in fixtures/PROVENANCE.md",
                f.name
            );
        }
        let whole = fixtures
            .iter()
            .filter(|f| StreamDecoder::decode_all(wire.dialect(), &f.body).1.is_ok())
            .count();
        assert!(whole > 0, "{dir}: no recording decodes as a whole answer");
    }
}

#[test]
fn every_registered_name_is_its_own() {
    for wire in dialects::all() {
        let d = wire.dialect();
        assert_eq!(d.wire().dialect(), d);
        assert_eq!(d.as_str().parse::<Dialect>(), Ok(d));
        assert!(!wire.title().is_empty());
    }
}

/// Each `*.json` request recorded next to a dialect's streams reads as a unified request,
/// and writing it upstream is a fixpoint after one pass: reading back what was written and
/// writing it again gives the same body.
#[test]
fn recorded_requests_translate_to_a_fixpoint() {
    let defaults = AnthropicDefaults::default();
    let caps = Capabilities::default();
    let mut seen = 0;
    for wire in dialects::all() {
        let dir = common::fixtures_root().join(wire.fixture_dir());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let name = path.display().to_string();
            let body: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let parsed = wire
                .parse_request(body.into())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let model = parsed.model.clone();
            let once: Value = wire
                .upstream_request(&parsed, &model, &defaults, caps)
                .map(|bytes| serde_json::from_slice(&bytes).unwrap())
                .unwrap_or_else(|e| panic!("{name} upstream: {e}"));
            let again = wire
                .parse_request(once.clone().into())
                .unwrap_or_else(|e| panic!("{name} re-read: {e}"));
            let twice: Value = wire
                .upstream_request(&again, &model, &defaults, caps)
                .map(|bytes| serde_json::from_slice(&bytes).unwrap())
                .unwrap_or_else(|e| panic!("{name} rewritten: {e}"));
            assert_eq!(once, twice, "{name}");
            assert_eq!(once["stream"], Value::Bool(true), "{name}: not streaming");
            seen += 1;
        }
    }
    assert!(seen > 0, "no recorded requests");
}

#[test]
fn api_urls_ignore_a_trailing_slash_and_end_with_the_endpoint() {
    for wire in dialects::all() {
        let path = wire.upstream_path();
        assert!(path.starts_with('/'), "{}", wire.dialect());
        for base in [
            "http://127.0.0.1:9/v1",
            "http://127.0.0.1:9",
            "https://h.example/a/v1",
        ] {
            let url = wire.api_url(base, path);
            assert_eq!(url, wire.api_url(&format!("{base}/"), path));
            assert!(url.ends_with(path), "{url}");
            assert!(url.starts_with(base.trim_end_matches("/v1")), "{url}");
        }
    }
}

fn report() -> impl Strategy<Value = ErrorReport> {
    (
        prop::sample::select(&providers::anthropic::ERROR_TYPES[..]),
        "[a-z_]{1,20}",
        prop::option::of("[a-z_]{1,20}"),
        prop::option::of("[a-z_.\\[\\]0-9]{1,20}"),
        any::<String>(),
        prop::sample::select(vec![400u16, 401, 403, 404, 413, 429, 500, 503, 529]),
    )
        .prop_map(|(class, kind, code, param, message, status)| ErrorReport {
            status,
            message,
            class: class.to_owned(),
            kind,
            code,
            param,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A dialect reads back the error bodies it writes: same message, a non-empty type.
    #[test]
    fn error_bodies_read_back(r in report()) {
        for wire in dialects::all() {
            let body = serde_json::to_vec(&wire.error_body(&r)).unwrap();
            let (ty, message) = wire.parse_error_body(&body)
                .unwrap_or_else(|| panic!("{}: unreadable {}", wire.dialect(), String::from_utf8_lossy(&body)));
            prop_assert_eq!(&message, &r.message);
            prop_assert!(!ty.is_empty());
        }
    }

    /// A mid-stream error frame, as the dialect's provider sends it, is read by the dialect's
    /// own decoder as the provider's error, message intact.
    #[test]
    fn error_frames_decode_as_upstream_errors(r in report()) {
        prop_assume!(!r.message.is_empty());
        for wire in dialects::all() {
            let frame = wire.error_frame(&r);
            let (_, result) = StreamDecoder::decode_all(wire.dialect(), frame.as_bytes());
            match result {
                Err(DecodeError::Upstream { error, .. }) => prop_assert_eq!(&error.message, &r.message),
                other => prop_assert!(false, "{}: {:?} from {:?}", wire.dialect(), other, frame),
            }
        }
    }
}

/// A recording of `wire`'s dialect that decodes as a whole answer with text.
fn text_recording(wire: &dyn WireDialect) -> String {
    common::fixtures_in(wire.dialect().as_str(), wire.fixture_dir())
        .into_iter()
        .find(|f| {
            let (events, result) = StreamDecoder::decode_all(wire.dialect(), &f.body);
            result.is_ok() && !Assembler::assemble(&events).text().is_empty()
        })
        .map(|f| f.path.file_stem().unwrap().to_string_lossy().into_owned())
        .unwrap_or_else(|| panic!("{}: no whole text recording", wire.dialect()))
}

/// Every path of every door answers a stream from every registered upstream dialect, in the
/// door's dialect; a body the door cannot read is a 400 in its dialect.
#[tokio::test]
async fn every_door_path_answers_in_its_dialect() {
    let h = gw::start().await;
    let providers = h.replay.config().providers;
    for door in dialects::all() {
        for path in door.door_paths() {
            for (name, provider) in &providers {
                let model = format!("{name}/{}", text_recording(provider.dialect.wire()));
                let body = gw::chat_body(door.dialect(), &model, true);
                let response = h
                    .post(
                        path,
                        door.dialect(),
                        &[],
                        serde_json::to_vec(&body).unwrap(),
                    )
                    .await;
                assert_eq!(response.status(), 200, "{path} {model}");
                let bytes = gw::body_bytes(response).await;
                let (events, result) = StreamDecoder::decode_all(door.dialect(), &bytes);
                assert!(result.is_ok(), "{path} {model}: {result:?}");
                assert!(
                    !Assembler::assemble(&events).text().is_empty(),
                    "{path} {model}"
                );
            }
            let response = h.post(path, door.dialect(), &[], b"{}".to_vec()).await;
            assert_eq!(response.status(), 400, "{path}");
            let bytes = gw::body_bytes(response).await;
            let parsed = door.parse_error_body(&bytes);
            assert!(
                parsed.is_some_and(|(_, m)| !m.is_empty()),
                "{path}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}
