//! The replay's answers on paths the gateway passes through rather than translates, so that
//! an SDK can be pointed at the gateway and at the replay and get the same thing:
//! `POST /v1/embeddings` (a vector per input derived from its SHA-256: deterministic, and
//! different for different inputs) and `POST /v1/files` (the file object of a multipart
//! upload, its id derived from the file's bytes).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use providers::Dialect;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Shared, error, json_response, record_raw};

/// Dimensions of an embedding when the request does not ask for `dimensions`.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// Most dimensions the replay gives an embedding.
const MAX_DIMENSIONS: usize = 256;

/// The `created_at` of every file: answers must not depend on the clock.
const CREATED_AT: u64 = 1_700_000_000;

/// `POST /v1/embeddings`: `input` a string, a list of strings, or token lists; answers
/// floats, or base64 little-endian f32 when `encoding_format` is `base64` (the Python SDK's
/// default on the wire).
pub async fn embeddings(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let bad = |message: &str| error(Dialect::OpenAi, StatusCode::BAD_REQUEST, message);
    let body = match record_raw(&shared, request).await {
        Ok((_, bytes)) => bytes,
        Err(message) => return bad(&message),
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad("the body is not JSON");
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return bad("model is required");
    };
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Value::Array(items.clone()).to_string()]
        }
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => return bad("input must be a string or a non-empty list"),
    };
    let dimensions = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(EMBEDDING_DIMENSIONS)
        .clamp(1, MAX_DIMENSIONS);
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = vector(input, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(encode_base64(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|i| i.len().div_ceil(4)).sum();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

/// A vector in [-1, 1] from the SHA-256 of `input` (rehashed for more than 32 dimensions).
fn vector(input: &str, dimensions: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dimensions);
    let mut digest = Sha256::digest(input.as_bytes());
    while out.len() < dimensions {
        for byte in digest.iter().take(dimensions - out.len()) {
            out.push(f32::from(*byte) / 127.5 - 1.0);
        }
        digest = Sha256::digest(digest);
    }
    out
}

fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `POST /v1/files`: a multipart upload with a `file` part and a `purpose` field.
pub async fn files(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let bad = |message: &str| error(Dialect::OpenAi, StatusCode::BAD_REQUEST, message);
    let (headers, body) = match record_raw(&shared, request).await {
        Ok(got) => got,
        Err(message) => return bad(&message),
    };
    let boundary = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        })
        .map(|b| b.trim_matches('"').to_owned());
    let Some(boundary) = boundary else {
        return bad("expected a multipart/form-data body with a boundary");
    };
    let parts = multipart(&body, &boundary);
    let field = |name: &str| parts.iter().find(|p| p.name == name);
    let (Some(file), Some(purpose)) = (field("file"), field("purpose")) else {
        return bad("a file part and a purpose field are required");
    };
    let digest = Sha256::digest(&file.content);
    let id: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "id": format!("file-{id}"),
            "object": "file",
            "bytes": file.content.len(),
            "created_at": CREATED_AT,
            "filename": file.filename.clone().unwrap_or_default(),
            "purpose": String::from_utf8_lossy(&purpose.content),
            "status": "processed",
        }),
    )
}

/// One part of a multipart body.
#[derive(Debug, PartialEq, Eq)]
struct Part {
    name: String,
    filename: Option<String>,
    content: Bytes,
}

/// The parts of a multipart `body` (RFC 7578), those it can read; a part without a name is
/// skipped.
fn multipart(body: &Bytes, boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest: &[u8] = body;
    let Some(start) = find(rest, delimiter.as_bytes()) else {
        return parts;
    };
    rest = &rest[start + delimiter.len()..];
    let next_delimiter = format!("\r\n--{boundary}");
    while let Some(after) = rest.strip_prefix(b"\r\n") {
        let Some(end) = find(after, next_delimiter.as_bytes()) else {
            break;
        };
        let part = &after[..end];
        rest = &after[end + next_delimiter.len()..];
        let Some(split) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..split]);
        let param = |key: &str| {
            head.split(';')
                .find_map(|p| {
                    p.trim()
                        .strip_prefix(&format!("{key}=\""))
                        .map(str::to_owned)
                })
                .map(|v| v.split('"').next().unwrap_or_default().to_owned())
        };
        let Some(name) = param("name") else {
            continue;
        };
        let offset = part.as_ptr() as usize - body.as_ptr() as usize + split + 4;
        parts.push(Part {
            name,
            filename: param("filename"),
            content: body.slice(offset..offset + part.len() - split - 4),
        });
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_encoding() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn vectors_are_deterministic_bounded_and_tell_inputs_apart() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50 {
            let text: String = (0..rng.usize(0..40)).map(|_| rng.alphanumeric()).collect();
            let dims = rng.usize(1..100);
            let v = vector(&text, dims);
            assert_eq!(v.len(), dims);
            assert_eq!(v, vector(&text, dims));
            assert!(v.iter().all(|f| (-1.0..=1.0).contains(f)));
            assert_ne!(vector(&format!("{text}x"), 32), vector(&text, 32));
        }
    }

    #[test]
    fn multipart_parts_come_back_byte_for_byte() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..30 {
            let content: Vec<u8> = (0..rng.usize(0..2000)).map(|_| rng.u8(..)).collect();
            let boundary = format!("b{}", rng.u64(..));
            let mut body = format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
                 --{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\
                 content-type: application/octet-stream\r\n\r\n"
            )
            .into_bytes();
            body.extend_from_slice(&content);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            let parts = multipart(&Bytes::from(body), &boundary);
            assert_eq!(parts.len(), 2);
            assert_eq!(parts[0].content, "batch");
            assert_eq!(parts[1].filename.as_deref(), Some("a.jsonl"));
            assert_eq!(parts[1].content, content);
        }
    }
}
