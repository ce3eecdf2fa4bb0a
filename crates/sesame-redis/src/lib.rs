//! A Redis session store for [sesame](https://crates.io/crates/axum-sesame), compatible with
//! [connect-redis](https://github.com/tj/connect-redis), on one Redis or a Redis Cluster.
//!
//! # What is stored
//!
//! [`RedisStore`] keeps sessions exactly as connect-redis does, so an Express app and a sesame app
//! can share one Redis (and, with the same secret and cookie name, one login) during a migration:
//!
//! | what | stored as |
//! |---|---|
//! | key | `<prefix><session id>`, prefix `sess:` by default |
//! | value | express-session's JSON record: the session's keys plus a `cookie` object |
//! | expiry | a Redis TTL (`SET ... PX`) until the record's `cookie.expires`, or the default TTL (one day) for a browser-session cookie, and never past the layer's idle or absolute timeout ([`CookieState::deadline`]) |
//! | expired record saved | deleted (`DEL`) rather than written |
//! | `create` | `SET NX`: an id collision is [`Error::AlreadyExists`], never an overwrite |
//! | touch | `PEXPIRE` on the key: the expiry moves, the value is not rewritten |
//! | listing, `clear` | `SCAN MATCH <prefix>* TYPE string` (never `KEYS`) on the server, or on every master of a cluster, then `MGET` / `DEL` in batches |
//! | user index | a sorted set per user, `<user index prefix><user id>`, outside the prefix (see below) |
//!
//! TTLs are set in milliseconds (`PX`, `PEXPIRE`) where connect-redis uses seconds; the keys and
//! values are the same.
//!
//! # Sessions of a user
//!
//! The store keeps an index from each user to the sessions the user is logged in to (the `user`
//! of the record's [`META_KEY`] object), for
//! [`user_sessions`](SessionStore::user_sessions) ("your sessions", "log out everywhere"):
//!
//! | what | stored as |
//! |---|---|
//! | key | `<user index prefix><user id>`, the prefix `sess-user:` by default (derived from `sess:`: see [`RedisStoreBuilder::user_index_prefix`]), so `SCAN MATCH sess:*` and connect-redis never see it |
//! | value | a sorted set: the ids of the user's sessions, each scored by its expiry (milliseconds since the Unix epoch; `+inf` for a session that never expires, with `disable_ttl`) |
//! | expiry | the key's TTL is its highest score plus a minute: it goes when its last session does |
//! | written by | every `save`, `create`, `patch` and `touch` whose record carries a user (`ZADD`, by a small Lua script on the index key that also drops the members that expired over a minute ago and sets the key's TTL) |
//! | read by | `user_sessions`: `ZRANGEBYSCORE` from now (less a minute), then `MGET` of the sessions; only live records whose user is still that user are returned, and the other members are removed from the index |
//! | `clear` | deletes the sorted sets under the user index prefix too, and nothing else |
//!
//! The sessions themselves are untouched, so an Express app sharing the store reads and writes
//! them as before (and its sessions are simply not indexed). The index may lag, never the answer:
//! `destroy` and a change of user leave the old entry in place (which user a session had would
//! cost a read), and a listing checks every record it returns and prunes what it found stale.
//!
//! Writes without a user cost what they did. With a user, on one Redis the index update is
//! pipelined behind the session's write, so `save`, `create`, `touch` and a `patch` that sets the
//! meta object stay one round trip; on a cluster the index key lives in another slot, so it is a
//! second command to its node (concurrent with the `PEXPIRE` for a touch, after the write
//! otherwise, so a listing never drops a session being created). A `patch` that leaves the meta
//! object alone on a session with a user still moves the session's expiry, so it learns the user
//! from the patch script and updates the index in a second round trip.
//!
//! # Configuration
//!
//! ```no_run
//! use sesame_redis::RedisStore;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), sesame_core::Error> {
//! // One Redis, with the defaults (prefix "sess:", one day for browser-session cookies,
//! // two seconds per command).
//! let store = RedisStore::from_url("redis://127.0.0.1:6379").await?;
//!
//! // Or configured, with connect-redis's options.
//! let store = RedisStore::builder()
//!     .prefix("myapp:sess:")
//!     .default_ttl(Duration::from_secs(3600))
//!     .disable_touch(false)
//!     .disable_ttl(false)
//!     .timeout(Duration::from_millis(500))
//!     .scan_count(100)
//!     .connect("redis://127.0.0.1:6379")
//!     .await?;
//!
//! // Or a Redis Cluster, from any of its nodes.
//! let store = RedisStore::builder()
//!     .connect_cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
//!     .await?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! One Redis is reached through an auto-reconnecting
//! [`ConnectionManager`], a cluster through a
//! [`ClusterConnection`]; the store's API is the same.
//! For TLS (`rediss://`) or your own reconnection settings, build the connection yourself (enable
//! the TLS feature of the re-exported [`redis`] crate) and pass it to
//! [`RedisStoreBuilder::build`] or [`RedisStoreBuilder::build_cluster`].
//!
//! # Outages
//!
//! Every command is bounded by the store's timeout (two seconds by default): when Redis is down a
//! request gets [`Error::Timeout`] or [`Error::Backend`] within that bound, never a hang, and once
//! Redis is back the same store works again, with no restart.
//!
//! # Concurrent requests
//!
//! Beyond connect-redis, the store applies per-key patches and compare-and-swap atomically on the
//! server, each in one round trip (a Lua script on the JSON value, one key per script, so it works
//! on a cluster too): two concurrent requests on one session keep each other's changes, and a
//! destroyed session is never brought back by an in-flight save. The scripts copy every member of
//! the record they do not change byte for byte, so the express format stays exact (Redis's `cjson`
//! would turn an empty array into `{}` and round large integers; it is not used to re-encode). The
//! store needs Redis 6.0 or later (`KEEPTTL`, `SCAN ... TYPE`).
//!
//! # Client-side cache
//!
//! [`RedisStoreBuilder::client_side_cache`] keeps the records this process reads and writes in
//! memory, and Redis keeps them honest: it tracks the keys the store's connection reads
//! (`CLIENT TRACKING ON NOLOOP`, over RESP3) and notifies it of the next change to each by another
//! connection, and the store drops its copy. The store's own writes read the key again right after
//! they change it, in one atomic step, so that it stays tracked with the record just written
//! cached (Redis tells a connection nothing of its own changes). A session the store
//! has seen is then read in no round trip and written in one, and several app instances (or an
//! Express app) can still share the sessions. See the builder method for the rules that keep the
//! cache from serving what Redis no longer holds, and the one trade-off (the delivery delay of a
//! notice).
#![forbid(unsafe_code)]

mod builder;
mod client_cache;
mod conn;
mod index;
mod replace;
mod script;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError, ScriptInvocation};
use sesame_core::serde_json::{self, Value};
use sesame_core::time::{OffsetDateTime, UtcOffset};
use sesame_core::{
    COOKIE_KEY, Capabilities, CookieState, Error, META_KEY, Patch, Record, Result, SessionId,
    SessionStore, Swap, unix_millis,
};

pub use crate::builder::RedisStoreBuilder;
pub use crate::client_cache::DEFAULT_CLIENT_CACHE_CAPACITY;
use crate::client_cache::{ClientCache, Ticket};
use crate::conn::Connection;
use crate::index::{Score, Write};

/// The Redis driver, re-exported so users need one dependency to build a connection.
pub use redis;

const STORE_NAME: &str = "redis";

/// The key prefix of connect-redis.
pub const DEFAULT_PREFIX: &str = "sess:";

/// How long a browser-session record (one without `cookie.expires`) lives: one day, as
/// connect-redis.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The bound on each Redis command: long enough for a loaded server, short enough that a request
/// during an outage fails fast.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many keys one `SCAN` step asks for, and how many records one `MGET` or `DEL` handles.
pub const DEFAULT_SCAN_COUNT: usize = 100;

/// The longest TTL the store asks Redis for, in milliseconds.
const MAX_TTL_MILLIS: u64 = i64::MAX as u64 / 4;

/// A connect-redis compatible session store on Redis or Redis Cluster. Cloning it is cheap and
/// shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    prefix: String,
    /// `prefix` with the glob characters of `SCAN MATCH` escaped, followed by `*`.
    pattern: String,
    /// The key prefix of the user index (`sess-user:` by default).
    index_prefix: String,
    /// `index_prefix` escaped for `SCAN MATCH`, followed by `*`.
    index_pattern: String,
    default_ttl: Duration,
    disable_touch: bool,
    disable_ttl: bool,
    timeout: Duration,
    scan_count: usize,
    /// The client-side cache, when enabled (see [`RedisStoreBuilder::client_side_cache`]).
    client_cache: Option<Arc<ClientCache>>,
}

/// How a write sets the key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// `PX` milliseconds.
    Millis(u64),
    /// No expiry (`disable_ttl`).
    Never,
}

impl Expiry {
    /// When a key written at `now` with this expiry dies, in milliseconds since the Unix epoch
    /// (`i64::MAX`: never).
    fn instant_millis(self, now: OffsetDateTime) -> i64 {
        match self {
            Self::Millis(ms) => {
                unix_millis(now).saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
            }
            Self::Never => i64::MAX,
        }
    }
}

/// The session id in a Redis key of the store whose prefix is `prefix`; `None` for a key of
/// another prefix, or not a valid id.
fn id_in_key(prefix: &[u8], key: &[u8]) -> Option<SessionId> {
    let id = key.strip_prefix(prefix)?;
    SessionId::parse(std::str::from_utf8(id).ok()?).ok()
}

/// What the patch script did.
enum Patched {
    /// There was no live record: nothing written.
    Missing,
    /// Applied. `meta` is the raw text of the record's meta member before the patch, if it had
    /// one.
    Applied { meta: Option<Vec<u8>> },
}

/// What the Lua scripts found wrong with a stored value or said back; the source of
/// [`Error::Decode`] and [`Error::Backend`].
#[derive(Debug, thiserror::Error)]
enum ScriptError {
    /// The stored value is not a JSON object, so no key of it can be changed.
    #[error("the stored session record under {key:?} is not a JSON object")]
    NotAnObject { key: String },
    /// The script answered something it never returns (another script under the same hash?).
    #[error("unexpected reply from the {script} script: {reply:?}")]
    UnexpectedReply {
        script: &'static str,
        reply: redis::Value,
    },
    /// A command answered in a shape it never has.
    #[error("unexpected reply to {command}: {reply:?}")]
    UnexpectedCommandReply {
        command: &'static str,
        reply: redis::Value,
    },
}

impl RedisStore {
    /// A store with the default options over a connection manager you built (to pick its
    /// reconnection, TLS and timeout settings yourself).
    pub fn new(manager: ConnectionManager) -> Self {
        Self::builder().build(manager)
    }

    /// A store with the default options over a Redis Cluster connection you built.
    pub fn cluster(conn: ClusterConnection) -> Self {
        Self::builder().build_cluster(conn)
    }

    /// Connects to the Redis at `url` (`redis://[user:password@]host:port[/db]`) with the default
    /// options. Fails with [`Error::Backend`] or [`Error::Timeout`] when Redis cannot be reached.
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::builder().connect(url).await
    }

    /// Configures a store.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// The key prefix (`sess:` unless configured).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The Redis key of a session: the prefix followed by the id, as connect-redis names it (handy
    /// with `redis-cli`).
    pub fn key(&self, id: &SessionId) -> String {
        // Not `format!`: its machinery costs ten times the copy, on every call of the store.
        let (prefix, id) = (&*self.inner.prefix, id.as_str());
        let mut key = String::with_capacity(prefix.len() + id.len());
        key.push_str(prefix);
        key.push_str(id);
        key
    }

    /// The key prefix of the user index (`sess-user:` unless configured; see
    /// [`RedisStoreBuilder::user_index_prefix`]).
    pub fn user_index_prefix(&self) -> &str {
        &self.inner.index_prefix
    }

    /// The Redis key of a user's index: the user index prefix followed by the user id, a sorted
    /// set of that user's session ids scored by their expiry (see
    /// [Sessions of a user](crate#sessions-of-a-user)).
    pub fn user_index_key(&self, user: &str) -> String {
        format!("{}{user}", self.inner.index_prefix)
    }

    /// The bound on each command.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Whether the store runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.conn, Connection::Cluster(_))
    }

    /// Loads the Lua scripts into the server's script cache (every master of a cluster), so the
    /// first patch is one round trip too. Best effort: a server that lost its cache (a restart)
    /// gets a script again on first use.
    pub(crate) async fn load_scripts(&self) {
        for script in script::all() {
            let mut conn = self.inner.conn.clone();
            if let Err(error) = self.bounded(script.load_async(&mut conn)).await {
                tracing::debug!(%error, "could not preload a Lua script; it is sent on first use");
            }
        }
    }

    /// Runs one command under the store's timeout.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Runs a script (`EVALSHA`; `SCRIPT LOAD` first only when the server lost it) under the
    /// store's timeout.
    async fn invoke<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// The client-side cache, if the store has one, with tracking enabled on the current
    /// connection first if it is not yet (after connecting or reconnecting: one more round trip).
    async fn client_cache(&self) -> Option<&ClientCache> {
        let cache = self.inner.client_cache.as_deref()?;
        if let Some(epoch) = cache.tracking_to_enable() {
            // Should this call be dropped before the reply (a request timing out), the next
            // caller tries again.
            let _unless_done = EnablingTracking { cache, epoch };
            // Redis tracks the keys this connection reads, and tells it of other connections'
            // changes only (`NOLOOP`): the store settles or forgets its own (see
            // `client_cache.rs`).
            let mut cmd = redis::cmd("CLIENT");
            cmd.arg("TRACKING").arg("ON").arg("NOLOOP");
            match self.query::<()>(&cmd).await {
                Ok(()) => cache.tracking_enabled(epoch),
                // The guard lets the next caller try again.
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "could not enable Redis client tracking; the client-side cache waits"
                    );
                }
            }
        }
        Some(cache)
    }

    /// A ticket for a command about `id` whose outcome is settled in the client-side cache.
    async fn cache_ticket(&self, id: &SessionId) -> Option<(&ClientCache, Ticket)> {
        let cache = self.client_cache().await?;
        Some((cache, cache.ticket(id)))
    }

    /// [`cache_ticket`](Self::cache_ticket) with the copy the cache holds at `now`, taken together
    /// (see [`ClientCache::ticket_and_copy`]).
    async fn cache_ticket_and_copy(
        &self,
        id: &SessionId,
        now: OffsetDateTime,
    ) -> Option<(&ClientCache, Ticket, Option<Record>)> {
        let cache = self.client_cache().await?;
        let (ticket, copy) = cache.ticket_and_copy(id, unix_millis(now));
        Some((cache, ticket, copy))
    }

    /// The number of records in the client-side cache (`0` without one): for tests and metrics.
    pub fn client_cache_len(&self) -> usize {
        self.inner
            .client_cache
            .as_deref()
            .map_or(0, ClientCache::len)
    }

    /// Bounds one driver call by the store's timeout and maps its error, keeping the source.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T, RedisError>>) -> Result<T> {
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(result) => result.map_err(|error| redis_error(error, self.inner.timeout)),
            Err(_elapsed) => Err(Error::Timeout {
                store: STORE_NAME,
                timeout: self.inner.timeout,
            }),
        }
    }

    /// The expiry a write gives a record with `cookie`, or `None` when it has already expired: the
    /// cookie's [store expiry](CookieState::store_expiry), so that the layer's
    /// [`deadline`](CookieState::deadline) (idle and absolute timeouts) caps the Redis TTL.
    fn expiry_of(&self, cookie: &CookieState, now: OffsetDateTime) -> Option<Expiry> {
        let left = cookie.store_expiry(now, self.inner.default_ttl) - now;
        if !left.is_positive() {
            return None;
        }
        self.ttl_expiry(Duration::try_from(left).unwrap_or(Duration::MAX))
    }

    fn ttl_expiry(&self, ttl: Duration) -> Option<Expiry> {
        if ttl.is_zero() {
            return None;
        }
        if self.inner.disable_ttl {
            return Some(Expiry::Never);
        }
        // At least one millisecond (`PX 0` is an error; a sub-millisecond TTL rounds up), and at
        // most what Redis accepts (`now + PX` must fit in an i64; this is 73 million years).
        Some(Expiry::Millis(
            u64::try_from(ttl.as_millis())
                .unwrap_or(u64::MAX)
                .clamp(1, MAX_TTL_MILLIS),
        ))
    }

    /// The current time for the scripts' expiry check: JavaScript's `toISOString` format when
    /// records carry the only expiry (`disable_ttl`), empty when Redis TTLs enforce it.
    fn script_now(&self) -> String {
        if self.inner.disable_ttl {
            iso_millis(sesame_core::now())
        } else {
            String::new()
        }
    }

    /// Whether a record read back must be treated as gone. With a Redis TTL, Redis itself never
    /// returns an expired key (and a touch moves the TTL, not the stored `cookie.expires`), so the
    /// TTL is the truth; without one (`disable_ttl`), the record's own expiry is.
    fn is_dead(&self, record: &Record) -> bool {
        self.inner.disable_ttl && record.is_expired(sesame_core::now())
    }

    /// Decodes a stored value, `None` when it is dead.
    fn decode(&self, bytes: &[u8]) -> Result<Option<Record>> {
        let record = Record::from_json(bytes)?;
        Ok((!self.is_dead(&record)).then_some(record))
    }

    /// Settles a write's outcome in the client-side cache: what Redis holds now (`record`, written
    /// as `bytes` with `expiry` at `now`, by a [tracked write](Self::tracked_write) or a script
    /// that reads the key again after it writes it), or `None` when the outcome is unknown, not a
    /// record, or written without tracking the key again.
    fn settle_write(
        &self,
        ticket: Option<(&ClientCache, Ticket)>,
        id: &SessionId,
        written: Option<(Record, &[u8], Expiry)>,
        now: OffsetDateTime,
    ) {
        let Some((cache, ticket)) = ticket else {
            return;
        };
        let written = written.map(|(record, bytes, expiry)| {
            let copy = if bytes.len() <= replace::MAX_BASE_LEN {
                record.with_origin(bytes.into())
            } else {
                record.without_origin()
            };
            (copy, expiry.instant_millis(now))
        });
        cache.settle(ticket, id, written);
    }

    /// Runs `write` (a command on `key`) so that this connection tracks `key` right before and
    /// right after it, atomically (`MULTI`, `PTTL`, `write`, `PTTL`, `EXEC`, in one round trip):
    /// the change `write` makes ends the tracking of the key (telling this connection nothing),
    /// and the last `PTTL` starts it again, so that the next change by another connection is
    /// sent. Returns `write`'s reply.
    async fn tracked_write(&self, key: &str, write: &Cmd) -> Result<redis::Value> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("PTTL")
            .arg(key)
            .ignore()
            .add_command(write.clone())
            .cmd("PTTL")
            .arg(key)
            .ignore();
        let mut conn = self.inner.conn.clone();
        let replies: Vec<redis::Value> = self.bounded(pipe.query_async(&mut conn)).await?;
        match <[redis::Value; 1]>::try_from(replies) {
            Ok([reply]) => Ok(reply),
            Err(replies) => Err(backend(ScriptError::UnexpectedCommandReply {
                command: "EXEC",
                reply: redis::Value::Array(replies),
            })),
        }
    }

    /// A guard that drops `id` from the client-side cache when the write it is held across is done
    /// with, however that ends, unless the write [settled](ForgetAfter::settled) its outcome in the
    /// cache (see [`ForgetAfter`]).
    fn forget_after<'a>(&'a self, id: &'a SessionId) -> ForgetAfter<'a> {
        ForgetAfter {
            cache: self.inner.client_cache.as_deref(),
            id,
        }
    }

    /// Drops `id` from the client-side cache, if there is one: its key changed in a way this store
    /// does not know the outcome of (a script, a delete, a failed call).
    fn forget(&self, id: &SessionId) {
        if let Some(cache) = self.inner.client_cache.as_deref() {
            cache.forget(id);
        }
    }

    /// Decodes a stored value as a load returns it: `None` when dead, and a small record keeps
    /// its stored bytes, so its request's patch can replace it whole if nothing changed it
    /// meanwhile (see `replace.rs`).
    fn decode_loaded(&self, bytes: Vec<u8>) -> Result<Option<Record>> {
        let record = self.decode(&bytes)?;
        Ok(match record {
            Some(record) if bytes.len() <= replace::MAX_BASE_LEN => {
                Some(record.with_origin(bytes.into()))
            }
            record => record,
        })
    }

    /// The session id in a scanned key, `None` for a key of another prefix or not a valid id.
    fn id_of(&self, key: &[u8]) -> Option<SessionId> {
        id_in_key(self.inner.prefix.as_bytes(), key)
    }

    /// Every session key of the store's prefix, each once (see [`scan`](Self::scan)). Only string
    /// keys: a session is a string, and a sorted set of the user index is never taken for one,
    /// whatever the prefixes.
    async fn scan_keys(&self) -> Result<Vec<Vec<u8>>> {
        self.scan(&self.inner.pattern, &self.inner.prefix, "string")
            .await
    }

    /// Every key of type `kind` whose name begins with `prefix` (`pattern` is the escaped prefix
    /// followed by `*`), each once, by `SCAN MATCH .. TYPE` on the server or on every master of the
    /// cluster (never `KEYS`, which blocks Redis).
    async fn scan(&self, pattern: &str, prefix: &str, kind: &str) -> Result<Vec<Vec<u8>>> {
        let mut conn = self.inner.conn.clone();
        let targets = self.bounded(conn.scan_targets()).await?;
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        for target in &targets {
            let mut cursor = 0_u64;
            loop {
                let cmd = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(self.inner.scan_count)
                    .arg("TYPE")
                    .arg(kind)
                    .clone();
                let (next, page) = self.bounded(conn.scan_step(target, cmd)).await?;
                for key in page {
                    // SCAN may return a key twice (while the table is rehashed); the prefix is
                    // re-checked so that a key outside it is never touched.
                    if key.starts_with(prefix.as_bytes()) && seen.insert(key.clone()) {
                        keys.push(key);
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(keys)
    }

    /// The live records under `keys`, fetched by `MGET` in batches (on a cluster the driver
    /// splits each `MGET` by slot, since one `MGET` cannot span slots). A corrupt record is skipped
    /// with a warning, so one bad value does not hide every session.
    async fn fetch(&self, keys: &[Vec<u8>]) -> Result<Vec<(SessionId, Record)>> {
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(self.inner.scan_count) {
            let values: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(batch)).await?;
            for (key, value) in batch.iter().zip(values) {
                let (Some(id), Some(bytes)) = (self.id_of(key), value) else {
                    continue;
                };
                match self.decode(&bytes) {
                    Ok(Some(record)) => out.push((id, record)),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%id, %error, "skipping a corrupt session record in Redis");
                    }
                }
            }
        }
        Ok(out)
    }

    /// The patch script's invocation: the member texts of a patch (or of a cookie state alone),
    /// with the expiry `expiry` (`None`: the patched record has expired and is deleted).
    fn patch_invocation(
        &self,
        key: &str,
        members: &Members<'_>,
        expiry: Option<Expiry>,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = script::PATCH.prepare_invoke();
        invocation.key(key);
        match expiry {
            Some(Expiry::Millis(ms)) => invocation.arg("px").arg(ms),
            Some(Expiry::Never) => invocation.arg("none").arg(0),
            None => invocation.arg("del").arg(0),
        };
        invocation
            .arg(self.script_now())
            .arg(&members.cookie)
            .arg(members.removals.len());
        for name in &members.removals {
            invocation.arg(*name);
        }
        for (name, text) in &members.sets {
            invocation.arg(*name).arg(text);
        }
        invocation
    }

    /// The fast path of a patch, when it has one: the replace script with the record the patch
    /// script would write from the patch's base (the bytes this store loaded), to be set with a
    /// TTL of `ms` if the key still holds the base. `None` when the patch has no base (or a large
    /// one), the base is not an object the script reads, or the session has a user (its index
    /// entry is refreshed from what the patch script returns).
    fn replace_invocation(
        &self,
        key: &str,
        patch: &Patch,
        members: &Members<'_>,
        ms: u64,
    ) -> Option<(redis::ScriptInvocation<'static>, Vec<u8>)> {
        let base = patch
            .base()
            .filter(|base| base.len() <= replace::MAX_BASE_LEN)?;
        if patch.user_change().is_some() {
            return None;
        }
        let (record, meta) =
            replace::replaced(base, &members.cookie, &members.removals, &members.sets)?;
        if meta.and_then(user_in_meta).is_some() {
            return None;
        }
        // With a client-side cache, the script that leaves the key tracked after the write.
        let script = match self.inner.client_cache {
            Some(_) => &script::REPLACE_TRACKED,
            None => &script::REPLACE,
        };
        let mut invocation = script.prepare_invoke();
        invocation.key(key).arg(base).arg(&record).arg(ms);
        Some((invocation, record))
    }

    /// Runs the patch script (see [`patch_invocation`](Self::patch_invocation)), and with
    /// `index`, the user index update after it (see [`write_then_index`](Self::write_then_index)).
    async fn run_patch(
        &self,
        key: &str,
        invocation: &redis::ScriptInvocation<'static>,
        index: Option<&redis::ScriptInvocation<'static>>,
    ) -> Result<Patched> {
        let reply = match index {
            Some(index) => {
                self.write_then_index(Write::Script(invocation), index)
                    .await?
            }
            None => self.invoke(invocation).await?,
        };
        match reply {
            redis::Value::Int(0) => Ok(Patched::Missing),
            redis::Value::Int(-2) => Err(Error::decode(ScriptError::NotAnObject {
                key: key.to_owned(),
            })),
            redis::Value::Array(items)
                if matches!(items.first(), Some(redis::Value::Int(1))) && items.len() <= 2 =>
            {
                let meta = match items.get(1) {
                    Some(redis::Value::BulkString(text)) => Some(text.clone()),
                    _ => None,
                };
                Ok(Patched::Applied { meta })
            }
            reply => Err(backend(ScriptError::UnexpectedReply {
                script: "patch",
                reply,
            })),
        }
    }

    /// The patch script's part of [`SessionStore::patch`], with the user index updates.
    async fn merge_patch(
        &self,
        id: &SessionId,
        key: &str,
        patch: &Patch,
        members: &Members<'_>,
        expiry: Option<Expiry>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let invocation = self.patch_invocation(key, members, expiry);
        let change = patch.user_change();
        let index = match (expiry, change) {
            (Some(expiry), Some(Some(user))) => {
                let score = Score::of(patch.cookie(), now, expiry);
                Some(self.index_add(user, id, score, now))
            }
            _ => None,
        };
        let patched = self.run_patch(key, &invocation, index.as_ref()).await?;
        let Patched::Applied { meta } = patched else {
            return Ok(false);
        };
        if let (Some(expiry), None, Some(meta)) = (expiry, change, meta) {
            if let Some(user) = user_in_meta(&meta) {
                let score = Score::of(patch.cookie(), now, expiry);
                self.invoke::<()>(&self.index_add(&user, id, score, now))
                    .await?;
            }
        }
        Ok(true)
    }
}

/// Lets the next caller enable tracking when dropped, unless tracking was enabled meanwhile (then
/// it does nothing).
struct EnablingTracking<'a> {
    cache: &'a ClientCache,
    epoch: u64,
}

impl Drop for EnablingTracking<'_> {
    fn drop(&mut self) {
        self.cache.tracking_failed(self.epoch);
    }
}

/// Held by every write of the store to a session key, from before it is sent: dropped, it drops
/// the key's copy from the client-side cache, unless the write [settled](Self::settled) what it
/// wrote there. Redis tells the connection nothing of its own changes (`NOLOOP`), so the store
/// must: a load that ran on the server before the write may have cached the old record meanwhile,
/// and a write whose future is dropped midway (a timeout, a cancelled request) may still change
/// the key, after it settled nothing.
#[must_use = "the copy is dropped when the guard is"]
struct ForgetAfter<'a> {
    cache: Option<&'a ClientCache>,
    id: &'a SessionId,
}

impl ForgetAfter<'_> {
    /// The write settled its outcome in the cache: keep what it settled.
    fn settled(mut self) {
        self.cache = None;
    }
}

impl Drop for ForgetAfter<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.cache {
            cache.forget(self.id);
        }
    }
}

/// The user in the raw text of a meta member, as [`sesame_core::user_of`] reads it from a record.
fn user_in_meta(meta: &[u8]) -> Option<String> {
    let meta: Value = serde_json::from_slice(meta).ok()?;
    Some(meta.get("user")?.as_str()?.to_owned())
}

/// Whether the cache's `copy` is the record `patch` was made from: it holds the very bytes the
/// patch's base is (the copy is then what they decode to, decoded when they were read or written).
fn is_base_of(copy: &Record, patch: &Patch) -> bool {
    copy.origin()
        .zip(patch.base())
        .is_some_and(|(origin, base)| **origin == *base)
}

/// What the replace script's record decodes to, from the record its base decodes to (`base`),
/// without decoding it: the script's record is the base's text with the patch's members replaced,
/// removed or added (`replace.rs`), and a member's value reads back as written (`serde_json`
/// with `float_roundtrip`), so the result is `base` with the patch applied, and the cookie state
/// as stored ([`CookieState::as_stored`]). `None` when the cookie state cannot tell.
fn patched_as_stored(mut base: Record, patch: &Patch) -> Option<Record> {
    let cookie = patch.cookie().as_stored()?;
    // The `cookie` member is the cookie state, never data (`Members::of` leaves such sets out).
    for key in patch.data_removals() {
        base.data_mut().remove(key);
    }
    for (key, value) in patch.sets().iter().filter(|(key, _)| *key != COOKIE_KEY) {
        base.data_mut().insert(key.clone(), value.clone());
    }
    *base.cookie_mut() = cookie;
    Some(base)
}

/// What a patch writes, as member texts: serialized once for either script.
struct Members<'a> {
    /// The `cookie` member.
    cookie: String,
    /// The names of the data members removed.
    removals: Vec<&'a str>,
    /// The data members set: name, and member text `"name":value`.
    sets: Vec<(&'a str, String)>,
}

impl<'a> Members<'a> {
    /// The members of `patch`'s changes and `cookie`, or of `cookie` alone. `cookie` is the
    /// cookie state's member, never session data, so a patch's own `cookie` key is left out.
    fn of(patch: Option<&'a Patch>, cookie: &CookieState) -> Result<Self> {
        Ok(Self {
            cookie: cookie_member(cookie)?,
            removals: patch
                .map(|patch| patch.data_removals().collect())
                .unwrap_or_default(),
            sets: patch
                .map(|patch| patch.sets().iter())
                .into_iter()
                .flatten()
                .filter(|(name, _)| *name != COOKIE_KEY)
                .map(|(name, value)| Ok((name.as_str(), member(name, value)?)))
                .collect::<Result<_>>()?,
        })
    }
}

/// The record's `cookie` member, `"cookie":{...}`, as [`Record::to_json`] writes it (by hand:
/// [`CookieState::write_json`], on every write).
fn cookie_member(cookie: &CookieState) -> Result<String> {
    let mut text = String::with_capacity(128);
    text.push('"');
    text.push_str(COOKIE_KEY);
    text.push_str("\":");
    cookie.write_json(&mut text)?;
    Ok(text)
}

/// The JSON text of one member of a record, `"name":value`, as `serde_json` writes it in
/// [`Record::to_json`].
fn member(name: &str, value: &impl serde::Serialize) -> Result<String> {
    let mut text = serde_json::to_string(name).map_err(Error::encode)?;
    text.push(':');
    text.push_str(&serde_json::to_string(value).map_err(Error::encode)?);
    Ok(text)
}

/// `at` as JavaScript's `Date.prototype.toISOString` writes it (`2026-11-24T00:06:37.123Z`), the
/// format of `cookie.expires`.
fn iso_millis(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// A driver error as a store error: the driver's own response timeout (set to the store's) is a
/// [`Error::Timeout`] like ours, anything else a [`Error::Backend`] keeping the driver's error.
fn redis_error(error: RedisError, timeout: Duration) -> Error {
    if error.is_timeout() {
        Error::Timeout {
            store: STORE_NAME,
            timeout,
        }
    } else {
        backend(error)
    }
}

fn backend(error: impl Into<sesame_core::BoxError>) -> Error {
    Error::backend(STORE_NAME, error)
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.conn {
            Connection::Single(_) => "single",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("kind", &kind)
            .field("prefix", &self.inner.prefix)
            .field("user_index_prefix", &self.inner.index_prefix)
            .field("default_ttl", &self.inner.default_ttl)
            .field("disable_touch", &self.inner.disable_touch)
            .field("disable_ttl", &self.inner.disable_ttl)
            .field("timeout", &self.inner.timeout)
            .field("scan_count", &self.inner.scan_count)
            .finish_non_exhaustive()
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        if let Some(cache) = self.client_cache().await {
            let now = unix_millis(sesame_core::now());
            if let Some(record) = cache.get(id, now) {
                if !self.is_dead(&record) {
                    return Ok(Some(record));
                }
            }
            let ticket = cache.ticket(id);
            let key = self.key(id);
            // The value and its TTL in one round trip: the cached copy expires with the key.
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
            let mut conn = self.inner.conn.clone();
            let (bytes, pttl): (Option<Vec<u8>>, i64) =
                self.bounded(pipe.query_async(&mut conn)).await?;
            let record = bytes.map(|bytes| self.decode_loaded(bytes)).transpose()?;
            let record = record.flatten();
            let expires_at = match pttl {
                -1 => i64::MAX,
                ms => now.saturating_add(ms),
            };
            cache.settle(
                ticket,
                id,
                record.clone().map(|record| (record, expires_at)),
            );
            return Ok(record);
        }
        let bytes: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(self.key(id))).await?;
        match bytes {
            Some(bytes) => self.decode_loaded(bytes),
            None => Ok(None),
        }
    }

    /// `SET`, with the user index update in the same round trip when the record has a user.
    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        let key = self.key(id);
        let now = sesame_core::now();
        let after = self.forget_after(id);
        let Some(expiry) = self.expiry_of(record.cookie(), now) else {
            // connect-redis deletes a session whose cookie has expired rather than write it.
            self.forget(id);
            return self.query(redis::cmd("DEL").arg(&key)).await;
        };
        let bytes = record.to_json_vec()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(&bytes);
        if let Expiry::Millis(ms) = expiry {
            cmd.arg("PX").arg(ms);
        }
        let ticket = self.cache_ticket(id).await;
        // Only a write without the user index can be tracked, and so cached.
        let tracked = ticket.is_some() && record.user().is_none();
        let written = match record.user() {
            Some(user) => {
                let score = Score::of(record.cookie(), now, expiry);
                let index = self.index_add(user, id, score, now);
                self.write_then_index(Write::Cmd(&cmd), &index)
                    .await
                    .map(drop)
            }
            None if tracked => self.tracked_write(&key, &cmd).await.map(drop),
            None => self.query(&cmd).await,
        };
        let outcome =
            (tracked && written.is_ok()).then(|| (record.clone(), bytes.as_slice(), expiry));
        self.settle_write(ticket, id, outcome, now);
        after.settled();
        written
    }

    /// `SET NX`, with the user index update in the same round trip when the record has a user.
    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        let key = self.key(id);
        let taken = Err(Error::AlreadyExists { store: STORE_NAME });
        let now = sesame_core::now();
        let Some(expiry) = self.expiry_of(record.cookie(), now) else {
            // Nothing live to insert; still, a live record under the id is a collision.
            return match self.load(id).await? {
                Some(_) => taken,
                None => Ok(()),
            };
        };
        let value = record.to_json_vec()?;
        // An id collision (never in practice: ids are random) indexes the id under this user
        // too; a listing sees the record is another user's and drops it.
        let index = record.user().map(|user| {
            let score = Score::of(record.cookie(), now, expiry);
            self.index_add(user, id, score, now)
        });
        let after = self.forget_after(id);
        let ticket = self.cache_ticket(id).await;
        // Only a `SET NX` without the user index can be tracked, and so cached.
        let tracked = ticket.is_some() && index.is_none() && matches!(expiry, Expiry::Millis(_));
        let reply = match expiry {
            Expiry::Millis(ms) => {
                // `SET NX` replies OK when it wrote and nil when the key exists.
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(&value).arg("NX").arg("PX").arg(ms);
                match &index {
                    Some(index) => self.write_then_index(Write::Cmd(&cmd), index).await,
                    None if tracked => self.tracked_write(&key, &cmd).await,
                    None => self.query(&cmd).await,
                }
            }
            Expiry::Never => {
                // Without TTLs a dead record may still sit under the id: the script replaces it,
                // and only it. It replies 1 when it wrote, 0 when a live record is there.
                let mut invocation = script::CREATE.prepare_invoke();
                invocation.key(&key).arg(self.script_now()).arg(&value);
                match &index {
                    Some(index) => {
                        self.write_then_index(Write::Script(&invocation), index)
                            .await
                    }
                    None => self.invoke(&invocation).await,
                }
            }
        };
        // A failed or refused write leaves the copy to `after`, which drops it.
        match reply? {
            redis::Value::Nil | redis::Value::Int(0) => taken,
            _ => {
                let written = tracked.then(|| (record.clone(), value.as_slice(), expiry));
                self.settle_write(ticket, id, written, now);
                after.settled();
                Ok(())
            }
        }
    }

    /// `DEL`. The user index is left as it is (which user the session had would cost a read): a
    /// listing drops the session from it, and it expires with the session anyway.
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.forget(id);
        // Again after the reply: a load that raced with the delete may have cached the record.
        let _after = self.forget_after(id);
        self.query(redis::cmd("DEL").arg(self.key(id))).await
    }

    /// `PEXPIRE`, and when the touch record carries the session's user (the layer's does), the
    /// user index update: the session's new expiry must reach its index, or the index would drop
    /// it while it lives on.
    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        if self.inner.disable_touch {
            return Ok(());
        }
        let key = self.key(id);
        let now = sesame_core::now();
        let expiry = self.expiry_of(record.cookie(), now);
        let after = self.forget_after(id);
        match expiry {
            // PEXPIRE on a missing key does nothing: a touch never creates a record.
            Some(Expiry::Millis(ms)) => {
                let mut cmd = redis::cmd("PEXPIRE");
                cmd.arg(&key).arg(ms);
                match record.user() {
                    Some(user) => {
                        let score = Score::of(record.cookie(), now, Expiry::Millis(ms));
                        let index = self.index_add(user, id, score, now);
                        self.forget(id);
                        self.touch_and_index(&cmd, &index).await
                    }
                    None => {
                        let Some((cache, ticket, held)) = self.cache_ticket_and_copy(id, now).await
                        else {
                            return self.query(&cmd).await;
                        };
                        // The value is unchanged: the copy cached now lives on until the new
                        // TTL. PEXPIRE replies 1 when the key was there (and then it changed it).
                        // Otherwise `after` drops the copy.
                        let touched = self.tracked_write(&key, &cmd).await;
                        if let (Ok(redis::Value::Int(1)), Some(record)) = (&touched, held) {
                            let expires_at = Expiry::Millis(ms).instant_millis(now);
                            cache.settle(ticket, id, Some((record, expires_at)));
                            after.settled();
                        }
                        touched.map(drop)
                    }
                }
            }
            // Without TTLs the cookie's expiry is the only one: rewrite the cookie member, keep
            // the data, never create. The script tells the session's user.
            Some(Expiry::Never) => {
                self.forget(id);
                let members = Members::of(None, record.cookie())?;
                let invocation = self.patch_invocation(&key, &members, Some(Expiry::Never));
                let patched = self.run_patch(&key, &invocation, None).await?;
                if let Patched::Applied { meta: Some(meta) } = patched {
                    if let Some(user) = user_in_meta(&meta) {
                        let score = Score::of(record.cookie(), now, Expiry::Never);
                        let index = self.index_add(&user, id, score, now);
                        self.invoke::<()>(&index).await?;
                    }
                }
                Ok(())
            }
            // An expiry in the past ends the session now (as `EXPIRE` with a negative TTL does).
            None => {
                self.forget(id);
                self.query(redis::cmd("DEL").arg(&key)).await
            }
        }
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
        let keys = self.scan_keys().await?;
        if self.inner.disable_ttl {
            // Without TTLs, only the records tell which sessions are live.
            return Ok(self
                .fetch(&keys)
                .await?
                .into_iter()
                .map(|(id, _)| id)
                .collect());
        }
        // `SCAN` never returns a key whose TTL has passed.
        Ok(keys.iter().filter_map(|key| self.id_of(key)).collect())
    }

    async fn all(&self) -> Result<Vec<(SessionId, Record)>> {
        let keys = self.scan_keys().await?;
        self.fetch(&keys).await
    }

    async fn len(&self) -> Result<usize> {
        self.ids().await.map(|ids| ids.len())
    }

    /// Deletes the sessions (the string keys under the prefix), then the user index (the sorted
    /// sets under the user index prefix), and nothing else.
    async fn clear(&self) -> Result<()> {
        let sessions = self.scan_keys().await?;
        let index = self
            .scan(&self.inner.index_pattern, &self.inner.index_prefix, "zset")
            .await?;
        for keys in [sessions, index] {
            for batch in keys.chunks(self.inner.scan_count) {
                // On a cluster the driver splits a multi-key DEL by slot.
                self.query::<()>(redis::cmd("DEL").arg(batch)).await?;
            }
        }
        if let Some(cache) = self.inner.client_cache.as_deref() {
            cache.forget_all();
        }
        Ok(())
    }

    /// One `EVALSHA` of the patch script: the changed keys are merged into the record as stored
    /// now, on the server, copying every other member byte for byte.
    ///
    /// A patch that sets the meta object with a user indexes the session in the same round trip
    /// (on a cluster, in a second one). A patch that leaves the meta object alone on a session
    /// with a user moves the session's expiry, so it must move it in the index too: the script
    /// tells the user, and a second round trip updates the index. (The layer can spare that trip
    /// by carrying the meta object in its patches, as it does in its touches.) A patch that
    /// changes the user or logs out leaves the old user's index as it is: a listing drops the
    /// session from it.
    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        let key = self.key(id);
        let now = sesame_core::now();
        let expiry = self.expiry_of(patch.cookie(), now);
        let members = Members::of(Some(patch), patch.cookie())?;
        let after = self.forget_after(id);
        if let Some(Expiry::Millis(ms)) = expiry {
            if let Some((replace, record)) = self.replace_invocation(&key, patch, &members, ms) {
                let held = self.cache_ticket_and_copy(id, now).await;
                let ticket = held.as_ref().map(|&(cache, ticket, _)| (cache, ticket));
                let base = held
                    .and_then(|(_, _, copy)| copy)
                    .filter(|copy| is_base_of(copy, patch));
                // A failed call returns here, and `after` drops the copy.
                if self.invoke::<i64>(&replace).await? == 1 {
                    if ticket.is_some() {
                        // The cache gets the record as written: what the written bytes decode to.
                        let written = base
                            .and_then(|base| patched_as_stored(base, patch))
                            .or_else(|| Record::from_json(&record).ok())
                            .map(|written| (written, record.as_slice(), Expiry::Millis(ms)));
                        self.settle_write(ticket, id, written, now);
                    }
                    after.settled();
                    return Ok(true);
                }
                // Changed (or gone) since this request loaded it: merge member by member.
            }
        }
        // The patch script merges on the server: what it wrote is not known here (`after` drops
        // the copy again once it is done).
        self.forget(id);
        self.merge_patch(id, &key, patch, &members, expiry, now)
            .await
    }

    /// One `EVALSHA` of the swap script, which compares the member's stored text with the
    /// expected value as `serde_json` writes it. When the texts differ but the values are equal as
    /// JSON (key order, number formatting written by another app), a second call swaps on the
    /// exact stored text.
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
        let redis_key = self.key(id);
        let new_member = new.map(|value| member(key, value)).transpose()?;
        // The swap script writes on the server: drop the cached copy before and after it.
        self.forget(id);
        let _after = self.forget_after(id);
        let mut expected_text = expected
            .map(serde_json::to_string)
            .transpose()
            .map_err(Error::encode)?;
        let work = async {
            loop {
                let mut invocation = script::SWAP.prepare_invoke();
                invocation.key(&redis_key).arg(self.script_now()).arg(key);
                match &expected_text {
                    Some(text) => invocation.arg(1).arg(text.as_str()),
                    None => invocation.arg(0).arg(""),
                };
                match &new_member {
                    Some(text) => invocation.arg(1).arg(text.as_str()),
                    None => invocation.arg(0).arg(""),
                };
                let reply: Vec<redis::Value> = self.invoke(&invocation).await?;
                match reply.as_slice() {
                    [redis::Value::Int(1)] => return Ok(Swap::Done),
                    [redis::Value::Int(1), redis::Value::Int(pttl)] => {
                        if key == META_KEY {
                            self.index_swapped_meta(id, new, *pttl).await?;
                        }
                        return Ok(Swap::Done);
                    }
                    [redis::Value::Int(0)] => return Ok(Swap::Missing),
                    [redis::Value::Int(-2)] => {
                        return Err(Error::decode(ScriptError::NotAnObject {
                            key: redis_key.clone(),
                        }));
                    }
                    [redis::Value::Int(-1)] | [redis::Value::Int(-1), redis::Value::Nil] => {
                        return Ok(Swap::Changed(None));
                    }
                    [redis::Value::Int(-1), redis::Value::BulkString(text)] => {
                        let current: Value = serde_json::from_slice(text).map_err(Error::decode)?;
                        if Some(&current) != expected {
                            return Ok(Swap::Changed(Some(current)));
                        }
                        // Equal as JSON, written differently: swap on the stored text itself.
                        let text = String::from_utf8(text.clone()).map_err(Error::decode)?;
                        if expected_text.as_deref() == Some(text.as_str()) {
                            // Cannot happen (the script compared these texts); never spin.
                            return Ok(Swap::Changed(Some(current)));
                        }
                        expected_text = Some(text);
                    }
                    _ => {
                        return Err(backend(ScriptError::UnexpectedReply {
                            script: "compare-and-swap",
                            reply: redis::Value::Array(reply),
                        }));
                    }
                }
            }
        };
        // Each call is bounded; this bounds the (rare) retry on a formatting difference too.
        let bound = self.inner.timeout.saturating_mul(2);
        tokio::time::timeout(bound, work)
            .await
            .unwrap_or(Err(Error::Timeout {
                store: STORE_NAME,
                timeout: bound,
            }))
    }

    /// The live sessions in the user's index (members scored at or above now, less a grace
    /// period), fetched by `MGET` and kept only when their record is live and names `user`.
    /// Members that fail that check are then removed from the index.
    async fn user_sessions(&self, user: &str) -> Result<Vec<(SessionId, Record)>> {
        self.list_user(user).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn dates_are_written_as_javascript_does() {
        assert_eq!(
            iso_millis(datetime!(2026-11-24 00:06:37.123456 UTC)),
            "2026-11-24T00:06:37.123Z"
        );
        assert_eq!(
            iso_millis(datetime!(2026-01-02 03:04:05 +02:00)),
            "2026-01-02T01:04:05.000Z"
        );
    }

    /// The replace script's record, decoded, against the cache's shortcut: the base's record
    /// with the patch applied and the cookie state as stored.
    #[test]
    fn a_replaced_record_is_its_base_patched_without_decoding() {
        let bases: [&[u8]; 3] = [
            br#"{"cookie":{"originalMaxAge":1000,"expires":"2026-01-01T00:00:00.000Z","path":"/"},"n":1,"gone":[1,2],"keep":{"x":0.1}}"#,
            // Written by someone else: spacing, a duplicate member (the last one counts), no cookie
            // member first.
            br#"{ "n" : 1, "keep":"a", "keep":"b", "cookie":{"httpOnly":true} }"#,
            br#"{"cookie":{},"gone":null}"#,
        ];
        for base_bytes in bases {
            let base = Record::from_json(base_bytes)
                .unwrap()
                .with_origin(base_bytes.into());
            let mut changed = base.clone();
            changed
                .data_mut()
                .insert("n".into(), serde_json::json!(0.30000000000000004));
            changed.data_mut().insert(
                "new".into(),
                serde_json::json!({"a": [u64::MAX, -1, "é\u{1}"]}),
            );
            changed.data_mut().remove("gone");
            let cookie = changed.cookie_mut();
            cookie.expires = Some(datetime!(2026-03-04 05:06:07.891234567 +03:00));
            cookie.original_max_age = Some(3_600_000);
            cookie.deadline = Some(datetime!(2026-03-04 00:00:00 UTC));
            let patch = Patch::from_changes(&changed, ["n", "new", "gone"]);
            let members = Members::of(Some(&patch), patch.cookie()).unwrap();
            let (written, _) = replace::replaced(
                patch.base().unwrap(),
                &members.cookie,
                &members.removals,
                &members.sets,
            )
            .unwrap();
            let decoded = Record::from_json(&written).unwrap();
            let shortcut = patched_as_stored(base, &patch).unwrap();
            assert_eq!(shortcut, decoded, "{}", String::from_utf8_lossy(&written));
            assert_eq!(
                shortcut.cookie().expires.map(|at| at.offset()),
                decoded.cookie().expires.map(|at| at.offset())
            );
        }
    }

    #[test]
    fn members_are_serialized_as_in_a_record() {
        assert_eq!(
            member("a\"b", &serde_json::json!([1, {"x": []}])).unwrap(),
            r#""a\"b":[1,{"x":[]}]"#
        );
        let mut cookie = CookieState::default();
        cookie.set_max_age(sesame_core::now(), Some(Duration::from_secs(3600)));
        cookie.domain = Some("ex\"ample.org\u{7f}é".into());
        let mut with_extra = cookie.clone();
        with_extra
            .extra
            .insert("signed".into(), serde_json::json!(true));
        for cookie in [CookieState::default(), cookie, with_extra] {
            assert_eq!(
                cookie_member(&cookie).unwrap(),
                member(COOKIE_KEY, &cookie).unwrap()
            );
        }
    }
}
