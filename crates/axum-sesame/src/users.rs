//! Sessions of a user: log in, list a user's sessions, revoke one, the others, or all of them.
//!
//! At login the application tags the session with a user id ([`Session::log_in`]); the store
//! indexes sessions by it (the [user index capability](sesame_core::Capabilities::user_index),
//! which every store of sesame has). A revoked session is destroyed in the store, so it stops
//! working on its very next request, on every app instance.

use std::sync::Arc;

use sesame_core::time::OffsetDateTime;
use sesame_core::{
    META_KEY, Record, SessionId, SessionMeta, SessionStore, from_unix_millis, unix_millis, user_of,
};

use crate::config::Config;
use crate::error::SessionError;
use crate::session::Session;

/// Who logs in, and optionally from where: what [`Session::log_in`] records in the session.
///
/// ```
/// use axum_sesame::Login;
///
/// let login = Login::user("42").user_agent("Mozilla/5.0").ip("203.0.113.7");
/// # let _ = login;
/// let login: Login = "42".into(); // just the user
/// # let _ = login;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    user: String,
    user_agent: Option<String>,
    ip: Option<String>,
}

impl Login {
    /// A login of the user with this id (any string your application identifies users by).
    pub fn user(id: impl Into<String>) -> Self {
        Self {
            user: id.into(),
            user_agent: None,
            ip: None,
        }
    }

    /// The `User-Agent` of the request, shown in the user's list of sessions.
    #[must_use]
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// The client's address, shown in the user's list of sessions.
    #[must_use]
    pub fn ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = Some(ip.into());
        self
    }
}

impl From<&str> for Login {
    fn from(user: &str) -> Self {
        Self::user(user)
    }
}

impl From<String> for Login {
    fn from(user: String) -> Self {
        Self::user(user)
    }
}

/// One session of a user, as the "your sessions" page of an account shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserSession {
    /// A public name of the session, to revoke it with ([`Session::revoke`],
    /// [`UserSessions::revoke`]). It reveals nothing about the session's id or cookie, so it is
    /// safe to put in a page.
    pub handle: String,
    /// Whether this is the session of the request that asked.
    pub current: bool,
    /// When the user logged in to this session.
    pub logged_in: Option<OffsetDateTime>,
    /// When the session was last used (refreshed at most once a minute, or once per
    /// [`touch_after`](crate::SessionLayerBuilder::touch_after) interval).
    pub last_seen: Option<OffsetDateTime>,
    /// When the session's cookie expires; `None` for a browser-session cookie.
    pub expires: Option<OffsetDateTime>,
    /// The `User-Agent` recorded at login, if the application gave it.
    pub user_agent: Option<String>,
    /// The client address recorded at login, if the application gave it.
    pub ip: Option<String>,
}

impl UserSession {
    fn new(stored_id: &SessionId, record: &Record, current: Option<&SessionId>) -> Self {
        let meta = SessionMeta::from_data(record.data()).unwrap_or_default();
        Self {
            handle: stored_id.handle(),
            current: current == Some(stored_id),
            logged_in: meta.login.and_then(from_unix_millis),
            last_seen: meta.seen.and_then(from_unix_millis),
            expires: record.cookie().expires,
            user_agent: meta.user_agent,
            ip: meta.ip,
        }
    }
}

/// The sessions of the user logged in to the current session, newest login first.
async fn list(
    config: &Config,
    user: &str,
    current: Option<&SessionId>,
) -> Result<Vec<(SessionId, UserSession)>, SessionError> {
    let mut sessions: Vec<(SessionId, UserSession)> = config
        .store
        .user_sessions(user)
        .await?
        .iter()
        .map(|(stored_id, record)| {
            (
                stored_id.clone(),
                UserSession::new(stored_id, record, current),
            )
        })
        .collect();
    sessions.sort_by_key(|(_, session)| std::cmp::Reverse(session.logged_in));
    Ok(sessions)
}

impl Session {
    /// Logs `login`'s user in to this session: gives the session a new id (the old one is
    /// destroyed, so an id planted before login is worthless: no session fixation) keeping its
    /// data, and records the user, so the session appears in the user's list of sessions and can
    /// be revoked with the others.
    ///
    /// ```
    /// use axum_sesame::{Login, Session, SessionError};
    ///
    /// async fn login(session: Session) -> Result<&'static str, SessionError> {
    ///     // ... after checking the password of user 42:
    ///     session.log_in(Login::user("42").ip("203.0.113.7")).await?;
    ///     Ok("welcome")
    /// }
    /// ```
    pub async fn log_in(&self, login: impl Into<Login>) -> Result<(), SessionError> {
        let login = login.into();
        self.cycle_id().await?;
        let now = unix_millis(sesame_core::now());
        let mut meta = SessionMeta::default();
        meta.created = Some(now);
        meta.user = Some(login.user);
        meta.login = Some(now);
        meta.seen = Some(now);
        meta.user_agent = login.user_agent;
        meta.ip = login.ip;
        self.insert_value(META_KEY, meta.to_value())
    }

    /// The id of the user logged in to this session, if any.
    pub fn user(&self) -> Option<String> {
        self.with_record(|record| user_of(record.data()).map(str::to_owned))
    }

    /// The sessions of the user logged in to this session (this one included, marked
    /// [`current`](UserSession::current)), newest login first. Fails with
    /// [`SessionError::NotLoggedIn`] when no user is logged in.
    pub async fn user_sessions(&self) -> Result<Vec<UserSession>, SessionError> {
        let user = self.user().ok_or(SessionError::NotLoggedIn)?;
        let current = self.stored_id();
        let sessions = list(self.config(), &user, current.as_ref()).await?;
        Ok(sessions.into_iter().map(|(_, session)| session).collect())
    }

    /// Revokes one session of the logged-in user, by its [`handle`](UserSession::handle): it is
    /// destroyed in the store and stops working on its next request. Returns `false` when the user
    /// has no such session (already ended, or another user's). Revoking the current session
    /// destroys it as [`destroy`](Self::destroy) does.
    pub async fn revoke(&self, handle: &str) -> Result<bool, SessionError> {
        let user = self.user().ok_or(SessionError::NotLoggedIn)?;
        let current = self.stored_id();
        let sessions = list(self.config(), &user, current.as_ref()).await?;
        let Some((stored_id, session)) = sessions.iter().find(|(_, s)| s.handle == handle) else {
            return Ok(false);
        };
        if session.current {
            self.destroy().await?;
        } else {
            self.config().store.destroy_at_rest(stored_id).await?;
        }
        Ok(true)
    }

    /// Revokes every other session of the logged-in user ("log out everywhere else"), keeping
    /// this one. Returns how many were revoked.
    pub async fn revoke_others(&self) -> Result<usize, SessionError> {
        let user = self.user().ok_or(SessionError::NotLoggedIn)?;
        let current = self.stored_id();
        let sessions = list(self.config(), &user, current.as_ref()).await?;
        let mut revoked = 0;
        for (stored_id, session) in &sessions {
            if !session.current {
                self.config().store.destroy_at_rest(stored_id).await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// Revokes every session of the logged-in user, this one included ("log out everywhere").
    /// Returns how many were revoked.
    pub async fn revoke_all(&self) -> Result<usize, SessionError> {
        let current_was_stored = self.stored_id().is_some();
        let revoked = self.revoke_others().await?;
        self.destroy().await?;
        Ok(revoked + usize::from(current_was_stored))
    }

    /// The id the store keeps this session under, if it is stored.
    fn stored_id(&self) -> Option<SessionId> {
        let id = self.stored_session_id()?;
        Some(self.config().store.at_rest(&id).into_owned())
    }
}

/// Sessions of any user, outside a request: for an admin page, or to log a user out everywhere
/// when their password changes or their account is locked. Get it from
/// [`SessionLayer::users`](crate::SessionLayer::users).
///
/// ```
/// # async fn example(layer: axum_sesame::SessionLayer) -> Result<(), axum_sesame::SessionError> {
/// let users = layer.users();
/// // The password of user 42 changed: end all their sessions.
/// let ended = users.revoke_all("42").await?;
/// # let _ = ended;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct UserSessions {
    config: Arc<Config>,
}

impl UserSessions {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        Self { config }
    }

    /// The live sessions of `user`, newest login first.
    pub async fn list(&self, user: &str) -> Result<Vec<UserSession>, SessionError> {
        let sessions = list(&self.config, user, None).await?;
        Ok(sessions.into_iter().map(|(_, session)| session).collect())
    }

    /// Revokes the session of `user` with this [`handle`](UserSession::handle). Returns `false`
    /// when `user` has no such session.
    pub async fn revoke(&self, user: &str, handle: &str) -> Result<bool, SessionError> {
        let sessions = list(&self.config, user, None).await?;
        match sessions
            .iter()
            .find(|(_, session)| session.handle == handle)
        {
            Some((stored_id, _)) => {
                self.config.store.destroy_at_rest(stored_id).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Revokes every session of `user`. Returns how many were revoked.
    pub async fn revoke_all(&self, user: &str) -> Result<usize, SessionError> {
        let sessions = list(&self.config, user, None).await?;
        for (stored_id, _) in &sessions {
            self.config.store.destroy_at_rest(stored_id).await?;
        }
        Ok(sessions.len())
    }
}

impl std::fmt::Debug for UserSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSessions")
            .field("store", &self.config.store.inner)
            .finish()
    }
}
