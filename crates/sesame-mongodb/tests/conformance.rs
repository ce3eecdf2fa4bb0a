//! The sesame store conformance suite against a MongoDB-wire server (`MONGODB_URL`, by default the
//! one `.ci/mongodb.sh start` runs), in both layouts of the `session` field. Each test gets a
//! collection of its own.
#![allow(clippy::unwrap_used)]

mod common;

use sesame_conformance::Fixture;
use sesame_core::SessionId;
use sesame_mongodb::MongoStore;
use sesame_mongodb::mongodb::bson::{DateTime, doc};

/// A fresh store in a collection of its own; `stringify` picks the layout of `session`.
struct Mongo {
    stringify: bool,
}

impl Fixture for Mongo {
    type Store = MongoStore;

    async fn store(&self) -> Option<MongoStore> {
        common::connect(common::builder().stringify(self.stringify)).await
    }

    async fn write_corrupt_record(&self, store: &MongoStore, id: &SessionId) -> bool {
        let in_an_hour = DateTime::from_millis(DateTime::now().timestamp_millis() + 3_600_000);
        let session = if self.stringify {
            "{not json".into()
        } else {
            sesame_mongodb::mongodb::bson::Bson::Int32(42)
        };
        store
            .collection()
            .insert_one(doc! {"_id": id.as_str(), "expires": in_an_hour, "session": session})
            .await
            .unwrap();
        true
    }
}

/// connect-mongo's default layout: the record as a JSON string.
mod stringified {
    use super::Mongo;
    sesame_conformance::store_tests!(Mongo { stringify: true });
}

/// `stringify(false)`: the record as a sub-document, patched in place.
mod sub_document {
    use super::Mongo;
    sesame_conformance::store_tests!(Mongo { stringify: false });
}
