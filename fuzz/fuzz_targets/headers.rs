//! The provider-header parsers (`streamgate::limit::headers`): `retry-after`,
//! `retry-after-ms`, the OpenAI and Anthropic rate-limit headers, Go durations, RFC 3339.
//! Bytes 0-1: the status; bytes 2-5: "now" (seconds after the epoch); the rest: header lines
//! `name: value`, split at `\n`.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use streamgate::limit::{
    MAX_BACKOFF, backoff_from_headers, parse_go_duration, parse_rfc3339, retry_after,
};

fuzz_target!(|data: &[u8]| {
    let [s0, s1, n0, n1, n2, n3, rest @ ..] = data else {
        return;
    };
    let status = u16::from_le_bytes([*s0, *s1]) % 1000;
    let now = UNIX_EPOCH + Duration::from_secs(u64::from(u32::from_le_bytes([*n0, *n1, *n2, *n3])));
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(text) = std::str::from_utf8(line) {
            let _ = parse_go_duration(text);
            let _ = parse_rfc3339(text);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if let Some(wait) = retry_after(&headers, now) {
        assert!(wait <= MAX_BACKOFF, "retry-after past the clamp: {wait:?}");
    }
    if let Some(wait) = backoff_from_headers(status, &headers, now) {
        assert!(wait <= MAX_BACKOFF, "backoff past the clamp: {wait:?}");
    }
});
