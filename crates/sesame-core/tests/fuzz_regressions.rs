//! Inputs the fuzz targets in `fuzz/` found, minimized, kept so the bugs stay fixed without a
//! fuzzing run. Each test names the target that found it.
#![allow(clippy::unwrap_used)]

use sesame_core::Record;

/// Reads `json` as a record, writes it back and reads it again: what sesame does to every
/// session it loads and saves. Both reads must give the same record.
fn assert_round_trip(json: &str) {
    let record = Record::from_json(json.as_bytes()).unwrap();
    let written = record.to_json().unwrap();
    assert_eq!(
        Record::from_json(written.as_bytes()).unwrap(),
        record,
        "{json} was written back as {written}"
    );
}

/// `record_json`: a number with more digits than a double holds was parsed one ULP off by
/// serde_json's default (fast, not correctly rounded) float parser, so the value written back
/// read as a different double, and every load/save cycle could change stored numbers. Node writes
/// such values (`JSON.stringify(8.666666666666667e44)`), so sesame-core enables serde_json's
/// `float_roundtrip` feature.
#[test]
fn long_numbers_survive_a_round_trip() {
    // The minimized input, in the cookie's unknown fields and in the session data.
    assert_round_trip(r#"{"cookie":{"x":866666666666666666666666666666666666666400000}}"#);
    assert_round_trip(r#"{"cookie":{},"n":866666666666666666666666666666666666666400000}"#);
    // What Node writes for the same double, and other doubles that need all 17 digits.
    assert_round_trip(r#"{"cookie":{},"n":8.666666666666667e+44,"m":0.30000000000000004}"#);
    let record = Record::from_json(br#"{"cookie":{},"n":8.666666666666667e+44}"#).unwrap();
    assert_eq!(record.data()["n"].as_f64(), Some(8.666666666666667e44));
}

/// `record_json`: an `expires` with more than millisecond precision (`37.9203Z`) was kept to the
/// tenth of a millisecond but written back with three digits, so the record changed on its first
/// load and save. It is now read as JavaScript's `Date` reads it, truncated to the millisecond.
#[test]
fn sub_millisecond_expiry_survives_a_round_trip() {
    // The minimized input.
    assert_round_trip(
        r#"{"cookie":{"originalMaxAge":86400000,"expires":"2026-10-24T00:06:37.9203Z","secure":false,"":["admin"]},"views":3}"#,
    );
    let record =
        Record::from_json(br#"{"cookie":{"expires":"2026-10-24T00:06:37.9209Z"}}"#).unwrap();
    let written = record.to_json().unwrap();
    assert!(
        written.contains(r#""expires":"2026-10-24T00:06:37.920Z""#),
        "{written}"
    );
}
