//! A PostgreSQL session store for [sesame](https://crates.io/crates/axum-sesame), compatible with
//! [connect-pg-simple](https://github.com/voxpelli/node-connect-pg-simple), on
//! [sqlx](https://docs.rs/sqlx).
//!
//! # What is stored
//!
//! [`PostgresStore`] keeps sessions in connect-pg-simple's table, so an Express app and a sesame
//! app can share one database (and, with the same secret and cookie name, one login) during a
//! migration:
//!
//! | column | holds |
//! |---|---|
//! | `sid varchar PRIMARY KEY` | the session id |
//! | `sess jsonb` (or `json`) | express-session's record: the session's keys plus a `cookie` object |
//! | `expire timestamp(6)` | when the session expires: the cookie's `expires`, or now + the default TTL (one day) for a browser-session cookie, but never later than the layer's idle or absolute timeout; wall-clock UTC by default (see below) |
//!
//! | operation | SQL |
//! |---|---|
//! | save | `INSERT ... ON CONFLICT (sid) DO UPDATE` (an upsert); a record that has already expired is deleted instead |
//! | `create` | `INSERT ... ON CONFLICT DO UPDATE ... WHERE` the old row has expired: a live session under the id is [`Error::AlreadyExists`], never overwritten |
//! | load, listing | `... WHERE expire > now`: a row past `expire` is never returned, pruned or not |
//! | touch | `UPDATE ... SET expire` of a live row: the data is not rewritten |
//! | patch, compare-and-swap | one `UPDATE` of the changed keys inside `sess` (see below) |
//! | pruning | a background task deletes expired rows in bounded batches |
//! | sessions of a user | `SELECT ... WHERE sess -> 'sesame' ->> 'user' = $1 AND expire > now`, through the user index (see below) |
//!
//! The table is created when missing (turn that off with
//! [`create_table_if_missing(false)`](PostgresStoreBuilder::create_table_if_missing)). This is the
//! SQL, connect-pg-simple's `table.sql` with `jsonb` for `sess`
//! ([`PostgresStoreBuilder::table_sql`] gives it for your names):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "session" (
//!   "sid" varchar NOT NULL COLLATE "default" PRIMARY KEY,
//!   "sess" jsonb NOT NULL,
//!   "expire" timestamp(6) NOT NULL
//! );
//! CREATE INDEX IF NOT EXISTS "IDX_session_expire" ON "session" ("expire");
//! CREATE INDEX IF NOT EXISTS "IDX_session_user" ON "session" (("sess" -> 'sesame' ->> 'user'))
//!   WHERE ("sess" -> 'sesame' ->> 'user') IS NOT NULL;
//! ```
//!
//! connect-pg-simple reads and writes a `jsonb` column as it does a `json` one. A table that
//! connect-pg-simple created, with `sess json`, works too: the store finds the column's type on
//! first use and converts where needed. (A `json` column keeps the record's text as written; a
//! `jsonb` one normalizes it, which changes key order and spacing but never the values.)
//!
//! # Sessions of a user
//!
//! sesame records who is logged in to a session inside the record, under the `sesame` key
//! (`"sesame": {"user": "42", ...}`), and [`SessionStore::user_sessions`] lists a user's live
//! sessions (to show them, or to log them out everywhere). The table gets no new column, so
//! connect-pg-simple keeps reading and writing it as it is: the index is an *expression index*
//! on `sess -> 'sesame' ->> 'user'`, which works on a `json` column as on a `jsonb` one. It is
//! partial (`WHERE ... IS NOT NULL`): it holds only the sessions somebody is logged in to, so
//! anonymous sessions cost it nothing. PostgreSQL updates it with every write, in the same
//! statement, so saves, patches and touches stay one round trip each and the index never lags: a
//! destroyed, pruned, expired or logged-out session is never listed. Listing is one query; each
//! record returned is decoded and its user checked.
//!
//! The index is created with the table. On a table that exists without it, the store builds it in
//! the background with `CREATE INDEX CONCURRENTLY` (writes go on meanwhile) when creation is on,
//! and only logs a warning when it is off (add it with [`PostgresStoreBuilder::table_sql`]'s
//! SQL). Without the index `user_sessions` still answers correctly, by scanning the table.
//!
//! # Configuration
//!
//! ```no_run
//! use sesame_postgres::PostgresStore;
//! use std::time::Duration;
//!
//! # async fn run(pool: sqlx::PgPool) -> Result<(), sesame_postgres::BuildError> {
//! // From a URL, with the defaults: table "session" on the search_path, created if missing,
//! // pruned every 15 minutes (with jitter), two seconds to get a connection, five per statement.
//! let store = PostgresStore::from_url("postgres://app@127.0.0.1/app").await?;
//!
//! // Or configured, with connect-pg-simple's options and the bounds on waiting.
//! let store = PostgresStore::builder()
//!     .schema_name("auth")
//!     .table_name("user_sessions")
//!     .create_table_if_missing(false)
//!     .default_ttl(Duration::from_secs(3600))
//!     .prune_interval(Duration::from_secs(60))
//!     .prune_batch_size(500)
//!     .acquire_timeout(Duration::from_millis(500))
//!     .statement_timeout(Duration::from_secs(1))
//!     .connect("postgres://app@127.0.0.1/app")
//!     .await?;
//!
//! // Or over a pool you built (TLS, sizes, your own timeouts).
//! let store = PostgresStore::builder().build(pool)?;
//! store.init().await?; // optional: check the table now rather than on first use
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! For TLS (`sslmode=require` and up) enable this crate's `rustls` feature, or build the pool with
//! the TLS feature of the re-exported [`sqlx`] of your choice.
//!
//! # Time zones
//!
//! `expire` is a `timestamp` *without* time zone. connect-pg-simple writes `to_timestamp(...)`
//! into it, which PostgreSQL turns into the wall-clock time of the connection's `TimeZone`; for
//! node-postgres that is the server's default (`SHOW timezone`; `Etc/UTC` in the official Docker
//! images). sesame writes and compares UTC wall-clock time by default, converting explicitly
//! (`AT TIME ZONE 'UTC'`), whatever the `TimeZone` of its connections. When an Express app shares
//! the table and the server's default zone is not UTC, set
//! [`expire_time_zone`](PostgresStoreBuilder::expire_time_zone) to it, so both sides agree.
//!
//! connect-pg-simple also rounds `expire` up to a whole second; sesame keeps the cookie's
//! milliseconds. Each reads the other's rows correctly.
//!
//! # Outages
//!
//! Getting a connection is bounded by the acquire timeout (two seconds by default) and every
//! statement by the statement timeout (five seconds; PostgreSQL's `statement_timeout` on the
//! store's own pools, and a bound in the store whatever the pool). While PostgreSQL is down a
//! request gets [`Error::Timeout`] or [`Error::Backend`] within those bounds, never a hang; once it
//! is back, the same store works again: a pooled connection that broke meanwhile is replaced, and
//! an operation that is safe to repeat is retried once on a fresh connection.
//!
//! # Concurrent requests
//!
//! Beyond connect-pg-simple, a save of an existing session is a *patch*: one `UPDATE` that applies
//! only the keys the request changed to `sess` as stored now
//! (`(sess - removed_keys) || set_keys`, with the cookie), so two concurrent requests keep each
//! other's changes; and it only updates a live row, so a destroyed session is never brought back
//! by an in-flight save. A compare-and-swap of one key is one statement too. Both cost one round
//! trip, as a plain save does (sqlx's pool then tests the connection as it takes it back, after
//! the caller has its answer).
//!
//! An operation the store stopped waiting for (its bound passed without the server's answer) may
//! still be carried out by the server; on the store's own pools the server's `statement_timeout`
//! cancels it instead.
#![forbid(unsafe_code)]

mod builder;
mod index;
mod prune;
mod sql;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};
use sesame_core::serde_json::{self, Value};
use sesame_core::time::OffsetDateTime;
use sesame_core::{
    COOKIE_KEY, Capabilities, CookieState, Error, Patch, Record, Result, SessionId, SessionStore,
    Swap,
};
use sqlx::PgPool;
use tokio::sync::{OnceCell, watch};

pub use crate::builder::{BuildError, PostgresStoreBuilder, SchemaError};
use crate::sql::{Names, Queries, SessType};

/// The sqlx crate, re-exported so users need one dependency to build a pool.
pub use sqlx;

const STORE_NAME: &str = "postgres";

/// connect-pg-simple's table name.
pub const DEFAULT_TABLE: &str = "session";

/// How long a browser-session record (one without `cookie.expires`) lives: one day, as
/// connect-pg-simple.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often expired rows are pruned: 15 minutes, as connect-pg-simple.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// How many rows one pruning statement deletes at most.
pub const DEFAULT_PRUNE_BATCH_SIZE: u32 = 1000;

/// How long a request waits for a pooled connection: long enough for a busy pool, short enough
/// that a request during an outage fails fast.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one statement may run.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The time zone in which `expire` holds wall-clock time.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// The size of the pools the store builds (sqlx's default).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// A connect-pg-simple compatible session store on PostgreSQL. Cloning it is cheap and shares
/// the pool; the pruning task ends when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    names: Names,
    schema: Option<String>,
    table: String,
    create_table: bool,
    default_ttl: Duration,
    acquire_timeout: Duration,
    statement_timeout: Duration,
    prune_interval: Option<Duration>,
    prune_jitter: bool,
    prune_batch_size: u32,
    /// The statements, built once the table is known to exist and its `sess` type is known. Set
    /// on first use (or by `init`); a failed setup (PostgreSQL down) is tried again next time.
    queries: OnceCell<Queries>,
    /// Set once the pruning task has been spawned, which needs a tokio runtime: at build when
    /// there is one, else on first use.
    pruner_started: AtomicBool,
    /// Never sent on: the pruning task watches it, and ends as soon as the store (this sender)
    /// is dropped, instead of at its next tick.
    stop: watch::Sender<()>,
}

impl PostgresStore {
    /// A store with the default options over a pool you built. See
    /// [`PostgresStoreBuilder::build`].
    pub fn new(pool: PgPool) -> Self {
        let builder = PostgresStoreBuilder::default();
        let names = Names::new(None, DEFAULT_TABLE, DEFAULT_TIME_ZONE);
        Self::from_parts(builder, names, pool)
    }

    /// Connects to the PostgreSQL at `url` with the default options and checks (or creates) the
    /// table. See [`PostgresStoreBuilder::connect`].
    pub async fn from_url(url: &str) -> Result<Self, BuildError> {
        Self::builder().connect(url).await
    }

    /// Configures a store.
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder::default()
    }

    pub(crate) fn from_parts(builder: PostgresStoreBuilder, names: Names, pool: PgPool) -> Self {
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                names,
                schema: builder.schema,
                table: builder.table,
                create_table: builder.create_table,
                default_ttl: builder.default_ttl,
                acquire_timeout: builder.acquire_timeout,
                statement_timeout: builder.statement_timeout,
                prune_interval: builder.prune_interval.filter(|i| !i.is_zero()),
                prune_jitter: builder.prune_jitter,
                prune_batch_size: builder.prune_batch_size,
                queries: OnceCell::new(),
                pruner_started: AtomicBool::new(false),
                stop: watch::Sender::new(()),
            }),
        };
        store.start_pruner();
        store
    }

    /// Checks that the table exists, creating it (and its schema and index) when it is missing
    /// and creation is on, and finds the type of its `sess` column. The store does this on first
    /// use; call it at startup to fail early. Errors: [`Error::Backend`] with a [`SchemaError`]
    /// source when the table is missing or unusable, or the outage errors.
    pub async fn init(&self) -> Result<()> {
        self.bounded(async { self.queries().await.map(drop) }).await
    }

    /// Deletes every expired row now, in batches of the configured size, and returns how many
    /// were deleted. The background task calls this; call it yourself when pruning is disabled.
    pub async fn prune(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let deleted = self.prune_batch().await?;
            total += deleted;
            if deleted < u64::from(self.inner.prune_batch_size) {
                return Ok(total);
            }
        }
    }

    /// Deletes at most one batch of expired rows; how many it deleted.
    pub(crate) async fn prune_batch(&self) -> Result<u64> {
        self.bounded(async {
            let queries = self.queries().await?;
            let (now, limit) = (sesame_core::now(), i64::from(self.inner.prune_batch_size));
            let pool = &self.inner.pool;
            let done = self
                .retrying(|| {
                    sqlx::query(&queries.prune)
                        .bind(now)
                        .bind(limit)
                        .execute(pool)
                })
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The table as it appears in the store's SQL: quoted, with its schema when one is set
    /// (`"auth"."session"`).
    pub fn table(&self) -> &str {
        &self.inner.names.table
    }

    /// The longest an operation waits: the acquire timeout plus the statement timeout.
    pub fn timeout(&self) -> Duration {
        self.inner
            .acquire_timeout
            .saturating_add(self.inner.statement_timeout)
    }

    fn start_pruner(&self) {
        prune::start(&self.inner);
    }

    /// The statements of the store, setting the table up on first use.
    async fn queries(&self) -> Result<&Queries> {
        self.start_pruner();
        self.inner.queries.get_or_try_init(|| self.setup()).await
    }

    /// Finds (or creates) the table and the type of its `sess` column.
    async fn setup(&self) -> Result<Queries> {
        let pool = &self.inner.pool;
        let names = &self.inner.names;
        let sql_error = |error| self.error(error);
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(&names.table)
            .fetch_one(pool)
            .await
            .map_err(sql_error)?;
        if exists.is_none() {
            if !self.inner.create_table {
                return Err(Error::backend(
                    STORE_NAME,
                    SchemaError::MissingTable {
                        table: names.table.clone(),
                    },
                ));
            }
            self.create_table().await.map_err(sql_error)?;
        }
        // The type of `sess`, and whether the user index is there (and valid: a concurrent build
        // that failed leaves an invalid one).
        let found: Option<(String, Option<bool>)> = sqlx::query_as(
            "SELECT format_type(a.atttypid, a.atttypmod), \
               (SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                WHERE i.indrelid = a.attrelid AND c.relname::text = $2) \
             FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attname = 'sess' AND NOT a.attisdropped",
        )
        .bind(&names.table)
        .bind(&names.user_index_name)
        .fetch_optional(pool)
        .await
        .map_err(sql_error)?;
        let (found, user_index) = found.unzip();
        let sess_type = match found.as_deref() {
            Some("jsonb") => SessType::Jsonb,
            Some("json") => SessType::Json,
            other => {
                return Err(Error::backend(
                    STORE_NAME,
                    SchemaError::UnsupportedSessColumn {
                        table: names.table.clone(),
                        found: other.unwrap_or_default().to_owned(),
                    },
                ));
            }
        };
        // An unknown time zone fails here, once, rather than in every request.
        sqlx::query(&format!("SELECT now() AT TIME ZONE {}", names.zone))
            .persistent(false)
            .execute(pool)
            .await
            .map_err(sql_error)?;
        match user_index.flatten() {
            Some(true) => {}
            // A table in use (the Express app's, or one of an older sesame) gets the index built
            // beside the requests, never in their way: see `index`.
            _ if self.inner.create_table => index::spawn_build(pool.clone(), names.clone()),
            Some(false) => tracing::warn!(
                table = %names.table,
                index = %names.user_index,
                "the user index is invalid (a concurrent build failed, or is running): \
                 user_sessions scans the table until it is rebuilt (REINDEX INDEX CONCURRENTLY)"
            ),
            None => tracing::warn!(
                table = %names.table,
                index = %names.user_index,
                "the session table has no user index, and creating it is off: user_sessions \
                 scans the table; create it with the SQL of PostgresStoreBuilder::table_sql"
            ),
        }
        Ok(Queries::new(names, sess_type))
    }

    /// Creates the schema, table and index in one transaction (the statements of one simple
    /// query run as one), under an advisory lock: `CREATE ... IF NOT EXISTS` is not safe against
    /// another instance creating the same table at the same moment.
    async fn create_table(&self) -> Result<(), sqlx::Error> {
        let names = &self.inner.names;
        let mut ddl = format!(
            "SELECT pg_advisory_xact_lock({});\n",
            lock_key(&names.table)
        );
        if let Some(schema) = &names.schema {
            ddl.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {schema};\n"));
        }
        ddl.push_str(&names.create_table());
        sqlx::raw_sql(&ddl).execute(&self.inner.pool).await?;
        tracing::info!(table = %names.table, "created the session table");
        Ok(())
    }

    /// Bounds one operation (connection, setup on first use, statements, one retry) and maps a
    /// missed bound to [`Error::Timeout`].
    async fn bounded<T>(&self, operation: impl Future<Output = Result<T>>) -> Result<T> {
        let bound = self.timeout();
        tokio::time::timeout(bound, operation)
            .await
            .unwrap_or(Err(Error::Timeout {
                store: STORE_NAME,
                timeout: bound,
            }))
    }

    /// Runs a statement that is safe to repeat; when it failed on a broken connection (one that
    /// PostgreSQL closed, say in a restart, while it sat in the pool), runs it once more, on a
    /// fresh connection, since the pool drops the broken one.
    async fn retrying<T, F>(&self, attempt: impl Fn() -> F) -> Result<T>
    where
        F: Future<Output = Result<T, sqlx::Error>>,
    {
        match attempt().await {
            Err(error) if is_broken_connection(&error) => {
                tracing::debug!(%error, "retrying a statement on a fresh connection");
                attempt().await.map_err(|error| self.error(error))
            }
            other => other.map_err(|error| self.error(error)),
        }
    }

    /// Maps a driver error to the store error, keeping it as the source.
    fn error(&self, error: sqlx::Error) -> Error {
        match &error {
            sqlx::Error::PoolTimedOut => Error::Timeout {
                store: STORE_NAME,
                timeout: self.inner.acquire_timeout,
            },
            // query_canceled: the statement timeout.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => Error::Timeout {
                store: STORE_NAME,
                timeout: self.inner.statement_timeout,
            },
            _ => Error::backend(STORE_NAME, error),
        }
    }

    /// The `expire` of a record with `cookie`: its `expires`, or `now` plus the default TTL, but
    /// never past the cookie's deadline (the layer's idle and absolute timeouts), so a row outlives
    /// neither.
    fn expiry(&self, cookie: &CookieState, now: OffsetDateTime) -> OffsetDateTime {
        cookie.store_expiry(now, self.inner.default_ttl)
    }
}

/// The sessions of `rows` (`sid`, `sess` as text), skipping ids sesame would not issue and records
/// that do not decode (one bad row must not hide every session), and, with `user`, the records
/// whose user is not that one.
fn decode_rows(rows: Vec<(String, String)>, user: Option<&str>) -> Vec<(SessionId, Record)> {
    let mut out = Vec::with_capacity(rows.len());
    for (sid, sess) in rows {
        // A row written by another app may carry an id sesame would not issue: skip it.
        let Ok(id) = SessionId::parse(&sid) else {
            continue;
        };
        match Record::from_json(sess.as_bytes()) {
            Ok(record) if user.is_none_or(|user| record.user() == Some(user)) => {
                out.push((id, record));
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%id, %error, "skipping a corrupt session record in PostgreSQL");
            }
        }
    }
    out
}

/// The advisory lock that serializes creating `table` (FNV-1a of its quoted name, so no SQL
/// literal has to be escaped).
fn lock_key(table: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("sesame-postgres {table}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Whether `error` means the connection is gone (so the statement never ran, or its outcome is
/// lost), as opposed to PostgreSQL refusing the statement.
fn is_broken_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        // Class 08 (connection exception); admin_shutdown, crash_shutdown, cannot_connect_now.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

/// The `$set` object of a patch: the keys it sets, and the new cookie state under `cookie`.
struct PatchSet<'a>(&'a Patch);

impl Serialize for PatchSet<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.sets() {
            // `cookie` is the cookie state's member, never session data.
            if key != COOKIE_KEY {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry(COOKIE_KEY, self.0.cookie())?;
        map.end()
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("PostgresStore")
            .field("schema", &inner.schema)
            .field("table", &inner.table)
            .field("create_table", &inner.create_table)
            .field("default_ttl", &inner.default_ttl)
            .field("acquire_timeout", &inner.acquire_timeout)
            .field("statement_timeout", &inner.statement_timeout)
            .field("prune_interval", &inner.prune_interval)
            .field("prune_jitter", &inner.prune_jitter)
            .field("prune_batch_size", &inner.prune_batch_size)
            .field("expire_time_zone", &inner.names.zone)
            .finish_non_exhaustive()
    }
}

impl SessionStore for PostgresStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        self.bounded(async {
            let queries = self.queries().await?;
            let (now, pool) = (sesame_core::now(), &self.inner.pool);
            let sess: Option<String> = self
                .retrying(|| {
                    sqlx::query_scalar(&queries.load)
                        .bind(id.as_str())
                        .bind(now)
                        .fetch_optional(pool)
                })
                .await?;
            sess.map(|sess| Record::from_json(sess.as_bytes()))
                .transpose()
        })
        .await
    }

    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        let now = sesame_core::now();
        let expire = self.expiry(record.cookie(), now);
        if expire <= now {
            // connect-redis and memory delete a session whose cookie has expired; so do we.
            return self.destroy(id).await;
        }
        let sess = record.to_json()?;
        self.bounded(async {
            let queries = self.queries().await?;
            let pool = &self.inner.pool;
            self.retrying(|| {
                sqlx::query(&queries.save)
                    .bind(id.as_str())
                    .bind(sess.as_str())
                    .bind(expire)
                    .execute(pool)
            })
            .await
            .map(drop)
        })
        .await
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        let now = sesame_core::now();
        let expire = self.expiry(record.cookie(), now);
        if expire <= now {
            // Nothing live to insert; still, a live record under the id is a collision.
            return match self.load(id).await? {
                Some(_) => Err(Error::AlreadyExists { store: STORE_NAME }),
                None => Ok(()),
            };
        }
        let sess = record.to_json()?;
        self.bounded(async {
            let queries = self.queries().await?;
            // Not retried: had a first attempt been written before its connection broke, a retry
            // would report the caller's own session as a collision.
            let inserted: Option<i32> = sqlx::query_scalar(&queries.create)
                .bind(id.as_str())
                .bind(sess.as_str())
                .bind(expire)
                .bind(now)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(|error| self.error(error))?;
            match inserted {
                Some(_) => Ok(()),
                None => Err(Error::AlreadyExists { store: STORE_NAME }),
            }
        })
        .await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.bounded(async {
            let queries = self.queries().await?;
            let pool = &self.inner.pool;
            self.retrying(|| {
                sqlx::query(&queries.destroy)
                    .bind(id.as_str())
                    .execute(pool)
            })
            .await
            .map(drop)
        })
        .await
    }

    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        let now = sesame_core::now();
        let expire = self.expiry(record.cookie(), now);
        self.bounded(async {
            let queries = self.queries().await?;
            let pool = &self.inner.pool;
            self.retrying(|| {
                sqlx::query(&queries.touch)
                    .bind(id.as_str())
                    .bind(expire)
                    .bind(now)
                    .execute(pool)
            })
            .await
            .map(drop)
        })
        .await
    }

    fn name(&self) -> &'static str {
        STORE_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_listing()
            .with_patch()
            .with_compare_and_swap()
            .with_user_index()
    }

    async fn ids(&self) -> Result<Vec<SessionId>> {
        self.bounded(async {
            let queries = self.queries().await?;
            let (now, pool) = (sesame_core::now(), &self.inner.pool);
            let sids: Vec<String> = self
                .retrying(|| sqlx::query_scalar(&queries.ids).bind(now).fetch_all(pool))
                .await?;
            // A row written by another app may carry an id sesame would not issue: skip it.
            Ok(sids
                .iter()
                .filter_map(|sid| SessionId::parse(sid).ok())
                .collect())
        })
        .await
    }

    async fn all(&self) -> Result<Vec<(SessionId, Record)>> {
        self.bounded(async {
            let queries = self.queries().await?;
            let (now, pool) = (sesame_core::now(), &self.inner.pool);
            let rows: Vec<(String, String)> = self
                .retrying(|| sqlx::query_as(&queries.all).bind(now).fetch_all(pool))
                .await?;
            Ok(decode_rows(rows, None))
        })
        .await
    }

    /// One `SELECT` of the live rows whose `sess -> 'sesame' ->> 'user'` is `user`, through the
    /// user index. PostgreSQL keeps that index in step with every write, in the same transaction,
    /// so it never lags; still, each record is decoded and its [`Record::user`] checked, which
    /// also leaves out a user id stored as a number (`->>` turns `42` into `'42'`, but a user id
    /// is a string).
    async fn user_sessions(&self, user: &str) -> Result<Vec<(SessionId, Record)>> {
        self.bounded(async {
            let queries = self.queries().await?;
            let (now, pool) = (sesame_core::now(), &self.inner.pool);
            let rows: Vec<(String, String)> = self
                .retrying(|| {
                    sqlx::query_as(&queries.user_sessions)
                        .bind(user)
                        .bind(now)
                        .fetch_all(pool)
                })
                .await?;
            Ok(decode_rows(rows, Some(user)))
        })
        .await
    }

    async fn len(&self) -> Result<usize> {
        self.bounded(async {
            let queries = self.queries().await?;
            let (now, pool) = (sesame_core::now(), &self.inner.pool);
            let count: i64 = self
                .retrying(|| sqlx::query_scalar(&queries.len).bind(now).fetch_one(pool))
                .await?;
            Ok(usize::try_from(count).unwrap_or(usize::MAX))
        })
        .await
    }

    async fn clear(&self) -> Result<()> {
        self.bounded(async {
            let queries = self.queries().await?;
            let pool = &self.inner.pool;
            self.retrying(|| sqlx::query(&queries.clear).execute(pool))
                .await
                .map(drop)
        })
        .await
    }

    /// One `UPDATE` of the live row: `sess = (sess - removed_keys) || set_keys_and_cookie`,
    /// `expire` from the patch's cookie.
    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        let now = sesame_core::now();
        let expire = self.expiry(patch.cookie(), now);
        let set = serde_json::to_string(&PatchSet(patch)).map_err(Error::encode)?;
        let removed: Vec<&str> = patch.data_removals().collect();
        self.bounded(async {
            let queries = self.queries().await?;
            let pool = &self.inner.pool;
            // Safe to repeat: the same keys set to the same values, the same expiry.
            let outcome: Option<bool> = self
                .retrying(|| {
                    sqlx::query_scalar(&queries.patch)
                        .bind(id.as_str())
                        .bind(&removed)
                        .bind(set.as_str())
                        .bind(expire)
                        .bind(now)
                        .fetch_optional(pool)
                })
                .await?;
            match outcome {
                None => Ok(false),
                Some(true) => Ok(true),
                Some(false) => Err(Error::decode(NotAnObject {
                    sid: id.as_str().to_owned(),
                })),
            }
        })
        .await
    }

    /// One statement: the live row is locked, the key compared as jsonb (so object key order does
    /// not matter, and numbers compare by value: `1` equals `1.0`) and written only if it
    /// matched. The row's `expire` is left as it is.
    async fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<Swap> {
        if key == COOKIE_KEY {
            return Err(Error::encode(
                "\"cookie\" holds the session's cookie state, not session data",
            ));
        }
        let to_text = |value: Option<&Value>| {
            value
                .map(serde_json::to_string)
                .transpose()
                .map_err(Error::encode)
        };
        let (expected, new) = (to_text(expected)?, to_text(new)?);
        let now = sesame_core::now();
        self.bounded(async {
            let queries = self.queries().await?;
            // Not retried: a swap that was applied before its connection broke would then report
            // its own write as a change by someone else.
            let row: Option<(bool, bool, Option<String>)> = sqlx::query_as(&queries.swap)
                .bind(id.as_str())
                .bind(key)
                .bind(now)
                .bind(expected.as_deref())
                .bind(new.as_deref())
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(|error| self.error(error))?;
            match row {
                None => Ok(Swap::Missing),
                Some((_, false, _)) => Err(Error::decode(NotAnObject {
                    sid: id.as_str().to_owned(),
                })),
                Some((true, true, _)) => Ok(Swap::Done),
                Some((false, true, current)) => Ok(Swap::Changed(
                    current
                        .map(|text| serde_json::from_str(&text))
                        .transpose()
                        .map_err(Error::decode)?,
                )),
            }
        })
        .await
    }
}

/// A stored `sess` that is valid JSON but not an object, so no key of it can be changed; the
/// source of [`Error::Decode`].
#[derive(Debug, thiserror::Error)]
#[error("the stored session record of {sid:?} is not a JSON object")]
struct NotAnObject {
    sid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_sets_carry_the_cookie_and_never_a_data_cookie_key() {
        let mut patch = Patch::new(CookieState::default());
        patch.set("a", serde_json::json!([1, {"b": null}]));
        patch.set(COOKIE_KEY, serde_json::json!("data"));
        let text = serde_json::to_string(&PatchSet(&patch)).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"a":[1,{"b":null}],"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}}"#
        );
    }

    #[test]
    fn broken_connections_are_told_from_refusals() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_connection(&io));
        assert!(!is_broken_connection(&sqlx::Error::PoolTimedOut));
        assert!(!is_broken_connection(&sqlx::Error::RowNotFound));
    }
}
