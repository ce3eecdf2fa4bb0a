//! The `session` field: express-session's record as a JSON string (connect-mongo's default
//! `stringify: true`) or as a BSON sub-document (`stringify: false`), and back.

use mongodb::bson::{self, Bson, Document};
use sesame_core::serde_json::{self, Map, Number, Value};
use sesame_core::time::OffsetDateTime;
use sesame_core::{COOKIE_KEY, CookieState, Error, Record};

/// What makes a stored document unreadable as a session (kept as the source of
/// [`Error::Decode`]), or a record unwritable (of [`Error::Encode`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Corrupt {
    #[error("the session document has no `session` field")]
    MissingSession,
    #[error("the `session` field is a BSON {0:?}, not a JSON string or a document")]
    SessionType(bson::spec::ElementType),
    #[error("a cookie state did not serialize to a JSON object")]
    CookieNotAnObject,
}

/// The largest integer a JavaScript number (a BSON double) holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// The `session` field for `record`.
pub(crate) fn encode(record: &Record, stringify: bool) -> Result<Bson, Error> {
    if stringify {
        return Ok(Bson::String(record.to_json()?));
    }
    let mut document: Document = record
        .data()
        .iter()
        .filter(|(key, _)| key.as_str() != COOKIE_KEY)
        .map(|(key, value)| (key.clone(), json_to_bson(value)))
        .collect();
    document.insert(COOKIE_KEY, cookie_document(record.cookie())?);
    Ok(Bson::Document(document))
}

/// The `cookie` object of a record as connect-mongo stores it in a sub-document:
/// `req.session.cookie.toJSON()` as it is, in which `expires` is a JavaScript Date, so a BSON date
/// rather than a string. Written the same way so that an Express app reads it back.
pub(crate) fn cookie_document(cookie: &CookieState) -> Result<Document, Error> {
    let Value::Object(map) = serde_json::to_value(cookie).map_err(Error::encode)? else {
        // The cookie state always serializes to an object; anything else is a serializer bug.
        return Err(Error::encode(Corrupt::CookieNotAnObject));
    };
    let mut document: Document = map
        .iter()
        .map(|(key, value)| (key.clone(), json_to_bson(value)))
        .collect();
    if let Some(expires) = cookie.expires {
        document.insert("expires", Bson::DateTime(to_bson_date(expires)));
    }
    Ok(document)
}

/// The record held in a session document's `session` field, whichever form it was written in.
pub(crate) fn decode_session(session: &Bson) -> Result<Record, Error> {
    match session {
        Bson::String(json) => Record::from_json(json.as_bytes()),
        Bson::Document(session) => Record::from_value(Value::Object(document_to_object(session))),
        other => Err(Error::decode(Corrupt::SessionType(other.element_type()))),
    }
}

/// The error for a session document without a `session` field.
pub(crate) fn missing_session() -> Error {
    Error::decode(Corrupt::MissingSession)
}

/// The record held in a session document.
pub(crate) fn decode(document: &Document) -> Result<Record, Error> {
    document
        .get("session")
        .map_or_else(|| Err(missing_session()), decode_session)
}

/// A BSON date (milliseconds, as JavaScript's `Date`) for a time.
pub(crate) fn to_bson_date(at: OffsetDateTime) -> bson::DateTime {
    let millis = at.unix_timestamp_nanos() / 1_000_000;
    bson::DateTime::from_millis(i64::try_from(millis).unwrap_or(if millis < 0 {
        i64::MIN
    } else {
        i64::MAX
    }))
}

/// A JSON value as the Node driver writes the JavaScript value `JSON.parse` gives for it.
pub(crate) fn json_to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        // As the Node driver writes numbers: 32-bit integers as int32, other integers as int64
        // (exact, where JavaScript would round beyond 2^53), the rest as doubles.
        Value::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(map) => Bson::Document(
            map.iter()
                .map(|(key, value)| (key.clone(), json_to_bson(value)))
                .collect(),
        ),
    }
}

fn document_to_object(document: &Document) -> Map<String, Value> {
    document
        .iter()
        .map(|(key, value)| (key.clone(), bson_to_json(value)))
        .collect()
}

/// BSON to the JSON that `JSON.stringify` would give for the value the Node driver reads, so a
/// sub-document reads the same as its stringified twin: dates become ISO 8601 strings, integral
/// doubles become integers, non-finite doubles `null`.
pub(crate) fn bson_to_json(value: &Bson) -> Value {
    match value {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) if f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER => {
            // Exact: an integral double within ±2^53 converts to i64 without loss.
            Value::from(*f as i64)
        }
        Bson::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(bson_to_json).collect()),
        Bson::Document(document) => Value::Object(document_to_object(document)),
        Bson::DateTime(at) => Value::String(js_date_json(*at)),
        // ObjectIds, binaries, decimals...: not written by express-session; keep them readable
        // as MongoDB's relaxed extended JSON.
        other => other.clone().into_relaxed_extjson(),
    }
}

/// A date as JavaScript's `Date.prototype.toJSON` writes it: `2026-11-24T00:06:37.123Z`.
fn js_date_json(at: bson::DateTime) -> String {
    let millis = at.timestamp_millis();
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ),
        // Outside the range `time` handles (JavaScript's is wider); keep the instant readable.
        Err(_) => millis.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;
    use sesame_core::CookieState;
    use sesame_core::serde_json::json;
    use std::time::Duration;

    fn record() -> Record {
        let mut cookie = CookieState::default();
        cookie.set_max_age(sesame_core::now(), Some(Duration::from_secs(60)));
        let mut record = Record::new(cookie);
        let data = record.data_mut();
        data.insert("small".into(), json!(7));
        data.insert("big".into(), json!(9_007_199_254_740_991_i64));
        data.insert("float".into(), json!(1.5));
        data.insert("list".into(), json!([null, true, "x", {"deep": -1}]));
        record
    }

    #[test]
    fn both_forms_round_trip() {
        let record = record();
        for stringify in [true, false] {
            let session = encode(&record, stringify).expect("encode");
            let back = decode(&doc! {"session": session}).expect("decode");
            assert_eq!(back, record, "stringify: {stringify}");
        }
    }

    #[test]
    fn sub_document_keeps_cookie_expires_as_a_date_and_numbers_typed() {
        let record = record();
        let Bson::Document(session) = encode(&record, false).expect("encode") else {
            panic!("a sub-document");
        };
        let expires = session
            .get_document("cookie")
            .expect("cookie")
            .get_datetime("expires")
            .expect("a BSON date");
        assert_eq!(
            *expires,
            to_bson_date(record.cookie().expires.expect("expires"))
        );
        assert_eq!(session.get("small"), Some(&Bson::Int32(7)));
        assert_eq!(
            session.get("big"),
            Some(&Bson::Int64(9_007_199_254_740_991))
        );
        assert_eq!(session.get("float"), Some(&Bson::Double(1.5)));
    }

    #[test]
    fn reads_documents_as_node_writes_them() {
        let session = doc! {
            "views": 3.0,
            "ratio": 0.25,
            "at": bson::DateTime::from_millis(1_795_478_797_123),
            "cookie": {
                "originalMaxAge": 60000.0,
                "expires": bson::DateTime::from_millis(1_795_478_797_123),
                "httpOnly": true,
                "path": "/",
            },
        };
        let record = decode(&doc! {"session": session}).expect("decode");
        assert_eq!(record.data()["views"], json!(3));
        assert_eq!(record.data()["ratio"], json!(0.25));
        assert_eq!(record.data()["at"], json!("2026-11-24T00:06:37.123Z"));
        assert_eq!(record.cookie().original_max_age, Some(60_000));
        assert_eq!(
            record.cookie().expires.map(to_bson_date),
            Some(bson::DateTime::from_millis(1_795_478_797_123))
        );
    }

    #[test]
    fn corrupt_session_fields_are_decode_errors() {
        for document in [
            doc! {},
            doc! {"session": 42},
            doc! {"session": "{not json"},
            doc! {"session": "[1, 2]"},
            doc! {"session": {"cookie": 7}},
        ] {
            assert!(
                matches!(decode(&document), Err(Error::Decode { .. })),
                "{document}"
            );
        }
    }
}
