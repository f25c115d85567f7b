//! What `GET /admin/streams` and `GET /admin/routes` say, read leniently: fields this client
//! does not know are ignored (and kept in `raw`), missing ones take their zero value.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ClientError;

/// The gateway's streams and totals.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamsView {
    /// Counts and memory over every stream kept.
    pub totals: Totals,
    /// Every stream kept, as the gateway lists them (newest first).
    pub streams: Vec<StreamRow>,
    /// The journal's figures (segments, bytes, ...), when the gateway reports them: the
    /// top-level `journal` object, else `totals.journal`.
    pub journal: Option<Map<String, Value>>,
    /// The whole answer, as received.
    pub raw: Value,
}

/// `totals` of `/admin/streams`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Streams still generating.
    pub live: u64,
    /// Finished streams still resumable.
    pub finished: u64,
    /// Bytes of event JSON held in memory.
    pub buffer_bytes: u64,
    /// The memory cap (`streams.max_bytes`).
    pub max_bytes: u64,
    /// Streams forgotten so far (retention or memory cap).
    pub evicted: u64,
}

/// One stream of `/admin/streams`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamRow {
    /// Stream id.
    pub id: String,
    /// `live` or `finished`.
    pub status: String,
    /// The door it came through (`openai`, `anthropic`).
    pub door: String,
    /// `provider/model` that answered first.
    pub route: String,
    /// Events so far (the next seq).
    pub seq: u64,
    /// Bytes of event JSON kept in memory.
    pub buffer_bytes: u64,
    /// Clients following it now.
    pub subscribers: u64,
    /// Milliseconds since its last client left while it was live, if it has none.
    pub detached_ms: Option<u64>,
    /// Unix milliseconds when it started.
    pub created_ms: u64,
    /// Whether it was recovered from the journal after a restart.
    pub recovered: bool,
}

impl StreamsView {
    /// Reads an `/admin/streams` body.
    pub fn parse(body: &[u8]) -> Result<Self, ClientError> {
        let bad = |what: &str| ClientError::Protocol(format!("/admin/streams: {what}"));
        let raw: Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
        let totals = match raw.get("totals") {
            Some(t) => Totals::deserialize(t).map_err(|e| bad(&format!("totals: {e}")))?,
            None => Totals::default(),
        };
        let streams = match raw.get("data") {
            Some(d) => Vec::<StreamRow>::deserialize(d).map_err(|e| bad(&format!("data: {e}")))?,
            None => return Err(bad("no data list")),
        };
        let journal = raw
            .get("journal")
            .or_else(|| raw.get("totals").and_then(|t| t.get("journal")))
            .and_then(Value::as_object)
            .cloned();
        Ok(StreamsView {
            totals,
            streams,
            journal,
            raw,
        })
    }
}

/// The gateway's routes: `GET /admin/routes`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutesView {
    /// Every route the gateway has tried, sorted by route.
    pub routes: Vec<RouteRow>,
    /// The whole answer, as received.
    pub raw: Value,
}

/// One route of `/admin/routes`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RouteRow {
    /// `provider/model`.
    pub route: String,
    /// The breaker: `closed`, `open` or `half_open`.
    pub state: String,
    /// Consecutive failures (so far, or those that opened the breaker).
    pub failures: u64,
    /// Milliseconds until a probe is allowed (open) or the probe out stops holding the route.
    pub retry_in_ms: u64,
    /// Outcomes over the last minute.
    pub recent: RecentRow,
}

/// `recent` of a route: attempts and failures over the window.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RecentRow {
    /// The window in seconds.
    pub window_s: u64,
    /// Attempts with an outcome.
    pub attempts: u64,
    /// Failed attempts.
    pub failures: u64,
    /// `failures / attempts` (0 without attempts).
    pub error_rate: f64,
}

impl RoutesView {
    /// Reads an `/admin/routes` body.
    pub fn parse(body: &[u8]) -> Result<Self, ClientError> {
        let bad = |what: &str| ClientError::Protocol(format!("/admin/routes: {what}"));
        let raw: Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
        let routes = match raw.get("routes") {
            Some(r) => Vec::<RouteRow>::deserialize(r).map_err(|e| bad(&format!("routes: {e}")))?,
            None => return Err(bad("no routes list")),
        };
        Ok(RoutesView { routes, raw })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_rows_totals_and_an_optional_journal() {
        let body = br#"{"object":"list",
            "totals":{"live":1,"finished":0,"buffer_bytes":900,"max_bytes":1000,"evicted":2,"new":1},
            "journal":{"segments":3,"bytes":4096},
            "data":[{"id":"st_a","status":"live","door":"openai","route":"openai/x","seq":7,
                     "buffer_bytes":900,"subscribers":1,"detached_ms":null,"created_ms":5,
                     "recovered":false,"later_field":true}]}"#;
        let view = StreamsView::parse(body).unwrap();
        assert_eq!(view.totals.evicted, 2);
        assert_eq!(view.streams.len(), 1);
        assert_eq!(view.streams[0].seq, 7);
        assert_eq!(view.streams[0].detached_ms, None);
        assert_eq!(view.journal.unwrap()["segments"], 3);
        let none = StreamsView::parse(br#"{"totals":{},"data":[]}"#).unwrap();
        assert!(none.journal.is_none() && none.streams.is_empty());
        assert!(StreamsView::parse(b"{}").is_err());
    }

    #[test]
    fn reads_routes_with_or_without_their_recent_window() {
        let body = br#"{"routes":[
            {"route":"a/m","state":"open","failures":5,"retry_in_ms":900,
             "recent":{"window_s":60,"attempts":8,"failures":6,"error_rate":0.75},"new":1},
            {"route":"b/m","state":"closed","failures":0,"retry_in_ms":0}]}"#;
        let view = RoutesView::parse(body).unwrap();
        assert_eq!(view.routes.len(), 2);
        assert_eq!(view.routes[0].state, "open");
        assert_eq!(view.routes[0].recent.failures, 6);
        assert_eq!(view.routes[1].recent, RecentRow::default());
        assert!(RoutesView::parse(b"{}").is_err());
        assert!(RoutesView::parse(br#"{"routes":[{"failures":-1}]}"#).is_err());
    }
}
