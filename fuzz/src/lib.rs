//! What the fuzz targets share: fixed key rings (so the seed corpus in `seeds/` holds cookies
//! that really verify, and the fuzzer starts next to valid input instead of far from it) and the
//! checks every verified cookie must pass.

use std::sync::LazyLock;

use sesame_core::{KeyRing, SessionId, decode_uri_component};

/// The secret of the signed ring. Public on purpose: these rings only exist for fuzzing.
pub const SIGNED_SECRET: &str = "sesame fuzzing secret, signed mode, 32+ bytes";
/// The secret of the private ring.
pub const PRIVATE_SECRET: &str = "sesame fuzzing secret, private mode, 32+ bytes";
/// The cookie name the header target looks for, express-session's default.
pub const COOKIE_NAME: &str = "connect.sid";

/// Signed mode (express-session's format).
pub static SIGNED: LazyLock<KeyRing> = LazyLock::new(|| {
    KeyRing::new([SIGNED_SECRET]).expect("the fuzzing secret is long enough")
});

/// Private mode (AES-256-GCM).
pub static PRIVATE: LazyLock<KeyRing> = LazyLock::new(|| {
    KeyRing::builder()
        .private(true)
        .build([PRIVATE_SECRET])
        .expect("the fuzzing secret is long enough")
});

/// Verifies `value` under both rings and checks what they accept.
///
/// The fuzzer cannot forge a MAC, so an accepted value must be one of the seeds or a variation
/// the format allows, and each ring must then agree with itself:
/// - signed: the value, percent-decoded, is exactly `s:<id>.<signature>` as the ring signs it,
///   since HMAC signatures are deterministic and base64 without padding has one canonical form;
/// - private: the id opens again after resealing it, and the other ring rejects the value.
///
/// Panics (which libFuzzer reports as a crash) when a check fails.
pub fn check_cookie_value(value: &str) {
    if let Some(id) = SIGNED.verify_cookie_value(value) {
        assert_eq!(
            decode_uri_component(value),
            SIGNED.sign(&id),
            "a signed value other than the canonical one verified"
        );
        assert_eq!(PRIVATE.verify_cookie_value(value), None);
        assert_round_trip(&SIGNED, &id);
    }
    if let Some(id) = PRIVATE.verify_cookie_value(value) {
        assert_eq!(SIGNED.verify_cookie_value(value), None);
        assert_round_trip(&PRIVATE, &id);
    }
}

fn assert_round_trip(ring: &KeyRing, id: &SessionId) {
    assert_eq!(
        ring.verify_cookie_value(&ring.sign_cookie_value(id)).as_ref(),
        Some(id),
        "a verified id does not survive signing again"
    );
}

/// Reads fuzzer bytes as text: as UTF-8 when they are, else byte by byte as Latin-1 (how an
/// obs-text header byte would reach code reading it as a string), so every input is used.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(data) {
        Ok(text) => text.into(),
        Err(_) => data.iter().copied().map(char::from).collect::<String>().into(),
    }
}
