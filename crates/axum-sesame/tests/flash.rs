//! Flash messages (connect-flash): pushed, carried across requests, read once.

mod common;

use axum_sesame::core::{SessionId, SessionStore};
use common::*;

#[tokio::test]
async fn messages_survive_until_read_and_are_read_once() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = get_path(&app, "/flash/push?kind=info&msg=saved", None)
        .await
        .cookie_pair();
    get_path(&app, "/flash/push?kind=info&msg=again", Some(&pair)).await;
    get_path(&app, "/flash/push?kind=error&msg=oops", Some(&pair)).await;
    // A request that does not read them (a redirect target that ignores flash) keeps them.
    get_path(&app, "/read", Some(&pair)).await;

    // Stored as connect-flash stores them.
    let id = SessionId::parse(&id_of(&pair)).unwrap();
    let record = store.inner.load(&id).await.unwrap().unwrap();
    assert_eq!(
        record.data()["flash"],
        serde_json::json!({"info": ["saved", "again"], "error": ["oops"]})
    );

    let first = get_path(&app, "/flash/take?kind=info", Some(&pair)).await;
    assert_eq!(first.body, "saved|again");
    let second = get_path(&app, "/flash/take?kind=info", Some(&pair)).await;
    assert_eq!(second.body, "", "read once");
    let all = get_path(&app, "/flash/all", Some(&pair)).await;
    assert_eq!(all.body, r#"{"error": ["oops"]}"#);
    assert_eq!(get_path(&app, "/flash/all", Some(&pair)).await.body, "{}");
    let record = store.inner.load(&id).await.unwrap().unwrap();
    assert_eq!(
        record.data()["flash"],
        serde_json::json!({}),
        "an empty object, as connect-flash"
    );
}

#[tokio::test]
async fn reading_an_empty_flash_does_not_create_a_session() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let reply = get_path(&app, "/flash/take?kind=info", None).await;
    assert_eq!(reply.body, "");
    assert!(reply.set_cookies.is_empty());
    assert_eq!(store.counts.total(), 0);
}

#[tokio::test]
async fn flash_reads_messages_written_by_connect_flash() {
    let store = CountingStore::default();
    let id = SessionId::generate();
    let record = axum_sesame::core::Record::from_json(
        br#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"flash":{"info":["from node",{"rich":true}]}}"#,
    )
    .unwrap();
    store.inner.save(&id, &record).await.unwrap();
    let app = app(builder(), store.clone());
    let cookie = format!(
        "connect.sid={}",
        axum_sesame::KeyRing::new([SECRET])
            .unwrap()
            .sign_cookie_value(&id)
    );
    let reply = get_path(&app, "/flash/take?kind=info", Some(&cookie)).await;
    assert_eq!(reply.body, r#"from node|{"rich":true}"#);
}
