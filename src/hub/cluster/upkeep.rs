//! The upkeep task of one instance, every `lease_ms / 3`: renews the leases of the streams it
//! generates (one script per [`RENEW_BATCH`] streams), acts on a cancel asked on another
//! instance, re-sends to Redis what it missed, and takes over lapsed streams.

use std::sync::{Arc, Weak};

use super::super::Hub;
use super::{Cluster, RENEW_BATCH, RESYNC_BATCH, scripts, takeover};
use crate::engine::Engine;

/// Events re-sent per script call.
const RESEND_BATCH: usize = 256;

pub(super) async fn run(hub: Weak<Hub>, engine: Arc<Engine>) {
    let every = match hub
        .upgrade()
        .and_then(|h| h.cluster.as_ref().map(|c| c.redis.lease()))
    {
        Some(lease) => lease / 3,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        let Some(cluster) = hub.cluster.as_ref() else {
            return;
        };
        renew(cluster).await;
        resync(cluster).await;
        if let Err(e) = takeover::round(&hub, &engine, cluster).await {
            tracing::debug!(error = %e, "state: takeover round skipped");
        }
    }
}

/// Renews every in-sync stream's lease; forgets records whose entry is gone.
async fn renew(cluster: &Cluster) {
    let streams: Vec<(String, Arc<super::Entry>)> = {
        let mut owned = cluster.owned();
        owned.retain(|_, o| o.entry.strong_count() > 0);
        owned
            .iter()
            .filter(|(_, o)| o.in_sync && !o.ended)
            .filter_map(|(k, o)| Some((k.clone(), o.entry.upgrade()?)))
            .collect()
    };
    for batch in streams.chunks(RENEW_BATCH) {
        let mut call = scripts::RENEW.prepare_invoke();
        call.key(cluster.redis.global("live"))
            .arg(cluster.me())
            .arg(cluster.lease_ms())
            .arg(cluster.ttl_ms);
        for (tag, _) in batch {
            call.key(cluster.key(tag, "meta"))
                .key(cluster.key(tag, "lease"))
                .key(cluster.key(tag, "ev"));
        }
        for (tag, _) in batch {
            call.arg(tag);
        }
        let codes: Vec<i64> = match cluster.redis.script("hub renew", &call).await {
            Ok(codes) => codes,
            // Redis is not answering: the next round tries again.
            Err(_) => return,
        };
        for ((tag, entry), code) in batch.iter().zip(codes) {
            match code {
                2 => {
                    entry.cancel();
                }
                3 => entry.touch(),
                -1 => cluster.fence(entry),
                -2 => cluster.mark_unsynced(tag),
                _ => {}
            }
        }
    }
}

/// Re-sends to Redis the events of streams it missed, from Redis's own next seq, then their
/// end when they ended here meanwhile.
async fn resync(cluster: &Cluster) {
    let streams: Vec<(String, Arc<super::Entry>)> = cluster
        .owned()
        .iter()
        .filter(|(_, o)| !o.in_sync)
        .filter_map(|(k, o)| Some((k.clone(), o.entry.upgrade()?)))
        .take(RESYNC_BATCH)
        .collect();
    for (tag, entry) in streams {
        // Read before Redis is asked: events appended meanwhile make the append come back
        // behind, and the stream is re-sent again next round.
        let target = entry.next_seq();
        let Some(snapshot) = cluster.owned().get(&tag).cloned() else {
            continue;
        };
        let opened = cluster.open_script(&tag, &snapshot, "adopt").await;
        let mut next = match opened {
            Ok([1, next]) => next.max(0) as u64,
            Ok([-1, _]) => {
                cluster.fence(&entry);
                continue;
            }
            Ok(_) => continue,
            // Redis is not answering: the next round tries again.
            Err(_) => return,
        };
        let events = entry.events();
        while next < target {
            let from = next as usize;
            let to = (from + RESEND_BATCH).min(events.len());
            if from >= to {
                break;
            }
            let jsons: Vec<&[u8]> = events[from..to].iter().map(|e| e.json.as_ref()).collect();
            match cluster.append_script(&tag, next, &jsons).await {
                Ok([1, n]) if n as u64 > next => next = n as u64,
                Ok([-1, _]) => {
                    cluster.fence(&entry);
                    break;
                }
                _ => break,
            }
        }
        if next < target {
            continue;
        }
        let ended = {
            let mut owned = cluster.owned();
            match owned.get_mut(&tag) {
                Some(o) => {
                    o.in_sync = true;
                    o.ended
                }
                None => false,
            }
        };
        if ended {
            cluster.ended(&tag, cluster.end_script(&tag, next).await);
        }
    }
}
