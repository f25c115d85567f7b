//! Telemetry: the gateway's metrics. [`system`]: the subsystems' metrics (rate limits,
//! breakers, streams, WebSocket connections, journal, upstream pools), read at scrape time.

pub mod system;
