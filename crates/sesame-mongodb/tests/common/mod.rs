//! What the MongoDB tests share: the server's URL, a fresh store per test, raw access.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use sesame_mongodb::mongodb::bson::{Bson, Document, doc};
use sesame_mongodb::{MongoStore, MongoStoreBuilder};

/// The server the tests use: `MONGODB_URL`, or the one `.ci/mongodb.sh start` runs.
pub const DEFAULT_URL: &str = "mongodb://127.0.0.1:27017/?directConnection=true";

/// The database every test's collection lives in.
pub const DATABASE: &str = "sesame_tests";

pub fn url() -> String {
    sesame_conformance::backend_url("MONGODB_URL", DEFAULT_URL)
}

/// A builder for a store in a collection of its own, in [`DATABASE`].
pub fn builder() -> MongoStoreBuilder {
    MongoStore::builder().collection(sesame_conformance::unique_name("sessions_"))
}

/// Builds the store on a client for [`url`] and checks the server answers (creating the TTL index
/// when that is the store's choice); `None` (a loud skip, or a panic under CI) when it does not.
pub async fn connect(builder: MongoStoreBuilder) -> Option<MongoStore> {
    let client =
        match sesame_mongodb::mongodb::Client::with_uri_str(url_with_short_timeouts()).await {
            Ok(client) => client,
            Err(error) => return sesame_conformance::backend_missing("MongoDB", &error),
        };
    let store = builder.build(client.database(DATABASE));
    match store.init().await {
        Ok(()) => Some(store),
        Err(error) => sesame_conformance::backend_missing("MongoDB", &with_sources(&error)),
    }
}

/// An error with its chain of sources, for messages.
pub fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// [`url`] with a short server selection timeout, so that a missing server is reported quickly.
pub fn url_with_short_timeouts() -> String {
    let url = url();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}serverSelectionTimeoutMS=2000&connectTimeoutMS=2000")
}

/// The raw document of a session.
pub async fn raw(store: &MongoStore, id: &str) -> Option<Document> {
    store
        .collection()
        .find_one(doc! {"_id": id})
        .await
        .expect("find_one")
}

/// A BSON date for a time.
pub fn bson_date(at: sesame_core::time::OffsetDateTime) -> Bson {
    Bson::DateTime(sesame_mongodb::mongodb::bson::DateTime::from_millis(
        i64::try_from(at.unix_timestamp_nanos() / 1_000_000).expect("a date in range"),
    ))
}

/// Polls `check` every 100 ms until it is true or `limit` has passed; returns whether it became
/// true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
