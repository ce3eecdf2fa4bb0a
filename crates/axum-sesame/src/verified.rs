//! A bounded memory of cookie values that verified, so a returning client's cookie costs a map
//! lookup instead of an HMAC (which is most of the cost of reading a session from memory).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use foldhash::fast::RandomState;
use std::sync::{Mutex, PoisonError};

use sesame_core::{KeyRing, SessionId};

const SHARDS: usize = 16;

/// Entries per shard; a full shard is emptied and starts over, which bounds memory at about
/// `SHARDS * PER_SHARD` cookies (a few MiB) whatever the traffic.
const PER_SHARD: usize = 1024;

/// Cookie values that verified, each with the id its signature proved, keyed by the value's hash:
/// the value is hashed once, to pick the shard and to find the entry, and its bytes are compared
/// in full before an id is handed out, so two values with one hash can never be confused.
type Shard = Mutex<HashMap<u64, (Box<[u8]>, SessionId), BuildHasherDefault<AlreadyHashed>>>;

/// The hasher of a map whose keys are already hashes (seeded foldhash values): it passes them on.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys reach this hasher; fold anything else in rather than ignore it.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

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
            return keys.verify_cookie_bytes(value);
        }
        let hash = self.hasher.hash_one(value);
        let shard = &self.shards[(hash >> 32) as usize % SHARDS];
        if let Some((_, id)) = shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .filter(|(remembered, _)| **remembered == *value)
        {
            return Some(id.clone());
        }
        let id = keys.verify_cookie_bytes(value)?;
        Self::insert(shard, hash, value, id.clone());
        Some(id)
    }

    fn insert(shard: &Shard, hash: u64, value: &[u8], id: SessionId) {
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= PER_SHARD {
            map.clear();
        }
        map.insert(hash, (value.into(), id));
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
    fn a_hash_collision_never_hands_out_another_values_id() {
        let keys = KeyRing::new([SECRET]).unwrap();
        let cache = VerifiedCookies::new();
        let victim = SessionId::generate();
        let forged = format!("{}x", &keys.sign_cookie_value(&victim)[..10]);
        // Plant another session's id under the forged value's hash, as a collision would.
        let hash = cache.hasher.hash_one(forged.as_bytes());
        let shard = &cache.shards[(hash >> 32) as usize % SHARDS];
        VerifiedCookies::insert(shard, hash, b"some other value", victim);
        assert_eq!(cache.verify(&keys, forged.as_bytes()), None);
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
