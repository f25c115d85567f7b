//! Telemetry: what the gateway tells operators about itself. [`system`]: the subsystems'
//! metrics (rate limits, breakers, streams, WebSocket connections, journal, upstream pools),
//! read at scrape time; [`otlp`]: trace export (off by default).

pub mod otlp;
pub mod system;
