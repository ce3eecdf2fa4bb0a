//! Options of the session cookie (express-session's `cookie` option).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

/// The `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// `SameSite=Strict`: sent only on same-site requests.
    Strict,
    /// `SameSite=Lax`: also sent on top-level navigations from other sites.
    Lax,
    /// `SameSite=None`: sent on cross-site requests too; browsers require `Secure` with it.
    None,
}

impl SameSite {
    /// The attribute value as it appears in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }

    /// The value as express-session stores it in a record (`"strict"`), as serde writes it.
    pub(crate) fn as_json(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Lax => "lax",
            Self::None => "none",
        }
    }

    /// Reads `sameSite` as express-session stores it: `true` means strict, `false` means no
    /// attribute, strings are matched without regard to case.
    pub(crate) fn deserialize_express<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Self>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Express {
            Flag(bool),
            Name(String),
        }
        match Option::<Express>::deserialize(d)? {
            None | Some(Express::Flag(false)) => Ok(None),
            Some(Express::Flag(true)) => Ok(Some(Self::Strict)),
            Some(Express::Name(name)) => match name.to_ascii_lowercase().as_str() {
                "strict" => Ok(Some(Self::Strict)),
                "lax" => Ok(Some(Self::Lax)),
                "none" => Ok(Some(Self::None)),
                _ => Err(serde::de::Error::custom(format!(
                    "unknown sameSite value {name:?}"
                ))),
            },
        }
    }
}

/// The `Priority` attribute (a Chromium extension express-session supports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// `Priority=Low`.
    Low,
    /// `Priority=Medium`.
    Medium,
    /// `Priority=High`.
    High,
}

impl Priority {
    /// The attribute value as it appears in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
        }
    }

    /// The value as express-session stores it in a record (`"high"`), as serde writes it.
    pub(crate) fn as_json(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// When the cookie carries the `Secure` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Secure {
    /// Never (express's `secure: false`, the default).
    #[default]
    Never,
    /// Always (express's `secure: true`). Over a plain-http request the cookie is not sent at all,
    /// as express-session does, because a browser would drop it.
    Always,
    /// When the request came over https (express's `secure: 'auto'`).
    Auto,
}

/// The `SameSite` setting of the session cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSitePolicy {
    /// Always this value.
    Fixed(SameSite),
    /// `None` over https (so the cookie works in cross-site embeds) and `Lax` over plain http,
    /// where browsers refuse `SameSite=None` without `Secure`.
    Auto,
}

impl From<SameSite> for SameSitePolicy {
    fn from(value: SameSite) -> Self {
        Self::Fixed(value)
    }
}

/// How long the cookie (and its session) lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expiry {
    /// A browser-session cookie (no `Expires`); the store still bounds the record with its default
    /// time to live. express-session's default (`maxAge: null`).
    #[default]
    BrowserSession,
    /// Expires this long after the session was last active (express's `cookie.maxAge`).
    MaxAge(Duration),
    /// Expires at a fixed time (express's `cookie.expires`). As in express-session, the time left
    /// at creation becomes the session's original max age.
    At(OffsetDateTime),
}

/// Options of the session cookie, with express-session's defaults: path `/`, `HttpOnly`, not
/// `Secure`, no `SameSite`, no `Domain`, a browser-session cookie.
///
/// ```
/// use std::time::Duration;
/// use sesame_core::{CookieOptions, SameSite, Secure};
///
/// let options = CookieOptions::default()
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .same_site(SameSite::Lax)
///     .secure(Secure::Auto);
/// assert_eq!(options.path_value(), "/");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieOptions {
    path: Arc<str>,
    domain: Option<Arc<str>>,
    http_only: bool,
    secure: Secure,
    same_site: Option<SameSitePolicy>,
    expiry: Expiry,
    partitioned: bool,
    priority: Option<Priority>,
}

impl Default for CookieOptions {
    fn default() -> Self {
        Self {
            path: root_path(),
            domain: None,
            http_only: true,
            secure: Secure::Never,
            same_site: None,
            expiry: Expiry::BrowserSession,
            partitioned: false,
            priority: None,
        }
    }
}

impl CookieOptions {
    /// The `Path` attribute (default `/`).
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Arc::from(path.into());
        self
    }

    /// The `Domain` attribute (default none: the cookie goes to the exact host only).
    #[must_use]
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(Arc::from(domain.into()));
        self
    }

    /// The `HttpOnly` attribute (default `true`: scripts cannot read the cookie).
    #[must_use]
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// The `Secure` attribute (default [`Secure::Never`]).
    #[must_use]
    pub fn secure(mut self, secure: Secure) -> Self {
        self.secure = secure;
        self
    }

    /// The `SameSite` attribute: a [`SameSite`] value or [`SameSitePolicy::Auto`].
    #[must_use]
    pub fn same_site(mut self, same_site: impl Into<SameSitePolicy>) -> Self {
        self.same_site = Some(same_site.into());
        self
    }

    /// A max age: the session expires this long after its last activity.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.expiry = Expiry::MaxAge(max_age);
        self
    }

    /// A fixed expiry time (prefer [`max_age`](Self::max_age), as express-session's docs do).
    #[must_use]
    pub fn expires(mut self, at: OffsetDateTime) -> Self {
        self.expiry = Expiry::At(at);
        self
    }

    /// Sets the expiry directly; [`Expiry::BrowserSession`] removes a max age.
    #[must_use]
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = expiry;
        self
    }

    /// The `Partitioned` attribute (CHIPS).
    #[must_use]
    pub fn partitioned(mut self, partitioned: bool) -> Self {
        self.partitioned = partitioned;
        self
    }

    /// The `Priority` attribute.
    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The options a `__Host-` cookie requires: `Secure`, `Path=/`, no `Domain` (name the cookie
    /// `__Host-...`; the layer refuses a prefixed name whose options do not comply).
    #[must_use]
    pub fn host_prefixed(mut self) -> Self {
        self.secure = Secure::Always;
        self.path = root_path();
        self.domain = None;
        self
    }

    /// The configured path.
    pub fn path_value(&self) -> &str {
        &self.path
    }

    /// The configured domain.
    pub fn domain_value(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Whether the cookie is `HttpOnly`.
    pub fn http_only_value(&self) -> bool {
        self.http_only
    }

    /// The `Secure` setting.
    pub fn secure_value(&self) -> Secure {
        self.secure
    }

    /// The `SameSite` setting.
    pub fn same_site_value(&self) -> Option<SameSitePolicy> {
        self.same_site
    }

    /// The expiry setting.
    pub fn expiry_value(&self) -> Expiry {
        self.expiry
    }

    /// Whether the cookie is `Partitioned`.
    pub fn partitioned_value(&self) -> bool {
        self.partitioned
    }

    /// The `Priority` setting.
    pub fn priority_value(&self) -> Option<Priority> {
        self.priority
    }

    /// Whether the cookie is `Secure` for a request that is (or is not) over https.
    pub fn is_secure(&self, https: bool) -> bool {
        match self.secure {
            Secure::Never => false,
            Secure::Always => true,
            Secure::Auto => https,
        }
    }

    /// The `SameSite` value for a request that is (or is not) over https.
    pub fn resolve_same_site(&self, https: bool) -> Option<SameSite> {
        match self.same_site? {
            SameSitePolicy::Fixed(value) => Some(value),
            SameSitePolicy::Auto if https => Some(SameSite::None),
            SameSitePolicy::Auto => Some(SameSite::Lax),
        }
    }

    /// The cookie state a new session starts with, as express-session builds `req.session.cookie`
    /// from the options: attributes resolved for this request, expiry counted from `now`.
    pub fn new_cookie_state(&self, now: OffsetDateTime, https: bool) -> crate::CookieState {
        self.new_cookie_state_with(|| now, https)
    }

    /// [`new_cookie_state`](Self::new_cookie_state) with the clock read only when the expiry
    /// needs it: a browser-session cookie (the default) has no expiry to compute.
    pub fn new_cookie_state_with(
        &self,
        now: impl FnOnce() -> OffsetDateTime,
        https: bool,
    ) -> crate::CookieState {
        let mut state = crate::CookieState {
            secure: match self.secure {
                Secure::Never => None,
                _ => Some(self.is_secure(https)),
            },
            http_only: Some(self.http_only),
            path: Some(Arc::clone(&self.path)),
            domain: self.domain.clone(),
            same_site: self.resolve_same_site(https),
            partitioned: self.partitioned.then_some(true),
            priority: self.priority,
            ..crate::CookieState::default()
        };
        match self.expiry {
            Expiry::BrowserSession => {}
            Expiry::MaxAge(max_age) => state.set_max_age(now(), Some(max_age)),
            Expiry::At(at) => state.set_expires(now(), Some(at)),
        }
        state
    }
}

/// The path `/`, shared: every session's cookie state holds it, and cloning an `Arc` costs no
/// allocation.
pub(crate) fn root_path() -> Arc<str> {
    static ROOT: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("/"));
    Arc::clone(&ROOT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn defaults_are_express_sessions() {
        let options = CookieOptions::default();
        assert_eq!(options.path_value(), "/");
        assert!(options.http_only_value());
        assert_eq!(options.secure_value(), Secure::Never);
        assert_eq!(options.same_site_value(), None);
        assert_eq!(options.expiry_value(), Expiry::BrowserSession);
    }

    #[test]
    fn auto_settings_follow_the_request_scheme() {
        let options = CookieOptions::default()
            .secure(Secure::Auto)
            .same_site(SameSitePolicy::Auto);
        assert!(options.is_secure(true));
        assert!(!options.is_secure(false));
        assert_eq!(options.resolve_same_site(true), Some(SameSite::None));
        assert_eq!(options.resolve_same_site(false), Some(SameSite::Lax));
    }

    #[test]
    fn a_browser_session_cookie_reads_no_clock() {
        let state = CookieOptions::default().new_cookie_state_with(
            || panic!("no clock read for a browser-session cookie"),
            true,
        );
        assert_eq!(state.expires, None);
        assert_eq!(state.original_max_age, None);
        let mut read = false;
        let state = CookieOptions::default()
            .max_age(Duration::from_secs(60))
            .new_cookie_state_with(
                || {
                    read = true;
                    datetime!(2026-11-23 00:00 UTC)
                },
                true,
            );
        assert!(read);
        assert_eq!(
            state.expires,
            Some(datetime!(2026-11-23 00:00 UTC) + Duration::from_secs(60))
        );
    }

    #[test]
    fn new_cookie_state_counts_from_now() {
        let now = datetime!(2026-11-23 00:00 UTC);
        let state = CookieOptions::default()
            .max_age(Duration::from_secs(60))
            .same_site(SameSite::Strict)
            .new_cookie_state(now, false);
        assert_eq!(state.expires, Some(now + Duration::from_secs(60)));
        assert_eq!(state.original_max_age, Some(60_000));
        assert_eq!(state.same_site, Some(SameSite::Strict));
        let fixed = CookieOptions::default()
            .expires(now + Duration::from_secs(30))
            .new_cookie_state(now, false);
        assert_eq!(fixed.original_max_age, Some(30_000));
    }
}
