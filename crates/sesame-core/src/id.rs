//! Session identifiers.

use std::borrow::Borrow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// The longest id sesame accepts, in bytes.
///
/// express-session's ids are 32 characters; custom `genid` functions produce UUIDs (36) or other
/// short strings. The bound keeps a forged cookie from making us carry (and send to the store)
/// arbitrarily large keys.
pub const MAX_ID_LEN: usize = 128;

/// Bytes of randomness in a generated id: 192 bits, as express-session's `uid-safe(24)`.
const GENERATED_ID_BYTES: usize = 24;

/// Length of a generated id: 24 bytes in unpadded base64url.
const GENERATED_ID_LEN: usize = GENERATED_ID_BYTES / 3 * 4;

/// The identifier of a session: the key of its record in the store and the payload of its cookie.
///
/// Generated ids carry 192 bits from the operating system's CSPRNG, encoded as 32 characters of
/// base64url, the same shape as express-session's ids. Ids that come from elsewhere (a custom
/// generator, or a cookie set by an Express app) are accepted when they are 1 to
/// [`MAX_ID_LEN`] bytes of visible ASCII, which is what a cookie value can carry.
///
/// Ids of up to 38 bytes (every generated id, every express-session id, UUIDs)
/// are held inline: cloning one is a copy, not a reference count, and a store's hash table
/// compares and rehashes its keys without following a pointer to each one (on a table of a
/// million sessions, that pointer is a cache miss per key). Longer ids are shared on the heap.
#[derive(Clone)]
pub struct SessionId(Repr);

/// The longest id held inline in a [`SessionId`], in bytes: a UUID's 36 and then some.
const INLINE_CAPACITY: usize = 38;

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is the id, visible ASCII (so valid UTF-8); the rest is zero.
    Inline {
        len: u8,
        bytes: [u8; INLINE_CAPACITY],
    },
    Shared(Arc<str>),
}

impl SessionId {
    /// Generates a new random id (192 bits from the system CSPRNG, base64url without padding).
    pub fn generate() -> Self {
        let mut bytes = [0u8; GENERATED_ID_BYTES];
        RANDOM_POOL.with(|pool| pool.borrow_mut().take(&mut bytes));
        // 24 bytes are 32 base64url characters, encoded straight into the inline buffer.
        let mut encoded = [0u8; GENERATED_ID_LEN];
        crate::tag::encode_unpadded(&bytes, crate::tag::URL_SAFE, &mut encoded);
        let mut inline = [0u8; INLINE_CAPACITY];
        inline[..GENERATED_ID_LEN].copy_from_slice(&encoded);
        Self(Repr::Inline {
            len: GENERATED_ID_LEN as u8,
            bytes: inline,
        })
    }

    /// Accepts an id produced elsewhere (a custom generator, an Express app), checking its shape.
    pub fn parse(id: &str) -> Result<Self, InvalidSessionId> {
        if is_valid_id(id) {
            Ok(Self::from_valid(id))
        } else {
            Err(InvalidSessionId { len: id.len() })
        }
    }

    /// An id sesame built itself from a known-good alphabet (base64url), skipping the check.
    pub(crate) fn from_trusted(id: String) -> Self {
        debug_assert!(is_valid_id(&id));
        Self::from_valid(&id)
    }

    /// An id whose shape has been checked: inline when it fits, shared otherwise.
    fn from_valid(id: &str) -> Self {
        if id.len() <= INLINE_CAPACITY {
            let mut bytes = [0u8; INLINE_CAPACITY];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            Self(Repr::Inline {
                len: id.len() as u8,
                bytes,
            })
        } else {
            Self(Repr::Shared(Arc::from(id)))
        }
    }

    /// The id's bytes (visible ASCII).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(id) => id.as_bytes(),
        }
    }

    /// The id as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always valid: inline ids are built only from checked ids and base64url, so this
            // never falls back (and an id is at most 38 bytes, so the check is cheap).
            Repr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Repr::Shared(id) => id,
        }
    }

    /// A public name for this session that reveals nothing about its id: the first 128 bits of
    /// the id's SHA-256, in base64url. Safe to put in a page (a "sessions of my account" list
    /// with a revoke button): nobody can turn it back into the id, let alone a signed cookie.
    pub fn handle(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    }
}

/// Whether `id` has the shape of a session id: 1 to [`MAX_ID_LEN`] bytes of visible ASCII
/// (`!` to `~`), excluding the characters a cookie value cannot hold unencoded.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

/// Bytes fetched from the OS CSPRNG per refill of a thread's pool: one `getrandom` call serves 170
/// ids instead of one each. Every byte is used once and then overwritten.
const POOL_BYTES: usize = 4096;

/// A per-thread buffer of OS randomness, handed out in order and never reused.
struct RandomPool {
    bytes: Box<[u8; POOL_BYTES]>,
    used: usize,
}

impl RandomPool {
    fn take(&mut self, dest: &mut [u8]) {
        if POOL_BYTES - self.used < dest.len() {
            fill_random(&mut self.bytes[..]);
            self.used = 0;
        }
        let end = self.used + dest.len();
        dest.copy_from_slice(&self.bytes[self.used..end]);
        // Wipe what was handed out, so the pool never holds a copy of an issued id.
        self.bytes[self.used..end].fill(0);
        self.used = end;
    }
}

thread_local! {
    static RANDOM_POOL: std::cell::RefCell<RandomPool> = std::cell::RefCell::new(RandomPool {
        bytes: Box::new([0; POOL_BYTES]),
        used: POOL_BYTES,
    });
}

fn system_random() -> &'static SystemRandom {
    static RNG: OnceLock<SystemRandom> = OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

/// Fills `dest` from the system CSPRNG (nonces of private cookies, the id pool).
pub(crate) fn fill_random(dest: &mut [u8]) {
    system_random()
        .fill(dest)
        // ring's SystemRandom only fails when the OS has no entropy source at all (getrandom
        // unavailable); continuing with predictable ids would be a security hole, so this is the
        // one place sesame refuses to go on.
        .expect("the operating system's random number generator failed");
}

/// A random secret of 256 bits, base64url-encoded: for development servers that were started
/// without a configured secret (their sessions end with the process).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    system_random()
        .fill(&mut bytes)
        .expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

// Equality, ordering and hashing are the id's bytes', computed without going through `&str`
// (hash tables call them on every probe). `Hash` writes exactly what `str`'s does, as
// `Borrow<str>` requires: a table keyed by ids can be queried with a `&str`.
impl PartialEq for SessionId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SessionId {}

impl PartialOrd for SessionId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SessionId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for SessionId {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SessionId {
    /// Ids are bearer credentials: debug output shows only a prefix, so logs do not leak them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.as_str().chars().take(4).collect();
        write!(f, "SessionId({prefix}…)")
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::str::FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A string that cannot be a session id (empty, too long, or holding characters a cookie value
/// cannot carry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session id ({len} bytes): ids are 1 to {MAX_ID_LEN} bytes of visible ASCII")]
pub struct InvalidSessionId {
    len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_express_shape_and_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, b);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(SessionId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn thousands_of_generated_ids_are_distinct() {
        let ids: std::collections::HashSet<SessionId> =
            (0..10_000).map(|_| SessionId::generate()).collect();
        assert_eq!(
            ids.len(),
            10_000,
            "the pool never hands out the same bytes twice"
        );
    }

    #[test]
    fn parse_rejects_bad_shapes() {
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse(&"a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(SessionId::parse("has space").is_err());
        assert!(SessionId::parse("semi;colon").is_err());
        assert!(SessionId::parse("ünïcode").is_err());
        assert!(SessionId::parse("550e8400-e29b-41d4-a716-446655440000").is_ok());
        assert!(SessionId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn inline_and_shared_ids_behave_as_their_text() {
        use std::collections::HashSet;
        use std::hash::BuildHasher;
        let uuid = "550e8400-e29b-41d4-a716-446655440000";
        let long = "l".repeat(INLINE_CAPACITY + 1);
        let edge = "e".repeat(INLINE_CAPACITY);
        let hasher = std::collections::hash_map::RandomState::new();
        let mut set = HashSet::new();
        for text in [uuid, long.as_str(), edge.as_str(), "x"] {
            let id = SessionId::parse(text).unwrap();
            assert_eq!(id.as_str(), text);
            assert_eq!(id.as_bytes(), text.as_bytes());
            assert_eq!(id.to_string(), text);
            // What `Borrow<str>` promises: the same hash as the text, so a `&str` finds the id.
            assert_eq!(hasher.hash_one(&id), hasher.hash_one(text));
            set.insert(id);
        }
        assert!(set.contains(uuid) && set.contains(long.as_str()) && set.contains("x"));
        let generated = SessionId::generate();
        assert_eq!(
            SessionId::parse(generated.as_str())
                .unwrap()
                .cmp(&generated),
            std::cmp::Ordering::Equal
        );
        assert!(SessionId::parse("a").unwrap() < SessionId::parse("b").unwrap());
        assert!(SessionId::parse(&long).unwrap() > SessionId::parse("l").unwrap());
    }

    #[test]
    fn an_id_is_small() {
        assert!(std::mem::size_of::<SessionId>() <= 40);
    }

    #[test]
    fn debug_does_not_leak_the_id() {
        let id = SessionId::parse("abcdefghijklmnop").unwrap();
        assert_eq!(format!("{id:?}"), "SessionId(abcd…)");
    }
}
