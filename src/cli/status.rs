//! `streamgate status`: what a running gateway holds. One view for now, `--streaming`: the
//! streams of `GET /admin/streams` as a table, and with `--buffer` their memory, the
//! totals and the journal's figures.

use std::io::{self, ErrorKind, Write};

use serde_json::Value;

use super::pump::Outcome;
use super::report;
use crate::client::{ClientError, StreamClient, StreamsView};
use crate::config::ReconnectConfig;
use crate::secret::Secret;

/// What `status` was asked to show.
#[derive(Debug)]
pub(super) struct Status<'a> {
    /// The gateway's base URL.
    pub url: &'a str,
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
    let view = tokio::runtime::Builder::new_current_thread()
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
                .map(|client| runtime.block_on(client.streams()))
        });
    let view = match view {
        Ok(Ok(view)) => view,
        Ok(Err(e @ ClientError::Transport(_))) => {
            report(&format!(
                "cannot reach the gateway at {}: {}",
                status.url,
                e.chain()
            ));
            return Outcome::Bad;
        }
        Ok(Err(e @ ClientError::InvalidUrl { .. })) => {
            report(&e.chain());
            return Outcome::Bad;
        }
        Ok(Err(e)) => {
            report(&format!("{}/admin/streams: {}", status.url, e.chain()));
            return Outcome::Failed;
        }
        Err(e) => {
            report(&e);
            return Outcome::Bad;
        }
    };
    let text = if status.json {
        format!("{}\n", view.raw)
    } else {
        table(&view, status.buffer)
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
    // Numbers align right, words left.
    let right = |col: usize| matches!(col, 4 | 5 | 7);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    if view.streams.is_empty() {
        out.push_str("no streams\n");
    } else {
        for row in &rows {
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
}
