//! A whole `Cookie` header, as a client sends it: find the session cookie the way the middleware
//! does, then verify it under a signed and a private key ring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesame_core::find_cookie_value;
use sesame_fuzz::{COOKIE_NAME, check_cookie_value, text};

fuzz_target!(|data: &[u8]| {
    let header = text(data);
    if let Some(value) = find_cookie_value(&header, COOKIE_NAME) {
        // What is found is a piece of one `;`-separated pair of the header, never more.
        assert!(header.contains(value));
        assert!(!value.contains(';'));
        check_cookie_value(value);
    }
});
