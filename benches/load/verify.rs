//! Checks that a streamed answer is whole, per door.

use super::*;

/// Checks an OpenAI SSE body is whole: every content token in order, a `stop` finish, DONE
/// last. Returns the number of `data:` frames.
pub(crate) fn verify(body: &[u8], expected: &Expected) -> Res<u64> {
    let text = std::str::from_utf8(body)?;
    let mut content = String::with_capacity(expected.content.len());
    let mut frames = 0u64;
    let mut last = "";
    let mut stopped = false;
    for block in text.split("\n\n") {
        let Some(data) = block.trim_start().strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        frames += 1;
        last = data;
        if data.contains(r#""finish_reason":"stop""#) {
            stopped = true;
        }
        // Tokens carry no quotes or escapes, so the value ends at the next quote.
        if let Some(at) = data.find(r#""content":""#) {
            let rest = &data[at + 11..];
            if let Some(end) = rest.find('"') {
                content.push_str(&rest[..end]);
            }
        }
    }
    if last != "[DONE]" {
        return Err(format!("stream not terminated by [DONE] (last frame: {last:.200})").into());
    }
    if !stopped {
        return Err("no finish_reason stop".into());
    }
    same_content(&content, expected)?;
    Ok(frames)
}

/// Checks an Agent Event SSE body of the native door is whole: every content token in order in
/// its `text.delta` events, `stream.end` last with reason `stop`. Returns the number of events.
pub(crate) fn verify_native(body: &[u8], expected: &Expected) -> Res<u64> {
    let text = std::str::from_utf8(body)?;
    let mut content = String::with_capacity(expected.content.len());
    let mut events = 0u64;
    let mut last = "";
    for block in text.split("\n\n") {
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
            continue;
        };
        let data = data.trim();
        events += 1;
        last = data;
        // Tokens carry no quotes or escapes, so the value ends at the next quote.
        if data.contains(r#""type":"text.delta""#)
            && let Some(at) = data.find(r#""text":""#)
        {
            let rest = &data[at + 8..];
            if let Some(end) = rest.find('"') {
                content.push_str(&rest[..end]);
            }
        }
    }
    if !(last.contains(r#""type":"stream.end""#) && last.contains(r#""reason":"stop""#)) {
        return Err(
            format!("stream not ended by stream.end, reason stop (last: {last:.200})").into(),
        );
    }
    same_content(&content, expected)?;
    Ok(events)
}

/// Checks an Anthropic Messages event stream (the Anthropic door over the OpenAI upstream) is
/// whole: every content token in order in `content_block_delta` text deltas, a
/// `message_delta` with `stop_reason` `end_turn`, and `message_stop` last. Returns the number
/// of events.
pub(crate) fn verify_anthropic(body: &[u8], expected: &Expected) -> Res<u64> {
    let text = std::str::from_utf8(body)?;
    let mut content = String::with_capacity(expected.content.len());
    let mut events = 0u64;
    let mut last = "";
    let mut end_turn = false;
    for block in text.split("\n\n") {
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
            continue;
        };
        let data = data.trim();
        events += 1;
        last = data;
        if data.contains(r#""type":"error""#) {
            return Err(format!("error event: {data:.200}").into());
        }
        if data.contains(r#""type":"message_delta""#)
            && data.contains(r#""stop_reason":"end_turn""#)
        {
            end_turn = true;
        }
        // Tokens carry no quotes or escapes, so the value ends at the next quote.
        if data.contains(r#""type":"content_block_delta""#)
            && data.contains(r#""type":"text_delta""#)
            && let Some(at) = data.find(r#""text":""#)
        {
            let rest = &data[at + 8..];
            if let Some(end) = rest.find('"') {
                content.push_str(&rest[..end]);
            }
        }
    }
    if !last.contains(r#""type":"message_stop""#) {
        return Err(format!("stream not ended by message_stop (last: {last:.200})").into());
    }
    if !end_turn {
        return Err("no message_delta with stop_reason end_turn".into());
    }
    same_content(&content, expected)?;
    Ok(events)
}

/// The tokens a stream carried, against what the upstream sent.
fn same_content(content: &str, expected: &Expected) -> Res<()> {
    if content != expected.content {
        return Err(format!(
            "content differs: {} bytes received, {} expected",
            content.len(),
            expected.content.len()
        )
        .into());
    }
    Ok(())
}
