//! The layer's options (express-session's options) and their builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use sesame_core::time::OffsetDateTime;
use sesame_core::{
    CookieOptions, DynStore, IdHasher, KeyRing, META_KEY, Record, SessionId, SessionStore,
    StoreObserver,
};

use crate::cookies::is_valid_cookie_name;
use crate::error::ConfigError;
use crate::guard::GuardedStore;
use crate::layer::SessionLayer;

/// The default bound on each store call.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request gets when the store fails or exceeds its timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnStoreError {
    /// Fail closed: answer `503 Service Unavailable` with a short body (or `500` for errors that
    /// are not an outage) and log the error with its source. The default: nothing is silently lost.
    #[default]
    FailClosed,
    /// Carry on without a session: a handler gets a fresh session that is never saved and sends
    /// no cookie, and a failed save keeps the handler's response; a warning is logged. For pages
    /// that work for anonymous users anyway.
    ContinueWithoutSession,
}

/// What happens when a stored record cannot be decoded (corrupt, or written by something else).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCorruptRecord {
    /// Treat it as no session: a new session with a new id (the record stays in the store, where
    /// it expires; nothing is deleted), and log a warning. The default.
    #[default]
    StartNew,
    /// Fail the request with `500`, logging the decode error.
    Fail,
}

/// What detaching a session from a request ([`Session::detach`](crate::Session::detach),
/// express's `delete req.session`) does to its stored record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unset {
    /// Leave the record as it is (express-session's `unset: 'keep'`, the default).
    #[default]
    Keep,
    /// Delete the record when the response is sent (`unset: 'destroy'`).
    Destroy,
}

type GenId = Arc<dyn Fn() -> String + Send + Sync>;
type CookieFn = Arc<dyn Fn(&Parts) -> CookieOptions + Send + Sync>;

/// Where the cookie options of a request come from.
#[derive(Clone)]
pub(crate) enum CookieSource {
    Fixed(Arc<CookieOptions>),
    PerRequest(CookieFn),
}

/// The resolved configuration, shared by every request.
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) keys: KeyRing,
    pub(crate) verified: crate::verified::VerifiedCookies,
    pub(crate) resave: bool,
    pub(crate) save_uninitialized: bool,
    pub(crate) rolling: bool,
    pub(crate) touch_after: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) absolute_timeout: Option<Duration>,
    pub(crate) proxy: bool,
    pub(crate) genid: Option<GenId>,
    pub(crate) unset: Unset,
    pub(crate) cookie: CookieSource,
    pub(crate) store: GuardedStore,
    pub(crate) on_store_error: OnStoreError,
    pub(crate) on_corrupt_record: OnCorruptRecord,
    pub(crate) max_record_size: Option<usize>,
}

/// How often a logged-in session's last-seen time is refreshed when `touch_after` is not set.
const DEFAULT_SEEN_INTERVAL: Duration = Duration::from_secs(60);

impl Config {
    /// How stale a logged-in session's last-seen time may get before a request refreshes it.
    pub(crate) fn seen_interval(&self) -> Duration {
        self.touch_after.unwrap_or(DEFAULT_SEEN_INTERVAL)
    }

    /// The time past which the store must not keep `record`: `now` plus the idle timeout, and
    /// the session's creation plus the absolute timeout, whichever comes first.
    pub(crate) fn deadline(&self, record: &Record, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let idle = self.idle_timeout.map(|idle| now + idle);
        // The record is searched for its creation time only when there is a timeout to apply.
        let absolute = self
            .absolute_timeout
            .and_then(|absolute| Some(created(record)? + absolute));
        match (idle, absolute) {
            (Some(idle), Some(absolute)) => Some(idle.min(absolute)),
            (deadline, None) | (None, deadline) => deadline,
        }
    }

    /// Whether `record`'s session is older than the absolute timeout at `now`.
    pub(crate) fn past_absolute_timeout(&self, record: &Record) -> bool {
        // The clock is read only when there is a timeout to check.
        self.absolute_timeout.is_some_and(|absolute| {
            created(record).is_some_and(|created| created + absolute <= sesame_core::now())
        })
    }

    /// Refuses a record over the configured size limit, before it reaches the store.
    pub(crate) fn check_size(&self, record: &Record) -> Result<(), sesame_core::Error> {
        let Some(limit) = self.max_record_size else {
            return Ok(());
        };
        let size = record.to_json_vec()?.len();
        if size > limit {
            return Err(sesame_core::Error::TooLarge {
                store: self.store.name(),
                size,
                limit,
            });
        }
        Ok(())
    }

    /// A new session id: from the custom generator when there is one and it returns a usable id,
    /// from the CSPRNG otherwise.
    pub(crate) fn generate_id(&self) -> SessionId {
        if let Some(genid) = &self.genid {
            let raw = genid();
            match SessionId::parse(&raw) {
                Ok(id) => return id,
                Err(error) => tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "the genid function returned an unusable id; using a random id instead"
                ),
            }
        }
        SessionId::generate()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("resave", &self.resave)
            .field("save_uninitialized", &self.save_uninitialized)
            .field("rolling", &self.rolling)
            .field("proxy", &self.proxy)
            .field("genid", &self.genid.as_ref().map(|_| "custom"))
            .field("unset", &self.unset)
            .field("store", &self.store.inner)
            .field("store_timeout", &self.store.timeout)
            .field("on_store_error", &self.on_store_error)
            .field("on_corrupt_record", &self.on_corrupt_record)
            .field("max_record_size", &self.max_record_size)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SessionLayer`]: every option of express-session, with its defaults (except `resave`
/// and `save_uninitialized`, which default to `false`: express-session deprecated its `true`
/// defaults).
///
/// ```
/// use std::time::Duration;
/// use axum_sesame::{CookieOptions, SameSite, SessionLayer};
///
/// let layer = SessionLayer::builder()
///     .secret("a long random secret from your configuration")
///     .name("sid")
///     .rolling(true)
///     .cookie(CookieOptions::default().max_age(Duration::from_secs(3600)).same_site(SameSite::Lax))
///     .build()
///     .expect("a valid session configuration");
/// # let _ = layer;
/// ```
#[must_use]
pub struct SessionLayerBuilder {
    name: String,
    secrets: Vec<Vec<u8>>,
    resave: bool,
    save_uninitialized: bool,
    rolling: bool,
    touch_after: Option<Duration>,
    idle_timeout: Option<Duration>,
    absolute_timeout: Option<Duration>,
    observer: Option<Arc<dyn StoreObserver>>,
    proxy: bool,
    genid: Option<GenId>,
    unset: Unset,
    cookie: CookieSource,
    store: Option<DynStore>,
    private_cookies: bool,
    allow_short_secrets: bool,
    id_hash_key: Option<Vec<u8>>,
    store_timeout: Option<Duration>,
    on_store_error: OnStoreError,
    on_corrupt_record: OnCorruptRecord,
    max_record_size: Option<usize>,
}

impl Default for SessionLayerBuilder {
    fn default() -> Self {
        Self {
            name: "connect.sid".to_owned(),
            secrets: Vec::new(),
            resave: false,
            save_uninitialized: false,
            rolling: false,
            touch_after: None,
            idle_timeout: None,
            absolute_timeout: None,
            observer: None,
            proxy: false,
            genid: None,
            unset: Unset::Keep,
            cookie: CookieSource::Fixed(Arc::new(CookieOptions::default())),
            store: None,
            private_cookies: false,
            allow_short_secrets: false,
            id_hash_key: None,
            store_timeout: Some(DEFAULT_STORE_TIMEOUT),
            on_store_error: OnStoreError::FailClosed,
            on_corrupt_record: OnCorruptRecord::StartNew,
            max_record_size: None,
        }
    }
}

impl SessionLayerBuilder {
    /// The secret that signs and verifies session cookies: at least 32 random bytes (see
    /// [`allow_short_secrets`](Self::allow_short_secrets)). Required. Calling it again adds another
    /// secret: the first signs, all verify (see [`secrets`](Self::secrets)).
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secrets.push(secret.as_ref().to_vec());
        self
    }

    /// Several secrets at once, for rotation: the first signs new cookies, every one verifies, so
    /// cookies signed with a retired secret keep working while it stays in the list.
    pub fn secrets<I>(mut self, secrets: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.secrets
            .extend(secrets.into_iter().map(|s| s.as_ref().to_vec()));
        self
    }

    /// The cookie name (default `connect.sid`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Save the session at the end of every request that used it, even when unmodified (default
    /// `false`). Only needed for stores that cannot `touch`.
    pub fn resave(mut self, resave: bool) -> Self {
        self.resave = resave;
        self
    }

    /// Save a new session (and send its cookie) even when the handler put nothing in it (default
    /// `false`: no store write and no cookie until there is something to remember, which also
    /// suits consent rules).
    pub fn save_uninitialized(mut self, save_uninitialized: bool) -> Self {
        self.save_uninitialized = save_uninitialized;
        self
    }

    /// Send the cookie on every response that used the session, restarting its max age (default
    /// `false`).
    pub fn rolling(mut self, rolling: bool) -> Self {
        self.rolling = rolling;
        self
    }

    /// Touch an unmodified session at most once per `interval` (connect-mongo's `touchAfter`, for
    /// every store). By default express-session's rule applies: every request that uses a stored
    /// session and does not change it touches it, one store write per request. With an interval,
    /// a session whose expiry was last moved less than `interval` ago is not touched; its stored
    /// expiry (and, with `rolling`, the cookie's) stays where it was, so sessions may end up to
    /// `interval` earlier than without it. Choose an interval small next to the max age, such as a
    /// minute for a day.
    pub fn touch_after(mut self, interval: Duration) -> Self {
        self.touch_after = Some(interval);
        self
    }

    /// End a session that has not been used for `timeout` (OWASP's idle timeout; sliding: every
    /// request that uses the session renews it). The store drops the session once the time has
    /// passed, whatever the cookie's own expiry says, so a stolen cookie of an abandoned session is
    /// worthless. It works with browser-session cookies too. With
    /// [`touch_after`](Self::touch_after), renewal happens at most once per interval, so a session
    /// may end up to that interval early. Default: none (the cookie's max age, or the store's
    /// default time to live for browser-session cookies, is the limit).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// End every session `timeout` after it was created, however active it is (OWASP's absolute
    /// timeout; never renewed). The creation time is kept in the session's data (under the
    /// [`META_KEY`](sesame_core::META_KEY) object); a session that predates the option gets it
    /// stamped on its next request. Combine with [`idle_timeout`](Self::idle_timeout): a
    /// session ends at whichever comes first. Default: none.
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.absolute_timeout = Some(timeout);
        self
    }

    /// Reports every store call (operation, latency, failure) to `observer`, for metrics: use a
    /// shared [`StoreMetrics`](sesame_core::StoreMetrics), a closure, or your own
    /// [`StoreObserver`] that feeds the `metrics` crate or tracing.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use axum_sesame::{SessionLayer, StoreMetrics, StoreOperation};
    ///
    /// let metrics = Arc::new(StoreMetrics::new());
    /// let layer = SessionLayer::builder()
    ///     .secret(axum_sesame::core::random_secret())
    ///     .observe(Arc::clone(&metrics))
    ///     .build()?;
    /// // Later, in a metrics endpoint:
    /// let loads = metrics.snapshot(StoreOperation::Load);
    /// println!("loads: {} ({} failed)", loads.calls, loads.failures);
    /// # let _ = layer;
    /// # Ok::<(), axum_sesame::ConfigError>(())
    /// ```
    pub fn observe(mut self, observer: impl StoreObserver) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Trust the `X-Forwarded-Proto` header of a reverse proxy to decide whether the request came
    /// over https (default `false`: axum has no "trust proxy" setting, so only an `https` request
    /// URI or the [`Https`](crate::Https) request extension count).
    pub fn proxy(mut self, trust: bool) -> Self {
        self.proxy = trust;
        self
    }

    /// A custom session id generator (default: 192 bits from the OS CSPRNG, base64url). Ids must be
    /// 1 to 128 bytes of visible ASCII; an unusable id is logged and replaced by a random one.
    pub fn genid(mut self, genid: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.genid = Some(Arc::new(genid));
        self
    }

    /// What [`Session::detach`](crate::Session::detach) does to the stored record (default
    /// [`Unset::Keep`]).
    pub fn unset(mut self, unset: Unset) -> Self {
        self.unset = unset;
        self
    }

    /// The cookie's options (default express-session's: path `/`, `HttpOnly`, browser-session).
    pub fn cookie(mut self, options: CookieOptions) -> Self {
        self.cookie = CookieSource::Fixed(Arc::new(options));
        self
    }

    /// Cookie options computed for each request (for example a `Domain` per tenant).
    pub fn cookie_with(
        mut self,
        options: impl Fn(&Parts) -> CookieOptions + Send + Sync + 'static,
    ) -> Self {
        self.cookie = CookieSource::PerRequest(Arc::new(options));
        self
    }

    /// Encrypt the session id in the cookie (AES-256-GCM, keys derived from the secrets, the first
    /// sealing and all opening) instead of only signing it, so the cookie reveals nothing. Default
    /// `false`; express-session cannot read private cookies.
    pub fn private_cookies(mut self, private: bool) -> Self {
        self.private_cookies = private;
        self
    }

    /// Accept secrets shorter than 32 bytes. Only for sharing cookies with an existing Express app
    /// whose secret cannot change yet: a short secret can be brute-forced from one cookie.
    pub fn allow_short_secrets(mut self, allow: bool) -> Self {
        self.allow_short_secrets = allow;
        self
    }

    /// Store records under a keyed hash of the session id (HMAC-SHA256 with `key`, at least 32
    /// bytes) instead of the id itself, so a leaked store dump cannot be replayed as cookies. Keep
    /// the key stable: changing it orphans every session. An Express app sharing the store cannot
    /// find hashed records, so leave this off during a migration.
    pub fn hash_ids_at_rest(mut self, key: impl AsRef<[u8]>) -> Self {
        self.id_hash_key = Some(key.as_ref().to_vec());
        self
    }

    /// The bound on each store call (default 5 seconds); past it the call fails with a timeout,
    /// handled as [`on_store_error`](Self::on_store_error) says. `None` waits as long as the store
    /// does.
    pub fn store_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// What a request gets when the store fails or times out (default
    /// [`OnStoreError::FailClosed`]).
    pub fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.on_store_error = policy;
        self
    }

    /// What happens when a stored record cannot be decoded (default
    /// [`OnCorruptRecord::StartNew`]).
    pub fn on_corrupt_record(mut self, policy: OnCorruptRecord) -> Self {
        self.on_corrupt_record = policy;
        self
    }

    /// Refuse to save a session whose record (as express-session's JSON) exceeds `bytes`; the
    /// request fails with `500` and a clear error in the log instead of the store silently
    /// truncating or rejecting it. Default: no limit.
    pub fn max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = Some(bytes);
        self
    }

    /// The store (default: a new [`MemoryStore`](crate::MemoryStore) with the `memory` feature).
    pub fn store(mut self, store: impl SessionStore) -> Self {
        self.store = Some(DynStore::new(store));
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// Fails without a secret (there is no default secret, as in express-session), with an empty
    /// secret, or with an invalid cookie name. Without the `memory` feature a store is required too;
    /// with it, a missing store is a new `MemoryStore`.
    pub fn build(self) -> Result<SessionLayer, ConfigError> {
        let keys = KeyRing::builder()
            .private(self.private_cookies)
            .allow_short_secrets(self.allow_short_secrets)
            .build(&self.secrets)?;
        if !is_valid_cookie_name(&self.name) {
            return Err(ConfigError::InvalidCookieName(self.name));
        }
        if let CookieSource::Fixed(options) = &self.cookie {
            check_prefix(&self.name, options)?;
        }
        let id_hasher = self.id_hash_key.map(IdHasher::new).transpose()?;
        let store = match self.store {
            Some(store) => store,
            None => default_store()?,
        };
        Ok(SessionLayer::from_config(Config {
            name: self.name,
            keys,
            verified: crate::verified::VerifiedCookies::new(),
            resave: self.resave,
            save_uninitialized: self.save_uninitialized,
            rolling: self.rolling,
            touch_after: self.touch_after.filter(|interval| !interval.is_zero()),
            idle_timeout: self.idle_timeout,
            absolute_timeout: self.absolute_timeout,
            proxy: self.proxy,
            genid: self.genid,
            unset: self.unset,
            cookie: self.cookie,
            store: GuardedStore {
                #[cfg(feature = "memory")]
                memory: store.downcast_ref::<sesame_memory::MemoryStore>().cloned(),
                inner: store,
                timeout: self.store_timeout,
                id_hasher,
                observer: self.observer,
            },
            on_store_error: self.on_store_error,
            on_corrupt_record: self.on_corrupt_record,
            max_record_size: self.max_record_size,
        }))
    }
}

/// Checks the rules browsers enforce for prefixed cookie names: `__Secure-` needs `Secure`;
/// `__Host-` needs `Secure`, `Path=/` and no `Domain`. A violating cookie would be silently
/// dropped by the browser, so it is a configuration error here.
pub(crate) fn check_prefix(name: &str, options: &CookieOptions) -> Result<(), ConfigError> {
    let always_secure = options.secure_value() == sesame_core::Secure::Always;
    let problem = if name.starts_with("__Host-") {
        if !always_secure {
            Some("a __Host- cookie must be Secure (Secure::Always)")
        } else if options.path_value() != "/" {
            Some("a __Host- cookie must have Path=/")
        } else if options.domain_value().is_some() {
            Some("a __Host- cookie must not have a Domain")
        } else {
            None
        }
    } else if name.starts_with("__Secure-") && !always_secure {
        Some("a __Secure- cookie must be Secure (Secure::Always)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ConfigError::CookiePrefix(problem)),
        None => Ok(()),
    }
}

#[cfg(feature = "memory")]
fn default_store() -> Result<DynStore, ConfigError> {
    Ok(DynStore::new(sesame_memory::MemoryStore::new()))
}

#[cfg(not(feature = "memory"))]
fn default_store() -> Result<DynStore, ConfigError> {
    Err(ConfigError::MissingStore)
}

impl fmt::Debug for SessionLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayerBuilder")
            .field("name", &self.name)
            .field("secrets", &self.secrets.len())
            .field("resave", &self.resave)
            .field("save_uninitialized", &self.save_uninitialized)
            .field("rolling", &self.rolling)
            .field("touch_after", &self.touch_after)
            .field("proxy", &self.proxy)
            .field("unset", &self.unset)
            .finish_non_exhaustive()
    }
}

/// When `record`'s session was created, as the meta object records it.
fn created(record: &Record) -> Option<OffsetDateTime> {
    let created = record.data().get(META_KEY)?.get("created")?.as_i64()?;
    sesame_core::from_unix_millis(created)
}
