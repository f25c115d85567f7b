//! What /proc says about processes and the machine: CPU seconds, RSS, load.

/// utime + stime of `pid` (or this process), in seconds.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) as f64 / hz)
}

/// Machine-wide CPU seconds from /proc/stat, all CPUs: (busy, steal). Busy is user + nice +
/// system + irq + softirq (not idle, iowait or steal).
pub(crate) fn box_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let at = |i: usize| v.get(i).copied().unwrap_or(0) as f64 / hz;
    Some((at(0) + at(1) + at(2) + at(5) + at(6), at(7)))
}

/// A `kB` field of /proc/PID/status (VmHWM, VmRSS), in MiB.
pub(crate) fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Raises the soft open-files limit toward `want` (children inherit it).
pub(crate) fn raise_fd_limit(want: u64) -> String {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return format!("{current}");
    }
    let target = limit.maximum.map_or(want, |max| want.min(max));
    limit.current = Some(target);
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) if target >= want => format!("{target} (raised from {current})"),
        Ok(()) => format!("{target} (raised from {current}; hard limit, below the {want} wanted)"),
        Err(e) => format!("{current} (raising to {want} failed: {e})"),
    }
}

/// Sum of a /proc/PID/status memory field over `pids` (shared pages count once per process).
pub(crate) fn rss_sum(pids: &[u32], field: &str) -> Option<f64> {
    pids.iter().map(|&p| status_mib(p, field)).sum()
}

/// The first three fields of /proc/loadavg.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".to_owned())
}

/// The machine's CPUs (from /proc/cpuinfo: with `--pin` this process may use only one).
pub(crate) fn cpu_count() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(0, usize::from))
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Resets the peak RSS (VmHWM) of `pids` to their current RSS, so that the next VmHWM read
/// is the peak of what ran in between (writing `5` to /proc/PID/clear_refs; allowed for our
/// own children). False if any could not be reset.
pub(crate) fn reset_peak_rss(pids: &[u32]) -> bool {
    pids.iter()
        .all(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
}
