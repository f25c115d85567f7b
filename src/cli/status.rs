//! `streamgate status`: what a running gateway holds. `--routes`: the routes of
//! `GET /admin/routes` with their breaker and recent error rate; `--streaming`: the streams of
//! `GET /admin/streams`, and with `--buffer` their memory, the totals and the journal's
//! figures. Neither flag: both, routes first.

use std::io::{self, ErrorKind, Write};

use serde_json::Value;

use super::pump::Outcome;
use super::report;
use crate::client::{ClientError, RoutesView, StreamClient, StreamsView};
use crate::config::ReconnectConfig;
use crate::secret::Secret;

/// What `status` was asked to show.
#[derive(Debug)]
pub(super) struct Status<'a> {
    /// The gateway's base URL.
    pub url: &'a str,
    /// The routes view.
    pub routes: bool,
    /// The streams view.
    pub streams: bool,
    /// Buffer bytes per stream, totals and journal.
    pub buffer: bool,
    /// The raw JSON instead of the table.
    pub json: bool,
}

/// The environment variable holding the admin key, sent as `Authorization: Bearer`.
pub const ADMIN_KEY_ENV: &str = "STREAMGATE_ADMIN_KEY";

/// Runs `status`: 0 when shown, 1 when the gateway answered with an error or something
/// unreadable, 2 when it cannot be reached (or the URL is bad).
pub(super) fn run(status: &Status<'_>) -> Outcome {
    let (routes, streams) = match (status.routes, status.streams) {
        (false, false) => (true, true),
        chosen => chosen,
    };
    let views = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            StreamClient::new(status.url, ReconnectConfig::default())
                .map(|client| match std::env::var(ADMIN_KEY_ENV) {
                    Ok(key) if !key.is_empty() => client.with_admin_key(Secret::new(key)),
                    _ => client,
                })
                .map_err(|e| e.chain())
                .map(|client| {
                    runtime.block_on(async {
                        let routes = if routes {
                            Some(client.routes().await.map_err(|e| ("routes", e))?)
                        } else {
                            None
                        };
                        let streams = if streams {
                            Some(client.streams().await.map_err(|e| ("streams", e))?)
                        } else {
                            None
                        };
                        Ok::<_, (&str, ClientError)>((routes, streams))
                    })
                })
        });
    let (routes, streams) = match views {
        Ok(Ok(views)) => views,
        Ok(Err((_, e @ ClientError::Transport(_)))) => {
            report(&format!(
                "cannot reach the gateway at {}: {}",
                status.url,
                e.chain()
            ));
            return Outcome::Bad;
        }
        Ok(Err((_, e @ ClientError::InvalidUrl { .. }))) => {
            report(&e.chain());
            return Outcome::Bad;
        }
        Ok(Err((path, e))) => {
            report(&format!("{}/admin/{path}: {}", status.url, e.chain()));
            return Outcome::Failed;
        }
        Err(e) => {
            report(&e);
            return Outcome::Bad;
        }
    };
    let text = if status.json {
        match (&routes, &streams) {
            (Some(r), Some(s)) => {
                format!(
                    "{}\n",
                    serde_json::json!({"routes": r.raw, "streams": s.raw})
                )
            }
            (Some(r), None) => format!("{}\n", r.raw),
            (None, Some(s)) => format!("{}\n", s.raw),
            (None, None) => String::new(),
        }
    } else {
        let mut parts = Vec::new();
        if let Some(r) = &routes {
            parts.push(routes_table(r));
        }
        if let Some(s) = &streams {
            parts.push(table(s, status.buffer));
        }
        parts.join("\n")
    };
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Outcome::Complete,
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Outcome::Complete,
        Err(e) => {
            report(&format!("writing output: {e}"));
            Outcome::Bad
        }
    }
}

/// The routes table: each route's breaker, then its outcomes over the recent window.
fn routes_table(view: &RoutesView) -> String {
    if view.routes.is_empty() {
        return "no routes tried yet\n".to_owned();
    }
    let window = view
        .routes
        .iter()
        .map(|r| r.recent.window_s)
        .max()
        .unwrap_or(0);
    let mut rows = vec![
        [
            "ROUTE",
            "BREAKER",
            "IN_A_ROW",
            "RETRY_IN",
            "ATTEMPTS",
            "FAILED",
            "ERROR_RATE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in &view.routes {
        rows.push(vec![
            r.route.clone(),
            r.state.clone(),
            r.failures.to_string(),
            if r.retry_in_ms == 0 {
                "-".to_owned()
            } else {
                duration(r.retry_in_ms)
            },
            r.recent.attempts.to_string(),
            r.recent.failures.to_string(),
            if r.recent.attempts == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", r.recent.error_rate * 100.0)
            },
        ]);
    }
    let mut out = columns(&rows, |c| c >= 2);
    out.push_str(&format!(
        "ATTEMPTS, FAILED, ERROR_RATE: the last {window} s; IN_A_ROW: consecutive failures\n"
    ));
    out
}

/// The streams table, then the totals.
fn table(view: &StreamsView, buffer: bool) -> String {
    let mut header = vec![
        "STREAM", "STATUS", "DOOR", "ROUTE", "SEQ", "SUBS", "DETACHED",
    ];
    if buffer {
        header.push("BUFFER");
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for s in &view.streams {
        let mut row = vec![
            s.id.clone(),
            s.status.clone(),
            s.door.clone(),
            s.route.clone(),
            s.seq.to_string(),
            s.subscribers.to_string(),
            s.detached_ms.map_or_else(|| "-".to_owned(), duration),
        ];
        if buffer {
            row.push(bytes(s.buffer_bytes));
        }
        rows.push(row);
    }
    let mut out = String::new();
    if view.streams.is_empty() {
        out.push_str("no streams\n");
    } else {
        // Numbers align right, words left.
        out.push_str(&columns(&rows, |col| matches!(col, 4 | 5 | 7)));
    }
    let t = &view.totals;
    out.push_str(&format!("{} live, {} finished\n", t.live, t.finished));
    if buffer {
        out.push_str(&format!(
            "buffer {} of {}, {} evicted\n",
            bytes(t.buffer_bytes),
            bytes(t.max_bytes),
            t.evicted
        ));
        if let Some(journal) = &view.journal {
            let fields: Vec<String> = journal
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k} {s}"),
                    other => format!("{k} {other}"),
                })
                .collect();
            out.push_str(&format!("journal: {}\n", fields.join(", ")));
        }
    }
    out
}

/// `rows` as aligned columns, two spaces apart; `right` says which align right.
fn columns(rows: &[Vec<String>], right: impl Fn(usize) -> bool) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if right(c) {
                    format!("{cell:>w$}", w = widths[c])
                } else {
                    format!("{cell:<w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// `512 B`, `12.3 KiB`, `64.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12_595), "12.3 KiB");
        assert_eq!(bytes(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_340), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
    }

    #[test]
    fn the_table_has_a_row_per_stream_and_buffer_totals_on_request() {
        let view = StreamsView::parse(
            br#"{"totals":{"live":1,"finished":0,"buffer_bytes":2048,"max_bytes":4096,"evicted":3},
                 "journal":{"segments":2,"bytes":100},
                 "data":[{"id":"st_a","status":"live","door":"openai","route":"openai/x","seq":7,
                          "buffer_bytes":2048,"subscribers":0,"detached_ms":1500}]}"#,
        )
        .unwrap();
        let plain = table(&view, false);
        let lines: Vec<&str> = plain.lines().collect();
        assert!(lines[0].starts_with("STREAM"), "{plain}");
        assert!(!lines[0].contains("BUFFER"), "{plain}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[..6], ["st_a", "live", "openai", "openai/x", "7", "0"]);
        assert!(lines[1].ends_with("1.5 s"), "{plain}");
        assert_eq!(lines[2], "1 live, 0 finished");
        assert!(!plain.contains("journal"));
        let full = table(&view, true);
        assert!(full.contains("2.0 KiB"), "{full}");
        assert!(
            full.contains("buffer 2.0 KiB of 4.0 KiB, 3 evicted"),
            "{full}"
        );
        assert!(full.contains("journal: segments 2, bytes 100"), "{full}");
    }

    #[test]
    fn the_routes_table_shows_breakers_and_recent_error_rates() {
        let view = RoutesView::parse(
            br#"{"routes":[
                {"route":"anthropic/claude","state":"open","failures":5,"retry_in_ms":8200,
                 "recent":{"window_s":60,"attempts":8,"failures":6,"error_rate":0.75}},
                {"route":"openai/gpt","state":"closed","failures":0,"retry_in_ms":0,
                 "recent":{"window_s":60,"attempts":0,"failures":0,"error_rate":0.0}}]}"#,
        )
        .unwrap();
        let out = routes_table(&view);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0][0], "ROUTE");
        assert_eq!(
            lines[1],
            [
                "anthropic/claude",
                "open",
                "5",
                "8.2",
                "s",
                "8",
                "6",
                "75.0%"
            ]
        );
        assert_eq!(lines[2], ["openai/gpt", "closed", "0", "-", "0", "0", "-"]);
        assert!(lines[3].join(" ").contains("the last 60 s"), "{out}");
        let empty = RoutesView::parse(br#"{"routes":[]}"#).unwrap();
        assert_eq!(routes_table(&empty), "no routes tried yet\n");
    }
}
