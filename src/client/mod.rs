//! The reference client of the native door: follows a stream by id from a seq over
//! `GET /v1/streams/{id}` and reconnects on any break, without ever repeating or skipping an
//! event; starts streams with `POST /v1/streams`; reads `GET /admin/streams`.
//!
//! # Layout
//!
//! - [`StreamClient`] (this file): the gateway's address, the reconnect settings, the
//!   requests and how their error answers read.
//! - [`Follow`] (`follow.rs`): one stream's envelopes across reconnects, with backoff.
//! - `decode.rs`: SSE bytes -> envelopes, checking the seqs (sans-I/O).
//! - [`StreamsView`] (`admin.rs`): what `GET /admin/streams` says.
//! - [`ClientError`] (`error.rs`): what can go wrong, and whether a reconnect can help.
//!
//! ```no_run
//! # async fn run() -> Result<(), streamgate::client::ClientError> {
//! use futures_util::StreamExt;
//! use streamgate::client::StreamClient;
//! use streamgate::config::ReconnectConfig;
//!
//! let client = StreamClient::new("http://127.0.0.1:8080", ReconnectConfig::default())?;
//! let mut events = client.follow("st_18f0c2a1b3c4d5e6f7", None);
//! while let Some(envelope) = events.next().await {
//!     let envelope = envelope?;
//!     println!("{} {:?}", envelope.seq, envelope.event);
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod decode;
mod error;
mod follow;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use providers::Dialect;
use reqwest::{StatusCode, Url};

pub use admin::{RecentRow, RouteRow, RoutesView, StreamRow, StreamsView, Totals};
pub use error::ClientError;
pub use follow::{Follow, Reconnect};

use crate::config::ReconnectConfig;
use crate::server::streams::{DIALECT_HEADER, STREAM_ID_HEADER};

/// How long the default HTTP client waits for a TCP connection to the gateway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of an error answer read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Called before each reconnect (for logging).
type ReconnectHook = Arc<dyn Fn(&Reconnect<'_>) + Send + Sync>;

/// A client of one gateway's native door. Cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct StreamClient {
    http: reqwest::Client,
    /// The gateway's base URL; request paths are appended to its path.
    base: Url,
    /// `[streaming.reconnect]`: backoff and how many reconnects without progress.
    reconnect: ReconnectConfig,
    /// Told about every reconnect before its wait.
    on_reconnect: Option<ReconnectHook>,
    /// Sent as `Authorization: Bearer` on the admin routes.
    admin_key: Option<crate::secret::Secret>,
}

impl fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamClient")
            .field("base", &self.base.as_str())
            .field("reconnect", &self.reconnect)
            .field("on_reconnect", &self.on_reconnect.is_some())
            .field("admin_key", &self.admin_key.is_some())
            .finish_non_exhaustive()
    }
}

impl StreamClient {
    /// A client of the gateway at `base_url` (e.g. `http://127.0.0.1:8080`) with its own
    /// HTTP client (proxies from the environment apply; no overall timeout, since streams
    /// are long).
    pub fn new(base_url: &str, reconnect: ReconnectConfig) -> Result<Self, ClientError> {
        crate::upstream::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(ClientError::Transport)?;
        Self::with_http_client(http, base_url, reconnect)
    }

    /// A client of the gateway at `base_url` over `http` (its timeouts and proxy settings).
    pub fn with_http_client(
        http: reqwest::Client,
        base_url: &str,
        reconnect: ReconnectConfig,
    ) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.query().is_some() {
            return Err(invalid("expected a base URL without query"));
        }
        Ok(StreamClient {
            http,
            base,
            reconnect,
            on_reconnect: None,
            admin_key: None,
        })
    }

    /// Sends `key` as `Authorization: Bearer` on the admin routes (`[server] admin_key_env`
    /// or `admin_key_sha256` on the gateway).
    pub fn with_admin_key(mut self, key: crate::secret::Secret) -> Self {
        self.admin_key = Some(key);
        self
    }

    /// Calls `hook` before every reconnect, with why and how long it waits.
    pub fn on_reconnect(mut self, hook: impl Fn(&Reconnect<'_>) + Send + Sync + 'static) -> Self {
        self.on_reconnect = Some(Arc::new(hook));
        self
    }

    /// The reconnect settings.
    pub fn reconnect(&self) -> &ReconnectConfig {
        &self.reconnect
    }

    /// Follows stream `id` from the event after seq `after` (from its first event when None)
    /// to its `stream.end`, reconnecting as needed. Nothing is sent until it is polled.
    pub fn follow(&self, id: &str, after: Option<u64>) -> Follow {
        Follow::new(self.clone(), id.to_owned(), after, None)
    }

    /// Starts a stream with `POST /v1/streams`: `request` is a chat request of `dialect`
    /// (OpenAI- or Anthropic-shaped). Returns the stream's id and its events from the
    /// first, followed like [`StreamClient::follow`] once the POST's own answer breaks.
    ///
    /// The POST itself is not retried (a second one would start a second answer): an error
    /// before the answer's head came back is returned as is.
    pub async fn start(
        &self,
        dialect: Dialect,
        request: &serde_json::Value,
    ) -> Result<(String, Follow), ClientError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ClientError::Protocol(format!("request does not serialize: {e}")))?;
        let answer = self
            .http
            .post(self.url(&["v1", "streams"])?)
            .header(DIALECT_HEADER, dialect.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(ClientError::Transport)?;
        if answer.status() != StatusCode::OK {
            return Err(error_answer(answer, "", None).await);
        }
        let id = answer
            .headers()
            .get(STREAM_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                ClientError::Protocol(format!("the answer has no {STREAM_ID_HEADER} header"))
            })?;
        let follow = Follow::new(self.clone(), id.clone(), None, Some(answer));
        Ok((id, follow))
    }

    /// `GET /admin/streams`: the streams the gateway keeps and its totals.
    pub async fn streams(&self) -> Result<StreamsView, ClientError> {
        StreamsView::parse(&self.admin("streams").await?)
    }

    /// `GET /admin/routes`: every route's breaker and recent error rate.
    pub async fn routes(&self) -> Result<RoutesView, ClientError> {
        RoutesView::parse(&self.admin("routes").await?)
    }

    /// The body of `GET /admin/{what}`, with the admin key when one is set.
    async fn admin(&self, what: &str) -> Result<bytes::Bytes, ClientError> {
        let mut request = self.http.get(self.url(&["admin", what])?);
        if let Some(key) = &self.admin_key {
            request = request.bearer_auth(key.expose());
        }
        let answer = request.send().await.map_err(ClientError::Transport)?;
        if answer.status() != StatusCode::OK {
            return Err(error_answer(answer, "", None).await);
        }
        answer.bytes().await.map_err(ClientError::Transport)
    }

    /// `GET /v1/streams/{id}` after seq `after`: the open answer, or None on 204 (the
    /// stream is finished and nothing follows `after`).
    async fn get_stream(
        &self,
        id: &str,
        after: Option<u64>,
    ) -> Result<Option<reqwest::Response>, ClientError> {
        let mut request = self
            .http
            .get(self.url(&["v1", "streams", id])?)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        let answer = request.send().await.map_err(ClientError::Transport)?;
        match answer.status() {
            StatusCode::OK => Ok(Some(answer)),
            StatusCode::NO_CONTENT => Ok(None),
            _ => Err(error_answer(answer, id, after).await),
        }
    }

    /// The base URL with `segments` appended (each percent-encoded as one segment).
    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl {
                url: self.base.to_string(),
                reason: "cannot be a base URL".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Tells the reconnect hook, if any.
    fn notify(&self, reconnect: &Reconnect<'_>) {
        if let Some(hook) = &self.on_reconnect {
            hook(reconnect);
        }
    }
}

/// The error a non-success answer stands for: 404 and 416 by name, others by status, with
/// the message of the error body (either dialect's shape).
async fn error_answer(answer: reqwest::Response, id: &str, after: Option<u64>) -> ClientError {
    let status = answer.status();
    let body = read_limited(answer).await;
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j["error"][name].as_str())
            .map(str::to_owned)
    };
    let code = field("code").or_else(|| field("type"));
    let message = field("message")
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned())
        .chars()
        .take(500)
        .collect::<String>();
    match (status, after) {
        (StatusCode::NOT_FOUND, _) if !id.is_empty() => ClientError::NotFound {
            id: id.to_owned(),
            message,
        },
        (StatusCode::RANGE_NOT_SATISFIABLE, Some(after)) => ClientError::SeqBeyondEnd {
            id: id.to_owned(),
            after,
            message,
        },
        _ => ClientError::Status {
            status: status.as_u16(),
            code,
            message,
        },
    }
}

/// Up to [`MAX_ERROR_BODY`] bytes of an answer's body (what a broken read got so far).
async fn read_limited(mut answer: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match answer.chunk().await {
            Ok(Some(bytes)) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    body
}
