//! Store outages through the whole layer, on a real Redis: the test runs its own `redis-server`,
//! stops it mid-test (SIGSTOP: connections hang, as with a dead host) and lets it come back
//! (SIGCONT), with each outage policy. No panic, no hang, nothing stored lost.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;
#[path = "common/redis.rs"]
mod private_redis;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum_sesame::{OnStoreError, RedisStore};
use common::{app, builder, get_path};
use private_redis::PrivateRedis;

/// The Redis store's bound on each command here.
const TIMEOUT: Duration = Duration::from_millis(500);

async fn store(redis: &PrivateRedis) -> RedisStore {
    RedisStore::builder()
        .timeout(TIMEOUT)
        .connect(&redis.url())
        .await
        .unwrap()
}

/// Bound on a request while Redis is stopped: the store's timeout plus slack for a slow machine.
fn assert_quick(started: Instant) {
    let took = started.elapsed();
    assert!(took < TIMEOUT + Duration::from_secs(2), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_while_redis_is_stopped_and_recovers() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let app = app(builder(), store(&redis).await);
    let pair = get_path(&app, "/write", None).await.cookie_pair();
    assert_eq!(get_path(&app, "/write", Some(&pair)).await.body, "n=2");

    redis.stop();
    let started = Instant::now();
    let reply = get_path(&app, "/write", Some(&pair)).await;
    assert_quick(started);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "Session store unavailable");
    assert!(reply.set_cookies.is_empty(), "the cookie is left alone");
    let started = Instant::now();
    let fresh = get_path(&app, "/write", None).await;
    assert_quick(started);
    assert_eq!(fresh.status, StatusCode::SERVICE_UNAVAILABLE);

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = loop {
        let reply = get_path(&app, "/write", Some(&pair)).await;
        if reply.status == StatusCode::OK || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "n=3"),
        "the session survived the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_without_session_serves_fresh_sessions_while_redis_is_stopped() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let app = app(
        builder().on_store_error(OnStoreError::ContinueWithoutSession),
        store(&redis).await,
    );
    let pair = get_path(&app, "/write", None).await.cookie_pair();

    redis.stop();
    let started = Instant::now();
    let reply = get_path(&app, "/write", Some(&pair)).await;
    assert_quick(started);
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "n=1"));
    assert!(
        reply.set_cookies.is_empty(),
        "an unsaved session sets no cookie"
    );

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = loop {
        let reply = get_path(&app, "/write", Some(&pair)).await;
        if reply.body == "n=2" || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reply.body, "n=2", "the stored session is intact");
}
