//! The classic report: one column per phase (direct, gateway, nginx, ...).

use super::*;

/// One proxied phase in the report.
#[derive(Debug)]
pub(crate) struct Column {
    pub(crate) name: &'static str,
    pub(crate) phase: Phase,
    pub(crate) idle_rss: Option<f64>,
    pub(crate) peak_rss: Option<f64>,
}

pub(crate) fn report(direct: &Phase, columns: &[Column]) -> String {
    let mut s = String::new();
    let opt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
    };
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    // One line: the label, direct, each proxy, then a remark.
    let row = |s: &mut String, name: &str, d: String, each: &dyn Fn(&Column) -> String, extra| {
        let _ = write!(s, "{name:<28} {d:>12}");
        for c in columns {
            let _ = write!(s, " {:>12}", each(c));
        }
        let _ = writeln!(s, "   {extra}");
    };
    // A remark per proxy, " / "-separated in column order.
    let each_extra = |f: &dyn Fn(&Column) -> String| -> String {
        columns.iter().map(f).collect::<Vec<_>>().join(" / ")
    };
    let _ = writeln!(s);
    row(
        &mut s,
        "",
        "direct".into(),
        &|c| c.name.to_owned(),
        format!("{} vs direct", names.join(" / ")),
    );
    let (d50, d99) = (pct(&direct.ttfb, 0.50), pct(&direct.ttfb, 0.99));
    row(
        &mut s,
        "TTFB p50 (ms)",
        format!("{d50:.3}"),
        &|c| format!("{:.3}", pct(&c.phase.ttfb, 0.50)),
        format!(
            "{} ms",
            each_extra(&|c| format!("{:+.3}", pct(&c.phase.ttfb, 0.50) - d50))
        ),
    );
    row(
        &mut s,
        "TTFB p99 (ms)",
        format!("{d99:.3}"),
        &|c| format!("{:.3}", pct(&c.phase.ttfb, 0.99)),
        format!(
            "{} ms added p99 TTFB",
            each_extra(&|c| format!("{:+.3}", pct(&c.phase.ttfb, 0.99) - d99))
        ),
    );
    for (label, q) in [
        ("stream time p50 (ms)", 0.50),
        ("stream time p99 (ms)", 0.99),
    ] {
        row(
            &mut s,
            label,
            format!("{:.3}", pct(&direct.total, q)),
            &|c| format!("{:.3}", pct(&c.phase.total, q)),
            String::new(),
        );
    }
    let ratio = |c: &Column| c.phase.streams_per_s() / direct.streams_per_s();
    row(
        &mut s,
        "streams/s",
        format!("{:.0}", direct.streams_per_s()),
        &|c| format!("{:.0}", c.phase.streams_per_s()),
        format!(
            "{} of direct",
            each_extra(&|c| format!("{:.1}%", ratio(c) * 100.0))
        ),
    );
    let events_per_s = |p: &Phase| p.frames_per_stream * p.streams_per_s();
    row(
        &mut s,
        "SSE events/s",
        format!("{:.0}", events_per_s(direct)),
        &|c| format!("{:.0}", events_per_s(&c.phase)),
        "frames delivered per second (native door: Agent Events through the hub)".into(),
    );
    row(
        &mut s,
        "wall time (s)",
        format!("{:.3}", direct.wall.as_secs_f64()),
        &|c| format!("{:.3}", c.phase.wall.as_secs_f64()),
        String::new(),
    );
    row(
        &mut s,
        "streams ok / errors",
        format!("{} / {}", direct.ok(), direct.errors),
        &|c| format!("{} / {}", c.phase.ok(), c.phase.errors),
        format!(
            "warm-up errors {} / {}",
            direct.warmup_errors,
            each_extra(&|c| c.phase.warmup_errors.to_string())
        ),
    );
    row(
        &mut s,
        "SSE frames per stream",
        format!("{:.1}", direct.frames_per_stream),
        &|c| format!("{:.1}", c.phase.frames_per_stream),
        format!(
            "upstream hits {} / {}",
            direct.upstream_hits,
            each_extra(&|c| c.phase.upstream_hits.to_string())
        ),
    );
    row(
        &mut s,
        "upstream TCP connections",
        format!("{}", direct.upstream_connections),
        &|c| format!("{}", c.phase.upstream_connections),
        "opened during the phase, warm-up included".into(),
    );
    row(
        &mut s,
        "load tool CPU (s)",
        format!("{:.2}", direct.tool_cpu),
        &|c| format!("{:.2}", c.phase.tool_cpu),
        "clients + synthetic upstream".into(),
    );
    row(
        &mut s,
        "load tool CPU/stream (us)",
        format!("{:.0}", direct.per_stream_us(direct.tool_cpu)),
        &|c| format!("{:.0}", c.phase.per_stream_us(c.phase.tool_cpu)),
        String::new(),
    );
    row(
        &mut s,
        "proxy CPU (s)",
        "-".into(),
        &|c| opt(c.phase.proxy_cpu, 2),
        "utime+stime; nginx: master + workers".into(),
    );
    row(
        &mut s,
        "proxy CPU/stream (us)",
        "-".into(),
        &|c| opt(c.phase.proxy_cpu.map(|v| c.phase.per_stream_us(v)), 0),
        format!(
            "{} us per frame",
            each_extra(&|c| opt(
                c.phase
                    .proxy_cpu
                    .map(|v| c.phase.per_stream_us(v) / c.phase.frames_per_stream.max(1.0)),
                2
            ))
        ),
    );
    let all = |p: &Phase| p.tool_cpu + p.proxy_cpu.unwrap_or(0.0);
    row(
        &mut s,
        "tool+proxy CPU/stream (us)",
        format!("{:.0}", direct.per_stream_us(all(direct))),
        &|c| format!("{:.0}", c.phase.per_stream_us(all(&c.phase))),
        String::new(),
    );
    row(
        &mut s,
        "CPUs busy (tool+proxy)",
        format!("{:.2}", all(direct) / direct.wall.as_secs_f64()),
        &|c| format!("{:.2}", all(&c.phase) / c.phase.wall.as_secs_f64()),
        "CPU seconds / wall seconds".into(),
    );
    row(
        &mut s,
        "rest of the box CPU (s)",
        opt(direct.other_cpu, 2),
        &|c| opt(c.phase.other_cpu, 2),
        format!(
            "other processes during the phase; steal {} / {} s",
            opt(direct.steal, 2),
            each_extra(&|c| opt(c.phase.steal, 2))
        ),
    );
    row(
        &mut s,
        "proxy RSS (MiB)",
        "-".into(),
        &|c| opt(c.peak_rss, 1),
        format!(
            "peak (VmHWM, nginx: summed); {} MiB idle after start",
            each_extra(&|c| opt(c.idle_rss, 1))
        ),
    );
    let _ = writeln!(s);
    for c in columns {
        let added = pct(&c.phase.ttfb, 0.99) - d99;
        let r = ratio(c);
        let _ = writeln!(
            s,
            "targets ({}): added p99 TTFB < 1 ms: {} ({:+.3} ms); throughput >= 90% of direct: \
             {} ({:.1}%)",
            c.name,
            if added < 1.0 { "met" } else { "MISSED" },
            added,
            if r >= 0.9 { "met" } else { "MISSED" },
            r * 100.0
        );
    }
    if let Some(e) = &direct.first_error {
        let _ = writeln!(s, "first direct error: {e:.300}");
    }
    for c in columns {
        if let Some(e) = &c.phase.first_error {
            let _ = writeln!(s, "first {} error: {e:.300}", c.name);
        }
    }
    s
}
