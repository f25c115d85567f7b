//! Which headers cross the gateway on a forwarded request, each way.
//!
//! A forwarded request keeps the client's end-to-end headers (its content type and multipart
//! boundary, `OpenAI-Beta`, idempotency keys, SDK telemetry) but never its credentials: the
//! gateway key stays here, and the provider's own headers are set by the upstream code. The
//! answer keeps the provider's headers except those that describe the gateway's account with
//! the provider.

use http::HeaderMap;
use http::header::HeaderName;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), besides those a
/// `Connection` header names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Client headers that do not go on: its credentials (the gateway key, or the key the
/// provider gets in its own header), the host, headers the upstream code sets from the
/// provider's configuration (the version, beta flags and account headers), cookies meant for
/// the gateway, `Expect` (the gateway reads the body itself) and `Accept-Encoding` (answers
/// pass as the provider encodes them, and error bodies are read, so they come plain).
/// `x-request-id` is the gateway's to send (the client's sane one or a fresh one).
const CLIENT_ONLY: [&str; 11] = [
    "host",
    "authorization",
    "x-api-key",
    "cookie",
    "expect",
    "accept-encoding",
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
    "x-request-id",
];

/// The prefix of the gateway's own request headers (`streamgate-provider-key`, ...).
const GATEWAY_PREFIX: &str = "streamgate-";

/// Provider headers that stay here: cookies for the provider's domain, and the organization
/// or project of the gateway's account.
const PROVIDER_ONLY: [&str; 4] = [
    "set-cookie",
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
];

/// The client's headers that go on to the provider.
pub fn request_headers(client: &HeaderMap) -> HeaderMap {
    end_to_end(client, |name| {
        CLIENT_ONLY.contains(&name) || name.starts_with(GATEWAY_PREFIX)
    })
}

/// The provider's headers that go back to the client.
pub fn response_headers(provider: &HeaderMap) -> HeaderMap {
    end_to_end(provider, |name| PROVIDER_ONLY.contains(&name))
}

/// `headers` without hop-by-hop headers (the fixed ones and those `Connection` names) and
/// without those `dropped` says.
fn end_to_end(headers: &HeaderMap, dropped: impl Fn(&str) -> bool) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let text = name.as_str();
        if HOP_BY_HOP.contains(&text) || named.contains(name) || dropped(text) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn credentials_and_connection_headers_never_go_on() {
        let client = map(&[
            ("authorization", "Bearer sg-gateway"),
            ("x-api-key", "sg-gateway"),
            ("streamgate-provider-key", "sk-own"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "gateway"),
            ("content-type", "multipart/form-data; boundary=abc"),
            ("openai-beta", "assistants=v2"),
            ("x-stainless-lang", "python"),
            ("x-stainless-lang", "twice"),
        ]);
        let out = request_headers(&client);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "openai-beta", "x-stainless-lang"]);
        assert_eq!(out.get_all("x-stainless-lang").iter().count(), 2);
        assert_eq!(
            out["content-type"], "multipart/form-data; boundary=abc",
            "the boundary is kept"
        );
    }

    #[test]
    fn the_gateway_account_stays_out_of_answers() {
        let provider = map(&[
            ("set-cookie", "__cf_bm=x"),
            ("openai-organization", "org-gateway"),
            ("anthropic-organization-id", "uuid"),
            ("content-type", "application/json"),
            ("content-length", "12"),
            ("x-request-id", "req_1"),
            ("keep-alive", "timeout=5"),
        ]);
        let out = response_headers(&provider);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "content-length", "x-request-id"]);
    }
}
