//! The stored form of a session: express-session's JSON record.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::Error;
use crate::cookie::{Priority, SameSite};

/// The key under which express-session keeps the cookie state inside a record. Session data may
/// not use it.
pub const COOKIE_KEY: &str = "cookie";

/// What a store keeps for one session: the session's data plus the state of its cookie.
///
/// It serializes to the JSON object express-session stores, so a Node app and a sesame app can
/// share one store:
///
/// ```
/// # use sesame_core::{Record, CookieState};
/// let mut record = Record::new(CookieState::default());
/// record.data_mut().insert("views".into(), 3.into());
/// let json = record.to_json().unwrap();
/// assert_eq!(
///     json,
///     r#"{"views":3,"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}}"#
/// );
/// assert_eq!(Record::from_json(json.as_bytes()).unwrap(), record);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Shared until written: a store hands out copies of its records (every load), and most
    /// requests only read the data, so a copy costs a reference count, not a deep clone.
    data: Arc<Map<String, Value>>,
    cookie: CookieState,
    /// The exact bytes a store read this record from, if it kept them (see
    /// [`with_origin`](Self::with_origin)). Not part of the record's value: equality ignores it.
    origin: Origin,
}

/// The stored bytes a record was read from; equal to any other, so that two records are equal
/// when their contents are, wherever they came from.
#[derive(Clone, Debug, Default)]
struct Origin(Option<Arc<[u8]>>);

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A record's data as it was when [`Record::data_version`] was called. Records share their data
/// until one of them changes it, so a store that hands out clones of its records can tell, by
/// [`Record::has_data_version`] and without comparing any data, that what it holds is still what
/// a request loaded.
#[derive(Clone)]
pub struct DataVersion(Arc<Map<String, Value>>);

impl fmt::Debug for DataVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataVersion")
            .field("keys", &self.0.len())
            .finish()
    }
}

impl Default for Record {
    fn default() -> Self {
        Self::new(CookieState::default())
    }
}

impl Record {
    /// A record with no data and the given cookie state.
    pub fn new(cookie: CookieState) -> Self {
        Self {
            data: empty_data(),
            cookie,
            origin: Origin::default(),
        }
    }

    /// A record from data and cookie state. A `"cookie"` key in `data` is dropped: that key
    /// belongs to the cookie state in express-session's format.
    pub fn from_parts(mut data: Map<String, Value>, cookie: CookieState) -> Self {
        data.remove(COOKIE_KEY);
        Self {
            data: Arc::new(data),
            cookie,
            origin: Origin::default(),
        }
    }

    /// The session's data: every key except `cookie`.
    pub fn data(&self) -> &Map<String, Value> {
        &self.data
    }

    /// Mutable access to the session's data. Callers must not insert a `cookie` key; it would be
    /// shadowed by the cookie state when serialized.
    pub fn data_mut(&mut self) -> &mut Map<String, Value> {
        Arc::make_mut(&mut self.data)
    }

    /// A handle on this record's data as it is now: eight bytes that keep that copy of the data
    /// alive (so nobody changes it in place) and tell whether a record still shares it, see
    /// [`has_data_version`](Self::has_data_version).
    pub fn data_version(&self) -> DataVersion {
        DataVersion(Arc::clone(&self.data))
    }

    /// Whether this record still shares the copy of the data `version` was taken from: the
    /// record it was taken from, or a clone of it, whose data nobody has changed since.
    pub fn has_data_version(&self, version: &DataVersion) -> bool {
        Arc::ptr_eq(&self.data, &version.0)
    }

    /// The cookie state kept with the record.
    pub fn cookie(&self) -> &CookieState {
        &self.cookie
    }

    /// Mutable access to the cookie state.
    pub fn cookie_mut(&mut self) -> &mut CookieState {
        &mut self.cookie
    }

    /// Remembers the exact bytes a store read this record from. The record keeps them through
    /// the request's changes, and a [`Patch`](crate::Patch) made from it carries them, so that
    /// the store can tell at write time whether the stored record is still byte for byte the one
    /// this request started from, and if so replace it whole instead of merging member by member.
    pub fn with_origin(mut self, stored: Arc<[u8]>) -> Self {
        self.origin = Origin(Some(stored));
        self
    }

    /// The record without the bytes it was read from: for a copy that no longer matches them.
    pub fn without_origin(mut self) -> Self {
        self.origin = Origin(None);
        self
    }

    /// The bytes the record was read from, if its store kept them (see
    /// [`with_origin`](Self::with_origin)).
    pub fn origin(&self) -> Option<&Arc<[u8]>> {
        self.origin.0.as_ref()
    }

    /// Splits the record into its data and cookie state.
    pub fn into_parts(self) -> (Map<String, Value>, CookieState) {
        (Arc::unwrap_or_clone(self.data), self.cookie)
    }

    /// When the record expires in the store: see [`CookieState::store_expiry`].
    pub fn expiry(&self, now: OffsetDateTime, default_ttl: Duration) -> OffsetDateTime {
        self.cookie.store_expiry(now, default_ttl)
    }

    /// The time the record has left, or `None` when it has already expired (a store then deletes
    /// it rather than writing it).
    pub fn time_to_live(&self, now: OffsetDateTime, default_ttl: Duration) -> Option<Duration> {
        let left = self.expiry(now, default_ttl) - now;
        if left.is_positive() {
            Duration::try_from(left).ok()
        } else {
            None
        }
    }

    /// Whether the record has expired at `now`: its cookie's `expires` or its
    /// [`deadline`](CookieState::deadline) has passed. A record without either never expires by
    /// itself; stores bound it with their default time to live.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        let cookie = &self.cookie;
        cookie.expires.is_some_and(|expires| expires <= now)
            || cookie.deadline.is_some_and(|deadline| deadline <= now)
    }

    /// Serializes to express-session's JSON.
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string(self).map_err(Error::encode)
    }

    /// Serializes to express-session's JSON as bytes.
    pub fn to_json_vec(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(Error::encode)
    }

    /// Serializes to a JSON value (for stores that keep documents, such as MongoDB or jsonb).
    pub fn to_value(&self) -> Result<Value, Error> {
        serde_json::to_value(self).map_err(Error::encode)
    }

    /// Parses express-session's JSON. Anything that is not a JSON object with a `cookie` object is
    /// a [`Error::Decode`].
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(json).map_err(Error::decode)
    }

    /// Parses a JSON value holding express-session's record.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Object(map) => Self::from_object(map).map_err(Error::decode),
            other => Err(Error::decode(serde_json::Error::custom(format!(
                "a session record is a JSON object, found {}",
                json_kind(&other)
            )))),
        }
    }

    fn from_object(mut map: Map<String, Value>) -> Result<Self, serde_json::Error> {
        let cookie = match map.remove(COOKIE_KEY) {
            Some(cookie @ Value::Object(_)) => CookieState::deserialize(cookie)?,
            Some(other) => {
                return Err(serde_json::Error::custom(format!(
                    "the record's \"cookie\" is a JSON object, found {}",
                    json_kind(&other)
                )));
            }
            None => return Err(serde_json::Error::missing_field(COOKIE_KEY)),
        };
        Ok(Self {
            data: Arc::new(map),
            cookie,
            origin: Origin::default(),
        })
    }
}

/// No data, shared: a new record (and every touch) starts from it without allocating; the first
/// write gives the record its own map.
fn empty_data() -> Arc<Map<String, Value>> {
    static EMPTY: std::sync::LazyLock<Arc<Map<String, Value>>> =
        std::sync::LazyLock::new(Arc::default);
    Arc::clone(&EMPTY)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.data.len() + 1))?;
        for (key, value) in self.data.iter() {
            if key != COOKIE_KEY {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry(COOKIE_KEY, &self.cookie)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        Self::from_object(map).map_err(D::Error::custom)
    }
}

/// The cookie state express-session keeps inside each record (`req.session.cookie`).
///
/// Field names and formats are express-session's: `originalMaxAge` in milliseconds (or `null`
/// for a browser-session cookie), `expires` as an ISO 8601 string (or `null`), and the cookie's
/// attributes. Fields sesame does not know are kept in [`extra`](Self::extra) and written back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CookieState {
    /// The max age the cookie was given, in milliseconds; `None` for a browser-session cookie.
    #[serde(default, deserialize_with = "millis::deserialize")]
    pub original_max_age: Option<u64>,
    /// When the cookie (and the session) expires; `None` for a browser-session cookie.
    #[serde(default, with = "iso8601")]
    pub expires: Option<OffsetDateTime>,
    /// The cookie's `Secure` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// The cookie's `HttpOnly` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// The cookie's `Path` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Arc<str>>,
    /// The cookie's `Domain` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Arc<str>>,
    /// The cookie's `SameSite` attribute.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "SameSite::deserialize_express"
    )]
    pub same_site: Option<SameSite>,
    /// The cookie's `Partitioned` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
    /// The cookie's `Priority` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Fields written by other implementations that sesame keeps as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// A time past which the store must not keep the session, whatever `expires` says: the
    /// layer's idle and absolute timeouts. Not part of express's format, so never serialized: the
    /// layer sets it on every write and touch. See [`store_expiry`](Self::store_expiry).
    #[serde(skip)]
    pub deadline: Option<OffsetDateTime>,
}

impl Default for CookieState {
    /// express-session's defaults: path `/`, `HttpOnly`, a browser-session cookie.
    fn default() -> Self {
        Self {
            original_max_age: None,
            expires: None,
            secure: None,
            http_only: Some(true),
            path: Some(crate::cookie::root_path()),
            domain: None,
            same_site: None,
            partitioned: None,
            priority: None,
            extra: Map::new(),
            deadline: None,
        }
    }
}

impl CookieState {
    /// When a store must let the session go: the cookie's `expires`, or `now + default_ttl` for a
    /// browser-session cookie (the rule of connect-redis and connect-pg-simple), but never later
    /// than the [`deadline`](Self::deadline). Every store computes its expiry (TTL, `expires`
    /// field, `expire` column) with this.
    pub fn store_expiry(&self, now: OffsetDateTime, default_ttl: Duration) -> OffsetDateTime {
        let expiry = self
            .expires
            .unwrap_or_else(|| saturating_add(now, default_ttl));
        match self.deadline {
            Some(deadline) => expiry.min(deadline),
            None => expiry,
        }
    }

    /// [`store_expiry`](Self::store_expiry) in milliseconds since the Unix epoch, from `now` in
    /// the same unit: integer arithmetic, for a store that keeps its expiries as numbers (the
    /// memory store compares one on every call, where date arithmetic would cost more than the
    /// lookup).
    pub fn store_expiry_millis(&self, now_millis: i64, default_ttl: Duration) -> i64 {
        let expiry = match self.expires {
            Some(expires) => crate::unix_millis(expires),
            None => now_millis
                .saturating_add(i64::try_from(saturating_millis(default_ttl)).unwrap_or(i64::MAX))
                .min(LATEST_MILLIS),
        };
        match self.deadline {
            Some(deadline) => expiry.min(crate::unix_millis(deadline)),
            None => expiry,
        }
    }

    /// This cookie state as a store reads it back after writing it in express-session's JSON, when
    /// that is known without encoding it: the [`deadline`](Self::deadline) is never stored, and
    /// `expires` is stored in whole milliseconds of UTC. `None` when the round trip could change
    /// more than that, or fail: fields in [`extra`](Self::extra) (one named like a known field
    /// would be written twice), a max age beyond JavaScript's safe integers (stored as a double),
    /// an expiry outside the four-digit years of `Date.prototype.toJSON`. Decode the encoded state
    /// then.
    ///
    /// A store that keeps a copy of what it writes (the Redis store's client-side cache) uses it to
    /// skip decoding its own output, which would cost more than the rest of a cached write.
    pub fn as_stored(&self) -> Option<CookieState> {
        const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
        if !self.extra.is_empty()
            || self
                .original_max_age
                .is_some_and(|ms| ms > MAX_SAFE_INTEGER)
        {
            return None;
        }
        let expires = match self.expires {
            Some(at) => {
                let at = at.to_offset(time::UtcOffset::UTC);
                if !(0..=9999).contains(&at.year()) {
                    return None;
                }
                Some(
                    at.replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
                        .ok()?,
                )
            }
            None => None,
        };
        Some(CookieState {
            expires,
            deadline: None,
            ..self.clone()
        })
    }

    /// Appends this state's JSON text to `out`: byte for byte what `serde_json` writes for it (as
    /// inside [`Record::to_json`]), without serde's machinery for the usual state (no extra
    /// fields), which costs several times more. For a store that writes the cookie member of a
    /// record on its own (the Redis store's patches, on every write). Fails where serializing it
    /// with serde_json would (an expiry that cannot be formatted), leaving `out` unfinished.
    ///
    /// ```
    /// use sesame_core::CookieState;
    ///
    /// let state = CookieState::default();
    /// let mut json = String::new();
    /// state.write_json(&mut json).unwrap();
    /// assert_eq!(json, r#"{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}"#);
    /// assert_eq!(json, serde_json::to_string(&state).unwrap());
    /// ```
    pub fn write_json(&self, out: &mut String) -> Result<(), Error> {
        if !self.extra.is_empty() {
            // serde's flattening of the extra fields, whatever they hold.
            out.push_str(&serde_json::to_string(self).map_err(Error::encode)?);
            return Ok(());
        }
        out.push_str("{\"originalMaxAge\":");
        match self.original_max_age {
            Some(ms) => out.push_str(itoa::Buffer::new().format(ms)),
            None => out.push_str("null"),
        }
        out.push_str(",\"expires\":");
        match self.expires {
            Some(at) => iso8601::with_text(at, |text| push_json_string(out, text))
                .map_err(Error::encode)??,
            None => out.push_str("null"),
        }
        let flag = |out: &mut String, name: &str, value: Option<bool>| {
            if let Some(value) = value {
                out.push_str(name);
                out.push_str(if value { "true" } else { "false" });
            }
        };
        let text = |out: &mut String, name: &str, value: Option<&str>| match value {
            Some(value) => {
                out.push_str(name);
                push_json_string(out, value)
            }
            None => Ok(()),
        };
        flag(out, ",\"secure\":", self.secure);
        flag(out, ",\"httpOnly\":", self.http_only);
        text(out, ",\"path\":", self.path.as_deref())?;
        text(out, ",\"domain\":", self.domain.as_deref())?;
        text(out, ",\"sameSite\":", self.same_site.map(SameSite::as_json))?;
        flag(out, ",\"partitioned\":", self.partitioned);
        text(out, ",\"priority\":", self.priority.map(Priority::as_json))?;
        out.push('}');
        Ok(())
    }

    /// Sets a max age from `now` (express's `cookie.maxAge = ms`): `expires` becomes `now + max_age`
    /// and `originalMaxAge` the max age. `None` makes it a browser-session cookie.
    pub fn set_max_age(&mut self, now: OffsetDateTime, max_age: Option<Duration>) {
        match max_age {
            Some(max_age) => {
                self.expires = Some(saturating_add(now, max_age));
                self.original_max_age = Some(saturating_millis(max_age));
            }
            None => {
                self.expires = None;
                self.original_max_age = None;
            }
        }
    }

    /// Sets an absolute expiry (express's `cookie.expires = date`); `originalMaxAge` becomes the
    /// time left from `now`, as express computes it.
    pub fn set_expires(&mut self, now: OffsetDateTime, expires: Option<OffsetDateTime>) {
        self.expires = expires;
        self.original_max_age = expires.map(|at| {
            let left = at - now;
            if left.is_positive() {
                saturating_millis(Duration::try_from(left).unwrap_or(Duration::MAX))
            } else {
                0
            }
        });
    }

    /// The time left before `expires` (express's `cookie.maxAge` getter); zero once expired, `None`
    /// for a browser-session cookie.
    pub fn max_age(&self, now: OffsetDateTime) -> Option<Duration> {
        self.expires
            .map(|at| Duration::try_from(at - now).unwrap_or(Duration::ZERO))
    }

    /// The max age the cookie was given.
    pub fn original_max_age(&self) -> Option<Duration> {
        self.original_max_age.map(Duration::from_millis)
    }

    /// Restarts the expiry from `now` with the original max age (express's `session.touch()`,
    /// which express-session runs on every request). A browser-session cookie stays one.
    pub fn reset_expiry(&mut self, now: OffsetDateTime) {
        if let Some(ms) = self.original_max_age {
            self.expires = Some(saturating_add(now, Duration::from_millis(ms)));
        }
    }
}

/// The last millisecond of year 9999: the latest date express's ISO 8601 format and the stores
/// hold.
const LATEST: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59.999 UTC);

/// [`LATEST`] in milliseconds since the Unix epoch, for the integer expiry of every memory-store
/// touch (converting the date each time costs more than the rest of the computation).
const LATEST_MILLIS: i64 = 253_402_300_799_999;

/// `at + duration`, or the last millisecond of year 9999 (the latest date express's ISO 8601
/// format and the stores hold) when the sum would be later: a huge max age or time to live means
/// "never expires", not a panic.
fn saturating_add(at: OffsetDateTime, duration: Duration) -> OffsetDateTime {
    time::Duration::try_from(duration)
        .ok()
        .and_then(|duration| at.checked_add(duration))
        .map_or(LATEST, |sum| sum.min(LATEST))
}

/// Whole milliseconds of `duration`, in 64-bit arithmetic (`as_millis` divides a 128-bit
/// number, which costs more than the rest of a touch's expiry).
fn saturating_millis(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(duration.subsec_millis()))
}

/// `originalMaxAge` as Node writes it: a number of milliseconds (possibly fractional, possibly
/// negative when set from a past date) or `null`.
mod millis {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let value = Option::<f64>::deserialize(d)?;
        // Negative or fractional values come from JavaScript arithmetic; clamp and round them
        // rather than reject a record Node considers valid.
        Ok(value.map(|ms| {
            if ms.is_finite() && ms > 0.0 {
                ms.round() as u64
            } else {
                0
            }
        }))
    }
}

/// `text` as a JSON string, as `serde_json` writes it: quoted, with `"`, `\\` and control
/// characters escaped (and nothing else).
fn push_json_string(out: &mut String, text: &str) -> Result<(), Error> {
    if text
        .bytes()
        .any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\')
    {
        // serde_json's own escapes, for the rare text that needs any.
        out.push_str(&serde_json::to_string(text).map_err(Error::encode)?);
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
    Ok(())
}

/// Dates as JavaScript's `Date.prototype.toJSON` writes them: `2026-11-23T00:06:37.123Z`.
mod iso8601 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    use time::{OffsetDateTime, UtcOffset};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(at) => with_text(*at, |text| serializer.serialize_str(text))
                .map_err(serde::ser::Error::custom)?,
            None => serializer.serialize_none(),
        }
    }

    /// Calls `use_text` with the text of `at`: [`fast`]'s when it has one, [`format`]'s otherwise.
    pub(super) fn with_text<T>(
        at: OffsetDateTime,
        use_text: impl FnOnce(&str) -> T,
    ) -> Result<T, time::error::Format> {
        // The fast text is ASCII digits and separators, so always UTF-8.
        match fast(at).as_ref().map(|text| std::str::from_utf8(text)) {
            Some(Ok(text)) => Ok(use_text(text)),
            _ => format(at).map(|text| use_text(&text)),
        }
    }

    /// [`format`] for the years 0 to 9999 (all that JavaScript writes with four digits), on the
    /// stack and without the format description's interpreter.
    pub(super) fn fast(at: OffsetDateTime) -> Option<[u8; 24]> {
        let at = at.to_offset(UtcOffset::UTC);
        let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, digits: usize, mut value: u32| {
            for position in (at..at + digits).rev() {
                text[position] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u32::from(u8::from(at.month())));
        put(8, 2, u32::from(at.day()));
        put(11, 2, u32::from(at.hour()));
        put(14, 2, u32::from(at.minute()));
        put(17, 2, u32::from(at.second()));
        put(20, 3, u32::from(at.millisecond()));
        Some(text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
            // Truncated to whole milliseconds, as JavaScript's `Date` reads such a string: finer
            // digits would not survive the next write, so the record would change by a load and
            // save that changed nothing (found by the `record_json` fuzz target).
            Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
                .map(|at| {
                    let millis = at.nanosecond() / 1_000_000 * 1_000_000;
                    Some(at.replace_nanosecond(millis).unwrap_or(at))
                })
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }

    pub(super) fn format(at: OffsetDateTime) -> Result<String, time::error::Format> {
        at.to_offset(UtcOffset::UTC).format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_the_format_description_writes_them() {
        // Instants over the years 0 to 9999, with nanoseconds and in other offsets, from a
        // fixed pseudo-random sequence (splitmix64), and the edges.
        let mut state = 0x5e5a_3e00_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let year = |year| {
            time::Date::from_calendar_date(year, time::Month::January, 1)
                .unwrap()
                .midnight()
                .assume_utc()
        };
        // From a few years before year 0 (written the other way) to the end of year 9999.
        let first = year(-20).unix_timestamp_nanos();
        let span = (LATEST.unix_timestamp_nanos() - first) as u128;
        let mut instants = vec![year(0), LATEST, OffsetDateTime::UNIX_EPOCH];
        for _ in 0..20_000 {
            let random = u128::from(next()) << 64 | u128::from(next());
            let nanos = first + (random % span) as i128;
            let offset =
                time::UtcOffset::from_whole_seconds((next() % 50_000) as i32 - 25_000).unwrap();
            instants.push(
                OffsetDateTime::from_unix_timestamp_nanos(nanos)
                    .unwrap()
                    .to_offset(offset),
            );
        }
        let mut fast_ones = 0;
        for at in instants {
            let expected = iso8601::format(at).unwrap();
            match iso8601::fast(at) {
                Some(text) => {
                    assert_eq!(std::str::from_utf8(&text).unwrap(), expected);
                    fast_ones += 1;
                }
                None => assert!(!(0..=9999).contains(&at.to_offset(time::UtcOffset::UTC).year())),
            }
        }
        assert!(fast_ones > 10_000, "{fast_ones}");
    }

    #[test]
    fn the_latest_date_in_millis_is_the_latest_date() {
        assert_eq!(LATEST_MILLIS, crate::unix_millis(LATEST));
    }

    #[test]
    fn whole_millis_of_durations_saturate() {
        for duration in [
            Duration::ZERO,
            Duration::from_nanos(999_999),
            Duration::from_micros(1_234_567),
            Duration::from_secs(86_400),
            Duration::from_secs(u64::MAX / 1000),
            Duration::MAX,
        ] {
            assert_eq!(
                u128::from(saturating_millis(duration)),
                duration.as_millis().min(u128::from(u64::MAX)),
                "{duration:?}"
            );
        }
    }

    #[test]
    fn store_expiry_in_millis_agrees_with_the_date_form() {
        let now = crate::now();
        let hour = Duration::from_secs(3600);
        let mut cases = vec![CookieState::default()];
        let mut with_max_age = CookieState::default();
        with_max_age.set_max_age(now, Some(Duration::from_secs(60)));
        cases.push(with_max_age.clone());
        with_max_age.deadline = Some(now + Duration::from_secs(30));
        cases.push(with_max_age);
        cases.push(CookieState {
            deadline: Some(now + Duration::from_secs(7200)),
            ..CookieState::default()
        });
        for ttl in [hour, Duration::MAX] {
            for cookie in &cases {
                assert_eq!(
                    cookie.store_expiry_millis(crate::unix_millis(now), ttl),
                    crate::unix_millis(cookie.store_expiry(now, ttl)),
                    "{cookie:?} {ttl:?}"
                );
            }
        }
    }
    use time::macros::datetime;

    const EXPRESS_RECORD: &str = r#"{"cookie":{"originalMaxAge":86400000,"expires":"2026-11-24T00:06:37.123Z","secure":false,"httpOnly":true,"path":"/","sameSite":"lax"},"user":{"name":"ada","roles":["admin"]},"views":3}"#;

    #[test]
    fn reads_express_session_json() {
        let record = Record::from_json(EXPRESS_RECORD.as_bytes()).unwrap();
        assert_eq!(record.data()["views"], 3);
        assert_eq!(record.data()["user"]["roles"][0], "admin");
        assert!(!record.data().contains_key(COOKIE_KEY));
        let cookie = record.cookie();
        assert_eq!(cookie.original_max_age, Some(86_400_000));
        assert_eq!(cookie.expires, Some(datetime!(2026-11-24 00:06:37.123 UTC)));
        assert_eq!(cookie.secure, Some(false));
        assert_eq!(cookie.http_only, Some(true));
        assert_eq!(cookie.path.as_deref(), Some("/"));
        assert_eq!(cookie.same_site, Some(SameSite::Lax));
    }

    #[test]
    fn writes_what_it_reads() {
        let record = Record::from_json(EXPRESS_RECORD.as_bytes()).unwrap();
        let again = Record::from_json(record.to_json().unwrap().as_bytes()).unwrap();
        assert_eq!(again, record);
        let json: Value = serde_json::from_str(&record.to_json().unwrap()).unwrap();
        assert_eq!(json["cookie"]["expires"], "2026-11-24T00:06:37.123Z");
        assert_eq!(json["cookie"]["originalMaxAge"], 86_400_000);
        assert_eq!(json["cookie"]["sameSite"], "lax");
    }

    #[test]
    fn browser_session_cookie_writes_nulls_like_express() {
        let json: Value =
            serde_json::from_str(&Record::new(CookieState::default()).to_json().unwrap()).unwrap();
        assert_eq!(json["cookie"]["originalMaxAge"], Value::Null);
        assert_eq!(json["cookie"]["expires"], Value::Null);
    }

    #[test]
    fn keeps_unknown_cookie_fields_and_node_quirks() {
        let json =
            r#"{"cookie":{"originalMaxAge":1500.4,"expires":null,"sameSite":true,"signed":true}}"#;
        let record = Record::from_json(json.as_bytes()).unwrap();
        assert_eq!(record.cookie().original_max_age, Some(1500));
        assert_eq!(record.cookie().same_site, Some(SameSite::Strict));
        assert_eq!(record.cookie().extra["signed"], true);
        assert!(record.to_json().unwrap().contains(r#""signed":true"#));
    }

    #[test]
    fn corrupt_records_are_decode_errors() {
        for bad in [
            "",
            "not json",
            "[]",
            "42",
            r#"{"views":1}"#,
            r#"{"cookie":"x"}"#,
            r#"{"cookie":{"expires":"yesterday"}}"#,
            r#"{"cookie":{"originalMaxAge":"soon"}}"#,
        ] {
            let err = Record::from_json(bad.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{bad:?} gave {err:?}");
        }
        assert!(matches!(
            Record::from_value(Value::Bool(true)),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn a_huge_max_age_or_time_to_live_saturates_instead_of_panicking() {
        let now = datetime!(2026-11-23 00:00 UTC);
        let latest = datetime!(9999-12-31 23:59:59.999 UTC);
        let mut record = Record::new(CookieState::default());
        assert_eq!(record.expiry(now, Duration::MAX), latest);
        assert!(record.time_to_live(now, Duration::MAX).is_some());
        record.cookie_mut().set_max_age(now, Some(Duration::MAX));
        assert_eq!(record.cookie().expires, Some(latest));
        record.cookie_mut().reset_expiry(now);
        assert_eq!(record.cookie().expires, Some(latest));
        let json = record.to_json().unwrap();
        assert!(
            json.contains("\"expires\":\"9999-12-31T23:59:59.999Z\""),
            "{json}"
        );
        assert!(Record::from_json(json.as_bytes()).is_ok());
    }

    #[test]
    fn expiry_and_time_to_live() {
        let now = datetime!(2026-11-23 00:00 UTC);
        let day = Duration::from_secs(86_400);
        let mut record = Record::new(CookieState::default());
        assert_eq!(record.expiry(now, day), now + day);
        assert_eq!(record.time_to_live(now, day), Some(day));
        record
            .cookie_mut()
            .set_max_age(now, Some(Duration::from_secs(60)));
        assert_eq!(record.time_to_live(now, day), Some(Duration::from_secs(60)));
        assert!(!record.is_expired(now));
        assert!(record.is_expired(now + Duration::from_secs(60)));
        assert_eq!(
            record.time_to_live(now + Duration::from_secs(61), day),
            None
        );
    }

    #[test]
    fn cookie_max_age_like_express() {
        let now = datetime!(2026-11-23 00:00 UTC);
        let mut cookie = CookieState::default();
        cookie.set_max_age(now, Some(Duration::from_millis(5000)));
        assert_eq!(cookie.original_max_age(), Some(Duration::from_millis(5000)));
        assert_eq!(
            cookie.max_age(now + Duration::from_secs(2)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            cookie.max_age(now + Duration::from_secs(9)),
            Some(Duration::ZERO)
        );
        cookie.reset_expiry(now + Duration::from_secs(2));
        assert_eq!(cookie.expires, Some(now + Duration::from_secs(7)));
        cookie.set_expires(now, Some(now + Duration::from_secs(10)));
        assert_eq!(cookie.original_max_age, Some(10_000));
        cookie.set_max_age(now, None);
        assert_eq!((cookie.expires, cookie.original_max_age), (None, None));
    }

    #[test]
    fn from_parts_drops_a_cookie_key_in_data() {
        let mut data = Map::new();
        data.insert(COOKIE_KEY.into(), 1.into());
        data.insert("a".into(), 2.into());
        let record = Record::from_parts(data, CookieState::default());
        assert_eq!(record.data().len(), 1);
    }
}
