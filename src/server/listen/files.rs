//! The open-file limit: every connection is a file descriptor, so `max_connections` above the
//! process's limit would not hold (accept fails, and an over-limit client gets no answer at
//! all instead of a 503).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors wanted besides client connections: the upstream connection of each request in
/// flight is counted per connection below; this is for the journal, listeners and the rest.
const RESERVE: u64 = 1024;

/// Descriptors `max_connections` clients need: their own and one upstream connection each.
fn needed(max_connections: usize) -> u64 {
    u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(RESERVE)
}

/// Descriptors without which `max_connections` cannot even be held: the connections
/// themselves (idle and slow ones have no upstream call) and the reserve.
fn required(max_connections: usize) -> u64 {
    u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVE)
}

/// Raises the soft open-file limit towards what `max_connections` needs (never above the hard
/// limit, never lowering it), and warns when it cannot hold even the connections themselves
/// (a limit between the two only matters when most connections have an upstream call open).
pub fn fit(max_connections: usize) {
    let want = needed(max_connections);
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return;
    }
    let raised = limit.maximum.map_or(want, |hard| hard.min(want));
    if raised > current
        && let Err(e) = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(raised),
                maximum: limit.maximum,
            },
        )
    {
        tracing::debug!(error = %e, "raising the open-file limit failed");
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if now < required(max_connections) {
        tracing::warn!(
            open_file_limit = now,
            max_connections,
            wanted = want,
            "the open-file limit is below what [server] max_connections needs: raise it \
             (ulimit -n, systemd LimitNOFILE) or lower max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_what_is_needed_within_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        let current = before.current.unwrap_or(u64::MAX);
        let hard = before.maximum.unwrap_or(u64::MAX);
        fit(0);
        assert_eq!(
            getrlimit(Resource::Nofile).current,
            before.current,
            "never lowered"
        );
        // Where the hard limit leaves room: a cap that needs a little more than the soft one.
        if current > RESERVE && current < hard {
            let connections = usize::try_from((current - RESERVE) / 2 + 1).unwrap();
            assert!(needed(connections) > current);
            fit(connections);
            let after = getrlimit(Resource::Nofile);
            assert!(after.current.unwrap_or(u64::MAX) >= needed(connections).min(hard));
            assert_eq!(after.maximum, before.maximum);
        }
    }
}
