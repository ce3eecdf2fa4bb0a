//! The store as the layer uses it: every call bounded by a timeout, and ids optionally hashed
//! before they reach the store.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use serde_json::Value;
use sesame_core::{
    Capabilities, DynStore, Error, IdHasher, Patch, Record, Result, SessionId, SessionStore, Swap,
};

/// Wraps the configured store.
pub(crate) struct GuardedStore {
    pub(crate) inner: DynStore,
    pub(crate) timeout: Option<Duration>,
    pub(crate) id_hasher: Option<IdHasher>,
}

impl GuardedStore {
    fn at_rest<'a>(&self, id: &'a SessionId) -> Cow<'a, SessionId> {
        match &self.id_hasher {
            Some(hasher) => Cow::Owned(hasher.hash(id)),
            None => Cow::Borrowed(id),
        }
    }

    /// Runs a store call within the timeout, so a store that hangs becomes an error instead of a
    /// request that never ends.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let mut call = pin!(call);
        // An in-process store (memory) answers on the first poll: it never pays for a timer.
        if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
            return result;
        }
        match self.timeout {
            None => call.await,
            Some(timeout) => match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    store: self.inner.name(),
                    timeout,
                }),
            },
        }
    }
}

impl SessionStore for GuardedStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        self.bounded(self.inner.load(&self.at_rest(id))).await
    }
    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.bounded(self.inner.save(&self.at_rest(id), record))
            .await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.bounded(self.inner.create(&self.at_rest(id), record))
            .await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.bounded(self.inner.destroy(&self.at_rest(id))).await
    }
    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.bounded(self.inner.touch(&self.at_rest(id), record))
            .await
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn ids(&self) -> Result<Vec<SessionId>> {
        self.bounded(self.inner.ids()).await
    }
    async fn all(&self) -> Result<Vec<(SessionId, Record)>> {
        self.bounded(self.inner.all()).await
    }
    async fn len(&self) -> Result<usize> {
        self.bounded(self.inner.len()).await
    }
    async fn clear(&self) -> Result<()> {
        self.bounded(self.inner.clear()).await
    }
    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        self.bounded(self.inner.patch(&self.at_rest(id), patch))
            .await
    }
    async fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<Swap> {
        let id = self.at_rest(id);
        self.bounded(self.inner.compare_and_swap(&id, key, expected, new))
            .await
    }
}
