//! A cookie value on its own: percent-decoding, then verification under a signed and a private
//! key ring (the signature check and the AES-GCM opening).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesame_core::{decode_uri_component, encode_uri_component};
use sesame_fuzz::{check_cookie_value, text};

fuzz_target!(|data: &[u8]| {
    let value = text(data);
    check_cookie_value(&value);
    // Decoding takes any string; whatever it gives, encoding it and decoding again is stable.
    let decoded = decode_uri_component(&value);
    assert_eq!(decode_uri_component(&encode_uri_component(&decoded)), decoded);
    if !value.contains('%') {
        assert_eq!(decoded, value);
    }
});
