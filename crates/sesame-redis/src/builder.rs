//! Configuration of a [`RedisStore`] and the ways to connect it.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use sesame_core::{Error, Result};

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

    /// The store over a connection manager you built (to choose its reconnection settings,
    /// TLS, or RESP3 yourself). Give it a response timeout no longer than the store's
    /// [`timeout`](Self::timeout).
    pub fn build(self, manager: ConnectionManager) -> RedisStore {
        self.finish(Connection::Single(manager))
    }

    /// The store over a Redis Cluster connection you built.
    pub fn build_cluster(self, conn: ClusterConnection) -> RedisStore {
        self.finish(Connection::Cluster(conn))
    }

    /// Connects to the Redis at `url` (`redis://[user:password@]host:port[/db]`) through an
    /// auto-reconnecting connection manager whose connection and response timeouts are the
    /// store's timeout, and loads the store's Lua scripts. Fails with [`Error::Backend`] or
    /// [`Error::Timeout`] when Redis cannot be reached now; later outages are ridden out: requests
    /// fail within the timeout, and work again once Redis is back.
    pub async fn connect(self, url: &str) -> Result<RedisStore> {
        let client = redis::Client::open(url).map_err(backend)?;
        let manager = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client, self.manager_config()),
        )
        .await
        .map_err(|_elapsed| self.timed_out())?
        .map_err(|error| redis_error(error, self.timeout))?;
        let store = self.build(manager);
        store.load_scripts().await;
        Ok(store)
    }

    /// Like [`connect`](Self::connect), but does not connect now: the first command does. Use it
    /// to start an application while Redis is down; its requests fail until Redis is up.
    pub fn connect_lazy(self, url: &str) -> Result<RedisStore> {
        let client = redis::Client::open(url).map_err(backend)?;
        let manager = ConnectionManager::new_lazy_with_config(client, self.manager_config())
            .map_err(backend)?;
        Ok(self.build(manager))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each; the others
    /// are discovered), with the store's timeout as connection and response timeout, and loads the
    /// store's Lua scripts on every master.
    pub async fn connect_cluster<I>(self, urls: I) -> Result<RedisStore>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
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
        let store = self.build_cluster(conn);
        store.load_scripts().await;
        Ok(store)
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // While Redis is down, reconnection attempts are at most half a second apart, so the
            // store works again soon after Redis is back; each attempt is bounded by the timeout.
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(2)
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            store: STORE_NAME,
            timeout: self.timeout,
        }
    }

    fn finish(self, conn: Connection) -> RedisStore {
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
