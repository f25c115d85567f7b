//! Connection-level vocabulary: the subprotocols (which choose the per-message compression)
//! and the close codes.

use std::fmt;

/// Per-message compression of a connection, chosen by its subprotocol.
///
/// With [`Compression::None`] every message is a text frame holding one JSON frame; with any
/// other mode every server message is a binary frame holding one JSON frame compressed on its
/// own (no context shared between messages; see [`super::compress`](mod@super::compress)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// `streamgate.v1`: text frames, no compression.
    #[default]
    None,
    /// `streamgate.v1+lz4`: LZ4 block with its size prepended.
    Lz4,
    /// `streamgate.v1+zstd`: one zstd frame per message.
    Zstd,
    /// `streamgate.v1+gzip`: one gzip member per message.
    Gzip,
}

/// Every subprotocol name, in the order of [`Compression::ALL`].
pub const SUBPROTOCOLS: [&str; 4] = [
    "streamgate.v1",
    "streamgate.v1+lz4",
    "streamgate.v1+zstd",
    "streamgate.v1+gzip",
];

impl Compression {
    /// Every mode, in the order of [`SUBPROTOCOLS`].
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Gzip,
    ];

    /// The `Sec-WebSocket-Protocol` name of this mode.
    pub const fn subprotocol(&self) -> &'static str {
        match self {
            Compression::None => SUBPROTOCOLS[0],
            Compression::Lz4 => SUBPROTOCOLS[1],
            Compression::Zstd => SUBPROTOCOLS[2],
            Compression::Gzip => SUBPROTOCOLS[3],
        }
    }

    /// The mode a subprotocol name stands for (exact, case-sensitive match).
    pub fn from_subprotocol(name: &str) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| c.subprotocol() == name)
    }

    /// Whether messages travel as binary frames (every mode but `None`).
    pub const fn is_binary(&self) -> bool {
        !matches!(self, Compression::None)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subprotocol())
    }
}

/// The compression modes a gateway offers on its WebSocket door, in [`Compression::ALL`]'s
/// order, never empty (`streams.websocket.compression`, or `streaming.compression` of the
/// original design). A subprotocol of a mode not offered is skipped in negotiation as an
/// unknown name would be.
///
/// In TOML: `true` (every mode, the default), `false` (`"none"` only), one name or a list of
/// names among `"none"`, `"lz4"`, `"zstd"`, `"gzip"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionOffer(Vec<Compression>);

impl Default for CompressionOffer {
    fn default() -> Self {
        CompressionOffer(Compression::ALL.to_vec())
    }
}

impl Compression {
    /// The mode's name in configuration: `none`, `lz4`, `zstd`, `gzip`.
    pub const fn name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }

    /// The mode of a configuration name (exact match).
    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl CompressionOffer {
    /// An offer of `modes` (duplicates ignored); None when it offers nothing.
    pub fn new(modes: impl IntoIterator<Item = Compression>) -> Option<CompressionOffer> {
        let modes: Vec<Compression> = modes.into_iter().collect();
        let offer: Vec<Compression> = Compression::ALL
            .into_iter()
            .filter(|c| modes.contains(c))
            .collect();
        (!offer.is_empty()).then_some(CompressionOffer(offer))
    }

    /// The modes offered, in [`Compression::ALL`]'s order.
    pub fn modes(&self) -> &[Compression] {
        &self.0
    }

    /// Whether `c` is offered.
    pub fn contains(&self, c: Compression) -> bool {
        self.0.contains(&c)
    }

    /// [`negotiate`] among the offered modes only: the first name of the client's list that
    /// is one of ours and offered.
    pub fn negotiate(&self, offered: &str) -> Option<Compression> {
        offered
            .split(',')
            .map(|name| name.trim_matches([' ', '\t']))
            .filter_map(Compression::from_subprotocol)
            .find(|c| self.contains(*c))
    }

    /// The subprotocol names offered, for messages.
    pub fn subprotocols(&self) -> Vec<&'static str> {
        self.0.iter().map(Compression::subprotocol).collect()
    }
}

impl<'de> serde::Deserialize<'de> for CompressionOffer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OfferVisitor)
    }
}

struct OfferVisitor;

impl OfferVisitor {
    fn mode<E: serde::de::Error>(name: &str) -> Result<Compression, E> {
        Compression::from_name(name).ok_or_else(|| {
            E::custom(format!(
                "unknown compression {name:?}: expected none, lz4, zstd or gzip"
            ))
        })
    }
}

impl<'de> serde::de::Visitor<'de> for OfferVisitor {
    type Value = CompressionOffer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, false, one of \"none\", \"lz4\", \"zstd\", \"gzip\", or a list of them")
    }

    fn visit_bool<E: serde::de::Error>(self, all: bool) -> Result<CompressionOffer, E> {
        Ok(if all {
            CompressionOffer::default()
        } else {
            CompressionOffer(vec![Compression::None])
        })
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<CompressionOffer, E> {
        Ok(CompressionOffer(vec![Self::mode(name)?]))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<CompressionOffer, A::Error> {
        let mut modes = Vec::new();
        // At most one of each mode is meaningful; a longer list is refused, not collected.
        while let Some(name) = seq.next_element::<String>()? {
            if modes.len() >= 16 {
                return Err(serde::de::Error::custom("too many compression names"));
            }
            modes.push(Self::mode(&name)?);
        }
        CompressionOffer::new(modes)
            .ok_or_else(|| serde::de::Error::custom("offer at least one compression mode"))
    }
}

/// Picks the connection's mode from the client's `Sec-WebSocket-Protocol` header value (names
/// separated by commas, optional whitespace around each): the first name the client offers
/// that we speak. The client's order is the preference; `None` when it offers none of ours.
///
/// When a request carries the header more than once, join the values with `,` first.
/// Answer with exactly the chosen name (axum: `WebSocketUpgrade::protocols([c.subprotocol()])`,
/// which would otherwise apply the *server's* order).
pub fn negotiate(offered: &str) -> Option<Compression> {
    CompressionOffer::default().negotiate(offered)
}

/// Why a connection is closed: the WebSocket close code the gateway sends, with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the client closed, or the gateway ends a connection that has nothing left to do.
    Normal,
    /// 1001: the gateway is shutting down. Detached streams can be resumed on another
    /// connection (or instance) with `resume`.
    GoingAway,
    /// 1002: a frame kind that breaks the protocol, e.g. a binary frame on an uncompressed
    /// (`streamgate.v1`) connection.
    ProtocolError,
    /// 1007: a payload that is not what its frame kind promises: text that is not UTF-8, or a
    /// decompressed binary message that is not UTF-8.
    InvalidPayload,
    /// 1008: the connection broke a policy: the client sends frames that need an answer
    /// (`ping`, refused frames) much faster than it reads the answers. (Too many streams on
    /// one connection is not a close: `start` and `resume` get a `too_many_streams` error.)
    Policy,
    /// 1009: a message larger than the transport accepts at all.
    MessageTooBig,
    /// 4000: no frame at all from the client (not even ping or pong) within the idle timeout.
    IdleTimeout,
    /// 4001: the client stopped answering the gateway's heartbeats (WebSocket pings).
    HeartbeatLost,
    /// 4002: the client does not read: messages waited and its socket took no write for
    /// `write_timeout_ms`, or they overflowed the connection's write buffer. Its streams stay
    /// in the hub (detached) and can be resumed on another connection.
    SlowConsumer,
}

impl CloseCode {
    /// Every close code, for tables and tests.
    pub const ALL: [CloseCode; 9] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::Policy,
        CloseCode::MessageTooBig,
        CloseCode::IdleTimeout,
        CloseCode::HeartbeatLost,
        CloseCode::SlowConsumer,
    ];

    /// The numeric code of the close frame.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Policy => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::IdleTimeout => 4000,
            CloseCode::HeartbeatLost => 4001,
            CloseCode::SlowConsumer => 4002,
        }
    }

    /// The default reason text of the close frame (ASCII, well under the 123-byte limit).
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "invalid payload",
            CloseCode::Policy => "policy violation",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::IdleTimeout => "idle timeout",
            CloseCode::HeartbeatLost => "heartbeat lost",
            CloseCode::SlowConsumer => "client not reading",
        }
    }

    /// The close code for a numeric value, when it is one of ours.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        assert_eq!(
            negotiate("streamgate.v1+zstd, streamgate.v1+lz4"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            negotiate("streamgate.v1+lz4,streamgate.v1+zstd"),
            Some(Compression::Lz4)
        );
        assert_eq!(
            negotiate("streamgate.v1, streamgate.v1+gzip"),
            Some(Compression::None)
        );
    }

    #[test]
    fn negotiation_skips_unknown_names_and_trims_whitespace() {
        assert_eq!(
            negotiate("graphql-ws, \tstreamgate.v2 ,  streamgate.v1+gzip\t"),
            Some(Compression::Gzip)
        );
        assert_eq!(negotiate("graphql-ws, chat"), None);
        assert_eq!(negotiate(""), None);
        assert_eq!(negotiate(" , ,"), None);
        // Names are case-sensitive and whole: no prefixes, no inner whitespace.
        assert_eq!(negotiate("StreamGate.v1"), None);
        assert_eq!(negotiate("streamgate.v1+lz"), None);
        assert_eq!(negotiate("streamgate.v1 +lz4"), None);
    }

    #[test]
    fn an_offer_negotiates_only_what_it_offers() {
        let zstd = CompressionOffer::new([Compression::Zstd]).unwrap();
        assert_eq!(zstd.negotiate("streamgate.v1+gzip, streamgate.v1"), None);
        assert_eq!(
            zstd.negotiate("streamgate.v1+gzip, streamgate.v1+zstd"),
            Some(Compression::Zstd)
        );
        let plain = CompressionOffer::new([Compression::None, Compression::Lz4]).unwrap();
        assert_eq!(
            plain.negotiate("streamgate.v1+zstd, streamgate.v1+lz4, streamgate.v1"),
            Some(Compression::Lz4),
            "the client's order among what is offered"
        );
        assert_eq!(
            plain.negotiate("chat, streamgate.v1"),
            Some(Compression::None)
        );
        assert_eq!(CompressionOffer::new([]), None);
        assert_eq!(
            CompressionOffer::new([Compression::Gzip, Compression::None, Compression::Gzip])
                .unwrap()
                .modes(),
            [Compression::None, Compression::Gzip]
        );
    }

    #[test]
    fn offers_read_from_toml() {
        #[derive(serde::Deserialize)]
        struct T {
            c: CompressionOffer,
        }
        let read = |v: &str| toml::from_str::<T>(&format!("c = {v}")).map(|t| t.c.modes().to_vec());
        assert_eq!(read("true").unwrap(), Compression::ALL);
        assert_eq!(read("false").unwrap(), [Compression::None]);
        assert_eq!(read("\"lz4\"").unwrap(), [Compression::Lz4]);
        assert_eq!(
            read("[\"gzip\", \"none\"]").unwrap(),
            [Compression::None, Compression::Gzip]
        );
        for bad in ["\"brotli\"", "[]", "3", "[\"zstd\", \"LZ4\"]"] {
            assert!(read(bad).is_err(), "{bad}");
        }
        for c in Compression::ALL {
            assert_eq!(Compression::from_name(c.name()), Some(c));
        }
    }

    #[test]
    fn subprotocol_names_round_trip() {
        for (c, name) in Compression::ALL.into_iter().zip(SUBPROTOCOLS) {
            assert_eq!(c.subprotocol(), name);
            assert_eq!(Compression::from_subprotocol(name), Some(c));
            assert_eq!(negotiate(name), Some(c));
            assert_eq!(c.is_binary(), c != Compression::None);
        }
    }

    #[test]
    fn close_codes_are_distinct_and_reasons_fit_a_close_frame() {
        let codes: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            codes,
            [1000, 1001, 1002, 1007, 1008, 1009, 4000, 4001, 4002],
            "close code values"
        );
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
            assert!(c.reason().len() <= 123 && c.reason().is_ascii());
        }
        assert_eq!(CloseCode::from_code(1003), None);
    }
}
