//! HMAC-SHA256 tags in express-session's cookie format, as cheap as the hash allows, and the
//! branch-free base64 that writes them (and generated session ids).
//!
//! Every new session is signed and every forged or first-seen cookie is verified, so the tag is
//! on the hot path. A [`TagKey`] hashes the key's inner and outer pads once, when the key ring is
//! built: a tag of an id then costs two SHA-256 blocks (with the CPU's SHA extensions where it
//! has them) and a copy of two 32-byte states, about half of what a general HMAC call costs.
//!
//! Signatures are compared as text: the expected tag is encoded and compared with the cookie's
//! signature in constant time, which also refuses every non-canonical encoding of a right tag,
//! without decoding what the client sent.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Length of an HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;

/// Length of a tag in unpadded base64: 43 characters.
pub(crate) const ENCODED_TAG_LEN: usize = 43;

/// An HMAC-SHA256 key with its pads already hashed.
#[derive(Clone)]
pub(crate) struct TagKey(Hmac<Sha256>);

impl TagKey {
    /// HMAC takes keys of any length (a key longer than a block is hashed first, as RFC 2104 says
    /// and as Node's `createHmac` does).
    pub(crate) fn new(key: &[u8]) -> Self {
        Self(
            <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length"),
        )
    }

    /// HMAC-SHA256(key, message).
    pub(crate) fn tag(&self, message: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// The tag of `message` in standard base64 without padding, as `cookie-signature` writes it.
    pub(crate) fn encoded_tag(&self, message: &[u8]) -> [u8; ENCODED_TAG_LEN] {
        encode_tag(&self.tag(message), STANDARD)
    }

    /// Whether `signature` is exactly [`encoded_tag`](Self::encoded_tag) of `message`; the
    /// comparison takes the same time wherever the two differ.
    pub(crate) fn verify_encoded(&self, message: &[u8], signature: &[u8]) -> bool {
        signature.len() == ENCODED_TAG_LEN
            && constant_time_eq(&self.encoded_tag(message), signature)
    }
}

/// Whether two slices of one length are equal, in a time that does not depend on where they
/// differ: every byte is compared and the differences are folded together, with no early exit,
/// and the fold is hidden from the optimizer before it is tested.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let difference = expected
        .iter()
        .zip(given)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b));
    std::hint::black_box(difference) == 0 && expected.len() == given.len()
}

/// The two base64 alphabets; they differ in their last two characters only.
#[derive(Clone, Copy)]
pub(crate) struct Alphabet {
    /// The characters for 62 and 63.
    last_two: [u8; 2],
}

/// `+` and `/` (RFC 4648 section 4), what `cookie-signature` uses.
pub(crate) const STANDARD: Alphabet = Alphabet {
    last_two: [b'+', b'/'],
};

/// `-` and `_` (RFC 4648 section 5), for values that go into URLs and storage keys.
pub(crate) const URL_SAFE: Alphabet = Alphabet {
    last_two: [b'-', b'_'],
};

/// Unpadded base64 of a tag (see [`encode_unpadded`]).
pub(crate) fn encode_tag(tag: &[u8; TAG_LEN], alphabet: Alphabet) -> [u8; ENCODED_TAG_LEN] {
    let mut out = [0u8; ENCODED_TAG_LEN];
    encode_unpadded(tag, alphabet, &mut out);
    out
}

/// Unpadded base64 of `N` bytes, `M` the encoded length (`(4 * N).div_ceil(3)`), into `out`.
///
/// Branch-free arithmetic rather than a table lookup, so that encoding a secret (a tag, a session
/// id) leaves no trace in the data cache; split into 6-bit values first, then mapped in one loop
/// that the compiler turns into vector instructions. About a third of the base64 crate's time on
/// these short inputs.
pub(crate) fn encode_unpadded<const N: usize, const M: usize>(
    input: &[u8; N],
    alphabet: Alphabet,
    out: &mut [u8; M],
) {
    const MAX: usize = 48;
    const {
        assert!(
            N <= MAX && M == (4 * N).div_ceil(3),
            "encoded length of N bytes"
        );
    }
    // Whole groups of three bytes (the last one padded with zeros) make four values each, of which
    // unpadded base64 keeps the first `M`.
    let mut padded = [0u8; MAX];
    padded[..N].copy_from_slice(input);
    let mut sextets = [0u8; MAX / 3 * 4];
    for (group, values) in padded.chunks_exact(3).zip(sextets.chunks_exact_mut(4)) {
        values[0] = group[0] >> 2;
        values[1] = ((group[0] & 0x03) << 4) | (group[1] >> 4);
        values[2] = ((group[1] & 0x0f) << 2) | (group[2] >> 6);
        values[3] = group[2] & 0x3f;
    }
    for (char, &value) in out.iter_mut().zip(&sextets) {
        *char = base64_char(value, alphabet);
    }
}

/// The base64 character of a 6-bit value, computed without branches or lookups: start from `A`
/// and add, for each range the value is past, the distance to the next range's first character.
fn base64_char(value: u8, alphabet: Alphabet) -> u8 {
    let value = i16::from(value);
    // All ones when `value` is above `limit`, all zeros otherwise (arithmetic shift of a negative).
    let above = |limit: i16| (limit - value) >> 8;
    let mut char = value + i16::from(b'A');
    char += above(25) & (i16::from(b'a') - i16::from(b'A') - 26);
    char += above(51) & (i16::from(b'0') - i16::from(b'a') - 26);
    char += above(61) & (i16::from(alphabet.last_two[0]) - i16::from(b'0') - 10);
    char += above(62) & (i16::from(alphabet.last_two[1]) - i16::from(alphabet.last_two[0]) - 1);
    char as u8
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

    use super::*;

    #[test]
    fn tags_are_hmac_sha256() {
        // RFC 4231, test case 2 (a key shorter than a block) and 6 (longer than a block).
        let short = TagKey::new(b"Jefe");
        assert_eq!(
            hex(&short.tag(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long = TagKey::new(&[0xaa; 131]);
        assert_eq!(
            hex(&long.tag(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn encodes_as_the_base64_crate_does() {
        let key = TagKey::new(b"a secret");
        for message in 0..2000u32 {
            let tag = key.tag(&message.to_le_bytes());
            assert_eq!(
                encode_tag(&tag, STANDARD)[..],
                *STANDARD_NO_PAD.encode(tag).as_bytes()
            );
            assert_eq!(
                encode_tag(&tag, URL_SAFE)[..],
                *URL_SAFE_NO_PAD.encode(tag).as_bytes()
            );
        }
        for value in 0..64u8 {
            let mut tag = [0u8; TAG_LEN];
            tag[0] = value << 2;
            assert_eq!(
                encode_tag(&tag, STANDARD)[0],
                STANDARD_NO_PAD.encode(tag).as_bytes()[0],
                "{value}"
            );
        }
    }

    #[test]
    fn encodes_ids_as_the_base64_crate_does() {
        for seed in 0..500u32 {
            let bytes: [u8; 24] = std::array::from_fn(|i| {
                (seed.wrapping_mul(2_654_435_761) >> (i % 24)) as u8 ^ (i as u8).wrapping_mul(37)
            });
            let mut out = [0u8; 32];
            encode_unpadded(&bytes, URL_SAFE, &mut out);
            assert_eq!(out[..], *URL_SAFE_NO_PAD.encode(bytes).as_bytes());
        }
        let mut out = [0u8; 2];
        encode_unpadded(&[0xff], STANDARD, &mut out);
        assert_eq!(&out, b"/w");
    }

    #[test]
    fn verifies_only_the_exact_encoding() {
        let key = TagKey::new(b"a secret");
        let signature = key.encoded_tag(b"id");
        assert!(key.verify_encoded(b"id", &signature));
        assert!(!key.verify_encoded(b"id2", &signature));
        assert!(!key.verify_encoded(b"id", &signature[..42]));
        let mut padded = signature.to_vec();
        padded.push(b'=');
        assert!(!key.verify_encoded(b"id", &padded));
        // The last character carries two unused bits: another character with the same four
        // leading bits decodes to the same tag with a lenient decoder, and is refused here.
        const CHARS: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let last = CHARS.iter().position(|&c| c == signature[42]).unwrap();
        assert_eq!(last % 4, 0, "the unused bits are zero");
        let mut loose = signature;
        loose[42] = CHARS[last + 1];
        assert!(
            STANDARD_NO_PAD.decode(loose).is_err(),
            "the base64 crate refuses it too"
        );
        assert!(!key.verify_encoded(b"id", &loose));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
