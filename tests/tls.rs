//! `[server.tls]` through real sockets with a self-signed certificate made in the test:
//! HTTPS to both doors, WSS to /v1/ws, plain HTTP to the TLS port refused cleanly, and an
//! unusable certificate or key a startup error naming the setting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use providers::Dialect;
use streamgate::config::TlsConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`.
fn self_signed(dir: &Path) -> (TlsConfig, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = made.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (TlsConfig { cert, key }, cert_pem)
}

fn https_client(cert_pem: &str) -> reqwest::Client {
    https_client_builder(cert_pem).build().unwrap()
}

fn https_client_builder(cert_pem: &str) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(gw::BOUND)
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert_pem) = self_signed(dir.path());
    let h = gw::start_with(|c| c.server.tls = Some(tls)).await;
    let client = https_client(&cert_pem);

    // Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
    let mut plain = tokio::net::TcpStream::connect(h.gateway).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(gw::BOUND, plain.read_to_end(&mut got))
        .await
        .expect("the TLS port closes a plain-HTTP connection");
    assert!(
        read.is_err() || !got.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&got)
    );

    // HTTPS to both doors (after the plain attempt: it harmed nothing), over HTTP/2 and over
    // HTTP/1.1 as ALPN agreed (the WebSocket below offers no ALPN: HTTP/1.1).
    let http1 = https_client_builder(&cert_pem)
        .http1_only()
        .build()
        .unwrap();
    for (door, model, client, version) in [
        (
            Dialect::OpenAi,
            "anthropic/text_basic",
            &client,
            http::Version::HTTP_2,
        ),
        (
            Dialect::Anthropic,
            "openai/text_basic",
            &client,
            http::Version::HTTP_2,
        ),
        (
            Dialect::OpenAi,
            "openai/text_basic",
            &http1,
            http::Version::HTTP_11,
        ),
    ] {
        let path = gw::door_path(door);
        let mut request = client
            .post(format!("https://127.0.0.1:{}{path}", h.gateway.port()))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&gw::chat_body(door, model, true)).unwrap());
        if door == Dialect::Anthropic {
            request = request.header("anthropic-version", "2023-06-01");
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert_eq!(answer.version(), version, "{path}");
        let body = answer.text().await.unwrap();
        assert!(body.contains("data: "), "{path}: {body}");
    }
    // A client that does not trust the certificate is refused by its own TLS.
    assert!(
        gw::client()
            .get(format!("https://127.0.0.1:{}/healthz", h.gateway.port()))
            .send()
            .await
            .is_err()
    );

    // WSS: a TLS connection, then the WebSocket upgrade over it.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(h.gateway).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/v1/ws", h.gateway.port());
    let (mut ws, response) =
        tokio::time::timeout(gw::BOUND, tokio_tungstenite::client_async(url, tls))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(response.status(), 101);
    ws.close(None).await.unwrap();
}

fn serve_with(dir: &Path, tls: &str) -> (Option<i32>, String) {
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n\n[server.tls]\n{tls}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unusable_certificate_or_key_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, _) = self_signed(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let cert = tls.cert.display().to_string();
    let key = tls.key.display().to_string();
    let missing = dir.path().join("missing.pem").display().to_string();
    let garbage = garbage.display().to_string();
    for (toml, names) in [
        (
            format!("cert = \"{missing}\"\nkey = \"{key}\""),
            ("[server.tls] cert", &missing),
        ),
        (
            format!("cert = \"{garbage}\"\nkey = \"{key}\""),
            ("[server.tls] cert", &garbage),
        ),
        (
            format!("cert = \"{cert}\"\nkey = \"{missing}\""),
            ("[server.tls] key", &missing),
        ),
        (
            format!("cert = \"{cert}\"\nkey = \"{garbage}\""),
            ("[server.tls] key", &garbage),
        ),
    ] {
        let (code, stderr) = serve_with(dir.path(), &toml);
        assert_eq!(code, Some(2), "{toml}: {stderr}");
        assert!(
            stderr.contains(names.0) && stderr.contains(names.1.as_str()),
            "{toml}: {stderr}"
        );
    }
    // A key that is not the certificate's.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (other_tls, _) = self_signed(&other);
    let toml = format!("cert = \"{cert}\"\nkey = \"{}\"", other_tls.key.display());
    let (code, stderr) = serve_with(dir.path(), &toml);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("[server.tls]"), "{stderr}");
}
