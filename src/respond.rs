//! JSON responses, for the doors and for the replay upstream (which sits below the doors and
//! must not reach into them).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// A JSON response with its content type.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}
