//! [`CachingStore`]: a bounded in-process cache in front of any store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sesame_core::serde_json::Value;
use sesame_core::{Capabilities, Patch, Record, Result, SessionId, SessionStore, Swap};

/// How long a cached record may be served without asking the store again, by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);

/// How many records the cache holds at most, by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

const SHARDS: usize = 16;

/// A memory cache in front of another store (Redis, PostgreSQL, MongoDB, or your own): a load
/// that hits the cache costs no round trip.
///
/// - **Write-through**: every write goes to the store first and reaches the cache only once the
///   store took it, so the store always holds the truth.
/// - **Bounded staleness**: a cached record is served for at most the cache TTL (five seconds by
///   default) after it was read from or written to the store; then the store is asked again.
/// - **Bounded size**: at most the capacity (100 000 records by default); a full cache evicts.
/// - **Invalidation**: destroy, patch and compare-and-swap drop the cached record, and a load that
///   raced with a write in this process never caches what it read.
///
/// **When it is unsafe**: the cache is per process. With several app instances writing the same
/// session, one instance may serve a record another instance has since changed or destroyed, for
/// up to the cache TTL: a logout on one instance is not seen by the others until then, and a
/// whole-record save built on a stale read can undo another instance's change. Use it with one
/// instance, with sticky sessions (each session always served by the same instance), or where a
/// few seconds of staleness are acceptable; keep the TTL short.
///
/// ```
/// use sesame_memory::{CachingStore, MemoryStore};
/// use std::time::Duration;
///
/// # let backing_store = MemoryStore::new(); // a RedisStore, say
/// let store = CachingStore::builder()
///     .ttl(Duration::from_secs(2))
///     .capacity(10_000)
///     .build(backing_store);
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct CachingStore<S> {
    inner: S,
    cache: Arc<Cache>,
}

struct Cache {
    shards: Box<[Mutex<Shard>]>,
    ttl: Duration,
    per_shard: usize,
    hasher: crate::FastHasher,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<SessionId, Cached, crate::FastHasher>,
    /// Bumped by every write to this shard: a load that started before a write must not cache
    /// what it read, which may predate the write.
    generation: u64,
}

struct Cached {
    record: Record,
    fresh_until: Instant,
}

impl<S: SessionStore> CachingStore<S> {
    /// A cache with the default TTL and capacity in front of `inner`.
    pub fn new(inner: S) -> Self {
        CachingStore::builder().build(inner)
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The number of records cached now (some may be stale and waiting to be replaced).
    pub fn cached(&self) -> usize {
        self.cache
            .shards
            .iter()
            .map(|s| lock(s).entries.len())
            .sum()
    }
}

impl CachingStore<()> {
    /// Configures the TTL and capacity; the store behind the cache is given to
    /// [`CachingStoreBuilder::build`].
    pub fn builder() -> CachingStoreBuilder {
        CachingStoreBuilder {
            ttl: DEFAULT_CACHE_TTL,
            capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

impl<S> std::fmt::Debug for CachingStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingStore")
            .field("ttl", &self.cache.ttl)
            .field("capacity", &(self.cache.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

/// Builds a [`CachingStore`].
#[derive(Debug, Clone)]
pub struct CachingStoreBuilder {
    ttl: Duration,
    capacity: usize,
}

impl CachingStoreBuilder {
    /// How long a cached record is served without asking the store (default five seconds): the
    /// bound on staleness when several instances share the store.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many records the cache holds at most (default 100 000).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The caching store in front of `inner`.
    pub fn build<S: SessionStore>(self, inner: S) -> CachingStore<S> {
        CachingStore {
            inner,
            cache: Arc::new(Cache {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                ttl: self.ttl,
                per_shard: self.capacity.div_ceil(SHARDS),
                hasher: crate::FastHasher::default(),
            }),
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every mutation of a shard is a single map operation: a panic elsewhere cannot leave it
    // half-changed, so a poisoned lock is still safe to use.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cache {
    fn shard(&self, id: &SessionId) -> &Mutex<Shard> {
        &self.shards[crate::shard_index(std::hash::BuildHasher::hash_one(&self.hasher, id), SHARDS)]
    }

    /// A fresh, unexpired cached record.
    fn get(&self, id: &SessionId) -> Option<Record> {
        let mut shard = lock(self.shard(id));
        let cached = shard.entries.get(id)?;
        if cached.fresh_until > Instant::now() && !cached.record.is_expired(sesame_core::now()) {
            return Some(cached.record.clone());
        }
        shard.entries.remove(id);
        None
    }

    fn generation(&self, id: &SessionId) -> u64 {
        lock(self.shard(id)).generation
    }

    /// Caches what a load read, unless a write to the shard happened since `generation`.
    fn fill(&self, id: &SessionId, record: &Record, generation: u64) {
        let mut shard = lock(self.shard(id));
        if shard.generation == generation {
            self.insert(&mut shard, id, record);
        }
    }

    /// Caches what was just written to the store.
    fn put(&self, id: &SessionId, record: &Record) {
        let mut shard = lock(self.shard(id));
        shard.generation += 1;
        self.insert(&mut shard, id, record);
    }

    fn insert(&self, shard: &mut Shard, id: &SessionId, record: &Record) {
        if record.is_expired(sesame_core::now()) {
            shard.entries.remove(id);
            return;
        }
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(id) {
            // Evict the first entry the map yields: an arbitrary one, which is enough to bound the
            // size; every entry goes stale within the TTL anyway.
            let victim = shard.entries.keys().next().cloned();
            if let Some(victim) = victim {
                shard.entries.remove(&victim);
            }
        }
        if self.per_shard > 0 {
            let fresh_until = Instant::now() + self.ttl;
            let cached = Cached {
                record: record.clone(),
                fresh_until,
            };
            shard.entries.insert(id.clone(), cached);
        }
    }

    /// Moves a cached record's expiry to `cookie`'s, as the store's touch did.
    fn touch(&self, id: &SessionId, cookie: &sesame_core::CookieState) {
        let mut shard = lock(self.shard(id));
        if let Some(cached) = shard.entries.get_mut(id) {
            let stored = cached.record.cookie_mut();
            stored.expires = cookie.expires;
            stored.original_max_age = cookie.original_max_age;
            stored.deadline = cookie.deadline;
        }
    }

    fn invalidate(&self, id: &SessionId) {
        let mut shard = lock(self.shard(id));
        shard.generation += 1;
        shard.entries.remove(id);
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.generation += 1;
            shard.entries.clear();
        }
    }
}

impl<S: SessionStore> SessionStore for CachingStore<S> {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        if let Some(record) = self.cache.get(id) {
            return Ok(Some(record));
        }
        let generation = self.cache.generation(id);
        let loaded = self.inner.load(id).await?;
        if let Some(record) = &loaded {
            self.cache.fill(id, record, generation);
        }
        Ok(loaded)
    }

    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        // Invalidate first: if the store write fails half-way, no stale copy outlives it.
        self.cache.invalidate(id);
        self.inner.save(id, record).await?;
        self.cache.put(id, record);
        Ok(())
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.inner.create(id, record).await?;
        self.cache.put(id, record);
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.cache.invalidate(id);
        let result = self.inner.destroy(id).await;
        // Again: a load that raced with the destroy may have cached the record meanwhile.
        self.cache.invalidate(id);
        result
    }

    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        // A touch moves the expiry only: once the store took it, the cached copy gets the new
        // expiry too and keeps serving (dropping it would make every read of an unmodified
        // session a miss). Its freshness deadline is not extended.
        match self.inner.touch(id, record).await {
            Ok(()) => {
                self.cache.touch(id, record.cookie());
                Ok(())
            }
            Err(error) => {
                self.cache.invalidate(id);
                Err(error)
            }
        }
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn ids(&self) -> Result<Vec<SessionId>> {
        self.inner.ids().await
    }

    async fn all(&self) -> Result<Vec<(SessionId, Record)>> {
        self.inner.all().await
    }

    async fn len(&self) -> Result<usize> {
        self.inner.len().await
    }

    async fn clear(&self) -> Result<()> {
        self.cache.clear();
        let result = self.inner.clear().await;
        self.cache.clear();
        result
    }

    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        // The store applies the patch to its current record, which the cache may not hold:
        // drop the cached copy and let the next load read the result.
        self.cache.invalidate(id);
        let result = self.inner.patch(id, patch).await;
        self.cache.invalidate(id);
        result
    }

    async fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<Swap> {
        self.cache.invalidate(id);
        let result = self.inner.compare_and_swap(id, key, expected, new).await;
        self.cache.invalidate(id);
        result
    }

    /// Always asks the inner store: its index is the authority on who is logged in where.
    async fn user_sessions(&self, user: &str) -> Result<Vec<(SessionId, Record)>> {
        self.inner.user_sessions(user).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use sesame_core::CookieState;
    use sesame_core::serde_json::json;

    fn record(views: u64) -> Record {
        let mut record = Record::new(CookieState::default());
        record.data_mut().insert("views".into(), json!(views));
        record
    }

    #[tokio::test]
    async fn a_hit_does_not_reach_the_store_until_the_ttl_passes() {
        let backing = MemoryStore::new();
        let store = CachingStore::builder()
            .ttl(Duration::from_millis(200))
            .build(backing.clone());
        let id = SessionId::generate();
        store.save(&id, &record(1)).await.unwrap();
        // Another instance changes the record behind the cache's back.
        backing.save(&id, &record(2)).await.unwrap();
        assert_eq!(store.load(&id).await.unwrap(), Some(record(1)), "cached");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            store.load(&id).await.unwrap(),
            Some(record(2)),
            "stale: reloaded"
        );
    }

    #[tokio::test]
    async fn a_touch_keeps_the_cached_copy_with_the_new_expiry() {
        let backing = MemoryStore::new();
        let store = CachingStore::new(backing.clone());
        let id = SessionId::generate();
        store.save(&id, &record(1)).await.unwrap();
        let mut touched = Record::new(CookieState::default());
        touched
            .cookie_mut()
            .set_max_age(sesame_core::now(), Some(Duration::from_secs(60)));
        store.touch(&id, &touched).await.unwrap();
        // Behind the cache's back: a hit serves the cached data, with the touched expiry.
        backing.save(&id, &record(2)).await.unwrap();
        let loaded = store.load(&id).await.unwrap().unwrap();
        assert_eq!(loaded.data(), record(1).data(), "served from the cache");
        assert_eq!(loaded.cookie().expires, touched.cookie().expires);
    }

    #[tokio::test]
    async fn destroy_and_patch_invalidate() {
        let store = CachingStore::new(MemoryStore::new());
        let id = SessionId::generate();
        store.save(&id, &record(1)).await.unwrap();
        assert!(store.load(&id).await.unwrap().is_some());
        let mut patch = Patch::new(CookieState::default());
        patch.set("views", json!(5));
        assert!(store.patch(&id, &patch).await.unwrap());
        assert_eq!(store.load(&id).await.unwrap(), Some(record(5)));
        store.destroy(&id).await.unwrap();
        assert_eq!(store.load(&id).await.unwrap(), None);
        assert_eq!(store.cached(), 0);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_capacity() {
        let store = CachingStore::builder()
            .capacity(64)
            .build(MemoryStore::new());
        for n in 0..1000 {
            store
                .save(&SessionId::generate(), &record(n))
                .await
                .unwrap();
        }
        assert!(store.cached() <= 64, "{}", store.cached());
        assert_eq!(
            store.len().await.unwrap(),
            1000,
            "the store keeps everything"
        );
    }
}
