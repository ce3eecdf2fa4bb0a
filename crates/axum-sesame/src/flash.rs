//! Flash messages, as connect-flash keeps them.

use std::collections::BTreeMap;

use axum_core::extract::FromRequestParts;
use http::request::Parts;
use serde_json::{Map, Value};

use crate::error::{SessionError, SessionRejection};
use crate::session::Session;

/// The session key connect-flash uses: `{"<kind>": ["message", ...]}`.
pub const FLASH_KEY: &str = "flash";

/// Messages that survive until they are read once, typically across a redirect (connect-flash's
/// `req.flash()`).
///
/// They live in the session under the key `flash`, in connect-flash's layout, so an Express app and
/// a sesame app sharing a store can flash to each other.
///
/// ```
/// use axum::response::Redirect;
/// use axum_sesame::{Flash, SessionError};
///
/// async fn login(flash: Flash) -> Result<Redirect, SessionError> {
///     flash.push("info", "Welcome back!")?;
///     Ok(Redirect::to("/"))
/// }
///
/// async fn home(flash: Flash) -> String {
///     flash.take("info").join("\n")
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Flash(Session);

impl Flash {
    /// The flash of a session.
    pub fn new(session: Session) -> Self {
        Self(session)
    }

    /// The session the messages live in.
    pub fn session(&self) -> &Session {
        &self.0
    }

    /// Adds a message under `kind` (e.g. `"info"`, `"error"`), after any already there.
    pub fn push(&self, kind: &str, message: impl Into<String>) -> Result<(), SessionError> {
        self.push_value(kind, Value::String(message.into()))
    }

    /// Adds any JSON value as a message (connect-flash accepts objects and arrays too).
    pub fn push_value(&self, kind: &str, message: Value) -> Result<(), SessionError> {
        let mut flash = self.messages();
        match flash
            .entry(kind.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(list) => list.push(message),
            other => *other = Value::Array(vec![message]),
        }
        self.0.insert_value(FLASH_KEY, Value::Object(flash))
    }

    /// Returns the messages of `kind` and removes them: each is read once. Non-string messages are
    /// returned as JSON text; see [`take_values`](Self::take_values) for the values themselves.
    pub fn take(&self, kind: &str) -> Vec<String> {
        self.take_values(kind)
            .into_iter()
            .map(message_text)
            .collect()
    }

    /// Returns the messages of `kind` as JSON values and removes them.
    pub fn take_values(&self, kind: &str) -> Vec<Value> {
        let mut flash = self.messages();
        let Some(taken) = flash.remove(kind) else {
            return Vec::new();
        };
        // connect-flash leaves an empty object behind; so do we, keeping the layouts identical.
        // Reinserting an object cannot hit the reserved `cookie` key.
        let _ = self.0.insert_value(FLASH_KEY, Value::Object(flash));
        match taken {
            Value::Array(list) => list,
            single => vec![single],
        }
    }

    /// Returns every kind's messages and removes them all.
    pub fn take_all(&self) -> BTreeMap<String, Vec<String>> {
        let flash = self.messages();
        if flash.is_empty() {
            return BTreeMap::new();
        }
        let _ = self.0.insert_value(FLASH_KEY, Value::Object(Map::new()));
        flash
            .into_iter()
            .map(|(kind, messages)| {
                let list = match messages {
                    Value::Array(list) => list.into_iter().map(message_text).collect(),
                    single => vec![message_text(single)],
                };
                (kind, list)
            })
            .collect()
    }

    /// Whether there are messages of `kind`, without reading them.
    pub fn has(&self, kind: &str) -> bool {
        self.messages()
            .get(kind)
            .is_some_and(|m| !matches!(m, Value::Array(list) if list.is_empty()))
    }

    fn messages(&self) -> Map<String, Value> {
        match self.0.get_value(FLASH_KEY) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

fn message_text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Flash {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Session::from_request_parts(parts, state).await.map(Self)
    }
}
