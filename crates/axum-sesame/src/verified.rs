//! A bounded memory of cookie values that verified, so a returning client's cookie costs a map
//! lookup instead of an HMAC (which is most of the cost of reading a session from memory), and a
//! smaller one of values that did not: a browser keeps sending a cookie that no longer verifies
//! (its secret rotated out, or another app's cookie under the same name) on every request until
//! it gets a new one, which express-session's rules send only once the session is used.
//!
//! A value that is exactly what signing its id with the ring's current secret gives is handed out
//! with the id: a response that sets the cookie for that id again (a changed session with a max
//! age, a rolling session) sends it back as it came instead of signing the id anew, which is the
//! same value, byte for byte.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

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

/// Cookie values judged by the key ring, keyed by the value's hash: the value is hashed once, to
/// pick the shard and to find the entry, and its bytes are compared in full before a judgement is
/// handed out, so two values with one hash can never be confused.
type Shard<T> = Mutex<HashMap<u64, T, BuildHasherDefault<AlreadyHashed>>>;

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

/// What a cookie value proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VerifiedCookie {
    /// The session id its signature proved.
    pub(crate) id: SessionId,
    /// The value itself when it is exactly what [`KeyRing::sign_cookie_value`] gives for `id`
    /// (signed by the current secret, encoded as sesame encodes): the value to send when setting
    /// the cookie for `id` again. `None` for a value signed by an older secret or encoded
    /// otherwise, which a new cookie replaces, and for sealed (private) values.
    pub(crate) current_value: Option<Arc<str>>,
}

impl VerifiedCookie {
    /// The cookie value for `id`: the one the client sent when it is current for `id`, or a new
    /// signature.
    pub(crate) fn value_for<'a>(
        this: Option<&'a Self>,
        keys: &KeyRing,
        id: &SessionId,
    ) -> std::borrow::Cow<'a, str> {
        match this {
            Some(Self {
                id: verified,
                current_value: Some(value),
            }) if verified == id => std::borrow::Cow::Borrowed(value),
            _ => std::borrow::Cow::Owned(keys.sign_cookie_value(id)),
        }
    }
}

/// A verified value: its bytes (as text: a value that verifies is ASCII), the id it proved, and
/// whether it is the current signature's.
struct Remembered {
    value: Arc<str>,
    id: SessionId,
    current: bool,
}

/// A value is remembered only after the key ring has judged it: a verified one maps to the id its
/// signature proved, a refused one is kept (apart) as refused, so the cache can never accept a
/// value the key ring would refuse, nor refuse one it would accept. The key ring of a layer never
/// changes, so an entry stays true for the layer's life.
pub(crate) struct VerifiedCookies {
    shards: Box<[Shard<Remembered>]>,
    forged: Box<[Shard<Box<[u8]>>]>,
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

    /// What `value` proves, from memory or by verifying it with `keys`.
    /// The cookie's raw bytes are the cache key: a remembered value needs no UTF-8 check either.
    pub(crate) fn verify(&self, keys: &KeyRing, value: &[u8]) -> Option<VerifiedCookie> {
        if keys.is_private() {
            // Private cookies carry a fresh nonce each time they are set, so few values repeat
            // and decryption is cheap next to the lookup it would save.
            return keys.verify_cookie_bytes(value).map(|id| VerifiedCookie {
                id,
                current_value: None,
            });
        }
        if value.len() > MAX_COOKIE_VALUE_LEN {
            // Refused unread by the key ring, and not worth remembering.
            return None;
        }
        let hash = self.hasher.hash_one(value);
        let index = (hash >> 32) as usize % SHARDS;
        let shard = &self.shards[index];
        let recalled = lock(shard)
            .get(&hash)
            .filter(|remembered| remembered.value.as_bytes() == value)
            .map(|remembered| VerifiedCookie {
                id: remembered.id.clone(),
                current_value: remembered.current.then(|| Arc::clone(&remembered.value)),
            });
        if recalled.is_some() {
            return recalled;
        }
        let forged = &self.forged[index];
        if lock(forged)
            .get(&hash)
            .is_some_and(|remembered| **remembered == *value)
        {
            return None;
        }
        let Some(id) = keys.verify_cookie_bytes(value) else {
            insert(forged, FORGED_PER_SHARD, hash, value.into());
            return None;
        };
        // A value that verifies is ASCII (an id and a base64 tag, percent-encoded or not).
        let Ok(text) = std::str::from_utf8(value) else {
            return Some(VerifiedCookie {
                id,
                current_value: None,
            });
        };
        // Paid once per value: signing again is what the comparison saves on every later write.
        let current = keys.sign_cookie_value(&id) == text;
        let remembered = Remembered {
            value: Arc::from(text),
            id: id.clone(),
            current,
        };
        let current_value = current.then(|| Arc::clone(&remembered.value));
        insert(shard, PER_SHARD, hash, remembered);
        Some(VerifiedCookie { id, current_value })
    }
}

fn lock<T>(
    shard: &Shard<T>,
) -> std::sync::MutexGuard<'_, HashMap<u64, T, BuildHasherDefault<AlreadyHashed>>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

fn insert<T>(shard: &Shard<T>, bound: usize, hash: u64, judged: T) {
    let mut map = lock(shard);
    if map.len() >= bound {
        map.clear();
    }
    map.insert(hash, judged);
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
        let proved = |value: &str| cache.verify(&keys, value.as_bytes()).map(|v| v.id);
        assert_eq!(proved(&value), Some(id.clone()));
        assert_eq!(proved(&value), Some(id), "from memory");
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
        insert(
            &cache.shards[index],
            PER_SHARD,
            hash,
            Remembered {
                value: Arc::from("some other value"),
                id: victim.clone(),
                current: true,
            },
        );
        assert_eq!(cache.verify(&keys, forged.as_bytes()), None);
        // Nor does a refused value's entry ever refuse another value with its hash.
        let genuine = keys.sign_cookie_value(&victim);
        let hash = cache.hasher.hash_one(genuine.as_bytes());
        let index = (hash >> 32) as usize % SHARDS;
        insert(
            &cache.forged[index],
            FORGED_PER_SHARD,
            hash,
            b"forged"[..].into(),
        );
        assert_eq!(
            cache.verify(&keys, genuine.as_bytes()).map(|v| v.id),
            Some(victim)
        );
    }

    #[test]
    fn stays_bounded() {
        let keys = KeyRing::new([SECRET]).unwrap();
        let cache = VerifiedCookies::new();
        for _ in 0..SHARDS * PER_SHARD * 2 {
            let id = SessionId::generate();
            assert_eq!(
                cache
                    .verify(&keys, keys.sign_cookie_value(&id).as_bytes())
                    .map(|v| v.id),
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

    #[test]
    fn only_the_current_secrets_own_encoding_is_handed_back() {
        const OLD: &str = "an older test secret, also at least 32 bytes";
        let keys = KeyRing::new([SECRET, OLD]).unwrap();
        let cache = VerifiedCookies::new();
        let id = SessionId::generate();
        let current = keys.sign_cookie_value(&id);
        for _ in 0..2 {
            // First verified, then recalled: the same judgement either way.
            let proved = cache.verify(&keys, current.as_bytes()).unwrap();
            assert_eq!(proved.id, id);
            assert_eq!(proved.current_value.as_deref(), Some(current.as_str()));
        }
        // Signed by the older secret: accepted, but a new cookie must be signed by the current one.
        let older = KeyRing::new([OLD]).unwrap().sign_cookie_value(&id);
        let proved = cache.verify(&keys, older.as_bytes()).unwrap();
        assert_eq!(
            (proved.id.clone(), proved.current_value.clone()),
            (id.clone(), None)
        );
        assert_eq!(
            VerifiedCookie::value_for(Some(&proved), &keys, &id),
            current,
            "signed anew"
        );
        // The same signature, not percent-encoded as sesame and cookie-signature write it.
        let unencoded = format!("s:{}", &current["s%3A".len()..]);
        assert_ne!(unencoded, current);
        let proved = cache.verify(&keys, unencoded.as_bytes()).unwrap();
        assert_eq!(
            (proved.id.clone(), proved.current_value.clone()),
            (id.clone(), None)
        );
        // A current value is sent back for its own id only.
        let proved = cache.verify(&keys, current.as_bytes()).unwrap();
        let sent = VerifiedCookie::value_for(Some(&proved), &keys, &id);
        assert!(
            matches!(sent, std::borrow::Cow::Borrowed(_)),
            "not signed again"
        );
        assert_eq!(sent, current);
        let other = SessionId::generate();
        assert_eq!(
            VerifiedCookie::value_for(Some(&proved), &keys, &other),
            keys.sign_cookie_value(&other)
        );
        // Sealed cookies are never handed back (each seal has its own nonce).
        let private = KeyRing::builder().private(true).build([SECRET]).unwrap();
        let sealed = private.sign_cookie_value(&id);
        let proved = cache.verify(&private, sealed.as_bytes()).unwrap();
        assert_eq!((proved.id, proved.current_value), (id, None));
    }
}
