//! An in-memory session store for [sesame](https://crates.io/crates/axum-sesame).
//!
//! [`MemoryStore`] is the default store of `axum-sesame`: no server to run, sessions gone when the
//! process ends. It is built for a single process under real load:
//!
//! - the map is split into shards, each behind its own lock, so concurrent requests on different
//!   sessions rarely wait for each other (there is no global lock on the hot path);
//! - a record past its expiry is never returned, whether or not it has been swept yet;
//! - a background task sweeps expired records shard by shard, yielding between shards so a large
//!   sweep never stalls requests; it ends when the last clone of the store is dropped.
//!
//! ```
//! use sesame_memory::MemoryStore;
//! use std::time::Duration;
//!
//! let store = MemoryStore::builder()
//!     .default_ttl(Duration::from_secs(3600))
//!     .sweep_interval(Duration::from_secs(30))
//!     .build();
//! # let _ = store;
//! ```
//!
//! [`CachingStore`] puts a bounded memory cache in front of any other store.
#![forbid(unsafe_code)]

mod caching;

pub use caching::{CachingStore, CachingStoreBuilder, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL};

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use hashbrown::HashTable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use sesame_core::serde_json::Value;
use sesame_core::time::OffsetDateTime;
use sesame_core::{
    Capabilities, CookieState, DataVersion, Error, META_KEY, Patch, Record, Result, SessionId,
    SessionStore, Swap, unix_millis, user_of,
};

const STORE_NAME: &str = "memory";

/// How long a browser-session record (one without `expires`) lives: one day, as connect-redis.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often expired records are swept.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Number of shards. Enough that two cores (or sixty-four) rarely contend on one lock, and that
/// at a million sessions the work done under one lock stays small: the sweep's scan of a shard,
/// or a shard's table growing, touches about a thousand entries, not the 16 000 of 64 shards
/// (whose scans stalled requests for milliseconds). An empty shard costs about 64 bytes.
const SHARDS: usize = 1024;

/// A session store in this process's memory. Cloning it is cheap and shares the sessions.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    /// Picks an id's shard; each shard's map hashes with a clone of it.
    hasher: FastHasher,
    default_ttl: Duration,
    sweep_interval: Option<Duration>,
    /// Set once the sweeper task has been spawned. It is spawned on first use rather than at
    /// construction, because a store is often built before (or outside) the tokio runtime.
    sweeper_started: AtomicBool,
    /// The user index: the ids of each user's sessions. Only writes that change a session's user
    /// take this lock, always while holding the session's shard lock (shard, then users: never the
    /// other way round), so the index never misses a session the shards hold.
    users: RwLock<HashMap<String, HashSet<SessionId>>>,
}

struct Entry {
    record: Record,
    /// When the entry dies, in milliseconds since the Unix epoch (compared on every call, so kept
    /// as a number): the record's cookie expiry, or the default TTL from its last write.
    expires_at: i64,
}

impl MemoryStore {
    /// How many independently locked parts the store is split into (an id picks its part by
    /// hash). Reported so that benchmarks and capacity estimates can account for it.
    pub const SHARDS: usize = SHARDS;

    /// A store with the default TTL (one day) and sweep interval (one minute).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            default_ttl: DEFAULT_TTL,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
        }
    }

    /// Removes every expired record now and returns how many were removed. The background sweeper
    /// calls this periodically; it takes one shard's lock at a time.
    pub async fn sweep(&self) -> usize {
        sweep(&self.inner).await
    }

    /// `id` with its hash, computed once for both the shard and the probe of its table.
    fn hashed<'a>(&self, id: &'a SessionId) -> HashedId<'a> {
        HashedId {
            id,
            hash: self.inner.hasher.hash_one(id),
        }
    }

    fn shard(&self, key: &HashedId<'_>) -> &RwLock<Shard> {
        &self.inner.shards[shard_index(key.hash, self.inner.shards.len())]
    }

    fn read(&self, key: &HashedId<'_>) -> RwLockReadGuard<'_, Shard> {
        self.start_sweeper();
        read_lock(self.shard(key))
    }

    fn write(&self, key: &HashedId<'_>) -> RwLockWriteGuard<'_, Shard> {
        self.start_sweeper();
        write_lock(self.shard(key))
    }

    fn start_sweeper(&self) {
        let Some(interval) = self.inner.sweep_interval else {
            return;
        };
        if self.inner.sweeper_started.load(Ordering::Relaxed)
            || self.inner.sweeper_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime (a synchronous test, say) there is nothing to spawn on; try again on
            // the next call. Expired records are still never returned meanwhile.
            self.inner.sweeper_started.store(false, Ordering::Release);
            return;
        };
        // The task holds only a weak reference: once every clone of the store is dropped, the
        // upgrade fails and the task ends, so a dropped store frees its memory.
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let removed = sweep(&inner).await;
                if removed > 0 {
                    tracing::debug!(removed, "swept expired sessions from the memory store");
                }
            }
        });
    }

    fn live_entries<T>(&self, mut pick: impl FnMut(&SessionId, &Entry) -> T) -> Vec<T> {
        let now = unix_millis(sesame_core::now());
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let map = read_lock(shard);
            out.extend(
                map.iter()
                    .filter(|(_, entry)| entry.expires_at > now)
                    .map(|(id, entry)| pick(id, entry)),
            );
        }
        out
    }

    /// Moves `id` in the user index from `old` to `new` user. Called with `id`'s shard lock held.
    fn reindex(&self, id: &SessionId, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        let mut users = write_lock(&self.inner.users);
        if let Some(old) = old {
            unindex(&mut users, old, id);
        }
        if let Some(new) = new {
            users.entry(new.to_owned()).or_default().insert(id.clone());
        }
    }

    /// [`SessionStore::load`] with the current time given: synchronous, for a caller that has
    /// read the clock already (the session layer reads it once per request, not once per call).
    pub fn load_at(&self, id: &SessionId, now: OffsetDateTime) -> Option<Record> {
        let now = unix_millis(now);
        let key = self.hashed(id);
        self.read(&key)
            .get(&key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.record.clone())
    }

    /// [`SessionStore::create`] at `now`, synchronously (see [`load_at`](Self::load_at)).
    pub fn create_at(&self, id: &SessionId, record: &Record, now: OffsetDateTime) -> Result<()> {
        let now = unix_millis(now);
        let entry = self.entry(record, now);
        let key = self.hashed(id);
        let mut map = self.write(&key);
        // One probe of the table for the check and the insert.
        let old = match map.entry(&key) {
            hashbrown::hash_table::Entry::Occupied(existing)
                if existing.get().1.expires_at > now =>
            {
                return Err(Error::AlreadyExists { store: STORE_NAME });
            }
            hashbrown::hash_table::Entry::Occupied(mut dead) => {
                Some(std::mem::replace(&mut dead.get_mut().1, entry))
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert((id.clone(), entry));
                None
            }
        };
        self.reindex(
            id,
            old.as_ref().and_then(|old| old.record.user()),
            record.user(),
        );
        Ok(())
    }

    /// [`SessionStore::touch`] at `now`, synchronously (see [`load_at`](Self::load_at)), from the
    /// cookie state alone: all a touch of this store reads (it keeps no index entry that expires),
    /// so a caller need not build a record for it.
    pub fn touch_cookie_at(&self, id: &SessionId, touched: &CookieState, now: OffsetDateTime) {
        let now = unix_millis(now);
        let expires_at = touched.store_expiry_millis(now, self.inner.default_ttl);
        let key = self.hashed(id);
        let mut map = self.write(&key);
        if let Some(entry) = map.get_mut(&key).filter(|entry| entry.expires_at > now) {
            // A touch moves the expiry only: copy the expiry fields, not the whole cookie state.
            let stored = entry.record.cookie_mut();
            stored.expires = touched.expires;
            stored.original_max_age = touched.original_max_age;
            stored.deadline = touched.deadline;
            entry.expires_at = expires_at;
        }
    }

    /// [`SessionStore::patch`] at `now`, synchronously (see [`load_at`](Self::load_at)).
    pub fn patch_at(&self, id: &SessionId, patch: &Patch, now: OffsetDateTime) -> bool {
        self.rewrite_at(id, now, |record| {
            patch.apply_to(record);
            true
        })
        .unwrap_or(false)
    }

    /// Replaces `id`'s record with `record` at `now` if the store still holds the data `loaded`
    /// was taken from (see [`Record::data_version`]): then the whole record is exactly what
    /// patching this request's changes onto the stored one would give, without building or
    /// applying the patch. `None` when another write got there first (patch instead), `false`
    /// when the session is gone, `true` when replaced.
    pub fn replace_if_unchanged_at(
        &self,
        id: &SessionId,
        loaded: &DataVersion,
        record: &Record,
        now: OffsetDateTime,
    ) -> Option<bool> {
        self.rewrite_at(id, now, |stored| {
            if !stored.has_data_version(loaded) {
                return false;
            }
            *stored = record.clone();
            true
        })
    }

    /// Rewrites the live record of `id` with `rewrite` under its shard's lock, then moves its
    /// expiry and user index entry: `Some(false)` when there is no live record, `None` when
    /// `rewrite` declined (returned `false`, leaving the record as it was).
    fn rewrite_at(
        &self,
        id: &SessionId,
        now: OffsetDateTime,
        rewrite: impl FnOnce(&mut Record) -> bool,
    ) -> Option<bool> {
        let now = unix_millis(now);
        let key = self.hashed(id);
        let mut map = self.write(&key);
        let Some(entry) = map.get_mut(&key).filter(|entry| entry.expires_at > now) else {
            return Some(false);
        };
        let old_user = entry.record.user().map(str::to_owned);
        if !rewrite(&mut entry.record) {
            return None;
        }
        entry.expires_at = entry
            .record
            .cookie()
            .store_expiry_millis(now, self.inner.default_ttl);
        let alive = entry.expires_at > now;
        let new_user = alive
            .then(|| entry.record.user().map(str::to_owned))
            .flatten();
        if !alive {
            map.remove(&key);
        }
        self.reindex(id, old_user.as_deref(), new_user.as_deref());
        Some(true)
    }

    /// An entry for `record`, written at `now` (milliseconds since the Unix epoch).
    fn entry(&self, record: &Record, now: i64) -> Entry {
        Entry {
            record: record.clone(),
            expires_at: record
                .cookie()
                .store_expiry_millis(now, self.inner.default_ttl),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("default_ttl", &self.inner.default_ttl)
            .field("sweep_interval", &self.inner.sweep_interval)
            .finish_non_exhaustive()
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    default_ttl: Duration,
    sweep_interval: Option<Duration>,
}

impl MemoryStoreBuilder {
    /// How long a record without a cookie expiry lives after its last write (default one day).
    #[must_use]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How often the background task sweeps expired records (default one minute).
    #[must_use]
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = Some(interval);
        self
    }

    /// No background sweeping: expired records are never returned but stay in memory until
    /// [`MemoryStore::sweep`] is called.
    #[must_use]
    pub fn no_sweeping(mut self) -> Self {
        self.sweep_interval = None;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let hasher = FastHasher::default();
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS)
                    .map(|_| RwLock::new(Shard::new(hasher.clone())))
                    .collect(),
                hasher,
                default_ttl: self.default_ttl,
                sweep_interval: self.sweep_interval.filter(|interval| !interval.is_zero()),
                sweeper_started: AtomicBool::new(false),
                users: RwLock::default(),
            }),
        }
    }
}

/// The hasher of the maps: foldhash, several times faster than std's SipHash on short keys, and
/// seeded at random per store, so crafted ids cannot be made to collide (ids are random anyway,
/// unless a custom `genid` makes them predictable).
type FastHasher = foldhash::fast::RandomState;

/// An id and its hash under the store's hasher.
struct HashedId<'a> {
    id: &'a SessionId,
    hash: u64,
}

/// One shard: ids to entries, in a table probed with the hash that picked the shard, so that a
/// call hashes its id once rather than once for the shard and again for the table.
struct Shard {
    table: HashTable<(SessionId, Entry)>,
    /// The store's hasher, for the table's rehashing when it grows or shrinks.
    hasher: FastHasher,
}

impl Shard {
    fn new(hasher: FastHasher) -> Self {
        Self::with_capacity(0, hasher)
    }

    fn with_capacity(capacity: usize, hasher: FastHasher) -> Self {
        Self {
            table: HashTable::with_capacity(capacity),
            hasher,
        }
    }

    fn hashed<'a>(&self, id: &'a SessionId) -> HashedId<'a> {
        HashedId {
            id,
            hash: self.hasher.hash_one(id),
        }
    }

    fn get(&self, key: &HashedId<'_>) -> Option<&Entry> {
        self.table
            .find(key.hash, |(id, _)| id == key.id)
            .map(|(_, entry)| entry)
    }

    fn get_mut(&mut self, key: &HashedId<'_>) -> Option<&mut Entry> {
        self.table
            .find_mut(key.hash, |(id, _)| id == key.id)
            .map(|(_, entry)| entry)
    }

    fn entry(
        &mut self,
        key: &HashedId<'_>,
    ) -> hashbrown::hash_table::Entry<'_, (SessionId, Entry)> {
        let hasher = &self.hasher;
        self.table.entry(
            key.hash,
            |(id, _)| id == key.id,
            |(id, _)| hasher.hash_one(id),
        )
    }

    /// Inserts or replaces `key`'s entry, returning the replaced one.
    fn insert(&mut self, key: &HashedId<'_>, entry: Entry) -> Option<Entry> {
        match self.entry(key) {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                Some(std::mem::replace(&mut occupied.get_mut().1, entry))
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert((key.id.clone(), entry));
                None
            }
        }
    }

    fn remove(&mut self, key: &HashedId<'_>) -> Option<Entry> {
        self.table
            .find_entry(key.hash, |(id, _)| id == key.id)
            .ok()
            .map(|occupied| occupied.remove().0.1)
    }

    fn iter(&self) -> impl Iterator<Item = (&SessionId, &Entry)> {
        self.table.iter().map(|(id, entry)| (id, entry))
    }

    fn drain(&mut self) -> impl Iterator<Item = (SessionId, Entry)> + '_ {
        self.table.drain()
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn capacity(&self) -> usize {
        self.table.capacity()
    }
}

/// Picks a shard from the middle bits of an id's hash (the table inside uses the low and the top
/// bits).
fn shard_index(hash: u64, shards: usize) -> usize {
    ((hash >> 32) % shards as u64) as usize
}

fn unindex(users: &mut HashMap<String, HashSet<SessionId>>, user: &str, id: &SessionId) {
    if let Some(ids) = users.get_mut(user) {
        ids.remove(id);
        if ids.is_empty() {
            users.remove(user);
        }
    }
}

/// The most expired entries one hold of a shard's write lock removes: a sweep of a million
/// expired sessions must not stall the requests that need the same shard.
const SWEEP_BATCH: usize = 128;

/// Removes the expired entries, a shard at a time, without long lock holds: expired ids are found
/// under the read lock (requests on the shard go on reading meanwhile), removed in small batches
/// under the write lock, and freed after the lock is released. Tables that emptied out shrink.
/// Sweeps on the runtime's blocking pool, not on one of its workers: freeing a million records
/// makes the allocator hand hundreds of megabytes back to the kernel, and the free that triggers
/// it can take a few hundred milliseconds, which must not hold up the requests a worker runs.
/// Outside a tokio runtime it sweeps in place.
async fn sweep(inner: &Arc<Inner>) -> usize {
    if tokio::runtime::Handle::try_current().is_err() {
        return sweep_now(inner);
    }
    let inner = Arc::clone(inner);
    match tokio::task::spawn_blocking(move || sweep_now(&inner)).await {
        Ok(removed) => removed,
        Err(error) => {
            tracing::error!(%error, "the memory store's sweep failed");
            0
        }
    }
}

/// Removes every expired record, one shard at a time: a read lock to find the expired ids, then
/// batches of [`SWEEP_BATCH`] under the write lock. Memory is freed only outside the locks (the
/// removed records, and a table that shrank), since a free can be slow (see [`sweep`]).
fn sweep_now(inner: &Inner) -> usize {
    let mut removed = 0;
    for shard in inner.shards.iter() {
        let now = unix_millis(sesame_core::now());
        let expired: Vec<SessionId> = read_lock(shard)
            .iter()
            .filter(|(_, entry)| entry.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for batch in expired.chunks(SWEEP_BATCH) {
            let mut dead = Vec::with_capacity(batch.len());
            let outgrown_table = {
                let mut map = write_lock(shard);
                let mut expired_of_users = Vec::new();
                for id in batch {
                    let key = map.hashed(id);
                    // A write may have renewed the session since the scan.
                    if map.get(&key).is_none_or(|entry| entry.expires_at > now) {
                        continue;
                    }
                    if let Some(entry) = map.remove(&key) {
                        if let Some(user) = entry.record.user() {
                            expired_of_users.push((user.to_owned(), id.clone()));
                        }
                        dead.push(entry);
                    }
                }
                if !expired_of_users.is_empty() {
                    // Under the shard's lock, as every index change (shard, then users).
                    let mut users = write_lock(&inner.users);
                    for (user, id) in &expired_of_users {
                        unindex(&mut users, user, id);
                    }
                }
                // Give memory back once a table is mostly empty (a burst of sessions expired):
                // the live entries move to a smaller table, and the old one is freed after the
                // lock is released.
                (map.capacity() > 16 && map.len() < map.capacity() / 4).then(|| {
                    let mut smaller = Shard::with_capacity(map.len() * 2, map.hasher.clone());
                    for (id, entry) in map.drain() {
                        let hasher = &smaller.hasher;
                        let hash = hasher.hash_one(&id);
                        smaller
                            .table
                            .insert_unique(hash, (id, entry), |(id, _)| hasher.hash_one(id));
                    }
                    std::mem::replace(&mut *map, smaller)
                })
            };
            removed += dead.len();
            drop(dead);
            drop(outgrown_table);
        }
    }
    removed
}

/// A poisoned lock means a panic happened while it was held; the map itself is still consistent
/// (every mutation is a single insert/remove), so keep serving rather than propagate the panic.
fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionStore for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        Ok(self.load_at(id, sesame_core::now()))
    }

    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        let now = unix_millis(sesame_core::now());
        let entry = self.entry(record, now);
        let key = self.hashed(id);
        let mut map = self.write(&key);
        let new_user = (entry.expires_at > now).then(|| record.user()).flatten();
        let old = if entry.expires_at > now {
            map.insert(&key, entry)
        } else {
            map.remove(&key)
        };
        self.reindex(id, old.as_ref().and_then(|old| old.record.user()), new_user);
        Ok(())
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.create_at(id, record, sesame_core::now())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let key = self.hashed(id);
        let mut map = self.write(&key);
        if let Some(old) = map.remove(&key) {
            self.reindex(id, old.record.user(), None);
        }
        Ok(())
    }

    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.touch_cookie_at(id, record.cookie(), sesame_core::now());
        Ok(())
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

    /// Applies the patch under the shard's write lock: atomic against every other write.
    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        Ok(self.patch_at(id, patch, sesame_core::now()))
    }

    async fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<Swap> {
        let now = unix_millis(sesame_core::now());
        let hashed = self.hashed(id);
        let mut map = self.write(&hashed);
        let Some(entry) = map.get_mut(&hashed).filter(|entry| entry.expires_at > now) else {
            return Ok(Swap::Missing);
        };
        let data = entry.record.data_mut();
        // serde_json's Value equality ignores object key order, as the contract asks.
        if data.get(key) != expected {
            return Ok(Swap::Changed(data.get(key).cloned()));
        }
        let old_user = (key == META_KEY).then(|| user_of(data).map(str::to_owned));
        match new {
            Some(value) => data.insert(key.to_owned(), value.clone()),
            None => data.remove(key),
        };
        if let Some(old_user) = old_user {
            let new_user = user_of(data).map(str::to_owned);
            self.reindex(id, old_user.as_deref(), new_user.as_deref());
        }
        Ok(Swap::Done)
    }

    async fn ids(&self) -> Result<Vec<SessionId>> {
        Ok(self.live_entries(|id, _| id.clone()))
    }

    async fn all(&self) -> Result<Vec<(SessionId, Record)>> {
        Ok(self.live_entries(|id, entry| (id.clone(), entry.record.clone())))
    }

    async fn len(&self) -> Result<usize> {
        Ok(self.live_entries(|_, _| ()).len())
    }

    async fn clear(&self) -> Result<()> {
        for shard in self.inner.shards.iter() {
            let mut map = write_lock(shard);
            for (id, entry) in map.drain() {
                if let Some(user) = entry.record.user() {
                    unindex(&mut write_lock(&self.inner.users), user, &id);
                }
            }
        }
        Ok(())
    }

    async fn user_sessions(&self, user: &str) -> Result<Vec<(SessionId, Record)>> {
        let ids: Vec<SessionId> = read_lock(&self.inner.users)
            .get(user)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        let now = unix_millis(sesame_core::now());
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                let key = self.hashed(&id);
                let map = read_lock(self.shard(&key));
                let entry = map
                    .get(&key)
                    .filter(|entry| entry.expires_at > now && entry.record.user() == Some(user))?;
                let record = entry.record.clone();
                drop(map);
                Some((id, record))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sesame_core::CookieState;

    fn record_expiring_in(ttl: Duration) -> Record {
        let mut cookie = CookieState::default();
        cookie.set_max_age(sesame_core::now(), Some(ttl));
        Record::new(cookie)
    }

    fn stored_entries(store: &MemoryStore) -> usize {
        store.inner.shards.iter().map(|s| read_lock(s).len()).sum()
    }

    #[tokio::test]
    async fn background_sweeper_removes_expired_records() {
        let store = MemoryStore::builder()
            .sweep_interval(Duration::from_millis(50))
            .build();
        for _ in 0..10 {
            store
                .save(
                    &SessionId::generate(),
                    &record_expiring_in(Duration::from_millis(20)),
                )
                .await
                .unwrap();
        }
        let keep = SessionId::generate();
        store
            .save(&keep, &record_expiring_in(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(stored_entries(&store), 11);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            stored_entries(&store),
            1,
            "the sweeper removed expired entries"
        );
        assert!(store.load(&keep).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn sweeper_ends_when_the_store_is_dropped() {
        let store = MemoryStore::builder()
            .sweep_interval(Duration::from_millis(10))
            .build();
        store
            .save(&SessionId::generate(), &Record::default())
            .await
            .unwrap();
        let weak = Arc::downgrade(&store.inner);
        drop(store);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            weak.upgrade().is_none(),
            "the sweeper keeps no strong reference"
        );
    }

    #[tokio::test]
    async fn browser_session_records_use_the_default_ttl() {
        let store = MemoryStore::builder()
            .default_ttl(Duration::from_millis(100))
            .no_sweeping()
            .build();
        let id = SessionId::generate();
        store.save(&id, &Record::default()).await.unwrap();
        assert!(store.load(&id).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(store.load(&id).await.unwrap().is_none());
        assert_eq!(store.sweep().await, 1);
    }

    #[test]
    fn generated_ids_spread_over_the_shards() {
        let mut counts = [0usize; SHARDS];
        let hasher = FastHasher::default();
        for _ in 0..SHARDS * 100 {
            counts[shard_index(hasher.hash_one(SessionId::generate()), SHARDS)] += 1;
        }
        assert!(
            counts.iter().all(|&n| (40..=180).contains(&n)),
            "{counts:?}"
        );
    }

    #[tokio::test]
    async fn a_large_sweep_removes_in_batches_keeps_the_live_and_gives_memory_back() {
        let store = MemoryStore::builder().no_sweeping().build();
        let mut short = Record::default();
        short
            .cookie_mut()
            .set_max_age(sesame_core::now(), Some(Duration::from_millis(1000)));
        for _ in 0..SHARDS * 25 {
            store.save(&SessionId::generate(), &short).await.unwrap();
        }
        let saved = store.len().await.unwrap();
        assert!(saved > SHARDS * 6, "{saved} saved before they expired");
        let live = SessionId::generate();
        let mut long = Record::default();
        long.cookie_mut()
            .set_max_age(sesame_core::now(), Some(Duration::from_secs(3600)));
        store.save(&live, &long).await.unwrap();
        let capacity = |store: &MemoryStore| -> usize {
            store
                .inner
                .shards
                .iter()
                .map(|shard| read_lock(shard).capacity())
                .sum()
        };
        let before = capacity(&store);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(store.sweep().await, saved);
        assert!(store.load(&live).await.unwrap().is_some());
        assert!(
            capacity(&store) < before / 4,
            "emptied tables shrink: {before} slots before, {} after",
            capacity(&store)
        );
    }

    #[tokio::test]
    async fn a_record_replaces_the_stored_one_only_while_the_store_holds_what_it_was_loaded_from() {
        use sesame_core::serde_json::json;
        let store = MemoryStore::new();
        let id = SessionId::generate();
        let mut first = record_expiring_in(Duration::from_secs(60));
        first.data_mut().insert("a".into(), json!(1));
        store.save(&id, &first).await.unwrap();
        let now = sesame_core::now();

        // Unchanged since the load: the whole record goes in.
        let loaded = store.load(&id).await.unwrap().unwrap();
        let mut mine = loaded.clone();
        mine.data_mut().insert("b".into(), json!(2));
        assert_eq!(
            store.replace_if_unchanged_at(&id, &loaded.data_version(), &mine, now),
            Some(true)
        );
        assert_eq!(store.load(&id).await.unwrap().unwrap(), mine);

        // Another request wrote meanwhile: declined (the caller patches), nothing lost.
        let loaded = store.load(&id).await.unwrap().unwrap();
        let mut other = Patch::new(loaded.cookie().clone());
        other.set("c", json!(3));
        assert!(store.patch_at(&id, &other, now));
        let mut stale = loaded.clone();
        stale.data_mut().insert("d".into(), json!(4));
        assert_eq!(
            store.replace_if_unchanged_at(&id, &loaded.data_version(), &stale, now),
            None
        );
        let stored = store.load(&id).await.unwrap().unwrap();
        assert_eq!(stored.data().get("c"), Some(&json!(3)));
        assert_eq!(stored.data().get("d"), None);

        // A record equal to the stored one but read separately is not the same copy.
        let equal = Record::from_parts(stored.data().clone(), stored.cookie().clone());
        assert_eq!(
            store.replace_if_unchanged_at(&id, &equal.data_version(), &stale, now),
            None
        );

        // Gone: nothing is written.
        store.destroy(&id).await.unwrap();
        assert_eq!(
            store.replace_if_unchanged_at(&id, &stored.data_version(), &stale, now),
            Some(false)
        );
        assert!(store.load(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn clones_share_sessions() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        store.clone().save(&id, &Record::default()).await.unwrap();
        assert!(store.load(&id).await.unwrap().is_some());
    }
}
