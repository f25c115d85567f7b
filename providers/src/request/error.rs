//! Why a request could not be read or translated, and how to tell the client.

use crate::error::ErrorReport;

use crate::dialect::Dialect;

/// A request that cannot be read, or cannot be expressed in the target dialect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request body itself is malformed (wrong type, missing field, bad JSON).
    #[error("invalid {}: {message}", shown(param))]
    Invalid {
        /// Where: `messages[3].content[1]`, `temperature`, or `""` for the whole body.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// The request is valid but asks for something the target dialect cannot do.
    #[error("{param} cannot be sent to {target}: {message}")]
    Unsupported {
        /// Where.
        param: String,
        /// Dialect the request was being translated to.
        target: Dialect,
        /// Why, and what to do instead.
        message: String,
    },
}

fn shown(param: &str) -> &str {
    if param.is_empty() {
        "request body"
    } else {
        param
    }
}

impl RequestError {
    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        RequestError::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(
        param: impl Into<String>,
        target: Dialect,
        message: impl Into<String>,
    ) -> Self {
        RequestError::Unsupported {
            param: param.into(),
            target,
            message: message.into(),
        }
    }

    /// The offending parameter, as a path into the client's body (`messages[3].content[1]`).
    pub fn param(&self) -> &str {
        match self {
            RequestError::Invalid { param, .. } | RequestError::Unsupported { param, .. } => param,
        }
    }

    /// A machine-readable code: `invalid_value` or `unsupported_parameter`.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Invalid { .. } => "invalid_value",
            RequestError::Unsupported { .. } => "unsupported_parameter",
        }
    }

    /// The error as a 400 answer, for any dialect to render
    /// ([`crate::dialects::WireDialect::error_body`]).
    pub fn report(&self) -> ErrorReport {
        ErrorReport {
            code: Some(self.code().to_owned()),
            param: Some(self.param().to_owned()).filter(|p| !p.is_empty()),
            ..ErrorReport::new(400, "invalid_request_error", self.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn error_bodies() {
        let e = RequestError::unsupported("n", Dialect::Anthropic, "Anthropic has no n");
        assert_eq!(e.param(), "n");
        let o = crate::Dialect::OpenAi.wire().error_body(&e.report());
        assert_eq!(o["error"]["param"], "n");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert_eq!(o["error"]["code"], "unsupported_parameter");
        assert_eq!(
            o["error"]["message"],
            "n cannot be sent to anthropic: Anthropic has no n"
        );
        let a = crate::Dialect::Anthropic.wire().error_body(&e.report());
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "invalid_request_error");
        assert_eq!(a["error"]["message"], o["error"]["message"]);

        let e = RequestError::invalid("", "body is not a JSON object");
        assert_eq!(
            crate::Dialect::OpenAi.wire().error_body(&e.report())["error"]["param"],
            Value::Null
        );
        assert_eq!(
            e.to_string(),
            "invalid request body: body is not a JSON object"
        );
    }
}
