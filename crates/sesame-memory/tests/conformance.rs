//! The store contract, checked on `MemoryStore`.

use sesame_conformance::Fixture;
use sesame_memory::MemoryStore;

struct Memory;

impl Fixture for Memory {
    type Store = MemoryStore;

    async fn store(&self) -> Option<MemoryStore> {
        Some(MemoryStore::new())
    }
    // MemoryStore keeps typed records, so there is no corrupt encoding to inject: the
    // corrupt-record check passes trivially for it.
}

sesame_conformance::store_tests!(Memory);
