//! A MongoDB session store for [sesame](https://crates.io/crates/axum-sesame), compatible with
//! [connect-mongo](https://github.com/jdesboeufs/connect-mongo), so an Express app and a sesame app
//! can share one collection of sessions during a migration.
//!
//! # What is stored
//!
//! [`MongoStore`] keeps connect-mongo's layout. Each session is one document of the `sessions`
//! collection:
//!
//! ```text
//! { _id: "<session id>",
//!   session: "<express-session's JSON record>",   // or a sub-document with `stringify(false)`
//!   expires: ISODate("..."),                       // the cookie's expiry, or now + 14 days
//!   lastModified: ISODate("..."),                  // only with `touch_after`
//!   user: "<user id>" }                            // only while a user is logged in to it
//! ```
//!
//! - Reads skip documents past `expires`, so an expired session is never returned even before
//!   MongoDB removes it.
//! - Expired documents are removed as connect-mongo's `autoRemove` does it: by a TTL index on
//!   `expires` with `expireAfterSeconds: 0` ([`AutoRemove::Native`], the default), by a periodic
//!   delete from this process ([`AutoRemove::Interval`]), or not at all ([`AutoRemove::Disabled`]).
//! - [`touch_after`](MongoStoreBuilder::touch_after) spares writes: a touch within that time of
//!   the last write is skipped, as connect-mongo's `touchAfter`.
//! - `create` never overwrites a live session: it is an upsert that may only replace an expired
//!   document, so MongoDB's duplicate key error reports an id collision, as
//!   [`Error::AlreadyExists`].
//! - Listing (`ids`, `all`, `len`, `clear`) covers the store's collection.
//! - `expires` is never later than the layer's idle and absolute timeouts allow (the cookie
//!   state's [deadline](sesame_core::CookieState::deadline)), so MongoDB drops a session as soon as
//!   the layer would refuse it.
//!
//! # Sessions of a user
//!
//! [`user_sessions`](SessionStore::user_sessions) lists the live sessions a user is logged in to
//! (to show them, or to log the user out everywhere). The index is the top-level field
//! [`user`](USER_FIELD) of each session document: a copy of the record's `sesame.user`, written by
//! the same single update as the session itself (`save` and `create` put it in the document,
//! `patch` and compare-and-swap `$set` it, or `$unset` it when the user is removed), so it costs
//! no extra round trip, and it lives and dies with its document (TTL index, `destroy`). A touch
//! leaves it alone. With [`AutoRemove::Native`] the store also creates a sparse index
//! `{user: 1}` (anonymous sessions, without the field, stay out of it); with the other modes,
//! which create no index, create it yourself or the query scans the collection.
//!
//! The listing is one query, `{user, expires > now}`; every record found is checked against its
//! own `sesame.user`, and only those that match are returned. connect-mongo's writes keep the
//! field (its `set` is a `$set` of its own fields), so an Express app sharing the collection reads
//! and writes the same documents; if it changes a session's user, the field is stale until the
//! listing finds it out and removes it.
//!
//! # Concurrent requests
//!
//! The store applies per-key patches and compare-and-swap atomically on the server, so two
//! requests that change different keys of one session both keep their change, and a destroyed
//! session is never written back by a save in flight (a patch only updates a live document, it
//! never inserts one). How depends on the layout:
//!
//! | layout | patch | compare-and-swap of one key |
//! |---|---|---|
//! | sub-document (`stringify(false)`) | one `updateOne` with `$set`/`$unset` on `session.<key>`: one round trip | one conditional `updateOne` on `session.<key>`: one round trip; a read more when the value differs |
//! | JSON string (default) | read, apply, then `updateOne` conditional on the string being unchanged; retried if another write came in between: two round trips | the same: two round trips |
//!
//! MongoDB cannot edit the inside of a JSON string (short of server-side JavaScript, deprecated
//! and often disabled), so the string layout pays a read per patch; choose `stringify(false)` if
//! the Express app sharing the collection uses connect-mongo with `stringify: false` too, or if
//! there is none. Keys that cannot be used in a MongoDB field path (empty, starting with `$`,
//! containing `.`) take the read-and-conditional-write route in either layout. Within one process,
//! the reads-and-writes of one session take turns, so concurrent requests do not make each other
//! retry; across processes the conditional write alone keeps them correct.
//!
//! # Bounded waits
//!
//! Every round trip is bounded by a [timeout](MongoStoreBuilder::timeout) (default 5 s): an
//! unreachable or stalled server is an error within seconds, never a hang, and the store works
//! again once the server is back. A client made by [`MongoStore::connect`] also gets a short
//! [server selection timeout](MongoStoreBuilder::server_selection_timeout) (3 s) and
//! [connect timeout](MongoStoreBuilder::connect_timeout) (2 s) unless the URL sets its own.
//!
//! # Example
//!
//! ```no_run
//! use sesame_mongodb::{AutoRemove, MongoStore};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), sesame_core::Error> {
//! // Defaults: collection `sessions`, stringified records, a TTL index.
//! let store = MongoStore::connect("mongodb://127.0.0.1:27017/app").await?;
//!
//! // Or configured.
//! let store = MongoStore::builder()
//!     .collection("web_sessions")
//!     .stringify(false)
//!     .touch_after(Duration::from_secs(3600))
//!     .auto_remove(AutoRemove::Interval(Duration::from_secs(600)))
//!     .timeout(Duration::from_secs(2))
//!     .connect("mongodb://127.0.0.1:27017/app")
//!     .await?;
//! // Create the TTL index now rather than on first use, to see problems at start-up.
//! store.init().await?;
//!
//! // Or from a client you already have (its own timeouts apply; each call is still bounded).
//! let client = sesame_mongodb::mongodb::Client::with_uri_str("mongodb://127.0.0.1:27017")
//!     .await
//!     .map_err(|e| sesame_core::Error::backend("mongodb", e))?;
//! let store = MongoStore::new(client.database("app"));
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! The driver is re-exported as [`mongodb`], so one dependency is enough. It is built with TLS
//! (rustls with the ring provider, for `tls=true` URLs) but without the DNS resolver; enable this
//! crate's `dns-resolver` feature for `mongodb+srv://` URLs (MongoDB Atlas).
#![forbid(unsafe_code)]

mod convert;

use std::future::{Future, IntoFuture};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteError, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use sesame_core::serde_json::Value;
use sesame_core::time::OffsetDateTime;
use sesame_core::{
    COOKIE_KEY, Capabilities, CookieState, Error, META_KEY, Patch, Record, Result, SessionId,
    SessionStore, Swap,
};

pub use mongodb;

const STORE_NAME: &str = "mongodb";

/// The collection connect-mongo uses by default.
pub const DEFAULT_COLLECTION: &str = "sessions";

/// The top-level field of a session document that holds the id of the user logged in to the
/// session (a copy of the record's `sesame.user`), absent when nobody is: what
/// [`user_sessions`](SessionStore::user_sessions) queries, under a sparse index. See
/// [Sessions of a user](crate#sessions-of-a-user).
pub const USER_FIELD: &str = "user";

/// How long a browser-session record (one whose cookie has no `expires`) lives: 14 days, as
/// connect-mongo's default `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// The default bound on each round trip to MongoDB.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default server selection timeout of a client the store creates from a URL: shorter than
/// [`DEFAULT_TIMEOUT`], so that an unreachable server is reported with the driver's own error
/// (which says what it tried) rather than a bare timeout.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// The default TCP connect timeout of a client the store creates from a URL (the driver's own
/// default is 10 seconds).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The default period of [`AutoRemove::Interval`]'s deletes: 10 minutes, as connect-mongo's
/// `autoRemoveInterval`.
pub const DEFAULT_REMOVE_INTERVAL: Duration = Duration::from_secs(600);

/// The error code MongoDB returns for a duplicate key.
const DUPLICATE_KEY: i32 = 11000;

/// How many times a read-and-conditional-write is retried when other writes keep changing the
/// session in between. Every round lets at least one writer through, so this is only reached
/// under a pathological storm of writes to one session.
const MAX_ATTEMPTS: u32 = 1000;

/// How many locks the writes of this process queue on (by session id), see [`MongoStore::turn`].
const STRIPES: usize = 64;

/// How expired session documents are removed from the collection (connect-mongo's `autoRemove`).
///
/// Whatever the choice, an expired session is never returned: reads filter on `expires`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AutoRemove {
    /// A TTL index on `expires` with `expireAfterSeconds: 0`, created when the store is first used
    /// (or by [`MongoStore::init`]): MongoDB deletes expired documents itself, when its TTL monitor
    /// runs (every 60 seconds by default). The default, and connect-mongo's.
    #[default]
    Native,
    /// A background task deletes expired documents at this period (see
    /// [`DEFAULT_REMOVE_INTERVAL`]). For deployments where the application may not create indexes.
    /// The task ends when the store (every clone of it) is dropped.
    Interval(Duration),
    /// Nothing is removed by the store: you manage the index or the cleanup yourself (call
    /// [`MongoStore::delete_expired`] when you see fit).
    Disabled,
}

/// A session store in a MongoDB collection, in connect-mongo's layout. Cloning it is cheap and
/// shares the connection pool.
#[derive(Clone)]
pub struct MongoStore {
    inner: Arc<Inner>,
}

struct Inner {
    collection: Collection<Document>,
    stringify: bool,
    auto_remove: AutoRemove,
    touch_after: Option<Duration>,
    default_ttl: Duration,
    timeout: Duration,
    /// Set once the TTL index has been created (or is not wanted). Until then every call tries to
    /// create it, so a store built while the server was down gets its index once the server is up.
    prepared: AtomicBool,
    /// Set once the interval remover has been spawned. It is spawned on first use when the store
    /// was built outside a tokio runtime.
    remover_started: AtomicBool,
    /// Read-and-conditional-writes of one session from this process take turns on one of these
    /// (picked by the id's hash), so that they do not keep invalidating each other's reads and
    /// retrying. Correctness does not depend on them: the conditional write on the server is what
    /// makes the change atomic, also against other processes.
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

/// What one round of a read-and-conditional-write decided.
// Returned once per round and moved straight into the write: boxing the record would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Step<T> {
    /// Nothing to write; the operation's result.
    Done(T),
    /// Write `record` (and, if given, move `expires`), then return `then`.
    Write {
        record: Record,
        expires: Option<OffsetDateTime>,
        then: T,
    },
}

/// Writes to one session kept changing it between our read and our write: given up after
/// [`MAX_ATTEMPTS`] rounds. Reported as the source of an [`Error::Backend`].
#[derive(Debug, thiserror::Error)]
#[error("the session kept changing under {attempts} read-and-write attempts")]
struct Contention {
    attempts: u32,
}

impl MongoStore {
    /// A store with the defaults in `database`'s `sessions` collection. The client behind
    /// `database` keeps its own settings; every round trip is still bounded by
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(database: Database) -> Self {
        Self::builder().build(database)
    }

    /// A store with the defaults in the `sessions` collection of database `db_name` of `client`.
    pub fn from_client(client: &Client, db_name: &str) -> Self {
        Self::builder().build(client.database(db_name))
    }

    /// A store with the defaults, on a new client for `url`, in the URL's database (or `test`, as
    /// the Node driver defaults). See [`MongoStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder().connect(url).await
    }

    /// Configures a store.
    pub fn builder() -> MongoStoreBuilder {
        MongoStoreBuilder {
            collection: DEFAULT_COLLECTION.to_owned(),
            stringify: true,
            auto_remove: AutoRemove::Native,
            touch_after: None,
            default_ttl: DEFAULT_TTL,
            timeout: DEFAULT_TIMEOUT,
            server_selection_timeout: DEFAULT_SERVER_SELECTION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The collection the sessions live in, to query or index it yourself (an admin view, say).
    pub fn collection(&self) -> &Collection<Document> {
        &self.inner.collection
    }

    /// Creates the indexes now (with [`AutoRemove::Native`]: the TTL index on `expires` and the
    /// [user index](crate#sessions-of-a-user) on `user`) rather than on first use, and checks that
    /// the server answers, so that an unreachable server, a missing permission or a conflicting
    /// index on `expires` or `user` shows at start-up. Calling it is optional.
    ///
    /// On first use, a conflicting index or a refused `createIndexes` is only logged: sessions keep
    /// working (reads filter on `expires` anyway), but expired documents then stay until removed,
    /// and [`user_sessions`](SessionStore::user_sessions) scans the collection.
    pub async fn init(&self) -> Result<()> {
        self.start_remover();
        if self.inner.auto_remove == AutoRemove::Native {
            self.create_ttl_index().await?;
            self.create_user_index().await?;
        } else {
            let database = self.inner.collection.client().database("admin");
            self.bounded(database.run_command(doc! {"ping": 1}).into_future())
                .await?;
        }
        self.inner.prepared.store(true, Ordering::Release);
        Ok(())
    }

    /// Deletes every document past its `expires` now and returns how many were deleted. The
    /// [`AutoRemove::Interval`] task calls this periodically.
    pub async fn delete_expired(&self) -> Result<u64> {
        delete_expired(&self.inner).await
    }

    /// Runs one round trip within the store's timeout, mapping the driver's error.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        bounded(&self.inner, operation).await
    }

    /// connect-mongo's index: MongoDB deletes a document once its `expires` has passed.
    /// Concurrent first calls may all send it; creating an identical index is a no-op.
    async fn create_ttl_index(&self) -> Result<()> {
        let index = IndexModel::builder()
            .keys(doc! {"expires": 1})
            .options(IndexOptions::builder().expire_after(Duration::ZERO).build())
            .build();
        self.bounded(self.inner.collection.create_index(index).into_future())
            .await?;
        Ok(())
    }

    /// The user index: `{user: 1}`, sparse, so that the anonymous sessions (most of them, and
    /// without the field) stay out of it and cost it nothing. Created alongside the TTL index, so
    /// only when the store creates indexes at all ([`AutoRemove::Native`]); as with the TTL index,
    /// creating an identical one again is a no-op.
    async fn create_user_index(&self) -> Result<()> {
        let index = IndexModel::builder()
            .keys(doc! {USER_FIELD: 1})
            .options(IndexOptions::builder().sparse(true).build())
            .build();
        self.bounded(self.inner.collection.create_index(index).into_future())
            .await?;
        Ok(())
    }

    fn stripe(&self, id: &SessionId) -> &tokio::sync::Mutex<()> {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in id.as_str().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        &self.inner.stripes[(hash % self.inner.stripes.len() as u64) as usize]
    }

    /// Waits for this process's turn to read and write the session `id` (see `Inner::stripes`),
    /// at most one timeout: past it the write goes ahead without its turn, which costs retries,
    /// not correctness, so a stalled write never holds up the others for longer.
    async fn turn(&self, id: &SessionId) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        tokio::time::timeout(self.inner.timeout, self.stripe(id).lock())
            .await
            .ok()
    }

    /// What must be in place before the first call: the TTL index, the interval remover.
    async fn prepare(&self) -> Result<()> {
        if self.inner.prepared.load(Ordering::Acquire) {
            return Ok(());
        }
        self.start_remover();
        if self.inner.auto_remove == AutoRemove::Native {
            match self.create_ttl_index().await {
                Ok(()) => {}
                // The server answered but refused (an index on `expires` with other options, no
                // permission): sessions still work, so do not fail every request over it.
                Err(error) if server_refused(&error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "could not create the TTL index on `expires` of the sessions collection; \
                         expired sessions will not be removed by MongoDB"
                    );
                }
                // Unreachable: fail this call, try again on the next.
                Err(error) => return Err(error),
            }
            match self.create_user_index().await {
                Ok(()) => {}
                // As above: listing a user's sessions still works, by a collection scan.
                Err(error) if server_refused(&error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "could not create the index on `user` of the sessions collection; \
                         listing a user's sessions will scan the collection"
                    );
                }
                Err(error) => return Err(error),
            }
        }
        self.inner.prepared.store(true, Ordering::Release);
        Ok(())
    }

    fn start_remover(&self) {
        let AutoRemove::Interval(period) = self.inner.auto_remove else {
            return;
        };
        if period.is_zero()
            || self.inner.remover_started.load(Ordering::Relaxed)
            || self.inner.remover_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to spawn on: try again on the next call.
            self.inner.remover_started.store(false, Ordering::Release);
            return;
        };
        // The task holds only a weak reference, upgraded for the length of one delete: once every
        // clone of the store is dropped the upgrade fails and the task ends.
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                match delete_expired(&inner).await {
                    Ok(0) => {}
                    Ok(removed) => {
                        tracing::debug!(removed, "removed expired sessions from MongoDB");
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = &error as &dyn std::error::Error,
                            "removing expired sessions from MongoDB failed"
                        );
                    }
                }
            }
        });
    }

    /// When a record written now with `cookie` expires (the document's `expires`): the cookie's
    /// `expires`, or now + the default TTL, but never past the cookie's
    /// [`deadline`](CookieState::deadline) (the layer's idle and absolute timeouts), so that
    /// MongoDB lets the session go when the layer would refuse it.
    fn expiry_of(&self, cookie: &CookieState, now: OffsetDateTime) -> OffsetDateTime {
        cookie.store_expiry(now, self.inner.default_ttl)
    }

    /// The document stored for `record`: connect-mongo's fields, in its order, then the user
    /// logged in to the session, if any (the user index).
    fn document(&self, id: &SessionId, record: &Record, now: OffsetDateTime) -> Result<Document> {
        let expires = self.expiry_of(record.cookie(), now);
        let mut document = doc! {
            "_id": id.as_str(),
            "session": convert::encode(record, self.inner.stringify)?,
            "expires": convert::to_bson_date(expires),
        };
        if self.inner.touch_after.is_some() {
            document.insert("lastModified", convert::to_bson_date(now));
        }
        if let Some(user) = record.user() {
            document.insert(USER_FIELD, user);
        }
        Ok(document)
    }

    /// Every live document matching `filter`, with its id, projected. Documents whose `_id` is not
    /// a session id (a foreign document in the collection) are skipped: no session can be
    /// addressed by them.
    async fn live_documents(
        &self,
        filter: Document,
        projection: Document,
    ) -> Result<Vec<(SessionId, Document)>> {
        self.prepare().await?;
        let filter = live(filter, sesame_core::now());
        let collection = &self.inner.collection;
        let documents: Vec<Document> = self
            .bounded(async move {
                collection
                    .find(filter)
                    .projection(projection)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        Ok(documents
            .into_iter()
            .filter_map(|document| match document.get("_id") {
                Some(Bson::String(id)) => match SessionId::parse(id) {
                    Ok(id) => Some((id, document)),
                    Err(error) => {
                        tracing::warn!(%error, "skipping a document whose _id is not a session id");
                        None
                    }
                },
                _ => {
                    tracing::warn!("skipping a document whose _id is not a string");
                    None
                }
            })
            .collect())
    }

    /// Reads the live session under `id`, lets `step` decide, and writes its record only if the
    /// stored `session` is still the one read (compare-and-swap on the whole field); when another
    /// write came in between, starts over. `missing` is the result when there is no live session.
    ///
    /// This is how patches and compare-and-swap work on a stringified session, which MongoDB cannot
    /// edit in place. It never inserts: a session destroyed meanwhile stays destroyed.
    async fn read_modify_write<T>(
        &self,
        id: &SessionId,
        missing: T,
        mut step: impl FnMut(Record) -> Result<Step<T>>,
    ) -> Result<T> {
        let collection = &self.inner.collection;
        for attempt in 0..MAX_ATTEMPTS {
            let found = self
                .bounded(
                    collection
                        .find_one(live_id(id, sesame_core::now()))
                        .projection(doc! {"_id": 0, "session": 1})
                        .into_future(),
                )
                .await?;
            let Some(mut found) = found else {
                return Ok(missing);
            };
            let Some(stored) = found.remove("session") else {
                return Err(convert::missing_session());
            };
            let record = convert::decode_session(&stored)?;
            let (record, expires, then) = match step(record)? {
                Step::Done(result) => return Ok(result),
                Step::Write {
                    record,
                    expires,
                    then,
                } => (record, expires, then),
            };
            let now = sesame_core::now();
            let mut filter = live_id(id, now);
            same_session(&mut filter, stored);
            let mut set = doc! {"session": convert::encode(&record, self.inner.stringify)?};
            if let Some(expires) = expires {
                set.insert("expires", convert::to_bson_date(expires));
                if self.inner.touch_after.is_some() {
                    set.insert("lastModified", convert::to_bson_date(now));
                }
            }
            // The whole record is known here, so the user index is set from it, whatever the
            // change was: it matches the session written, in the same atomic update.
            let mut update = Document::new();
            match record.user() {
                Some(user) => {
                    set.insert(USER_FIELD, user);
                }
                None => {
                    update.insert("$unset", doc! {USER_FIELD: ""});
                }
            }
            update.insert("$set", set);
            let result = self
                .bounded(collection.update_one(filter, update).into_future())
                .await?;
            if result.matched_count == 1 {
                return Ok(then);
            }
            backoff(attempt).await;
        }
        Err(Error::backend(
            STORE_NAME,
            Contention {
                attempts: MAX_ATTEMPTS,
            },
        ))
    }

    /// The one-round-trip patch of a sub-document session: `$set`/`$unset` on `session.<key>`.
    /// `Ok(false)` when nothing matched: no live session, or a session stored as a string.
    async fn patch_in_place(
        &self,
        id: &SessionId,
        patch: &Patch,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut set = Document::new();
        for (key, value) in patch.sets() {
            if key != COOKIE_KEY {
                set.insert(format!("session.{key}"), convert::json_to_bson(value));
            }
        }
        set.insert("session.cookie", convert::cookie_document(patch.cookie())?);
        set.insert("expires", convert::to_bson_date(expires));
        if self.inner.touch_after.is_some() {
            set.insert("lastModified", convert::to_bson_date(now));
        }
        let mut unset: Document = patch
            .data_removals()
            .map(|key| (format!("session.{key}"), Bson::String(String::new())))
            .collect();
        // The user index follows the meta object when the patch changes it; a patch of other keys
        // leaves the field as the last write set it.
        match patch.user_change() {
            None => {}
            Some(Some(user)) => {
                set.insert(USER_FIELD, user);
            }
            Some(None) => {
                unset.insert(USER_FIELD, "");
            }
        }
        let mut update = doc! {"$set": set};
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        let mut filter = live_id(id, now);
        filter.insert("session", doc! {"$type": "object"});
        let result = self
            .bounded(
                self.inner
                    .collection
                    .update_one(filter, update)
                    .into_future(),
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    /// The one-round-trip compare-and-swap of a key of a sub-document session: an update
    /// conditional on `session.<key>`. `Ok(false)` when nothing matched: the value differs (as
    /// MongoDB compares), no live session, or a session stored as a string.
    async fn swap_in_place(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<bool> {
        let path = format!("session.{key}");
        let mut filter = live_id(id, sesame_core::now());
        filter.insert("session", doc! {"$type": "object"});
        match expected {
            None => {
                filter.insert(path.clone(), doc! {"$exists": false});
            }
            Some(value) => {
                // An expression compares the whole value (a query would also match an array
                // holding it); `$literal` keeps a document with `$` keys a value.
                filter.insert(path.clone(), doc! {"$exists": true});
                filter.insert(
                    "$expr",
                    doc! {"$eq": [format!("${path}"), {"$literal": convert::json_to_bson(value)}]},
                );
            }
        }
        let (mut set, mut unset) = (Document::new(), Document::new());
        match new {
            Some(value) => set.insert(path, convert::json_to_bson(value)),
            None => unset.insert(path, ""),
        };
        // Swapping the meta object moves the session in the user index, in the same update.
        if key == META_KEY {
            match new
                .and_then(|meta| meta.get("user"))
                .and_then(Value::as_str)
            {
                Some(user) => set.insert(USER_FIELD, user),
                None => unset.insert(USER_FIELD, ""),
            };
        }
        let mut update = Document::new();
        if !set.is_empty() {
            update.insert("$set", set);
        }
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        let result = self
            .bounded(
                self.inner
                    .collection
                    .update_one(filter, update)
                    .into_future(),
            )
            .await?;
        Ok(result.matched_count == 1)
    }
}

/// Whether `key` can be addressed as `session.<key>` in an update or an expression: MongoDB field
/// paths split on `.`, treat a leading `$` as an operator, and have no empty segments.
fn addressable(key: &str) -> bool {
    !key.is_empty() && !key.starts_with('$') && !key.contains(['.', '\0']) && key != COOKIE_KEY
}

/// `filter` restricted to live documents: connect-mongo's read filter, in which a document without
/// `expires` never expires.
fn live(mut filter: Document, now: OffsetDateTime) -> Document {
    filter.insert(
        "$or",
        vec![
            Bson::Document(doc! {"expires": {"$exists": false}}),
            Bson::Document(doc! {"expires": {"$gt": convert::to_bson_date(now)}}),
        ],
    );
    filter
}

/// Adds to `filter` that the document's `session` is still `stored`, as read.
fn same_session(filter: &mut Document, stored: Bson) {
    match stored {
        // A string compares as itself in a query.
        Bson::String(_) => {
            filter.insert("session", stored);
        }
        // A document in a query filter would be read as operators if a key starts with `$`;
        // `$literal` in an expression compares it as a value, whatever its keys.
        other => {
            filter.insert("$expr", doc! {"$eq": ["$session", {"$literal": other}]});
        }
    }
}

/// The live document of `id`.
fn live_id(id: &SessionId, now: OffsetDateTime) -> Document {
    live(doc! {"_id": id.as_str()}, now)
}

/// A short random pause after losing a compare-and-swap round, growing with the rounds lost, so
/// that writers racing on one session spread out instead of colliding again at once.
async fn backoff(attempt: u32) {
    let ceiling_micros = 200 * u64::from(attempt.min(50) + 1);
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % ceiling_micros;
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}

async fn bounded<T>(
    inner: &Inner,
    operation: impl Future<Output = mongodb::error::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(inner.timeout, operation).await {
        Ok(result) => result.map_err(map_error),
        Err(_) => Err(Error::Timeout {
            store: STORE_NAME,
            timeout: inner.timeout,
        }),
    }
}

/// The driver's error by meaning: a document it could not encode is an encode error, a duplicate
/// key a collision, the rest a backend failure. The driver's error is kept as the source.
fn map_error(error: mongodb::error::Error) -> Error {
    if matches!(&*error.kind, ErrorKind::BsonSerialization(_)) {
        return Error::encode(error);
    }
    Error::backend(STORE_NAME, error)
}

async fn delete_expired(inner: &Inner) -> Result<u64> {
    // connect-mongo's interval delete.
    let filter = doc! {"expires": {"$lt": convert::to_bson_date(sesame_core::now())}};
    let result = bounded(inner, inner.collection.delete_many(filter).into_future()).await?;
    Ok(result.deleted_count)
}

/// The driver's error inside a store error, if any.
fn driver_error(error: &Error) -> Option<&mongodb::error::Error> {
    let Error::Backend { source, .. } = error else {
        return None;
    };
    source.downcast_ref::<mongodb::error::Error>()
}

fn is_duplicate_key(error: &Error) -> bool {
    driver_error(error).is_some_and(|error| match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(WriteError { code, .. })) => {
            *code == DUPLICATE_KEY
        }
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    })
}

/// Whether the server answered with a refusal (as opposed to not answering).
fn server_refused(error: &Error) -> bool {
    driver_error(error).is_some_and(|error| {
        matches!(
            &*error.kind,
            ErrorKind::Command(_) | ErrorKind::Write(_) | ErrorKind::Authentication { .. }
        )
    })
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("collection", &self.inner.collection.namespace())
            .field("stringify", &self.inner.stringify)
            .field("auto_remove", &self.inner.auto_remove)
            .field("touch_after", &self.inner.touch_after)
            .field("default_ttl", &self.inner.default_ttl)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`MongoStore`]: the options of connect-mongo, plus the bounds on each call.
#[derive(Debug, Clone)]
pub struct MongoStoreBuilder {
    collection: String,
    stringify: bool,
    auto_remove: AutoRemove,
    touch_after: Option<Duration>,
    default_ttl: Duration,
    timeout: Duration,
    server_selection_timeout: Duration,
    connect_timeout: Duration,
}

impl MongoStoreBuilder {
    /// The collection of the sessions (default `sessions`, connect-mongo's `collectionName`).
    #[must_use]
    pub fn collection(mut self, name: impl Into<String>) -> Self {
        self.collection = name.into();
        self
    }

    /// Whether the record is stored as a JSON string (`true`, the default, connect-mongo's
    /// `stringify: true`) or as a sub-document (`false`), which MongoDB queries can look into and
    /// which patches update in one round trip. Either form is read, whatever this setting, so
    /// switching does not lose sessions; a session is rewritten in the configured form on its next
    /// save.
    #[must_use]
    pub fn stringify(mut self, stringify: bool) -> Self {
        self.stringify = stringify;
        self
    }

    /// How expired documents are removed (default [`AutoRemove::Native`]).
    #[must_use]
    pub fn auto_remove(mut self, auto_remove: AutoRemove) -> Self {
        self.auto_remove = auto_remove;
        self
    }

    /// Skip a touch that comes within `period` of the last write of the session (connect-mongo's
    /// `touchAfter`), sparing a write per request for sessions that are read but not changed.
    /// Writes then record a `lastModified` date. Choose a period well under the sessions' max age:
    /// a skipped touch does not move the expiry. Zero (the default) touches every time.
    #[must_use]
    pub fn touch_after(mut self, period: Duration) -> Self {
        self.touch_after = (!period.is_zero()).then_some(period);
        self
    }

    /// How long a record without a cookie expiry (a browser-session cookie) lives after its last
    /// write (default 14 days, connect-mongo's `ttl`).
    #[must_use]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The bound on each round trip to MongoDB (default 5 seconds); past it the call fails with
    /// [`Error::Timeout`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the driver looks for a usable server before failing (default 3 seconds). It
    /// applies to the client [`connect`](Self::connect) creates, unless the URL sets
    /// `serverSelectionTimeoutMS`; a client you build yourself keeps its own setting (the driver's
    /// default is 30 seconds), and [`timeout`](Self::timeout) still bounds each call.
    #[must_use]
    pub fn server_selection_timeout(mut self, timeout: Duration) -> Self {
        self.server_selection_timeout = timeout;
        self
    }

    /// How long opening a connection may take (default 2 seconds). It applies to the client
    /// [`connect`](Self::connect) creates, unless the URL sets `connectTimeoutMS`.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The store, in `database`. Nothing is sent to the server until the first call (or
    /// [`MongoStore::init`]).
    pub fn build(self, database: Database) -> MongoStore {
        let store = MongoStore {
            inner: Arc::new(Inner {
                collection: database.collection(&self.collection),
                stringify: self.stringify,
                auto_remove: self.auto_remove,
                touch_after: self.touch_after,
                default_ttl: self.default_ttl,
                timeout: self.timeout,
                prepared: AtomicBool::new(false),
                remover_started: AtomicBool::new(false),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            }),
        };
        store.start_remover();
        store
    }

    /// The store, on a new client for `url` (a `mongodb://` URL; `mongodb+srv://` needs the
    /// `dns-resolver` feature), in the URL's database or `test`. The URL is parsed, not dialed:
    /// an unreachable server shows on the first call (or [`MongoStore::init`]), and the store
    /// works once the server is up.
    pub async fn connect(self, url: &str) -> Result<MongoStore> {
        let parse = async {
            let mut options = ClientOptions::parse(url).await?;
            options
                .server_selection_timeout
                .get_or_insert(self.server_selection_timeout);
            options.connect_timeout.get_or_insert(self.connect_timeout);
            Client::with_options(options)
        };
        let client = match tokio::time::timeout(self.timeout, parse).await {
            Ok(client) => client.map_err(map_error)?,
            Err(_) => {
                return Err(Error::Timeout {
                    store: STORE_NAME,
                    timeout: self.timeout,
                });
            }
        };
        let database = client
            .default_database()
            .unwrap_or_else(|| client.database("test"));
        Ok(self.build(database))
    }
}

impl SessionStore for MongoStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        self.prepare().await?;
        let filter = live_id(id, sesame_core::now());
        let found = self
            .bounded(
                self.inner
                    .collection
                    .find_one(filter)
                    .projection(doc! {"_id": 0, "session": 1})
                    .into_future(),
            )
            .await?;
        found.map(|document| convert::decode(&document)).transpose()
    }

    /// An upsert of the whole document (connect-mongo's `set`), `user` included, so the user index
    /// follows the record in the same round trip. A record already expired (by its cookie or its
    /// deadline) deletes the document instead.
    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.prepare().await?;
        let now = sesame_core::now();
        if self.expiry_of(record.cookie(), now) <= now {
            // Already expired: writing it would only leave a dead document behind.
            return self.destroy(id).await;
        }
        let document = self.document(id, record, now)?;
        self.bounded(
            self.inner
                .collection
                .replace_one(doc! {"_id": id.as_str()}, document)
                .upsert(true)
                .into_future(),
        )
        .await?;
        Ok(())
    }

    /// One conditional upsert: it replaces a document under `id` only if that one has expired
    /// (the TTL monitor may not have removed it yet) and otherwise inserts, which MongoDB refuses
    /// with a duplicate key error when a live document holds the id. Of concurrent creates of one
    /// id, exactly one wins.
    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.prepare().await?;
        let now = sesame_core::now();
        let document = self.document(id, record, now)?;
        let expired = doc! {
            "_id": id.as_str(),
            "expires": {"$lte": convert::to_bson_date(now)},
        };
        match self
            .bounded(
                self.inner
                    .collection
                    .replace_one(expired, document)
                    .upsert(true)
                    .into_future(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_duplicate_key(&error) => {
                Err(Error::AlreadyExists { store: STORE_NAME })
            }
            Err(error) => Err(error),
        }
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.prepare().await?;
        self.bounded(
            self.inner
                .collection
                .delete_one(doc! {"_id": id.as_str()})
                .into_future(),
        )
        .await?;
        Ok(())
    }

    /// Moves the document's `expires` (connect-mongo's touch), leaving the stored record as it is;
    /// with [`touch_after`](MongoStoreBuilder::touch_after), only when the last write is older than
    /// that period (checked by the server, in the same update).
    ///
    /// The `user` field is left alone too, even when `record` carries the meta object. The index
    /// lives in the session's own document, so it already lives exactly as long as the session
    /// and a touch has nothing to refresh; and the meta object a touch carries was read at the
    /// start of its request, so writing it could undo a login or logout that another request
    /// saved meanwhile, and hide the session from its user's list.
    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.prepare().await?;
        let now = sesame_core::now();
        let expires = convert::to_bson_date(self.expiry_of(record.cookie(), now));
        let mut filter = live_id(id, now);
        let mut set = doc! {"expires": expires};
        if let Some(period) = self.inner.touch_after {
            let stale = convert::to_bson_date(now - period);
            // `live` used `$or`; a second condition of that shape goes under `$and`.
            filter.insert(
                "$and",
                vec![Bson::Document(doc! {"$or": [
                    {"lastModified": {"$exists": false}},
                    {"lastModified": {"$lte": stale}},
                ]})],
            );
            set.insert("lastModified", convert::to_bson_date(now));
        }
        self.bounded(
            self.inner
                .collection
                .update_one(filter, doc! {"$set": set})
                .into_future(),
        )
        .await?;
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

    async fn ids(&self) -> Result<Vec<SessionId>> {
        Ok(self
            .live_documents(doc! {}, doc! {"_id": 1})
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    async fn all(&self) -> Result<Vec<(SessionId, Record)>> {
        self.live_documents(doc! {}, doc! {"_id": 1, "session": 1})
            .await?
            .into_iter()
            .map(|(id, document)| Ok((id, convert::decode(&document)?)))
            .collect()
    }

    async fn len(&self) -> Result<usize> {
        self.prepare().await?;
        let filter = live(doc! {}, sesame_core::now());
        let count = self
            .bounded(self.inner.collection.count_documents(filter).into_future())
            .await?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Deletes every document of the collection (the collection and its index stay).
    async fn clear(&self) -> Result<()> {
        self.prepare().await?;
        self.bounded(self.inner.collection.delete_many(doc! {}).into_future())
            .await?;
        Ok(())
    }

    /// One query on the indexed `user` field (live documents only), then each record is checked:
    /// only those whose own `sesame.user` is `user` are returned. A document whose field says
    /// `user` but whose record does not (an Express app rewrote the session: connect-mongo's `set`
    /// keeps fields it does not know, but may change the record) is stale: its field is removed,
    /// in one more round trip, only when there is such a document and only if its session is still
    /// the one read. A document whose record cannot be decoded is skipped, with a warning: it
    /// cannot be loaded as anyone's session.
    async fn user_sessions(&self, user: &str) -> Result<Vec<(SessionId, Record)>> {
        let documents = self
            .live_documents(doc! {USER_FIELD: user}, doc! {"_id": 1, "session": 1})
            .await?;
        let mut sessions = Vec::with_capacity(documents.len());
        let mut stale = Vec::new();
        for (id, mut document) in documents {
            let Some(stored) = document.remove("session") else {
                // No id in the log: a session id is a credential.
                tracing::warn!("skipping a session document without `session`");
                continue;
            };
            match convert::decode_session(&stored) {
                Ok(record) if record.user() == Some(user) => sessions.push((id, record)),
                Ok(_) => {
                    let mut unchanged = doc! {"_id": id.as_str()};
                    same_session(&mut unchanged, stored);
                    stale.push(Bson::Document(unchanged));
                }
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "skipping a session document that does not decode"
                    );
                }
            }
        }
        if !stale.is_empty() {
            let filter = doc! {USER_FIELD: user, "$or": stale};
            let update = doc! {"$unset": {USER_FIELD: ""}};
            let cleanup = self.inner.collection.update_many(filter, update);
            // Best effort: the answer is already right without it.
            if let Err(error) = self.bounded(cleanup.into_future()).await {
                tracing::debug!(
                    error = &error as &dyn std::error::Error,
                    "could not remove stale `user` fields"
                );
            }
        }
        Ok(sessions)
    }

    /// A sub-document session is patched in place with `$set`/`$unset` in one round trip; a
    /// stringified one is read and written back conditionally (see the crate docs). Either way the
    /// update only matches a live document, so a destroyed session is never brought back, and a
    /// patch whose expiry has passed deletes the session.
    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        self.prepare().await?;
        let now = sesame_core::now();
        let expires = self.expiry_of(patch.cookie(), now);
        if expires <= now {
            let result = self
                .bounded(
                    self.inner
                        .collection
                        .delete_one(live_id(id, now))
                        .into_future(),
                )
                .await?;
            return Ok(result.deleted_count == 1);
        }
        let in_place = !self.inner.stringify
            && patch
                .sets()
                .keys()
                .all(|key| addressable(key) || key == COOKIE_KEY)
            && patch
                .removals()
                .iter()
                .all(|key| addressable(key) || key == COOKIE_KEY);
        if in_place && self.patch_in_place(id, patch, expires, now).await? {
            return Ok(true);
        }
        // A stringified session, a key MongoDB cannot address, or no match in place (no live
        // session, or one still stored as a string): read, apply, write back conditionally.
        let _turn = self.turn(id).await;
        self.read_modify_write(id, false, |mut record| {
            patch.apply_to(&mut record);
            Ok(Step::Write {
                record,
                expires: Some(expires),
                then: true,
            })
        })
        .await
    }

    /// On a sub-document session, one conditional update on `session.<key>`; when it does not
    /// match, or on a stringified session, the session is read, the key compared as JSON (object
    /// key order does not matter), and the record written back only if it is unchanged since the
    /// read. The expiry is left as it is, and so is `lastModified`, so `touch_after` still lets
    /// the next touch through.
    async fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<Swap> {
        self.prepare().await?;
        // Uncontended, a sub-document session takes the one-round-trip conditional update. When
        // another swap of this session is under way in this process, this one is likely to find
        // the value changed: it waits for its turn and reads first, as a refused conditional
        // update costs a write on some servers while a read is cheap everywhere.
        let (_turn, contended) = match self.stripe(id).try_lock() {
            Ok(turn) => (Some(turn), false),
            Err(_) => (self.turn(id).await, true),
        };
        if !contended
            && !self.inner.stringify
            && addressable(key)
            && self.swap_in_place(id, key, expected, new).await?
        {
            return Ok(Swap::Done);
        }
        self.read_modify_write(id, Swap::Missing, |mut record| {
            let current = record.data().get(key);
            if current != expected {
                return Ok(Step::Done(Swap::Changed(current.cloned())));
            }
            match new {
                Some(value) => record.data_mut().insert(key.to_owned(), value.clone()),
                None => record.data_mut().remove(key),
            };
            Ok(Step::Write {
                record,
                expires: None,
                then: Swap::Done,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressable_keys_are_plain_field_names() {
        for key in ["views", "user_id", "0", "a$b", "ünï"] {
            assert!(addressable(key), "{key}");
        }
        for key in ["", "$where", "a.b", "nul\0", COOKIE_KEY] {
            assert!(!addressable(key), "{key:?}");
        }
    }

    #[test]
    fn live_filter_is_connect_mongos() {
        let now = sesame_core::now();
        let id = SessionId::generate();
        assert_eq!(
            live_id(&id, now),
            doc! {
                "_id": id.as_str(),
                "$or": [
                    {"expires": {"$exists": false}},
                    {"expires": {"$gt": convert::to_bson_date(now)}},
                ],
            }
        );
    }

    #[test]
    fn builder_defaults_are_connect_mongos() {
        let builder = MongoStore::builder();
        assert_eq!(builder.collection, "sessions");
        assert!(builder.stringify);
        assert_eq!(builder.auto_remove, AutoRemove::Native);
        assert_eq!(builder.touch_after, None);
        assert_eq!(builder.default_ttl, Duration::from_secs(1_209_600));
        assert_eq!(builder.timeout, DEFAULT_TIMEOUT);
        assert_eq!(builder.touch_after(Duration::ZERO).touch_after, None);
    }
}
