//! What sesame itself keeps in a session: when it was created, and who is logged in to it.
//!
//! It lives in the record's data under [`META_KEY`], a plain JSON object, so the record stays
//! express-session's format (an Express app sharing the store sees one more key and keeps it).
//! Stores with the user index capability read the user from here to index the session.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{Patch, Record};

/// The data key under which sesame keeps a session's [`SessionMeta`].
pub const META_KEY: &str = "sesame";

/// sesame's bookkeeping for one session (the object under [`META_KEY`]).
///
/// Times are milliseconds since the Unix epoch, as JavaScript's `Date.now()` gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SessionMeta {
    /// When the session was created (kept for the absolute timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// The id of the user logged in to this session, which the store's user index is keyed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When the user logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<i64>,
    /// When the session was last used, refreshed at most once per touch interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<i64>,
    /// The `User-Agent` of the request that logged in, if the application recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client address of the request that logged in, if the application recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Fields sesame does not know (written by a newer version), kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionMeta {
    /// The meta object in `data`, if there is one and it has the expected shape.
    pub fn from_data(data: &Map<String, Value>) -> Option<Self> {
        data.get(META_KEY)
            .and_then(|value| Self::deserialize(value).ok())
    }

    /// The meta object as the JSON value stored under [`META_KEY`].
    pub fn to_value(&self) -> Value {
        // A struct of strings, integers and a map always serializes.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The user id recorded in `data`, without decoding the rest of the meta object.
pub fn user_of(data: &Map<String, Value>) -> Option<&str> {
    data.get(META_KEY).and_then(meta_user)
}

/// The user id recorded in a meta object (the value under [`META_KEY`]), for a caller that has
/// looked the object up already.
pub fn meta_user(meta: &Value) -> Option<&str> {
    meta.get("user")?.as_str()
}

/// A time as milliseconds since the Unix epoch (the unit of [`SessionMeta`]'s times).
pub fn unix_millis(at: OffsetDateTime) -> i64 {
    if let Some(millis) = crate::last_now_millis(at) {
        return millis;
    }
    // Seconds and milliseconds rather than nanoseconds divided: no 128-bit division.
    at.unix_timestamp()
        .saturating_mul(1000)
        .saturating_add(i64::from(at.millisecond()))
}

/// The time `millis` after the Unix epoch, if it is a representable date.
pub fn from_unix_millis(millis: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
}

impl Record {
    /// The id of the user logged in to this session, if any (see [`SessionMeta::user`]).
    pub fn user(&self) -> Option<&str> {
        user_of(self.data())
    }
}

impl Patch {
    /// What the patch does to the session's user: `None` when it leaves the meta object alone,
    /// `Some(Some(user))` when it sets a meta object with a user, `Some(None)` when it removes
    /// the meta object or sets one without a user.
    pub fn user_change(&self) -> Option<Option<&str>> {
        if let Some(meta) = self.sets().get(META_KEY) {
            return Some(meta.get("user").and_then(Value::as_str));
        }
        self.removals()
            .iter()
            .any(|key| key == META_KEY)
            .then_some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CookieState;
    use serde_json::json;

    #[test]
    fn reads_the_user_and_keeps_unknown_fields() {
        let mut record = Record::new(CookieState::default());
        assert_eq!(record.user(), None);
        record.data_mut().insert(
            META_KEY.into(),
            json!({"user": "42", "login": 1, "future": [1]}),
        );
        assert_eq!(record.user(), Some("42"));
        let meta = SessionMeta::from_data(record.data()).unwrap();
        assert_eq!(meta.login, Some(1));
        assert_eq!(meta.to_value()["future"], json!([1]));
        record
            .data_mut()
            .insert(META_KEY.into(), json!({"user": 42}));
        assert_eq!(record.user(), None, "a user id is a string");
        record.data_mut().insert(META_KEY.into(), json!("garbage"));
        assert_eq!(SessionMeta::from_data(record.data()), None);
    }

    #[test]
    fn tells_what_a_patch_does_to_the_user() {
        let mut patch = Patch::new(CookieState::default());
        patch.set("other", json!(1));
        assert_eq!(patch.user_change(), None);
        patch.set(META_KEY, json!({"user": "7"}));
        assert_eq!(patch.user_change(), Some(Some("7")));
        patch.set(META_KEY, json!({"created": 5}));
        assert_eq!(patch.user_change(), Some(None));
        patch.remove(META_KEY);
        assert_eq!(patch.user_change(), Some(None));
    }

    #[test]
    fn millis_round_trip() {
        let at = time::macros::datetime!(2026-12-02 01:02:03.456 UTC);
        assert_eq!(from_unix_millis(unix_millis(at)), Some(at));
        assert_eq!(from_unix_millis(i64::MAX), None);
    }
}
