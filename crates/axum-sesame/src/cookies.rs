//! Reading the session cookie from `Cookie` headers and writing `Set-Cookie`.

use std::fmt::Write as _;

use http::header::{COOKIE, HeaderMap};
use http::{HeaderValue, header::SET_COOKIE};
use sesame_core::time::OffsetDateTime;
use sesame_core::{CookieOptions, MAX_COOKIE_VALUE_LEN, SameSite, find_raw_cookie_value};

/// Largest `Cookie` header sesame scans. Browsers cap a cookie at 4 KiB and a header well below
/// this; a larger header is not scanned at all, so an attacker cannot make us walk megabytes.
pub(crate) const MAX_COOKIE_HEADER_LEN: usize = 16 * 1024;

/// The value of the first cookie called `name` in the request's `Cookie` headers, as
/// `cookie.parse` finds it (first occurrence wins), without decoding or verifying it.
pub(crate) fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter(|header| header.len() <= MAX_COOKIE_HEADER_LEN)
        .find_map(|header| find_raw_cookie_value(header.as_bytes(), name))
        .filter(|value| value.len() <= MAX_COOKIE_VALUE_LEN)
}

/// Whether `name` can be a cookie name (an RFC 6265 token).
pub(crate) fn is_valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}

/// What a `Set-Cookie` header carries besides name and value.
pub(crate) struct CookieAttributes<'a> {
    pub(crate) options: &'a CookieOptions,
    pub(crate) expires: Option<OffsetDateTime>,
    pub(crate) secure: bool,
    pub(crate) same_site: Option<SameSite>,
}

/// A `Set-Cookie` value in the attribute order of the `cookie` package express-session uses:
/// `Max-Age`, `Domain`, `Path`, `Expires`, `HttpOnly`, `Secure`, `Partitioned`, `Priority`,
/// `SameSite`. Like express-session, it sends `Expires` (not `Max-Age`) for a session cookie.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    max_age_zero: bool,
    attributes: &CookieAttributes<'_>,
) -> Option<HeaderValue> {
    let options = attributes.options;
    let mut out = String::with_capacity(160);
    out.push_str(name);
    out.push('=');
    out.push_str(value);
    if max_age_zero {
        out.push_str("; Max-Age=0");
    }
    if let Some(domain) = options.domain_value() {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    out.push_str("; Path=");
    out.push_str(options.path_value());
    if let Some(expires) = attributes.expires {
        out.push_str("; Expires=");
        push_http_date(&mut out, expires);
    }
    if options.http_only_value() {
        out.push_str("; HttpOnly");
    }
    if attributes.secure {
        out.push_str("; Secure");
    }
    if options.partitioned_value() {
        out.push_str("; Partitioned");
    }
    if let Some(priority) = options.priority_value() {
        let _ = write!(out, "; Priority={}", priority.as_str());
    }
    if let Some(same_site) = attributes.same_site {
        let _ = write!(out, "; SameSite={}", same_site.as_str());
    }
    // Domain and path come from the application's configuration; a value with control characters
    // cannot be a header, and is dropped (and logged by the caller) rather than panicking.
    HeaderValue::try_from(out).ok()
}

/// Appends a `Set-Cookie` header, keeping any the handler set.
pub(crate) fn append_set_cookie(headers: &mut HeaderMap, value: HeaderValue) {
    headers.append(SET_COOKIE, value);
}

/// Appends an HTTP date as JavaScript's `Date.prototype.toUTCString` writes it
/// (`Tue, 24 Nov 2026 08:09:10 GMT`), digit by digit: a formatter with a parsed description costs
/// more than the rest of the header, and this runs for every cookie with an expiry.
fn push_http_date(out: &mut String, at: OffsetDateTime) {
    const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let at = at.to_offset(sesame_core::time::UtcOffset::UTC);
    let (year, month, day) = at.to_calendar_date();
    let Ok(year) = u16::try_from(year) else {
        // Before year 0: not a date a cookie can carry; the epoch expires it at once.
        out.push_str("Thu, 01 Jan 1970 00:00:00 GMT");
        return;
    };
    let (hour, minute, second) = at.to_hms();
    let two = |out: &mut String, n: u8| {
        out.push(char::from(b'0' + n / 10));
        out.push(char::from(b'0' + n % 10));
    };
    out.push_str(WEEKDAYS[usize::from(at.weekday().number_days_from_monday())]);
    out.push_str(", ");
    two(out, day);
    out.push(' ');
    out.push_str(MONTHS[usize::from(u8::from(month) - 1)]);
    out.push(' ');
    for divisor in [1000, 100, 10, 1] {
        out.push(char::from(b'0' + ((year / divisor) % 10) as u8));
    }
    out.push(' ');
    two(out, hour);
    out.push(':');
    two(out, minute);
    out.push(':');
    two(out, second);
    out.push_str(" GMT");
}

#[cfg(test)]
mod tests {
    use super::*;
    use sesame_core::{Priority, time::macros::datetime};

    #[test]
    fn http_dates_are_what_the_formatter_writes() {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let mut at = datetime!(1970-01-01 00:00:00 UTC);
        for _ in 0..2000 {
            let mut pushed = String::new();
            push_http_date(&mut pushed, at);
            assert_eq!(pushed, at.format(format).unwrap());
            at += time::Duration::seconds(123_456_789);
        }
        let mut pushed = String::new();
        push_http_date(&mut pushed, datetime!(9999-12-31 23:59:59.999 UTC));
        assert_eq!(pushed, "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn finds_the_first_cookie_of_the_name() {
        let h = headers(&[
            "a=1; connect.sid=s%3Aabc.def; connect.sid=second",
            "connect.sid=third",
        ]);
        assert_eq!(
            find_cookie(&h, "connect.sid"),
            Some(b"s%3Aabc.def".as_slice())
        );
        assert_eq!(
            find_cookie(&headers(&["x=1", "connect.sid=\"q\""]), "connect.sid"),
            Some(b"q".as_slice())
        );
        assert_eq!(
            find_cookie(&headers(&["connect.sidx=1; xconnect.sid=2"]), "connect.sid"),
            None
        );
        assert_eq!(find_cookie(&HeaderMap::new(), "connect.sid"), None);
    }

    #[test]
    fn ignores_oversized_headers_and_values() {
        let big_value = format!("connect.sid={}", "a".repeat(MAX_COOKIE_VALUE_LEN + 1));
        assert_eq!(find_cookie(&headers(&[&big_value]), "connect.sid"), None);
        let big_header = format!("pad={}; connect.sid=ok", "a".repeat(MAX_COOKIE_HEADER_LEN));
        assert_eq!(find_cookie(&headers(&[&big_header]), "connect.sid"), None);
    }

    #[test]
    fn writes_attributes_in_express_order() {
        let options = CookieOptions::default()
            .domain("example.com")
            .partitioned(true)
            .priority(Priority::High);
        let value = set_cookie(
            "connect.sid",
            "s%3Aid.sig",
            false,
            &CookieAttributes {
                options: &options,
                expires: Some(datetime!(2026-11-24 08:09:10 UTC)),
                secure: true,
                same_site: Some(SameSite::Lax),
            },
        )
        .unwrap();
        assert_eq!(
            value,
            "connect.sid=s%3Aid.sig; Domain=example.com; Path=/; Expires=Tue, 24 Nov 2026 08:09:10 GMT; HttpOnly; Secure; Partitioned; Priority=High; SameSite=Lax"
        );
    }

    #[test]
    fn cookie_names_are_tokens() {
        assert!(is_valid_cookie_name("connect.sid"));
        assert!(is_valid_cookie_name("__Host-id"));
        assert!(!is_valid_cookie_name(""));
        assert!(!is_valid_cookie_name("a b"));
        assert!(!is_valid_cookie_name("a=b"));
        assert!(!is_valid_cookie_name("a;b"));
    }
}
