//! Configuration of a [`PostgresStore`] and the ways to connect it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::sql::{self, Names};
use crate::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_PRUNE_BATCH_SIZE,
    DEFAULT_PRUNE_INTERVAL, DEFAULT_STATEMENT_TIMEOUT, DEFAULT_TABLE, DEFAULT_TIME_ZONE,
    DEFAULT_TTL, PostgresStore, STORE_NAME,
};

/// Why a store could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A schema or table name PostgreSQL cannot take as it is.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// `"schema"` or `"table"`.
        kind: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A time zone name with characters no time zone has.
    #[error(
        "invalid time zone {zone:?}: expected an IANA name such as \"Europe/Berlin\" or an offset"
    )]
    InvalidTimeZone {
        /// The zone given.
        zone: String,
    },
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL connection URL")]
    InvalidUrl {
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// [`connect_lazy`](PostgresStoreBuilder::connect_lazy) was called outside a tokio runtime,
    /// where the pool cannot start its maintenance task.
    #[error("a PostgreSQL pool must be created within a tokio runtime")]
    NoRuntime,
    /// PostgreSQL could not be reached, or the table could not be created or used.
    #[error(transparent)]
    Store(#[from] sesame_core::Error),
}

impl From<BuildError> for sesame_core::Error {
    /// So that `?` works in functions returning the store error: a store error stays itself, a
    /// configuration error becomes a [`sesame_core::Error::Backend`] with it as the source.
    fn from(error: BuildError) -> Self {
        match error {
            BuildError::Store(error) => error,
            other => sesame_core::Error::backend(STORE_NAME, other),
        }
    }
}

/// A problem with the session table found when the store first uses it, the source of an
/// [`Error::Backend`](sesame_core::Error::Backend).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The table does not exist and creating it was turned off.
    #[error(
        "the session table {table} does not exist (create it with the SQL of PostgresStoreBuilder::table_sql, or enable create_table_if_missing)"
    )]
    MissingTable {
        /// The quoted table name.
        table: String,
    },
    /// The table has no `sess` column of type `json` or `jsonb`.
    #[error("the column \"sess\" of {table} is {found:?}; it must be json or jsonb")]
    UnsupportedSessColumn {
        /// The quoted table name.
        table: String,
        /// The column's type, empty when the column is missing.
        found: String,
    },
}

/// Builds a [`PostgresStore`]. The options are connect-pg-simple's (`schemaName`, `tableName`,
/// `createTableIfMissing`, `ttl`, `pruneSessionInterval`, `pruneSessionRandomizedInterval`), plus
/// the bounds on waiting and the time zone of `expire`.
///
/// ```no_run
/// # async fn run() -> Result<(), sesame_postgres::BuildError> {
/// use std::time::Duration;
/// let store = sesame_postgres::PostgresStore::builder()
///     .schema_name("auth")
///     .table_name("session")
///     .default_ttl(Duration::from_secs(3600))
///     .prune_interval(Duration::from_secs(300))
///     .acquire_timeout(Duration::from_secs(1))
///     .statement_timeout(Duration::from_secs(2))
///     .connect("postgres://app@127.0.0.1/app")
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresStoreBuilder {
    pub(crate) schema: Option<String>,
    pub(crate) table: String,
    pub(crate) create_table: bool,
    pub(crate) default_ttl: Duration,
    pub(crate) prune_interval: Option<Duration>,
    pub(crate) prune_jitter: bool,
    pub(crate) prune_batch_size: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) time_zone: String,
    pub(crate) max_connections: u32,
}

impl Default for PostgresStoreBuilder {
    fn default() -> Self {
        Self {
            schema: None,
            table: DEFAULT_TABLE.to_owned(),
            create_table: true,
            default_ttl: DEFAULT_TTL,
            prune_interval: Some(DEFAULT_PRUNE_INTERVAL),
            prune_jitter: true,
            prune_batch_size: DEFAULT_PRUNE_BATCH_SIZE,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            time_zone: DEFAULT_TIME_ZONE.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl PostgresStoreBuilder {
    /// The schema of the table (connect-pg-simple's `schemaName`). Without one (the default) the
    /// table name is not qualified, so PostgreSQL finds it through the `search_path` (usually in
    /// `public`). When the table is created, a missing schema is created too.
    #[must_use]
    pub fn schema_name(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The table name (default `session`, connect-pg-simple's `tableName`). Names are quoted, so
    /// they are used exactly as written, upper case and spaces included.
    #[must_use]
    pub fn table_name(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Whether the store creates its table (and schema and indexes) when it is missing, on first
    /// use (default `true`, connect-pg-simple's `createTableIfMissing`). Turn it off when the
    /// table is created by your migrations (see [`table_sql`](Self::table_sql)) or the database
    /// user may not create tables; a missing table is then a [`SchemaError::MissingTable`].
    ///
    /// When it is on and the table exists without the user index (connect-pg-simple's table, or
    /// one an older sesame created), the store builds that index in the background with
    /// `CREATE INDEX CONCURRENTLY`, which does not block writes to the table. When it is off, the
    /// store creates nothing and logs a warning if the index is missing: `user_sessions` then
    /// scans the table.
    #[must_use]
    pub fn create_table_if_missing(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// How long a record without a cookie expiry (a browser-session cookie) lives after its last
    /// write or touch (default one day, connect-pg-simple's `ttl`).
    #[must_use]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How often the background task deletes expired rows (default 15 minutes, connect-pg-simple's
    /// `pruneSessionInterval`). With jitter (the default), each wait is drawn at random between half
    /// and one and a half times the interval, so many instances of an app do not prune at once.
    /// The first pass comes after the first wait, not at startup, for the same reason. A zero
    /// interval disables pruning.
    #[must_use]
    pub fn prune_interval(mut self, interval: Duration) -> Self {
        self.prune_interval = Some(interval);
        self
    }

    /// Whether the waits between prunings are randomized around the interval (default `true`,
    /// connect-pg-simple's `pruneSessionRandomizedInterval`).
    #[must_use]
    pub fn prune_jitter(mut self, jitter: bool) -> Self {
        self.prune_jitter = jitter;
        self
    }

    /// How many rows one pruning statement deletes at most (default 1000). A pruning pass runs
    /// batches until one deletes fewer, so a large backlog never becomes one long statement that
    /// holds locks on many rows.
    #[must_use]
    pub fn prune_batch_size(mut self, size: u32) -> Self {
        self.prune_batch_size = size.max(1);
        self
    }

    /// No background pruning (connect-pg-simple's `pruneSessionInterval: false`), for apps where
    /// another instance or a cron job prunes (call [`PostgresStore::prune`]). Expired rows are
    /// never returned meanwhile.
    #[must_use]
    pub fn disable_pruning(mut self) -> Self {
        self.prune_interval = None;
        self
    }

    /// How long a request waits for a connection from the pool (default two seconds). It bounds
    /// connecting too: while PostgreSQL is down, requests fail with
    /// [`Error::Timeout`](sesame_core::Error::Timeout) after this long. Applies to pools the store
    /// builds ([`connect`](Self::connect)); with your own pool, set it on the pool. Either way
    /// every operation is also bounded by this plus the statement timeout.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long one statement may run (default five seconds): set as PostgreSQL's
    /// `statement_timeout` on the connections of pools the store builds, so the server cancels
    /// it, and enforced by the store on every operation whatever the pool.
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The time zone in which the `expire` column (a `timestamp` without time zone) holds
    /// wall-clock time (default `UTC`).
    ///
    /// connect-pg-simple writes `to_timestamp(...)` into that column, which PostgreSQL converts to
    /// the wall-clock time of the connection's `TimeZone` setting, which for node-postgres is the
    /// server's default (`SHOW timezone` in `psql`). When an Express app shares the table and that
    /// default is not UTC, set this to it (for example `"Europe/Berlin"`) so both agree on when a
    /// session expires. The store always converts explicitly (`AT TIME ZONE`), so the `TimeZone`
    /// of its own connections does not matter.
    #[must_use]
    pub fn expire_time_zone(mut self, zone: impl Into<String>) -> Self {
        self.time_zone = zone.into();
        self
    }

    /// The size of the pool the store builds (default 10, sqlx's default).
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The SQL that creates the configured table and its indexes, for migrations:
    /// connect-pg-simple's `table.sql`, with `jsonb` for `sess`, and the user index (see
    /// [Sessions of a user](crate#sessions-of-a-user)):
    ///
    /// ```
    /// let sql = sesame_postgres::PostgresStore::builder().table_sql().unwrap();
    /// assert_eq!(sql, r#"CREATE TABLE IF NOT EXISTS "session" (
    ///   "sid" varchar NOT NULL COLLATE "default" PRIMARY KEY,
    ///   "sess" jsonb NOT NULL,
    ///   "expire" timestamp(6) NOT NULL
    /// );
    /// CREATE INDEX IF NOT EXISTS "IDX_session_expire" ON "session" ("expire");
    /// CREATE INDEX IF NOT EXISTS "IDX_session_user" ON "session" (("sess" -> 'sesame' ->> 'user'))
    ///   WHERE ("sess" -> 'sesame' ->> 'user') IS NOT NULL;
    /// "#);
    /// ```
    ///
    /// Every statement is `IF NOT EXISTS`, so running it on an existing table adds what is
    /// missing, such as the user index on connect-pg-simple's table (with a `json` column too). On
    /// a large table in use, create that index `CONCURRENTLY` instead, so writes go on meanwhile.
    pub fn table_sql(&self) -> Result<String, BuildError> {
        Ok(self.names()?.create_table())
    }

    /// The store over a pool you built (to choose its size, TLS and timeouts yourself). Nothing is
    /// sent to PostgreSQL now: the table is checked (and created) on first use, or when you call
    /// [`PostgresStore::init`]. Fails only on invalid names.
    ///
    /// The store never needs a connection test before each use: give the pool
    /// `test_before_acquire(false)` so a request costs one round trip per operation; connections
    /// that broke (a server restart) are replaced and the operation retried once when that is safe.
    /// (sqlx's pool still tests each connection as it takes it back, an empty `Sync` sent after
    /// the caller has its answer.) The store's bound (acquire plus statement timeout) applies to
    /// every operation; to have the server cancel long statements too, set `statement_timeout`
    /// on the pool's connections (the connect methods do, through the `options` startup
    /// parameter, which PgBouncer refuses: behind PgBouncer, build the pool yourself).
    pub fn build(self, pool: PgPool) -> Result<PostgresStore, BuildError> {
        let names = self.names()?;
        Ok(PostgresStore::from_parts(self, names, pool))
    }

    /// Connects to the PostgreSQL at `url` (`postgres://user[:password]@host[:port]/database`)
    /// through a pool with the store's timeouts, then checks (and creates) the table. Fails with
    /// [`BuildError::Store`] when PostgreSQL cannot be reached within the acquire timeout; later
    /// outages are ridden out: requests fail within the timeouts, and work again once PostgreSQL
    /// is back.
    pub async fn connect(self, url: &str) -> Result<PostgresStore, BuildError> {
        let store = self.connect_lazy(url)?;
        store.init().await?;
        Ok(store)
    }

    /// Like [`connect`](Self::connect), but connects on first use: use it to start an app while
    /// PostgreSQL is down (its requests fail until PostgreSQL is up). Must be called within a
    /// tokio runtime.
    pub fn connect_lazy(self, url: &str) -> Result<PostgresStore, BuildError> {
        let options =
            PgConnectOptions::from_str(url).map_err(|source| BuildError::InvalidUrl { source })?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let pool = self
            .pool_options()
            .connect_lazy_with(self.connect_options(options));
        self.build(pool)
    }

    /// The pool options the connect methods use: the acquire timeout, the size, and no connection
    /// test before each use (it would double the round trips of every request).
    fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .idle_timeout(Some(Duration::from_secs(300)))
    }

    /// `options` with the statement timeout set on every connection.
    fn connect_options(&self, options: PgConnectOptions) -> PgConnectOptions {
        let millis = self.statement_timeout.as_millis().max(1).to_string();
        options.options([("statement_timeout", millis)])
    }

    fn names(&self) -> Result<Names, BuildError> {
        let invalid = |kind, name: &str, reason| BuildError::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        };
        if let Some(schema) = &self.schema {
            if let Some(reason) = sql::identifier_problem(schema) {
                return Err(invalid("schema", schema, reason));
            }
        }
        if let Some(reason) = sql::identifier_problem(&self.table) {
            return Err(invalid("table", &self.table, reason));
        }
        if !sql::is_valid_time_zone(&self.time_zone) {
            return Err(BuildError::InvalidTimeZone {
                zone: self.time_zone.clone(),
            });
        }
        Ok(Names::new(
            self.schema.as_deref(),
            &self.table,
            &self.time_zone,
        ))
    }
}
