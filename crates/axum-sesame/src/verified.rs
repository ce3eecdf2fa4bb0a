//! A bounded memory of cookie values that verified, so a returning client's cookie costs a map
//! lookup instead of an HMAC (which is most of the cost of reading a session from memory).

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::{Mutex, PoisonError};

use sesame_core::{KeyRing, SessionId};

const SHARDS: usize = 16;

/// Entries per shard; a full shard is emptied and starts over, which bounds memory at about
/// `SHARDS * PER_SHARD` cookies (a few MiB) whatever the traffic.
const PER_SHARD: usize = 1024;

/// Cookie values that verified, each with the id its signature proved.
type Shard = Mutex<HashMap<Box<[u8]>, SessionId, RandomState>>;

/// Only values that verified under the key ring are remembered, and each maps to the id its
/// signature proved, so the cache can never accept a value the key ring would refuse: a forged
/// value is checked in full every time. The key ring of a layer never changes, so an entry stays
/// true for the layer's life.
pub(crate) struct VerifiedCookies {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl VerifiedCookies {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            // foldhash, seeded at random: fast on ~80-byte values, and only values that verified
            // are ever inserted, so nobody can fill a shard with crafted collisions.
            hasher: RandomState::default(),
        }
    }

    /// The id inside `value`, from memory or by verifying it with `keys`.
    /// The cookie's raw bytes are the cache key: a remembered value needs no UTF-8 check either.
    pub(crate) fn verify(&self, keys: &KeyRing, value: &[u8]) -> Option<SessionId> {
        if keys.is_private() {
            // Private cookies carry a fresh nonce each time they are set, so few values repeat
            // and decryption is cheap next to the lookup it would save.
            return keys.verify_cookie_value(std::str::from_utf8(value).ok()?);
        }
        let shard = &self.shards[(self.hasher.hash_one(value) >> 32) as usize % SHARDS];
        if let Some(id) = shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(value)
        {
            return Some(id.clone());
        }
        let id = keys.verify_cookie_value(std::str::from_utf8(value).ok()?)?;
        self.insert(shard, value, id.clone());
        Some(id)
    }

    fn insert(&self, shard: &Shard, value: &[u8], id: SessionId) {
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= PER_SHARD {
            map.clear();
        }
        map.insert(value.into(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a test secret that is at least 32 bytes long";

    #[test]
    fn remembers_only_what_verifies() {
        let keys = KeyRing::new([SECRET]).unwrap();
        let cache = VerifiedCookies::new();
        let id = SessionId::generate();
        let value = keys.sign_cookie_value(&id);
        assert_eq!(cache.verify(&keys, value.as_bytes()), Some(id.clone()));
        assert_eq!(
            cache.verify(&keys, value.as_bytes()),
            Some(id),
            "from memory"
        );
        let forged = format!("{}x", &value[..value.len() - 1]);
        assert_eq!(cache.verify(&keys, forged.as_bytes()), None);
        let cached: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(cached, 1, "the forged value was not remembered");
    }

    #[test]
    fn stays_bounded() {
        let keys = KeyRing::new([SECRET]).unwrap();
        let cache = VerifiedCookies::new();
        for _ in 0..SHARDS * PER_SHARD * 2 {
            let id = SessionId::generate();
            assert_eq!(
                cache.verify(&keys, keys.sign_cookie_value(&id).as_bytes()),
                Some(id)
            );
        }
        let cached: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(cached <= SHARDS * PER_SHARD, "{cached}");
    }
}
