//! # axum-sesame: express-session for axum
//!
//! A session layer and a [`Session`] extractor for axum 0.8, with express-session's options and
//! behaviour, its cookie and record formats (a Node app and a Rust app can share sessions), and
//! stores picked by cargo feature.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use axum_sesame::{Session, SessionError, SessionLayer};
//!
//! async fn counter(session: Session) -> Result<String, SessionError> {
//!     let views: u64 = session.get("views")?.unwrap_or(0) + 1;
//!     session.insert("views", views)?;
//!     Ok(format!("views: {views}"))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let sessions = SessionLayer::builder()
//!         .secret(std::env::var("SESSION_SECRET")?)
//!         .build()?; // the memory store by default
//!     let app = Router::new().route("/", get(counter)).layer(sessions);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! ## Behaviour
//!
//! Per request, as express-session decides it:
//!
//! - no cookie, or a cookie whose signature fails under every secret, or an id the store does not
//!   know: a new session with a new id (a forged or planted id is never adopted, and a bad signature
//!   costs no store round trip);
//! - the store is read only when a handler extracts [`Session`] (or [`Flash`]);
//! - the session is saved when modified, or always with `resave`, or when new with
//!   `save_uninitialized`; a loaded, unmodified session is touched instead (its expiry moves);
//! - the cookie is sent for a new session that is saved (`save_uninitialized` or modified), on every
//!   response with `rolling`, and for an existing session whose data changed when it has an expiry;
//!   never a `Secure` cookie over plain http;
//! - the save happens before the response is returned.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `memory` | yes | [`MemoryStore`], the default store, and [`CachingStore`], a memory cache in front of any store |
//! | `redis` | no | `RedisStore` and the `sesame-redis` crate as `axum_sesame::redis`: connect-redis's format, on Redis or a Redis Cluster |
//! | `mongodb` | no | `MongoStore` and the `sesame-mongodb` crate as `axum_sesame::mongodb`: connect-mongo's layout |
//! | `postgres` | no | `PostgresStore` and the `sesame-postgres` crate as `axum_sesame::postgres`: connect-pg-simple's table, on sqlx |
#![forbid(unsafe_code)]

mod config;
mod cookies;
mod error;
mod flash;
mod guard;
mod layer;
mod session;
mod users;
mod verified;

pub use config::{
    DEFAULT_STORE_TIMEOUT, OnCorruptRecord, OnStoreError, SessionLayerBuilder, Unset,
};
pub use error::{ConfigError, SessionError, SessionRejection};
pub use flash::{FLASH_KEY, Flash};
pub use layer::{Https, ResponseFuture, SessionLayer, SessionService};
pub use session::Session;
pub use users::{Login, UserSession, UserSessions};

#[doc(no_inline)]
pub use sesame_core::{
    CookieOptions, DynStore, Expiry, KeyRing, META_KEY, OperationSnapshot, Priority, Record,
    SameSite, SameSitePolicy, Secure, SessionId, SessionMeta, SessionStore, StoreEvent,
    StoreMetrics, StoreObserver, StoreOperation,
};

/// The core crate: record format, store trait, key ring, errors.
pub use sesame_core as core;

#[cfg(feature = "memory")]
#[doc(inline)]
pub use sesame_memory::{CachingStore, MemoryStore};

/// The Redis store crate (feature `redis`): its builder, constants and the `redis` client crate.
#[cfg(feature = "redis")]
pub use sesame_redis as redis;
#[cfg(feature = "redis")]
#[doc(inline)]
pub use sesame_redis::RedisStore;

/// The MongoDB store crate (feature `mongodb`): its builder, options and the `mongodb` driver.
#[cfg(feature = "mongodb")]
pub use sesame_mongodb as mongodb;
#[cfg(feature = "mongodb")]
#[doc(inline)]
pub use sesame_mongodb::MongoStore;

/// The PostgreSQL store crate (feature `postgres`): its builder, the table's SQL and `sqlx`.
#[cfg(feature = "postgres")]
pub use sesame_postgres as postgres;
#[cfg(feature = "postgres")]
#[doc(inline)]
pub use sesame_postgres::PostgresStore;

/// The README's examples, compiled as doc tests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// SECURITY.md's production settings, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../SECURITY.md")]
pub struct SecurityDoctests;
