//! The store as the layer uses it: every call bounded by a timeout, reported to the observer if
//! there is one, and ids optionally hashed before they reach the store.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde_json::Value;
use sesame_core::time::OffsetDateTime;
use sesame_core::{
    Capabilities, DynStore, Error, IdHasher, Patch, Record, Result, SessionId, SessionStore,
    StoreEvent, StoreObserver, StoreOperation as Op, Swap,
};

/// Wraps the configured store.
pub(crate) struct GuardedStore {
    pub(crate) inner: DynStore,
    /// The same store when it is the memory store, called directly: a `DynStore` boxes every
    /// call's future, which is most of what a memory store call costs.
    #[cfg(feature = "memory")]
    pub(crate) memory: Option<sesame_memory::MemoryStore>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) id_hasher: Option<IdHasher>,
    pub(crate) observer: Option<Arc<dyn StoreObserver>>,
}

impl GuardedStore {
    /// Whether every call completes on its first poll: the memory store, called directly, never
    /// waits (its calls take a lock and return).
    pub(crate) fn answers_at_once(&self) -> bool {
        #[cfg(feature = "memory")]
        return self.memory.is_some();
        #[cfg(not(feature = "memory"))]
        false
    }

    /// The id the store keeps `id`'s record under: `id` itself, or its keyed hash.
    pub(crate) fn at_rest<'a>(&self, id: &'a SessionId) -> Cow<'a, SessionId> {
        match &self.id_hasher {
            Some(hasher) => Cow::Owned(hasher.hash(id)),
            None => Cow::Borrowed(id),
        }
    }

    /// Runs a store call within the timeout and reports it to the observer.
    async fn bounded<T>(&self, operation: Op, call: impl Future<Output = Result<T>>) -> Result<T> {
        let Some(observer) = &self.observer else {
            return self.within_timeout(call).await;
        };
        let started = Instant::now();
        let result = self.within_timeout(call).await;
        observer.observe(&StoreEvent::new(
            self.inner.name(),
            operation,
            started.elapsed(),
            result.is_err(),
        ));
        result
    }

    /// Runs a store call within the timeout, so a store that hangs becomes an error instead of a
    /// request that never ends.
    async fn within_timeout<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let mut call = pin!(call);
        // An in-process store (memory) answers on the first poll: it never pays for a timer.
        if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
            return result;
        }
        match self.timeout {
            None => call.await,
            // Boxed: only a store that made the request wait gets here, and the timer it needs
            // would otherwise enlarge every request's future, the memory store's included.
            Some(timeout) => match Box::pin(tokio::time::timeout(timeout, call)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    store: self.inner.name(),
                    timeout,
                }),
            },
        }
    }
}

/// The end-of-request and load calls with the time the layer read for the request: the memory
/// store, unobserved, is called synchronously at that time (no clock read, no future of its own);
/// any other store is called as usual, through a boxed future, so that a request's future is not
/// sized for a network call it never makes (one allocation is nothing next to a round trip).
impl GuardedStore {
    /// The memory store, when it is the store and no observer times its calls.
    #[cfg(feature = "memory")]
    fn direct_memory(&self) -> Option<&sesame_memory::MemoryStore> {
        self.memory.as_ref().filter(|_| self.observer.is_none())
    }

    pub(crate) async fn load_at(
        &self,
        id: &SessionId,
        now: OffsetDateTime,
    ) -> Result<Option<Record>> {
        #[cfg(feature = "memory")]
        if let Some(memory) = self.direct_memory() {
            return Ok(memory.load_at(&self.at_rest(id), now));
        }
        let _ = now;
        Box::pin(self.load(id)).await
    }

    pub(crate) async fn create_at(
        &self,
        id: &SessionId,
        record: &Record,
        now: OffsetDateTime,
    ) -> Result<()> {
        #[cfg(feature = "memory")]
        if let Some(memory) = self.direct_memory() {
            return memory.create_at(&self.at_rest(id), record, now);
        }
        let _ = now;
        Box::pin(self.create(id, record)).await
    }

    pub(crate) async fn patch_at(
        &self,
        id: &SessionId,
        patch: &Patch,
        now: OffsetDateTime,
    ) -> Result<bool> {
        #[cfg(feature = "memory")]
        if let Some(memory) = self.direct_memory() {
            return Ok(memory.patch_at(&self.at_rest(id), patch, now));
        }
        let _ = now;
        Box::pin(self.patch(id, patch)).await
    }

    /// Creates `id` at `now` when the store is the memory store, called directly (it answers at
    /// once); `None` for any other store, to be awaited.
    pub(crate) fn create_in_place(
        &self,
        id: &SessionId,
        record: &Record,
        now: OffsetDateTime,
    ) -> Option<Result<()>> {
        #[cfg(feature = "memory")]
        if let Some(memory) = self.direct_memory() {
            return Some(memory.create_at(&self.at_rest(id), record, now));
        }
        let _ = (id, record, now);
        None
    }

    /// Writes `record` whole in place of `id`'s when the store is the memory store, called
    /// directly, and still holds the data `loaded` was read with: the outcome of a patch without
    /// building one. `None` when that does not apply (another store, or a concurrent write got
    /// there first): patch instead.
    pub(crate) fn replace_in_place(
        &self,
        id: &SessionId,
        loaded: &sesame_core::DataVersion,
        record: &Record,
        now: OffsetDateTime,
    ) -> Option<bool> {
        #[cfg(feature = "memory")]
        if let Some(memory) = self.direct_memory() {
            return memory.replace_if_unchanged_at(&self.at_rest(id), loaded, record, now);
        }
        let _ = (id, loaded, record, now);
        None
    }

    /// Touches `id` at `now` with its cookie state alone when the store is the memory store,
    /// called directly: all its touch reads. `false` for any other store, to be touched with a
    /// record.
    pub(crate) fn touch_in_place(
        &self,
        id: &SessionId,
        cookie: &sesame_core::CookieState,
        now: OffsetDateTime,
    ) -> bool {
        #[cfg(feature = "memory")]
        if let Some(memory) = self.direct_memory() {
            memory.touch_cookie_at(&self.at_rest(id), cookie, now);
            return true;
        }
        let _ = (id, cookie, now);
        false
    }
}

impl GuardedStore {
    /// Destroys the record kept under `stored_id`, an id as the store holds it (from
    /// [`user_sessions`](SessionStore::user_sessions)), without hashing it again.
    pub(crate) async fn destroy_at_rest(&self, stored_id: &SessionId) -> Result<()> {
        self.bounded(Op::Destroy, self.inner.destroy(stored_id))
            .await
    }
}

/// Calls `method` on the memory store directly when that is the store, else through the
/// `DynStore`; bounded and observed either way.
macro_rules! call {
    ($self:ident, $op:expr, $method:ident($($arg:expr),*)) => {{
        #[cfg(feature = "memory")]
        if let Some(memory) = &$self.memory {
            return $self.bounded($op, memory.$method($($arg),*)).await;
        }
        $self.bounded($op, $self.inner.$method($($arg),*)).await
    }};
}

impl SessionStore for GuardedStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        let id = self.at_rest(id);
        call!(self, Op::Load, load(&id))
    }
    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        let id = self.at_rest(id);
        call!(self, Op::Save, save(&id, record))
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        let id = self.at_rest(id);
        call!(self, Op::Create, create(&id, record))
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let id = self.at_rest(id);
        call!(self, Op::Destroy, destroy(&id))
    }
    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        let id = self.at_rest(id);
        call!(self, Op::Touch, touch(&id, record))
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn ids(&self) -> Result<Vec<SessionId>> {
        self.bounded(Op::Listing, self.inner.ids()).await
    }
    async fn all(&self) -> Result<Vec<(SessionId, Record)>> {
        self.bounded(Op::Listing, self.inner.all()).await
    }
    async fn len(&self) -> Result<usize> {
        self.bounded(Op::Listing, self.inner.len()).await
    }
    async fn clear(&self) -> Result<()> {
        self.bounded(Op::Listing, self.inner.clear()).await
    }
    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        let id = self.at_rest(id);
        call!(self, Op::Patch, patch(&id, patch))
    }
    async fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<Swap> {
        let id = self.at_rest(id);
        call!(
            self,
            Op::CompareAndSwap,
            compare_and_swap(&id, key, expected, new)
        )
    }
    /// The user's sessions under the ids the store keeps them by (hashed, with hashed ids).
    async fn user_sessions(&self, user: &str) -> Result<Vec<(SessionId, Record)>> {
        self.bounded(Op::UserSessions, self.inner.user_sessions(user))
            .await
    }
}
