//! The checks, one `pub async fn` per rule of the store contract. Each panics (fails the test)
//! with a message naming the broken rule.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sesame_core::{CookieState, Error, META_KEY, Patch, Record, SessionId, SessionStore, Swap};

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

/// How many concurrent writers the concurrency checks race.
const WRITERS: usize = 100;

fn patch_setting(key: &str, value: Value) -> Patch {
    let mut patch = Patch::new(sample_record(HOUR).cookie().clone());
    patch.set(key, value);
    patch
}

/// With the patch capability: a patch applies to the record as stored now, keeping keys another
/// writer changed, and removes what it removes.
pub async fn patch_keeps_keys_written_meanwhile<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().patch {
        return;
    }
    let id = SessionId::generate();
    let mut record = sample_record(HOUR);
    record.data_mut().insert("a".into(), json!(1));
    store.save(&id, &record).await.expect("save");
    assert!(
        store
            .patch(&id, &patch_setting("b", json!(2)))
            .await
            .expect("patch")
    );
    let mut second = patch_setting("c", json!({"deep": [3]}));
    second.remove("a");
    assert!(store.patch(&id, &second).await.expect("patch"));
    let loaded = store.load(&id).await.expect("load").expect("a record");
    assert_eq!(loaded.data().get("a"), None, "removed by the second patch");
    assert_eq!(
        loaded.data().get("b"),
        Some(&json!(2)),
        "kept from the first patch"
    );
    assert_eq!(loaded.data().get("c"), Some(&json!({"deep": [3]})));
    assert_eq!(
        loaded.data().get("nested"),
        record.data().get("nested"),
        "untouched keys kept"
    );
}

/// With the patch capability: many concurrent patches on one session, each setting its own key,
/// leave every key.
pub async fn concurrent_patches_lose_nothing<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().patch {
        return;
    }
    let store = Arc::new(store);
    let id = SessionId::generate();
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|n| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move {
                store
                    .patch(&id, &patch_setting(&format!("key{n}"), json!(n)))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(
            task.await.expect("task").expect("patch"),
            "the record exists"
        );
    }
    let loaded = store.load(&id).await.expect("load").expect("a record");
    for n in 0..WRITERS {
        assert_eq!(
            loaded.data().get(&format!("key{n}")),
            Some(&json!(n)),
            "key{n} was lost to a concurrent write"
        );
    }
}

/// With the patch capability: a patch never creates a record, so a destroyed (or expired) session
/// stays gone; and a patch moves the expiry.
pub async fn patch_never_recreates_and_moves_expiry<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().patch {
        return;
    }
    let id = SessionId::generate();
    assert!(
        !store
            .patch(&id, &patch_setting("x", json!(1)))
            .await
            .expect("patch")
    );
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "a patch created a record"
    );
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    store.destroy(&id).await.expect("destroy");
    assert!(
        !store
            .patch(&id, &patch_setting("x", json!(1)))
            .await
            .expect("patch")
    );
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "a patch revived a destroyed record"
    );

    let short = SessionId::generate();
    store
        .save(&short, &sample_record(HOUR))
        .await
        .expect("save");
    let mut expiring = Patch::new(sample_record(SHORT).cookie().clone());
    expiring.set("x", json!(1));
    assert!(store.patch(&short, &expiring).await.expect("patch"));
    wait_past_short_expiry().await;
    assert!(
        store.load(&short).await.expect("load").is_none(),
        "the patch's expiry applies"
    );
}

/// With the patch capability: a destroy racing with many patches leaves no session.
pub async fn destroy_wins_over_concurrent_patches<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().patch {
        return;
    }
    let store = Arc::new(store);
    let id = SessionId::generate();
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    let mut tasks = Vec::new();
    for n in 0..WRITERS {
        let (store, id) = (Arc::clone(&store), id.clone());
        tasks.push(tokio::spawn(async move {
            if n == WRITERS / 2 {
                store.destroy(&id).await.map(|()| true)
            } else {
                store
                    .patch(&id, &patch_setting(&format!("key{n}"), json!(n)))
                    .await
            }
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("patch or destroy");
    }
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "an in-flight patch brought a destroyed session back"
    );
}

/// Increments `key` with a compare-and-swap loop, as `Session::update` does.
async fn increment<S: SessionStore>(store: &S, id: &SessionId, key: &str) -> u64 {
    let mut current: Option<Value> = None;
    for _ in 0..10_000 {
        let next = current.as_ref().and_then(Value::as_u64).unwrap_or(0) + 1;
        match store
            .compare_and_swap(id, key, current.as_ref(), Some(&json!(next)))
            .await
            .expect("compare_and_swap")
        {
            Swap::Done => return next,
            Swap::Changed(now) => current = now,
            Swap::Missing => panic!("the record disappeared"),
        }
        tokio::task::yield_now().await;
    }
    panic!("compare_and_swap never succeeded");
}

/// With the compare-and-swap capability: its outcomes, JSON equality, and no creation.
pub async fn compare_and_swap_semantics<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().compare_and_swap {
        return;
    }
    let id = SessionId::generate();
    assert_eq!(
        store
            .compare_and_swap(&id, "k", None, Some(&json!(1)))
            .await
            .expect("cas"),
        Swap::Missing
    );
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "compare_and_swap created a record"
    );
    let mut record = sample_record(HOUR);
    record
        .data_mut()
        .insert("obj".into(), json!({"a": 1, "b": [1, 2]}));
    store.save(&id, &record).await.expect("save");
    let swap = |expected: Option<Value>, new: Option<Value>, key: &'static str| {
        let (store, id) = (&store, &id);
        async move {
            store
                .compare_and_swap(id, key, expected.as_ref(), new.as_ref())
                .await
                .expect("cas")
        }
    };
    assert_eq!(
        swap(None, Some(json!(1)), "k").await,
        Swap::Done,
        "absent as expected"
    );
    assert_eq!(
        swap(None, Some(json!(2)), "k").await,
        Swap::Changed(Some(json!(1)))
    );
    assert_eq!(swap(Some(json!(1)), Some(json!(2)), "k").await, Swap::Done);
    assert_eq!(
        swap(Some(json!(2)), None, "k").await,
        Swap::Done,
        "a swap to None removes"
    );
    assert_eq!(
        swap(Some(json!(2)), Some(json!(3)), "k").await,
        Swap::Changed(None)
    );
    // Equality is JSON equality: object key order does not matter.
    let reordered: Value = serde_json::from_str(r#"{"b":[1,2],"a":1}"#).expect("json");
    assert_eq!(
        swap(Some(reordered), Some(json!("new")), "obj").await,
        Swap::Done
    );
    let loaded = store.load(&id).await.expect("load").expect("a record");
    assert_eq!(loaded.data().get("obj"), Some(&json!("new")));
    assert_eq!(loaded.data().get("k"), None);
    assert_eq!(
        loaded.data().get("nested"),
        record.data().get("nested"),
        "other keys kept"
    );
}

/// With the compare-and-swap capability: many concurrent increments of one key all count.
pub async fn concurrent_increments_all_count<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().compare_and_swap {
        return;
    }
    let store = Arc::new(store);
    let id = SessionId::generate();
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move { increment(&*store, &id, "count").await })
        })
        .collect();
    let mut results = BTreeSet::new();
    for task in tasks {
        results.insert(task.await.expect("task"));
    }
    assert_eq!(
        results.len(),
        WRITERS,
        "every increment saw a distinct value"
    );
    let loaded = store.load(&id).await.expect("load").expect("a record");
    assert_eq!(
        loaded.data().get("count"),
        Some(&json!(WRITERS)),
        "no increment lost"
    );
}

/// A record as [`sample_record`], logged in to `user`.
pub fn record_of_user(user: &str, ttl: Duration) -> Record {
    let mut record = sample_record(ttl);
    record
        .data_mut()
        .insert(META_KEY.into(), json!({"user": user, "login": 1}));
    record
}

/// The cookie state of [`sample_record`] with a [`deadline`](CookieState::deadline) `SHORT` from
/// now.
fn cookie_with_short_deadline() -> CookieState {
    let mut cookie = sample_record(HOUR).cookie().clone();
    cookie.deadline = Some(sesame_core::now() + SHORT);
    cookie
}

/// The cookie's deadline (the layer's idle and absolute timeouts) caps the stored expiry, on save,
/// on create, on touch and on patch, even though the cookie's `expires` is later.
pub async fn deadline_caps_the_stored_expiry<F: Fixture>(_: &F, store: F::Store) {
    let saved = SessionId::generate();
    let mut record = sample_record(HOUR);
    *record.cookie_mut() = cookie_with_short_deadline();
    store.save(&saved, &record).await.expect("save");
    let created = SessionId::generate();
    store.create(&created, &record).await.expect("create");

    let touched = SessionId::generate();
    store
        .save(&touched, &sample_record(HOUR))
        .await
        .expect("save");
    store
        .touch(&touched, &Record::new(cookie_with_short_deadline()))
        .await
        .expect("touch");

    let patched = SessionId::generate();
    if store.capabilities().patch {
        store
            .save(&patched, &sample_record(HOUR))
            .await
            .expect("save");
        let mut patch = Patch::new(cookie_with_short_deadline());
        patch.set("x", json!(1));
        assert!(store.patch(&patched, &patch).await.expect("patch"));
    }
    assert!(
        store.load(&saved).await.expect("load").is_some(),
        "a record is live before its deadline"
    );
    wait_past_short_expiry().await;
    for (operation, id) in [
        ("save", &saved),
        ("create", &created),
        ("touch", &touched),
        ("patch", &patched),
    ] {
        assert!(
            store.load(id).await.expect("load").is_none(),
            "a {operation} with a deadline left the record live past it"
        );
    }
}

fn ids_of(sessions: &[(SessionId, Record)]) -> BTreeSet<SessionId> {
    sessions.iter().map(|(id, _)| id.clone()).collect()
}

/// With the user index capability: `user_sessions` returns exactly the live sessions of that user,
/// with their records, whichever write put them there; user ids are arbitrary strings.
pub async fn user_sessions_lists_a_users_live_sessions<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().user_index {
        return;
    }
    let alice = "alice";
    let odd = "user:1*?[x] {tag} é\u{1F600}";
    let created = SessionId::generate();
    store
        .create(&created, &record_of_user(alice, HOUR))
        .await
        .expect("create");
    let saved = SessionId::generate();
    store
        .save(&saved, &record_of_user(alice, HOUR))
        .await
        .expect("save");
    let short_lived = SessionId::generate();
    store
        .save(&short_lived, &record_of_user(alice, SHORT))
        .await
        .expect("save");
    let odd_one = SessionId::generate();
    store
        .save(&odd_one, &record_of_user(odd, HOUR))
        .await
        .expect("save");
    let anonymous = SessionId::generate();
    store
        .save(&anonymous, &sample_record(HOUR))
        .await
        .expect("save");
    wait_past_short_expiry().await;

    let sessions = store.user_sessions(alice).await.expect("user_sessions");
    assert_eq!(
        ids_of(&sessions),
        BTreeSet::from([created.clone(), saved.clone()]),
        "the user's live sessions, and no expired one"
    );
    for (_, record) in &sessions {
        assert_eq!(record.data(), record_of_user(alice, HOUR).data());
    }
    let sessions = store.user_sessions(odd).await.expect("user_sessions");
    assert_eq!(ids_of(&sessions), BTreeSet::from([odd_one]));
    assert!(
        store
            .user_sessions("nobody")
            .await
            .expect("user_sessions")
            .is_empty()
    );
    assert!(
        store
            .user_sessions("")
            .await
            .expect("user_sessions")
            .is_empty(),
        "sessions without a user are not indexed under an empty one"
    );
}

/// With the user index capability: the index follows a session through saves and patches that
/// change or remove its user, and through destroy.
pub async fn user_index_follows_changes_and_destroy<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().user_index {
        return;
    }
    let (alice, bob) = ("alice", "bob");
    let listed =
        async |user: &str| ids_of(&store.user_sessions(user).await.expect("user_sessions"));
    let id = SessionId::generate();
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    assert!(listed(alice).await.is_empty());

    store
        .save(&id, &record_of_user(alice, HOUR))
        .await
        .expect("save");
    assert_eq!(
        listed(alice).await,
        BTreeSet::from([id.clone()]),
        "logged in by save"
    );
    store
        .save(&id, &record_of_user(bob, HOUR))
        .await
        .expect("save");
    assert!(
        listed(alice).await.is_empty(),
        "a save moved the session to another user"
    );
    assert_eq!(listed(bob).await, BTreeSet::from([id.clone()]));

    if store.capabilities().patch {
        let mut patch = Patch::new(sample_record(HOUR).cookie().clone());
        patch.set(META_KEY, json!({"user": alice}));
        assert!(store.patch(&id, &patch).await.expect("patch"));
        assert_eq!(
            listed(alice).await,
            BTreeSet::from([id.clone()]),
            "logged in by patch"
        );
        assert!(
            listed(bob).await.is_empty(),
            "a patch moved the session to another user"
        );

        let mut patch = Patch::new(sample_record(HOUR).cookie().clone());
        patch.remove(META_KEY);
        assert!(store.patch(&id, &patch).await.expect("patch"));
        assert!(listed(alice).await.is_empty(), "logged out by patch");

        let mut patch = Patch::new(sample_record(HOUR).cookie().clone());
        patch.set(META_KEY, json!({"user": alice}));
        assert!(store.patch(&id, &patch).await.expect("patch"));
        let mut patch = Patch::new(sample_record(HOUR).cookie().clone());
        patch.set("unrelated", json!(1));
        assert!(store.patch(&id, &patch).await.expect("patch"));
        assert_eq!(
            listed(alice).await,
            BTreeSet::from([id.clone()]),
            "a patch of other keys keeps the user"
        );
    } else {
        store
            .save(&id, &record_of_user(alice, HOUR))
            .await
            .expect("save");
    }

    store.destroy(&id).await.expect("destroy");
    assert!(
        listed(alice).await.is_empty(),
        "a destroyed session is not listed"
    );
    store.save(&id, &sample_record(HOUR)).await.expect("save");
    assert!(
        listed(alice).await.is_empty(),
        "an anonymous session under a reused id is not the old user's"
    );
}

/// With the user index capability: a touch that extends a session keeps it listed past its first
/// expiry (the index lives as long as the sessions in it), and many sessions of one user list.
pub async fn user_index_lives_as_long_as_its_sessions<F: Fixture>(_: &F, store: F::Store) {
    if !store.capabilities().user_index {
        return;
    }
    let user = "carol";
    let touched = SessionId::generate();
    store
        .save(&touched, &record_of_user(user, SHORT))
        .await
        .expect("save");
    let longer = record_of_user(user, HOUR);
    let mut touch = Record::new(longer.cookie().clone());
    touch
        .data_mut()
        .insert(META_KEY.into(), longer.data()[META_KEY].clone());
    store.touch(&touched, &touch).await.expect("touch");
    let mut many: BTreeSet<SessionId> = BTreeSet::from([touched.clone()]);
    for _ in 0..40 {
        let id = SessionId::generate();
        store
            .save(&id, &record_of_user(user, HOUR))
            .await
            .expect("save");
        many.insert(id);
    }
    wait_past_short_expiry().await;
    let sessions = store.user_sessions(user).await.expect("user_sessions");
    assert_eq!(
        ids_of(&sessions),
        many,
        "every live session of the user, including the touched one"
    );
    let (_, record) = sessions
        .iter()
        .find(|(id, _)| *id == touched)
        .expect("the touched session");
    assert_eq!(
        record.data(),
        longer.data(),
        "a touch keeps the data as it was saved"
    );
}
