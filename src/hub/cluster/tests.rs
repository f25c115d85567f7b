//! The stream scripts against a real `redis-server` (the integration tests' harness): appends
//! are idempotent and never leave a gap, exactly one claimant wins a lapsed lease, and a
//! fenced owner can neither write, renew nor end the stream it lost.

use std::sync::Arc;

use bytes::Bytes;
use providers::Dialect;

use super::super::entry::{Entry, StoredEvent};
use super::super::{NewStream, StreamsConfig};
use super::{Cluster, takeover};
use crate::state::{Redis, StateConfig};

#[path = "../../../tests/common/redis.rs"]
mod redis_server;

fn cluster(url: &str) -> Cluster {
    let config: StateConfig = toml::from_str(
        "backend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\nprefix = \"u\"\nlease_ms = 300\ntimeout_ms = 2000",
    )
    .unwrap();
    Cluster::new(
        Redis::connect(&config, url).unwrap(),
        &StreamsConfig::default(),
    )
}

fn event(seq: u64) -> Vec<u8> {
    format!("{{\"seq\":{seq}}}").into_bytes()
}

/// Every event Redis holds for `tag`, in order.
async fn stored(c: &Cluster, tag: &str) -> Vec<(u64, Bytes)> {
    let mut all = Vec::new();
    loop {
        let next = all.last().map_or(0, |(seq, _): &(u64, Bytes)| seq + 1);
        let page = c.range(tag, next).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

fn new_stream() -> NewStream {
    NewStream {
        id: None,
        owner: None,
        door: Dialect::OpenAi,
        body: Bytes::from_static(b"{}"),
        forward: crate::upstream::ForwardHeaders::default(),
    }
}

fn entry(tag: &str) -> Arc<Entry> {
    Arc::new(Entry::new(
        tag.to_owned(),
        Dialect::OpenAi,
        "openai/m".into(),
        1,
        false,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_idempotent_in_order_and_never_leave_a_gap() {
    let Some(server) = redis_server::RedisServer::start().await else {
        return;
    };
    let c = cluster(&server.url());
    for seed in 1..=20u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let tag = format!("s{seed}");
        let e = entry(&tag);
        c.open(&e, &new_stream()).await.unwrap();
        let n = rng.u64(20..120);
        let mut next = 0u64;
        for _ in 0..1000 {
            if next == n {
                break;
            }
            // A batch anywhere from well before Redis's next seq to just past it: re-sends
            // overlap, a batch starting past the next seq is a gap.
            let first = rng.u64(next.saturating_sub(10)..=next + 2);
            let len = rng.u64(1..=12).min(n.saturating_sub(first).max(1));
            let jsons: Vec<Vec<u8>> = (first..first + len).map(event).collect();
            let refs: Vec<&[u8]> = jsons.iter().map(Vec::as_slice).collect();
            let [code, redis_next] = c.append_script(&tag, first, &refs).await.unwrap();
            if first > next {
                assert_eq!(
                    [code, redis_next],
                    [-3, next as i64],
                    "seed {seed}: a gap is refused"
                );
            } else {
                next = next.max(first + len);
                assert_eq!([code, redis_next], [1, next as i64], "seed {seed}");
            }
        }
        let all = stored(&c, &tag).await;
        let want: Vec<(u64, Bytes)> = (0..n).map(|s| (s, Bytes::from(event(s)))).collect();
        assert_eq!(all, want, "seed {seed}: every event once, in order");
        // The end needs every event the owner has: one more than Redis holds is refused.
        assert_eq!(c.end_script(&tag, n + 1).await.unwrap(), -3);
        assert_eq!(c.end_script(&tag, n).await.unwrap(), 1);
        let [code, _] = c.append_script(&tag, n, &[&event(n)]).await.unwrap();
        assert_eq!(code, -1, "an ended stream takes no more events");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_claimant_wins_and_the_old_owner_is_fenced() {
    let Some(server) = redis_server::RedisServer::start().await else {
        return;
    };
    let owner = cluster(&server.url());
    let others: Vec<Cluster> = (0..5).map(|_| cluster(&server.url())).collect();
    for round in 0..5 {
        let tag = format!("race{round}");
        let e = entry(&tag);
        owner.open(&e, &new_stream()).await.unwrap();
        // The same id from another instance is a duplicate.
        let dup = others[0].open(&entry(&tag), &new_stream()).await;
        assert!(
            matches!(dup, Err(super::HubError::DuplicateStream { .. })),
            "{dup:?}"
        );
        owner.append(&e, &[stored_event(0), stored_event(1)]).await;
        // A lease held is never claimed.
        for other in &others {
            assert!(!takeover::claim(other, &tag).await.unwrap());
        }
        // The lease lapses (its owner stopped renewing): all claim at once, one wins.
        let _: () = owner
            .redis
            .query("DEL", redis::cmd("DEL").arg(owner.key(&tag, "lease")))
            .await
            .unwrap();
        let claims =
            futures_util::future::join_all(others.iter().map(|other| takeover::claim(other, &tag)))
                .await;
        let winners: Vec<usize> = claims
            .iter()
            .enumerate()
            .filter(|(_, won)| *won.as_ref().unwrap())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {claims:?}");
        let winner = &others[winners[0]];

        // The old owner can no longer write, renew nor end: its entry is ended here.
        owner.append(&e, &[stored_event(2)]).await;
        assert!(e.was_moved(), "round {round}");
        assert_eq!(owner.end_script(&tag, 2).await.unwrap(), -1);
        assert_eq!(renew(&owner, &tag).await, -1);
        assert_eq!(renew(winner, &tag).await, 1);
        let [code, _] = owner.append_script(&tag, 2, &[&event(2)]).await.unwrap();
        assert_eq!(code, -1);
        // The winner goes on from where Redis is.
        let [code, next] = winner.append_script(&tag, 2, &[&event(2)]).await.unwrap();
        assert_eq!([code, next], [1, 3]);
        assert_eq!(stored(winner, &tag).await.len(), 3);
    }
}

/// The renewal script's answer for one stream of `c`.
async fn renew(c: &Cluster, tag: &str) -> i64 {
    let mut call = super::scripts::RENEW.prepare_invoke();
    call.key(c.redis.global("live"))
        .key(c.key(tag, "meta"))
        .key(c.key(tag, "lease"))
        .key(c.key(tag, "ev"))
        .arg(c.me())
        .arg(c.lease_ms())
        .arg(c.ttl_ms)
        .arg(tag);
    let codes: Vec<i64> = c.redis.script("renew", &call).await.unwrap();
    codes[0]
}

fn stored_event(seq: u64) -> StoredEvent {
    StoredEvent {
        seq,
        kind: "heartbeat",
        json: Bytes::from(event(seq)),
    }
}

/// The JSON of a heartbeat at `seq` of stream `s`, as kept.
fn envelope(seq: u64) -> Bytes {
    let mut stamper = providers::Stamper::resume(String::from("s"), seq);
    StoredEvent::of(&stamper.stamp(providers::AgentEvent::Heartbeat)).json
}

proptest::proptest! {
    /// Events read from Redis (in id order, with holes) become exactly the run that follows
    /// the entry's next seq: nothing before it, nothing after the first hole.
    #[test]
    fn a_page_yields_the_run_after_the_next_seq(
        present in proptest::collection::btree_set(0u64..80, 0..60),
        next in 0u64..80,
    ) {
        let page: Vec<(u64, Bytes)> = present.iter().map(|&s| (s, envelope(s))).collect();
        let kept = super::kept_from(next, page);
        let mut want = Vec::new();
        let mut s = next;
        while present.contains(&s) {
            want.push(s);
            s += 1;
        }
        let got: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        proptest::prop_assert_eq!(got, want);
    }

    /// A tail message applies only from the entry's next seq: the part already there is
    /// skipped, a message starting past it is a gap (None: read Redis).
    #[test]
    fn a_tail_message_applies_from_the_next_seq_or_is_a_gap(
        have in 0u64..40,
        first in 0u64..50,
        len in 1u64..20,
    ) {
        let e = entry("t");
        e.append((0..have).map(|s| StoredEvent { seq: s, kind: "heartbeat", json: envelope(s) }));
        let mut payload = first.to_string().into_bytes();
        for s in first..first + len {
            payload.push(b'\n');
            payload.extend_from_slice(&envelope(s));
        }
        let got = super::mirror::parse_tail(&e, &payload);
        if first > have {
            proptest::prop_assert!(got.is_none());
        } else {
            let seqs: Vec<u64> = got.unwrap().iter().map(|e| e.seq).collect();
            let want: Vec<u64> = (have..(first + len).max(have)).collect();
            proptest::prop_assert_eq!(seqs, want);
        }
    }
}
