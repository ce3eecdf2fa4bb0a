//! Property tests of the parts of sesame-core that read attacker-controlled input: cookie values
//! (signed and private), the `Cookie` header, percent-decoding, stored records and session ids.
//!
//! The unit tests pin known vectors; these check the same functions over generated inputs, so an
//! edge case nobody wrote down (a `%` in an id, a quote in a header, a non-canonical base64 tail)
//! is still covered on every `cargo test`. The fuzz targets in `fuzz/` push the same entry points
//! much further, but need a separate run; these keep a cheap version in the normal suite.
//!
//! Case counts are kept at 256–512 per property so the file runs in a few seconds on two cores.
#![allow(clippy::unwrap_used)]

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use sesame_core::serde_json::{Map, Number, Value};
use sesame_core::time::OffsetDateTime;
use sesame_core::{
    COOKIE_KEY, CookieState, Error, KeyRing, MAX_ID_LEN, Priority, Record, SameSite, SessionId,
    decode_uri_component, encode_uri_component, find_cookie_value,
};

/// Every byte a session id may hold: visible ASCII except the four a cookie value cannot carry
/// unencoded. Written out independently of `SessionId::parse` so the tests check it, not copy it.
fn id_alphabet() -> Vec<char> {
    ('!'..='~')
        .filter(|c| !matches!(c, '"' | ',' | ';' | '\\'))
        .collect()
}

/// Any valid session id: 1 to [`MAX_ID_LEN`] characters of the id alphabet, so ids with `%`, `.`
/// or `=` (which signing and percent-encoding must survive) come up, not only generated ones.
fn valid_id() -> impl Strategy<Value = SessionId> {
    vec(select(id_alphabet()), 1..=MAX_ID_LEN)
        .prop_map(|chars| SessionId::parse(&chars.into_iter().collect::<String>()).unwrap())
}

/// A secret of the accepted length (32 bytes and up), any bytes.
fn secret() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 32..=96)
}

fn signed_ring(secret: &[u8]) -> KeyRing {
    KeyRing::new([secret]).unwrap()
}

fn private_ring(secret: &[u8]) -> KeyRing {
    KeyRing::builder().private(true).build([secret]).unwrap()
}

/// Bytes read as Latin-1 (each byte one `char`), which is how a header value of arbitrary octets
/// reaches code that reads it as text.
fn latin1() -> impl Strategy<Value = String> {
    vec(any::<u8>(), 0..700).prop_map(|bytes| bytes.into_iter().map(char::from).collect())
}

/// Garbage shaped like a signed cookie (`s:<id>.<43 base64 characters>`, sometimes
/// percent-encoded), so generated inputs get past the cheap checks and reach the HMAC check.
fn signed_lookalike() -> impl Strategy<Value = String> {
    (valid_id(), "[A-Za-z0-9+/]{43}", any::<bool>()).prop_map(|(id, signature, encode)| {
        let raw = format!("s:{id}.{signature}");
        if encode {
            encode_uri_component(&raw)
        } else {
            raw
        }
    })
}

/// Garbage shaped like a private cookie (base64url of a plausible length), to reach AES-GCM.
fn private_lookalike() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{0,300}"
}

/// Replaces the character at `index` (modulo the length) with `replacement`, or `None` when that
/// would not change the string.
fn mutate(value: &str, index: usize, replacement: char) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    let index = index % chars.len();
    if chars[index] == replacement {
        return None;
    }
    let mut mutated = chars;
    mutated[index] = replacement;
    Some(mutated.into_iter().collect())
}

/// A replacement character: mostly from the alphabets cookie values are made of (a random
/// Unicode scalar almost never lands on a meaningful one), sometimes anything.
fn replacement_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=.:%s"
                .chars()
                .collect::<Vec<_>>()
        ),
        1 => any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A signed cookie opens to its id under the same secret, both percent-encoded (as set in
    /// `Set-Cookie`) and raw when the id has no `%` (as express-session also accepts), and under a
    /// rotated ring that keeps the secret in second place.
    #[test]
    fn signed_cookie_round_trips(id in valid_id(), secret in secret(), newer in secret()) {
        let ring = signed_ring(&secret);
        let value = ring.sign_cookie_value(&id);
        prop_assert_eq!(ring.verify_cookie_value(&value), Some(id.clone()));
        if !id.as_str().contains('%') {
            prop_assert_eq!(ring.verify_cookie_value(&ring.sign(&id)), Some(id.clone()));
        }
        let rotated = KeyRing::new([&newer[..], &secret[..]]).unwrap();
        prop_assert_eq!(rotated.verify_cookie_value(&value), Some(id));
    }

    /// A private cookie opens to its id under the same secret (also after rotation), never shows
    /// the id, and differs on every sealing (fresh nonce).
    #[test]
    fn private_cookie_round_trips(id in valid_id(), secret in secret(), newer in secret()) {
        let ring = private_ring(&secret);
        let value = ring.sign_cookie_value(&id);
        prop_assert_eq!(ring.verify_cookie_value(&value), Some(id.clone()));
        prop_assert_ne!(&value, &ring.sign_cookie_value(&id));
        // A one- or two-character id could appear in base64 by chance; longer ones must not.
        if id.as_str().len() >= 8 {
            prop_assert!(!value.contains(id.as_str()));
        }
        let rotated = KeyRing::builder()
            .private(true)
            .build([&newer[..], &secret[..]])
            .unwrap();
        prop_assert_eq!(rotated.verify_cookie_value(&value), Some(id));
    }

    /// Nothing a client can send makes verification panic or yield an id: arbitrary Unicode,
    /// arbitrary bytes as Latin-1, and garbage shaped like each kind of cookie.
    #[test]
    fn verify_rejects_arbitrary_input(
        text in any::<String>(),
        bytes in latin1(),
        signed in signed_lookalike(),
        private in private_lookalike(),
        secret in secret(),
    ) {
        let rings = [signed_ring(&secret), private_ring(&secret)];
        for ring in &rings {
            for input in [&text, &bytes, &signed, &private] {
                prop_assert_eq!(ring.verify_cookie_value(input), None, "{:?}", input);
            }
        }
    }

    /// Changing any one character of a valid cookie makes it invalid, in both modes. The only
    /// exception is a change percent-decoding undoes (`%3A` and `%3a` are the same byte), which
    /// express-session accepts as well.
    #[test]
    fn one_character_changes_are_rejected(
        id in valid_id(),
        secret in secret(),
        index in any::<usize>(),
        replacement in replacement_char(),
    ) {
        let signed = signed_ring(&secret);
        for value in [signed.sign_cookie_value(&id), signed.sign(&id)] {
            let Some(mutated) = mutate(&value, index, replacement) else {
                continue;
            };
            if decode_uri_component(&mutated) != decode_uri_component(&value) {
                prop_assert_eq!(signed.verify_cookie_value(&mutated), None, "{:?}", mutated);
            }
        }
        let private = private_ring(&secret);
        let value = private.sign_cookie_value(&id);
        if let Some(mutated) = mutate(&value, index, replacement) {
            prop_assert_eq!(private.verify_cookie_value(&mutated), None, "{:?}", mutated);
        }
    }

    /// A cookie sealed under one secret opens under no other, in either mode, and a signed ring
    /// does not accept a private cookie of the same secret or the other way round.
    #[test]
    fn other_secrets_do_not_verify(id in valid_id(), one in secret(), other in secret()) {
        prop_assume!(one != other);
        let signed = signed_ring(&one).sign_cookie_value(&id);
        let private = private_ring(&one).sign_cookie_value(&id);
        prop_assert_eq!(signed_ring(&other).verify_cookie_value(&signed), None);
        prop_assert_eq!(private_ring(&other).verify_cookie_value(&private), None);
        prop_assert_eq!(private_ring(&one).verify_cookie_value(&signed), None);
        prop_assert_eq!(signed_ring(&one).verify_cookie_value(&private), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// `decode_uri_component` undoes `encode_uri_component` for every string, and the encoding
    /// uses only `encodeURIComponent`'s unreserved characters and `%XX` escapes.
    #[test]
    fn uri_component_round_trips(text in any::<String>()) {
        let encoded = encode_uri_component(&text);
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric()
            || b"-_.!~*'()%".contains(&b)), "{:?}", encoded);
        prop_assert_eq!(decode_uri_component(&encoded), text.as_str());
    }

    /// Decoding arbitrary input never panics and gives back the input whenever it has no `%`.
    #[test]
    fn uri_decode_total(text in any::<String>(), bytes in latin1()) {
        for input in [&text, &bytes] {
            let decoded = decode_uri_component(input);
            if !input.contains('%') {
                prop_assert_eq!(&decoded, input);
            }
        }
    }

    /// Header parsing never panics, and what it finds is a slice of the header itself.
    #[test]
    fn find_cookie_value_total(header in any::<String>(), latin in latin1(), name in ".{0,12}") {
        for header in [&header, &latin] {
            for name in [name.as_str(), "connect.sid", ""] {
                if let Some(found) = find_cookie_value(header, name) {
                    let start = found.as_ptr() as usize - header.as_ptr() as usize;
                    prop_assert!(start + found.len() <= header.len());
                    prop_assert!(!found.contains(';'));
                }
            }
        }
    }

    /// The scan agrees with a plain reading of `cookie.parse`'s rule (split at `;`, the name
    /// before the first `=` of a pair, blanks trimmed, one pair of quotes stripped, the first
    /// match wins) on any header and name, including names and headers made of the delimiters.
    #[test]
    fn find_cookie_value_agrees_with_a_plain_reading(
        header in "[a-c =;\t\"]{0,40}",
        name in "[a-c =;\t]{0,3}",
        any_header in any::<String>(),
    ) {
        for header in [header.as_str(), any_header.as_str()] {
            for name in [name.as_str(), "a", "ab", ""] {
                prop_assert_eq!(
                    find_cookie_value(header, name),
                    plain_cookie_reading(header, name),
                    "{:?} in {:?}", name, header
                );
            }
        }
    }

    /// `name=value` placed anywhere among other pairs is found, quoted or not, and an earlier
    /// occurrence wins over a later one, as `cookie.parse` decides.
    #[test]
    fn find_cookie_value_finds_the_first(
        name in "[A-Za-z0-9_.!#$&'*+^`|~-]{1,16}",
        value in "[^;\\s]([^;]{0,30}[^;\\s])?",
        quoted in any::<bool>(),
        later in "[^;]{0,20}",
        others in vec("[^;]{0,24}", 0..8),
        position in any::<usize>(),
        separators in vec("; ?| ?; ?|;", 10),
    ) {
        prop_assume!(!(value.len() >= 2 && value.starts_with('"') && value.ends_with('"')));
        // Pairs that would parse as the same name are not "other" pairs.
        let mut pairs: Vec<String> = others
            .into_iter()
            .filter(|pair| pair.split_once('=').is_none_or(|(key, _)| key.trim() != name))
            .collect();
        let position = position % (pairs.len() + 1);
        let pair = if quoted {
            format!("{name}=\"{value}\"")
        } else {
            format!("{name}={value}")
        };
        pairs.insert(position, pair);
        pairs.push(format!("{name}={later}"));
        let mut header = String::new();
        for (i, pair) in pairs.iter().enumerate() {
            if i > 0 {
                header.push_str(&separators[i % separators.len()]);
            }
            header.push_str(pair);
        }
        prop_assert_eq!(find_cookie_value(&header, &name), Some(value.as_str()), "{:?}", header);
    }

    /// `SessionId::parse` accepts exactly 1 to 128 bytes of visible ASCII minus `" , ; \`, and
    /// keeps the string as it is.
    #[test]
    fn session_id_parse_is_exact(
        any_text in ".{0,140}",
        ascii in vec(any::<u8>().prop_map(|b| char::from(b & 0x7f)), 0..=140),
        near_valid in vec(select(id_alphabet()), 120..=136),
        unit in "[ -~]",
    ) {
        let ascii: String = ascii.into_iter().collect();
        let near_valid: String = near_valid.into_iter().collect();
        for input in [&any_text, &ascii, &near_valid, &unit] {
            let expected = (1..=128).contains(&input.len())
                && input.chars().all(|c| c > ' ' && c < '\u{7f}' && !"\",;\\".contains(c));
            match SessionId::parse(input) {
                Ok(id) => {
                    prop_assert!(expected, "accepted {:?}", input);
                    prop_assert_eq!(id.as_str(), input.as_str());
                }
                Err(_) => prop_assert!(!expected, "rejected {:?}", input),
            }
        }
    }

    /// Arbitrary bytes, and arbitrary JSON with a `cookie` member, decode to a record or to
    /// [`Error::Decode`], never to a panic or another error.
    #[test]
    fn record_from_json_total(bytes in vec(any::<u8>(), 0..512), value in json_value(), cookie in json_value()) {
        let mut object = Map::new();
        object.insert("data".into(), value.clone());
        object.insert(COOKIE_KEY.into(), cookie);
        let shaped = Value::Object(object).to_string();
        for input in [&bytes[..], shaped.as_bytes(), value.to_string().as_bytes()] {
            match Record::from_json(input) {
                Ok(_) | Err(Error::Decode { .. }) => {}
                Err(other) => prop_assert!(false, "{:?} gave {:?}", input, other),
            }
        }
    }
}

/// Any JSON number: every 64-bit integer, every finite double (infinities and NaN are not JSON),
/// and short decimals such as people write. Doubles with 17 significant digits only read back
/// exactly because sesame-core turns on serde_json's `float_roundtrip` (see
/// `tests/fuzz_regressions.rs`).
fn json_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", Number::from_f64),
        (-999_999_999i64..=999_999_999, 0u32..=4).prop_map(|(mantissa, decimals)| {
            // Both operands are exact, so the quotient is the double nearest the decimal.
            let float = mantissa as f64 / 10f64.powi(decimals as i32);
            Number::from_f64(float).unwrap()
        }),
    ]
}

/// Any JSON value up to depth 4, with at most 8 members per array or object.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number().prop_map(Value::Number),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..8)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Session data: any map of JSON values, without the reserved `cookie` key.
fn session_data() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(any::<String>(), json_value(), 0..8).prop_map(|members| {
        members
            .into_iter()
            .filter(|(key, _)| key != COOKIE_KEY)
            .collect()
    })
}

/// Field names `CookieState` reads itself; an unknown field with one of them would not land in
/// `extra`.
const KNOWN_COOKIE_FIELDS: [&str; 9] = [
    "originalMaxAge",
    "expires",
    "secure",
    "httpOnly",
    "path",
    "domain",
    "sameSite",
    "partitioned",
    "priority",
];

/// Any cookie state express-session could have written: `originalMaxAge` within JavaScript's
/// safe integers (Node stores a double), `expires` at millisecond precision within the four-digit
/// years of `Date.prototype.toJSON`, and unknown fields kept in `extra`.
fn cookie_state() -> impl Strategy<Value = CookieState> {
    const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
    const YEAR_10000_MS: i64 = 253_402_300_800_000;
    (
        (
            proptest::option::of(0..=MAX_SAFE_INTEGER),
            proptest::option::of(-62_167_219_200_000i64..YEAR_10000_MS),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>()),
        ),
        (
            proptest::option::of(select(vec![
                SameSite::Strict,
                SameSite::Lax,
                SameSite::None,
            ])),
            proptest::option::of(any::<bool>()),
            proptest::option::of(select(vec![
                Priority::Low,
                Priority::Medium,
                Priority::High,
            ])),
            btree_map("[a-zA-Z]{1,12}", json_value(), 0..4),
        ),
    )
        .prop_map(
            |(
                (max_age, expires_ms, secure, http_only, path, domain),
                (same_site, partitioned, priority, extra),
            )| {
                let mut cookie = CookieState::default();
                cookie.original_max_age = max_age;
                cookie.expires = expires_ms.map(|ms| {
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
                });
                cookie.secure = secure;
                cookie.http_only = http_only;
                cookie.path = path.map(Into::into);
                cookie.domain = domain.map(Into::into);
                cookie.same_site = same_site;
                cookie.partitioned = partitioned;
                cookie.priority = priority;
                cookie.extra = extra
                    .into_iter()
                    .filter(|(key, _)| !KNOWN_COOKIE_FIELDS.contains(&key.as_str()))
                    .collect();
                cookie
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A record written to express-session's JSON reads back equal: every data value and every
    /// cookie field survives, which is what lets a store hold sesame's and Node's sessions alike.
    #[test]
    fn record_json_round_trips(data in session_data(), cookie in cookie_state()) {
        let record = Record::from_parts(data, cookie);
        let json = record.to_json().unwrap();
        prop_assert_eq!(&Record::from_json(json.as_bytes()).unwrap(), &record, "{}", json);
        let value = record.to_value().unwrap();
        prop_assert_eq!(&Record::from_value(value).unwrap(), &record);
    }
}

/// A cookie state as the layer may hand one to a store: any stored one (see [`cookie_state`]),
/// with a deadline, an expiry with digits below the millisecond and in another offset, or no
/// extra fields (the usual case, and the only one [`CookieState::as_stored`] answers for).
fn cookie_state_to_store() -> impl Strategy<Value = CookieState> {
    (
        cookie_state(),
        any::<bool>(),
        proptest::option::of(0i64..4_000_000_000_000),
        0u32..1_000_000,
        -12i8..=12,
    )
        .prop_map(|(mut cookie, drop_extra, deadline_ms, sub_millis, hours)| {
            if drop_extra {
                cookie.extra.clear();
            }
            cookie.deadline = deadline_ms.map(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
            });
            cookie.expires = cookie.expires.map(|at| {
                let offset = time::UtcOffset::from_hms(hours, 0, 0).unwrap();
                at.replace_nanosecond(at.nanosecond() + sub_millis)
                    .unwrap()
                    .to_offset(offset)
            });
            cookie
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// What `as_stored` says a cookie state reads back as is what decoding its JSON gives: a store
    /// may cache a record it wrote without decoding its own output.
    #[test]
    fn a_cookie_state_as_stored_is_what_it_reads_back_as(
        data in session_data(),
        cookie in cookie_state_to_store(),
    ) {
        let Some(stored) = cookie.as_stored() else {
            // Only with extra fields, or values outside what JavaScript writes.
            let outside_years = cookie
                .expires
                .is_some_and(|at| !(0..=9999).contains(&at.to_offset(time::UtcOffset::UTC).year()));
            prop_assert!(!cookie.extra.is_empty() || outside_years);
            return Ok(());
        };
        let record = Record::from_parts(data, cookie);
        let json = record.to_json().unwrap();
        let read = Record::from_json(json.as_bytes()).unwrap();
        prop_assert_eq!(read.cookie(), &stored, "{}", json);
        prop_assert_eq!(
            read.cookie().expires.map(|at| at.offset()),
            stored.expires.map(|at| at.offset())
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The hand-written JSON of a cookie state is serde_json's, byte for byte: the Redis store
    /// writes it as the record's cookie member, which must be what `Record::to_json` writes.
    #[test]
    fn a_cookie_states_own_json_is_serde_jsons(
        cookie in cookie_state_to_store(),
        years_before_zero in proptest::option::of(1i32..=9999),
    ) {
        let mut cookie = cookie;
        if let Some(years) = years_before_zero {
            // Years JavaScript writes with six digits and a sign: the formatter's own way.
            cookie.expires = Some(
                time::Date::from_calendar_date(-years, time::Month::March, 1)
                    .unwrap()
                    .midnight()
                    .assume_utc(),
            );
        }
        let mut written = String::new();
        cookie.write_json(&mut written).unwrap();
        prop_assert_eq!(written, serde_json::to_string(&cookie).unwrap());
    }
}

/// `cookie.parse`'s rule for one name, written plainly: the reference for the scanner, which
/// finds the same with `memchr` and without splitting.
fn plain_cookie_reading<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    let blank = |c: char| c == ' ' || c == '\t';
    header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if key.trim_matches(blank) != name {
            return None;
        }
        let value = value.trim_matches(blank);
        Some(
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value),
        )
    })
}
