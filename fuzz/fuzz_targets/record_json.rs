//! A stored record, as a store hands it back (possibly corrupt or written by someone else):
//! decoding must end in a record or a decode error, and a decoded record must be written back
//! and read again without losing anything, since sesame re-saves what it loads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesame_core::{Error, Record};

fuzz_target!(|data: &[u8]| {
    let record = match Record::from_json(data) {
        Ok(record) => record,
        Err(Error::Decode { .. }) => return,
        Err(other) => panic!("decoding gave a non-decode error: {other:?}"),
    };
    let json = record.to_json().expect("a decoded record encodes again");
    let again = Record::from_json(json.as_bytes()).expect("an encoded record decodes again");
    assert_eq!(again, record, "the record changed in a round trip through {json}");
    let value = record.to_value().expect("a decoded record converts to a JSON value");
    assert_eq!(Record::from_value(value).expect("and back"), record);
});
