//! Serde types of the Anthropic Messages wire format: the stream events a provider sends, the
//! frames an encoder writes, and the non-streaming response body.
//!
//! Incoming types borrow from the SSE frame wherever the JSON allows it (strings without
//! escapes), because `content_block_delta` is the hot path of every stream.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Extra;

// ---------------------------------------------------------------------------------------------
// Incoming stream events
// ---------------------------------------------------------------------------------------------

/// A string borrowed from the input when it has no escapes, owned otherwise.
///
/// serde's `Cow<str>` impl always allocates unless the field carries `#[serde(borrow)]`, which
/// hand-written visitors cannot use; this newtype does the same for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowStr<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Only the `type` of an event, for frames whose SSE `event:` name is missing or unknown.
#[derive(Debug, Deserialize)]
pub struct EventType<'a> {
    /// The event's `type`.
    #[serde(rename = "type", borrow)]
    pub ty: Cow<'a, str>,
}

/// `message_start`.
#[derive(Debug, Deserialize)]
pub struct MessageStart {
    /// The message header (empty content, no stop reason yet).
    pub message: MessageHeader,
}

/// The `message` object of `message_start`.
#[derive(Debug, Deserialize)]
pub struct MessageHeader {
    /// `msg_...`.
    pub id: String,
    /// Model answering.
    pub model: String,
    /// Token counts at the start (input known, output 1 or so).
    #[serde(default)]
    pub usage: Option<WireUsage>,
    /// Every other field (`type`, `role`, `content`, `stop_*`, `container`, ...).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Message fields that have a place in the unified model or carry nothing at start.
pub const MESSAGE_KNOWN_FIELDS: [&str; 8] = [
    "id",
    "type",
    "role",
    "model",
    "content",
    "stop_reason",
    "stop_sequence",
    "usage",
];

/// Anthropic `usage`, in message_start, message_delta and the response body.
#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    /// Uncached prompt tokens.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Prompt tokens written to the cache.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    /// `service_tier`, `cache_creation`, `server_tool_use`, `output_tokens_details`, ...
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `content_block_start`.
#[derive(Debug, Deserialize)]
pub struct ContentBlockStart {
    /// Wire block index.
    pub index: u32,
    /// The block header.
    pub content_block: ContentBlock,
}

/// A content block header (stream) or whole block (response body).
#[derive(Debug, Clone, PartialEq)]
pub enum ContentBlock {
    /// `text`; `extra` holds header fields beyond `type`/`text` (e.g. `citations`).
    Text {
        /// Text already present in the header (empty when streaming).
        text: String,
        /// Other header fields.
        extra: Extra,
    },
    /// `tool_use`: a client tool call.
    ToolUse {
        /// `toolu_...`.
        id: String,
        /// Tool name.
        name: String,
        /// Input already present in the header (`{}` when streaming).
        input: Value,
        /// Other header fields (e.g. `caller`).
        extra: Extra,
    },
    /// `thinking`.
    Thinking {
        /// Reasoning already present in the header.
        thinking: String,
        /// Signature already present in the header.
        signature: String,
    },
    /// `redacted_thinking`.
    RedactedThinking {
        /// Opaque payload.
        data: String,
    },
    /// Anything else (`server_tool_use`, `web_search_tool_result`, ...), verbatim.
    Native(Value),
}

impl<'de> Deserialize<'de> for ContentBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Block headers come once per block, so going through a map costs little and keeps
        // unknown block types verbatim.
        let mut map = Map::<String, Value>::deserialize(d)?;
        let ty = match map.get("type") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(de::Error::missing_field("type")),
        };
        fn take_str<E: de::Error>(
            map: &mut Map<String, Value>,
            key: &'static str,
            required: bool,
        ) -> Result<String, E> {
            match map.remove(key) {
                Some(Value::String(s)) => Ok(s),
                None | Some(Value::Null) if !required => Ok(String::new()),
                None => Err(E::missing_field(key)),
                Some(_) => Err(E::invalid_type(de::Unexpected::Other("non-string"), &key)),
            }
        }
        Ok(match ty.as_str() {
            "text" => {
                map.remove("type");
                let text = take_str(&mut map, "text", false)?;
                ContentBlock::Text { text, extra: map }
            }
            "tool_use" => {
                let id = take_str(&mut map, "id", true)?;
                let name = take_str(&mut map, "name", true)?;
                map.remove("type");
                let input = map.remove("input").unwrap_or(Value::Null);
                ContentBlock::ToolUse {
                    id,
                    name,
                    input,
                    extra: map,
                }
            }
            "thinking" => ContentBlock::Thinking {
                thinking: take_str(&mut map, "thinking", false)?,
                signature: take_str(&mut map, "signature", false)?,
            },
            "redacted_thinking" => ContentBlock::RedactedThinking {
                data: take_str(&mut map, "data", true)?,
            },
            _ => ContentBlock::Native(Value::Object(map)),
        })
    }
}

/// `content_block_delta`.
#[derive(Debug, Deserialize)]
pub struct ContentBlockDelta<'a> {
    /// Wire block index.
    pub index: u32,
    /// The delta.
    #[serde(borrow)]
    pub delta: Delta<'a>,
}

/// The `delta` of `content_block_delta`.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta<'a> {
    /// `text_delta`.
    Text(Cow<'a, str>),
    /// `input_json_delta` (`partial_json`).
    InputJson(Cow<'a, str>),
    /// `thinking_delta`.
    Thinking(Cow<'a, str>),
    /// `signature_delta`.
    Signature(Cow<'a, str>),
    /// `citations_delta` or a delta type we do not know, verbatim.
    Other(Value),
}

impl Delta<'_> {
    /// The delta as the JSON object it came as.
    pub fn to_value(&self) -> Value {
        let (ty, key, s) = match self {
            Delta::Other(v) => return v.clone(),
            Delta::Text(s) => ("text_delta", "text", s),
            Delta::InputJson(s) => ("input_json_delta", "partial_json", s),
            Delta::Thinking(s) => ("thinking_delta", "thinking", s),
            Delta::Signature(s) => ("signature_delta", "signature", s),
        };
        let mut m = Map::new();
        m.insert("type".into(), Value::String(ty.into()));
        m.insert(key.into(), Value::String(s.to_string()));
        Value::Object(m)
    }

    fn from_map<E: de::Error>(mut map: Map<String, Value>) -> Result<Self, E> {
        let ty = match map.get("type") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(E::missing_field("type")),
        };
        let (key, make): (&'static str, fn(Cow<'static, str>) -> Delta<'static>) = match ty {
            "text_delta" => ("text", Delta::Text),
            "input_json_delta" => ("partial_json", Delta::InputJson),
            "thinking_delta" => ("thinking", Delta::Thinking),
            "signature_delta" => ("signature", Delta::Signature),
            _ => return Ok(Delta::Other(Value::Object(map))),
        };
        match map.remove(key) {
            Some(Value::String(s)) => Ok(make(Cow::Owned(s))),
            None => Err(E::missing_field(key)),
            Some(_) => Err(E::invalid_type(de::Unexpected::Other("non-string"), &key)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Delta<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(DeltaVisitor)
    }
}

struct DeltaVisitor;

impl<'de> Visitor<'de> for DeltaVisitor {
    type Value = Delta<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a content block delta object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Anthropic always writes `type` first: read it, then only the field that type needs,
        // straight from the input. Any other order falls back to a generic map.
        let Some(first) = map.next_key::<CowStr<'de>>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first.0 != "type" {
            let mut m = Map::new();
            let v: Value = map.next_value()?;
            m.insert(first.0.into_owned(), v);
            while let Some(k) = map.next_key::<String>()? {
                let v: Value = map.next_value()?;
                m.insert(k, v);
            }
            return Delta::from_map(m);
        }
        let ty: CowStr<'de> = map.next_value()?;
        let (key, make): (&'static str, fn(Cow<'de, str>) -> Delta<'de>) = match &*ty.0 {
            "text_delta" => ("text", Delta::Text),
            "input_json_delta" => ("partial_json", Delta::InputJson),
            "thinking_delta" => ("thinking", Delta::Thinking),
            "signature_delta" => ("signature", Delta::Signature),
            _ => {
                let mut m = Map::new();
                m.insert("type".into(), Value::String(ty.0.into_owned()));
                while let Some(k) = map.next_key::<String>()? {
                    let v: Value = map.next_value()?;
                    m.insert(k, v);
                }
                return Ok(Delta::Other(Value::Object(m)));
            }
        };
        let mut found = None;
        while let Some(k) = map.next_key::<CowStr<'de>>()? {
            if k.0 == key {
                let s: CowStr<'de> = map.next_value()?;
                found = Some(s.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        match found {
            Some(s) => Ok(make(s)),
            None => Err(de::Error::missing_field(key)),
        }
    }
}

/// `content_block_stop`.
#[derive(Debug, Deserialize)]
pub struct ContentBlockStop {
    /// Wire block index.
    pub index: u32,
}

/// `message_delta`.
#[derive(Debug, Deserialize)]
pub struct MessageDelta {
    /// The top-level changes.
    pub delta: MessageDeltaBody,
    /// Cumulative token counts.
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// The `delta` of `message_delta`.
#[derive(Debug, Deserialize)]
pub struct MessageDeltaBody {
    /// Why the answer stopped.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Which stop sequence matched.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// `stop_details`, `container`, ...
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `error`.
#[derive(Debug, Deserialize)]
pub struct ErrorEvent {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The `error` object of an error event or error response.
#[derive(Debug, Deserialize, Serialize)]
pub struct ErrorBody {
    /// `overloaded_error`, `api_error`, ...
    #[serde(rename = "type", default)]
    pub ty: String,
    /// Human-readable text.
    #[serde(default)]
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Outgoing stream frames (borrowed, serialized straight into the output buffer)
// ---------------------------------------------------------------------------------------------

/// `usage` as written, in message_start, message_delta and the response body.
#[derive(Debug, Default, Serialize)]
pub struct UsageOut<'a> {
    /// Uncached prompt tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Prompt tokens written to the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Prompt tokens read from the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// Generated tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Passthrough fields.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<&'a Extra>,
}

/// `message_start` as written.
#[derive(Debug, Serialize)]
pub struct MessageStartOut<'a> {
    /// Always `message_start`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// The message header.
    pub message: MessageOut<'a>,
}

/// The message header of `message_start`.
#[derive(Debug, Serialize)]
pub struct MessageOut<'a> {
    /// `msg_...`.
    pub id: &'a str,
    /// Always `message`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Always `assistant`.
    pub role: &'static str,
    /// Model answering.
    pub model: &'a str,
    /// Always empty at start.
    pub content: [(); 0],
    /// Always null at start.
    pub stop_reason: Option<&'a str>,
    /// Always null at start.
    pub stop_sequence: Option<&'a str>,
    /// Token counts so far.
    pub usage: UsageOut<'a>,
    /// Same-dialect passthrough message fields.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<&'a Extra>,
}

/// `content_block_start` as written.
#[derive(Debug, Serialize)]
pub struct ContentBlockStartOut<'a> {
    /// Always `content_block_start`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Wire index.
    pub index: u32,
    /// The header.
    pub content_block: BlockOut<'a>,
}

/// A content block header as written.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum BlockOut<'a> {
    /// One of the block types the unified model knows.
    Known(KnownBlockOut<'a>),
    /// A provider-run block, verbatim.
    Native(&'a Value),
}

/// Block headers the unified model knows.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KnownBlockOut<'a> {
    /// `text`.
    Text {
        /// Always empty in a header.
        text: &'a str,
        /// Same-dialect header fields (`citations`).
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        extra: Option<&'a Extra>,
    },
    /// `thinking`.
    Thinking {
        /// Always empty in a header.
        thinking: &'a str,
        /// Always empty in a header.
        signature: &'a str,
    },
    /// `redacted_thinking`.
    RedactedThinking {
        /// Opaque payload.
        data: &'a str,
    },
    /// `tool_use`.
    ToolUse {
        /// Call id.
        id: &'a str,
        /// Tool name.
        name: &'a str,
        /// Always `{}` in a header.
        input: EmptyObject,
        /// Same-dialect header fields (`caller`).
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        extra: Option<&'a Extra>,
    },
}

/// Serializes as `{}`.
#[derive(Debug, Clone, Copy)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

/// `content_block_delta` as written.
#[derive(Debug, Serialize)]
pub struct ContentBlockDeltaOut<'a> {
    /// Always `content_block_delta`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Wire index.
    pub index: u32,
    /// The delta.
    pub delta: DeltaOut<'a>,
}

/// A delta as written.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum DeltaOut<'a> {
    /// One of the delta types the unified model knows.
    Known(KnownDeltaOut<'a>),
    /// A provider delta, verbatim.
    Native(&'a Value),
}

/// Deltas the unified model knows.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KnownDeltaOut<'a> {
    /// `text_delta`.
    TextDelta {
        /// Fragment.
        text: &'a str,
    },
    /// `input_json_delta`.
    InputJsonDelta {
        /// Fragment.
        partial_json: &'a str,
    },
    /// `thinking_delta`.
    ThinkingDelta {
        /// Fragment.
        thinking: &'a str,
    },
    /// `signature_delta`.
    SignatureDelta {
        /// Signature.
        signature: &'a str,
    },
}

/// `content_block_stop` as written.
#[derive(Debug, Serialize)]
pub struct ContentBlockStopOut {
    /// Always `content_block_stop`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Wire index.
    pub index: u32,
}

/// `message_delta` as written.
#[derive(Debug, Serialize)]
pub struct MessageDeltaOut<'a> {
    /// Always `message_delta`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Stop reason and friends.
    pub delta: MessageDeltaBodyOut<'a>,
    /// Token counts since message_start.
    pub usage: UsageOut<'a>,
}

/// The `delta` of `message_delta` as written.
#[derive(Debug, Serialize)]
pub struct MessageDeltaBodyOut<'a> {
    /// Why the answer stopped.
    pub stop_reason: &'a str,
    /// Which stop sequence matched.
    pub stop_sequence: Option<&'a str>,
    /// Same-dialect passthrough (`stop_details`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<&'a Extra>,
}

/// An event with only a `type` (`message_stop`, `ping`).
#[derive(Debug, Serialize)]
pub struct TypeOnly {
    /// The type.
    #[serde(rename = "type")]
    pub ty: &'static str,
}

/// `error` as written.
#[derive(Debug, Serialize)]
pub struct ErrorOut<'a> {
    /// Always `error`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// What went wrong.
    pub error: ErrorDetailOut<'a>,
}

/// The `error` object as written.
#[derive(Debug, Serialize)]
pub struct ErrorDetailOut<'a> {
    /// Error type (`overloaded_error`, ...).
    #[serde(rename = "type")]
    pub ty: &'a str,
    /// Human-readable text.
    pub message: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Non-streaming response body
// ---------------------------------------------------------------------------------------------

/// The non-streaming response body (`"type": "message"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseBody {
    /// `msg_...`.
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Always `assistant`.
    pub role: String,
    /// Model that answered.
    pub model: String,
    /// Content blocks in order.
    pub content: Vec<ResponseBlock>,
    /// Why it stopped.
    pub stop_reason: Option<String>,
    /// Which stop sequence matched.
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: ResponseUsage,
    /// Passthrough message fields (`container`, `stop_details`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `usage` of the response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Uncached prompt tokens.
    pub input_tokens: u64,
    /// Prompt tokens written to the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Prompt tokens read from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Passthrough usage fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One content block of the response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResponseBlock {
    /// A block type the unified model knows.
    Known(KnownResponseBlock),
    /// A provider-run block, verbatim.
    Native(Value),
}

/// Response blocks the unified model knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KnownResponseBlock {
    /// `text`, with `citations` and other fields in `extra`.
    Text {
        /// The text.
        text: String,
        /// `citations`, ...
        #[serde(flatten)]
        extra: Extra,
    },
    /// `thinking`.
    Thinking {
        /// Reasoning text.
        thinking: String,
        /// Provider signature.
        signature: String,
    },
    /// `redacted_thinking`.
    RedactedThinking {
        /// Opaque payload.
        data: String,
    },
    /// `tool_use`.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Parsed input.
        input: Value,
        /// Other fields of the call (e.g. `caller`), same dialect only.
        #[serde(flatten)]
        extra: Extra,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_delta_borrows_from_the_input() {
        let d: ContentBlockDelta<'_> = serde_json::from_str(
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"text_delta","text":"hi"}}"#,
        )
        .unwrap();
        assert_eq!(d.index, 3);
        assert!(matches!(d.delta, Delta::Text(Cow::Borrowed("hi"))));
    }

    #[test]
    fn delta_with_type_not_first_and_unknown_types() {
        let d: Delta<'_> = serde_json::from_str(r#"{"text":"a\n","type":"text_delta"}"#).unwrap();
        assert_eq!(d, Delta::Text(Cow::Owned("a\n".into())));
        let raw = r#"{"type":"citations_delta","citation":{"x":1}}"#;
        let d: Delta<'_> = serde_json::from_str(raw).unwrap();
        assert_eq!(d, Delta::Other(serde_json::from_str::<Value>(raw).unwrap()));
        assert_eq!(d.to_value(), serde_json::from_str::<Value>(raw).unwrap());
        assert!(serde_json::from_str::<Delta<'_>>(r#"{"type":"text_delta"}"#).is_err());
    }

    #[test]
    fn block_headers() {
        let b: ContentBlock =
            serde_json::from_str(r#"{"citations":[],"type":"text","text":""}"#).unwrap();
        let ContentBlock::Text { text, extra } = b else {
            panic!("not text")
        };
        assert_eq!(text, "");
        assert_eq!(extra.get("citations"), Some(&Value::Array(vec![])));
        let b: ContentBlock =
            serde_json::from_str(r#"{"type":"server_tool_use","id":"s","input":{}}"#).unwrap();
        assert!(matches!(b, ContentBlock::Native(_)));
    }

    #[test]
    fn headers_serialize_like_anthropic() {
        let h = ContentBlockStartOut {
            ty: "content_block_start",
            index: 1,
            content_block: BlockOut::Known(KnownBlockOut::ToolUse {
                id: "t",
                name: "f",
                input: EmptyObject,
                extra: None,
            }),
        };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#
        );
    }
}
