//! Request ids: a client's `x-request-id` when it is sane, else a fresh UUID v7.
//!
//! Sane means 1 to [`MAX_LEN`] characters of `A-Z a-z 0-9 . _ : @ / + = -`: enough for
//! every id scheme in use (UUIDs, ULIDs, `req_...`, base64, `trace/span` pairs), and nothing
//! that could forge a log line, break a header or a JSON string, or grow a log without bound.
//! Any other value is dropped before tower-http's `SetRequestId` runs, so a fresh id is made.
//! A UUID v7 is time-ordered (48 bits of milliseconds first) and unique across instances
//! without coordination (74 random bits).

use axum::extract::Request;
use http::HeaderValue;
use tower_http::request_id::{MakeRequestId, RequestId};

/// The header that carries the id, in requests, responses and upstream calls.
pub const HEADER: &str = "x-request-id";

/// Longest id kept from a client.
pub const MAX_LEN: usize = 128;

/// Whether a client's id is kept (see the module doc).
pub fn is_sane(value: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"._:@/+=-".contains(&b))
}

/// Drops every `x-request-id` of `request` unless there is exactly one and it is sane.
pub fn drop_insane(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut values = headers.get_all(HEADER).iter();
    let keep = match (values.next(), values.next()) {
        (Some(v), None) => is_sane(v.as_bytes()),
        _ => false,
    };
    if !keep {
        headers.remove(HEADER);
    }
    request
}

/// A fresh UUID v7, for tower-http's `SetRequestIdLayer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeUuidV7;

impl MakeRequestId for MakeUuidV7 {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        Some(RequestId::new(fresh_header()))
    }
}

/// A fresh id as text (for work no request started, such as a stream the journal brought
/// back).
pub fn fresh() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

fn fresh_header() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
    // Hex digits and hyphens are always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sane_ids_are_the_documented_alphabet(value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let expected = !value.is_empty()
                && value.len() <= MAX_LEN
                && value.iter().all(|&b| b.is_ascii_alphanumeric() || b"._:@/+=-".contains(&b));
            prop_assert_eq!(is_sane(&value), expected);
        }

        #[test]
        fn ids_of_the_alphabet_are_kept(value in "[A-Za-z0-9._:@/+=-]{1,128}") {
            prop_assert!(is_sane(value.as_bytes()));
        }
    }

    #[test]
    fn fresh_ids_are_v7_and_ordered() {
        let ids: Vec<String> = (0..64).map(|_| fresh()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 7);
            assert!(is_sane(id.as_bytes()));
        }
    }
}
