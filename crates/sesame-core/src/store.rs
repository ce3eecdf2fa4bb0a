//! The store contract.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::{Error, Patch, Record, Result, SessionId, Swap};

/// What a store offers beyond the required operations.
///
/// New capabilities are added as new flags, so a store written today keeps compiling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `ids`, `all`, `len` and `clear` are implemented.
    pub listing: bool,
    /// `patch` is implemented: per-key changes applied atomically, so concurrent requests on one
    /// session do not overwrite each other, and a destroyed session is never brought back.
    pub patch: bool,
    /// `compare_and_swap` is implemented: atomic read-modify-write of one key.
    pub compare_and_swap: bool,
    /// `user_sessions` is implemented: the store indexes sessions by the user logged in to them,
    /// so an application can list a user's sessions and log them out everywhere.
    pub user_index: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const NONE: Self = Self {
        listing: false,
        patch: false,
        compare_and_swap: false,
        user_index: false,
    };

    /// Adds the patch capability.
    #[must_use]
    pub const fn with_patch(mut self) -> Self {
        self.patch = true;
        self
    }

    /// Adds the compare-and-swap capability.
    #[must_use]
    pub const fn with_compare_and_swap(mut self) -> Self {
        self.compare_and_swap = true;
        self
    }

    /// Adds the user index capability.
    #[must_use]
    pub const fn with_user_index(mut self) -> Self {
        self.user_index = true;
        self
    }

    /// Adds the listing capability.
    #[must_use]
    pub const fn with_listing(mut self) -> Self {
        self.listing = true;
        self
    }
}

/// Where sessions live: a memory map, Redis, MongoDB, PostgreSQL, or your own.
///
/// Every store must:
/// - never return a record past its expiry, even when the backend has not evicted it yet;
/// - enforce expiry on its side (a TTL, an index, a sweep), using the record's cookie `expires` or,
///   for a browser-session cookie, its default time to live;
/// - keep the source of backend errors (see [`Error`]).
///
/// The `sesame-conformance` crate checks all of this against a real backend.
///
/// Methods return `impl Future + Send` so that stores can be used from multi-threaded servers;
/// write them as `async fn` in the `impl`.
// `len` is an optional, fallible, async capability; an `is_empty` twin would add nothing.
#[allow(clippy::len_without_is_empty)]
pub trait SessionStore: Send + Sync + 'static {
    /// The record stored under `id`, or `None` when there is none or it has expired.
    fn load(&self, id: &SessionId) -> impl Future<Output = Result<Option<Record>>> + Send;

    /// Stores `record` under `id`, replacing any record there (an upsert), with the record's expiry.
    /// A record whose expiry has already passed is deleted rather than written.
    fn save(&self, id: &SessionId, record: &Record) -> impl Future<Output = Result<()>> + Send;

    /// Stores `record` under a new `id`, failing with [`Error::AlreadyExists`] when a live record
    /// is there already, so that an id collision is detected and never overwrites a session.
    fn create(&self, id: &SessionId, record: &Record) -> impl Future<Output = Result<()>> + Send;

    /// Deletes the record under `id`. Deleting a missing record is not an error.
    fn destroy(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send;

    /// Moves the expiry of the record under `id` to `record`'s, without rewriting its data. A
    /// missing record stays missing.
    fn touch(&self, id: &SessionId, record: &Record) -> impl Future<Output = Result<()>> + Send;

    /// A short name for logs and errors (`"memory"`, `"redis"`, ...).
    fn name(&self) -> &'static str;

    /// The optional capabilities this store implements.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    /// The ids of all live sessions (optional: [`Capabilities::listing`]).
    fn ids(&self) -> impl Future<Output = Result<Vec<SessionId>>> + Send {
        let store = self.name();
        async move { Err(not_supported(store, "ids")) }
    }

    /// All live sessions (optional: [`Capabilities::listing`]).
    fn all(&self) -> impl Future<Output = Result<Vec<(SessionId, Record)>>> + Send {
        let store = self.name();
        async move { Err(not_supported(store, "all")) }
    }

    /// How many live sessions there are (optional: [`Capabilities::listing`]).
    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        let store = self.name();
        async move { Err(not_supported(store, "len")) }
    }

    /// Deletes every session of this store, and nothing else (optional: [`Capabilities::listing`]).
    fn clear(&self) -> impl Future<Output = Result<()>> + Send {
        let store = self.name();
        async move { Err(not_supported(store, "clear")) }
    }

    /// Applies `patch` to the record under `id` as it is stored *now*, atomically: keys another
    /// writer changed meanwhile are kept, and the record's expiry becomes the patch's. Returns
    /// `false`, writing nothing, when there is no live record (destroyed or expired): a patch never
    /// brings a session back. (Optional: [`Capabilities::patch`].)
    fn patch(&self, id: &SessionId, patch: &Patch) -> impl Future<Output = Result<bool>> + Send {
        let _ = (id, patch);
        let store = self.name();
        async move { Err(not_supported(store, "patch")) }
    }

    /// Atomically sets `key` of the record under `id` to `new` (`None` removes it) if its current
    /// value equals `expected` (`None`: absent), comparing as JSON values (object key order does
    /// not matter). The record's expiry is left as it is. (Optional:
    /// [`Capabilities::compare_and_swap`].)
    fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> impl Future<Output = Result<Swap>> + Send {
        let _ = (id, key, expected, new);
        let store = self.name();
        async move { Err(not_supported(store, "compare_and_swap")) }
    }

    /// Every live session whose user ([`Record::user`], the `user` of the
    /// [`META_KEY`](crate::META_KEY) object) is `user`, with its record. (Optional:
    /// [`Capabilities::user_index`].)
    ///
    /// The store keeps an index from user to sessions, updated by every write that carries the
    /// meta object (`create`, `save`, `patch`) and by `destroy` and expiry. The record given to
    /// `touch` holds the meta object of a logged-in session too, so a store whose index entries
    /// expire can keep them alive as long as the session; a touch must not change whose session
    /// it is (its copy of the meta object may be older than the stored one). An index may lag (a destroyed or expired session, or one whose user
    /// changed, may linger in it for a while), but what this returns never does: every session
    /// returned is live and belongs to `user` now.
    fn user_sessions(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<(SessionId, Record)>>> + Send {
        let _ = user;
        let store = self.name();
        async move { Err(not_supported(store, "user_sessions")) }
    }
}

fn not_supported(store: &'static str, operation: &'static str) -> Error {
    Error::NotSupported { store, operation }
}

impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    fn load(&self, id: &SessionId) -> impl Future<Output = Result<Option<Record>>> + Send {
        (**self).load(id)
    }
    fn save(&self, id: &SessionId, record: &Record) -> impl Future<Output = Result<()>> + Send {
        (**self).save(id, record)
    }
    fn create(&self, id: &SessionId, record: &Record) -> impl Future<Output = Result<()>> + Send {
        (**self).create(id, record)
    }
    fn destroy(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        (**self).destroy(id)
    }
    fn touch(&self, id: &SessionId, record: &Record) -> impl Future<Output = Result<()>> + Send {
        (**self).touch(id, record)
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn ids(&self) -> impl Future<Output = Result<Vec<SessionId>>> + Send {
        (**self).ids()
    }
    fn all(&self) -> impl Future<Output = Result<Vec<(SessionId, Record)>>> + Send {
        (**self).all()
    }
    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        (**self).len()
    }
    fn clear(&self) -> impl Future<Output = Result<()>> + Send {
        (**self).clear()
    }
    fn patch(&self, id: &SessionId, patch: &Patch) -> impl Future<Output = Result<bool>> + Send {
        (**self).patch(id, patch)
    }
    fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> impl Future<Output = Result<Swap>> + Send {
        (**self).compare_and_swap(id, key, expected, new)
    }
    fn user_sessions(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<(SessionId, Record)>>> + Send {
        (**self).user_sessions(user)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`SessionStore`], implemented for every store; [`DynStore`] wraps it.
trait ErasedStore: Send + Sync + 'static {
    fn as_any(&self) -> &dyn std::any::Any;
    fn load<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Option<Record>>>;
    fn save<'a>(&'a self, id: &'a SessionId, record: &'a Record) -> BoxFuture<'a, Result<()>>;
    fn create<'a>(&'a self, id: &'a SessionId, record: &'a Record) -> BoxFuture<'a, Result<()>>;
    fn destroy<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<()>>;
    fn touch<'a>(&'a self, id: &'a SessionId, record: &'a Record) -> BoxFuture<'a, Result<()>>;
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    fn ids(&self) -> BoxFuture<'_, Result<Vec<SessionId>>>;
    fn all(&self) -> BoxFuture<'_, Result<Vec<(SessionId, Record)>>>;
    fn len(&self) -> BoxFuture<'_, Result<usize>>;
    fn clear(&self) -> BoxFuture<'_, Result<()>>;
    fn patch<'a>(&'a self, id: &'a SessionId, patch: &'a Patch) -> BoxFuture<'a, Result<bool>>;
    fn compare_and_swap<'a>(
        &'a self,
        id: &'a SessionId,
        key: &'a str,
        expected: Option<&'a Value>,
        new: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<Swap>>;
    fn user_sessions<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(SessionId, Record)>>>;
}

impl<S: SessionStore> ErasedStore for S {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn load<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Option<Record>>> {
        Box::pin(SessionStore::load(self, id))
    }
    fn save<'a>(&'a self, id: &'a SessionId, record: &'a Record) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::save(self, id, record))
    }
    fn create<'a>(&'a self, id: &'a SessionId, record: &'a Record) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::create(self, id, record))
    }
    fn destroy<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::destroy(self, id))
    }
    fn touch<'a>(&'a self, id: &'a SessionId, record: &'a Record) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::touch(self, id, record))
    }
    fn name(&self) -> &'static str {
        SessionStore::name(self)
    }
    fn capabilities(&self) -> Capabilities {
        SessionStore::capabilities(self)
    }
    fn ids(&self) -> BoxFuture<'_, Result<Vec<SessionId>>> {
        Box::pin(SessionStore::ids(self))
    }
    fn all(&self) -> BoxFuture<'_, Result<Vec<(SessionId, Record)>>> {
        Box::pin(SessionStore::all(self))
    }
    fn len(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(SessionStore::len(self))
    }
    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(SessionStore::clear(self))
    }
    fn patch<'a>(&'a self, id: &'a SessionId, patch: &'a Patch) -> BoxFuture<'a, Result<bool>> {
        Box::pin(SessionStore::patch(self, id, patch))
    }
    fn compare_and_swap<'a>(
        &'a self,
        id: &'a SessionId,
        key: &'a str,
        expected: Option<&'a Value>,
        new: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<Swap>> {
        Box::pin(SessionStore::compare_and_swap(self, id, key, expected, new))
    }
    fn user_sessions<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(SessionId, Record)>>> {
        Box::pin(SessionStore::user_sessions(self, user))
    }
}

/// A store chosen at run time: any [`SessionStore`] behind one type, so the same binary can run on
/// memory, Redis, MongoDB or PostgreSQL by configuration.
///
/// ```
/// # use sesame_core::{DynStore, SessionStore};
/// fn pick(store: impl SessionStore) -> DynStore {
///     DynStore::new(store)
/// }
/// ```
///
/// Each call costs one boxed future over using the store's type directly.
#[derive(Clone)]
pub struct DynStore(Arc<dyn ErasedStore>);

impl DynStore {
    /// Wraps a store. Wrapping a `DynStore` again returns it as it is.
    pub fn new(store: impl SessionStore) -> Self {
        if let Some(already) = (&store as &dyn std::any::Any).downcast_ref::<Self>() {
            return already.clone();
        }
        Self(Arc::new(store))
    }

    /// The store inside, if it is an `S`: lets a layer call a store it knows (the memory store)
    /// directly, without a boxed future per call.
    pub fn downcast_ref<S: SessionStore>(&self) -> Option<&S> {
        self.0.as_any().downcast_ref()
    }
}

impl std::fmt::Debug for DynStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DynStore").field(&self.0.name()).finish()
    }
}

impl SessionStore for DynStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        self.0.load(id).await
    }
    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.0.save(id, record).await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.0.create(id, record).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.0.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.0.touch(id, record).await
    }
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn ids(&self) -> impl Future<Output = Result<Vec<SessionId>>> + Send {
        self.0.ids()
    }
    fn all(&self) -> impl Future<Output = Result<Vec<(SessionId, Record)>>> + Send {
        self.0.all()
    }
    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        self.0.len()
    }
    fn clear(&self) -> impl Future<Output = Result<()>> + Send {
        self.0.clear()
    }
    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        self.0.patch(id, patch).await
    }
    async fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<Swap> {
        self.0.compare_and_swap(id, key, expected, new).await
    }
    async fn user_sessions(&self, user: &str) -> Result<Vec<(SessionId, Record)>> {
        self.0.user_sessions(user).await
    }
}
