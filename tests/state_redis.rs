//! The Redis connection of `[state] backend = "redis"` against a real `redis-server`: bounded
//! calls, pub/sub with resets, and recovery when Redis stops and comes back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use redis_server::RedisServer;
use streamgate::state::{BusMessage, BusReceiver, Redis, StateConfig, StateError};

fn config() -> StateConfig {
    toml::from_str(
        "backend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\ntimeout_ms = 300\nprefix = \"t\"",
    )
    .unwrap()
}

/// The next message that is not a reset, skipping resets, within a generous bound.
async fn next_message(rx: &mut BusReceiver) -> bytes::Bytes {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(BusMessage::Message(m))) => return m,
            Ok(Some(BusMessage::Reset)) => continue,
            Ok(None) => panic!("the bus is gone"),
            Err(_) => panic!("no message on {}", rx.channel()),
        }
    }
}

/// Publishes `payload` until the listener has it (the subscription is made in the background,
/// and pub/sub drops what nobody listens to yet).
async fn publish_until_heard(redis: &Redis, rx: &mut BusReceiver, payload: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _ = redis
            .bus()
            .publish(redis, rx.channel(), payload.as_bytes())
            .await;
        if let Ok(Some(BusMessage::Message(m))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        {
            assert_eq!(m, payload.as_bytes());
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never heard {payload}"
        );
    }
}

#[tokio::test]
async fn commands_pubsub_and_recovery_after_redis_comes_back() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let redis = Redis::connect(&config(), &server.url()).unwrap();
    assert_eq!(redis.key("st_1", "ev"), "t:{st_1}:ev");
    assert_eq!(redis.global("breakers"), "t:breakers");
    let _: () = redis
        .query("SET", redis::cmd("SET").arg("t:k").arg("v"))
        .await
        .unwrap();
    let v: String = redis
        .query("GET", redis::cmd("GET").arg("t:k"))
        .await
        .unwrap();
    assert_eq!(v, "v");
    assert!(redis.is_up());

    let mut rx = redis.bus().subscribe("t:chan".into(), 16);
    publish_until_heard(&redis, &mut rx, "one").await;

    // Redis dies: calls fail fast and clearly, the client is marked down.
    server.stop();
    let err = redis
        .query::<String>("GET", redis::cmd("GET").arg("t:k"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StateError::Timeout { .. } | StateError::Failed { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("redis://"), "{err}");
    assert!(!redis.is_up());
    assert!(
        redis
            .stats()
            .outages
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // It comes back empty (no persistence): the client reconnects without a restart, and the
    // listener is told to re-read (a reset) and then hears new messages.
    server.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if redis
            .query::<()>("SET", redis::cmd("SET").arg("t:k").arg("w"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(redis.is_up());
    // The listener was told it may have missed messages (the disconnection, then the
    // resubscription): it must read the state again rather than trust the channel.
    let mut saw_reset = false;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
        saw_reset |= m == BusMessage::Reset;
    }
    assert!(saw_reset, "no reset after Redis went away and came back");
    publish_until_heard(&redis, &mut rx, "two").await;
}

#[tokio::test]
async fn a_gateway_may_start_while_redis_is_down_and_uses_it_once_it_answers() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    server.stop();
    let redis = Redis::connect(&config(), &server.url()).unwrap();
    assert!(
        redis
            .query::<String>("PING", &redis::cmd("PING"))
            .await
            .is_err()
    );
    server.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match redis.query::<String>("PING", &redis::cmd("PING")).await {
            Ok(pong) => {
                assert_eq!(pong, "PONG");
                break;
            }
            Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "never connected");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut rx = redis.bus().subscribe("t:late".into(), 4);
    publish_until_heard(&redis, &mut rx, "hello").await;
}

#[tokio::test]
async fn a_slow_listener_gets_a_reset_instead_of_unbounded_memory() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let redis = Redis::connect(&config(), &server.url()).unwrap();
    let mut rx = redis.bus().subscribe("t:flood".into(), 4);
    publish_until_heard(&redis, &mut rx, "ready").await;
    for i in 0..100 {
        redis
            .bus()
            .publish(&redis, "t:flood", format!("m{i}").as_bytes())
            .await
            .unwrap();
    }
    // A round trip after the last publish: every message has reached the client by now.
    let _: String = redis.query("PING", &redis::cmd("PING")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.recv().await, Some(BusMessage::Reset));
    // Then whatever comes next, in order.
    redis
        .bus()
        .publish(&redis, "t:flood", b"after")
        .await
        .unwrap();
    assert_eq!(next_message(&mut rx).await, "after".as_bytes());
}
