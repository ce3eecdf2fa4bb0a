//! MongoDB-specific behaviour, beyond the conformance suite: connect-mongo's document layout in
//! both forms, documents written by connect-mongo, expiry removal (TTL index, interval, disabled),
//! `touch_after`, patches in place and their round trips, the user index (the `user` field and its
//! sparse index), the deadline cap on `expires`, and bounded waits when the server is unreachable
//! or stalled.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sesame_core::serde_json::json;
use sesame_core::{CookieState, Error, META_KEY, Patch, Record, SessionId, SessionStore, Swap};
use sesame_mongodb::mongodb::bson::{Bson, DateTime, Document, doc};
use sesame_mongodb::mongodb::event::EventHandler;
use sesame_mongodb::mongodb::event::command::CommandEvent;
use sesame_mongodb::mongodb::options::ClientOptions;
use sesame_mongodb::mongodb::{Client, Collection};
use sesame_mongodb::{AutoRemove, DEFAULT_TTL, MongoStore, USER_FIELD};
use tokio::net::{TcpListener, TcpStream};

const HOUR: Duration = Duration::from_secs(3600);

fn record(ttl: Duration) -> Record {
    let mut cookie = CookieState::default();
    cookie.set_max_age(sesame_core::now(), Some(ttl));
    let mut record = Record::new(cookie);
    record.data_mut().insert("views".into(), json!(3));
    record
        .data_mut()
        .insert("user".into(), json!({"name": "ada", "roles": ["admin"]}));
    record
}

fn millis_from_now(millis: i64) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + millis)
}

#[tokio::test]
async fn stringified_document_has_connect_mongos_layout() {
    let Some(store) = common::connect(common::builder()).await else {
        return;
    };
    let id = SessionId::generate();
    let record = record(HOUR);
    store.save(&id, &record).await.unwrap();

    let document = common::raw(&store, id.as_str()).await.unwrap();
    assert_eq!(document.get_str("_id").unwrap(), id.as_str());
    assert_eq!(
        document.get("expires"),
        Some(&common::bson_date(record.cookie().expires.unwrap())),
        "`expires` is a BSON date equal to the cookie's expiry"
    );
    let session = document.get_str("session").unwrap();
    assert_eq!(
        session,
        record.to_json().unwrap(),
        "`session` is express-session's JSON"
    );
    assert!(
        !document.contains_key("lastModified"),
        "no lastModified without touch_after"
    );
    let keys: Vec<&str> = document.keys().map(String::as_str).collect();
    assert_eq!(keys, ["_id", "session", "expires"]);
}

#[tokio::test]
async fn sub_document_has_connect_mongos_layout() {
    let Some(store) = common::connect(common::builder().stringify(false)).await else {
        return;
    };
    let id = SessionId::generate();
    let record = record(HOUR);
    store.save(&id, &record).await.unwrap();

    let document = common::raw(&store, id.as_str()).await.unwrap();
    let expires = common::bson_date(record.cookie().expires.unwrap());
    assert_eq!(document.get_str("_id").unwrap(), id.as_str());
    assert_eq!(document.get("expires"), Some(&expires));
    let session = document.get_document("session").unwrap();
    assert_eq!(session.get("views"), Some(&Bson::Int32(3)));
    assert_eq!(
        session.get_document("user").unwrap(),
        &doc! {"name": "ada", "roles": ["admin"]}
    );
    let cookie = session.get_document("cookie").unwrap();
    assert_eq!(
        cookie.get("expires"),
        Some(&expires),
        "cookie.expires is a Date, as connect-mongo stores cookie.toJSON()"
    );
    assert_eq!(cookie.get("originalMaxAge"), Some(&Bson::Int32(3_600_000)));
    assert!(cookie.get_bool("httpOnly").unwrap());
    assert_eq!(cookie.get_str("path").unwrap(), "/");
}

#[tokio::test]
async fn browser_session_cookie_expires_after_the_default_ttl() {
    let Some(store) = common::connect(common::builder()).await else {
        return;
    };
    let id = SessionId::generate();
    let before = sesame_core::now();
    store.save(&id, &Record::default()).await.unwrap();
    let after = sesame_core::now();
    let document = common::raw(&store, id.as_str()).await.unwrap();
    let expires = *document.get_datetime("expires").unwrap();
    let bound = |at: sesame_core::time::OffsetDateTime| match common::bson_date(at + DEFAULT_TTL) {
        Bson::DateTime(at) => at,
        _ => unreachable!(),
    };
    assert!(
        bound(before) <= expires && expires <= bound(after),
        "14 days, connect-mongo's ttl: {expires}"
    );
}

#[tokio::test]
async fn reads_documents_written_by_connect_mongo() {
    let Some(store) = common::connect(common::builder()).await else {
        return;
    };
    let collection = store.collection();

    // connect-mongo 5 with `stringify: true` (the default): `JSON.stringify(session)`, the cookie
    // first, as express-session builds the session object.
    let stringified = SessionId::generate();
    collection
        .insert_one(doc! {
            "_id": stringified.as_str(),
            "expires": DateTime::parse_rfc3339_str("2999-01-02T03:04:05.678Z").unwrap(),
            "session": r#"{"cookie":{"originalMaxAge":86400000,"expires":"2999-01-02T03:04:05.678Z","secure":false,"httpOnly":true,"path":"/","sameSite":"lax"},"views":3,"flash":{"info":["saved"]}}"#,
        })
        .await
        .unwrap();
    let loaded = store.load(&stringified).await.unwrap().unwrap();
    assert_eq!(loaded.data().get("views"), Some(&json!(3)));
    assert_eq!(
        loaded.data().get("flash"),
        Some(&json!({"info": ["saved"]}))
    );
    assert_eq!(loaded.cookie().original_max_age, Some(86_400_000));
    assert_eq!(
        loaded.cookie().expires.map(|at| at.unix_timestamp()),
        Some(32_472_241_445)
    );

    // `stringify: false`: the session object as the Node driver writes it, numbers as doubles, the
    // cookie's expiry as a Date, plus `lastModified` (touchAfter).
    let sub_document = SessionId::generate();
    collection
        .insert_one(doc! {
            "_id": sub_document.as_str(),
            "expires": DateTime::parse_rfc3339_str("2999-01-02T03:04:05.678Z").unwrap(),
            "lastModified": DateTime::now(),
            "session": {
                "cookie": {
                    "originalMaxAge": 86_400_000.0,
                    "expires": DateTime::parse_rfc3339_str("2999-01-02T03:04:05.678Z").unwrap(),
                    "secure": false,
                    "httpOnly": true,
                    "path": "/",
                },
                "views": 3.0,
                "ratio": 0.5,
            },
        })
        .await
        .unwrap();
    let loaded = store.load(&sub_document).await.unwrap().unwrap();
    assert_eq!(loaded.data().get("views"), Some(&json!(3)));
    assert_eq!(loaded.data().get("ratio"), Some(&json!(0.5)));
    assert_eq!(loaded.cookie().original_max_age, Some(86_400_000));
    assert_eq!(
        loaded.cookie().expires.map(|at| at.unix_timestamp()),
        Some(32_472_241_445)
    );

    // connect-mongo's read filter: a document without `expires` never expires, one past it is
    // never returned.
    let no_expiry = SessionId::generate();
    let past = SessionId::generate();
    collection
        .insert_many([
            doc! {"_id": no_expiry.as_str(), "session": record(HOUR).to_json().unwrap()},
            doc! {
                "_id": past.as_str(),
                "expires": millis_from_now(-1000),
                "session": record(HOUR).to_json().unwrap(),
            },
        ])
        .await
        .unwrap();
    assert!(store.load(&no_expiry).await.unwrap().is_some());
    assert!(store.load(&past).await.unwrap().is_none());
    let ids = store.ids().await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&past));
    assert_eq!(store.len().await.unwrap(), 3);
}

#[tokio::test]
async fn create_takes_over_an_expired_document_not_yet_removed() {
    let Some(store) = common::connect(common::builder().auto_remove(AutoRemove::Disabled)).await
    else {
        return;
    };
    let id = SessionId::generate();
    store
        .collection()
        .insert_one(doc! {"_id": id.as_str(), "expires": millis_from_now(-1000), "session": "{}"})
        .await
        .unwrap();
    let created = record(HOUR);
    store.create(&id, &created).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(created));

    // A document without `expires` is live for connect-mongo: never overwritten.
    let forever = SessionId::generate();
    store
        .collection()
        .insert_one(doc! {"_id": forever.as_str(), "session": record(HOUR).to_json().unwrap()})
        .await
        .unwrap();
    assert!(matches!(
        store.create(&forever, &record(HOUR)).await,
        Err(Error::AlreadyExists { .. })
    ));
}

/// Asks the server to run its TTL monitor every second. `ttlMonitorSleepSecs` is MongoDB's
/// documented (if test-oriented) server parameter; without it mongod sweeps every 60 seconds.
/// SecantusDB refuses the parameter: `.ci/mongodb.sh` starts it with a 1 s sweep instead.
async fn speed_up_ttl_monitor(collection: &Collection<Document>) {
    let admin = collection.client().database("admin");
    if let Err(error) = admin
        .run_command(doc! {"setParameter": 1, "ttlMonitorSleepSecs": 1})
        .await
    {
        eprintln!(
            "could not set ttlMonitorSleepSecs ({error}); waiting for the server's own sweep"
        );
    }
}

/// Long enough for mongod's default TTL monitor period (60 s) plus slack; with a 1 s monitor the
/// wait ends within a second or two.
const TTL_SWEEP_LIMIT: Duration = Duration::from_secs(75);

#[tokio::test]
async fn native_auto_remove_creates_a_ttl_index_the_server_sweeps() {
    let Some(store) = common::connect(common::builder()).await else {
        return;
    };
    let collection = store.collection();
    let indexes: Vec<_> = {
        use futures_util::TryStreamExt;
        collection
            .list_indexes()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    let ttl = indexes
        .iter()
        .find(|index| index.keys == doc! {"expires": 1})
        .expect("an index on {expires: 1}");
    assert_eq!(
        ttl.options
            .as_ref()
            .and_then(|options| options.expire_after),
        Some(Duration::ZERO),
        "expireAfterSeconds: 0"
    );

    speed_up_ttl_monitor(collection).await;
    let id = SessionId::generate();
    collection
        .insert_one(doc! {"_id": id.as_str(), "expires": millis_from_now(-1000), "session": "{}"})
        .await
        .unwrap();
    let removed = common::eventually(TTL_SWEEP_LIMIT, || async {
        common::raw(&store, id.as_str()).await.is_none()
    })
    .await;
    assert!(removed, "the TTL monitor removed the expired document");
}

async fn has_ttl_index(collection: &Collection<Document>) -> bool {
    has_index(collection, doc! {"expires": 1}).await
}

async fn has_user_index(collection: &Collection<Document>) -> bool {
    has_index(collection, doc! {"user": 1}).await
}

async fn has_index(collection: &Collection<Document>, keys: Document) -> bool {
    use futures_util::TryStreamExt;
    let indexes: Vec<_> = collection
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    indexes.iter().any(|index| index.keys == keys)
}

#[tokio::test]
async fn interval_auto_remove_deletes_expired_documents_until_dropped() {
    let Some(store) = common::connect(
        common::builder().auto_remove(AutoRemove::Interval(Duration::from_millis(200))),
    )
    .await
    else {
        return;
    };
    let collection = store.collection().clone();
    // The collection may not exist yet, so listing its indexes could fail: make it exist.
    let live = SessionId::generate();
    store.save(&live, &record(HOUR)).await.unwrap();
    assert!(
        !has_ttl_index(&collection).await,
        "no TTL index in interval mode"
    );
    assert!(
        !has_user_index(&collection).await,
        "nor a user index: this mode creates no index"
    );

    let expired = SessionId::generate();
    collection
        .insert_one(doc! {"_id": expired.as_str(), "expires": millis_from_now(-1), "session": "{}"})
        .await
        .unwrap();
    let removed = common::eventually(Duration::from_secs(5), || async {
        common::raw(&store, expired.as_str()).await.is_none()
    })
    .await;
    assert!(removed, "the interval task removed the expired document");
    assert!(
        common::raw(&store, live.as_str()).await.is_some(),
        "and only it"
    );

    drop(store);
    collection
        .insert_one(doc! {"_id": expired.as_str(), "expires": millis_from_now(-1), "session": "{}"})
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        collection
            .find_one(doc! {"_id": expired.as_str()})
            .await
            .unwrap()
            .is_some(),
        "the interval task ended with the store"
    );
}

#[tokio::test]
async fn disabled_auto_remove_leaves_expired_documents_but_never_returns_them() {
    let Some(store) = common::connect(common::builder().auto_remove(AutoRemove::Disabled)).await
    else {
        return;
    };
    let id = SessionId::generate();
    store
        .collection()
        .insert_one(doc! {"_id": id.as_str(), "expires": millis_from_now(-1), "session": "{}"})
        .await
        .unwrap();
    assert!(!has_ttl_index(store.collection()).await);
    assert!(!has_user_index(store.collection()).await);
    assert!(store.load(&id).await.unwrap().is_none());
    assert_eq!(store.delete_expired().await.unwrap(), 1);
    assert!(common::raw(&store, id.as_str()).await.is_none());
}

#[tokio::test]
async fn touch_after_skips_touches_soon_after_a_write() {
    let Some(store) = common::connect(common::builder().touch_after(HOUR)).await else {
        return;
    };
    let id = SessionId::generate();
    let first = record(Duration::from_secs(60));
    store.save(&id, &first).await.unwrap();
    let written = common::raw(&store, id.as_str()).await.unwrap();
    let last_modified = *written.get_datetime("lastModified").unwrap();
    assert!(
        (DateTime::now().timestamp_millis() - last_modified.timestamp_millis()).abs() < 60_000,
        "a write records lastModified"
    );

    let later = record(2 * HOUR);
    store.touch(&id, &later).await.unwrap();
    let after_touch = common::raw(&store, id.as_str()).await.unwrap();
    assert_eq!(
        after_touch.get("expires"),
        written.get("expires"),
        "a touch within touch_after of the last write is skipped"
    );

    // As if the last write were an hour and a minute ago.
    let long_ago = millis_from_now(-(HOUR.as_millis() as i64 + 60_000));
    store
        .collection()
        .update_one(
            doc! {"_id": id.as_str()},
            doc! {"$set": {"lastModified": long_ago}},
        )
        .await
        .unwrap();
    store.touch(&id, &later).await.unwrap();
    let touched = common::raw(&store, id.as_str()).await.unwrap();
    assert_eq!(
        touched.get("expires"),
        Some(&common::bson_date(later.cookie().expires.unwrap())),
        "a touch after touch_after moves the expiry"
    );
    assert!(*touched.get_datetime("lastModified").unwrap() > long_ago);
    assert_eq!(
        store.load(&id).await.unwrap().unwrap().data(),
        first.data(),
        "touch writes no data"
    );
}

#[tokio::test]
async fn patch_and_swap_of_keys_mongodb_cannot_address() {
    for stringify in [false, true] {
        let Some(store) = common::connect(common::builder().stringify(stringify)).await else {
            return;
        };
        let id = SessionId::generate();
        store.save(&id, &record(HOUR)).await.unwrap();
        let mut patch = Patch::new(record(HOUR).cookie().clone());
        patch.set("a.b", json!(1));
        patch.set("$where", json!({"$gt": 2}));
        patch.set("", json!("empty"));
        patch.set("plain", json!(true));
        patch.remove("views");
        assert!(store.patch(&id, &patch).await.unwrap());
        let loaded = store.load(&id).await.unwrap().unwrap();
        assert_eq!(loaded.data().get("a.b"), Some(&json!(1)), "{stringify}");
        assert_eq!(loaded.data().get("$where"), Some(&json!({"$gt": 2})));
        assert_eq!(loaded.data().get(""), Some(&json!("empty")));
        assert_eq!(loaded.data().get("plain"), Some(&json!(true)));
        assert_eq!(loaded.data().get("views"), None);
        assert_eq!(
            store
                .compare_and_swap(&id, "a.b", Some(&json!(1)), Some(&json!(2)))
                .await
                .unwrap(),
            Swap::Done
        );
        assert_eq!(
            store
                .compare_and_swap(&id, "$where", Some(&json!({"$gt": 2})), None)
                .await
                .unwrap(),
            Swap::Done
        );
        let loaded = store.load(&id).await.unwrap().unwrap();
        assert_eq!(loaded.data().get("a.b"), Some(&json!(2)));
        assert_eq!(loaded.data().get("$where"), None);
        assert_eq!(loaded.data().get("user"), record(HOUR).data().get("user"));
    }
}

#[tokio::test]
async fn sub_document_store_patches_a_stringified_session() {
    // A collection written with stringify on, then read by a store with it off (or the other way):
    // a patch converts the session to the store's form and keeps its data.
    let Some(store) = common::connect(common::builder().stringify(false)).await else {
        return;
    };
    let id = SessionId::generate();
    store
        .collection()
        .insert_one(doc! {
            "_id": id.as_str(),
            "expires": millis_from_now(3_600_000),
            "session": record(HOUR).to_json().unwrap(),
        })
        .await
        .unwrap();
    let mut patch = Patch::new(record(HOUR).cookie().clone());
    patch.set("added", json!(1));
    assert!(store.patch(&id, &patch).await.unwrap());
    assert_eq!(
        store
            .compare_and_swap(&id, "views", Some(&json!(3)), Some(&json!(4)))
            .await
            .unwrap(),
        Swap::Done
    );
    let document = common::raw(&store, id.as_str()).await.unwrap();
    let session = document.get_document("session").unwrap();
    assert_eq!(session.get("added"), Some(&Bson::Int32(1)));
    assert_eq!(session.get("views"), Some(&Bson::Int32(4)));
    assert!(session.contains_key("user"));
}

/// `record` logged in to `user` (the meta object under [`META_KEY`]).
fn with_user(mut record: Record, user: &str) -> Record {
    record
        .data_mut()
        .insert(META_KEY.into(), json!({"user": user, "login": 1}));
    record
}

/// The top-level `user` field of the document of `id`.
async fn user_field(store: &MongoStore, id: &SessionId) -> Option<String> {
    let document = common::raw(store, id.as_str()).await.unwrap();
    document.get_str(USER_FIELD).ok().map(str::to_owned)
}

#[tokio::test]
async fn user_index_is_a_top_level_field_under_a_sparse_index() {
    for stringify in [true, false] {
        let Some(store) = common::connect(common::builder().stringify(stringify)).await else {
            return;
        };
        assert!(
            store.capabilities().user_index,
            "the capability is declared"
        );
        assert_eq!(USER_FIELD, "user");

        // The index: `{user: 1}`, sparse, made by `init` alongside the TTL index.
        let indexes: Vec<_> = {
            use futures_util::TryStreamExt;
            store
                .collection()
                .list_indexes()
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap()
        };
        let index = indexes
            .iter()
            .find(|index| index.keys == doc! {"user": 1})
            .expect("an index on {user: 1}");
        assert_eq!(
            index.options.as_ref().and_then(|options| options.sparse),
            Some(true),
            "sparse: anonymous sessions stay out of it"
        );

        // save: the field follows the record, after connect-mongo's fields.
        let id = SessionId::generate();
        store.save(&id, &record(HOUR)).await.unwrap();
        assert_eq!(user_field(&store, &id).await, None, "anonymous: no field");
        store
            .save(&id, &with_user(record(HOUR), "ada"))
            .await
            .unwrap();
        let document = common::raw(&store, id.as_str()).await.unwrap();
        let keys: Vec<&str> = document.keys().map(String::as_str).collect();
        assert_eq!(keys, ["_id", "session", "expires", "user"], "{stringify}");
        assert_eq!(document.get_str("user").unwrap(), "ada");
        store.save(&id, &record(HOUR)).await.unwrap();
        assert_eq!(user_field(&store, &id).await, None, "a save without a user");

        // create.
        let created = SessionId::generate();
        store
            .create(&created, &with_user(record(HOUR), "ada"))
            .await
            .unwrap();
        assert_eq!(user_field(&store, &created).await.as_deref(), Some("ada"));

        // patch: `$set` with the meta object, `$unset` when it goes, untouched otherwise.
        let patch_with = |change: &dyn Fn(&mut Patch)| {
            let mut patch = Patch::new(record(HOUR).cookie().clone());
            change(&mut patch);
            patch
        };
        let login = patch_with(&|patch| patch.set(META_KEY, json!({"user": "bob"})));
        assert!(store.patch(&id, &login).await.unwrap());
        assert_eq!(user_field(&store, &id).await.as_deref(), Some("bob"));
        let other = patch_with(&|patch| patch.set("cart", json!([1])));
        assert!(store.patch(&id, &other).await.unwrap());
        assert_eq!(user_field(&store, &id).await.as_deref(), Some("bob"));
        let anonymous_meta = patch_with(&|patch| patch.set(META_KEY, json!({"created": 1})));
        assert!(store.patch(&id, &anonymous_meta).await.unwrap());
        assert_eq!(user_field(&store, &id).await, None, "meta without a user");
        assert!(store.patch(&id, &login).await.unwrap());
        let logout = patch_with(&|patch| patch.remove(META_KEY));
        assert!(store.patch(&id, &logout).await.unwrap());
        assert_eq!(user_field(&store, &id).await, None, "meta removed");

        // compare-and-swap of the meta object moves the field too.
        let meta = json!({"user": "cy"});
        assert_eq!(
            store
                .compare_and_swap(&id, META_KEY, None, Some(&meta))
                .await
                .unwrap(),
            Swap::Done
        );
        assert_eq!(user_field(&store, &id).await.as_deref(), Some("cy"));
        assert_eq!(
            store
                .compare_and_swap(&id, META_KEY, Some(&meta), None)
                .await
                .unwrap(),
            Swap::Done
        );
        assert_eq!(user_field(&store, &id).await, None);

        // touch leaves the field alone, whatever meta object its record carries.
        assert!(store.patch(&id, &login).await.unwrap());
        store
            .touch(&id, &with_user(record(2 * HOUR), "mallory"))
            .await
            .unwrap();
        assert_eq!(user_field(&store, &id).await.as_deref(), Some("bob"));
        let listed = store.user_sessions("bob").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, id);
        assert_eq!(listed[0].1.user(), Some("bob"));
        assert!(store.user_sessions("mallory").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn user_sessions_filters_and_removes_stale_fields() {
    for stringify in [true, false] {
        let Some(store) = common::connect(common::builder().stringify(stringify)).await else {
            return;
        };
        let collection = store.collection();
        let kept = SessionId::generate();
        store
            .save(&kept, &with_user(record(HOUR), "ada"))
            .await
            .unwrap();
        // An Express app logs the user out of a session and into another as someone else:
        // connect-mongo's `set` is a `$set` of `session` and `expires`, so `user` stays, stale.
        let logged_out = SessionId::generate();
        let switched = SessionId::generate();
        for id in [&logged_out, &switched] {
            store
                .save(id, &with_user(record(HOUR), "ada"))
                .await
                .unwrap();
        }
        let rewrite = async |id: &SessionId, record: Record| {
            let session = if stringify {
                Bson::String(record.to_json().unwrap())
            } else {
                let value = sesame_core::serde_json::to_value(record.data()).unwrap();
                Bson::Document(
                    sesame_mongodb::mongodb::bson::to_document(&value)
                        .map(|mut document| {
                            document.insert(
                                "cookie",
                                sesame_mongodb::mongodb::bson::to_bson(record.cookie()).unwrap(),
                            );
                            document
                        })
                        .unwrap(),
                )
            };
            collection
                .update_one(
                    doc! {"_id": id.as_str()},
                    doc! {"$set": {"session": session, "expires": millis_from_now(3_600_000)}},
                )
                .await
                .unwrap();
        };
        rewrite(&logged_out, record(HOUR)).await;
        rewrite(&switched, with_user(record(HOUR), "bob")).await;
        assert_eq!(user_field(&store, &switched).await.as_deref(), Some("ada"));

        let listed = store.user_sessions("ada").await.unwrap();
        let ids: Vec<&SessionId> = listed.iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids,
            [&kept],
            "only the session still logged in to ada ({stringify})"
        );
        assert_eq!(
            user_field(&store, &logged_out).await,
            None,
            "the stale field is removed"
        );
        assert_eq!(user_field(&store, &switched).await, None);
        assert_eq!(user_field(&store, &kept).await.as_deref(), Some("ada"));
        assert!(
            store.user_sessions("bob").await.unwrap().is_empty(),
            "a login by the Express app is not indexed (it does not write the field)"
        );

        // A corrupt document under the user is skipped, not an error.
        let corrupt = SessionId::generate();
        collection
            .insert_one(doc! {
                "_id": corrupt.as_str(),
                "expires": millis_from_now(3_600_000),
                "session": "{not json",
                "user": "ada",
            })
            .await
            .unwrap();
        assert_eq!(store.user_sessions("ada").await.unwrap().len(), 1);
        // An expired document under the user is not listed, even before MongoDB removes it.
        collection
            .insert_one(doc! {
                "_id": SessionId::generate().as_str(),
                "expires": millis_from_now(-1000),
                "session": with_user(record(HOUR), "ada").to_json().unwrap(),
                "user": "ada",
            })
            .await
            .unwrap();
        assert_eq!(store.user_sessions("ada").await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn deadline_caps_the_expires_field() {
    let Some(store) = common::connect(common::builder()).await else {
        return;
    };
    let now = sesame_core::now();
    let deadline = now + Duration::from_secs(600);
    for expires in [Some(now + HOUR), None] {
        let mut record = record(HOUR);
        record.cookie_mut().expires = expires;
        record.cookie_mut().deadline = Some(deadline);
        let id = SessionId::generate();
        store.save(&id, &record).await.unwrap();
        let document = common::raw(&store, id.as_str()).await.unwrap();
        assert_eq!(
            document.get("expires"),
            Some(&common::bson_date(deadline)),
            "{expires:?}"
        );
        let session = document.get_str("session").unwrap();
        assert!(
            !session.contains("deadline"),
            "the deadline is not part of the record"
        );
    }
    // A record whose deadline has passed is not written: its document is deleted.
    let id = SessionId::generate();
    store.save(&id, &record(HOUR)).await.unwrap();
    let mut past = record(HOUR);
    past.cookie_mut().deadline = Some(now - Duration::from_secs(1));
    store.save(&id, &past).await.unwrap();
    assert!(common::raw(&store, id.as_str()).await.is_none());
}

/// A store whose client counts the commands it sends (`hello` and the like excluded).
async fn counting_store(stringify: bool) -> Option<(MongoStore, Arc<Mutex<Vec<String>>>)> {
    let commands = Arc::new(Mutex::new(Vec::new()));
    let mut options = ClientOptions::parse(common::url_with_short_timeouts())
        .await
        .ok()?;
    let seen = Arc::clone(&commands);
    options.command_event_handler = Some(EventHandler::callback(move |event: CommandEvent| {
        if let CommandEvent::Started(started) = event {
            seen.lock().unwrap().push(started.command_name);
        }
    }));
    let client = Client::with_options(options).ok()?;
    let store = common::builder()
        .stringify(stringify)
        .build(client.database(common::DATABASE));
    match store.init().await {
        Ok(()) => Some((store, commands)),
        Err(error) => sesame_conformance::backend_missing("MongoDB", &common::with_sources(&error)),
    }
}

#[tokio::test]
async fn round_trips_per_operation() {
    for (stringify, patch_trips, swap_trips) in [(false, 1, 1), (true, 2, 2)] {
        let Some((store, commands)) = counting_store(stringify).await else {
            return;
        };
        let id = SessionId::generate();
        store.save(&id, &record(HOUR)).await.unwrap();

        let count = |what: &str, expected: usize| {
            let sent: Vec<String> = commands.lock().unwrap().drain(..).collect();
            assert_eq!(
                sent.len(),
                expected,
                "{what} (stringify {stringify}): {sent:?}"
            );
        };
        count("init (the TTL and user indexes) and save", 3);
        store.load(&id).await.unwrap();
        count("load", 1);
        let mut patch = Patch::new(record(HOUR).cookie().clone());
        patch.set("cart", json!(["book"]));
        patch.remove("views");
        assert!(store.patch(&id, &patch).await.unwrap());
        count("patch", patch_trips);
        assert_eq!(
            store
                .compare_and_swap(&id, "cart", Some(&json!(["book"])), Some(&json!([])))
                .await
                .unwrap(),
            Swap::Done
        );
        count("compare_and_swap", swap_trips);
        store.touch(&id, &record(HOUR)).await.unwrap();
        count("touch", 1);
        store
            .create(&SessionId::generate(), &record(HOUR))
            .await
            .unwrap();
        count("create", 1);

        // The user index rides on the same writes: logging in or out costs nothing more.
        let mut login = Patch::new(record(HOUR).cookie().clone());
        login.set(META_KEY, json!({"user": "ada"}));
        assert!(store.patch(&id, &login).await.unwrap());
        count("patch that logs in", patch_trips);
        store
            .save(&id, &with_user(record(HOUR), "ada"))
            .await
            .unwrap();
        count("save with a user", 1);
        store
            .touch(&id, &with_user(record(HOUR), "ada"))
            .await
            .unwrap();
        count("touch with a user", 1);
        assert_eq!(store.user_sessions("ada").await.unwrap().len(), 1);
        count("user_sessions", 1);
        let mut logout = Patch::new(record(HOUR).cookie().clone());
        logout.remove(META_KEY);
        assert!(store.patch(&id, &logout).await.unwrap());
        count("patch that logs out", patch_trips);
        store.destroy(&id).await.unwrap();
        count("destroy", 1);
    }
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn unreachable_server_is_an_error_within_the_bounds() {
    let url = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        closed_port().await
    );

    // The defaults: 3 s of server selection, within the 5 s bound per call.
    let store = MongoStore::connect(&url).await.unwrap();
    let started = Instant::now();
    let error = store.load(&SessionId::generate()).await.unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_unavailable(), "{error:?}");
    eprintln!(
        "defaults: {} after {waited:?}",
        common::with_sources(&error)
    );
    assert!(waited < Duration::from_secs(6), "waited {waited:?}");

    // Configured shorter.
    let store = MongoStore::builder()
        .server_selection_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(1))
        .connect(&url)
        .await
        .unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let error = store
            .save(&SessionId::generate(), &record(HOUR))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
        assert!(
            std::error::Error::source(&error)
                .is_some_and(|source| source.is::<sesame_mongodb::mongodb::error::Error>()),
            "the driver's error is kept as the source"
        );
        eprintln!("configured: failed after {waited:?}");
        assert!(waited < Duration::from_millis(1500), "waited {waited:?}");
    }
}

#[tokio::test]
async fn stalled_server_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let store = MongoStore::builder()
        .timeout(Duration::from_millis(800))
        .connect(&format!(
            "mongodb://127.0.0.1:{port}/?directConnection=true"
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let error = store.load(&SessionId::generate()).await.unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_unavailable(), "{error:?}");
    eprintln!("stalled: {error} after {waited:?}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    held.abort();
}

/// Forwards every connection on `listener` to `upstream`.
async fn proxy(listener: TcpListener, upstream: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test]
async fn recovers_when_the_server_comes_back() {
    // The real server's address, reached through a proxy that is not there at first.
    let Some(reference) = common::connect(common::builder()).await else {
        return;
    };
    drop(reference);
    let options = ClientOptions::parse(common::url()).await.unwrap();
    let upstream = options.hosts[0].to_string();

    let port = closed_port().await;
    let store = MongoStore::builder()
        .collection(sesame_conformance::unique_name("sessions_"))
        .server_selection_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(1))
        .connect(&format!(
            "mongodb://127.0.0.1:{port}/sesame_tests?directConnection=true"
        ))
        .await
        .unwrap();
    let id = SessionId::generate();
    assert!(
        store
            .save(&id, &record(HOUR))
            .await
            .unwrap_err()
            .is_unavailable()
    );

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let forwarding = tokio::spawn(proxy(listener, upstream));
    let recovered = common::eventually(Duration::from_secs(10), || async {
        store.save(&id, &record(HOUR)).await.is_ok()
    })
    .await;
    assert!(
        recovered,
        "the same store works once the server is reachable"
    );
    assert!(store.load(&id).await.unwrap().is_some());
    forwarding.abort();
}
