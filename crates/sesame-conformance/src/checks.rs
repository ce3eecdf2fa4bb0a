//! The checks, one `pub async fn` per rule of the store contract. Each panics (fails the test)
//! with a message naming the broken rule.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sesame_core::{CookieState, Error, Record, SessionId, SessionStore};

use crate::Fixture;

/// A record with data of every JSON kind and a cookie expiring in `ttl`.
pub fn sample_record(ttl: Duration) -> Record {
    let now = sesame_core::now();
    let mut cookie = CookieState::default();
    cookie.set_max_age(now, Some(ttl));
    let mut record = Record::new(cookie);
    let data = record.data_mut();
    data.insert("string".into(), json!("héllo \"wörld\" \u{1F600}"));
    data.insert("integer".into(), json!(9_007_199_254_740_991_i64));
    data.insert("negative".into(), json!(-42));
    data.insert("float".into(), json!(1.5));
    data.insert("bool".into(), json!(true));
    data.insert("null".into(), Value::Null);
    data.insert("array".into(), json!([1, "two", {"three": 3}]));
    data.insert(
        "nested".into(),
        json!({"user": {"id": 7, "roles": ["admin", "dev"]}}),
    );
    record
}

const HOUR: Duration = Duration::from_secs(3600);

/// A short expiry for checks that wait for it: long enough for a slow backend to write, short
/// enough to keep the suite quick.
const SHORT: Duration = Duration::from_millis(1200);

/// Waits until a record given [`SHORT`] has certainly expired.
async fn wait_past_short_expiry() {
    tokio::time::sleep(SHORT + Duration::from_millis(400)).await;
}

/// `save` then `load` returns the same record: data of every JSON kind and the cookie state.
pub async fn round_trip<F: Fixture>(_: &F, store: F::Store) {
    let id = SessionId::generate();
    let record = sample_record(HOUR);
    store.save(&id, &record).await.expect("save");
    let loaded = store
        .load(&id)
        .await
        .expect("load")
        .expect("a saved record");
    assert_eq!(loaded, record, "a loaded record equals the saved one");
}

/// `load` of an id never saved returns `None`, not an error.
pub async fn missing_is_none<F: Fixture>(_: &F, store: F::Store) {
    let loaded = store.load(&SessionId::generate()).await.expect("load");
    assert!(loaded.is_none(), "an unknown id has no record");
}

/// A record past its expiry is never returned, even if the backend has not evicted it yet.
pub async fn expired_is_never_returned<F: Fixture>(_: &F, store: F::Store) {
    let id = SessionId::generate();
    store.save(&id, &sample_record(SHORT)).await.expect("save");
    assert!(
        store.load(&id).await.expect("load").is_some(),
        "a live record is returned"
    );
    wait_past_short_expiry().await;
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "an expired record is not returned"
    );
}

/// Saving a record whose expiry has passed deletes what was stored under its id.
pub async fn save_of_expired_record_deletes<F: Fixture>(_: &F, store: F::Store) {
    let id = SessionId::generate();
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    let mut expired = sample_record(HOUR);
    let past = sesame_core::now() - Duration::from_secs(10);
    expired.cookie_mut().set_expires(past, Some(past));
    store
        .save(&id, &expired)
        .await
        .expect("save of an expired record");
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "an expired save removes the record"
    );
}

/// `save` replaces the whole record under an id.
pub async fn save_overwrites<F: Fixture>(_: &F, store: F::Store) {
    let id = SessionId::generate();
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    let mut second = Record::new(sample_record(HOUR).cookie().clone());
    second.data_mut().insert("only".into(), json!("this"));
    store.save(&id, &second).await.expect("second save");
    let loaded = store.load(&id).await.expect("load").expect("a record");
    assert_eq!(loaded, second, "the second save replaced the first");
}

/// `create` stores a new record and refuses an id that is taken, leaving the first record as it was.
pub async fn create_refuses_existing_id<F: Fixture>(_: &F, store: F::Store) {
    let id = SessionId::generate();
    let first = sample_record(HOUR);
    store.create(&id, &first).await.expect("create");
    let mut intruder = sample_record(HOUR);
    intruder.data_mut().insert("intruder".into(), json!(true));
    match store.create(&id, &intruder).await {
        Err(Error::AlreadyExists { .. }) => {}
        other => panic!("a second create of one id must fail with AlreadyExists, got {other:?}"),
    }
    let loaded = store.load(&id).await.expect("load").expect("a record");
    assert_eq!(
        loaded, first,
        "a refused create leaves the record untouched"
    );
}

/// Many concurrent `create`s of one id: exactly one wins. Concurrent creates of distinct ids all
/// succeed.
pub async fn concurrent_creates_have_one_winner<F: Fixture>(_: &F, store: F::Store) {
    let store = Arc::new(store);
    let id = SessionId::generate();
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move {
                let mut record = sample_record(HOUR);
                record.data_mut().insert("writer".into(), json!(n));
                store.create(&id, &record).await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => winners += 1,
            Err(Error::AlreadyExists { .. }) => {}
            Err(other) => panic!("a losing create must fail with AlreadyExists, got {other:?}"),
        }
    }
    assert_eq!(winners, 1, "exactly one concurrent create of an id wins");

    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = SessionId::generate();
                store.create(&id, &sample_record(HOUR)).await.map(|()| id)
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for task in tasks {
        ids.insert(task.await.expect("task").expect("create of a fresh id"));
    }
    assert_eq!(ids.len(), 32, "creates of distinct ids all succeed");
    for id in &ids {
        assert!(store.load(id).await.expect("load").is_some());
    }
}

/// `destroy` removes a record; destroying a missing one is not an error.
pub async fn destroy_is_idempotent<F: Fixture>(_: &F, store: F::Store) {
    let id = SessionId::generate();
    store.destroy(&id).await.expect("destroy of a missing id");
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    store.destroy(&id).await.expect("destroy");
    assert!(store.load(&id).await.expect("load").is_none(), "destroyed");
    store.destroy(&id).await.expect("second destroy");
}

/// `touch` moves the expiry (both ways) without changing the stored data.
pub async fn touch_moves_expiry_and_keeps_data<F: Fixture>(_: &F, store: F::Store) {
    let extended = SessionId::generate();
    let shortened = SessionId::generate();
    let short_record = sample_record(SHORT);
    let long_record = sample_record(HOUR);
    store.save(&extended, &short_record).await.expect("save");
    store.save(&shortened, &long_record).await.expect("save");

    // The touched record carries other data: touch must not write it.
    let mut touch_long = sample_record(HOUR);
    touch_long.data_mut().insert("not".into(), json!("written"));
    let mut touch_short = sample_record(SHORT);
    touch_short
        .data_mut()
        .insert("not".into(), json!("written"));
    store.touch(&extended, &touch_long).await.expect("touch");
    store.touch(&shortened, &touch_short).await.expect("touch");

    wait_past_short_expiry().await;
    let kept = store
        .load(&extended)
        .await
        .expect("load")
        .expect("a touched record lives to its new expiry");
    assert_eq!(kept.data(), short_record.data(), "touch keeps the data");
    assert!(
        store.load(&shortened).await.expect("load").is_none(),
        "a touch to an earlier expiry takes effect"
    );
}

/// `touch` of a missing record does not create one.
pub async fn touch_does_not_resurrect<F: Fixture>(_: &F, store: F::Store) {
    let id = SessionId::generate();
    store.touch(&id, &sample_record(HOUR)).await.expect("touch");
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "touch created a record"
    );
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    store.destroy(&id).await.expect("destroy");
    store.touch(&id, &sample_record(HOUR)).await.expect("touch");
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "touch brought a destroyed record back"
    );
}

/// Corrupt data in the backend is a [`Error::Decode`] on load: no panic, no silent `None`.
pub async fn corrupt_record_is_a_decode_error<F: Fixture>(fixture: &F, store: F::Store) {
    let id = SessionId::generate();
    if !fixture.write_corrupt_record(&store, &id).await {
        return;
    }
    match store.load(&id).await {
        Err(Error::Decode { .. }) => {}
        other => panic!("a corrupt record must load as a Decode error, got {other:?}"),
    }
}

/// A 256 KiB record survives a round trip intact.
pub async fn large_record_round_trip<F: Fixture>(_: &F, store: F::Store) {
    let id = SessionId::generate();
    let mut record = sample_record(HOUR);
    let blob: String = (0..256 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    record.data_mut().insert("blob".into(), json!(blob));
    store.save(&id, &record).await.expect("save");
    let loaded = store.load(&id).await.expect("load").expect("a record");
    assert_eq!(loaded, record);
}

/// With the listing capability: `ids`, `all` and `len` see exactly the live sessions.
pub async fn listing_sees_live_sessions_only<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().listing {
        return;
    }
    let live: BTreeSet<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
    for id in &live {
        store.save(id, &sample_record(HOUR)).await.expect("save");
    }
    let short_lived = SessionId::generate();
    store
        .save(&short_lived, &sample_record(SHORT))
        .await
        .expect("save");
    wait_past_short_expiry().await;

    let ids: BTreeSet<SessionId> = store.ids().await.expect("ids").into_iter().collect();
    assert_eq!(ids, live, "ids lists the live sessions only");
    let all = store.all().await.expect("all");
    assert_eq!(all.len(), live.len(), "all lists the live sessions only");
    for (id, record) in &all {
        assert!(live.contains(id));
        assert_eq!(record.data(), sample_record(HOUR).data());
    }
    assert_eq!(store.len().await.expect("len"), live.len());
}

/// With the listing capability: `clear` deletes every session of the store.
pub async fn clear_empties_the_store<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().listing {
        return;
    }
    for _ in 0..3 {
        store
            .save(&SessionId::generate(), &sample_record(HOUR))
            .await
            .expect("save");
    }
    store.clear().await.expect("clear");
    assert_eq!(store.len().await.expect("len"), 0);
    assert!(store.ids().await.expect("ids").is_empty());
}
