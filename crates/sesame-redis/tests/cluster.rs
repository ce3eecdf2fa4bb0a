//! What is specific to a Redis Cluster (`REDIS_CLUSTER_URLS`, started by
//! `.ci/redis-cluster.sh start`): listing scans every master and fetches across slots, `clear`
//! stays within the prefix, and the format, TTLs and scripts are the same as on one Redis.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use sesame_core::serde_json::json;
use sesame_core::{CookieState, Patch, Record, SessionId, SessionStore};
use sesame_redis::redis;

use common::{cluster_store, cmd, raw_cluster};

fn record() -> Record {
    let mut cookie = CookieState::default();
    cookie.set_max_age(sesame_core::now(), Some(Duration::from_secs(3600)));
    let mut record = Record::new(cookie);
    record.data_mut().insert("user".into(), json!("ada"));
    record
}

/// The first slot of the range each key's slot falls in, by `CLUSTER SLOTS`: one per master.
async fn masters_of(keys: &[String]) -> BTreeSet<i64> {
    let mut conn = raw_cluster().await;
    let ranges: Vec<redis::Value> =
        cmd(&mut conn, &redis::cmd("CLUSTER").arg("SLOTS").clone()).await;
    let ranges: Vec<(i64, i64)> = ranges
        .iter()
        .map(|range| match range {
            redis::Value::Array(items) => match (&items[0], &items[1]) {
                (redis::Value::Int(start), redis::Value::Int(end)) => (*start, *end),
                other => panic!("CLUSTER SLOTS: {other:?}"),
            },
            other => panic!("CLUSTER SLOTS: {other:?}"),
        })
        .collect();
    let mut masters = BTreeSet::new();
    for key in keys {
        let slot: i64 = cmd(&mut conn, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await;
        let (start, _) = ranges
            .iter()
            .find(|(start, end)| (*start..=*end).contains(&slot))
            .unwrap();
        masters.insert(*start);
    }
    masters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_clear_cover_every_master_and_stay_in_the_prefix() {
    let Some(store) = cluster_store(|b| b.scan_count(7)).await else {
        return;
    };
    let other = cluster_store(|b| b).await.unwrap();
    assert!(store.is_cluster());
    let ids: BTreeSet<SessionId> = (0..60).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.save(id, &record()).await.unwrap();
    }
    let theirs = SessionId::generate();
    other.save(&theirs, &record()).await.unwrap();
    let keys: Vec<String> = ids.iter().map(|id| store.key(id)).collect();
    assert!(
        masters_of(&keys).await.len() >= 3,
        "the sessions are spread over the three masters"
    );

    let listed: BTreeSet<SessionId> = store.ids().await.unwrap().into_iter().collect();
    assert_eq!(listed, ids, "SCAN on every master finds every session");
    let all = store.all().await.unwrap();
    assert_eq!(all.len(), 60, "MGET across slots fetches every record");
    assert!(all.iter().all(|(_, r)| r.data() == record().data()));
    assert_eq!(store.len().await.unwrap(), 60);

    store.clear().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 0);
    assert!(
        other.load(&theirs).await.unwrap().is_some(),
        "other prefix kept"
    );
    other.clear().await.unwrap();
}

#[tokio::test]
async fn format_ttl_and_patch_on_a_cluster() {
    let Some(store) = cluster_store(|b| b).await else {
        return;
    };
    let mut conn = raw_cluster().await;
    let id = SessionId::generate();
    let key = store.key(&id);
    let rec = record();
    store.save(&id, &rec).await.unwrap();
    let stored: String = cmd(&mut conn, redis::cmd("GET").arg(&key)).await;
    assert_eq!(stored, rec.to_json().unwrap());
    let ttl: i64 = cmd(&mut conn, redis::cmd("PTTL").arg(&key)).await;
    assert!((3_590_000..=3_600_000).contains(&ttl), "PTTL {ttl}");

    // Another app's members, with what cjson would mangle, survive a patch untouched.
    let theirs = format!(
        r#"{{"cookie":{},"empty":[],"big":9007199254740993}}"#,
        sesame_core::serde_json::to_string(rec.cookie()).unwrap()
    );
    cmd::<()>(
        &mut conn,
        redis::cmd("SET").arg(&key).arg(&theirs).arg("KEEPTTL"),
    )
    .await;
    let mut patch = Patch::new(rec.cookie().clone());
    patch.set("n", json!(1));
    assert!(store.patch(&id, &patch).await.unwrap());
    let stored: String = cmd(&mut conn, redis::cmd("GET").arg(&key)).await;
    assert_eq!(
        stored,
        format!("{}{}", &theirs[..theirs.len() - 1], r#","n":1}"#)
    );
}
