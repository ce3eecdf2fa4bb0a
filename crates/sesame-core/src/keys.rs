//! The key ring: signs session ids into cookie values and verifies them, with rotation.
//!
//! The format is express-session's (through the `cookie-signature` package):
//! `s:` + id + `.` + base64(HMAC-SHA256(secret, id)) without `=` padding, and the whole value
//! percent-encoded as JavaScript's `encodeURIComponent` does.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::hmac;

use crate::SessionId;

/// The prefix express-session puts before a signed value.
const SIGNED_PREFIX: &str = "s:";

/// Length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// The longest cookie value sesame looks at. A signed express cookie of a [`MAX_ID_LEN`]
/// id stays well below it; anything longer is rejected before any decoding or hashing.
///
/// [`MAX_ID_LEN`]: crate::id::MAX_ID_LEN
pub const MAX_COOKIE_VALUE_LEN: usize = 512;

/// One or more secrets: the first signs, every one verifies, so a secret can be rotated by putting
/// the new one first and keeping the old one until its cookies have expired.
///
/// ```
/// use sesame_core::{KeyRing, SessionId};
///
/// let old = KeyRing::new(["old secret"]).unwrap();
/// let rotated = KeyRing::new(["new secret", "old secret"]).unwrap();
/// let id = SessionId::generate();
/// let cookie = old.sign_cookie_value(&id);
/// assert_eq!(rotated.verify_cookie_value(&cookie), Some(id));
/// ```
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<hmac::Key>,
}

impl KeyRing {
    /// A key ring from secrets, the first of which signs. At least one non-empty secret is needed.
    pub fn new<I>(secrets: I) -> Result<Self, KeyRingError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let keys = secrets
            .into_iter()
            .map(|secret| {
                let secret = secret.as_ref();
                if secret.is_empty() {
                    Err(KeyRingError::EmptySecret)
                } else {
                    Ok(hmac::Key::new(hmac::HMAC_SHA256, secret))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyRingError::NoSecret);
        }
        Ok(Self { keys })
    }

    /// How many secrets verify.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a key ring holds at least one secret.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The signed value `s:<id>.<signature>`, before percent-encoding.
    pub fn sign(&self, id: &SessionId) -> String {
        let tag = hmac::sign(&self.keys[0], id.as_str().as_bytes());
        let mut out = String::with_capacity(2 + id.as_str().len() + 1 + 43);
        out.push_str(SIGNED_PREFIX);
        out.push_str(id.as_str());
        out.push('.');
        STANDARD_NO_PAD.encode_string(tag.as_ref(), &mut out);
        out
    }

    /// The cookie value express-session would set for `id`: the signed value, percent-encoded.
    pub fn sign_cookie_value(&self, id: &SessionId) -> String {
        encode_uri_component(&self.sign(id))
    }

    /// The id inside a cookie value, if the value is signed by any secret of the ring.
    ///
    /// The check is constant-time in the signature. A value that is too long, not percent-decodable,
    /// unsigned (express-session ignores those too), or signed by no secret gives `None`.
    pub fn verify_cookie_value(&self, cookie_value: &str) -> Option<SessionId> {
        if cookie_value.len() > MAX_COOKIE_VALUE_LEN {
            return None;
        }
        let decoded = decode_uri_component(cookie_value);
        let signed = decoded.strip_prefix(SIGNED_PREFIX)?;
        self.unsign(signed)
    }

    /// Verifies `<id>.<signature>` (the part after `s:`), as `cookie-signature`'s `unsign` does:
    /// the signature follows the last `.`.
    pub fn unsign(&self, signed: &str) -> Option<SessionId> {
        let (id, signature) = signed.rsplit_once('.')?;
        // A base64 SHA-256 tag without padding is exactly 43 characters; anything else cannot match.
        if signature.len() != 43 {
            return None;
        }
        let mut tag = [0u8; TAG_LEN];
        match STANDARD_NO_PAD.decode_slice(signature, &mut tag) {
            Ok(TAG_LEN) => {}
            _ => return None,
        }
        let verified = self
            .keys
            .iter()
            .any(|key| hmac::verify(key, id.as_bytes(), &tag).is_ok());
        if verified {
            SessionId::parse(id).ok()
        } else {
            None
        }
    }
}

impl fmt::Debug for KeyRing {
    /// Never prints secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("secrets", &self.keys.len())
            .finish_non_exhaustive()
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
}

/// Percent-encodes as JavaScript's `encodeURIComponent`, which `cookie.serialize` applies to
/// values: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )` is escaped.
pub fn encode_uri_component(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len() + 8);
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xF)] as char);
        }
    }
    out
}

/// Percent-decodes as `cookie.parse` does: a value without `%` is taken as it is, and a value
/// that does not decode (bad escape, invalid UTF-8) is also taken as it is.
pub fn decode_uri_component(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|pair| {
                let high = (pair[0] as char).to_digit(16)?;
                let low = (pair[1] as char).to_digit(16)?;
                u8::try_from(high * 16 + low).ok()
            });
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => return Cow::Borrowed(value),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with Node's crypto exactly as cookie-signature does (issue #2's test vector).
    #[test]
    fn matches_express_session_cookie() {
        let ring = KeyRing::new(["keyboard cat"]).unwrap();
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
        let old = KeyRing::new(["old"]).unwrap();
        let new = KeyRing::new(["new"]).unwrap();
        let rotated = KeyRing::new(["new", "old"]).unwrap();
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
        let ring = KeyRing::new(["secret"]).unwrap();
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
            KeyRing::new(["ok", ""]).unwrap_err(),
            KeyRingError::EmptySecret
        );
        assert!(!format!("{:?}", KeyRing::new(["hunter2"]).unwrap()).contains("hunter2"));
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
