//! Server-assisted client-side caching of session records (Redis `CLIENT TRACKING`), so that a
//! read of a session this process has seen costs no round trip and a write costs one.
//!
//! Redis tracks the session keys this store's connection reads (`CLIENT TRACKING ON NOLOOP`, over
//! RESP3) and sends one invalidation per read key when another connection next changes it. A
//! change by this connection sends nothing (`NOLOOP`) but ends the tracking of the key like any
//! other, so the store's own cached writes read the key again after they change it, in the same
//! atomic step (a script, or `MULTI`): the key is tracked again for the next change, by anyone,
//! and the record just written stays cached. Every other write of this connection to a session
//! key drops the key's entry, before and after it, and so does a write whose future is dropped
//! midway (the store's `ForgetAfter` guard).
//!
//! Four rules keep the cache from ever holding a record Redis no longer has, whatever the order
//! in which replies, pushes and tasks run:
//!
//! - **Tickets.** A command that will fill the cache takes a [`Ticket`] before it is sent. Each
//!   shard remembers its last [`RECENT`] changes; when the result comes, it goes in only if none
//!   of the changes since the ticket was this process settling the same key (another request's
//!   result, whose order against this one is unknown) and there were not too many to tell.
//! - **Invalidations drop.** Every invalidation is another connection's change (or Redis
//!   forgetting the key's tracking: an eviction of its tracking table): it drops the key's entry,
//!   and one that arrives between a ticket and its result (any key's pushes can overtake a reply's
//!   task) keeps that result out.
//! - **Epochs.** A lost connection loses the pushes sent meanwhile and the tracking itself: the
//!   driver's disconnection notice empties the cache and starts a new epoch, in which nothing is
//!   cached until tracking is confirmed on the new connection.
//! - **Expiries.** Each entry expires when its Redis key does (the `PX` of the write, or the `PTTL`
//!   read with the value), so the cache never outlives a session.
//!
//! What it cannot rule out is the delivery delay of an invalidation: a request that reaches this
//! process microseconds after another process changed the session may still read the previous
//! value (and when another process writes right after one of this store's writes, until the
//! store's own invalidation has arrived too). Writes never build on it blindly: a patch replaces
//! the stored record only if it is still byte for byte the one this request read, and merges key
//! by key otherwise.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use redis::{PushInfo, PushKind, Value};
use sesame_core::{Record, SessionId};

/// Shards of the cache: enough that concurrent requests rarely share a lock.
const SHARDS: usize = 64;

/// The shard of an id with hash `hash`.
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// How many of its latest changes a shard remembers for the tickets in flight. A result settled
/// after more changes than this in its shard is not cached (it cannot tell whether they were
/// about its key).
const RECENT: usize = 16;

/// No epoch: tracking has not been confirmed yet.
const NO_EPOCH: u64 = u64::MAX;

/// The default number of records a store's client-side cache holds.
pub const DEFAULT_CLIENT_CACHE_CAPACITY: usize = 100_000;

/// A bounded cache of session records kept coherent by Redis' invalidation pushes.
pub(crate) struct ClientCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    prefix: Box<[u8]>,
    /// Bumped by every disconnection of the store's connection.
    epoch: AtomicU64,
    /// The epoch in which `CLIENT TRACKING` was confirmed on the connection, or [`NO_EPOCH`].
    tracking: AtomicU64,
    /// The epoch for which a task is enabling tracking (so that only one task sends it).
    enabling: AtomicU64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<SessionId, Cached, foldhash::fast::RandomState>,
    /// How many changes the shard has seen: change `n` is `recent[n % RECENT]`.
    changes: u64,
    recent: [Change; RECENT],
}

struct Cached {
    record: Record,
    /// When the Redis key expires, in milliseconds since the Unix epoch (`i64::MAX`: never).
    expires_at: i64,
}

/// One change to a shard, as the tickets in flight need to know it.
#[derive(Clone, Copy, Default)]
struct Change {
    /// The hash of the session id it is about (unused for [`ChangeKind::Everything`]).
    key: u64,
    kind: ChangeKind,
}

#[derive(Clone, Copy, Default)]
enum ChangeKind {
    /// Redis invalidated the key (another connection changed it).
    #[default]
    Invalidated,
    /// This process settled what it knows of the key: a result, a forget.
    Settled,
    /// This process forgot every key (a flush, a lost connection).
    Everything,
}

/// Taken before a command whose result may fill the cache: see the module docs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    /// The hash of the session id (which also picks its shard).
    key: u64,
    epoch: u64,
    /// The shard's change count when the ticket was taken.
    changes: u64,
}

impl Shard {
    /// A ticket for a command about `key` (an id's hash), at `epoch`.
    fn ticket(&self, key: u64, epoch: u64) -> Ticket {
        Ticket {
            key,
            epoch,
            changes: self.changes,
        }
    }

    fn note(&mut self, key: u64, kind: ChangeKind) {
        // The slot of change number `changes` (the remainder is below RECENT, so it fits).
        let slot = (self.changes % RECENT as u64) as usize;
        self.recent[slot] = Change { key, kind };
        self.changes = self.changes.wrapping_add(1);
    }

    /// Whether nothing happened to the ticket's key since it was taken: no invalidation, nothing
    /// this process settled, and no more changes in the shard than it remembers.
    fn unchanged_since(&self, ticket: &Ticket) -> bool {
        let since = self.changes.wrapping_sub(ticket.changes);
        if since > RECENT as u64 {
            return false;
        }
        (0..since).all(|number| {
            let slot = (ticket.changes.wrapping_add(number) % RECENT as u64) as usize;
            let change = self.recent[slot];
            !matches!(change.kind, ChangeKind::Everything) && change.key != ticket.key
        })
    }
}

impl ClientCache {
    pub(crate) fn new(capacity: usize, prefix: &str) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: foldhash::fast::RandomState::default(),
            prefix: prefix.as_bytes().into(),
            epoch: AtomicU64::new(0),
            tracking: AtomicU64::new(NO_EPOCH),
            enabling: AtomicU64::new(NO_EPOCH),
        }
    }

    /// The epoch for which the caller must enable tracking now (it alone), or `None` when tracking
    /// is on, or another task is enabling it.
    pub(crate) fn tracking_to_enable(&self) -> Option<u64> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if self.tracking.load(Ordering::Acquire) == epoch {
            return None;
        }
        let previous = self.enabling.swap(epoch, Ordering::AcqRel);
        (previous != epoch).then_some(epoch)
    }

    /// Tracking is on for `epoch` (if that is still the current one).
    pub(crate) fn tracking_enabled(&self, epoch: u64) {
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.tracking.store(epoch, Ordering::Release);
        }
    }

    /// Enabling tracking for `epoch` ended without confirming it (failed, or was dropped): let the
    /// next caller try again. Does nothing once tracking is confirmed.
    pub(crate) fn tracking_failed(&self, epoch: u64) {
        if self.tracking.load(Ordering::Acquire) == epoch {
            return;
        }
        let _ =
            self.enabling
                .compare_exchange(epoch, NO_EPOCH, Ordering::AcqRel, Ordering::Relaxed);
    }

    fn is_tracking(&self, epoch: u64) -> bool {
        self.tracking.load(Ordering::Acquire) == epoch
    }

    /// The shard of `id`, and the hash of `id` that shard's changes are noted under.
    fn place(&self, id: &SessionId) -> (usize, u64) {
        let hash = self.hasher.hash_one(id);
        (shard_of(hash), hash)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached record of `id`, while its key lives (`now_ms`: milliseconds since the epoch).
    pub(crate) fn get(&self, id: &SessionId, now_ms: i64) -> Option<Record> {
        if !self.is_tracking(self.epoch.load(Ordering::Acquire)) {
            return None;
        }
        let mut shard = self.lock(self.place(id).0);
        let cached = shard.entries.get(id)?;
        if cached.expires_at > now_ms {
            return Some(cached.record.clone());
        }
        shard.entries.remove(id);
        None
    }

    /// A ticket for a command about `id` that is about to be sent.
    pub(crate) fn ticket(&self, id: &SessionId) -> Ticket {
        let (index, key) = self.place(id);
        let epoch = self.epoch.load(Ordering::Acquire);
        self.lock(index).ticket(key, epoch)
    }

    /// [`ticket`](Self::ticket) and the record [`get`](Self::get) would give at `now_ms`, under
    /// one lock: for a write that builds on the copy the cache holds (a touch keeps it, a replace
    /// patches it).
    pub(crate) fn ticket_and_copy(&self, id: &SessionId, now_ms: i64) -> (Ticket, Option<Record>) {
        let (index, key) = self.place(id);
        let epoch = self.epoch.load(Ordering::Acquire);
        let shard = self.lock(index);
        let copy = shard
            .entries
            .get(id)
            .filter(|cached| self.is_tracking(epoch) && cached.expires_at > now_ms)
            .map(|cached| cached.record.clone());
        (shard.ticket(key, epoch), copy)
    }

    /// Whether `ticket` is still good for filling the cache: same epoch, tracking on, and
    /// nothing happened to its key since it was taken.
    fn still_good(&self, shard: &Shard, ticket: &Ticket) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        ticket.epoch == epoch && self.is_tracking(epoch) && shard.unchanged_since(ticket)
    }

    /// Settles what Redis now holds under `id` after the command `ticket` was taken for: the
    /// record and when its key expires, or `None` when the outcome is not known (then nothing is
    /// cached for `id`). The command must have read the key last (a read, or a write that reads
    /// the key again after it changed it), so that Redis tracks it.
    pub(crate) fn settle(&self, ticket: Ticket, id: &SessionId, now: Option<(Record, i64)>) {
        let mut shard = self.lock(shard_of(ticket.key));
        let good = self.still_good(&shard, &ticket);
        shard.note(ticket.key, ChangeKind::Settled);
        match now {
            Some((record, expires_at)) if good => {
                if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(id) {
                    // Full: make room by dropping an arbitrary entry (any one is a fair guess).
                    if let Some(victim) = shard.entries.keys().next().cloned() {
                        shard.entries.remove(&victim);
                    }
                }
                shard
                    .entries
                    .insert(id.clone(), Cached { record, expires_at });
            }
            _ => {
                shard.entries.remove(id);
            }
        }
    }

    /// Drops `id`'s record: its key changed in a way this process does not know the outcome of.
    pub(crate) fn forget(&self, id: &SessionId) {
        let (index, key) = self.place(id);
        let mut shard = self.lock(index);
        shard.note(key, ChangeKind::Settled);
        shard.entries.remove(id);
    }

    /// Drops every record.
    pub(crate) fn forget_all(&self) {
        for index in 0..SHARDS {
            let mut shard = self.lock(index);
            shard.note(0, ChangeKind::Everything);
            shard.entries.clear();
        }
    }

    /// Handles a push from the store's connection: invalidations and disconnections.
    pub(crate) fn on_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        self.invalidate_key(key);
                    }
                }
                // A null list: the server flushed its keys (FLUSHALL, FLUSHDB).
                _ => self.forget_all(),
            },
            PushKind::Disconnection => {
                // The pushes sent while disconnected are lost, and the new connection does not
                // track yet: start a new epoch with an empty cache.
                self.epoch.fetch_add(1, Ordering::AcqRel);
                self.forget_all();
                tracing::debug!("Redis connection lost; the client-side cache was emptied");
            }
            _ => {}
        }
    }

    fn invalidate_key(&self, key: &Value) {
        let key: &[u8] = match key {
            Value::BulkString(key) => key,
            Value::SimpleString(key) => key.as_bytes(),
            _ => return self.forget_all(),
        };
        let Some(id) = crate::id_in_key(&self.prefix, key) else {
            // Not a session key of this store (the user index, another prefix): nothing of it
            // is cached.
            return;
        };
        let (index, hash) = self.place(&id);
        let mut shard = self.lock(index);
        shard.note(hash, ChangeKind::Invalidated);
        shard.entries.remove(&id);
    }

    /// How many records are cached (for tests and diagnostics).
    pub(crate) fn len(&self) -> usize {
        (0..SHARDS)
            .map(|index| self.lock(index).entries.len())
            .sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tracking_cache(capacity: usize) -> ClientCache {
        let cache = ClientCache::new(capacity, "sess:");
        let epoch = cache.tracking_to_enable().unwrap();
        cache.tracking_enabled(epoch);
        cache
    }

    fn invalidate(keys: &[&str]) -> PushInfo {
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(
                keys.iter()
                    .map(|key| Value::BulkString(key.as_bytes().to_vec()))
                    .collect(),
            )],
        }
    }

    #[test]
    fn nothing_is_cached_until_tracking_is_confirmed() {
        let cache = ClientCache::new(10, "sess:");
        let id = SessionId::generate();
        cache.settle(cache.ticket(&id), &id, Some((Record::default(), i64::MAX)));
        assert_eq!(cache.get(&id, 0), None);
        let epoch = cache.tracking_to_enable().unwrap();
        assert_eq!(cache.tracking_to_enable(), None, "one task enables it");
        cache.tracking_enabled(epoch);
        cache.settle(cache.ticket(&id), &id, Some((Record::default(), i64::MAX)));
        assert_eq!(cache.get(&id, 0), Some(Record::default()));
    }

    #[test]
    fn an_abandoned_attempt_to_enable_tracking_lets_the_next_caller_try() {
        let cache = ClientCache::new(10, "sess:");
        let epoch = cache.tracking_to_enable().unwrap();
        assert_eq!(cache.tracking_to_enable(), None);
        cache.tracking_failed(epoch);
        let again = cache.tracking_to_enable().unwrap();
        cache.tracking_enabled(again);
        cache.tracking_failed(again);
        assert_eq!(
            cache.tracking_to_enable(),
            None,
            "confirmed tracking stays on"
        );
    }

    #[test]
    fn a_change_between_ticket_and_result_keeps_the_result_out() {
        let cache = tracking_cache(10);
        let id = SessionId::generate();
        let ticket = cache.ticket(&id);
        // An invalidation (about a value later than the one being read) arrives first.
        cache.on_push(&invalidate(&[&format!("sess:{id}")]));
        cache.settle(ticket, &id, Some((Record::default(), i64::MAX)));
        assert_eq!(cache.get(&id, 0), None);

        // Two writes of this process race: the one settled second is dropped, not cached.
        let first = cache.ticket(&id);
        let second = cache.ticket(&id);
        cache.settle(first, &id, Some((Record::default(), i64::MAX)));
        cache.settle(second, &id, Some((Record::default(), i64::MAX)));
        assert_eq!(cache.get(&id, 0), None);
    }

    #[test]
    fn every_invalidation_drops_the_entry_whenever_it_arrives() {
        let cache = tracking_cache(10);
        let id = SessionId::generate();
        let key = format!("sess:{id}");
        let written = || Some((Record::default(), i64::MAX));

        // An own write brings no invalidation (`NOLOOP`): what it settled stays cached.
        cache.settle(cache.ticket(&id), &id, written());
        cache.settle(cache.ticket(&id), &id, written());
        assert!(cache.get(&id, 0).is_some());
        // Another connection's change, after the result: the entry goes.
        cache.on_push(&invalidate(&[&key]));
        assert_eq!(cache.get(&id, 0), None);

        // Another connection's change between the ticket and the result (a push can overtake
        // the task that settles a reply): the result is kept out, and so is the entry.
        cache.settle(cache.ticket(&id), &id, written());
        let ticket = cache.ticket(&id);
        cache.on_push(&invalidate(&[&key]));
        cache.settle(ticket, &id, written());
        assert_eq!(cache.get(&id, 0), None);

        // Changes to other keys of the shard do not matter.
        let other = std::iter::repeat_with(SessionId::generate)
            .find(|other| cache.place(other).0 == cache.place(&id).0)
            .unwrap();
        let ticket = cache.ticket(&id);
        cache.on_push(&invalidate(&[&format!("sess:{other}")]));
        cache.settle(ticket, &id, written());
        assert!(cache.get(&id, 0).is_some());
    }

    #[test]
    fn a_result_after_more_changes_than_the_shard_remembers_is_not_cached() {
        let cache = tracking_cache(1_000);
        let id = SessionId::generate();
        let shard = cache.place(&id).0;
        let neighbours: Vec<SessionId> = std::iter::repeat_with(SessionId::generate)
            .filter(|other| cache.place(other).0 == shard)
            .take(RECENT + 1)
            .collect();
        let ticket = cache.ticket(&id);
        for other in &neighbours[..RECENT] {
            cache.on_push(&invalidate(&[&format!("sess:{other}")]));
        }
        cache.settle(ticket, &id, Some((Record::default(), i64::MAX)));
        assert!(
            cache.get(&id, 0).is_some(),
            "{RECENT} changes about other keys"
        );

        cache.forget(&id);
        let ticket = cache.ticket(&id);
        for other in &neighbours {
            cache.on_push(&invalidate(&[&format!("sess:{other}")]));
        }
        cache.settle(ticket, &id, Some((Record::default(), i64::MAX)));
        assert_eq!(cache.get(&id, 0), None, "one change too many to tell");
    }

    #[test]
    fn invalidations_and_expiries_drop_entries() {
        let cache = tracking_cache(10);
        let (a, b) = (SessionId::generate(), SessionId::generate());
        for id in [&a, &b] {
            cache.settle(cache.ticket(id), id, Some((Record::default(), 1_000)));
        }
        cache.on_push(&invalidate(&[&format!("sess:{a}"), "other:key"]));
        assert_eq!(cache.get(&a, 0), None);
        assert!(cache.get(&b, 999).is_some());
        assert_eq!(cache.get(&b, 1_000), None, "expired with its key");
    }

    #[test]
    fn a_disconnection_empties_the_cache_until_tracking_is_back() {
        let cache = tracking_cache(10);
        let id = SessionId::generate();
        cache.settle(cache.ticket(&id), &id, Some((Record::default(), i64::MAX)));
        let ticket = cache.ticket(&id);
        cache.on_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert_eq!(cache.len(), 0);
        cache.settle(ticket, &id, Some((Record::default(), i64::MAX)));
        assert_eq!(
            cache.get(&id, 0),
            None,
            "a ticket of the old epoch fills nothing"
        );
        let epoch = cache.tracking_to_enable().unwrap();
        cache.tracking_enabled(epoch);
        cache.settle(cache.ticket(&id), &id, Some((Record::default(), i64::MAX)));
        assert!(cache.get(&id, 0).is_some());
    }

    #[test]
    fn a_flush_empties_the_cache_and_the_size_is_bounded() {
        let cache = tracking_cache(SHARDS * 2);
        for _ in 0..SHARDS * 20 {
            let id = SessionId::generate();
            cache.settle(cache.ticket(&id), &id, Some((Record::default(), i64::MAX)));
        }
        assert!(cache.len() <= SHARDS * 2, "{}", cache.len());
        cache.on_push(&PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Nil],
        });
        assert_eq!(cache.len(), 0);
    }
}
