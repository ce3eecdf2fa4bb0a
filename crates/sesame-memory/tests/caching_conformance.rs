//! The store contract, checked on `CachingStore` in front of a `MemoryStore`: the cache must keep
//! every promise of the store behind it, races included.

use sesame_conformance::Fixture;
use sesame_memory::{CachingStore, MemoryStore};

struct Cached;

impl Fixture for Cached {
    type Store = CachingStore<MemoryStore>;

    async fn store(&self) -> Option<Self::Store> {
        Some(CachingStore::new(MemoryStore::new()))
    }
}

sesame_conformance::store_tests!(Cached);
