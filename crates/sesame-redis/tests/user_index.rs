//! The user index as stored in Redis: one sorted set per user, `<user index prefix><user id>`,
//! outside the session prefix, scored by expiry, living as long as its last session; kept up by
//! writes at no extra round trip on one Redis; pruned by listings; deleted by `clear` with nothing
//! else; the same on a Redis Cluster.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use sesame_core::serde_json::json;
use sesame_core::{CookieState, META_KEY, Patch, Record, SessionId, SessionStore};
use sesame_redis::redis::aio::ConnectionLike;
use sesame_redis::{RedisStore, redis};

use common::{PrivateRedis, cluster_store, cmd, raw, raw_cluster, redis_url, single_store};

const HOUR: Duration = Duration::from_secs(3600);

/// The grace the index keeps past a member's expiry, as documented.
const GRACE_MS: i64 = 60_000;

fn now_ms() -> i64 {
    sesame_core::unix_millis(sesame_core::now())
}

/// A record living `ttl` (a browser-session cookie when `None`), logged in to `user` if any.
fn record(ttl: Option<Duration>, user: Option<&str>) -> Record {
    let mut cookie = CookieState::default();
    cookie.set_max_age(sesame_core::now(), ttl);
    let mut record = Record::new(cookie);
    record.data_mut().insert("n".into(), json!(1));
    if let Some(user) = user {
        record
            .data_mut()
            .insert(META_KEY.into(), json!({"user": user, "login": 1}));
    }
    record
}

/// The touch record the layer sends for a session of `user`: the cookie and the meta object.
fn touch_record(ttl: Duration, user: &str) -> Record {
    let full = record(Some(ttl), Some(user));
    let mut touch = Record::new(full.cookie().clone());
    touch
        .data_mut()
        .insert(META_KEY.into(), full.data()[META_KEY].clone());
    touch
}

/// The members of a sorted set with their scores.
async fn members(conn: &mut impl ConnectionLike, key: &str) -> Vec<(String, f64)> {
    cmd(
        conn,
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES"),
    )
    .await
}

fn ids_of(sessions: &[(SessionId, Record)]) -> BTreeSet<SessionId> {
    sessions.iter().map(|(id, _)| id.clone()).collect()
}

/// Asserts that `score` is an expiry `ttl` after a write made just now (milliseconds).
fn assert_expiry_in(score: f64, ttl: Duration) {
    let expected = now_ms() + i64::try_from(ttl.as_millis()).unwrap();
    #[allow(clippy::cast_possible_truncation)]
    let score = score as i64;
    assert!(
        (expected - 10_000..=expected).contains(&score),
        "score {score}, expected about {expected}"
    );
}

/// The capability is declared; the index is a sorted set at `<prefix without ':'>-user:<user>`,
/// outside `<prefix>*`, with the session ids scored by their expiry in milliseconds and a TTL of
/// the highest score plus the grace; the sessions keep connect-redis's format.
#[tokio::test]
async fn the_index_is_a_sorted_set_per_user_outside_the_prefix() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    assert!(store.capabilities().user_index);
    let prefix = store.prefix().to_owned();
    let index_prefix = format!("{}-user:", prefix.strip_suffix(':').unwrap());
    assert_eq!(store.user_index_prefix(), index_prefix);
    let key = store.user_index_key("alice");
    assert_eq!(key, format!("{index_prefix}alice"));
    assert!(!key.starts_with(&prefix), "outside SCAN MATCH <prefix>*");

    let mut conn = raw(&redis_url()).await;
    let hour = SessionId::generate();
    let alice_hour = record(Some(HOUR), Some("alice"));
    store.save(&hour, &alice_hour).await.unwrap();
    let two_hours = SessionId::generate();
    store
        .create(&two_hours, &record(Some(2 * HOUR), Some("alice")))
        .await
        .unwrap();
    let anonymous = SessionId::generate();
    store
        .save(&anonymous, &record(Some(HOUR), None))
        .await
        .unwrap();

    let kind: String = cmd(&mut conn, redis::cmd("TYPE").arg(&key)).await;
    assert_eq!(kind, "zset");
    let indexed = members(&mut conn, &key).await;
    assert_eq!(
        indexed
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        vec![hour.as_str(), two_hours.as_str()],
        "ordered by expiry"
    );
    assert_expiry_in(indexed[0].1, HOUR);
    assert_expiry_in(indexed[1].1, 2 * HOUR);
    let pttl: i64 = cmd(&mut conn, redis::cmd("PTTL").arg(&key)).await;
    let expected = 2 * 3_600_000 + GRACE_MS;
    assert!(
        (expected - 10_000..=expected).contains(&pttl),
        "the index outlives its last session by the grace: PTTL {pttl}"
    );

    // The session is stored exactly as before (connect-redis reads it), and listing sessions does
    // not see the index.
    let stored: String = cmd(&mut conn, redis::cmd("GET").arg(store.key(&hour))).await;
    assert_eq!(stored, alice_hour.to_json().unwrap());
    let ids: BTreeSet<SessionId> = store.ids().await.unwrap().into_iter().collect();
    assert_eq!(
        ids,
        BTreeSet::from([hour.clone(), two_hours.clone(), anonymous])
    );
    assert_eq!(store.all().await.unwrap().len(), 3);

    let listed = store.user_sessions("alice").await.unwrap();
    assert_eq!(ids_of(&listed), BTreeSet::from([hour, two_hours]));
    store.clear().await.unwrap();
    let exists: i64 = cmd(&mut conn, redis::cmd("EXISTS").arg(&key)).await;
    assert_eq!(exists, 0, "clear deletes the index");
}

/// A touch moves the member's score and the key's TTL with the session (down too, when the
/// layer's deadline shortens it); a patch that carries the meta object indexes the session, one
/// that does not still moves its score; stale members (destroyed, logged out, another user's)
/// stay until a listing, which removes them.
#[tokio::test]
async fn writes_keep_the_scores_and_listings_prune() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let key = store.user_index_key("bob");
    let id = SessionId::generate();
    store
        .save(&id, &record(Some(Duration::from_secs(60)), Some("bob")))
        .await
        .unwrap();
    assert_expiry_in(members(&mut conn, &key).await[0].1, Duration::from_secs(60));

    store.touch(&id, &touch_record(HOUR, "bob")).await.unwrap();
    assert_expiry_in(members(&mut conn, &key).await[0].1, HOUR);
    let mut short = touch_record(HOUR, "bob");
    short.cookie_mut().deadline = Some(sesame_core::now() + Duration::from_secs(120));
    store.touch(&id, &short).await.unwrap();
    assert_expiry_in(
        members(&mut conn, &key).await[0].1,
        Duration::from_secs(120),
    );
    let pttl: i64 = cmd(&mut conn, redis::cmd("PTTL").arg(&key)).await;
    assert!(
        pttl <= 120_000 + GRACE_MS,
        "the key follows its last session down: {pttl}"
    );

    // A patch of other keys on a logged-in session: the script tells the user, the score moves.
    let mut patch = Patch::new(record(Some(2 * HOUR), None).cookie().clone());
    patch.set("other", json!(true));
    assert!(store.patch(&id, &patch).await.unwrap());
    assert_expiry_in(members(&mut conn, &key).await[0].1, 2 * HOUR);

    // A login by patch indexes the session under the new user; the old entry stays until a
    // listing of the old user finds the session is not theirs.
    let mut login = Patch::new(record(Some(HOUR), None).cookie().clone());
    login.set(META_KEY, json!({"user": "carol"}));
    assert!(store.patch(&id, &login).await.unwrap());
    let carol = store.user_index_key("carol");
    assert_eq!(members(&mut conn, &carol).await.len(), 1);
    assert_eq!(members(&mut conn, &key).await.len(), 1, "lazily cleaned");
    assert!(store.user_sessions("bob").await.unwrap().is_empty());
    let exists: i64 = cmd(&mut conn, redis::cmd("EXISTS").arg(&key)).await;
    assert_eq!(exists, 0, "the listing pruned bob's last member");

    // Destroyed sessions are pruned by the next listing too; live ones stay.
    let other = SessionId::generate();
    store
        .save(&other, &record(Some(HOUR), Some("carol")))
        .await
        .unwrap();
    store.destroy(&id).await.unwrap();
    assert_eq!(members(&mut conn, &carol).await.len(), 2);
    assert_eq!(
        ids_of(&store.user_sessions("carol").await.unwrap()),
        BTreeSet::from([other.clone()])
    );
    let left: Vec<String> = members(&mut conn, &carol)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        left,
        vec![other.as_str().to_owned()],
        "the destroyed one pruned"
    );

    // A compare-and-swap of the meta object indexes the session with the TTL it keeps.
    let swapped = SessionId::generate();
    store
        .save(&swapped, &record(Some(HOUR), None))
        .await
        .unwrap();
    let swap = store
        .compare_and_swap(&swapped, META_KEY, None, Some(&json!({"user": "dave"})))
        .await
        .unwrap();
    assert_eq!(swap, sesame_core::Swap::Done);
    let dave = members(&mut conn, &store.user_index_key("dave")).await;
    assert_eq!(dave.len(), 1);
    assert_expiry_in(dave[0].1, HOUR);
    store.clear().await.unwrap();
}

/// Members that expired over the grace ago are dropped by the next index write, and a listing
/// returns no expired session even before that.
#[tokio::test]
async fn expired_members_are_dropped() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let key = store.user_index_key("erin");
    // A member of a session that expired long ago, as an old write would have left it.
    let old = SessionId::generate();
    cmd::<()>(
        &mut conn,
        redis::cmd("ZADD")
            .arg(&key)
            .arg(now_ms() - 2 * GRACE_MS)
            .arg(old.as_str()),
    )
    .await;
    let short = SessionId::generate();
    store
        .save(
            &short,
            &record(Some(Duration::from_millis(300)), Some("erin")),
        )
        .await
        .unwrap();
    let live = SessionId::generate();
    store
        .save(&live, &record(Some(HOUR), Some("erin")))
        .await
        .unwrap();
    let indexed: BTreeSet<String> = members(&mut conn, &key)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        indexed,
        BTreeSet::from([short.as_str().to_owned(), live.as_str().to_owned()]),
        "the write dropped the member expired over the grace ago"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ids_of(&store.user_sessions("erin").await.unwrap()),
        BTreeSet::from([live])
    );
    store.clear().await.unwrap();
}

/// `clear` deletes this store's index and nothing else: not another store's index, not a key of
/// another type under the user index prefix, not a sorted set under another prefix.
#[tokio::test]
async fn clear_deletes_the_index_and_nothing_else() {
    let base = common::test_prefix();
    let connect = |builder: sesame_redis::RedisStoreBuilder| async move {
        builder.connect(&redis_url()).await
    };
    let mine = match connect(RedisStore::builder().prefix(format!("{base}a:"))).await {
        Ok(store) => store,
        Err(error) => {
            sesame_conformance::backend_missing::<()>("Redis", &common::chain(&error));
            return;
        }
    };
    let sibling = connect(RedisStore::builder().prefix(format!("{base}b:")))
        .await
        .unwrap();
    // A store with its user index where the application wants it.
    let custom = connect(
        RedisStore::builder()
            .prefix(format!("{base}c:"))
            .user_index_prefix(format!("{base}idx:")),
    )
    .await
    .unwrap();
    assert_eq!(custom.user_index_key("u"), format!("{base}idx:u"));
    let mut conn = raw(&redis_url()).await;
    for store in [&mine, &sibling, &custom] {
        store
            .save(&SessionId::generate(), &record(Some(HOUR), Some("u")))
            .await
            .unwrap();
    }
    let custom_key = custom.user_index_key("u");
    let kind: String = cmd(&mut conn, redis::cmd("TYPE").arg(&custom_key)).await;
    assert_eq!(kind, "zset", "the custom prefix is used");
    let not_an_index = mine.user_index_key("string");
    cmd::<()>(&mut conn, redis::cmd("SET").arg(&not_an_index).arg("x")).await;
    let foreign_set = format!("{base}a");
    cmd::<()>(
        &mut conn,
        redis::cmd("ZADD").arg(&foreign_set).arg(1).arg("x"),
    )
    .await;

    mine.clear().await.unwrap();
    let exists = |key: String| {
        let mut conn = conn.clone();
        async move { cmd::<i64>(&mut conn, redis::cmd("EXISTS").arg(key)).await }
    };
    assert_eq!(exists(mine.user_index_key("u")).await, 0);
    assert_eq!(exists(sibling.user_index_key("u")).await, 1, "sibling kept");
    assert_eq!(exists(custom_key.clone()).await, 1, "custom kept");
    assert_eq!(exists(not_an_index.clone()).await, 1, "a string kept");
    assert_eq!(exists(foreign_set.clone()).await, 1, "other prefix kept");
    assert_eq!(sibling.user_sessions("u").await.unwrap().len(), 1);

    sibling.clear().await.unwrap();
    custom.clear().await.unwrap();
    assert_eq!(exists(custom_key).await, 0);
    cmd::<()>(
        &mut conn,
        redis::cmd("DEL").arg(&not_an_index).arg(&foreign_set),
    )
    .await;
}

/// With `disable_ttl` a session without an expiry is scored `+inf` and its index never expires;
/// a session past its cookie's expiry is not listed though Redis keeps it.
#[tokio::test]
async fn disable_ttl_indexes_without_ttls() {
    let Some(store) = single_store(|b| b.disable_ttl(true)).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let key = store.user_index_key("frank");
    let forever = SessionId::generate();
    store
        .save(&forever, &record(None, Some("frank")))
        .await
        .unwrap();
    let short = SessionId::generate();
    store
        .save(
            &short,
            &record(Some(Duration::from_millis(300)), Some("frank")),
        )
        .await
        .unwrap();
    let indexed = members(&mut conn, &key).await;
    assert_eq!(indexed.len(), 2);
    assert_eq!(indexed[1], (forever.as_str().to_owned(), f64::INFINITY));
    let pttl: i64 = cmd(&mut conn, redis::cmd("PTTL").arg(&key)).await;
    assert_eq!(pttl, -1, "no TTL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ids_of(&store.user_sessions("frank").await.unwrap()),
        BTreeSet::from([forever.clone()])
    );
    // A touch rewrites the cookie and indexes the session under the user the record holds.
    store
        .touch(&forever, &record(Some(HOUR), None))
        .await
        .unwrap();
    assert_expiry_in(members(&mut conn, &key).await[0].1, HOUR);
    store.clear().await.unwrap();
}

/// The server's count of reads from clients: one per request (a pipeline is one), as long as no
/// client connects or disconnects meanwhile.
async fn reads(conn: &mut impl ConnectionLike) -> u64 {
    let info: String = cmd(conn, redis::cmd("INFO").arg("stats")).await;
    info.lines()
        .find_map(|line| line.strip_prefix("total_reads_processed:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Round trips to a private server (no other client) while `work` runs.
async fn round_trips(conn: &mut impl ConnectionLike, work: impl Future<Output = ()>) -> u64 {
    let before = reads(conn).await;
    work.await;
    // Less the INFO that reads the count.
    reads(conn).await - before - 1
}

/// A write with a user costs what one without costs: the index update rides in the same pipeline.
/// A patch that leaves the meta object alone on a logged-in session needs a second trip. After a
/// restart (the scripts are gone), a write with a user still indexes the session.
#[tokio::test]
async fn one_round_trip_per_write_with_a_user() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let mut conn = raw(&server.url()).await;
    let id = SessionId::generate();
    let anonymous = SessionId::generate();
    let mut with_meta = Patch::new(record(Some(HOUR), None).cookie().clone());
    with_meta.set(META_KEY, json!({"user": "gus", "seen": 2}));
    let mut without_meta = Patch::new(record(Some(HOUR), None).cookie().clone());
    without_meta.set("n", json!(2));

    let costs = [
        (
            "create",
            round_trips(&mut conn, async {
                store
                    .create(&id, &record(Some(HOUR), Some("gus")))
                    .await
                    .unwrap();
            })
            .await,
        ),
        (
            "save",
            round_trips(&mut conn, async {
                store
                    .save(&id, &record(Some(HOUR), Some("gus")))
                    .await
                    .unwrap();
            })
            .await,
        ),
        (
            "touch",
            round_trips(&mut conn, async {
                store.touch(&id, &touch_record(HOUR, "gus")).await.unwrap();
            })
            .await,
        ),
        (
            "patch with meta",
            round_trips(&mut conn, async {
                assert!(store.patch(&id, &with_meta).await.unwrap());
            })
            .await,
        ),
        (
            "patch without meta",
            round_trips(&mut conn, async {
                assert!(store.patch(&id, &without_meta).await.unwrap());
            })
            .await,
        ),
        (
            "anonymous save, patch, touch",
            round_trips(&mut conn, async {
                store
                    .save(&anonymous, &record(Some(HOUR), None))
                    .await
                    .unwrap();
                assert!(store.patch(&anonymous, &without_meta).await.unwrap());
                store
                    .touch(&anonymous, &record(Some(HOUR), None))
                    .await
                    .unwrap();
            })
            .await,
        ),
        (
            "user_sessions",
            round_trips(&mut conn, async {
                assert_eq!(store.user_sessions("gus").await.unwrap().len(), 1);
            })
            .await,
        ),
    ];
    assert_eq!(
        costs,
        [
            ("create", 1),
            ("save", 1),
            ("touch", 1),
            ("patch with meta", 1),
            ("patch without meta", 2),
            ("anonymous save, patch, touch", 3),
            ("user_sessions", 2),
        ]
    );

    // A restarted server is empty and has lost the scripts: a pipelined EVALSHA gets NOSCRIPT,
    // and the store loads the script and runs it again, in order.
    server.restart().await;
    reconnect(&store).await;
    let saved = SessionId::generate();
    store
        .save(&saved, &record(Some(HOUR), Some("gus")))
        .await
        .unwrap();
    assert_eq!(
        ids_of(&store.user_sessions("gus").await.unwrap()),
        BTreeSet::from([saved]),
        "a save indexed after NOSCRIPT of the index script"
    );
    server.restart().await;
    reconnect(&store).await;
    let patched = SessionId::generate();
    store
        .save(&patched, &record(Some(HOUR), None))
        .await
        .unwrap();
    assert!(store.patch(&patched, &with_meta).await.unwrap());
    let listed = store.user_sessions("gus").await.unwrap();
    assert_eq!(
        ids_of(&listed),
        BTreeSet::from([patched]),
        "a patch applied and indexed after NOSCRIPT of both scripts"
    );
    assert_eq!(
        listed[0].1.data()[META_KEY],
        json!({"user": "gus", "seen": 2})
    );
}

/// Waits until the store reaches its (restarted) server again.
async fn reconnect(store: &RedisStore) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.load(&SessionId::generate()).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On a cluster the index key lives on its own node: writes reach it, listings fetch sessions
/// across slots, touches move it, and `clear` deletes it.
#[tokio::test]
async fn the_index_on_a_cluster() {
    let Some(store) = cluster_store(|b| b).await else {
        return;
    };
    let mut conn = raw_cluster().await;
    let key = store.user_index_key("hana");
    let mut ids = BTreeSet::new();
    for _ in 0..20 {
        let id = SessionId::generate();
        store
            .save(&id, &record(Some(Duration::from_secs(60)), Some("hana")))
            .await
            .unwrap();
        ids.insert(id);
    }
    let touched = ids.first().unwrap().clone();
    store
        .touch(&touched, &touch_record(HOUR, "hana"))
        .await
        .unwrap();
    let indexed = members(&mut conn, &key).await;
    assert_eq!(indexed.len(), 20);
    assert_eq!(indexed[19].0, touched.as_str(), "the touch moved its score");
    assert_expiry_in(indexed[19].1, HOUR);

    let mut patch = Patch::new(record(Some(2 * HOUR), None).cookie().clone());
    patch.set("n", json!(3));
    let patched = ids.last().unwrap().clone();
    assert!(store.patch(&patched, &patch).await.unwrap());
    assert_eq!(members(&mut conn, &key).await[19].0, patched.as_str());

    let listed = store.user_sessions("hana").await.unwrap();
    assert_eq!(ids_of(&listed), ids);
    store.destroy(&touched).await.unwrap();
    assert_eq!(store.user_sessions("hana").await.unwrap().len(), 19);
    assert_eq!(members(&mut conn, &key).await.len(), 19, "pruned");

    store.clear().await.unwrap();
    let exists: i64 = cmd(&mut conn, redis::cmd("EXISTS").arg(&key)).await;
    assert_eq!(exists, 0, "clear deletes the index on its node");
}
