//! A Redis outage: the test runs its own `redis-server`, kills it mid-test, and checks that store
//! calls fail within the timeout bound (never hang), then restarts it on the same port and checks
//! that the same store instance works again.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use sesame_core::serde_json::json;
use sesame_core::{CookieState, Patch, Record, SessionId, SessionStore};
use sesame_redis::RedisStore;

use common::PrivateRedis;

/// The store's bound on each command in these tests.
const TIMEOUT: Duration = Duration::from_millis(1000);

/// How much later than the timeout an error may come, for a slow CI machine.
const SLACK: Duration = Duration::from_secs(1);

fn record() -> Record {
    let mut cookie = CookieState::default();
    cookie.set_max_age(sesame_core::now(), Some(Duration::from_secs(3600)));
    let mut record = Record::new(cookie);
    record.data_mut().insert("user".into(), json!("ada"));
    record
}

/// Runs `call`, asserting it fails as unavailable within the bound; returns how long it took.
async fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = sesame_core::Result<T>>,
) -> Duration {
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for 30 s while Redis was down"));
    let took = started.elapsed();
    let error = outcome.expect_err(&format!("{what} succeeded while Redis was down"));
    assert!(
        error.is_unavailable(),
        "{what}: an outage is a Timeout or Backend error, got {error:?}"
    );
    assert!(
        took <= TIMEOUT + SLACK,
        "{what} took {took:?}, over the bound {:?}",
        TIMEOUT + SLACK
    );
    took
}

/// Retries `call` until it succeeds; panics when the store has not recovered within 15 s.
async fn recovers<T>(
    what: &str,
    mut call: impl AsyncFnMut() -> sesame_core::Result<T>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        match call().await {
            Ok(value) => return (value, started.elapsed()),
            Err(error) if started.elapsed() < Duration::from_secs(15) => {
                assert!(error.is_unavailable(), "{what}: {error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{what}: the store did not recover within 15 s: {error:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fails_fast_and_recovers() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    let store = RedisStore::builder()
        .timeout(TIMEOUT)
        .connect(&server.url())
        .await
        .unwrap();
    let id = SessionId::generate();
    store.save(&id, &record()).await.unwrap();
    assert!(store.load(&id).await.unwrap().is_some());

    server.kill().await;
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        slowest = slowest.max(fails_in_time("load", store.load(&id)).await);
        slowest = slowest.max(fails_in_time("save", store.save(&id, &record())).await);
        let mut patch = Patch::new(record().cookie().clone());
        patch.set("x", json!(1));
        slowest = slowest.max(fails_in_time("patch", store.patch(&id, &patch)).await);
        slowest = slowest.max(fails_in_time("ids", store.ids()).await);
    }
    eprintln!("slowest failure while Redis was down: {slowest:?} (bound {TIMEOUT:?} + {SLACK:?})");

    server.restart().await;
    // The restarted server is empty (it keeps nothing on disk); the same store instance writes
    // and reads again, scripts included (reloaded after NOSCRIPT).
    let ((), after) = recovers("save", async || store.save(&id, &record()).await).await;
    eprintln!("the store worked again {after:?} after Redis was back");
    assert!(store.load(&id).await.unwrap().is_some());
    let mut patch = Patch::new(record().cookie().clone());
    patch.set("x", json!(1));
    assert!(store.patch(&id, &patch).await.unwrap());
    assert_eq!(
        store.load(&id).await.unwrap().unwrap().data()["x"],
        json!(1)
    );
    assert_eq!(store.len().await.unwrap(), 1);
}

/// A Redis that accepts nothing and answers nothing (frozen, as behind a network partition): calls
/// time out within the bound, and work again when it thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_times_out_and_recovers() {
    let Some(server) = PrivateRedis::start().await else {
        return;
    };
    let store = RedisStore::builder()
        .timeout(TIMEOUT)
        .connect(&server.url())
        .await
        .unwrap();
    let id = SessionId::generate();
    store.save(&id, &record()).await.unwrap();

    // A panic below kills the frozen server when `server` drops (SIGKILL ends a stopped process).
    server.freeze().await;
    for _ in 0..2 {
        let took = fails_in_time("load", store.load(&id)).await;
        assert!(
            took >= TIMEOUT / 2,
            "a frozen server cannot answer: {took:?}"
        );
        let patch = Patch::new(record().cookie().clone());
        fails_in_time("patch", store.patch(&id, &patch)).await;
    }
    match store.load(&id).await {
        Err(sesame_core::Error::Timeout { timeout, .. }) => assert_eq!(timeout, TIMEOUT),
        other => panic!("a frozen server is a Timeout, got {other:?}"),
    }
    server.thaw().await;

    let (loaded, after) = recovers("load", async || store.load(&id).await).await;
    assert!(loaded.is_some(), "the data survived the freeze");
    eprintln!("the store worked again {after:?} after Redis thawed");
}

/// A store created while Redis is down (`connect_lazy`) fails fast, then works once Redis is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_store_starts_while_redis_is_down() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    server.kill().await;
    let store = RedisStore::builder()
        .timeout(TIMEOUT)
        .connect_lazy(&server.url())
        .unwrap();
    let id = SessionId::generate();
    fails_in_time("save", store.save(&id, &record())).await;
    fails_in_time("load", store.load(&id)).await;

    server.restart().await;
    recovers("save", async || store.save(&id, &record()).await).await;
    assert!(store.load(&id).await.unwrap().is_some());
}

/// Connecting to a Redis that is not there fails within the timeout.
#[tokio::test]
async fn connect_to_nothing_fails_in_time() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    server.kill().await;
    fails_in_time(
        "connect",
        RedisStore::builder()
            .timeout(TIMEOUT)
            .connect(&server.url()),
    )
    .await;
}
