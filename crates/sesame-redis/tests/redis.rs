//! What is specific to Redis: the connect-redis key and value format, TTLs, the options, prefix
//! isolation, the fidelity of patches to the stored JSON, and the round trips they cost.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use sesame_core::serde_json::{self, Value, json};
use sesame_core::{CookieState, Error, Patch, Record, SessionId, SessionStore, Swap};
use sesame_redis::redis::aio::MultiplexedConnection;
use sesame_redis::{RedisStore, redis};

use common::{PrivateRedis, cmd, raw, redis_url, single_store};

const HOUR: Duration = Duration::from_secs(3600);

fn record(ttl: Option<Duration>) -> Record {
    let mut cookie = CookieState::default();
    cookie.set_max_age(sesame_core::now(), ttl);
    let mut record = Record::new(cookie);
    record.data_mut().insert("user".into(), json!("ada"));
    record
}

async fn get(conn: &mut MultiplexedConnection, key: &str) -> Option<String> {
    cmd(conn, redis::cmd("GET").arg(key)).await
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    cmd(conn, redis::cmd("PTTL").arg(key)).await
}

async fn set(conn: &mut MultiplexedConnection, key: &str, value: &str) {
    cmd::<()>(conn, redis::cmd("SET").arg(key).arg(value)).await;
}

/// The key is `<prefix><id>`, the value express-session's JSON, the TTL the cookie's expiry.
#[tokio::test]
async fn key_value_and_ttl_are_connect_redis_s() {
    let Some(store) = single_store(|b| b.default_ttl(Duration::from_secs(120))).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    let rec = record(Some(HOUR));
    store.save(&id, &rec).await.unwrap();
    let key = format!("{}{}", store.prefix(), id.as_str());
    assert_eq!(store.key(&id), key);
    assert_eq!(get(&mut conn, &key).await, Some(rec.to_json().unwrap()));
    let ttl = pttl(&mut conn, &key).await;
    assert!((3_590_000..=3_600_000).contains(&ttl), "PTTL {ttl}");

    // A browser-session cookie (no expires): the default TTL.
    let browser = SessionId::generate();
    store.save(&browser, &record(None)).await.unwrap();
    let ttl = pttl(&mut conn, &store.key(&browser)).await;
    assert!((110_000..=120_000).contains(&ttl), "PTTL {ttl}");

    // The default prefix is connect-redis's.
    assert_eq!(
        RedisStore::builder()
            .connect(&redis_url())
            .await
            .unwrap()
            .prefix(),
        "sess:"
    );
}

/// A record whose cookie has expired is deleted, not written.
#[tokio::test]
async fn expired_record_is_deleted_not_written() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    store.save(&id, &record(Some(HOUR))).await.unwrap();
    let mut expired = record(Some(HOUR));
    let past = sesame_core::now() - Duration::from_secs(1);
    expired.cookie_mut().set_expires(past, Some(past));
    store.save(&id, &expired).await.unwrap();
    assert_eq!(get(&mut conn, &store.key(&id)).await, None);

    let never = SessionId::generate();
    store.save(&never, &expired).await.unwrap();
    let exists: i64 = cmd(&mut conn, redis::cmd("EXISTS").arg(store.key(&never))).await;
    assert_eq!(exists, 0, "an expired record is never written");
}

/// `touch` is `PEXPIRE`: the TTL moves, the value stays byte for byte.
#[tokio::test]
async fn touch_moves_the_ttl_only() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    let key = store.key(&id);
    store
        .save(&id, &record(Some(Duration::from_secs(60))))
        .await
        .unwrap();
    let before = get(&mut conn, &key).await;
    let mut touched = record(Some(HOUR));
    touched.data_mut().insert("not".into(), json!("written"));
    store.touch(&id, &touched).await.unwrap();
    assert_eq!(
        get(&mut conn, &key).await,
        before,
        "touch rewrote the value"
    );
    assert!(pttl(&mut conn, &key).await > 3_500_000);
}

/// `disable_touch`: touch does nothing.
#[tokio::test]
async fn disable_touch_leaves_the_ttl() {
    let Some(store) = single_store(|b| b.disable_touch(true)).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    store
        .save(&id, &record(Some(Duration::from_secs(60))))
        .await
        .unwrap();
    store.touch(&id, &record(Some(HOUR))).await.unwrap();
    assert!(pttl(&mut conn, &store.key(&id)).await <= 60_000);
}

/// `disable_ttl`: no Redis TTL; expiry is the cookie's, checked on read and in the scripts.
#[tokio::test]
async fn disable_ttl_writes_no_ttl_and_still_expires() {
    let Some(store) = single_store(|b| b.disable_ttl(true)).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    let key = store.key(&id);
    store
        .save(&id, &record(Some(Duration::from_millis(300))))
        .await
        .unwrap();
    assert_eq!(pttl(&mut conn, &key).await, -1, "no TTL");

    // Touch rewrites the cookie member (the only expiry), keeping the data.
    let mut touched = record(Some(HOUR));
    touched.data_mut().insert("not".into(), json!("written"));
    store.touch(&id, &touched).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = store.load(&id).await.unwrap().expect("touched to an hour");
    assert_eq!(loaded.cookie(), touched.cookie());
    assert_eq!(loaded.data(), record(None).data());
    assert_eq!(pttl(&mut conn, &key).await, -1, "still no TTL");

    // A dead record left in Redis: never returned, never patched, never swapped, and a create
    // may take its id.
    let dead = SessionId::generate();
    store
        .save(&dead, &record(Some(Duration::from_millis(200))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(get(&mut conn, &store.key(&dead)).await.is_some(), "kept");
    assert!(store.load(&dead).await.unwrap().is_none());
    assert!(!store.ids().await.unwrap().contains(&dead));
    let mut patch = Patch::new(record(Some(HOUR)).cookie().clone());
    patch.set("x", json!(1));
    assert!(
        !store.patch(&dead, &patch).await.unwrap(),
        "patched a dead record"
    );
    assert_eq!(
        store
            .compare_and_swap(&dead, "x", None, Some(&json!(1)))
            .await
            .unwrap(),
        Swap::Missing
    );
    store.create(&dead, &record(Some(HOUR))).await.unwrap();
    assert!(matches!(
        store.create(&dead, &record(Some(HOUR))).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(pttl(&mut conn, &store.key(&dead)).await, -1);
}

/// `create` is `SET NX`: a collision fails and leaves the record as it was.
#[tokio::test]
async fn create_never_overwrites() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    // A record written by another app (connect-redis) under the id.
    let theirs =
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"n":1}"#;
    set(&mut conn, &store.key(&id), theirs).await;
    assert!(matches!(
        store.create(&id, &record(Some(HOUR))).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        get(&mut conn, &store.key(&id)).await.as_deref(),
        Some(theirs)
    );
}

/// Listing and `clear` stay within the prefix: keys of other prefixes (sibling stores, other
/// apps, a prefix with glob characters) are neither listed nor deleted.
#[tokio::test]
async fn clear_stays_within_the_prefix() {
    let base = common::test_prefix();
    let connect = |prefix: String| async move {
        RedisStore::builder()
            .prefix(prefix)
            .scan_count(2)
            .connect(&redis_url())
            .await
    };
    let mine = match connect(format!("{base}a:")).await {
        Ok(store) => store,
        Err(error) => {
            sesame_conformance::backend_missing::<()>("Redis", &common::chain(&error));
            return;
        }
    };
    let sibling = connect(format!("{base}b:")).await.unwrap();
    let globby = connect(format!("{base}[a]:")).await.unwrap();
    let mut conn = raw(&redis_url()).await;
    for _ in 0..5 {
        mine.save(&SessionId::generate(), &record(Some(HOUR)))
            .await
            .unwrap();
    }
    let theirs = SessionId::generate();
    sibling.save(&theirs, &record(Some(HOUR))).await.unwrap();
    let glob_id = SessionId::generate();
    globby.save(&glob_id, &record(Some(HOUR))).await.unwrap();
    let foreign = format!("{base}a");
    set(&mut conn, &foreign, "not a session").await;

    assert_eq!(
        mine.len().await.unwrap(),
        5,
        "scan_count 2: several SCAN steps"
    );
    assert_eq!(mine.all().await.unwrap().len(), 5);
    assert_eq!(globby.ids().await.unwrap(), vec![glob_id.clone()]);
    mine.clear().await.unwrap();
    assert_eq!(mine.len().await.unwrap(), 0);
    assert!(
        sibling.load(&theirs).await.unwrap().is_some(),
        "sibling kept"
    );
    assert!(
        globby.load(&glob_id).await.unwrap().is_some(),
        "glob prefix kept"
    );
    assert_eq!(
        get(&mut conn, &foreign).await.as_deref(),
        Some("not a session")
    );
    sibling.clear().await.unwrap();
    globby.clear().await.unwrap();
    cmd::<()>(&mut conn, redis::cmd("DEL").arg(&foreign)).await;
}

/// The record as express-session (Node) writes it, with what `cjson` would mangle: empty arrays
/// and objects, integers beyond 2^53, floats, exponents, escaped slashes and unicode, odd key names.
const NODE_RECORD: &str = concat!(
    r#"{"cookie":{"originalMaxAge":3600000,"expires":"2999-01-01T00:00:00.000Z","httpOnly":true,"path":"/"},"#,
    r#""empty":[],"emptyObj":{},"nested":{"list":[],"deep":[[],{}]},"#,
    r#""big":9007199254740993,"huge":123456789012345678901234567890,"float":0.30000000000000004,"#,
    r#""exp":1e+21,"neg":-0,"text":"a\/b \u00e9 \"q\" \\","#,
    r#""we\"ird":1,"un\u00efcode":"x","gone":true,"keep":null}"#
);

/// A patch changes only the keys it names: every other member keeps its exact text, which a
/// `cjson` decode/encode round trip would not (`[]` -> `{}`, big integers rounded).
#[tokio::test]
async fn patch_keeps_untouched_members_byte_for_byte() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    let key = store.key(&id);
    set(&mut conn, &key, NODE_RECORD).await;

    let cookie = record(Some(HOUR)).cookie().clone();
    let mut patch = Patch::new(cookie.clone());
    patch.set("added", json!({"list": [], "n": 1}));
    patch.set("keep", json!("now set"));
    patch.remove("gone");
    patch.remove("we\"ird");
    patch.remove("never there");
    assert!(store.patch(&id, &patch).await.unwrap());

    let stored = get(&mut conn, &key).await.unwrap();
    let cookie_json = serde_json::to_string(&cookie).unwrap();
    let expected = format!(
        concat!(
            r#"{{"cookie":{},"#,
            r#""empty":[],"emptyObj":{{}},"nested":{{"list":[],"deep":[[],{{}}]}},"#,
            r#""big":9007199254740993,"huge":123456789012345678901234567890,"float":0.30000000000000004,"#,
            r#""exp":1e+21,"neg":-0,"text":"a\/b \u00e9 \"q\" \\","#,
            r#""un\u00efcode":"x","keep":"now set","added":{{"list":[],"n":1}}}}"#
        ),
        cookie_json
    );
    assert_eq!(stored, expected);
    let ttl = pttl(&mut conn, &key).await;
    assert!(
        (3_590_000..=3_600_000).contains(&ttl),
        "the patch set the TTL: {ttl}"
    );
    // And it still reads as a record.
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.data()["empty"], json!([]));
    assert_eq!(loaded.data()["unïcode"], json!("x"));
}

/// A patch made from a record this store loaded, still stored as loaded, replaces it whole with a
/// short script (no member scanning in Redis), and writes exactly what the patch script writes.
#[tokio::test]
async fn patch_of_an_unchanged_loaded_record_is_replaced_whole_with_the_same_bytes() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let (merged, replaced) = (SessionId::generate(), SessionId::generate());
    set(&mut conn, &store.key(&merged), NODE_RECORD).await;
    set(&mut conn, &store.key(&replaced), NODE_RECORD).await;
    let cookie = record(Some(HOUR)).cookie().clone();
    let change = |patch: &mut Patch| {
        patch.set("added", json!({"list": [], "n": 1}));
        patch.set("keep", json!("now set"));
        patch.remove("gone");
        patch.remove("never there");
    };

    // Without a base: the patch script merges member by member.
    let mut patch = Patch::new(cookie.clone());
    change(&mut patch);
    assert!(patch.base().is_none());
    assert!(store.patch(&merged, &patch).await.unwrap());

    // From a loaded record: the same changes, replaced whole.
    let mut loaded = store.load(&replaced).await.unwrap().unwrap();
    *loaded.cookie_mut() = cookie;
    loaded
        .data_mut()
        .insert("added".into(), json!({"list": [], "n": 1}));
    loaded.data_mut().insert("keep".into(), json!("now set"));
    loaded.data_mut().remove("gone");
    let patch = Patch::from_changes(&loaded, ["added", "keep", "gone", "never there"]);
    assert_eq!(patch.base(), Some(NODE_RECORD.as_bytes()));
    let sent = monitored(&redis_url(), async {
        assert!(store.patch(&replaced, &patch).await.unwrap());
    })
    .await;
    let script_calls: Vec<&String> = sent
        .iter()
        .filter(|line| line.starts_with("\"EVALSHA\""))
        .collect();
    assert_eq!(script_calls.len(), 1, "{sent:?}");
    assert!(
        !script_calls[0].contains("\"px\""),
        "the replace script, not the patch script: {}",
        script_calls[0]
    );

    assert_eq!(
        get(&mut conn, &store.key(&replaced)).await,
        get(&mut conn, &store.key(&merged)).await
    );
    let ttl = pttl(&mut conn, &store.key(&replaced)).await;
    assert!((3_590_000..=3_600_000).contains(&ttl), "PTTL {ttl}");
}

/// Keys another app wrote between our read and our save survive the patch.
#[tokio::test]
async fn patch_keeps_keys_written_by_others() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    let mut rec = record(Some(HOUR));
    rec.data_mut().insert("cart".into(), json!([1]));
    store.save(&id, &rec).await.unwrap();
    // Our request read the record (and the store remembered its bytes); meanwhile a Node app
    // wrote the whole record with a new key.
    let mut ours = store.load(&id).await.unwrap().unwrap();
    assert!(ours.origin().is_some(), "a loaded record keeps its bytes");
    let mut theirs: Value = serde_json::from_str(&rec.to_json().unwrap()).unwrap();
    theirs["flash"] = json!({"info": ["saved"]});
    set(&mut conn, &store.key(&id), &theirs.to_string()).await;
    // Our request changed the cart only: the record is no longer the one it read, so the patch
    // merges instead of replacing it whole.
    ours.data_mut().insert("cart".into(), json!([1, 2]));
    let patch = Patch::from_changes(&ours, ["cart"]);
    assert!(store.patch(&id, &patch).await.unwrap());
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.data()["cart"], json!([1, 2]));
    assert_eq!(
        loaded.data()["flash"],
        json!({"info": ["saved"]}),
        "their key kept"
    );
    assert_eq!(loaded.data()["user"], json!("ada"));
}

/// Compare-and-swap compares JSON values, also when another app wrote them with another key order,
/// and leaves the rest of the record and its TTL alone.
#[tokio::test]
async fn compare_and_swap_on_foreign_formatting_and_keeps_ttl() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    let key = store.key(&id);
    set(&mut conn, &key, NODE_RECORD).await;
    cmd::<()>(&mut conn, redis::cmd("PEXPIRE").arg(&key).arg(600_000)).await;
    set_member(&mut conn, &key, r#""obj":{"b":[1,2],"a":1}"#).await;

    let expected = json!({"a": 1, "b": [1, 2]});
    assert_eq!(
        store
            .compare_and_swap(&id, "obj", Some(&expected), Some(&json!(2)))
            .await
            .unwrap(),
        Swap::Done
    );
    assert_eq!(
        store
            .compare_and_swap(&id, "big", Some(&json!(1)), None)
            .await
            .unwrap(),
        Swap::Changed(Some(serde_json::from_str("9007199254740993").unwrap()))
    );
    let stored = get(&mut conn, &key).await.unwrap();
    assert!(stored.ends_with(r#""obj":2}"#), "{stored}");
    assert!(stored.contains(r#""empty":[],"emptyObj":{},"#), "{stored}");
    assert!(stored.contains(r#""big":9007199254740993,"#), "{stored}");
    let ttl = pttl(&mut conn, &key).await;
    assert!((590_000..=600_000).contains(&ttl), "KEEPTTL: {ttl}");
}

/// Appends a member to the raw record under `key` (as another app would write it).
async fn set_member(conn: &mut MultiplexedConnection, key: &str, member: &str) {
    let stored = get(conn, key).await.unwrap();
    let updated = format!("{},{member}}}", &stored[..stored.len() - 1]);
    cmd::<()>(conn, redis::cmd("SET").arg(key).arg(updated).arg("KEEPTTL")).await;
}

/// A value that is not a JSON object is a decode error for load, patch and compare-and-swap,
/// and is left as it is.
#[tokio::test]
async fn corrupt_values_are_decode_errors_everywhere() {
    let Some(store) = single_store(|b| b).await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    for bad in [
        "",
        "[1,2]",
        "{\"a\":1",
        "{\"a\" 1}",
        "{\"a\":1}x",
        "\"text\"",
        "{\"a\":\"x}",
    ] {
        let id = SessionId::generate();
        set(&mut conn, &store.key(&id), bad).await;
        let mut patch = Patch::new(record(Some(HOUR)).cookie().clone());
        patch.set("x", json!(1));
        assert!(
            matches!(store.patch(&id, &patch).await, Err(Error::Decode { .. })),
            "patch of {bad:?}"
        );
        assert!(
            matches!(
                store
                    .compare_and_swap(&id, "x", None, Some(&json!(1)))
                    .await,
                Err(Error::Decode { .. })
            ),
            "compare_and_swap of {bad:?}"
        );
        assert!(matches!(store.load(&id).await, Err(Error::Decode { .. })));
        assert_eq!(get(&mut conn, &store.key(&id)).await.as_deref(), Some(bad));
    }
    // A JSON object that is not a record (no cookie) patches fine but does not load.
    let id = SessionId::generate();
    set(&mut conn, &store.key(&id), "{}").await;
    assert!(matches!(store.load(&id).await, Err(Error::Decode { .. })));
}

/// The commands a client sent to the server while `work` ran, by name, as the server's `MONITOR`
/// saw them: one per round trip. Commands that the Lua scripts run inside the server (shown as
/// coming from `lua`) are not round trips and are left out.
async fn round_trips(url: &str, work: impl std::future::Future<Output = ()>) -> Vec<(String, u64)> {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for line in monitored(url, work).await {
        let name = line.split('"').nth(1).unwrap().to_ascii_lowercase();
        *counts.entry(name).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// The commands a client sent to the server while `work` ran, as `MONITOR` shows them
/// (`"<command>" "<arg>"...`), without those the Lua scripts ran inside the server.
async fn monitored(url: &str, work: impl std::future::Future<Output = ()>) -> Vec<String> {
    monitored_from(url, work, Source::Client).await
}

/// Where a command `MONITOR` shows came from.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// A client's round trip.
    Client,
    /// A script's `redis.call`, inside the server.
    Script,
}

/// The commands from `wanted` that the server ran while `work` ran, as `MONITOR` shows them.
async fn monitored_from(
    url: &str,
    work: impl std::future::Future<Output = ()>,
    wanted: Source,
) -> Vec<String> {
    use futures_util::StreamExt as _;

    let client = redis::Client::open(url).unwrap();
    let mut monitor = client
        .get_async_monitor()
        .await
        .unwrap()
        .into_on_message::<String>();
    work.await;
    // Commands reach MONITOR in the order the server runs them: once this marker shows up, every
    // command of `work` (which has completed) has been seen.
    let marker = format!("end-of-work-{}", SessionId::generate().as_str());
    let mut conn = raw(url).await;
    let _: String = cmd(&mut conn, redis::cmd("ECHO").arg(&marker)).await;
    let mut commands = Vec::new();
    while let Some(line) = monitor.next().await {
        if line.contains(&marker) {
            break;
        }
        // `<time> [<db> <client address or "lua">] "<command>" "<arg>"...`
        let (source, command) = line.split_once("] ").unwrap();
        let source = if source.ends_with(" lua") {
            Source::Script
        } else {
            Source::Client
        };
        if source == wanted {
            commands.push(command.to_owned());
        }
    }
    commands
}

/// A patch save is one round trip (one `EVALSHA`), a compare-and-swap too, counted by the server
/// itself (`MONITOR` of a private `redis-server`); after the server lost its script cache, one
/// patch reloads the script, and the next ones are one round trip again.
#[tokio::test]
async fn one_round_trip_per_patch_and_per_swap() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let id = SessionId::generate();
    store.save(&id, &record(Some(HOUR))).await.unwrap();

    let patches = round_trips(&server.url(), async {
        for n in 0..10 {
            let mut patch = Patch::new(record(Some(HOUR)).cookie().clone());
            patch.set(&format!("k{n}"), json!(n));
            patch.remove("user");
            assert!(store.patch(&id, &patch).await.unwrap());
        }
    })
    .await;
    assert_eq!(patches, vec![("evalsha".to_owned(), 10)]);

    let swaps = round_trips(&server.url(), async {
        for n in 0..5_u64 {
            let expected = (n > 0).then(|| json!(n));
            let swap = store
                .compare_and_swap(&id, "count", expected.as_ref(), Some(&json!(n + 1)))
                .await
                .unwrap();
            assert_eq!(swap, Swap::Done);
        }
    })
    .await;
    assert_eq!(swaps, vec![("evalsha".to_owned(), 5)]);

    // The plain operations: one command each.
    let plain = round_trips(&server.url(), async {
        store.load(&id).await.unwrap();
        store.touch(&id, &record(Some(HOUR))).await.unwrap();
        store.save(&id, &record(Some(HOUR))).await.unwrap();
        store.destroy(&id).await.unwrap();
    })
    .await;
    assert_eq!(
        plain,
        vec![
            ("del".to_owned(), 1),
            ("get".to_owned(), 1),
            ("pexpire".to_owned(), 1),
            ("set".to_owned(), 1),
        ]
    );

    // A restarted server has no scripts: the first patch loads it again, then it is one trip.
    server.restart().await;
    let id = SessionId::generate();
    let mut patch = Patch::new(record(Some(HOUR)).cookie().clone());
    patch.set("x", json!(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.save(&id, &record(Some(HOUR))).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reload = round_trips(&server.url(), async {
        assert!(store.patch(&id, &patch).await.unwrap());
    })
    .await;
    assert_eq!(
        reload,
        vec![
            ("evalsha".to_owned(), 2),
            ("script".to_owned(), 1), // SCRIPT LOAD, after EVALSHA's NOSCRIPT
        ]
    );
    let again = round_trips(&server.url(), async {
        assert!(store.patch(&id, &patch).await.unwrap());
    })
    .await;
    assert_eq!(again, vec![("evalsha".to_owned(), 1)]);
}

/// Polls `load` until it gives `expected` (the invalidation notices of the client-side cache
/// arrive asynchronously); fails after two seconds.
/// A store with a client-side cache, and a store without one on the same prefix (another app
/// instance), or `None` when Redis is missing.
async fn cached_and_plain() -> Option<(RedisStore, RedisStore)> {
    let cached = single_store(|builder| builder.client_side_cache(100)).await?;
    let plain = RedisStore::builder()
        .prefix(cached.prefix())
        .connect(&redis_url())
        .await
        .unwrap();
    Some((cached, plain))
}

async fn eventually_loads(store: &RedisStore, id: &SessionId, expected: Option<&Record>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let loaded = store.load(id).await.unwrap();
        if loaded.as_ref() == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cached store still loads {loaded:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With the client-side cache, a session this process has read or written is read without a
/// round trip, and a patch of it is one (the replace-if-unchanged script), counted by `MONITOR`.
#[tokio::test]
async fn the_client_side_cache_reads_in_no_round_trip_and_writes_in_one() {
    let Some(server) = PrivateRedis::start().await else {
        return;
    };
    let store = RedisStore::builder()
        .client_side_cache(100)
        .connect(&server.url())
        .await
        .unwrap();
    let id = SessionId::generate();
    store.save(&id, &record(Some(HOUR))).await.unwrap();
    assert_eq!(store.client_cache_len(), 1, "the write filled the cache");

    let reads = round_trips(&server.url(), async {
        for _ in 0..5 {
            assert!(store.load(&id).await.unwrap().is_some());
        }
    })
    .await;
    assert_eq!(reads, vec![], "reads of a cached session");

    let writes = round_trips(&server.url(), async {
        for n in 0..5 {
            let loaded = store.load(&id).await.unwrap().unwrap();
            assert_eq!(
                loaded.data().get("n"),
                (n > 0).then(|| json!(n - 1)).as_ref()
            );
            let mut changed = loaded.clone();
            changed.data_mut().insert("n".into(), json!(n));
            let patch = Patch::from_changes(&changed, ["n"]);
            assert!(store.patch(&id, &patch).await.unwrap());
        }
    })
    .await;
    assert_eq!(
        writes,
        vec![("evalsha".to_owned(), 5)],
        "one round trip per patch, none per load: {writes:?}"
    );

    let last = store.load(&id).await.unwrap().unwrap();
    assert_eq!(last.data().get("n"), Some(&json!(4)));
    let plain = RedisStore::builder().connect(&server.url()).await.unwrap();
    assert_eq!(
        Some(last),
        plain.load(&id).await.unwrap(),
        "what the cache serves is what Redis holds"
    );
}

/// After a cached write, the cache serves exactly what Redis holds, though it no longer decodes
/// what it wrote: the record it held with the patch applied, and the cookie state as a load
/// reads it back (no deadline, which is never stored; `expires` in whole milliseconds of UTC),
/// including floats and nested values.
#[tokio::test]
async fn a_cached_write_caches_what_redis_holds() {
    let Some((cached, plain)) = cached_and_plain().await else {
        return;
    };
    let id = SessionId::generate();
    let mut first = record(Some(HOUR));
    first.data_mut().insert("gone".into(), json!([1, 2]));
    cached.save(&id, &first).await.unwrap();
    for n in 0..3 {
        let mut changed = cached.load(&id).await.unwrap().unwrap();
        changed
            .data_mut()
            .insert("n".into(), json!(0.1 + f64::from(n) / 3.0));
        changed
            .data_mut()
            .insert("nested".into(), json!({"big": u64::MAX, "list": [-1, "é"]}));
        changed.data_mut().remove("gone");
        let cookie = changed.cookie_mut();
        let now = sesame_core::now();
        cookie.expires = Some(
            (now + HOUR + Duration::from_nanos(123_456))
                .to_offset(sesame_core::time::UtcOffset::from_hms(5, 30, 0).unwrap()),
        );
        cookie.deadline = Some(now + 2 * HOUR);
        let patch = Patch::from_changes(&changed, ["n", "nested", "gone"]);
        assert!(patch.base().is_some(), "a patch of the cached record");
        assert!(cached.patch(&id, &patch).await.unwrap());

        let from_redis = plain.load(&id).await.unwrap().unwrap();
        let from_cache = cached.load(&id).await.unwrap().unwrap();
        assert_eq!(from_cache, from_redis);
        assert_eq!(from_cache.cookie().deadline, None);
        assert_eq!(
            from_cache.cookie().expires.map(|at| at.offset()),
            from_redis.cookie().expires.map(|at| at.offset())
        );
        assert_eq!(
            from_cache.origin().map(|bytes| bytes.to_vec()),
            from_redis.origin().map(|bytes| bytes.to_vec()),
            "the copy keeps the written bytes, for the next replace"
        );
    }
}

/// Each `redis.call` of a script costs Redis more than a client's `SET`, so a write's script
/// makes only the calls it needs: the replace-if-unchanged script of a plain store reads and sets
/// the key (two calls); with a client-side cache it also reads the key after setting it (the
/// `PTTL` that keeps it tracked).
#[tokio::test]
async fn the_replace_script_reads_the_key_after_its_write_only_for_a_client_side_cache() {
    // A private server: `MONITOR` would also show the scripts of tests running alongside.
    let Some(server) = PrivateRedis::start().await else {
        return;
    };
    let url = server.url();
    let plain = RedisStore::builder().connect(&url).await.unwrap();
    let cached = RedisStore::builder()
        .client_side_cache(100)
        .connect(&url)
        .await
        .unwrap();
    for (store, expected) in [
        (&plain, vec!["get", "set"]),
        (&cached, vec!["get", "set", "pttl"]),
    ] {
        let id = SessionId::generate();
        store.save(&id, &record(Some(HOUR))).await.unwrap();
        let script_calls = monitored_from(
            &url,
            async {
                let mut changed = store.load(&id).await.unwrap().unwrap();
                changed.data_mut().insert("n".into(), json!(1));
                let patch = Patch::from_changes(&changed, ["n"]);
                assert!(patch.base().is_some(), "the patch of a loaded record");
                assert!(store.patch(&id, &patch).await.unwrap());
            },
            Source::Script,
        )
        .await;
        let names: Vec<String> = script_calls
            .iter()
            .map(|line| line.split('"').nth(1).unwrap().to_ascii_lowercase())
            .collect();
        assert_eq!(names, expected, "{script_calls:?}");
        let loaded = plain.load(&id).await.unwrap().unwrap();
        assert_eq!(loaded.data().get("n"), Some(&json!(1)));
    }
}

/// Changes made by other clients (another app instance, an Express app, `redis-cli`) reach a
/// store's client-side cache: Redis tells it, and it drops its copy.
#[tokio::test]
async fn other_clients_changes_reach_the_client_side_cache() {
    let Some((cached, other)) = cached_and_plain().await else {
        return;
    };
    let id = SessionId::generate();
    let mut first = record(Some(HOUR));
    first.data_mut().insert("n".into(), json!(1));
    cached.save(&id, &first).await.unwrap();
    assert_eq!(cached.load(&id).await.unwrap().as_ref(), Some(&first));

    // Another store's save, patch and destroy.
    let mut second = record(Some(HOUR));
    second.data_mut().insert("n".into(), json!(2));
    other.save(&id, &second).await.unwrap();
    eventually_loads(&cached, &id, Some(&second)).await;
    let mut patch = Patch::new(second.cookie().clone());
    patch.set("n", json!(3));
    assert!(other.patch(&id, &patch).await.unwrap());
    let mut third = second.clone();
    third.data_mut().insert("n".into(), json!(3));
    eventually_loads(&cached, &id, Some(&third)).await;
    other.destroy(&id).await.unwrap();
    eventually_loads(&cached, &id, None).await;

    // A raw write, as an Express app sharing the store would make.
    cached.save(&id, &first).await.unwrap();
    assert!(cached.load(&id).await.unwrap().is_some());
    let mut conn = raw(&redis_url()).await;
    set(&mut conn, &cached.key(&id), &second.to_json().unwrap()).await;
    eventually_loads(&cached, &id, Some(&second)).await;
}

/// Waits until whatever Redis had to tell the store's connection about its writes so far has
/// arrived (nothing, under `NOLOOP`; a notice each, were the store to track without it): a
/// command sent after them has its reply after them on the connection.
async fn pushes_so_far_arrive(store: &RedisStore) {
    let _ = store.load(&SessionId::generate()).await.unwrap();
}

/// The store's own cached writes (create, save, patch, touch) keep their copy (Redis tells the
/// connection nothing of its own changes), and the key stays tracked: the next change by another
/// client still reaches the cache.
#[tokio::test]
async fn after_its_own_writes_the_client_side_cache_keeps_its_copy_and_hears_of_others() {
    let Some((cached, other)) = cached_and_plain().await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let numbered = |n: i64| {
        let mut record = record(Some(HOUR));
        record.data_mut().insert("n".into(), json!(n));
        record
    };
    let id = SessionId::generate();
    let kept_then_replaced_by_another = |written: Record, foreign: i64| {
        let (cached, other, id) = (&cached, &other, &id);
        async move {
            pushes_so_far_arrive(cached).await;
            assert_eq!(cached.client_cache_len(), 1, "the write's copy is kept");
            assert_eq!(cached.load(id).await.unwrap(), Some(written));
            let foreign = numbered(foreign);
            other.save(id, &foreign).await.unwrap();
            eventually_loads(cached, id, Some(&foreign)).await;
        }
    };

    let created = numbered(1);
    cached.create(&id, &created).await.unwrap();
    kept_then_replaced_by_another(created, 2).await;

    let saved = numbered(3);
    cached.save(&id, &saved).await.unwrap();
    kept_then_replaced_by_another(saved, 4).await;

    let loaded = cached.load(&id).await.unwrap().unwrap();
    let mut patched = loaded.clone();
    patched.data_mut().insert("n".into(), json!(5));
    assert!(
        cached
            .patch(&id, &Patch::from_changes(&patched, ["n"]))
            .await
            .unwrap()
    );
    kept_then_replaced_by_another(patched, 6).await;

    let touched = cached.load(&id).await.unwrap().unwrap();
    cached.touch(&id, &touched).await.unwrap();
    kept_then_replaced_by_another(touched, 7).await;

    // A raw write (an Express app) after a cached write reaches the cache too.
    cached.save(&id, &numbered(8)).await.unwrap();
    pushes_so_far_arrive(&cached).await;
    let raw_written = numbered(9);
    set(&mut conn, &cached.key(&id), &raw_written.to_json().unwrap()).await;
    eventually_loads(&cached, &id, Some(&raw_written)).await;
}

/// A cached write whose future is dropped after its command went out (a timeout, a cancelled
/// request) still changes the key; Redis tells the connection nothing of its own change
/// (`NOLOOP`), so the store drops the copy it held rather than serve it from then on.
#[tokio::test]
async fn a_cached_write_dropped_in_flight_leaves_no_stale_copy() {
    let Some((cached, plain)) = cached_and_plain().await else {
        return;
    };
    let numbered = |n: i64| {
        let mut record = record(Some(HOUR));
        record.data_mut().insert("n".into(), json!(n));
        record
    };
    /// Polls `write` once (which hands its command to the connection), lets the connection send
    /// it while the future is kept, then drops the future before it sees the reply.
    async fn dropped_in_flight(write: impl std::future::Future<Output = ()>) {
        let mut write = std::pin::pin!(write);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            write.as_mut().poll(&mut context).is_pending(),
            "the write waits for its reply"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = SessionId::generate();
    cached.save(&id, &numbered(1)).await.unwrap();
    let loaded = cached.load(&id).await.unwrap().unwrap();
    assert_eq!(cached.client_cache_len(), 1, "the copy of the record");

    // A patch (the replace script), dropped in flight.
    let mut changed = loaded.clone();
    changed.data_mut().insert("n".into(), json!(2));
    let patch = Patch::from_changes(&changed, ["n"]);
    dropped_in_flight(async {
        let _ = cached.patch(&id, &patch).await;
    })
    .await;
    let truth = plain.load(&id).await.unwrap().unwrap();
    assert_eq!(
        truth.data().get("n"),
        Some(&json!(2)),
        "the patch reached Redis"
    );
    assert_eq!(cached.load(&id).await.unwrap(), Some(truth));

    // A save (`MULTI` around the `SET`), dropped in flight.
    let _ = cached.load(&id).await.unwrap();
    assert_eq!(cached.client_cache_len(), 1);
    let third = numbered(3);
    dropped_in_flight(async {
        let _ = cached.save(&id, &third).await;
    })
    .await;
    let truth = plain.load(&id).await.unwrap();
    assert_eq!(truth, Some(third), "the save reached Redis");
    assert_eq!(cached.load(&id).await.unwrap(), truth);
}

/// Writes of the cached store race writes of another store and raw writes, over and over: once
/// they are done, the cached store loads what Redis holds (a copy kept past another client's
/// change, or of a key no longer tracked, would be served until the session expires, an hour
/// later).
#[tokio::test]
async fn under_racing_writes_the_client_side_cache_ends_where_redis_is() {
    let Some((cached, plain)) = cached_and_plain().await else {
        return;
    };
    let mut conn = raw(&redis_url()).await;
    let id = SessionId::generate();
    cached.save(&id, &record(Some(HOUR))).await.unwrap();
    let increment = |store: &RedisStore, name: &'static str| {
        let (store, id) = (store.clone(), id.clone());
        async move {
            let Some(loaded) = store.load(&id).await.unwrap() else {
                return;
            };
            let mut changed = loaded.clone();
            let n = loaded.data().get(name).and_then(Value::as_i64).unwrap_or(0);
            changed.data_mut().insert(name.into(), json!(n + 1));
            store
                .patch(&id, &Patch::from_changes(&changed, [name]))
                .await
                .unwrap();
        }
    };
    let mut cached_writes = 0;
    for round in 0..60 {
        let raw_write = async {
            if round % 3 == 0 {
                let mut foreign = record(Some(HOUR));
                foreign.data_mut().insert("raw".into(), json!(round));
                set(&mut conn, &cached.key(&id), &foreign.to_json().unwrap()).await;
            }
        };
        tokio::join!(
            increment(&cached, "a"),
            increment(&cached, "a"),
            increment(&plain, "b"),
            raw_write,
        );
        // A write of the cached store, then another store's right after it, whose invalidation
        // races the settling of the first.
        increment(&cached, "c").await;
        cached_writes += cached.client_cache_len();
        tokio::join!(increment(&plain, "b"), async {
            let _ = cached.load(&id).await.unwrap();
        });
        let truth = plain.load(&id).await.unwrap();
        eventually_loads(&cached, &id, truth.as_ref()).await;
    }
    assert!(
        cached_writes > 0,
        "no write of the cached store was cached: the test tests nothing"
    );
}

/// A lost connection loses the notices sent meanwhile: the cache is emptied, so a Redis that
/// restarted empty is not contradicted by stale copies, and it works again on the new connection.
#[tokio::test]
async fn after_a_reconnection_the_client_side_cache_serves_nothing_stale() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    let cached = RedisStore::builder()
        .client_side_cache(100)
        .connect(&server.url())
        .await
        .unwrap();
    let id = SessionId::generate();
    cached.save(&id, &record(Some(HOUR))).await.unwrap();
    assert_eq!(cached.client_cache_len(), 1);

    server.restart().await;
    // The restarted server is empty; the store must not answer from its cache.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match cached.load(&id).await {
            Ok(loaded) => {
                assert_eq!(loaded, None, "a stale copy served after the restart");
                break;
            }
            // The first calls may fail while the store reconnects.
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("the store did not reconnect: {error}"),
        }
    }

    // Tracking is back on the new connection: others' changes reach the cache again.
    let other = RedisStore::builder().connect(&server.url()).await.unwrap();
    let again = SessionId::generate();
    cached.save(&again, &record(Some(HOUR))).await.unwrap();
    assert!(cached.load(&again).await.unwrap().is_some());
    assert!(cached.client_cache_len() >= 1);
    other.destroy(&again).await.unwrap();
    eventually_loads(&cached, &again, None).await;
}
