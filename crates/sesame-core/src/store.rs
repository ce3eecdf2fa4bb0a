//! The store contract.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Error, Record, Result, SessionId};

/// What a store offers beyond the required operations.
///
/// New capabilities are added as new flags, so a store written today keeps compiling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `ids`, `all`, `len` and `clear` are implemented.
    pub listing: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const NONE: Self = Self { listing: false };

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
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`SessionStore`], implemented for every store; [`DynStore`] wraps it.
trait ErasedStore: Send + Sync + 'static {
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
}

impl<S: SessionStore> ErasedStore for S {
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
    /// Wraps a store.
    pub fn new(store: impl SessionStore) -> Self {
        Self(Arc::new(store))
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
}
