//! Writing SSE frames: what every encoder ends with.

/// Appends one SSE frame (`event:` line when given, one `data:` line, blank line).
///
/// `data` must not contain line breaks; serde_json output never does.
pub fn write_frame(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    debug_assert!(!data.contains(['\n', '\r']), "SSE data with a line break");
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Appends one SSE frame whose data is `value` serialized as JSON, written straight into
/// `out` without an intermediate string.
pub fn write_json_frame<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    event: Option<&str>,
    value: &T,
) -> Result<(), serde_json::Error> {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, value)?;
    out.extend_from_slice(b"\n\n");
    Ok(())
}

/// Appends an SSE comment line (ignored by every client; used as a keep-alive).
pub fn write_comment(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b": ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_event_data_blank() {
        let mut out = Vec::new();
        write_frame(&mut out, Some("ping"), "{}");
        write_json_frame(&mut out, None, &serde_json::json!({"a": 1})).unwrap();
        write_comment(&mut out, "keep-alive");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: ping\ndata: {}\n\ndata: {\"a\":1}\n\n: keep-alive\n\n"
        );
    }
}
