//! A bounded memory of cookie values that verified, so a returning client's cookie costs a map
//! lookup instead of an HMAC (which is most of the cost of reading a session from memory), and a
//! smaller one of values that did not: a browser keeps sending a cookie that no longer verifies
//! (its secret rotated out, or another app's cookie under the same name) on every request until
//! it gets a new one, which express-session's rules send only once the session is used.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use foldhash::fast::RandomState;
use std::sync::{Mutex, PoisonError};

use sesame_core::{KeyRing, MAX_COOKIE_VALUE_LEN, SessionId};

const SHARDS: usize = 16;

/// Entries per shard; a full shard is emptied and starts over, which bounds memory at about
/// `SHARDS * PER_SHARD` cookies (a few MiB) whatever the traffic.
const PER_SHARD: usize = 1024;

/// Entries per shard of the memory of values that failed: anyone can send those, so they are
/// kept apart (a flood of forged values never pushes out a verified one) and fewer.
const FORGED_PER_SHARD: usize = 256;

/// Cookie values that verified, each with the id its signature proved, keyed by the value's hash:
/// the value is hashed once, to pick the shard and to find the entry, and its bytes are compared
/// in full before an id is handed out, so two values with one hash can never be confused.
type Shard<T> = Mutex<HashMap<u64, (Box<[u8]>, T), BuildHasherDefault<AlreadyHashed>>>;

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

/// A value is remembered only after the key ring has judged it: a verified one maps to the id its
/// signature proved, a refused one is kept (apart) as refused, so the cache can never accept a
/// value the key ring would refuse, nor refuse one it would accept. The key ring of a layer never
/// changes, so an entry stays true for the layer's life.
pub(crate) struct VerifiedCookies {
    shards: Box<[Shard<SessionId>]>,
    forged: Box<[Shard<()>]>,
    hasher: RandomState,
}

impl VerifiedCookies {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            forged: (0..SHARDS).map(|_| Mutex::default()).collect(),
            // foldhash, seeded at random: fast on ~80-byte values. Only values that verified go
            // into `shards`; whatever a client sends may go into `forged`, whose entries are
            // compared in full and whose only effect is to skip an HMAC that would fail anyway.
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
        if value.len() > MAX_COOKIE_VALUE_LEN {
            // Refused unread by the key ring, and not worth remembering.
            return None;
        }
        let hash = self.hasher.hash_one(value);
        let index = (hash >> 32) as usize % SHARDS;
        let shard = &self.shards[index];
        if let Some(id) = Self::recall(shard, hash, value) {
            return Some(id);
        }
        let forged = &self.forged[index];
        if Self::recall(forged, hash, value).is_some() {
            return None;
        }
        match keys.verify_cookie_bytes(value) {
            Some(id) => {
                Self::insert(shard, PER_SHARD, hash, value, id.clone());
                Some(id)
            }
            None => {
                Self::insert(forged, FORGED_PER_SHARD, hash, value, ());
                None
            }
        }
    }

    fn recall<T: Clone>(shard: &Shard<T>, hash: u64, value: &[u8]) -> Option<T> {
        shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .filter(|(remembered, _)| **remembered == *value)
            .map(|(_, judged)| judged.clone())
    }

    fn insert<T>(shard: &Shard<T>, bound: usize, hash: u64, value: &[u8], judged: T) {
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= bound {
            map.clear();
        }
        map.insert(hash, (value.into(), judged));
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
        assert_eq!(cache.verify(&keys, forged.as_bytes()), None, "from memory");
        let cached: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(cached, 1, "the forged value was not remembered as verified");
        let refused: usize = cache.forged.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(refused, 1, "the forged value was remembered as refused");
    }

    #[test]
    fn a_hash_collision_never_hands_out_another_values_id() {
        let keys = KeyRing::new([SECRET]).unwrap();
        let cache = VerifiedCookies::new();
        let victim = SessionId::generate();
        let forged = format!("{}x", &keys.sign_cookie_value(&victim)[..10]);
        // Plant another session's id under the forged value's hash, as a collision would.
        let hash = cache.hasher.hash_one(forged.as_bytes());
        let index = (hash >> 32) as usize % SHARDS;
        VerifiedCookies::insert(
            &cache.shards[index],
            PER_SHARD,
            hash,
            b"some other value",
            victim.clone(),
        );
        assert_eq!(cache.verify(&keys, forged.as_bytes()), None);
        // Nor does a refused value's entry ever refuse another value with its hash.
        let genuine = keys.sign_cookie_value(&victim);
        let hash = cache.hasher.hash_one(genuine.as_bytes());
        let index = (hash >> 32) as usize % SHARDS;
        VerifiedCookies::insert(&cache.forged[index], FORGED_PER_SHARD, hash, b"forged", ());
        assert_eq!(cache.verify(&keys, genuine.as_bytes()), Some(victim));
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
        for _ in 0..SHARDS * FORGED_PER_SHARD * 2 {
            let forged = format!("s%3A{}.{}", SessionId::generate(), "A".repeat(43));
            assert_eq!(cache.verify(&keys, forged.as_bytes()), None);
        }
        let refused: usize = cache.forged.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(refused <= SHARDS * FORGED_PER_SHARD, "{refused}");
        let cached_after: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(
            cached_after, cached,
            "forged values never push out verified ones"
        );
    }
}
