//! No lost updates: concurrent requests on one session, through the router, on the memory store.
//! (`sesame-conformance` runs the same races against every store directly.)
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use axum_sesame::core::{SessionId, SessionStore};
use axum_sesame::{Session, SessionError};
use common::*;

const REQUESTS: usize = 100;

fn concurrent_app(store: impl SessionStore) -> Router {
    Router::new()
        .route(
            "/start",
            get(|s: Session| async move { s.insert("started", true) }),
        )
        .route(
            "/set/{key}",
            get(|s: Session, Path(key): Path<String>| async move {
                // Yield so the requests really interleave between load and save.
                tokio::task::yield_now().await;
                s.insert(&key, true)
            }),
        )
        .route(
            "/incr",
            get(|s: Session| async move {
                let n = s
                    .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route(
            "/destroy",
            get(|s: Session| async move { s.destroy().await }),
        )
        .layer(builder().store(store).build().unwrap())
}

async fn start(app: &Router, store: &CountingStore) -> (String, SessionId) {
    let pair = get_path(app, "/start", None).await.cookie_pair();
    let id = SessionId::parse(&id_of(&pair)).unwrap();
    assert!(store.inner.load(&id).await.unwrap().is_some());
    (pair, id)
}

async fn race(app: &Router, paths: Vec<String>, cookie: &str) -> Vec<Reply> {
    let cookie: Arc<str> = cookie.into();
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|path| {
            let (app, cookie) = (app.clone(), Arc::clone(&cookie));
            tokio::spawn(async move { get_path(&app, &path, Some(&cookie)).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_setting_different_keys_all_survive() {
    let store = CountingStore::default();
    let app = concurrent_app(store.clone());
    let (pair, id) = start(&app, &store).await;
    let paths = (0..REQUESTS).map(|n| format!("/set/key{n}")).collect();
    for reply in race(&app, paths, &pair).await {
        assert_eq!(reply.status, 200);
    }
    let record = store.inner.load(&id).await.unwrap().unwrap();
    for n in 0..REQUESTS {
        assert!(
            record.data().contains_key(&format!("key{n}")),
            "key{n} lost"
        );
    }
    assert_eq!(
        store.counts.saves.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no whole-record writes"
    );
}

/// The bare memory store is called directly by the layer, which writes a record whole when the
/// store still holds the data the request loaded and patches it otherwise: the race must lose
/// nothing either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_the_bare_memory_store_lose_no_key() {
    let store = axum_sesame::MemoryStore::new();
    let app = concurrent_app(store.clone());
    let pair = get_path(&app, "/start", None).await.cookie_pair();
    let id = SessionId::parse(&id_of(&pair)).unwrap();
    for round in 0..5 {
        let paths = (0..REQUESTS)
            .map(|n| format!("/set/key{round}x{n}"))
            .collect();
        for reply in race(&app, paths, &pair).await {
            assert_eq!(reply.status, 200);
        }
    }
    let record = store.load(&id).await.unwrap().unwrap();
    for round in 0..5 {
        for n in 0..REQUESTS {
            assert!(
                record.data().contains_key(&format!("key{round}x{n}")),
                "key{round}x{n} lost"
            );
        }
    }
    assert_eq!(record.data().get("started"), Some(&serde_json::json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_key_all_count() {
    let store = CountingStore::default();
    let app = concurrent_app(store.clone());
    let (pair, id) = start(&app, &store).await;
    let replies = race(&app, vec!["/incr".to_owned(); REQUESTS], &pair).await;
    let mut seen: Vec<u64> = replies.iter().map(|r| r.body.parse().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=REQUESTS as u64).collect::<Vec<_>>(),
        "each update saw its own value"
    );
    let record = store.inner.load(&id).await.unwrap().unwrap();
    assert_eq!(record.data()["count"], REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destroy_racing_with_saves_leaves_no_session() {
    let store = CountingStore::default();
    let app = concurrent_app(store.clone());
    let (pair, id) = start(&app, &store).await;
    let mut paths: Vec<String> = (0..REQUESTS).map(|n| format!("/set/key{n}")).collect();
    paths.insert(REQUESTS / 2, "/destroy".to_owned());
    race(&app, paths, &pair).await;
    assert!(
        store.inner.load(&id).await.unwrap().is_none(),
        "an in-flight save brought the destroyed session back"
    );
}

#[tokio::test]
async fn a_write_to_an_existing_session_is_one_load_and_one_patch() {
    let store = CountingStore::default();
    let app = concurrent_app(store.clone());
    let (pair, _) = start(&app, &store).await;
    let before = store.counts.snapshot();
    get_path(&app, "/set/k", Some(&pair)).await;
    let after = store.counts.snapshot();
    assert_eq!(after.loads - before.loads, 1);
    assert_eq!(after.patches - before.patches, 1);
    assert_eq!(
        store.counts.total() - (before.loads + before.creates),
        2,
        "two round trips in all"
    );
}
