//! Reading the session cookie from `Cookie` headers and writing `Set-Cookie`.

use std::fmt::Write as _;

use http::header::{COOKIE, HeaderMap};
use http::{HeaderValue, header::SET_COOKIE};
use sesame_core::time::OffsetDateTime;
use sesame_core::{CookieOptions, MAX_COOKIE_VALUE_LEN, SameSite, find_cookie_value};
use time::macros::format_description;

/// Largest `Cookie` header sesame scans. Browsers cap a cookie at 4 KiB and a header well below
/// this; a larger header is not scanned at all, so an attacker cannot make us walk megabytes.
pub(crate) const MAX_COOKIE_HEADER_LEN: usize = 16 * 1024;

/// The value of the first cookie called `name` in the request's `Cookie` headers, as
/// `cookie.parse` finds it (first occurrence wins), without decoding or verifying it.
pub(crate) fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter(|header| header.len() <= MAX_COOKIE_HEADER_LEN)
        .filter_map(|header| header.to_str().ok())
        .find_map(|header| find_cookie_value(header, name))
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
        let _ = write!(out, "; Domain={domain}");
    }
    let _ = write!(out, "; Path={}", options.path_value());
    if let Some(expires) = attributes.expires {
        out.push_str("; Expires=");
        out.push_str(&http_date(expires));
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

/// An HTTP date as JavaScript's `Date.prototype.toUTCString` writes it.
fn http_date(at: OffsetDateTime) -> String {
    at.to_offset(sesame_core::time::UtcOffset::UTC)
        .format(format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 GMT".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sesame_core::{Priority, time::macros::datetime};

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
        assert_eq!(find_cookie(&h, "connect.sid"), Some("s%3Aabc.def"));
        assert_eq!(
            find_cookie(&headers(&["x=1", "connect.sid=\"q\""]), "connect.sid"),
            Some("q")
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
