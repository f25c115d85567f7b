//! Calling a provider: one HTTP request, its SSE body decoded into Agent Events as it arrives.
//!
//! Streamed answers go through the gateway's own HTTP/1.1 client ([`h1`]): its connections
//! are polled by the task that reads the answer, pooled per provider (one connection per
//! concurrent stream, as nginx keeps its upstreams). A provider that an HTTP proxy from the
//! environment (`HTTP(S)_PROXY`, `ALL_PROXY`, minus `NO_PROXY`) applies to keeps reqwest for
//! its streamed answers too, decided once when [`Upstream::new`] builds the clients.
//! Everything else (token counts, pass-through) goes through each provider's pooled reqwest
//! client (HTTP/1.1 and HTTP/2, TCP_NODELAY, its own connect timeout). [`Upstream::open`]
//! returns once the first event has arrived, so a caller can still choose another route when
//! a provider accepts the connection and then says nothing; the returned stream enforces the
//! idle timeout between chunks.

mod body;
mod forward;
mod h1;
mod pool;
mod request;
pub mod span;

use std::collections::HashMap;
use std::time::Duration;

use providers::AgentEvent;
use tracing::Instrument as _;

use crate::config::{Config, ProviderConfig};
use crate::error::{ConnectionFault, GatewayError, TimeoutPhase};
use crate::route::Route;

pub use body::EventStream;
pub use forward::{Forward, Forwarded, ForwardedBody};
/// The own client's HTTP/1.1 wire format, for the fuzz target that reads responses with it.
#[doc(hidden)]
pub use h1::wire as h1_wire;
pub use pool::PoolStats;
pub use request::{ClientKey, ForwardHeaders, forward_url, uses_client_key};

/// Pooled HTTP clients, one per configured provider.
#[derive(Debug, Clone)]
pub struct Upstream {
    clients: HashMap<String, reqwest::Client>,
    /// The own streamed-answer client of each provider that has one (no proxy applies).
    streams: HashMap<String, h1::Client>,
    /// Each client's pool use ([`pool`]), for the metrics.
    pools: HashMap<String, std::sync::Arc<pool::PoolCounters>>,
    /// What providers said about their rate limits, per route.
    backoff: std::sync::Arc<crate::limit::UpstreamBackoff>,
    /// The variables holding the gateway's own provider keys: their values are scrubbed from
    /// any text a provider relays (read when needed, so a rotated key is scrubbed too).
    key_vars: std::sync::Arc<[String]>,
}

impl Upstream {
    /// Builds a client for every provider in `config`.
    pub fn new(config: &Config) -> Result<Self, GatewayError> {
        install_crypto_provider();
        let mut clients = HashMap::new();
        let mut streams = HashMap::new();
        let mut pools = HashMap::new();
        let mut tls = None;
        for (name, provider) in &config.providers {
            let counters = std::sync::Arc::<pool::PoolCounters>::default();
            let client = reqwest::Client::builder()
                .connector_layer(pool::CountConnects(std::sync::Arc::clone(&counters)))
                .connect_timeout(Duration::from_millis(provider.connect_timeout_ms))
                // Never follow a redirect: reqwest drops `Authorization` on a cross-host
                // redirect but not `x-api-key`, and no provider API redirects its endpoints,
                // so a 3xx is answered as the provider's error instead of sending a key on.
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
                .map_err(|e| GatewayError::Internal(format!("building HTTP client: {e}")))?;
            clients.insert(name.clone(), client);
            let tls = match &tls {
                Some(tls) => tls,
                None => tls.insert(h1::tls_config()?),
            };
            if let Some(stream) = h1::Client::for_provider(
                &request::endpoint(provider),
                Duration::from_millis(provider.connect_timeout_ms),
                tls,
                std::sync::Arc::clone(&counters),
            ) {
                streams.insert(name.clone(), stream);
            } else {
                tracing::info!(
                    provider = %name,
                    "streamed answers of this provider go through reqwest (a proxy applies, or its base_url is not a plain http(s) URL)"
                );
            }
            pools.insert(name.clone(), counters);
        }
        let key_vars = config
            .providers
            .values()
            .filter_map(|p| p.api_key_env.clone())
            .collect();
        Ok(Upstream {
            clients,
            streams,
            pools,
            backoff: std::sync::Arc::default(),
            key_vars,
        })
    }

    /// Each provider's connections opened and requests in flight, sorted by provider.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let mut all: Vec<PoolStats> = self
            .pools
            .iter()
            .map(|(name, counters)| counters.stats(name))
            .collect();
        all.sort_by(|a, b| a.provider.cmp(&b.provider));
        all
    }

    /// A request to `provider` starting: counted in flight until the guard drops.
    fn in_flight(&self, provider: &str) -> Option<pool::InFlight> {
        self.pools.get(provider).map(pool::InFlight::start)
    }

    /// These clients, remembering what `previous`'s providers said about their rate limits
    /// (a reload builds new clients; a provider's "slow down" still holds).
    pub fn sharing_backoff(self, previous: &Upstream) -> Upstream {
        Upstream {
            backoff: std::sync::Arc::clone(&previous.backoff),
            ..self
        }
    }

    /// Routes the providers asked to slow down (rate-limit headers, 429 Retry-After).
    pub fn backoff(&self) -> &crate::limit::UpstreamBackoff {
        &self.backoff
    }

    /// Sends `body` (already in the provider's dialect) to `route` and waits for the first
    /// event. Errors before that point leave nothing half-sent to the client.
    pub async fn open(
        &self,
        route: &Route,
        provider: &ProviderConfig,
        body: Vec<u8>,
        key: &ClientKey,
        forward: &ForwardHeaders,
    ) -> Result<(Vec<AgentEvent>, EventStream), GatewayError> {
        let url = request::endpoint(provider);
        let call = span::call(&route.provider, provider.dialect, &url, &route.model);
        let first_byte = Duration::from_millis(provider.first_byte_timeout_ms);
        let idle = Duration::from_millis(provider.idle_timeout_ms);
        let name = route.provider.clone();
        let own_keys = || own_keys(&self.key_vars);
        let gateway_key = !request::uses_client_key(provider, key);
        let prepared = match self.streams.get(&route.provider) {
            Some(own) => Prepared::Own(
                own,
                request::stream_headers(&route.provider, provider, key, forward)?,
                body,
            ),
            None => {
                let client = self.clients.get(&route.provider).ok_or_else(|| {
                    GatewayError::Internal(format!("no client for {}", route.provider))
                })?;
                Prepared::Reqwest(request::build(
                    client,
                    &url,
                    &route.provider,
                    provider,
                    body,
                    key,
                    forward,
                )?)
            }
        };
        let opening = async {
            let in_flight = self.in_flight(&route.provider);
            let source = match prepared {
                Prepared::Own(own, headers, body) => {
                    let (head, body) = own.post(&route.provider, headers, body, in_flight).await?;
                    call.record("http.response.status_code", i64::from(head.status.as_u16()));
                    // Rate-limit headers come on successes too: a budget at zero means wait.
                    self.backoff
                        .observe(&route.to_string(), head.status.as_u16(), &head.headers);
                    if !head.status.is_success() {
                        let text = body::read_capped(body::Source::Own(body)).await;
                        return Err(body::status_error_of(
                            &route.provider,
                            provider.dialect,
                            head.status,
                            &head.headers,
                            &text,
                            &own_keys(),
                            gateway_key,
                        ));
                    }
                    body::Source::Own(body)
                }
                Prepared::Reqwest(request) => {
                    let response = request
                        .send()
                        .await
                        .map_err(|e| send_error(&route.provider, &e))?;
                    let status = response.status();
                    call.record("http.response.status_code", i64::from(status.as_u16()));
                    self.backoff
                        .observe(&route.to_string(), status.as_u16(), response.headers());
                    if !status.is_success() {
                        return Err(body::status_error(
                            &route.provider,
                            provider.dialect,
                            response,
                            &own_keys(),
                            gateway_key,
                        )
                        .await);
                    }
                    body::Source::reqwest(response, in_flight)
                }
            };
            let mut stream =
                EventStream::new(name, provider.dialect, source, idle, self.key_vars.clone());
            // The call's span lasts as long as its body is read.
            stream.set_span(call.clone());
            let first = stream.first_events().await?;
            Ok((first, stream))
        };
        let result = match tokio::time::timeout(first_byte, opening.instrument(call.clone())).await
        {
            Ok(result) => result,
            Err(_) => Err(GatewayError::Timeout {
                provider: route.provider.clone(),
                phase: TimeoutPhase::FirstByte,
            }),
        };
        if let Err(e) = &result {
            span::record_error(&call, e);
        }
        result
    }
}

impl Upstream {
    /// A plain JSON POST to `path` under the provider's API root (`/v1/messages/count_tokens`),
    /// for calls that are not streamed answers.
    pub async fn post_json(
        &self,
        route: &Route,
        provider: &ProviderConfig,
        path: &str,
        body: Vec<u8>,
        key: &ClientKey,
        forward: &ForwardHeaders,
    ) -> Result<serde_json::Value, GatewayError> {
        let client = self
            .clients
            .get(&route.provider)
            .ok_or_else(|| GatewayError::Internal(format!("no client for {}", route.provider)))?;
        let url = request::api_url(provider, path);
        let call = span::http_call(
            &route.provider,
            provider.dialect,
            "POST",
            &url,
            None,
            Some(&route.model),
        );
        let result = async {
            let request =
                request::build(client, &url, &route.provider, provider, body, key, forward)?
                    .header(http::header::ACCEPT, "application/json")
                    .timeout(Duration::from_millis(provider.first_byte_timeout_ms));
            let _in_flight = self.in_flight(&route.provider);
            let response = request
                .send()
                .await
                .map_err(|e| send_error(&route.provider, &e))?;
            let status = i64::from(response.status().as_u16());
            call.record("http.response.status_code", status);
            if !response.status().is_success() {
                return Err(body::status_error(
                    &route.provider,
                    provider.dialect,
                    response,
                    &own_keys(&self.key_vars),
                    !request::uses_client_key(provider, key),
                )
                .await);
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| send_error(&route.provider, &e))?;
            serde_json::from_slice(&bytes).map_err(|e| {
                tracing::warn!(
                    provider = %route.provider,
                    error = %e,
                    "upstream answer is not JSON"
                );
                GatewayError::Connection {
                    provider: route.provider.clone(),
                    fault: ConnectionFault::NotJson,
                }
            })
        }
        .instrument(call.clone())
        .await;
        if let Err(e) = &result {
            span::record_error(&call, e);
        }
        result
    }
}

/// A streamed answer's request, ready to send through the provider's client.
enum Prepared<'a> {
    /// The gateway's own client: headers and body.
    Own(&'a h1::Client, http::HeaderMap, Vec<u8>),
    /// reqwest (a proxy applies to the provider).
    Reqwest(reqwest::RequestBuilder),
}

/// The current values of the gateway's provider key variables.
pub(super) fn own_keys(vars: &[String]) -> Vec<crate::secret::Secret> {
    vars.iter()
        .filter_map(|var| std::env::var(var).ok())
        .map(crate::secret::Secret::new)
        .collect()
}

/// Maps a reqwest error (sending, or reading a body) to what a client should hear. The error's
/// source chain, which says why in the transport's words, goes to the log; its own text, which
/// names the URL (and so any credentials in it), goes nowhere.
fn send_error(provider: &str, e: &reqwest::Error) -> GatewayError {
    let chain = source_chain(e);
    tracing::warn!(provider, error = %chain, "upstream connection failed");
    if e.is_timeout() {
        return GatewayError::Timeout {
            provider: provider.to_owned(),
            phase: if e.is_connect() {
                TimeoutPhase::Connect
            } else {
                TimeoutPhase::FirstByte
            },
        };
    }
    if e.is_builder() {
        return GatewayError::Internal(format!(
            "the request to provider {provider:?} could not be built (check its base_url)"
        ));
    }
    let fault = if e.is_connect() {
        connect_fault(e)
    } else if e.is_body() || e.is_decode() {
        ConnectionFault::ClosedDuringBody
    } else {
        ConnectionFault::ClosedBeforeResponse
    };
    GatewayError::Connection {
        provider: provider.to_owned(),
        fault,
    }
}

/// The error's sources joined with `: `, without the error's own text (which carries the URL).
pub(super) fn source_chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s.to_string());
        source = s.source();
    }
    if out.is_empty() {
        out.push_str("no cause given");
    }
    out
}

/// Why connecting failed, from the typed errors of reqwest's chain.
fn connect_fault(e: &reqwest::Error) -> ConnectionFault {
    fault_of_connect(std::error::Error::source(e))
}

/// Why connecting failed, from the typed errors of the chain starting at `first` (the
/// resolver's only by its wording, which hyper-util does not type).
pub(super) fn fault_of_connect(
    first: Option<&(dyn std::error::Error + 'static)>,
) -> ConnectionFault {
    let mut source = first;
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return ConnectionFault::Tls;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return ConnectionFault::Refused;
            }
            if wraps_rustls(io) {
                return ConnectionFault::Tls;
            }
        }
        if s.to_string().starts_with("dns error") {
            return ConnectionFault::Dns;
        }
        source = s.source();
    }
    ConnectionFault::Connect
}

/// Whether `io` carries a rustls error, directly or in an I/O error it wraps (hyper-rustls
/// wraps tokio-rustls's I/O error in another, and an I/O error's `source` skips the error
/// it wraps).
fn wraps_rustls(io: &std::io::Error) -> bool {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    false
}

/// rustls needs one process-wide crypto provider; ring builds without a C toolchain quirk.
pub(crate) fn install_crypto_provider() {
    // Err means another part of the process installed one first, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Credentials a base URL may carry; never shown to a client.
    const SECRETS: [&str; 2] = ["hunter2", "sk-leak-123"];

    fn client() -> reqwest::Client {
        install_crypto_provider();
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    fn url(port: u16) -> String {
        format!("http://user:hunter2@127.0.0.1:{port}/v1/messages?key=sk-leak-123")
    }

    /// The client's view of `e`: no transport words, no URL, no credentials.
    fn assert_clean(e: &GatewayError) {
        let shown = [
            e.to_string(),
            e.body(providers::Dialect::OpenAi).to_string(),
            e.body(providers::Dialect::Anthropic).to_string(),
            e.to_error_info().message,
        ];
        for text in shown {
            for bad in SECRETS.iter().chain(&[
                "127.0.0.1",
                "hyper",
                "reqwest",
                "error sending",
                "os error",
            ]) {
                assert!(!text.contains(bad), "{bad:?} in {text}");
            }
        }
    }

    /// A server on 127.0.0.1 that reads one request and answers `reply` (then closes).
    async fn serve_once(reply: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 << 10];
            // Whatever of the request arrives first; the reply does not depend on it.
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(reply).await;
            let _ = socket.flush().await;
            drop(socket);
        });
        port
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_without_the_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = client().post(url(port)).send().await.unwrap_err();
        // reqwest's own text names the URL: exactly what must not reach a client.
        assert!(e.to_string().contains("hunter2") || e.to_string().contains("127.0.0.1"));
        let g = send_error("anthropic", &e);
        assert!(
            matches!(
                g,
                GatewayError::Connection {
                    fault: ConnectionFault::Refused,
                    ..
                }
            ),
            "{g:?}"
        );
        assert_clean(&g);
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_head_is_not_unreachable() {
        let port = serve_once(b"").await;
        let e = client().post(url(port)).send().await.unwrap_err();
        let g = send_error("anthropic", &e);
        assert!(
            matches!(
                g,
                GatewayError::Connection {
                    fault: ConnectionFault::ClosedBeforeResponse,
                    ..
                }
            ),
            "{g:?}"
        );
        assert!(!g.to_string().contains("unreachable"), "{g}");
        assert_clean(&g);
    }

    #[tokio::test]
    async fn a_body_cut_after_the_head_is_not_unreachable() {
        let port = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"input_tokens\":",
        )
        .await;
        let response = client().post(url(port)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let e = response.bytes().await.unwrap_err();
        let g = send_error("anthropic", &e);
        assert!(
            matches!(
                g,
                GatewayError::Connection {
                    fault: ConnectionFault::ClosedDuringBody,
                    ..
                }
            ),
            "{g:?}"
        );
        assert!(!g.to_string().contains("unreachable"), "{g}");
        assert_clean(&g);
    }

    #[tokio::test]
    async fn a_provider_echoing_the_gateways_key_is_scrubbed_whatever_the_key_looks_like() {
        // A key of no known shape (a self-hosted server's token), echoed whole in a 401.
        let port = serve_once(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"error\":{\"message\":\"token my-own-token-77 is not valid\",\"type\":\"my-own-token-77\"}}",
        )
        .await;
        let response = client().post(url(port)).send().await.unwrap();
        let own = [crate::secret::Secret::new("my-own-token-77")];
        let g = body::status_error("vllm", providers::Dialect::OpenAi, response, &own, false).await;
        for text in [
            g.to_string(),
            g.body(providers::Dialect::OpenAi).to_string(),
            g.body(providers::Dialect::Anthropic).to_string(),
            g.to_error_info().message,
        ] {
            assert!(!text.contains("my-own-token"), "{text}");
        }
        assert!(g.to_string().contains("is not valid"), "{g}");
    }

    #[tokio::test]
    async fn a_refusal_of_the_gateways_key_is_a_502_without_the_providers_words() {
        for (status, dialect) in [
            (&b"401 Unauthorized"[..], providers::Dialect::OpenAi),
            (&b"403 Forbidden"[..], providers::Dialect::Anthropic),
        ] {
            let mut reply = b"HTTP/1.1 ".to_vec();
            reply.extend_from_slice(status);
            reply.extend_from_slice(b"\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key gw-key-9 sk-ant-api03-abcdefgh\"}}");
            let port = serve_once(Box::leak(reply.into_boxed_slice())).await;
            let response = client().post(url(port)).send().await.unwrap();
            let own = [crate::secret::Secret::new("gw-key-9")];
            let g = body::status_error("anthropic", dialect, response, &own, true).await;
            assert!(
                matches!(g, GatewayError::CredentialsRefused { .. }),
                "{g:?}"
            );
            assert_eq!(g.status(), http::StatusCode::BAD_GATEWAY);
            for door in providers::Dialect::ALL {
                let body = g.body(door).to_string();
                assert!(body.contains("credentials for provider"), "{body}");
                for bad in ["gw-key", "sk-ant", "x-api-key", "authentication_error"] {
                    assert!(!body.contains(bad), "{bad} in {body}");
                }
            }
            assert_eq!(
                crate::resilience::classify::classify(&g, false),
                crate::resilience::classify::Action::Failover
            );
        }
    }

    /// Captures what is logged while it is the default subscriber.
    #[derive(Clone, Default)]
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_refusal_is_logged_on_one_line_capped_and_without_the_key() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let forged = format!(
            "bad key gw-key-9\\n2026-01-01T00:00:00Z  INFO forged line{}",
            "y".repeat(10 << 10)
        );
        let reply = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{{\"error\":{{\"message\":\"{forged}\",\"type\":\"invalid_api_key\"}}}}"
        );
        let port = serve_once(Box::leak(reply.into_bytes().into_boxed_slice())).await;
        let response = client().post(url(port)).send().await.unwrap();
        let own = [crate::secret::Secret::new("gw-key-9")];
        let g =
            body::status_error("openai", providers::Dialect::OpenAi, response, &own, true).await;
        assert!(
            matches!(g, GatewayError::CredentialsRefused { .. }),
            "{g:?}"
        );
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(
            lines[0].contains("refused the gateway's credentials"),
            "{text}"
        );
        assert!(lines[0].contains("bad key [redacted]\\n2026"), "{text}");
        assert!(!text.contains("gw-key"), "{text}");
        assert!(text.len() < 1000, "{} bytes logged", text.len());
    }
}
