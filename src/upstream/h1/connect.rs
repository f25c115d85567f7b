//! Opening a connection to a provider: the connector stack reqwest uses (hyper-util's
//! `HttpConnector` under hyper-rustls), set up as the gateway set up reqwest, so that
//! connecting and TLS behave as they did before streamed answers had their own client.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service as _;

use crate::error::{GatewayError, TimeoutPhase};

/// The stream a connection runs on: plain TCP or TLS over it.
pub(super) type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// The TLS settings every streamed-answer connection uses, as reqwest's defaults with the
/// gateway's crypto provider: TLS 1.2 and 1.3, the platform's verifier and roots, SNI.
pub(in crate::upstream) fn tls_config() -> Result<Arc<rustls::ClientConfig>, GatewayError> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
        .map_err(|e| GatewayError::Internal(format!("loading the TLS roots: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Internal(format!("TLS settings: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // ALPN is set by the connector's builder (`enable_http1`: `http/1.1` only).
    Ok(Arc::new(config))
}

/// Opens connections to one provider.
#[derive(Debug, Clone)]
pub(super) struct Connector {
    inner: HttpsConnector<HttpConnector>,
    /// The whole of connecting (resolving, TCP, TLS) is bounded by this, as reqwest's
    /// `connect_timeout` bounded it.
    timeout: Duration,
}

impl Connector {
    /// A connector with `timeout` for each connection, using `tls` for `https` URLs.
    pub(super) fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Connector {
        let mut http = HttpConnector::new();
        // As reqwest set its own: TLS URLs go through this connector too, TCP_NODELAY
        // (frames are small and must not wait), its TCP keepalive defaults.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        // `enable_http1` alone: ALPN offers `http/1.1` only (these connections speak nothing
        // else).
        let inner = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(Arc::unwrap_or_clone(tls))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Connector { inner, timeout }
    }

    /// A new connection to `origin` (scheme and authority), mapped to the gateway's errors
    /// when it cannot be made.
    pub(super) async fn connect(
        &self,
        provider: &str,
        origin: &http::Uri,
    ) -> Result<Io, GatewayError> {
        let mut connector = self.inner.clone();
        let connecting = async {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(origin.clone()).await
        };
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(e)) => Err(connect_error(provider, e.as_ref())),
            Err(_) => {
                tracing::warn!(
                    provider,
                    error = "connect timeout",
                    "upstream connection failed"
                );
                Err(GatewayError::Timeout {
                    provider: provider.to_owned(),
                    phase: TimeoutPhase::Connect,
                })
            }
        }
    }
}

/// Why connecting failed, in the gateway's words (what reqwest's error mapped to before:
/// a timeout anywhere in the chain is the connect timeout, else the connect fault); the
/// transport's words go to the log.
pub(super) fn connect_error(
    provider: &str,
    e: &(dyn std::error::Error + Send + Sync + 'static),
) -> GatewayError {
    let chain = super::chain(e);
    tracing::warn!(provider, error = %chain, "upstream connection failed");
    if super::timed_out(e) {
        return GatewayError::Timeout {
            provider: provider.to_owned(),
            phase: TimeoutPhase::Connect,
        };
    }
    GatewayError::Connection {
        provider: provider.to_owned(),
        fault: crate::upstream::fault_of_connect(Some(e)),
    }
}
