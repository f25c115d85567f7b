//! Taking over the streams of a dead instance: each upkeep round reads the live streams whose
//! lease deadline passed (a bounded batch, oldest first), claims each atomically (`SET NX`:
//! exactly one instance wins), and continues the answer from the events Redis holds with the
//! engine's continue path, as a restart on the embedded journal does (a `retry` seam, then
//! the rest). A mirror entry this instance holds for the stream becomes the generating one, so
//! its clients see one stream.

use std::sync::Arc;

use providers::AgentEvent;

use super::super::entry::Entry;
use super::super::{Hub, persist};
use super::mirror::{self, Filled};
use super::{Cluster, Owned, TAKEOVER_BATCH, scripts};
use crate::engine::Engine;
use crate::state::StateError;

/// One round: claims and continues what lapsed.
pub(super) async fn round(
    hub: &Arc<Hub>,
    engine: &Arc<Engine>,
    cluster: &Cluster,
) -> Result<(), StateError> {
    let mut call = scripts::EXPIRED.prepare_invoke();
    call.key(cluster.redis.global("live")).arg(TAKEOVER_BATCH);
    let tags: Vec<String> = cluster.redis.script("hub expired", &call).await?;
    for tag in tags {
        if cluster.owned().contains_key(&tag) {
            // Ours: a renewal was late (Redis was slow); the next one renews it.
            continue;
        }
        if claim(cluster, &tag).await? {
            take(hub, engine, cluster, &tag).await;
        }
    }
    Ok(())
}

/// Claims stream `tag` whose lease lapsed: true for the one instance that wins.
pub(super) async fn claim(cluster: &Cluster, tag: &str) -> Result<bool, StateError> {
    let mut call = scripts::CLAIM.prepare_invoke();
    call.key(cluster.key(tag, "meta"))
        .key(cluster.key(tag, "lease"))
        .key(cluster.redis.global("live"))
        .arg(cluster.me())
        .arg(cluster.lease_ms())
        .arg(tag);
    let won: i64 = cluster.redis.script("hub claim", &call).await?;
    Ok(won == 1)
}

/// Continues stream `tag`, whose lease this instance holds now.
async fn take(hub: &Arc<Hub>, engine: &Arc<Engine>, cluster: &Cluster, tag: &str) {
    let meta = match cluster.meta(tag).await {
        Ok(Some(meta)) => meta,
        // Not readable now: the lease lapses again and a later round (here or elsewhere)
        // takes it.
        _ => return,
    };
    cluster
        .taken_over
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    mirror::Mirrors::stop(&cluster.mirrors, tag).await;
    let entry = match hub.streams().map.get(tag) {
        Some(entry) if !entry.is_finished() => Some(Arc::clone(entry)),
        _ => None,
    };
    let entry = match entry {
        Some(entry) => entry,
        None => {
            let entry = Arc::new(Entry::new(
                tag.to_owned(),
                meta.door,
                meta.route.clone(),
                meta.created_ms,
                true,
            ));
            hub.insert(Arc::clone(&entry));
            entry
        }
    };
    let filled = match mirror::fill(hub, cluster, &entry, true).await {
        Ok(filled) => filled,
        Err(e) => {
            tracing::warn!(stream = entry.id(), error = %e, "state: a stream taken over could not be read: following it until it is taken again");
            mirror::start(hub, cluster, &entry);
            return;
        }
    };
    let next = entry.next_seq();
    let mut prior = Vec::with_capacity(next as usize);
    for event in entry.events() {
        match persist::stored(event.json) {
            Some((_, event)) => prior.push(event),
            None => break,
        }
    }
    let owned = Owned {
        entry: Arc::downgrade(&entry),
        door: meta.door,
        route: meta.route,
        created_ms: meta.created_ms,
        body: meta.body.clone(),
        forward: meta.forward.clone(),
        in_sync: true,
        ended: false,
    };
    cluster.owned().insert(tag.to_owned(), owned);
    let complete = matches!(prior.last(), Some(AgentEvent::StreamEnd(_)));
    if filled != Filled::UpToDate || complete || prior.len() as u64 != next {
        // Its owner died between its last event and its end (or it cannot go on): ended.
        hub.finish_shared(&entry).await;
        return;
    }
    tracing::info!(
        stream = entry.id(),
        events = next,
        "state: continuing the stream of an instance that stopped answering"
    );
    let slot = hub.live.force(entry.owner());
    let pairs: Vec<(String, String)> = serde_json::from_str(&meta.forward).unwrap_or_default();
    persist::continue_answer(
        Arc::clone(hub),
        Arc::clone(engine),
        entry,
        prior,
        meta.body,
        persist::forward_headers(&pairs),
        slot,
    );
}
