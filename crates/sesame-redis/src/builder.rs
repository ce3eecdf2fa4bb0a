//! Configuration of a [`RedisStore`] and the ways to connect it.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use sesame_core::{Error, Result};

use crate::client_cache::ClientCache;
use crate::conn::Connection;
use crate::{
    DEFAULT_PREFIX, DEFAULT_SCAN_COUNT, DEFAULT_TIMEOUT, DEFAULT_TTL, Inner, RedisStore,
    STORE_NAME, backend, redis_error,
};

/// Builds a [`RedisStore`]. The options are connect-redis's (`prefix`, `ttl`, `disableTouch`,
/// `disableTTL`, `scanCount`), plus the bound on each command and where the user index lives.
///
/// ```no_run
/// # async fn run() -> sesame_core::Result<()> {
/// use std::time::Duration;
/// let store = sesame_redis::RedisStore::builder()
///     .prefix("myapp:sess:")
///     .default_ttl(Duration::from_secs(3600))
///     .timeout(Duration::from_millis(500))
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RedisStoreBuilder {
    prefix: String,
    user_index_prefix: Option<String>,
    default_ttl: Duration,
    disable_touch: bool,
    disable_ttl: bool,
    timeout: Duration,
    scan_count: usize,
    client_cache: Option<usize>,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            user_index_prefix: None,
            default_ttl: DEFAULT_TTL,
            disable_touch: false,
            disable_ttl: false,
            timeout: DEFAULT_TIMEOUT,
            scan_count: DEFAULT_SCAN_COUNT,
            client_cache: None,
        }
    }
}

impl RedisStoreBuilder {
    /// The key prefix (default `sess:`, connect-redis's `prefix`). Stores with different prefixes
    /// share a Redis without seeing each other's sessions: listing and `clear` stay within it
    /// (glob characters in it are escaped for `SCAN MATCH`). As with connect-redis, a prefix that
    /// begins another store's prefix (`app:` and `app:admin:`) does see that store's keys, so
    /// pick prefixes that do not nest.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key prefix of the user index (see [Sessions of a user](crate#sessions-of-a-user)): a
    /// user's index is the sorted set `<user index prefix><user id>`. By default it is derived from
    /// the [`prefix`](Self::prefix): the prefix without its trailing `:`, followed by `-user:`
    /// (`sess:` gives `sess-user:`, `myapp:sess:` gives `myapp:sess-user:`), so that the index keys
    /// lie outside the sessions' `<prefix>*` and connect-redis never sees them.
    ///
    /// [`clear`](sesame_core::SessionStore::clear) deletes the sorted sets under this prefix, so
    /// give each store its own, and do not let it nest with another store's prefix or with this
    /// store's session prefix (session listing only looks at string keys, so an index key is never
    /// taken for a session, but `<user index prefix><user>` must not be some session's key).
    #[must_use]
    pub fn user_index_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.user_index_prefix = Some(prefix.into());
        self
    }

    /// How long a record without a cookie expiry (a browser-session cookie) lives after its last
    /// write or touch (default one day, connect-redis's `ttl`).
    #[must_use]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Makes `touch` a no-op (connect-redis's `disableTouch`): the expiry of a session that a
    /// request read but did not modify is then not moved, which saves a command per such request.
    #[must_use]
    pub fn disable_touch(mut self, disable: bool) -> Self {
        self.disable_touch = disable;
        self
    }

    /// Writes records without a Redis TTL (connect-redis's `disableTTL`), for deployments that
    /// evict keys by other means. The store still never returns a record whose `cookie.expires`
    /// has passed (it checks on every read, and the patch and compare-and-swap scripts check on the
    /// server), but Redis keeps such records until they are destroyed, saved again or cleared.
    ///
    /// Unlike connect-redis, where `disableTTL` also turns `touch` off, `touch` then rewrites the
    /// record's `cookie` member (atomically, keeping the data), since the cookie's expiry is the
    /// only expiry there is; [`disable_touch`](Self::disable_touch) still turns it off.
    #[must_use]
    pub fn disable_ttl(mut self, disable: bool) -> Self {
        self.disable_ttl = disable;
        self
    }

    /// The bound on each Redis command (default two seconds). A command that takes longer fails
    /// with [`Error::Timeout`]; a refused or lost connection fails with [`Error::Backend`]. The
    /// connect methods also use it as the connection and response timeout of the driver.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many keys one `SCAN` step asks for, and how many records one `MGET` or `DEL` handles,
    /// when listing or clearing (default 100, connect-redis's `scanCount`).
    #[must_use]
    pub fn scan_count(mut self, count: usize) -> Self {
        self.scan_count = count.max(1);
        self
    }

    /// Keeps up to `capacity` session records in this process's memory, kept coherent by Redis
    /// itself (server-assisted client-side caching, Redis 6 or later): reading a session this
    /// process has read or written costs no round trip, and a write costs one.
    ///
    /// Redis tracks the keys the store's connection reads (`CLIENT TRACKING ON NOLOOP`, over
    /// RESP3) and tells it of the next change to each by another connection; the store then drops
    /// its copy. Its own writes read the key again right after they change it, atomically (inside
    /// the write's script, or `MULTI`), so the key stays tracked for the next change with the
    /// record just written cached (Redis tells a connection nothing of its own changes, and the
    /// store settles or drops its copy itself). Each cached record expires with its key, a lost connection
    /// empties the cache, and nothing is cached again until tracking is back on the new
    /// connection. So several app instances can share the sessions, and an Express app too.
    /// (Writes that also update a user's index, and merges of a record changed meanwhile, drop
    /// the copy instead: the next read goes to Redis.)
    ///
    /// Redis keeps an entry per tracked key (bounded by its `tracking-table-max-keys`, one
    /// million by default: beyond it, Redis forgets keys and notifies their readers, which drops
    /// their copies; nothing stale is served).
    ///
    /// The one trade-off is the delivery delay of a notice: a request that reaches this process
    /// within microseconds of another process changing its session may read the previous value
    /// (as a request racing that change would). Writes stay safe: a patch replaces the stored
    /// record only if it is still byte for byte the one the request read, and merges key by key
    /// otherwise; `Session::update` compares and swaps on the server.
    ///
    /// Only with [`connect`](Self::connect) and [`connect_lazy`](Self::connect_lazy), which
    /// open the RESP3 connection the notices arrive on; not on a Redis Cluster
    /// ([`connect_cluster`](Self::connect_cluster) refuses it), nor with a connection you built
    /// ([`build`](Self::build) and [`build_cluster`](Self::build_cluster) leave it off).
    /// [`DEFAULT_CLIENT_CACHE_CAPACITY`](crate::DEFAULT_CLIENT_CACHE_CAPACITY) is a sensible size.
    ///
    /// ```no_run
    /// # async fn run() -> sesame_core::Result<()> {
    /// use sesame_redis::{DEFAULT_CLIENT_CACHE_CAPACITY, RedisStore};
    /// let store = RedisStore::builder()
    ///     .client_side_cache(DEFAULT_CLIENT_CACHE_CAPACITY)
    ///     .connect("redis://127.0.0.1:6379")
    ///     .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn client_side_cache(mut self, capacity: usize) -> Self {
        self.client_cache = Some(capacity.max(1));
        self
    }

    /// The store over a connection manager you built (to choose its reconnection settings,
    /// TLS, or RESP3 yourself). Give it a response timeout no longer than the store's
    /// [`timeout`](Self::timeout).
    pub fn build(self, manager: ConnectionManager) -> RedisStore {
        self.warn_cache_unused();
        self.finish(Connection::Single(manager), None)
    }

    /// The store over a Redis Cluster connection you built.
    pub fn build_cluster(self, conn: ClusterConnection) -> RedisStore {
        self.warn_cache_unused();
        self.finish(Connection::Cluster(conn), None)
    }

    fn warn_cache_unused(&self) {
        if self.client_cache.is_some() {
            tracing::warn!(
                "the client-side cache needs a connection the store opens itself \
                 (connect or connect_lazy); this store runs without it"
            );
        }
    }

    /// Connects to the Redis at `url` (`redis://[user:password@]host:port[/db]`) through an
    /// auto-reconnecting connection manager whose connection and response timeouts are the
    /// store's timeout, and loads the store's Lua scripts. Fails with [`Error::Backend`] or
    /// [`Error::Timeout`] when Redis cannot be reached now; later outages are ridden out: requests
    /// fail within the timeout, and work again once Redis is back.
    pub async fn connect(self, url: &str) -> Result<RedisStore> {
        let (client, cache) = self.client(url)?;
        let manager = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client, self.manager_config(cache.as_ref())),
        )
        .await
        .map_err(|_elapsed| self.timed_out())?
        .map_err(|error| redis_error(error, self.timeout))?;
        let store = self.finish(Connection::Single(manager), cache);
        store.load_scripts().await;
        Ok(store)
    }

    /// Like [`connect`](Self::connect), but does not connect now: the first command does. Use it
    /// to start an application while Redis is down; its requests fail until Redis is up.
    pub fn connect_lazy(self, url: &str) -> Result<RedisStore> {
        let (client, cache) = self.client(url)?;
        let manager =
            ConnectionManager::new_lazy_with_config(client, self.manager_config(cache.as_ref()))
                .map_err(backend)?;
        Ok(self.finish(Connection::Single(manager), cache))
    }

    /// The client for `url`, on RESP3 with the client-side cache (which the invalidation notices
    /// need), as configured.
    fn client(&self, url: &str) -> Result<(redis::Client, Option<Arc<ClientCache>>)> {
        let Some(capacity) = self.client_cache else {
            return Ok((redis::Client::open(url).map_err(backend)?, None));
        };
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(backend)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(backend)?;
        Ok((
            client,
            Some(Arc::new(ClientCache::new(capacity, &self.prefix))),
        ))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each; the others
    /// are discovered), with the store's timeout as connection and response timeout, and loads the
    /// store's Lua scripts on every master.
    pub async fn connect_cluster<I>(self, urls: I) -> Result<RedisStore>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        if self.client_cache.is_some() {
            return Err(backend(
                "the client-side cache is not available on a Redis Cluster \
                 (invalidation notices would have to come from every node)",
            ));
        }
        let urls: Vec<String> = urls.into_iter().map(|u| u.as_ref().to_owned()).collect();
        let client = ClusterClientBuilder::new(urls)
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
            .build()
            .map_err(backend)?;
        let conn = tokio::time::timeout(self.timeout, client.get_async_connection())
            .await
            .map_err(|_elapsed| self.timed_out())?
            .map_err(|error| redis_error(error, self.timeout))?;
        let store = self.finish(Connection::Cluster(conn), None);
        store.load_scripts().await;
        Ok(store)
    }

    fn manager_config(&self, cache: Option<&Arc<ClientCache>>) -> ConnectionManagerConfig {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // While Redis is down, reconnection attempts are at most half a second apart, so the
            // store works again soon after Redis is back; each attempt is bounded by the timeout.
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(2);
        match cache {
            Some(cache) => {
                // Weak: the connection must not keep a dropped store's cache alive.
                let cache = Arc::downgrade(cache);
                config.set_push_sender(move |push: redis::PushInfo| {
                    if let Some(cache) = cache.upgrade() {
                        cache.on_push(&push);
                    }
                    Ok::<(), std::convert::Infallible>(())
                })
            }
            None => config,
        }
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            store: STORE_NAME,
            timeout: self.timeout,
        }
    }

    fn finish(self, conn: Connection, client_cache: Option<Arc<ClientCache>>) -> RedisStore {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let index_prefix = self
            .user_index_prefix
            .unwrap_or_else(|| default_user_index_prefix(&self.prefix));
        let index_pattern = format!("{}*", escape_glob(&index_prefix));
        RedisStore {
            inner: Arc::new(Inner {
                conn,
                prefix: self.prefix,
                pattern,
                index_prefix,
                index_pattern,
                default_ttl: self.default_ttl,
                disable_touch: self.disable_touch,
                disable_ttl: self.disable_ttl,
                timeout: self.timeout,
                scan_count: self.scan_count,
                client_cache,
            }),
        }
    }
}

/// The user index prefix of a store with session prefix `prefix`: `prefix` without its trailing
/// `:`, then `-user:`. For a prefix ending in `:` (connect-redis's convention) the result never
/// begins with the prefix, so index keys stay out of `SCAN MATCH <prefix>*`.
fn default_user_index_prefix(prefix: &str) -> String {
    format!("{}-user:", prefix.strip_suffix(':').unwrap_or(prefix))
}

/// Escapes the characters Redis glob patterns give a meaning to (`* ? [ ] \`), so a prefix such as
/// `app[1]:` matches only itself in `SCAN MATCH`.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_of_the_prefix_are_escaped() {
        assert_eq!(escape_glob("sess:"), "sess:");
        assert_eq!(escape_glob("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
    }

    #[test]
    fn the_user_index_prefix_is_derived_from_the_prefix() {
        assert_eq!(default_user_index_prefix("sess:"), "sess-user:");
        assert_eq!(default_user_index_prefix("myapp:sess:"), "myapp:sess-user:");
        assert_eq!(default_user_index_prefix("sess"), "sess-user:");
        assert!(!default_user_index_prefix("a:b:").starts_with("a:b:"));
    }
}
