//! Per-key changes to a stored session, so concurrent requests never overwrite each other.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::{CookieState, Record};

/// What one request changed in a session: the keys it set, the keys it removed, and the session's
/// new cookie state (its expiry).
///
/// A store that supports patches ([`Capabilities::patch`](crate::Capabilities)) applies it to the
/// record *as stored now*, atomically, so keys that another request changed in the meantime are
/// kept. express-session, and every Rust peer, write the whole session back instead: the last
/// request to finish wins and the other's changes are lost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patch {
    set: Map<String, Value>,
    remove: Vec<String>,
    cookie: CookieState,
    /// The stored bytes of the record the changes were made to, when its store kept them.
    base: Option<Arc<[u8]>>,
}

impl Patch {
    /// A patch that only sets the cookie state (used to move the expiry with the data).
    pub fn new(cookie: CookieState) -> Self {
        Self {
            set: Map::new(),
            remove: Vec::new(),
            cookie,
            base: None,
        }
    }

    /// The patch that brings the changed `keys` of `record` into the store: each key present in
    /// the record is set to its value, each absent one is removed.
    pub fn from_changes<'a>(record: &Record, keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patch = Self::new(record.cookie().clone());
        patch.base = record.origin().cloned();
        for key in keys {
            match record.data().get(key) {
                Some(value) => patch.set(key, value.clone()),
                None => patch.remove(key),
            }
        }
        patch
    }

    /// The exact stored bytes of the record these changes were made to, when the store that
    /// loaded it kept them ([`Record::with_origin`]). A store may replace a record that still has
    /// these bytes with the whole new record, which is what the patch would produce from it.
    pub fn base(&self) -> Option<&[u8]> {
        self.base.as_deref()
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: &str, value: Value) {
        self.remove.retain(|k| k != key);
        self.set.insert(key.to_owned(), value);
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        self.set.remove(key);
        if !self.remove.iter().any(|k| k == key) {
            self.remove.push(key.to_owned());
        }
    }

    /// The keys set, with their values.
    pub fn sets(&self) -> &Map<String, Value> {
        &self.set
    }

    /// The keys removed.
    pub fn removals(&self) -> &[String] {
        &self.remove
    }

    /// The keys of session data removed: [`removals`](Self::removals) without `cookie`, which
    /// names the cookie state in express-session's format, never data (a store writes the
    /// patch's cookie state instead).
    pub fn data_removals(&self) -> impl Iterator<Item = &str> {
        self.remove
            .iter()
            .map(String::as_str)
            .filter(|key| *key != crate::COOKIE_KEY)
    }

    /// The new cookie state.
    pub fn cookie(&self) -> &CookieState {
        &self.cookie
    }

    /// Whether the patch changes no data (only the cookie state).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Applies the patch to a record in memory (for stores that apply it under their own lock or in
    /// a compare-and-swap loop).
    pub fn apply_to(&self, record: &mut Record) {
        for key in &self.remove {
            record.data_mut().remove(key);
        }
        for (key, value) in &self.set {
            record.data_mut().insert(key.clone(), value.clone());
        }
        *record.cookie_mut() = self.cookie.clone();
    }
}

/// The outcome of [`SessionStore::compare_and_swap`](crate::SessionStore::compare_and_swap).
#[derive(Clone, Debug, PartialEq)]
pub enum Swap {
    /// The value was as expected and has been replaced.
    Done,
    /// The value had changed; this is its current value (`None`: the key is absent).
    Changed(Option<Value>),
    /// There is no live record under the id (destroyed or expired); nothing was written.
    Missing,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applies_sets_removals_and_cookie() {
        let mut record = Record::default();
        record.data_mut().insert("keep".into(), json!(1));
        record.data_mut().insert("gone".into(), json!(2));
        let cookie = CookieState {
            original_max_age: Some(5),
            ..CookieState::default()
        };
        let mut patch = Patch::new(cookie.clone());
        patch.set("new", json!("x"));
        patch.remove("gone");
        patch.apply_to(&mut record);
        assert_eq!(record.data().get("keep"), Some(&json!(1)));
        assert_eq!(record.data().get("new"), Some(&json!("x")));
        assert!(!record.data().contains_key("gone"));
        assert_eq!(record.cookie(), &cookie);
    }

    #[test]
    fn from_changes_reads_present_and_absent_keys() {
        let mut record = Record::default();
        record.data_mut().insert("a".into(), json!(1));
        let patch = Patch::from_changes(&record, ["a", "b"]);
        assert_eq!(patch.sets().get("a"), Some(&json!(1)));
        assert_eq!(patch.removals(), ["b".to_owned()]);
        let mut patch = patch;
        patch.set("b", json!(2));
        assert!(
            patch.removals().is_empty(),
            "a later set cancels the removal"
        );
        assert!(!patch.is_empty());
    }
}
