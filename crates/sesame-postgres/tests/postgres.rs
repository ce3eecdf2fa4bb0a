//! What is specific to PostgreSQL: connect-pg-simple's table and row layout, table creation and
//! its opt-out, names, `json` and `jsonb` columns, time zones, pruning, the user index, the
//! deadline in `expire`, the statements a patch and a swap cost, and outages.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use sesame_core::serde_json::{self, Value, json};
use sesame_core::time::{OffsetDateTime, PrimitiveDateTime};
use sesame_core::{CookieState, Error, META_KEY, Patch, Record, SessionId, SessionStore, Swap};
use sesame_postgres::sqlx::{self, PgPool};
use sesame_postgres::{BuildError, PostgresStore, SchemaError};

use common::proxy::Proxy;

const HOUR: Duration = Duration::from_secs(3600);

fn record(ttl: Option<Duration>) -> Record {
    let mut cookie = CookieState::default();
    cookie.set_max_age(sesame_core::now(), ttl);
    let mut record = Record::new(cookie);
    record.data_mut().insert("user".into(), json!("ada"));
    record
        .data_mut()
        .insert("cart".into(), json!([1, 2, {"sku": "x"}]));
    record
}

/// The raw row: `sess` as text and `expire`.
async fn row(
    pool: &PgPool,
    store: &PostgresStore,
    id: &SessionId,
) -> Option<(String, PrimitiveDateTime)> {
    sqlx::query_as(&format!(
        "SELECT sess::text, expire FROM {} WHERE sid = $1",
        store.table()
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, store: &PostgresStore) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {}", store.table()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Inserts `n` rows that expired a minute ago, straight into the table.
async fn insert_expired(pool: &PgPool, store: &PostgresStore, n: i32) {
    sqlx::query(&format!(
        "INSERT INTO {} (sid, sess, expire) \
         SELECT 'dead' || g || '-' || md5(random()::text), '{{\"cookie\":{{}}}}', \
                (now() AT TIME ZONE 'UTC') - interval '1 minute' \
         FROM generate_series(1, $1) g",
        store.table()
    ))
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

fn utc(at: PrimitiveDateTime) -> OffsetDateTime {
    at.assume_utc()
}

/// The store creates connect-pg-simple's table (with `jsonb`), its primary key and the
/// `IDX_session_expire` index, in a schema it creates.
#[tokio::test]
async fn creates_the_table_in_a_fresh_schema() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let (store, schema) = common::store(|b| b).await.unwrap();
    assert_eq!(store.table(), format!("\"{schema}\".\"session\""));
    let columns: Vec<(String, String, Option<i32>, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, datetime_precision, is_nullable::text \
         FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'session' \
         ORDER BY ordinal_position",
    )
    .bind(&schema)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        columns,
        [
            ("sid".into(), "character varying".into(), None, "NO".into()),
            ("sess".into(), "jsonb".into(), None, "NO".into()),
            (
                "expire".into(),
                "timestamp without time zone".into(),
                Some(6),
                "NO".into()
            ),
        ]
    );
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(indexes.len(), 3, "{indexes:?}");
    assert_eq!(indexes[0].0, "IDX_session_expire");
    assert!(indexes[0].1.ends_with("(expire)"), "{indexes:?}");
    assert_eq!(indexes[1].0, "IDX_session_user");
    assert_eq!(indexes[2].0, "session_pkey");
    assert!(indexes[2].1.contains("UNIQUE") && indexes[2].1.ends_with("(sid)"));

    // A second store on the existing table: no error, same table.
    let again = PostgresStore::builder()
        .schema_name(&schema)
        .connect(&common::database_url())
        .await
        .unwrap();
    let id = SessionId::generate();
    again.save(&id, &record(Some(HOUR))).await.unwrap();
    assert!(store.load(&id).await.unwrap().is_some());
    common::drop_schema(&pool, &schema).await;
}

/// Many instances starting at once on a missing table: all succeed (creation is serialized).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creation_of_the_table_is_safe() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let schema = common::unique_schema();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move {
                PostgresStore::builder()
                    .schema_name(schema)
                    .max_connections(1)
                    .connect(&common::database_url())
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    common::drop_schema(&pool, &schema).await;
}

/// With creation turned off, a missing table is a clear error, and nothing is created.
#[tokio::test]
async fn opting_out_of_creation_reports_the_missing_table() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let schema = common::unique_schema();
    let builder = PostgresStore::builder()
        .schema_name(&schema)
        .create_table_if_missing(false);
    let missing = |error: &Error| {
        let Error::Backend { source, .. } = error else {
            return false;
        };
        matches!(
            source.downcast_ref::<SchemaError>(),
            Some(SchemaError::MissingTable { .. })
        )
    };
    match builder.clone().connect(&common::database_url()).await {
        Err(BuildError::Store(error)) => assert!(missing(&error), "{error:?}"),
        other => panic!("expected a missing table, got {other:?}"),
    }
    // Lazily: the first operation reports it.
    let store = builder.connect_lazy(&common::database_url()).unwrap();
    let error = store.load(&SessionId::generate()).await.unwrap_err();
    assert!(missing(&error), "{error:?}");
    assert!(
        std::error::Error::source(&error)
            .unwrap()
            .to_string()
            .contains("does not exist"),
        "{error}"
    );
    let schemas: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&schema)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(schemas, 0, "nothing was created");
}

/// Names are quoted, so any valid identifier works as written; invalid ones are refused clearly.
#[tokio::test]
async fn names_are_quoted_and_invalid_ones_refused() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let schema = format!("{} \"Q\"", common::unique_schema());
    let table = "My Sessions'; DROP TABLE x; --";
    let store = PostgresStore::builder()
        .schema_name(&schema)
        .table_name(table)
        .connect(&common::database_url())
        .await
        .unwrap();
    let id = SessionId::generate();
    let saved = record(Some(HOUR));
    store.save(&id, &saved).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(saved));
    let found: String = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind = 'r'",
    )
    .bind(&schema)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(found, table);
    sqlx::query(&format!(
        "DROP SCHEMA \"{}\" CASCADE",
        schema.replace('"', "\"\"")
    ))
    .execute(&pool)
    .await
    .unwrap();

    let url = common::database_url();
    for (builder, kind) in [
        (PostgresStore::builder().table_name(""), "table"),
        (PostgresStore::builder().table_name("x".repeat(64)), "table"),
        (PostgresStore::builder().schema_name("a\0b"), "schema"),
    ] {
        match builder.connect_lazy(&url) {
            Err(error @ BuildError::InvalidName { kind: k, .. }) => {
                assert_eq!(k, kind);
                assert!(
                    error
                        .to_string()
                        .starts_with(&format!("invalid {kind} name"))
                );
            }
            other => panic!("expected an invalid name, got {other:?}"),
        }
    }
    assert!(matches!(
        PostgresStore::builder()
            .expire_time_zone("UTC'; --")
            .connect_lazy(&url),
        Err(BuildError::InvalidTimeZone { .. })
    ));
    // A well-formed but unknown zone is refused by the server, once, at setup.
    assert!(matches!(
        PostgresStore::builder()
            .schema_name(common::unique_schema())
            .expire_time_zone("Mars/Olympus_Mons")
            .connect(&url)
            .await,
        Err(BuildError::Store(Error::Backend { .. }))
    ));
    assert!(matches!(
        PostgresStore::builder().connect_lazy("postgres://u@host:notaport/db"),
        Err(BuildError::InvalidUrl { .. })
    ));
}

/// The row is connect-pg-simple's: `sess` the express record, `expire` the cookie's expiry (UTC
/// wall-clock time), or now + the default TTL for a browser-session cookie.
#[tokio::test]
async fn row_layout_is_connect_pg_simple_s() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let (store, schema) = common::store(|b| b.default_ttl(Duration::from_secs(120)))
        .await
        .unwrap();
    let id = SessionId::generate();
    let saved = record(Some(HOUR));
    store.save(&id, &saved).await.unwrap();
    let (sess, expire) = row(&pool, &store, &id).await.unwrap();
    let sess: Value = serde_json::from_str(&sess).unwrap();
    assert_eq!(sess, saved.to_value().unwrap());
    assert_eq!(
        sess["cookie"]["expires"],
        json!(saved.to_value().unwrap()["cookie"]["expires"])
    );
    assert_eq!(Some(utc(expire)), saved.cookie().expires);

    let browser = SessionId::generate();
    let before = sesame_core::now();
    store.save(&browser, &record(None)).await.unwrap();
    let (sess, expire) = row(&pool, &store, &browser).await.unwrap();
    let sess: Value = serde_json::from_str(&sess).unwrap();
    assert_eq!(sess["cookie"]["expires"], Value::Null);
    let ttl = utc(expire) - before;
    assert!(
        ttl >= Duration::from_secs(120) && ttl <= Duration::from_secs(125),
        "{ttl}"
    );
    common::drop_schema(&pool, &schema).await;
}

/// On connect-pg-simple's `json` column the record's text is stored exactly as written, and rows
/// written the way connect-pg-simple writes them are read.
#[tokio::test]
async fn json_column_keeps_the_text_and_reads_express_rows() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let schema = common::unique_schema();
    common::create_connect_pg_simple_table(&pool, &schema).await;
    let store = PostgresStore::builder()
        .schema_name(&schema)
        .create_table_if_missing(false)
        .connect(&common::database_url())
        .await
        .unwrap();
    let id = SessionId::generate();
    let saved = record(Some(HOUR));
    store.save(&id, &saved).await.unwrap();
    let (sess, _) = row(&pool, &store, &id).await.unwrap();
    assert_eq!(sess, saved.to_json().unwrap(), "json keeps the text");

    // connect-pg-simple: `INSERT ... VALUES ($1, $2, to_timestamp($3))` with a JSON string and
    // whole seconds, on a connection whose TimeZone is the server's (UTC here).
    let express = SessionId::generate();
    let text = r#"{"cookie":{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z","httpOnly":true,"path":"/"},"views":3}"#;
    let expire = (sesame_core::now() + HOUR).unix_timestamp();
    sqlx::query(&format!(
        "INSERT INTO {} (sess, expire, sid) SELECT $1::text::json, to_timestamp($2), $3",
        store.table()
    ))
    .bind(text)
    .bind(expire as f64)
    .bind(express.as_str())
    .execute(&pool)
    .await
    .unwrap();
    let loaded = store.load(&express).await.unwrap().unwrap();
    assert_eq!(loaded.data().get("views"), Some(&json!(3)));
    assert_eq!(loaded.cookie().original_max_age, Some(3_600_000));

    // A patch keeps the column valid JSON and the record express-shaped.
    let mut patch = Patch::new(record(Some(HOUR)).cookie().clone());
    patch.set("views", json!(4));
    assert!(store.patch(&express, &patch).await.unwrap());
    let (sess, _) = row(&pool, &store, &express).await.unwrap();
    let sess: Value = serde_json::from_str(&sess).unwrap();
    assert_eq!(sess["views"], json!(4));
    assert_eq!(sess["cookie"]["originalMaxAge"], json!(3_600_000));
    common::drop_schema(&pool, &schema).await;
}

/// `touch` changes `expire` only; it never revives an expired or destroyed row.
#[tokio::test]
async fn touch_only_moves_expire() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let (store, schema) = common::store(|b| b).await.unwrap();
    let id = SessionId::generate();
    store.save(&id, &record(Some(HOUR))).await.unwrap();
    let (sess_before, _) = row(&pool, &store, &id).await.unwrap();
    let mut later = record(Some(2 * HOUR));
    later.data_mut().insert("not".into(), json!("written"));
    store.touch(&id, &later).await.unwrap();
    let (sess_after, expire) = row(&pool, &store, &id).await.unwrap();
    assert_eq!(sess_after, sess_before, "touch does not write sess");
    assert_eq!(Some(utc(expire)), later.cookie().expires);

    // An expired row that pruning has not removed yet stays dead.
    let dead = SessionId::generate();
    store.save(&dead, &record(Some(HOUR))).await.unwrap();
    sqlx::query(&format!(
        "UPDATE {} SET expire = expire - interval '2 hours' WHERE sid = $1",
        store.table()
    ))
    .bind(dead.as_str())
    .execute(&pool)
    .await
    .unwrap();
    store.touch(&dead, &record(Some(HOUR))).await.unwrap();
    assert!(store.load(&dead).await.unwrap().is_none());
    let mut patch = Patch::new(record(Some(HOUR)).cookie().clone());
    patch.set("x", json!(1));
    assert!(
        !store.patch(&dead, &patch).await.unwrap(),
        "patch of a dead row"
    );
    assert_eq!(
        store
            .compare_and_swap(&dead, "x", None, Some(&json!(1)))
            .await
            .unwrap(),
        Swap::Missing
    );
    // `create` may take the id of a dead row.
    store.create(&dead, &record(Some(HOUR))).await.unwrap();
    assert!(store.load(&dead).await.unwrap().is_some());
    common::drop_schema(&pool, &schema).await;
}

/// A patch writes only its keys and the cookie, and moves `expire` to the patch's expiry; a patch
/// or swap of a `sess` that is not an object is a decode error and changes nothing.
#[tokio::test]
async fn patch_and_swap_in_the_row() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let (store, schema) = common::store(|b| b).await.unwrap();
    let id = SessionId::generate();
    store.save(&id, &record(Some(HOUR))).await.unwrap();
    let later = record(Some(3 * HOUR));
    let mut patch = Patch::new(later.cookie().clone());
    patch.set("user", json!("grace"));
    patch.remove("cart");
    patch.set(
        "cookie",
        json!("ignored: the cookie is the patch's cookie state"),
    );
    assert!(store.patch(&id, &patch).await.unwrap());
    let (sess, expire) = row(&pool, &store, &id).await.unwrap();
    let sess: Value = serde_json::from_str(&sess).unwrap();
    let mut expected = Record::new(later.cookie().clone());
    expected.data_mut().insert("user".into(), json!("grace"));
    assert_eq!(sess, expected.to_value().unwrap());
    assert_eq!(Some(utc(expire)), later.cookie().expires);

    // Swaps: JSON null is a value, not absence; "cookie" is not data.
    assert_eq!(
        store
            .compare_and_swap(&id, "n", None, Some(&Value::Null))
            .await
            .unwrap(),
        Swap::Done
    );
    assert_eq!(
        store
            .compare_and_swap(&id, "n", None, Some(&json!(1)))
            .await
            .unwrap(),
        Swap::Changed(Some(Value::Null))
    );
    assert!(matches!(
        store
            .compare_and_swap(&id, "cookie", None, Some(&json!(1)))
            .await,
        Err(Error::Encode { .. })
    ));
    // The swap leaves `expire` alone.
    let (_, after) = row(&pool, &store, &id).await.unwrap();
    assert_eq!(after, expire);

    let odd = SessionId::generate();
    sqlx::query(&format!(
        "INSERT INTO {} VALUES ($1, '[1, 2]', (now() AT TIME ZONE 'UTC') + interval '1 hour')",
        store.table()
    ))
    .bind(odd.as_str())
    .execute(&pool)
    .await
    .unwrap();
    assert!(matches!(
        store.patch(&odd, &patch).await,
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        store
            .compare_and_swap(&odd, "x", None, Some(&json!(1)))
            .await,
        Err(Error::Decode { .. })
    ));
    let (sess, _) = row(&pool, &store, &odd).await.unwrap();
    assert_eq!(sess, "[1, 2]", "a non-object is left as it was");
    common::drop_schema(&pool, &schema).await;
}

/// With `expire_time_zone`, `expire` holds that zone's wall-clock time, as connect-pg-simple
/// writes it on a server whose default zone it is; with the wrong zone, both sides would disagree
/// on when a session ends by the zone's offset.
#[tokio::test]
async fn expire_time_zone_matches_a_non_utc_server() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let zone = "Asia/Kolkata"; // UTC+05:30 all year: no daylight-saving surprises.
    let (store, schema) = common::store(|b| b.expire_time_zone(zone)).await.unwrap();
    let id = SessionId::generate();
    let saved = record(Some(HOUR));
    store.save(&id, &saved).await.unwrap();
    let (_, expire) = row(&pool, &store, &id).await.unwrap();
    let expires = saved.cookie().expires.unwrap();
    assert_eq!(
        expire.assume_offset(sesame_core::time::UtcOffset::from_hms(5, 30, 0).unwrap()),
        expires
    );

    // connect-pg-simple on a server whose TimeZone is Asia/Kolkata: a session that expired ten
    // minutes ago.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query(&format!("SET TIME ZONE '{zone}'"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let express = SessionId::generate();
    let expired_at = (sesame_core::now() - Duration::from_secs(600)).unix_timestamp();
    sqlx::query(&format!(
        "INSERT INTO {} (sess, expire, sid) SELECT $1::text::json, to_timestamp($2), $3",
        store.table()
    ))
    .bind(r#"{"cookie":{"originalMaxAge":null,"expires":null}}"#)
    .bind(expired_at as f64)
    .bind(express.as_str())
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    assert!(
        store.load(&express).await.unwrap().is_none(),
        "expired for both"
    );
    // A store left at UTC would read that row as alive for five more hours.
    let utc_store = PostgresStore::builder()
        .schema_name(&schema)
        .connect(&common::database_url())
        .await
        .unwrap();
    assert!(utc_store.load(&express).await.unwrap().is_some());
    common::drop_schema(&pool, &schema).await;
}

/// `prune` deletes every expired row, in batches of the configured size (one statement per batch,
/// counted at a proxy), and nothing else.
#[tokio::test]
async fn prune_deletes_expired_rows_in_batches() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let proxy = Proxy::to_database().await;
    let schema = common::unique_schema();
    let store = PostgresStore::builder()
        .schema_name(&schema)
        .disable_pruning()
        .prune_batch_size(10)
        .max_connections(1)
        .connect(&proxy.url())
        .await
        .unwrap();
    let live: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
    for id in &live {
        store.save(id, &record(Some(HOUR))).await.unwrap();
    }
    insert_expired(&pool, &store, 25).await;
    assert_eq!(store.prune().await.unwrap(), 25);
    assert_eq!(count(&pool, &store).await, 3);
    // Again, counting the statements once they are prepared: 25 rows, batches of 10.
    insert_expired(&pool, &store, 25).await;
    proxy.reset_round_trips();
    assert_eq!(store.prune().await.unwrap(), 25);
    assert_eq!(proxy.round_trips(), 3, "10 + 10 + 5");
    assert_eq!(store.prune().await.unwrap(), 0);
    for id in &live {
        assert!(store.load(id).await.unwrap().is_some());
    }
    common::drop_schema(&pool, &schema).await;
}

/// The background task prunes at its interval, survives errors (the table gone for a while), and
/// ends when the store is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_task_survives_errors_and_ends_with_the_store() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let (store, schema) = common::store(|b| {
        b.prune_interval(Duration::from_millis(100))
            .prune_batch_size(7)
    })
    .await
    .unwrap();
    let keep = SessionId::generate();
    store.save(&keep, &record(Some(HOUR))).await.unwrap();

    let wait_until_pruned = || async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&pool, &store).await > 1 {
            assert!(Instant::now() < deadline, "the task did not prune");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    insert_expired(&pool, &store, 20).await;
    wait_until_pruned().await;

    // The table disappears for a few intervals: the task logs and goes on.
    let table = store.table().to_owned();
    let exec = |sql: String| {
        let pool = pool.clone();
        async move { sqlx::query(&sql).execute(&pool).await.unwrap() }
    };
    exec(format!("ALTER TABLE {table} RENAME TO away")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    exec(format!("ALTER TABLE \"{schema}\".away RENAME TO session")).await;
    insert_expired(&pool, &store, 5).await;
    wait_until_pruned().await;
    assert!(store.load(&keep).await.unwrap().is_some());

    // Dropped: nobody prunes any more.
    let table_store = PostgresStore::builder()
        .schema_name(&schema)
        .disable_pruning()
        .build(pool.clone())
        .unwrap();
    drop(store);
    tokio::time::sleep(Duration::from_millis(50)).await;
    insert_expired(&pool, &table_store, 5).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        count(&pool, &table_store).await,
        6,
        "the task outlived its store"
    );
    common::drop_schema(&pool, &schema).await;
}

/// A patch, a swap, a load, a save and a touch each cost one round trip (counted at a proxy,
/// once the statements are prepared on the connection). sqlx's pool then tests the connection as
/// it takes it back (an empty `Sync`), after the caller has its answer; those are counted apart.
#[tokio::test]
async fn each_operation_is_one_round_trip() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let proxy = Proxy::to_database().await;
    let schema = common::unique_schema();
    let store = PostgresStore::builder()
        .schema_name(&schema)
        .max_connections(1)
        .connect(&proxy.url())
        .await
        .unwrap();
    let id = SessionId::generate();
    let mut patch = Patch::new(record(Some(HOUR)).cookie().clone());
    patch.set("k", json!(1));
    patch.remove("cart");
    // Prepares every statement once.
    store.save(&id, &record(Some(HOUR))).await.unwrap();
    store.load(&id).await.unwrap();
    store.touch(&id, &record(Some(HOUR))).await.unwrap();
    store.patch(&id, &patch).await.unwrap();
    store
        .compare_and_swap(&id, "n", None, Some(&json!(0)))
        .await
        .unwrap();
    store.user_sessions("ada").await.unwrap();

    let rounds = 10;
    proxy.reset_round_trips();
    for n in 0..rounds {
        patch.set("k", json!(n));
        assert!(store.patch(&id, &patch).await.unwrap());
    }
    assert_eq!(proxy.round_trips(), rounds, "patches");
    proxy.reset_round_trips();
    for n in 0..rounds {
        assert_eq!(
            store
                .compare_and_swap(&id, "n", Some(&json!(n)), Some(&json!(n + 1)))
                .await
                .unwrap(),
            Swap::Done
        );
    }
    assert_eq!(proxy.round_trips(), rounds, "swaps");
    proxy.reset_round_trips();
    store.load(&id).await.unwrap();
    store.save(&id, &record(Some(HOUR))).await.unwrap();
    store.touch(&id, &record(Some(HOUR))).await.unwrap();
    assert_eq!(proxy.round_trips(), 3, "load, save, touch");
    // A session with a user costs the same: PostgreSQL keeps the index within each statement.
    let logged_in = record_of("ada", HOUR);
    let mut touch = Record::new(logged_in.cookie().clone());
    touch
        .data_mut()
        .insert(META_KEY.into(), logged_in.data()[META_KEY].clone());
    let mut login = Patch::new(logged_in.cookie().clone());
    login.set(META_KEY, logged_in.data()[META_KEY].clone());
    proxy.reset_round_trips();
    store.save(&id, &logged_in).await.unwrap();
    store.touch(&id, &touch).await.unwrap();
    assert!(store.patch(&id, &login).await.unwrap());
    assert_eq!(
        proxy.round_trips(),
        3,
        "save, touch, patch of a logged-in session"
    );
    proxy.reset_round_trips();
    assert_eq!(store.user_sessions("ada").await.unwrap().len(), 1);
    assert_eq!(proxy.round_trips(), 1, "user_sessions");
    eprintln!(
        "connection tests on release since the last reset: {}",
        proxy.pings()
    );
    common::drop_schema(&pool, &schema).await;
}

/// Nothing listens: every operation fails within the bound, with a store error, not a hang.
#[tokio::test]
async fn an_unreachable_server_fails_fast() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("postgres://postgres@{closed}/test");
    let builder = PostgresStore::builder()
        .acquire_timeout(Duration::from_millis(300))
        .statement_timeout(Duration::from_millis(300));
    let started = Instant::now();
    match builder.clone().connect(&url).await {
        Err(BuildError::Store(error)) => assert!(error.is_unavailable(), "{error:?}"),
        other => panic!("expected an outage error, got {other:?}"),
    }
    let store = builder.connect_lazy(&url).unwrap();
    let error = store.load(&SessionId::generate()).await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    let error = store
        .save(&SessionId::generate(), &record(Some(HOUR)))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    let elapsed = started.elapsed();
    eprintln!("connect + load + save against a closed port: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

/// PostgreSQL goes away (the proxy stops) and comes back: requests fail fast meanwhile, and the
/// same store works again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_the_server_is_back() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let proxy = Proxy::to_database().await;
    let schema = common::unique_schema();
    let store = PostgresStore::builder()
        .schema_name(&schema)
        .acquire_timeout(Duration::from_millis(500))
        .statement_timeout(Duration::from_secs(1))
        .connect(&proxy.url())
        .await
        .unwrap();
    let id = SessionId::generate();
    store.save(&id, &record(Some(HOUR))).await.unwrap();

    proxy.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let error = store.load(&id).await.unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
        let elapsed = started.elapsed();
        eprintln!("a load while the server is away failed in {elapsed:?}: {error}");
        assert!(
            elapsed < store.timeout() + Duration::from_millis(500),
            "took {elapsed:?}"
        );
    }

    proxy.restart().await;
    // The pool replaces its broken connections by itself; the first request already works.
    let started = Instant::now();
    assert!(store.load(&id).await.unwrap().is_some());
    eprintln!(
        "the first load after the outage took {:?}",
        started.elapsed()
    );
    store.save(&id, &record(Some(HOUR))).await.unwrap();
    common::drop_schema(&pool, &schema).await;
}

/// A statement stuck behind a lock ends at the statement timeout: the server cancels it on the
/// store's own pool, and the store's bound ends it on a pool without a server-side timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_statement_times_out() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let (store, schema) = common::store(|b| b.statement_timeout(Duration::from_millis(300)))
        .await
        .unwrap();
    let own_pool = PostgresStore::builder()
        .schema_name(&schema)
        .acquire_timeout(Duration::from_millis(300))
        .statement_timeout(Duration::from_millis(300))
        .build(pool.clone())
        .unwrap();
    let id = SessionId::generate();
    store.save(&id, &record(Some(HOUR))).await.unwrap();
    own_pool.init().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT 1 FROM {} WHERE sid = $1 FOR UPDATE",
        store.table()
    ))
    .bind(id.as_str())
    .execute(&mut *tx)
    .await
    .unwrap();
    let mut patch = Patch::new(record(Some(HOUR)).cookie().clone());
    patch.set("k", json!(1));
    for store in [&store, &own_pool] {
        let started = Instant::now();
        let error = store.patch(&id, &patch).await.unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    tx.rollback().await.unwrap();
    assert!(
        store.patch(&id, &patch).await.unwrap(),
        "works once the lock is gone"
    );
    common::drop_schema(&pool, &schema).await;
}

/// A record as `record`, logged in to `user` (the meta object sesame keeps under `"sesame"`).
fn record_of(user: &str, ttl: Duration) -> Record {
    let mut record = record(Some(ttl));
    record
        .data_mut()
        .insert(META_KEY.into(), json!({"user": user, "login": 1}));
    record
}

/// The plan PostgreSQL picks for the store's `user_sessions` query on `table`: the generic plan of
/// the prepared statement (the one a parameter gets), with sequential scans discouraged as on a
/// large table.
async fn user_sessions_plan(pool: &PgPool, table: &str) -> String {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(&format!(
        "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan; \
         PREPARE user_q(text, timestamptz) AS SELECT sid, sess::text FROM {table} \
         WHERE (\"sess\" -> 'sesame' ->> 'user') = $1 AND expire > ($2 AT TIME ZONE 'UTC')"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE user_q('ada', now())")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    plan.join("\n")
}

/// The user index's definition on `schema`'s table, and whether it is valid.
async fn user_index(pool: &PgPool, schema: &str) -> Option<(String, bool)> {
    sqlx::query_as(
        "SELECT pg_get_indexdef(c.oid), i.indisvalid FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = 'IDX_session_user'",
    )
    .bind(schema)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// The user index is what the docs say: a partial expression index on
/// `sess -> 'sesame' ->> 'user'`, with no new column, used by `user_sessions` (with a parameter,
/// as the store sends it); the records it returns are checked, so a user id stored as a number
/// (which `->>` turns into text) is not taken for a string one.
#[tokio::test]
async fn user_index_is_a_partial_expression_index() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let (store, schema) = common::store(|b| b).await.unwrap();
    assert!(store.capabilities().user_index);
    let (definition, valid) = user_index(&pool, &schema).await.unwrap();
    assert!(valid);
    assert!(
        definition.ends_with(
            "USING btree ((((sess -> 'sesame'::text) ->> 'user'::text))) \
             WHERE (((sess -> 'sesame'::text) ->> 'user'::text) IS NOT NULL)"
        ),
        "{definition}"
    );
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1",
    )
    .bind(&schema)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(columns, 3, "sid, sess, expire: no column of sesame's own");
    let plan = user_sessions_plan(&pool, store.table()).await;
    assert!(plan.contains("IDX_session_user"), "{plan}");

    let (ada, ada_too, anonymous, numeric) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    store.save(&ada, &record_of("ada", HOUR)).await.unwrap();
    store
        .create(&ada_too, &record_of("ada", HOUR))
        .await
        .unwrap();
    store.save(&anonymous, &record(Some(HOUR))).await.unwrap();
    let mut numeric_user = record(Some(HOUR));
    numeric_user
        .data_mut()
        .insert(META_KEY.into(), json!({"user": 42}));
    store.save(&numeric, &numeric_user).await.unwrap();
    let indexed: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {} WHERE (sess -> 'sesame' ->> 'user') IS NOT NULL",
        store.table()
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        indexed, 3,
        "the index holds the rows with a user, not the anonymous one"
    );
    let mut listed: Vec<SessionId> = store
        .user_sessions("ada")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    listed.sort();
    let mut expected = vec![ada, ada_too];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(
        store.user_sessions("42").await.unwrap().is_empty(),
        "a user id is a string"
    );
    common::drop_schema(&pool, &schema).await;
}

/// On connect-pg-simple's table (a `json` column, in use, with sessions written by Express), the
/// store builds the user index in the background when creation is on, and lists the sessions
/// Express wrote with a user; with creation off it creates nothing and still answers.
#[tokio::test]
async fn user_index_is_built_on_an_existing_table() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    for create in [false, true] {
        let schema = common::unique_schema();
        common::create_connect_pg_simple_table(&pool, &schema).await;
        let (express, anonymous) = (SessionId::generate(), SessionId::generate());
        for (id, meta) in [
            (&express, r#","sesame":{"user":"ada","login":1}"#),
            (&anonymous, ""),
        ] {
            let text = format!(
                r#"{{"cookie":{{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z","httpOnly":true,"path":"/"}}{meta}}}"#
            );
            sqlx::query(&format!(
                "INSERT INTO \"{schema}\".\"session\" (sess, expire, sid) \
                 SELECT $1::text::json, to_timestamp($2), $3"
            ))
            .bind(text)
            .bind((sesame_core::now() + HOUR).unix_timestamp() as f64)
            .bind(id.as_str())
            .execute(&pool)
            .await
            .unwrap();
        }
        let store = PostgresStore::builder()
            .schema_name(&schema)
            .create_table_if_missing(create)
            .connect(&common::database_url())
            .await
            .unwrap();
        let listed = store.user_sessions("ada").await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].0, express);
        assert_eq!(listed[0].1.user(), Some("ada"));
        if create {
            let started = Instant::now();
            let (definition, _) = loop {
                match user_index(&pool, &schema).await {
                    Some((definition, true)) => break (definition, true),
                    _ if started.elapsed() > Duration::from_secs(30) => {
                        panic!("the user index was not built")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            assert!(definition.contains("IS NOT NULL"), "{definition}");
            let plan = user_sessions_plan(&pool, store.table()).await;
            assert!(plan.contains("IDX_session_user"), "{plan}");
            assert_eq!(store.user_sessions("ada").await.unwrap().len(), 1);
        } else {
            assert_eq!(user_index(&pool, &schema).await, None, "nothing created");
        }
        drop(store);
        common::drop_schema(&pool, &schema).await;
    }
}

/// The cookie's deadline (the layer's idle and absolute timeouts) caps `expire` on save, create,
/// touch and patch, though `cookie.expires` is later; a save past its deadline deletes the row.
#[tokio::test]
async fn deadline_caps_expire() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    let (store, schema) = common::store(|b| b).await.unwrap();
    let deadline = sesame_core::now() + Duration::from_secs(600);
    let mut capped = record(Some(HOUR));
    capped.cookie_mut().deadline = Some(deadline);
    let close = |expire: PrimitiveDateTime| {
        let difference = (utc(expire) - deadline).abs();
        assert!(
            difference <= Duration::from_millis(1),
            "expire {expire} is not the deadline {deadline}"
        );
    };

    let (saved, created, touched, patched) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    store.save(&saved, &capped).await.unwrap();
    store.create(&created, &capped).await.unwrap();
    for id in [&touched, &patched] {
        store.save(id, &record(Some(HOUR))).await.unwrap();
    }
    store
        .touch(&touched, &Record::new(capped.cookie().clone()))
        .await
        .unwrap();
    let mut patch = Patch::new(capped.cookie().clone());
    patch.set("x", json!(1));
    assert!(store.patch(&patched, &patch).await.unwrap());
    for id in [&saved, &created, &touched, &patched] {
        close(row(&pool, &store, id).await.unwrap().1);
    }
    let (sess, _) = row(&pool, &store, &saved).await.unwrap();
    assert!(
        !sess.contains("deadline"),
        "the deadline is not part of the record: {sess}"
    );

    let mut past = record(Some(HOUR));
    past.cookie_mut().deadline = Some(sesame_core::now() - Duration::from_secs(1));
    store.save(&saved, &past).await.unwrap();
    assert!(
        row(&pool, &store, &saved).await.is_none(),
        "a save past its deadline deletes"
    );
    common::drop_schema(&pool, &schema).await;
}
