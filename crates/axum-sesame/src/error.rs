//! Errors: building the layer, using a session, and extracting one.

use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use sesame_core::KeyRingError;

/// Why a [`SessionLayer`](crate::SessionLayer) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The secrets are missing or unusable.
    #[error("invalid session secret configuration")]
    Secret(#[from] KeyRingError),
    /// The cookie name is not a valid cookie name (an RFC 6265 token).
    #[error("{0:?} is not a valid cookie name")]
    InvalidCookieName(String),
    /// The cookie name's `__Host-` or `__Secure-` prefix is not matched by the cookie options.
    #[error("{0}")]
    CookiePrefix(&'static str),
    /// No store was given and the `memory` feature (which provides the default store) is off.
    #[error("no session store configured: call .store(...) or enable the `memory` feature")]
    MissingStore,
}

/// A failure of a [`Session`](crate::Session) method.
///
/// It converts into a response (`503` when the store is unreachable, `500` otherwise), so handlers
/// can use `?` on session calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed.
    #[error("session store error")]
    Store(#[from] sesame_core::Error),
    /// A value could not be serialized into the session.
    #[error("the value for session key {key:?} could not be serialized")]
    Serialize {
        /// The key.
        key: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value does not have the requested type.
    #[error("the session value under {key:?} does not have the requested type")]
    Deserialize {
        /// The key.
        key: String,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The key is reserved: express-session keeps the cookie state under `cookie`.
    #[error("the session key {0:?} is reserved by express-session's record format")]
    ReservedKey(String),
    /// The store has no record for the session: it was destroyed (perhaps by a concurrent request),
    /// has expired, or was never saved.
    #[error("the session has no record in the store")]
    NotFound,
    /// A user-session method ([`Session::user_sessions`](crate::Session::user_sessions),
    /// [`revoke`](crate::Session::revoke), ...) was called on a session no user is logged in to.
    #[error("no user is logged in to this session")]
    NotLoggedIn,
    /// [`Session::update`](crate::Session::update) lost the race for the key too many times in a
    /// row.
    #[error("the session key {0:?} is changed by too many concurrent requests to update it")]
    Contended(String),
}

impl SessionError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Store(error) if error.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotLoggedIn => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let body = match self.status() {
            StatusCode::SERVICE_UNAVAILABLE => "Session store unavailable",
            StatusCode::UNAUTHORIZED => "Not logged in",
            _ => "Session error",
        };
        if self.status().is_server_error() {
            tracing::error!(error = &self as &dyn std::error::Error, "session error");
        } else {
            tracing::debug!(error = &self as &dyn std::error::Error, "session error");
        }
        (self.status(), body).into_response()
    }
}

/// Why the [`Session`](crate::Session) (or [`Flash`](crate::Flash)) extractor failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The route is not wrapped in a [`SessionLayer`](crate::SessionLayer).
    #[error(
        "the Session extractor needs a SessionLayer: add `.layer(session_layer)` to the Router \
         (after the routes that use Session)"
    )]
    MissingLayer,
    /// Loading the session from the store failed.
    #[error("the session could not be loaded")]
    Load(#[source] sesame_core::Error),
}

impl SessionRejection {
    /// The status of the rejection: `500` for a missing layer (a programming error), `503` when the
    /// store is unreachable, `500` for other store errors.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Load(error) if error.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body text of the rejection's response.
    pub fn body_text(&self) -> String {
        match self {
            Self::MissingLayer => self.to_string(),
            Self::Load(error) if error.is_unavailable() => "Session store unavailable".to_owned(),
            Self::Load(_) => "Session could not be loaded".to_owned(),
        }
    }
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        tracing::error!(
            error = &self as &dyn std::error::Error,
            "session extraction failed"
        );
        (self.status(), self.body_text()).into_response()
    }
}
