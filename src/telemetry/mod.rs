//! Telemetry: what the gateway tells operators about itself.

pub mod otlp;
