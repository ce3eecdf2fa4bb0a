//! The store contract, checked on a real Redis (`REDIS_URL`), also through the client-side cache,
//! and on a real 3-master Redis Cluster
//! (`REDIS_CLUSTER_URLS`, started by `.ci/redis-cluster.sh start`). Every test gets its own key
//! prefix, so they run in parallel on one server.
#![allow(clippy::unwrap_used)]

mod common;

use sesame_conformance::Fixture;
use sesame_core::SessionId;
use sesame_redis::RedisStore;
use sesame_redis::redis;

/// Bytes that are not an express-session record.
const CORRUPT: &str = "{not json";

/// One Redis.
struct Single;

impl Fixture for Single {
    type Store = RedisStore;

    async fn store(&self) -> Option<RedisStore> {
        common::single_store(|builder| builder).await
    }

    async fn write_corrupt_record(&self, store: &RedisStore, id: &SessionId) -> bool {
        let mut conn = common::raw(&common::redis_url()).await;
        common::cmd::<()>(&mut conn, redis::cmd("SET").arg(store.key(id)).arg(CORRUPT)).await;
        true
    }
}

/// One Redis, through the store's client-side cache (records kept in memory, invalidated by
/// Redis' tracking notices).
struct ClientCached;

impl Fixture for ClientCached {
    type Store = RedisStore;

    async fn store(&self) -> Option<RedisStore> {
        common::single_store(|builder| builder.client_side_cache(1000)).await
    }

    async fn write_corrupt_record(&self, store: &RedisStore, id: &SessionId) -> bool {
        Single.write_corrupt_record(store, id).await
    }
}

/// A Redis Cluster of three masters.
struct Cluster;

impl Fixture for Cluster {
    type Store = RedisStore;

    async fn store(&self) -> Option<RedisStore> {
        common::cluster_store(|builder| builder).await
    }

    async fn write_corrupt_record(&self, store: &RedisStore, id: &SessionId) -> bool {
        let mut conn = common::raw_cluster().await;
        common::cmd::<()>(&mut conn, redis::cmd("SET").arg(store.key(id)).arg(CORRUPT)).await;
        true
    }
}

mod single {
    sesame_conformance::store_tests!(super::Single);
}

mod client_cached {
    sesame_conformance::store_tests!(super::ClientCached);
}

mod cluster {
    sesame_conformance::store_tests!(super::Cluster);
}
