//! Core types of [sesame](https://crates.io/crates/axum-sesame), express-session for axum.
//!
//! This crate has no web framework in it. It holds what every part of sesame shares:
//!
//! - [`SessionId`]: the random id of a session;
//! - [`Record`] and [`CookieState`]: a session as express-session stores it (its data plus a
//!   `cookie` object), so a Node app and a Rust app can share a store;
//! - [`CookieOptions`]: the session cookie's attributes, with express-session's defaults;
//! - [`SessionStore`]: the contract every store implements, and [`DynStore`] to choose one at run
//!   time;
//! - [`KeyRing`]: signing of cookie values with secret rotation, in express-session's format;
//! - [`Error`]: what a store can fail with, by meaning, with the backend's error kept as source.
//!
//! Applications depend on `axum-sesame`; store authors depend on this crate and test their store
//! with `sesame-conformance`.
#![forbid(unsafe_code)]

mod cookie;
mod error;
mod id;
mod keys;
mod meta;
mod observe;
mod patch;
mod record;
mod store;
mod tag;

pub use cookie::{CookieOptions, Expiry, Priority, SameSite, SameSitePolicy, Secure};
pub use error::{BoxError, Error, Result};
pub use id::{InvalidSessionId, MAX_ID_LEN, SessionId, random_secret};
pub use keys::{
    IdHasher, KeyRing, KeyRingBuilder, KeyRingError, MAX_COOKIE_VALUE_LEN, MIN_SECRET_LEN,
    decode_uri_component, encode_uri_component, find_cookie_value, find_cookie_value_in_bytes,
    find_raw_cookie_value,
};
pub use meta::{META_KEY, SessionMeta, from_unix_millis, meta_user, unix_millis, user_of};
pub use observe::{OperationSnapshot, StoreEvent, StoreMetrics, StoreObserver, StoreOperation};
pub use patch::{Patch, Swap};
pub use record::{COOKIE_KEY, CookieState, DataVersion, Record};
pub use store::{Capabilities, DynStore, SessionStore};

thread_local! {
    /// The last answer of [`now`] on this thread, with its milliseconds since the Unix epoch.
    static LAST_NOW: std::cell::Cell<Option<(u64, time::OffsetDateTime)>> =
        const { std::cell::Cell::new(None) };
}

/// The current time, truncated to milliseconds as JavaScript's `Date` holds it, so that a record
/// reads back equal after a round trip through express-session's JSON.
///
/// Every request asks for the time more than once; turning a clock reading into a calendar date
/// is most of the cost, so each thread remembers its last answer and reuses it within the same
/// millisecond.
pub fn now() -> time::OffsetDateTime {
    use std::time::{SystemTime, UNIX_EPOCH};

    let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        // A clock set before 1970: no caching, just the truncated time.
        let now = time::OffsetDateTime::now_utc();
        return now
            .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap_or(now);
    };
    // Milliseconds in u64 arithmetic (`as_millis` divides a u128, which costs more than the rest).
    let millis = since_epoch
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(since_epoch.subsec_millis()));
    LAST_NOW.with(|last| match last.get() {
        Some((at, time)) if at == millis => time,
        _ => {
            let time =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            last.set(Some((millis, time)));
            time
        }
    })
}

/// The milliseconds since the Unix epoch of `at` when it is this thread's last answer of [`now`]
/// (the stores turn the layer's `now` back into milliseconds, once or twice a request): no
/// calendar arithmetic then.
fn last_now_millis(at: time::OffsetDateTime) -> Option<i64> {
    LAST_NOW.with(|last| match last.get() {
        Some((millis, time)) if same_fields(time, at) => i64::try_from(millis).ok(),
        _ => None,
    })
}

/// Whether `a` and `b` have the same date, time and offset: cheaper than `==`, which compares the
/// instants (converting both to UTC first), and enough for [`last_now_millis`], where any other
/// form of the same instant only misses the shortcut.
fn same_fields(a: time::OffsetDateTime, b: time::OffsetDateTime) -> bool {
    a.date() == b.date() && a.time() == b.time() && a.offset() == b.offset()
}

/// Re-export of the `time` crate, whose `OffsetDateTime` appears in sesame's API.
pub use time;

/// Re-export of `serde_json`, whose `Value` and `Map` hold session data in sesame's API.
pub use serde_json;

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_the_current_time_in_whole_milliseconds() {
        for _ in 0..1000 {
            let before = time::OffsetDateTime::now_utc();
            let now = super::now();
            let after = time::OffsetDateTime::now_utc();
            assert_eq!(now.nanosecond() % 1_000_000, 0, "{now}");
            assert!(now <= after, "{now} after {after}");
            assert!(
                before - now < time::Duration::milliseconds(1),
                "{now} before {before}"
            );
        }
    }

    #[test]
    fn unix_millis_of_the_last_now_is_its_milliseconds() {
        let by_calendar =
            |at: time::OffsetDateTime| at.unix_timestamp() * 1000 + i64::from(at.millisecond());
        let now = super::now();
        assert_eq!(super::unix_millis(now), by_calendar(now));
        // The same instant at another offset, and another time, by the calendar.
        let elsewhere = now.to_offset(time::macros::offset!(+5:30));
        assert_eq!(super::unix_millis(elsewhere), by_calendar(now));
        let later = now + time::Duration::milliseconds(1234);
        assert_eq!(super::unix_millis(later), by_calendar(now) + 1234);
    }
}
