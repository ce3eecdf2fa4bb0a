//! What the PostgreSQL tests share: the server's URL, a fresh schema per test, raw SQL.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sesame_postgres::sqlx::{self, PgPool, postgres::PgPoolOptions};
use sesame_postgres::{PostgresStore, PostgresStoreBuilder};

pub mod proxy;

/// The server: `DATABASE_URL`, or the one on this machine.
pub fn database_url() -> String {
    sesame_conformance::backend_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
}

/// The prefix of every test schema: `sesame_t_<unix seconds>_<random>`, so leftovers of earlier
/// runs (a failed test does not clean up) can be recognized by age and dropped.
const SCHEMA_PREFIX: &str = "sesame_t_";

/// A schema name no other test uses.
pub fn unique_schema() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sesame_conformance::unique_name(&format!("{SCHEMA_PREFIX}{secs}_"))
}

/// A pool for raw SQL, or `None` (a loud skip, a failure under CI) when PostgreSQL is missing.
pub async fn raw_pool() -> Option<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&database_url())
        .await;
    match pool {
        Ok(pool) => {
            drop_old_schemas(&pool).await;
            Some(pool)
        }
        Err(error) => sesame_conformance::backend_missing("PostgreSQL", &error),
    }
}

/// A store in a fresh schema (created by the store), configured by `configure`, with its schema.
pub async fn store(
    configure: impl FnOnce(PostgresStoreBuilder) -> PostgresStoreBuilder,
) -> Option<(PostgresStore, String)> {
    let schema = unique_schema();
    let builder = configure(PostgresStore::builder().schema_name(&schema));
    match builder.connect(&database_url()).await {
        Ok(store) => {
            // Leftovers of old runs go now, while we are here.
            drop_old_schemas(store.pool()).await;
            Some((store, schema))
        }
        Err(error) => sesame_conformance::backend_missing("PostgreSQL", &error),
    }
}

/// Drops the test schemas of runs more than an hour old, once per test binary.
async fn drop_old_schemas(pool: &PgPool) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(SCHEMA_PREFIX)
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    for schema in schemas {
        let Some(secs) = schema[SCHEMA_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|secs| secs.parse::<u64>().ok())
        else {
            continue;
        };
        if now.saturating_sub(secs) > 3600 {
            // Another test binary may drop it at the same time: errors are fine.
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(pool)
                .await;
        }
    }
}

/// Drops a test's schema (at the end of a test that passed).
pub async fn drop_schema(pool: &PgPool, schema: &str) {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(pool)
        .await
        .unwrap();
}

/// connect-pg-simple's `table.sql`, verbatim (a `json` column), in `schema`.
pub async fn create_connect_pg_simple_table(pool: &PgPool, schema: &str) {
    let sql = format!(
        r#"CREATE SCHEMA "{schema}";
SET LOCAL search_path TO "{schema}";
CREATE TABLE "session" (
  "sid" varchar NOT NULL COLLATE "default",
	"sess" json NOT NULL,
	"expire" timestamp(6) NOT NULL
)
WITH (OIDS=FALSE);

ALTER TABLE "session" ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE;

CREATE INDEX "IDX_session_expire" ON "session" ("expire");
"#
    );
    sqlx::raw_sql(&sql).execute(pool).await.unwrap();
}
