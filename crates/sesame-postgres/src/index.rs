//! Building the user index on a table that is already in use.
//!
//! A table the store creates gets the index with it, in the same transaction, while it is empty. A
//! table that exists without it (connect-pg-simple's, or one an older sesame created) may be large
//! and busy, shared with an Express app: a plain `CREATE INDEX` would block every write to it for
//! the whole build, and would be cancelled by the statement timeout on a large table, at every
//! start. So the store builds it `CONCURRENTLY` (writes go on meanwhile) in a task of its own,
//! off the requests' path, on a connection of its own without the statement timeout, and closed
//! afterwards so that setting never returns to the pool. `user_sessions` works all along; it
//! scans the table until the index is there.

use sqlx::{PgPool, Postgres, pool::PoolConnection};

use crate::lock_key;
use crate::sql::Names;

/// What a build found or did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The index was built.
    Built,
    /// The index was there already (another instance built it meanwhile).
    Present,
    /// Another instance of the store is building it.
    Elsewhere,
    /// An invalid index of that name is there: a concurrent build that failed (it is left for an
    /// operator to rebuild, not dropped behind their back), or one running outside sesame.
    Invalid,
}

/// Spawns the build of the user index of `names`' table. Errors (such as a database user that
/// does not own the table) are logged; the store works without the index.
pub(crate) fn spawn_build(pool: PgPool, names: Names) {
    tokio::spawn(async move {
        match build(&pool, &names).await {
            Ok(Outcome::Built) => {
                tracing::info!(table = %names.table, index = %names.user_index, "built the user index");
            }
            Ok(Outcome::Present | Outcome::Elsewhere) => {}
            Ok(Outcome::Invalid) => tracing::warn!(
                table = %names.table,
                index = %names.user_index,
                "the user index is invalid (a concurrent build failed, or is running): \
                 user_sessions scans the table until it is rebuilt (REINDEX INDEX CONCURRENTLY)"
            ),
            Err(error) => tracing::warn!(
                table = %names.table,
                index = %names.user_index,
                %error,
                "could not build the user index: user_sessions scans the table; create it with \
                 the SQL of PostgresStoreBuilder::table_sql"
            ),
        }
    });
}

async fn build(pool: &PgPool, names: &Names) -> Result<Outcome, sqlx::Error> {
    let mut conn: PoolConnection<Postgres> = pool.acquire().await?;
    // Its `statement_timeout` is changed below, and it holds a session lock: it never goes back.
    conn.close_on_drop();
    // One builder among the instances that start together: PostgreSQL runs one concurrent build
    // of a table at a time, and two of the same name would fail. The others go on without waiting
    // (a session lock, released when the connection closes).
    let key = lock_key(&format!("{} user index", names.table));
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Outcome::Elsewhere);
    }
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT (SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = to_regclass($1) AND c.relname::text = $2)",
    )
    .bind(&names.table)
    .bind(&names.user_index_name)
    .fetch_one(&mut *conn)
    .await?;
    match valid {
        Some(true) => return Ok(Outcome::Present),
        Some(false) => return Ok(Outcome::Invalid),
        None => {}
    }
    // A large table takes as long as it takes; nobody waits for it.
    sqlx::query("SET statement_timeout = 0")
        .persistent(false)
        .execute(&mut *conn)
        .await?;
    // One statement on its own: CONCURRENTLY cannot run inside a transaction block.
    sqlx::query(&names.create_user_index(true))
        .persistent(false)
        .execute(&mut *conn)
        .await?;
    Ok(Outcome::Built)
}
