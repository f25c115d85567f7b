//! HTTPS and WSS: `[server.tls]`'s certificate and key.
//!
//! The listener ([`super::listen`]) handshakes each admitted connection in the connection's
//! own task, within the header read timeout, so a client that never finishes its handshake
//! holds neither the accept loop nor memory for long; a plain-HTTP request to the TLS port
//! fails its handshake and is closed.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why `[server.tls]` is unusable (a startup error naming the file).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("[server.tls] cert {path}: {reason}")]
    Cert {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("[server.tls] key {path}: {reason}")]
    Key {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("[server.tls]: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS acceptor for `config` (HTTP/2 and HTTP/1.1 offered by ALPN).
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: config.cert.clone(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| TlsError::Key {
        path: config.key.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
