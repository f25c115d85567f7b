//! A handler that panics (a bug) answers a generic 500: the panic's message and any backtrace
//! go to the log, never to the client.

use std::any::Any;

use axum::response::Response;
use http::StatusCode;
use providers::untrusted::untrusted;
use serde_json::json;

/// The 500 for a panic (the telemetry layer catches it: [`crate::telemetry::layer::wrap`]).
/// The door is not known here: the body has the fields both SDKs read
/// (OpenAI's `error.message`/`code`, Anthropic's `type` and `error.type`).
pub(super) fn answer(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = %untrusted(message), "a request handler panicked");
    crate::respond::json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "internal error: the gateway failed while answering",
                "param": null,
                "code": "internal_error",
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;

    async fn boom() -> &'static str {
        panic!("secret detail sk-panic-123 at src/server/panic.rs")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_generic_500_and_the_server_lives_on() {
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "ok" }));
        let telemetry = crate::telemetry::Telemetry::new(true, true, |_| {});
        let app = crate::telemetry::layer::wrap(app, telemetry, answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        crate::upstream::install_crypto_provider();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for _ in 0..3 {
            let response = client
                .get(format!("http://{addr}/boom"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 500);
            // The telemetry layer saw the answer: it carries the request's id.
            assert!(response.headers().contains_key("x-request-id"));
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            let text = body.to_string();
            for bad in ["sk-panic", "secret detail", "panic.rs", "backtrace"] {
                assert!(!text.contains(bad), "{bad} in {text}");
            }
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], "api_error");
            assert_eq!(body["error"]["code"], "internal_error");
        }
        let ok = client
            .get(format!("http://{addr}/ok"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.text().await.unwrap(), "ok");
    }
}
