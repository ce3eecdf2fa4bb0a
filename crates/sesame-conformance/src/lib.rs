//! The conformance suite for sesame session stores.
//!
//! Every store, ours or a third party's, proves it keeps the [`SessionStore`] contract by running
//! these checks against its real backend. A store crate implements [`Fixture`] (how to get a fresh,
//! isolated store) and stamps out one `#[test]` per check with [`store_tests!`]:
//!
//! ```
//! use sesame_conformance::Fixture;
//! # use sesame_core::{Record, Result, SessionId, SessionStore};
//! # use std::{collections::HashMap, sync::{Arc, Mutex}};
//! # #[derive(Clone, Default)]
//! # struct MyStore(Arc<Mutex<HashMap<SessionId, Record>>>);
//! # impl SessionStore for MyStore {
//! #     async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
//! #         let now = sesame_core::now();
//! #         Ok(self.0.lock().unwrap().get(id).filter(|r| !r.is_expired(now)).cloned())
//! #     }
//! #     async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
//! #         if record.is_expired(sesame_core::now()) { self.0.lock().unwrap().remove(id); }
//! #         else { self.0.lock().unwrap().insert(id.clone(), record.clone()); }
//! #         Ok(())
//! #     }
//! #     async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
//! #         let mut map = self.0.lock().unwrap();
//! #         if map.get(id).is_some_and(|r| !r.is_expired(sesame_core::now())) {
//! #             return Err(sesame_core::Error::AlreadyExists { store: "mine" });
//! #         }
//! #         map.insert(id.clone(), record.clone());
//! #         Ok(())
//! #     }
//! #     async fn destroy(&self, id: &SessionId) -> Result<()> { self.0.lock().unwrap().remove(id); Ok(()) }
//! #     async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
//! #         if let Some(r) = self.0.lock().unwrap().get_mut(id) { *r.cookie_mut() = record.cookie().clone(); }
//! #         Ok(())
//! #     }
//! #     fn name(&self) -> &'static str { "mine" }
//! # }
//!
//! struct MyFixture;
//!
//! impl Fixture for MyFixture {
//!     type Store = MyStore;
//!     async fn store(&self) -> Option<MyStore> {
//!         // Connect to the backend here; when it is missing, return
//!         // `sesame_conformance::backend_missing("my backend", &error)`.
//!         Some(MyStore::default())
//!     }
//! }
//!
//! sesame_conformance::store_tests!(MyFixture);
//! # fn main() {}
//! ```
//!
//! The checks are also plain `pub async fn`s in [`checks`], to call from tests of your own.
//!
//! Backends are found at run time (environment variables such as `REDIS_URL`). When a backend is
//! missing, [`backend_missing`] makes the test say loudly that it skipped, except under CI
//! (`CI` set to `true` or `1`), where a missing backend fails the test.
#![forbid(unsafe_code)]

use std::fmt::Display;
use std::future::Future;

pub use sesame_core;
use sesame_core::{SessionId, SessionStore};

pub mod checks;

/// How the suite gets a store to test.
pub trait Fixture: Send + Sync + 'static {
    /// The store under test.
    type Store: SessionStore;

    /// A fresh, empty store, isolated from every other test running at the same time (its own key
    /// prefix, schema, table or collection), or `None` when the backend is missing outside CI
    /// (return [`backend_missing`] then).
    fn store(&self) -> impl Future<Output = Option<Self::Store>> + Send;

    /// Writes bytes that are not a valid express-session record under `id`, straight into the
    /// backend, and returns `true`; or returns `false` when the store keeps typed records that
    /// cannot be corrupt (the corrupt-record check then passes trivially).
    fn write_corrupt_record(
        &self,
        store: &Self::Store,
        id: &SessionId,
    ) -> impl Future<Output = bool> + Send {
        let _ = (store, id);
        async { false }
    }
}

/// Whether the tests run under CI, where a missing backend is a failure, not a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// Reports a backend that could not be reached: under CI this panics (the test fails); elsewhere
/// it prints a loud skip notice and returns `None`.
pub fn backend_missing<T>(backend: &str, error: &dyn Display) -> Option<T> {
    if under_ci() {
        panic!("{backend} is required under CI but could not be reached: {error}");
    }
    eprintln!("SKIPPED: {backend} could not be reached ({error}); start it to run this test");
    None
}

/// The URL of a backend: the environment variable `var` if set, else `default`.
pub fn backend_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// A unique name for one test's namespace (key prefix, schema, collection): `prefix` plus a random
/// suffix, lowercase alphanumeric, so parallel tests never share data.
pub fn unique_name(prefix: &str) -> String {
    let suffix: String = SessionId::generate()
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("{prefix}{}", suffix.to_ascii_lowercase())
}

#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// The runtime each generated test runs on: multi-threaded, so concurrency checks race for real.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the conformance test")
    }
}

/// Stamps out one `#[test]` per conformance check for a [`Fixture`] expression.
///
/// Use it at module level in an integration test: `sesame_conformance::store_tests!(MyFixture);`.
#[macro_export]
macro_rules! store_tests {
    ($fixture:expr) => {
        $crate::__store_tests!(
            $fixture;
            round_trip,
            missing_is_none,
            expired_is_never_returned,
            save_of_expired_record_deletes,
            save_overwrites,
            create_refuses_existing_id,
            concurrent_creates_have_one_winner,
            destroy_is_idempotent,
            touch_moves_expiry_and_keeps_data,
            touch_does_not_resurrect,
            corrupt_record_is_a_decode_error,
            large_record_round_trip,
            listing_sees_live_sessions_only,
            clear_empties_the_store,
            patch_keeps_keys_written_meanwhile,
            concurrent_patches_lose_nothing,
            patch_never_recreates_and_moves_expiry,
            destroy_wins_over_concurrent_patches,
            compare_and_swap_semantics,
            concurrent_increments_all_count,
            deadline_caps_the_stored_expiry,
            user_sessions_lists_a_users_live_sessions,
            user_index_follows_changes_and_destroy,
            user_index_lives_as_long_as_its_sessions,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_tests {
    ($fixture:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::__private::runtime().block_on(async {
                    let fixture = $fixture;
                    if let Some(store) = $crate::Fixture::store(&fixture).await {
                        $crate::checks::$check(&fixture, store).await;
                    }
                });
            }
        )+
    };
}
