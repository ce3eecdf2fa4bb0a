//! The `Session` extractor and the per-request state behind it.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use axum_core::extract::FromRequestParts;
use http::HeaderMap;
use http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sesame_core::time::OffsetDateTime;
use sesame_core::{
    COOKIE_KEY, CookieOptions, KeyRing, META_KEY, Patch, Record, SessionId, SessionMeta,
    SessionStore, Swap, unix_millis, user_of,
};

use crate::config::{Config, OnCorruptRecord, OnStoreError};
use crate::cookies::find_cookie;
use crate::error::{SessionError, SessionRejection};
use crate::verified::VerifiedCookie;

/// The session of the current request: typed access to its data, its id, its cookie's expiry, and
/// the express-session methods (`regenerate`, `destroy`, `reload`, `save`, `touch`).
///
/// Extract it in a handler wrapped by a [`SessionLayer`](crate::SessionLayer). Extracting it loads
/// the session from the store (once per request, however many extractors ask); a handler that does
/// not extract it costs no store I/O and no signature check.
///
/// ```
/// use axum_sesame::{Session, SessionError};
///
/// async fn counter(session: Session) -> Result<String, SessionError> {
///     let views: u64 = session.get("views")?.unwrap_or(0) + 1;
///     session.insert("views", views)?;
///     Ok(format!("views: {views}"))
/// }
/// ```
///
/// Changes are saved when the response is returned, before it leaves the server (so a redirect
/// never races the save). Data methods are synchronous; methods that talk to the store are `async`.
/// Clones share one session.
#[derive(Clone)]
pub struct Session {
    /// The request's session; its state is loaded (a `Session` exists only once it is).
    request: Arc<RequestSession>,
}

/// How often [`Session::update`] retries under contention before giving up.
const UPDATE_ATTEMPTS: usize = 1000;

/// What the layer puts in the request's extensions; the extractor turns it into a [`Session`].
#[derive(Clone)]
pub(crate) struct SessionHandle(pub(crate) Arc<RequestSession>);

/// Everything sesame knows about the session of one request.
pub(crate) struct RequestSession {
    pub(crate) config: Arc<Config>,
    pub(crate) cookie_options: Arc<CookieOptions>,
    /// Whether the request came over https (directly, or through a trusted proxy).
    pub(crate) https: bool,
    /// Set when a handler first uses the session; unset means the handler never touched it.
    pub(crate) state: OnceLock<Mutex<State>>,
}

/// The session's state during one request.
pub(crate) struct State {
    /// The session's id; a new session gets one only when it is needed (saved, sent, or asked
    /// for), so a request that starts a session and keeps nothing generates no id at all.
    id: Option<SessionId>,
    /// The id under which the store holds this session's record (loaded or saved this request).
    pub(crate) stored_id: Option<SessionId>,
    pub(crate) record: Record,
    /// The version of the data the store held, kept when the data is first changed (it shares
    /// the store's copy of the data, which also keeps the store from changing that copy in place):
    /// while the store still holds exactly that data, the memory store can take the whole record
    /// instead of applying a patch of the changed keys.
    pub(crate) loaded: Option<sesame_core::DataVersion>,
    /// The client does not have a cookie for `id` yet.
    pub(crate) is_new: bool,
    /// The data differs from what was loaded (or created): express-session's "modified", which
    /// ignores the cookie.
    pub(crate) modified: bool,
    /// The record has changes not yet written to the store.
    pub(crate) unsaved: bool,
    /// The handler set the cookie's expiry itself (remember me): keep it, store it, send it.
    pub(crate) cookie_changed: bool,
    /// Keys set or removed since the last write, for stores that apply per-key patches.
    pub(crate) changed_keys: Vec<String>,
    /// `destroy` was called and nothing was put in the session after it.
    pub(crate) destroyed: bool,
    /// The client holds a cookie for an id that no longer exists (destroyed or regenerated); it is
    /// removed unless a new cookie replaces it.
    pub(crate) stale_client_cookie: bool,
    /// `detach` was called: the session is no longer this request's.
    pub(crate) detached: bool,
    /// The store failed and the layer carries on without a session: never saved, no cookie.
    pub(crate) ephemeral: bool,
    /// The request carried a session cookie, valid or not.
    pub(crate) client_sent_cookie: bool,
    /// What the request's cookie proved, when it verified and named a stored session: its value
    /// is sent back as it came when the response sets the cookie for that id again.
    pub(crate) client_cookie: Option<VerifiedCookie>,
}

impl State {
    fn new(id: Option<SessionId>, record: Record) -> Self {
        Self {
            id,
            stored_id: None,
            record,
            loaded: None,
            is_new: true,
            modified: false,
            unsaved: false,
            cookie_changed: false,
            changed_keys: Vec::new(),
            destroyed: false,
            stale_client_cookie: false,
            detached: false,
            ephemeral: false,
            client_sent_cookie: false,
            client_cookie: None,
        }
    }

    fn loaded(cookie: VerifiedCookie, record: Record) -> Self {
        let id = cookie.id.clone();
        Self {
            stored_id: Some(id.clone()),
            is_new: false,
            client_cookie: Some(cookie),
            ..Self::new(Some(id), record)
        }
    }

    /// The value of a cookie for `id`: the client's own when it is current for `id`, or a new
    /// signature.
    pub(crate) fn cookie_value_for(&self, keys: &KeyRing, id: &SessionId) -> Cow<'_, str> {
        VerifiedCookie::value_for(self.client_cookie.as_ref(), keys, id)
    }

    /// The session's id, generating it now if the session has none yet.
    pub(crate) fn id(&mut self, config: &Config) -> SessionId {
        self.id.get_or_insert_with(|| config.generate_id()).clone()
    }

    /// Whether `id` is (still) this session's id.
    pub(crate) fn has_id(&self, id: &SessionId) -> bool {
        self.id.as_ref() == Some(id)
    }

    /// Gives the session another id (after an id collision in the store).
    pub(crate) fn set_id(&mut self, id: SessionId) {
        self.id = Some(id);
    }

    /// Whether the store holds a record under the current id.
    pub(crate) fn is_persisted(&self) -> bool {
        self.id.is_some() && self.stored_id == self.id
    }

    /// A session this request started and left as it was, under a policy that does not save
    /// uninitialized sessions: express-session's decisions come to "no write, no cookie" for it
    /// whatever the time (see `layer::decide`).
    pub(crate) fn is_unused_new_session(&self, config: &Config) -> bool {
        self.is_new
            && !config.save_uninitialized
            && !self.is_persisted()
            && !self.unsaved
            && !self.modified
            && !self.cookie_changed
            && !self.stale_client_cookie
            && !self.destroyed
            && !self.detached
    }

    /// The data, for a change: keeps the record as loaded first (see [`State::loaded`]).
    fn data_mut(&mut self) -> &mut Map<String, Value> {
        if self.loaded.is_none() && self.is_persisted() {
            self.loaded = Some(self.record.data_version());
        }
        self.record.data_mut()
    }

    fn mark_changed(&mut self, key: &str) {
        self.modified = true;
        self.unsaved = true;
        self.destroyed = false;
        // A session not in the store yet is written whole: no per-key patch to prepare.
        if self.is_persisted() && !self.changed_keys.iter().any(|k| k == key) {
            self.changed_keys.push(key.to_owned());
        }
    }

    /// Brings sesame's bookkeeping up to date before the end-of-request decision (or an explicit
    /// save) at `now`: stamps the creation time the absolute timeout needs, refreshes a logged-in
    /// session's last-seen time once per `seen_interval`, and sets the record's deadline from the
    /// timeouts. Bookkeeping is not "modified" data (it never changes cookie decisions), but it
    /// makes the session unsaved, so it reaches the store.
    pub(crate) fn prepare_write(&mut self, config: &Config, now: OffsetDateTime) {
        let persisted = self.is_persisted();
        let will_save = persisted || self.unsaved || config.save_uninitialized;
        let data = self.record.data();
        let meta = data.get(META_KEY);
        let needs_created = config.absolute_timeout.is_some()
            && will_save
            && meta.and_then(|meta| meta.get("created")).is_none();
        let logged_in = meta.and_then(sesame_core::meta_user).is_some();
        let needs_seen = persisted
            && logged_in
            && meta
                .and_then(|meta| meta.get("seen"))
                .and_then(Value::as_i64)
                .and_then(sesame_core::from_unix_millis)
                .is_none_or(|seen| now - seen >= config.seen_interval());
        if needs_created || needs_seen {
            let mut meta = SessionMeta::from_data(data).unwrap_or_default();
            if needs_created {
                meta.created = Some(unix_millis(now));
            }
            if needs_seen {
                meta.seen = Some(unix_millis(now));
            }
            self.data_mut().insert(META_KEY.to_owned(), meta.to_value());
            self.unsaved = true;
            if !self.changed_keys.iter().any(|key| key == META_KEY) {
                self.changed_keys.push(META_KEY.to_owned());
            }
        }
        let deadline = config.deadline(&self.record, now);
        self.record.cookie_mut().deadline = deadline;
    }

    /// The per-key patch of this request's changes. A logged-in session's patch also carries its
    /// meta object, as its touch does: the patch moves the expiry, and a store whose user index
    /// entries expire (Redis) moves the entry in the same round trip.
    pub(crate) fn patch(&self) -> Patch {
        let keys = self.changed_keys.iter().map(String::as_str);
        let mut patch = Patch::from_changes(&self.record, keys);
        if let Some(meta) = self.logged_in_meta() {
            patch.set(META_KEY, meta.clone());
        }
        patch
    }

    /// What a touch sends to the store: the cookie state, plus the meta object of a logged-in
    /// session so a store can keep its user index alive as long as the session.
    pub(crate) fn touch_record(&self) -> Record {
        let mut touch = Record::new(self.record.cookie().clone());
        if let Some(meta) = self.logged_in_meta() {
            touch.data_mut().insert(META_KEY.to_owned(), meta.clone());
        }
        touch
    }

    /// The meta object of a session a user is logged in to; `None` for an anonymous session.
    fn logged_in_meta(&self) -> Option<&Value> {
        let data = self.record.data();
        user_of(data).and_then(|_| data.get(META_KEY))
    }

    /// Marks the record as written to the store under `id`, if that is still the session's id (a
    /// concurrent `regenerate` may have replaced it while the write was on its way).
    pub(crate) fn mark_saved_as(&mut self, id: &SessionId) {
        if !self.has_id(id) {
            return;
        }
        self.stored_id.clone_from(&self.id);
        self.unsaved = false;
        self.changed_keys.clear();
        self.loaded = None;
    }
}

/// What loading found: the stored session, or a reason to start a new one.
// `allow`, not `expect`: whether the variant counts as large depends on the features the build
// unifies on serde_json (`preserve_order` makes a `Map` three times larger).
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and consumed at once; a box would cost an allocation"
)]
enum Loaded {
    Stored(VerifiedCookie, Record),
    /// No cookie, a cookie that failed verification, an unknown or expired id, a record that
    /// could not be decoded (when such records start new sessions).
    Fresh,
    /// The store failed and the layer carries on without a session.
    Ephemeral,
}

impl RequestSession {
    /// Loads the session on first use: finds and verifies the cookie in `headers`, reads the
    /// store, or starts a new session. The cookie is looked for only now, so a request whose
    /// handler never uses the session never pays for parsing it.
    async fn load_once(&self, headers: &HeaderMap) -> Result<(), sesame_core::Error> {
        if self.state.get().is_some() {
            return Ok(());
        }
        let cookie_value = find_cookie(headers, &self.config.name);
        let loaded = self.load(cookie_value).await?;
        // axum runs a handler's extractors one after the other, so the first load is the only
        // one; were two ever to race, the first to finish wins and the other's result is dropped.
        // (`set` rather than `get_or_init` with the state built in its closure: that closure's
        // machinery costs more instructions than the copy it saves.)
        let mut state = match loaded {
            Loaded::Stored(cookie, record) => State::loaded(cookie, record),
            Loaded::Fresh => self.fresh_state(),
            Loaded::Ephemeral => {
                let mut state = self.fresh_state();
                state.ephemeral = true;
                state
            }
        };
        state.client_sent_cookie = cookie_value.is_some();
        let _ = self.state.set(Mutex::new(state));
        Ok(())
    }

    async fn load(&self, cookie_value: Option<&[u8]>) -> Result<Loaded, sesame_core::Error> {
        let verified =
            cookie_value.and_then(|value| self.config.verified.verify(&self.config.keys, value));
        let Some(cookie) = verified else {
            if cookie_value.is_some() {
                tracing::debug!("session cookie failed verification; starting a new session");
            }
            return Ok(Loaded::Fresh);
        };
        let id = &cookie.id;
        match self.config.store.load_at(id, sesame_core::now()).await {
            Ok(Some(record)) if self.config.past_absolute_timeout(&record) => {
                // The store should have dropped it already (its deadline caps the expiry), unless
                // another app (an Express app sharing the store) extended it: end it here.
                tracing::debug!("session past its absolute timeout; destroying it");
                // Boxed: a rare path, kept out of the size of every request's future.
                if let Err(error) = Box::pin(self.config.store.destroy(id)).await {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "could not destroy a session past its absolute timeout"
                    );
                }
                Ok(Loaded::Fresh)
            }
            Ok(Some(record)) => {
                tracing::debug!("session loaded from the store");
                Ok(Loaded::Stored(cookie, record))
            }
            Ok(None) => {
                // An unknown id is never adopted (no session fixation): a new id is issued.
                tracing::debug!("no stored session for the cookie's id; starting a new session");
                Ok(Loaded::Fresh)
            }
            Err(error @ sesame_core::Error::Decode { .. }) => match self.config.on_corrupt_record {
                OnCorruptRecord::StartNew => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "a stored session could not be decoded; starting a new session \
                         (the record is left in the store)"
                    );
                    Ok(Loaded::Fresh)
                }
                OnCorruptRecord::Fail => Err(error),
            },
            Err(error) => match self.config.on_store_error {
                OnStoreError::FailClosed => Err(error),
                OnStoreError::ContinueWithoutSession => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "the session store failed; continuing without a session"
                    );
                    Ok(Loaded::Ephemeral)
                }
            },
        }
    }

    fn fresh_state(&self) -> State {
        State::new(None, self.fresh_record())
    }

    fn fresh_record(&self) -> Record {
        Record::new(
            self.cookie_options
                .new_cookie_state_with(sesame_core::now, self.https),
        )
    }
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding this lock; if one ever did, the state is still
        // consistent field by field, so serve it rather than propagate the panic.
        #[allow(clippy::expect_used)] // an invariant of this type, not an input
        let state = self
            .request
            .state
            .get()
            .expect("a Session exists only once its request's state is loaded");
        state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn store(&self) -> &crate::guard::GuardedStore {
        &self.request.config.store
    }

    pub(crate) fn config(&self) -> &Config {
        &self.request.config
    }

    pub(crate) fn with_record<T>(&self, read: impl FnOnce(&Record) -> T) -> T {
        read(&self.lock().record)
    }

    /// The id the session's record is stored under this request (before hashing), if stored.
    pub(crate) fn stored_session_id(&self) -> Option<SessionId> {
        let state = self.lock();
        state
            .is_persisted()
            .then(|| state.stored_id.clone())
            .flatten()
    }

    /// The session's id. It changes on [`regenerate`](Self::regenerate), and a new session has its
    /// id from the start, though its cookie is only sent once there is something to save.
    pub fn id(&self) -> SessionId {
        self.lock().id(&self.request.config)
    }

    /// Whether the session was created by this request (the client has no cookie for it yet).
    pub fn is_new(&self) -> bool {
        self.lock().is_new
    }

    /// The value under `key`, deserialized to `T`; `None` when absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.lock();
        match state.record.data().get(key) {
            None => Ok(None),
            Some(value) => {
                T::deserialize(value)
                    .map(Some)
                    .map_err(|source| SessionError::Deserialize {
                        key: key.to_owned(),
                        source,
                    })
            }
        }
    }

    /// The raw JSON value under `key`.
    pub fn get_value(&self, key: &str) -> Option<Value> {
        self.lock().record.data().get(key).cloned()
    }

    /// Stores `value` under `key`. Setting a key to the value it already has does not modify the
    /// session (express-session compares the data too).
    pub fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(|source| SessionError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        self.insert_value(key, value)
    }

    /// Stores a JSON value under `key`. The key `cookie` is reserved by express-session's format.
    pub fn insert_value(&self, key: &str, value: Value) -> Result<(), SessionError> {
        if key == COOKIE_KEY {
            return Err(SessionError::ReservedKey(key.to_owned()));
        }
        let mut state = self.lock();
        if state.record.data().get(key) != Some(&value) {
            state.data_mut().insert(key.to_owned(), value);
            state.mark_changed(key);
        }
        Ok(())
    }

    /// Removes `key`, returning its value deserialized to `T`.
    pub fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        match self.remove_value(key) {
            None => Ok(None),
            Some(value) => {
                T::deserialize(value)
                    .map(Some)
                    .map_err(|source| SessionError::Deserialize {
                        key: key.to_owned(),
                        source,
                    })
            }
        }
    }

    /// Removes `key`, returning its JSON value.
    pub fn remove_value(&self, key: &str) -> Option<Value> {
        let mut state = self.lock();
        let removed = state.data_mut().remove(key);
        if removed.is_some() {
            state.mark_changed(key);
        }
        removed
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.lock().record.data().contains_key(key)
    }

    /// The keys the application set (sesame's own bookkeeping under
    /// [`META_KEY`](sesame_core::META_KEY), such as the logged-in user, is not listed).
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .record
            .data()
            .keys()
            .filter(|key| *key != META_KEY)
            .cloned()
            .collect()
    }

    /// Whether the session holds no data of the application (sesame's bookkeeping under
    /// [`META_KEY`](sesame_core::META_KEY) does not count).
    pub fn is_empty(&self) -> bool {
        self.lock().record.data().keys().all(|key| key == META_KEY)
    }

    /// A copy of all the session's data, sesame's bookkeeping under
    /// [`META_KEY`](sesame_core::META_KEY) included.
    pub fn data(&self) -> Map<String, Value> {
        self.lock().record.data().clone()
    }

    /// Removes every key the application set. The session itself (its id, its cookie, and who is
    /// logged in to it) stays; see [`destroy`](Self::destroy) to end it.
    pub fn clear(&self) {
        let mut state = self.lock();
        let keys: Vec<String> = state
            .record
            .data()
            .keys()
            .filter(|key| *key != META_KEY)
            .cloned()
            .collect();
        for key in keys {
            state.data_mut().remove(&key);
            state.mark_changed(&key);
        }
    }

    /// Gives the session a new id and destroys the old record, starting over with no data
    /// (express's `req.session.regenerate()`). Call it at login, so an id planted before
    /// authentication is never the id of an authenticated session (session fixation).
    pub async fn regenerate(&self) -> Result<(), SessionError> {
        self.replace_id(false).await
    }

    /// Gives the session a new id and destroys the old record, keeping the data: the session
    /// continues under an id nobody could have known before.
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        self.replace_id(true).await
    }

    async fn replace_id(&self, keep_data: bool) -> Result<(), SessionError> {
        let stored_id = self.lock().stored_id.clone();
        if let Some(old) = &stored_id {
            self.store().destroy(old).await?;
        }
        let mut state = self.lock();
        let had_client_cookie = !state.is_new || state.stale_client_cookie;
        let client_sent_cookie = state.client_sent_cookie;
        if keep_data {
            let data = state.record.data().clone();
            let cookie = state.record.cookie().clone();
            *state = State::new(None, Record::from_parts(data, cookie));
            let keys: Vec<String> = state.record.data().keys().cloned().collect();
            for key in keys {
                state.mark_changed(&key);
            }
            // Even an empty session must reach the store under its new id.
            state.unsaved = true;
            state.modified = true;
        } else {
            *state = State::new(None, self.request.fresh_record());
        }
        state.stale_client_cookie = had_client_cookie;
        state.client_sent_cookie = client_sent_cookie;
        tracing::debug!(keep_data, "session id regenerated");
        Ok(())
    }

    /// Deletes the session from the store (express's `req.session.destroy()`). The response removes
    /// the cookie. Putting data in the session afterwards starts a new session with a new id.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let stored_id = self.lock().stored_id.clone();
        if let Some(id) = &stored_id {
            self.store().destroy(id).await?;
        }
        let mut state = self.lock();
        let had_client_cookie = !state.is_new || state.stale_client_cookie;
        let client_sent_cookie = state.client_sent_cookie;
        *state = State::new(None, self.request.fresh_record());
        state.destroyed = true;
        state.stale_client_cookie = had_client_cookie;
        state.client_sent_cookie = client_sent_cookie;
        tracing::debug!("session destroyed");
        Ok(())
    }

    /// Replaces the session's data with what the store holds now, discarding unsaved changes
    /// (express's `req.session.reload()`). Fails with [`SessionError::NotFound`] when the store has
    /// no record (never saved, destroyed, or expired).
    pub async fn reload(&self) -> Result<(), SessionError> {
        let stored_id = self.lock().stored_id.clone();
        let Some(id) = stored_id else {
            return Err(SessionError::NotFound);
        };
        let record = self
            .store()
            .load(&id)
            .await?
            .ok_or(SessionError::NotFound)?;
        let mut state = self.lock();
        if state.has_id(&id) {
            state.record = record;
            state.loaded = None;
            state.unsaved = false;
            state.cookie_changed = false;
            state.changed_keys.clear();
        }
        Ok(())
    }

    /// Writes the session to the store now (express's `req.session.save()`), for example before a
    /// long-running operation. Sessions are saved automatically at the end of the request; calling
    /// this is never required.
    pub async fn save(&self) -> Result<(), SessionError> {
        let (id, record, persisted, patch) = {
            let mut state = self.lock();
            state.prepare_write(&self.request.config, sesame_core::now());
            let patch = state.patch();
            let persisted = state.is_persisted();
            let id = state.id(&self.request.config);
            (id, state.record.clone(), persisted, patch)
        };
        self.request.config.check_size(&record)?;
        if !persisted {
            self.store().create(&id, &record).await?;
        } else if self.store().capabilities().patch {
            if !self.store().patch(&id, &patch).await? {
                return Err(SessionError::NotFound);
            }
        } else {
            self.store().save(&id, &record).await?;
        }
        self.lock().mark_saved_as(&id);
        Ok(())
    }

    /// Atomically changes the value under `key` in the store: `change` gets the current value and
    /// returns the new one, which is written only if nobody changed the key in between; otherwise
    /// `change` runs again on the newer value. Concurrent requests updating one key (a counter, a
    /// cart) therefore never lose an update. Returns the value written.
    ///
    /// The update is applied in the store at once (one round trip when uncontended), not at the end
    /// of the request. For a session not yet in the store, or a store without the compare-and-swap
    /// capability, it is an ordinary insert saved with the session.
    ///
    /// ```
    /// # use axum_sesame::{Session, SessionError};
    /// async fn add_to_cart(session: Session) -> Result<String, SessionError> {
    ///     let items: u32 = session.update("cart_items", |n: Option<u32>| n.unwrap_or(0) + 1).await?;
    ///     Ok(format!("{items} items"))
    /// }
    /// ```
    pub async fn update<T, F>(&self, key: &str, change: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> T,
    {
        if key == COOKIE_KEY {
            return Err(SessionError::ReservedKey(key.to_owned()));
        }
        let compare_and_swap = self.store().capabilities().compare_and_swap;
        for _ in 0..UPDATE_ATTEMPTS {
            let (id, persisted, current) = {
                let mut state = self.lock();
                let current = state.record.data().get(key).cloned();
                let persisted = state.is_persisted();
                (state.id(&self.request.config), persisted, current)
            };
            let current_typed = match &current {
                None => None,
                Some(value) => {
                    Some(
                        T::deserialize(value).map_err(|source| SessionError::Deserialize {
                            key: key.to_owned(),
                            source,
                        })?,
                    )
                }
            };
            let next = change(current_typed);
            let next_value =
                serde_json::to_value(&next).map_err(|source| SessionError::Serialize {
                    key: key.to_owned(),
                    source,
                })?;
            if !persisted || !compare_and_swap {
                self.insert_value(key, next_value)?;
                return Ok(next);
            }
            let outcome = self
                .store()
                .compare_and_swap(&id, key, current.as_ref(), Some(&next_value))
                .await?;
            let mut state = self.lock();
            if !state.has_id(&id) {
                // The session was regenerated meanwhile; start over on the new one.
                continue;
            }
            // The store now holds the authoritative value: no need to write it again at the end.
            state.changed_keys.retain(|k| k != key);
            match outcome {
                Swap::Done => {
                    state.data_mut().insert(key.to_owned(), next_value);
                    return Ok(next);
                }
                Swap::Changed(Some(newer)) => {
                    state.data_mut().insert(key.to_owned(), newer);
                }
                Swap::Changed(None) => {
                    state.data_mut().remove(key);
                }
                Swap::Missing => return Err(SessionError::NotFound),
            }
        }
        Err(SessionError::Contended(key.to_owned()))
    }

    /// Restarts the cookie's max age from now (express's `req.session.touch()`). sesame does this on
    /// every request that uses the session, so handlers rarely need it.
    pub fn touch(&self) {
        let mut state = self.lock();
        state.record.cookie_mut().reset_expiry(sesame_core::now());
    }

    /// Detaches the session from this request (express's `delete req.session`): nothing is saved
    /// and no cookie is sent; the stored record is kept or destroyed according to the layer's
    /// [`unset`](crate::SessionLayerBuilder::unset) option.
    pub fn detach(&self) {
        self.lock().detached = true;
    }

    /// Time left before the session expires (express's `cookie.maxAge`); `None` for a
    /// browser-session cookie.
    pub fn max_age(&self) -> Option<Duration> {
        self.lock().record.cookie().max_age(sesame_core::now())
    }

    /// The max age the cookie was given (express's `cookie.originalMaxAge`).
    pub fn original_max_age(&self) -> Option<Duration> {
        self.lock().record.cookie().original_max_age()
    }

    /// When the session expires (express's `cookie.expires`); `None` for a browser-session cookie.
    pub fn expires(&self) -> Option<OffsetDateTime> {
        self.lock().record.cookie().expires
    }

    /// Gives this session its own max age from now, e.g. "remember me" at login; `None` makes it a
    /// browser-session cookie. The new expiry is stored and sent in the cookie.
    pub fn set_max_age(&self, max_age: Option<Duration>) {
        let mut state = self.lock();
        state
            .record
            .cookie_mut()
            .set_max_age(sesame_core::now(), max_age);
        state.cookie_changed = true;
        state.unsaved = true;
    }

    /// Gives this session a fixed expiry time; `None` makes it a browser-session cookie.
    pub fn set_expires(&self, expires: Option<OffsetDateTime>) {
        let mut state = self.lock();
        state
            .record
            .cookie_mut()
            .set_expires(sesame_core::now(), expires);
        state.cookie_changed = true;
        state.unsaved = true;
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Session")
            .field("id", &state.id.as_ref())
            .field("is_new", &state.is_new)
            .field("modified", &state.modified)
            .field("keys", &state.record.data().len())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let SessionHandle(request) = parts
            .extensions
            .get::<SessionHandle>()
            .cloned()
            .ok_or(SessionRejection::MissingLayer)?;
        request
            .load_once(&parts.headers)
            .await
            .map_err(SessionRejection::Load)?;
        Ok(Self { request })
    }
}

impl RequestSession {
    /// The session state if a handler used the session during this request.
    pub(crate) fn used_state(&self) -> Option<&Mutex<State>> {
        self.state.get()
    }
}

/// Locks a request's session state from the layer's side.
pub(crate) fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
