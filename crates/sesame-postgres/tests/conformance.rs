//! The store contract, checked on a real PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): on a `jsonb` table the store creates, and on
//! connect-pg-simple's own `json` table. Every test gets its own schema, so they run in parallel.
#![allow(clippy::unwrap_used)]

mod common;

use sesame_conformance::Fixture;
use sesame_core::SessionId;
use sesame_postgres::PostgresStore;
use sesame_postgres::sqlx;

/// A `sess` that is valid JSON, as the column requires, but not an express-session record.
const CORRUPT: &str = r#"["not", "a", "session"]"#;

async fn write_corrupt(store: &PostgresStore, id: &SessionId) -> bool {
    sqlx::query(&format!(
        "INSERT INTO {} (sid, sess, expire) \
         VALUES ($1, $2::text::json, (now() AT TIME ZONE 'UTC') + interval '1 hour')",
        store.table()
    ))
    .bind(id.as_str())
    .bind(CORRUPT)
    .execute(store.pool())
    .await
    .unwrap();
    true
}

/// The table the store creates: `sess jsonb`.
struct Jsonb;

impl Fixture for Jsonb {
    type Store = PostgresStore;

    async fn store(&self) -> Option<PostgresStore> {
        common::store(|builder| builder)
            .await
            .map(|(store, _)| store)
    }

    async fn write_corrupt_record(&self, store: &PostgresStore, id: &SessionId) -> bool {
        write_corrupt(store, id).await
    }
}

/// connect-pg-simple's `table.sql`: `sess json`, created by "the Express app", not by the store.
struct Json;

impl Fixture for Json {
    type Store = PostgresStore;

    async fn store(&self) -> Option<PostgresStore> {
        let pool = common::raw_pool().await?;
        let schema = common::unique_schema();
        common::create_connect_pg_simple_table(&pool, &schema).await;
        let store = PostgresStore::builder()
            .schema_name(schema)
            .create_table_if_missing(false)
            .connect(&common::database_url())
            .await
            .unwrap();
        Some(store)
    }

    async fn write_corrupt_record(&self, store: &PostgresStore, id: &SessionId) -> bool {
        write_corrupt(store, id).await
    }
}

mod jsonb {
    sesame_conformance::store_tests!(super::Jsonb);
}

mod json {
    sesame_conformance::store_tests!(super::Json);
}
