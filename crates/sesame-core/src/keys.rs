//! The key ring: turns session ids into cookie values and back, with key rotation.
//!
//! Two modes:
//! - **signed** (the default, express-session's format through the `cookie-signature` package):
//!   `s:` + id + `.` + base64(HMAC-SHA256(secret, id)) without `=` padding, percent-encoded as
//!   JavaScript's `encodeURIComponent` does. The id is readable, but cannot be forged.
//! - **private**: the id is encrypted and authenticated with AES-256-GCM, so the cookie reveals
//!   nothing. Not readable by express-session.
//!
//! In both, the first secret seals new cookies and every secret opens them.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{aead, hkdf};

use crate::SessionId;
use crate::tag::{self, TagKey};

/// The prefix express-session puts before a signed value.
const SIGNED_PREFIX: &str = "s:";

/// The shortest secret accepted without [`KeyRingBuilder::allow_short_secrets`]: 256 bits, the
/// strength of the HMAC and AES keys derived from it.
pub const MIN_SECRET_LEN: usize = 32;

/// The longest cookie value sesame looks at. A signed or private cookie of a [`MAX_ID_LEN`]
/// id stays well below it; anything longer is rejected before any decoding or hashing.
///
/// [`MAX_ID_LEN`]: crate::id::MAX_ID_LEN
pub const MAX_COOKIE_VALUE_LEN: usize = 512;

/// Salt of the HKDF that derives AES keys from secrets, so the same secret never serves as both an
/// HMAC key and an AES key directly.
const PRIVATE_KEY_SALT: &[u8] = b"sesame private cookie key v1";

#[derive(Clone)]
enum Keys {
    Signed(Vec<TagKey>),
    Private(Vec<aead::LessSafeKey>),
}

/// One or more secrets: the first seals, every one opens, so a secret can be rotated by putting
/// the new one first and keeping the old one until its cookies have expired.
///
/// ```
/// use sesame_core::{KeyRing, SessionId};
///
/// let old = KeyRing::new(["an old secret of at least 32 bytes!!"]).unwrap();
/// let rotated = KeyRing::new([
///     "the new secret, also 32 bytes or more",
///     "an old secret of at least 32 bytes!!",
/// ])
/// .unwrap();
/// let id = SessionId::generate();
/// let cookie = old.sign_cookie_value(&id);
/// assert_eq!(rotated.verify_cookie_value(&cookie), Some(id));
/// ```
#[derive(Clone)]
pub struct KeyRing {
    keys: Keys,
}

/// Configures a [`KeyRing`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct KeyRingBuilder {
    private: bool,
    allow_short_secrets: bool,
}

impl KeyRingBuilder {
    /// Encrypt the id (AES-256-GCM) instead of only signing it. express-session cannot read such
    /// cookies.
    pub fn private(mut self, private: bool) -> Self {
        self.private = private;
        self
    }

    /// Accept secrets shorter than [`MIN_SECRET_LEN`] bytes: only to share cookies with an
    /// existing Express app whose secret cannot change yet. A short secret can be brute-forced
    /// offline from a single cookie.
    pub fn allow_short_secrets(mut self, allow: bool) -> Self {
        self.allow_short_secrets = allow;
        self
    }

    /// Builds the key ring from secrets, the first of which seals.
    pub fn build<I>(self, secrets: I) -> Result<KeyRing, KeyRingError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let secrets: Vec<I::Item> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(KeyRingError::NoSecret);
        }
        for secret in &secrets {
            let len = secret.as_ref().len();
            if len == 0 {
                return Err(KeyRingError::EmptySecret);
            }
            if len < MIN_SECRET_LEN && !self.allow_short_secrets {
                return Err(KeyRingError::SecretTooShort { len });
            }
        }
        let keys = if self.private {
            Keys::Private(
                secrets
                    .iter()
                    .map(|secret| private_key(secret.as_ref()))
                    .collect(),
            )
        } else {
            Keys::Signed(
                secrets
                    .iter()
                    .map(|secret| TagKey::new(secret.as_ref()))
                    .collect(),
            )
        };
        Ok(KeyRing { keys })
    }
}

/// Derives an AES-256-GCM key from a secret with HKDF-SHA256.
fn private_key(secret: &[u8]) -> aead::LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, PRIVATE_KEY_SALT).extract(secret);
    let mut bytes = [0u8; 32];
    prk.expand(&[b"aes-256-gcm"], &aead::AES_256_GCM)
        .and_then(|okm| okm.fill(&mut bytes))
        // Filling 32 bytes from HKDF-SHA256 is within its output limit; it cannot fail.
        .expect("HKDF output of one AES-256 key");
    let key =
        aead::UnboundKey::new(&aead::AES_256_GCM, &bytes).expect("a 32-byte key for AES-256-GCM");
    aead::LessSafeKey::new(key)
}

impl KeyRing {
    /// A signed-mode key ring from secrets of at least [`MIN_SECRET_LEN`] bytes, the first of
    /// which signs. See [`builder`](Self::builder) for private mode and short secrets.
    pub fn new<I>(secrets: I) -> Result<Self, KeyRingError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        Self::builder().build(secrets)
    }

    /// Configures a key ring.
    pub fn builder() -> KeyRingBuilder {
        KeyRingBuilder::default()
    }

    /// How many secrets open cookies.
    pub fn len(&self) -> usize {
        match &self.keys {
            Keys::Signed(keys) => keys.len(),
            Keys::Private(keys) => keys.len(),
        }
    }

    /// Always false: a key ring holds at least one secret.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether cookies are encrypted (private mode) rather than signed.
    pub fn is_private(&self) -> bool {
        matches!(self.keys, Keys::Private(_))
    }

    /// The cookie value for `id`: in signed mode what express-session would set (`s:<id>.<sig>`,
    /// percent-encoded); in private mode the id encrypted under the first secret (base64url).
    pub fn sign_cookie_value(&self, id: &SessionId) -> String {
        match &self.keys {
            Keys::Signed(keys) => sign_encoded(&keys[0], id),
            Keys::Private(keys) => seal(&keys[0], id),
        }
    }

    /// The id inside a cookie value, if any secret of the ring opens it.
    ///
    /// Signature checks are constant-time. A value that is too long, not percent-decodable,
    /// unsigned (express-session ignores those too), tampered with, or sealed by no secret gives
    /// `None`, without panicking and without allocating more than the value's size.
    pub fn verify_cookie_value(&self, cookie_value: &str) -> Option<SessionId> {
        self.verify_cookie_bytes(cookie_value.as_bytes())
    }

    /// [`verify_cookie_value`](Self::verify_cookie_value) of a value as it came in the `Cookie`
    /// header, bytes that need not be UTF-8 (a value that is not never verifies): the layer's
    /// path, which spares a UTF-8 check of every cookie.
    pub fn verify_cookie_bytes(&self, cookie_value: &[u8]) -> Option<SessionId> {
        if cookie_value.len() > MAX_COOKIE_VALUE_LEN {
            return None;
        }
        match &self.keys {
            Keys::Signed(keys) => {
                // Decode on the stack: verification allocates nothing until the id is accepted.
                let mut buffer = [0u8; MAX_COOKIE_VALUE_LEN];
                let decoded = decode_uri_component_into(cookie_value, &mut buffer)?;
                let signed = decoded.strip_prefix(SIGNED_PREFIX.as_bytes())?;
                unsign_with(keys, signed)
            }
            Keys::Private(keys) => open(keys, cookie_value),
        }
    }

    /// The signed value `s:<id>.<signature>` before percent-encoding (signed mode), or the sealed
    /// value (private mode).
    pub fn sign(&self, id: &SessionId) -> String {
        match &self.keys {
            Keys::Signed(keys) => sign_with(&keys[0], id),
            Keys::Private(keys) => seal(&keys[0], id),
        }
    }
}

fn sign_with(key: &TagKey, id: &SessionId) -> String {
    let signature = key.encoded_tag(id.as_str().as_bytes());
    let mut out = String::with_capacity(2 + id.as_str().len() + 1 + tag::ENCODED_TAG_LEN);
    out.push_str(SIGNED_PREFIX);
    out.push_str(id.as_str());
    out.push('.');
    // Base64 is ASCII.
    out.extend(signature.iter().map(|&byte| char::from(byte)));
    out
}

/// `encode_uri_component(sign_with(key, id))`, built in one pass without the intermediate string:
/// the prefix `s:` encodes to `s%3A`, then the id and the base64 signature are escaped straight
/// into the output. This runs for every new session and every rolling cookie.
fn sign_encoded(key: &TagKey, id: &SessionId) -> String {
    let signature = key.encoded_tag(id.as_str().as_bytes());
    let mut out = String::with_capacity(4 + id.as_str().len() + 1 + tag::ENCODED_TAG_LEN + 16);
    out.push_str("s%3A");
    push_uri_encoded(&mut out, id.as_str());
    out.push('.');
    // `encodeURIComponent` of base64: `+` and `/`, the only characters that need an escape,
    // become `%2B` and `%2F`.
    for &byte in &signature {
        match byte {
            b'+' => out.push_str("%2B"),
            b'/' => out.push_str("%2F"),
            _ => out.push(char::from(byte)),
        }
    }
    out
}

/// Verifies `<id>.<signature>` (the part after `s:`), as `cookie-signature`'s `unsign` does: the
/// signature follows the last `.`. An unpadded base64 SHA-256 tag is exactly 43 characters, none
/// of them a `.`, so the dot must stand just before the last 43 bytes; anything else cannot match.
fn unsign_with(keys: &[TagKey], signed: &[u8]) -> Option<SessionId> {
    let dot = signed.len().checked_sub(tag::ENCODED_TAG_LEN + 1)?;
    let (id, signature) = (&signed[..dot], &signed[dot + 1..]);
    if signed[dot] != b'.' {
        return None;
    }
    if keys.iter().any(|key| key.verify_encoded(id, signature)) {
        SessionId::parse(std::str::from_utf8(id).ok()?).ok()
    } else {
        None
    }
}

/// Encrypts `id`: base64url(nonce || ciphertext || tag), with a fresh random 96-bit nonce.
fn seal(key: &aead::LessSafeKey, id: &SessionId) -> String {
    let mut nonce = [0u8; aead::NONCE_LEN];
    crate::id::fill_random(&mut nonce);
    let mut buffer = id.as_str().as_bytes().to_vec();
    // Sealing can only fail for inputs beyond GCM's size limit (64 GiB), far above an id.
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(b"sesame-session-id"),
        &mut buffer,
    )
    .expect("AES-GCM sealing of a short id");
    let mut sealed = Vec::with_capacity(aead::NONCE_LEN + buffer.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&buffer);
    URL_SAFE_NO_PAD.encode(sealed)
}

fn open(keys: &[aead::LessSafeKey], value: &[u8]) -> Option<SessionId> {
    let sealed = URL_SAFE_NO_PAD.decode(value).ok()?;
    if sealed.len() <= aead::NONCE_LEN + aead::AES_256_GCM.tag_len() {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(aead::NONCE_LEN);
    let nonce: [u8; aead::NONCE_LEN] = nonce.try_into().ok()?;
    keys.iter().find_map(|key| {
        let mut buffer = ciphertext.to_vec();
        let plain = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(b"sesame-session-id"),
                &mut buffer,
            )
            .ok()?;
        SessionId::parse(std::str::from_utf8(plain).ok()?).ok()
    })
}

impl fmt::Debug for KeyRing {
    /// Never prints secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("private", &self.is_private())
            .field("secrets", &self.len())
            .finish_non_exhaustive()
    }
}

/// Maps session ids to the keys records are stored under, with a keyed hash (HMAC-SHA256), so a
/// leaked store dump holds no id that could be replayed as a cookie.
///
/// The trade-off: an Express app sharing the store looks records up by the raw id and will not
/// find them, so do not hash ids while sharing sessions with express-session.
#[derive(Clone)]
pub struct IdHasher {
    key: TagKey,
}

impl IdHasher {
    /// A hasher keyed with `key` (at least [`MIN_SECRET_LEN`] bytes; keep it stable, since
    /// changing it orphans every stored session).
    pub fn new(key: impl AsRef<[u8]>) -> Result<Self, KeyRingError> {
        let key = key.as_ref();
        if key.len() < MIN_SECRET_LEN {
            return Err(KeyRingError::SecretTooShort { len: key.len() });
        }
        Ok(Self {
            key: TagKey::new(key),
        })
    }

    /// The storage key of `id`: base64url(HMAC-SHA256(key, id)), 43 characters.
    pub fn hash(&self, id: &SessionId) -> SessionId {
        let tag = self.key.tag(id.as_str().as_bytes());
        let encoded = tag::encode_tag(&tag, tag::URL_SAFE);
        SessionId::from_trusted(
            encoded
                .iter()
                .map(|&byte| char::from(byte))
                .collect::<String>(),
        )
    }
}

impl fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdHasher").finish_non_exhaustive()
    }
}

/// Why a key ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// No secret was given; express-session requires one too.
    #[error(
        "a session secret is required: the first secret signs cookies, all secrets verify them"
    )]
    NoSecret,
    /// One of the secrets was empty.
    #[error("a session secret must not be empty")]
    EmptySecret,
    /// A secret is too short to resist offline guessing.
    #[error(
        "a session secret of {len} bytes is too short: use at least {MIN_SECRET_LEN} random bytes \
         (or allow short secrets explicitly to share cookies with an existing Express app)"
    )]
    SecretTooShort {
        /// The secret's length in bytes.
        len: usize,
    },
}

/// The value of the first cookie called `name` in one `Cookie` header, as `cookie.parse` finds
/// it (the first occurrence wins, spaces and tabs around names and values are ignored, one pair
/// of surrounding double quotes is stripped), without decoding or verifying it. It borrows from
/// the header and never allocates.
pub fn find_cookie_value<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    // Every delimiter is ASCII, so the byte range found is on character boundaries.
    let (start, end) = find_cookie_range(header.as_bytes(), name.as_bytes())?;
    header.get(start..end)
}

/// [`find_cookie_value`] on a header's raw bytes (an `http::HeaderValue` may hold bytes that are
/// not UTF-8): the value found, if it is valid UTF-8. Only the value is checked, not the whole
/// header.
pub fn find_cookie_value_in_bytes<'h>(header: &'h [u8], name: &str) -> Option<&'h str> {
    std::str::from_utf8(find_raw_cookie_value(header, name)?).ok()
}

/// [`find_cookie_value`] on a header's raw bytes, returning the value's bytes unchecked (a cache
/// of verified values can be consulted before spending time on UTF-8 validation).
pub fn find_raw_cookie_value<'h>(header: &'h [u8], name: &str) -> Option<&'h [u8]> {
    let (start, end) = find_cookie_range(header, name.as_bytes())?;
    Some(&header[start..end])
}

/// The byte range of the value of the first `name=value` pair of `header`, with spaces and tabs
/// around names and values ignored and one pair of double quotes stripped, as `cookie.parse`
/// reads a header. It runs on every request that uses the session: `memchr` finds the
/// delimiters a machine word or vector at a time.
fn find_cookie_range(header: &[u8], name: &[u8]) -> Option<(usize, usize)> {
    let mut pair_start = 0;
    loop {
        let pair_end =
            memchr::memchr(b';', &header[pair_start..]).map_or(header.len(), |at| pair_start + at);
        if let Some(eq) =
            memchr::memchr(b'=', &header[pair_start..pair_end]).map(|at| pair_start + at)
        {
            let (key_start, key_end) = trim_blanks(header, pair_start, eq);
            if &header[key_start..key_end] == name {
                let (mut start, mut end) = trim_blanks(header, eq + 1, pair_end);
                if end - start >= 2 && header[start] == b'"' && header[end - 1] == b'"' {
                    start += 1;
                    end -= 1;
                }
                return Some((start, end));
            }
        }
        if pair_end >= header.len() {
            return None;
        }
        pair_start = pair_end + 1;
    }
}

/// `start..end` of `bytes` without leading and trailing spaces and tabs.
fn trim_blanks(bytes: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    let blank = |byte: u8| byte == b' ' || byte == b'\t';
    while start < end && blank(bytes[start]) {
        start += 1;
    }
    while end > start && blank(bytes[end - 1]) {
        end -= 1;
    }
    (start, end)
}

/// Percent-encodes as JavaScript's `encodeURIComponent`, which `cookie.serialize` applies to
/// values: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )` is escaped.
pub fn encode_uri_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    push_uri_encoded(&mut out, value);
    out
}

/// Whether `encodeURIComponent` leaves this byte as it is, by table lookup.
const URI_UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        byte += 1;
    }
    table
};

/// Appends `value` percent-encoded as `encodeURIComponent` does (UTF-8 bytes of other characters
/// escaped one by one), copying each run of unreserved characters at once.
fn push_uri_encoded(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = value.as_bytes();
    let mut run_start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if URI_UNRESERVED[usize::from(byte)] {
            continue;
        }
        // Runs end only at escaped bytes, and every non-ASCII byte is escaped, so the run is
        // whole characters.
        out.push_str(value.get(run_start..at).unwrap_or_default());
        out.push('%');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xF)]));
        run_start = at + 1;
    }
    out.push_str(value.get(run_start..).unwrap_or_default());
}

/// Percent-decodes `value` into `buffer` (at least as long as `value`), as
/// [`decode_uri_component`] does, without allocating.
/// Percent-decodes `value` into `buffer` as `cookie.parse` does (see [`decode_uri_component`]):
/// `value` itself when it has no escape, a bad escape, or decodes to invalid UTF-8; `None` only
/// when `buffer` is too small.
fn decode_uri_component_into<'a>(value: &'a [u8], buffer: &'a mut [u8]) -> Option<&'a [u8]> {
    if memchr::memchr(b'%', value).is_none() {
        return Some(value);
    }
    // Runs between escapes are copied whole (a signed cookie has a handful of escapes).
    let mut rest = value;
    let mut len = 0;
    loop {
        let run = memchr::memchr(b'%', rest).unwrap_or(rest.len());
        buffer
            .get_mut(len..len + run)?
            .copy_from_slice(&rest[..run]);
        len += run;
        rest = &rest[run..];
        if rest.is_empty() {
            break;
        }
        // An undecodable value is taken as it is, like cookie.parse does.
        let Some(byte) = rest.get(1..3).and_then(hex_pair) else {
            return Some(value);
        };
        *buffer.get_mut(len)? = byte;
        len += 1;
        rest = &rest[3..];
    }
    let decoded = &buffer[..len];
    if std::str::from_utf8(decoded).is_ok() {
        Some(decoded)
    } else {
        Some(value)
    }
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let high = (pair[0] as char).to_digit(16)?;
    let low = (pair[1] as char).to_digit(16)?;
    u8::try_from(high * 16 + low).ok()
}

/// Percent-decodes as `cookie.parse` does: a value without `%` is taken as it is, and a value
/// that does not decode (bad escape, invalid UTF-8) is also taken as it is.
pub fn decode_uri_component(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    // Decoding never lengthens a value, so a buffer of its length always suffices.
    let mut buffer = vec![0; value.len()];
    match decode_uri_component_into(value.as_bytes(), &mut buffer) {
        Some(decoded) if !std::ptr::eq(decoded, value.as_bytes()) => {
            // Decoded values are checked to be UTF-8.
            std::str::from_utf8(decoded).map_or(Cow::Borrowed(value), |decoded| {
                Cow::Owned(decoded.to_owned())
            })
        }
        _ => Cow::Borrowed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pass_signed_value_is_the_encoded_signed_value() {
        let keys = KeyRing::new(["a test secret that is at least 32 bytes long"]).unwrap();
        let mut ids: Vec<SessionId> = (0..200).map(|_| SessionId::generate()).collect();
        ids.push(SessionId::parse("custom:id+with/odd%chars!~*()'").unwrap());
        for id in ids {
            assert_eq!(
                keys.sign_cookie_value(&id),
                encode_uri_component(&keys.sign(&id))
            );
            assert_eq!(
                keys.verify_cookie_value(&keys.sign_cookie_value(&id)),
                Some(id)
            );
        }
        assert_eq!(encode_uri_component("é:a b"), "%C3%A9%3Aa%20b");
    }

    #[test]
    fn finds_cookies_as_cookie_parse_does() {
        let header = "a=1;connect.sid = \"s%3Aid.sig\"\t; connect.sid=later; b=2";
        assert_eq!(find_cookie_value(header, "connect.sid"), Some("s%3Aid.sig"));
        assert_eq!(find_cookie_value(header, "b"), Some("2"));
        assert_eq!(find_cookie_value(header, "missing"), None);
        assert_eq!(find_cookie_value("novalue; x", "x"), None);
        assert_eq!(find_cookie_value("x=", "x"), Some(""));
        // Raw header bytes: only the value found must be UTF-8.
        let raw = b"junk=\xff\xfe; sid=abc";
        assert_eq!(find_cookie_value_in_bytes(raw, "sid"), Some("abc"));
        assert_eq!(find_cookie_value_in_bytes(raw, "junk"), None);
    }

    const OLD: &str = "an old secret of at least 32 bytes!!";
    const NEW: &str = "the new secret, also 32 bytes or more";

    fn short(secret: &str) -> KeyRing {
        KeyRing::builder()
            .allow_short_secrets(true)
            .build([secret])
            .unwrap()
    }

    /// Computed with Node's crypto exactly as cookie-signature does (issue #2's test vector).
    #[test]
    fn matches_express_session_cookie() {
        let ring = short("keyboard cat");
        let id = SessionId::parse("2TVZ0jQ7uX3wqkXF8H3yKxhE5pBcYJmN").unwrap();
        let value = ring.sign_cookie_value(&id);
        assert_eq!(
            value,
            "s%3A2TVZ0jQ7uX3wqkXF8H3yKxhE5pBcYJmN.2FjJYw%2B%2FJHztItNfCstHIeECIHFx6WpLk%2By2IWCFol8"
        );
        assert_eq!(ring.verify_cookie_value(&value), Some(id.clone()));
        // cookie.parse decodes only when needed: an unencoded value verifies as well.
        assert_eq!(ring.verify_cookie_value(&ring.sign(&id)), Some(id));
    }

    #[test]
    fn first_secret_signs_all_verify() {
        let old = KeyRing::new([OLD]).unwrap();
        let new = KeyRing::new([NEW]).unwrap();
        let rotated = KeyRing::new([NEW, OLD]).unwrap();
        let id = SessionId::generate();
        assert_eq!(rotated.sign(&id), new.sign(&id));
        assert_eq!(
            rotated.verify_cookie_value(&old.sign_cookie_value(&id)),
            Some(id.clone())
        );
        assert_eq!(new.verify_cookie_value(&old.sign_cookie_value(&id)), None);
    }

    #[test]
    fn rejects_tampering_and_garbage() {
        let ring = KeyRing::new([NEW]).unwrap();
        let id = SessionId::generate();
        let good = ring.sign(&id);
        let other = SessionId::generate();
        let swapped = format!("s:{other}.{}", good.rsplit_once('.').unwrap().1);
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            "",
            "s:",
            "s:.",
            &good[2..],
            &swapped,
            &flipped,
            "s:abc.def",
            "%E0%A4%A",
            "%ZZ",
            &"s:".repeat(1000),
            &format!("{good}="),
        ] {
            assert_eq!(ring.verify_cookie_value(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_required() {
        assert_eq!(
            KeyRing::new(Vec::<&str>::new()).unwrap_err(),
            KeyRingError::NoSecret
        );
        assert_eq!(
            KeyRing::new([NEW, ""]).unwrap_err(),
            KeyRingError::EmptySecret
        );
        assert_eq!(
            KeyRing::new(["keyboard cat"]).unwrap_err(),
            KeyRingError::SecretTooShort { len: 12 }
        );
        assert!(!format!("{:?}", short("hunter2")).contains("hunter2"));
    }

    #[test]
    fn id_hashes_are_stable_keyed_and_unreadable() {
        let hasher = IdHasher::new(NEW).unwrap();
        let other = IdHasher::new(OLD).unwrap();
        let id = SessionId::generate();
        assert_eq!(hasher.hash(&id), hasher.hash(&id));
        assert_ne!(hasher.hash(&id), other.hash(&id));
        assert_ne!(hasher.hash(&id).as_str(), id.as_str());
        assert_eq!(hasher.hash(&id).as_str().len(), 43);
        assert!(IdHasher::new("short").is_err());
    }

    #[test]
    fn private_cookies_hide_the_id_and_rotate() {
        let old = KeyRing::builder().private(true).build([OLD]).unwrap();
        let rotated = KeyRing::builder().private(true).build([NEW, OLD]).unwrap();
        let id = SessionId::generate();
        let sealed = old.sign_cookie_value(&id);
        assert!(!sealed.contains(id.as_str()), "the id is not readable");
        assert_ne!(
            sealed,
            old.sign_cookie_value(&id),
            "a fresh nonce every time"
        );
        assert_eq!(rotated.verify_cookie_value(&sealed), Some(id.clone()));
        let resealed = rotated.sign_cookie_value(&id);
        assert_eq!(
            old.verify_cookie_value(&resealed),
            None,
            "sealed with the new secret"
        );
        // Signed and private rings do not accept each other's cookies.
        let signed = KeyRing::new([OLD]).unwrap();
        assert_eq!(signed.verify_cookie_value(&sealed), None);
        assert_eq!(
            old.verify_cookie_value(&signed.sign_cookie_value(&id)),
            None
        );
    }

    #[test]
    fn private_cookies_reject_tampering() {
        let ring = KeyRing::builder().private(true).build([NEW]).unwrap();
        let sealed = ring.sign_cookie_value(&SessionId::generate());
        let mut bytes = sealed.clone().into_bytes();
        for i in [0, bytes.len() / 2, bytes.len() - 1] {
            let original = bytes[i];
            bytes[i] = if original == b'A' { b'B' } else { b'A' };
            assert_eq!(
                ring.verify_cookie_value(std::str::from_utf8(&bytes).unwrap()),
                None
            );
            bytes[i] = original;
        }
        for bad in [
            "",
            "AAAA",
            "!!!!",
            &sealed[..sealed.len() - 4],
            &"A".repeat(600),
        ] {
            assert_eq!(ring.verify_cookie_value(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decoding_into_a_buffer_agrees_with_decoding() {
        let mut buffer = [0u8; MAX_COOKIE_VALUE_LEN];
        for value in ["plain", "s%3Aa%2Bb", "%ZZ", "100%", "%C3%A9", "%FF%FE", ""] {
            assert_eq!(
                decode_uri_component_into(value.as_bytes(), &mut buffer).unwrap(),
                decode_uri_component(value).as_bytes(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn uri_component_round_trip() {
        let raw = "s:a+b/c=d é";
        let encoded = encode_uri_component(raw);
        assert_eq!(encoded, "s%3Aa%2Bb%2Fc%3Dd%20%C3%A9");
        assert_eq!(decode_uri_component(&encoded), raw);
        assert_eq!(decode_uri_component("100%"), "100%");
    }
}
