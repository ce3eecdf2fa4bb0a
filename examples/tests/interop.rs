//! Interop with the real express-session: the Express app in `tests/interop/` (express,
//! express-session, connect-redis, connect-pg-simple, connect-mongo and connect-flash from npm, at
//! the versions of its lockfile) and sesame's `interop` example run side by side on 127.0.0.1 with
//! the same secrets, cookie name and store, and share live sessions, on each of Redis, PostgreSQL
//! and MongoDB.
//!
//! Needs Node.js and npm (the test runs `npm ci` once) and the store servers; like the store
//! tests, it skips loudly when one is missing, and fails instead under CI.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::Duration;

use common::{Reply, Server, cookie_pair, example_binary, free_port, request, server_url};
use serde_json::{Value, json};
use sesame_conformance::{backend_missing, unique_name};

/// The secret both sides sign with, and an older one both still accept.
const SECRET: &str = "interop secret: the current one of at least 32 bytes";
const OLD_SECRET: &str = "interop secret: the previous one of at least 32 bytes";
/// Both sides' cookies last an hour unless a test changes a session's max age.
const MAX_AGE_MS: u64 = 3_600_000;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop")
}

/// Installs the Express app's packages from its lockfile, once per test run. `None` when Node is
/// missing (outside CI).
fn npm_ready() -> Option<()> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let dir = interop_dir();
        let node = Command::new("node").arg("--version").output();
        if !node.is_ok_and(|out| out.status.success()) {
            return Err("node is not on PATH".to_owned());
        }
        if dir.join("node_modules/.package-lock.json").exists() {
            return Ok(());
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .map_err(|error| format!("npm: {error}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "npm ci failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match ready {
        Ok(()) => Some(()),
        Err(error) => backend_missing("Node.js with npm", error),
    }
}

/// One store the two apps share, with its own namespace so the three suites run side by side.
struct SharedStore {
    kind: &'static str,
    /// Environment of both apps: the store's URL and namespace.
    env: Vec<(&'static str, String)>,
}

impl SharedStore {
    /// The store named `kind` if its server answers (see `server_url`), else `None` (outside CI).
    fn reachable(kind: &'static str) -> Option<Self> {
        let url = server_url(kind)?;
        let (url_var, mut env) = match kind {
            "redis" => ("REDIS_URL", vec![("REDIS_PREFIX", unique_name("interop:"))]),
            "postgres" => (
                "DATABASE_URL",
                vec![
                    ("PG_SCHEMA", "public".to_owned()),
                    ("PG_TABLE", unique_name("interop_")),
                ],
            ),
            "mongodb" => (
                "MONGODB_URL",
                vec![("MONGODB_COLLECTION", unique_name("interop_"))],
            ),
            other => panic!("no store {other}"),
        };
        env.push((url_var, url));
        Some(Self { kind, env })
    }
}

/// The two apps on one store.
struct Apps {
    express: Server,
    express_port: u16,
    sesame: Server,
    sesame_port: u16,
}

fn common_env(command: &mut Command, store: &SharedStore, port: u16, secrets: &str) {
    command
        .env("SESAME_STORE", store.kind)
        .env("PORT", port.to_string())
        .env("SESSION_SECRET", secrets)
        .env("COOKIE_NAME", "connect.sid")
        .env("COOKIE_MAX_AGE", MAX_AGE_MS.to_string())
        .env("RUST_LOG", "warn")
        .envs(store.env.iter().map(|(k, v)| (k, v)));
}

fn start_sesame(store: &SharedStore, secrets: &str) -> (Server, u16) {
    let port = free_port();
    let mut command = Command::new(example_binary("interop"));
    common_env(&mut command, store, port, secrets);
    (Server::start("sesame-interop", command, port), port)
}

fn start_express(store: &SharedStore, secrets: &str) -> (Server, u16) {
    let port = free_port();
    let mut command = Command::new("node");
    command.arg("app.js").current_dir(interop_dir());
    common_env(&mut command, store, port, secrets);
    (Server::start("express-interop", command, port), port)
}

impl Apps {
    fn start(store: &SharedStore) -> Self {
        let secrets = format!("{SECRET},{OLD_SECRET}");
        // sesame first: its store creates the table or index both sides use.
        let (sesame, sesame_port) = start_sesame(store, &secrets);
        let (express, express_port) = start_express(store, &secrets);
        Self {
            express,
            express_port,
            sesame,
            sesame_port,
        }
    }

    fn logs(&self) -> String {
        format!("{}\n{}", self.express.log(), self.sesame.log())
    }

    /// Sends a request to one side and checks it succeeded.
    fn call(
        &self,
        side: Side,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let port = match side {
            Side::Express => self.express_port,
            Side::Sesame => self.sesame_port,
        };
        let reply = request(port, method, path, cookie, body.as_ref());
        assert_eq!(
            reply.status,
            200,
            "{side:?} {method} {path}: {}\n{}",
            reply.body,
            self.logs()
        );
        reply
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Express,
    Sesame,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Side::Express => Side::Sesame,
            Side::Sesame => Side::Express,
        }
    }
}

/// Data with every JSON shape a session holds.
fn rich_data(writer: Side) -> Value {
    json!({
        "writer": format!("{writer:?}"),
        "text": "héllo \"wörld\" ✓",
        "integer": 42,
        "negative": -7,
        "float": 1.5,
        "big": 9_007_199_254_740_991_u64,
        "flag": true,
        "nothing": null,
        "list": [1, "two", [3], {"four": 4}],
        "empty_list": [],
        "empty_object": {},
        "nested": {"user": {"id": 7, "roles": ["admin", "dev"]}},
    })
}

/// Checks a route's `originalMaxAge`. express-session computes it as `expires - Date.now()` right
/// after setting `expires`, so it is one millisecond short when the clock ticks in between.
fn assert_max_age(seen: &Value, expected_ms: u64) {
    let max_age = seen["originalMaxAge"]
        .as_u64()
        .unwrap_or_else(|| panic!("no originalMaxAge in {seen}"));
    assert!(
        (expected_ms.saturating_sub(5)..=expected_ms).contains(&max_age),
        "originalMaxAge {max_age}, expected {expected_ms}: {seen}"
    );
}

/// Starts a session on `writer` with `data` and returns its cookie and id.
fn start_session(apps: &Apps, writer: Side, data: Value) -> (String, String) {
    let reply = apps.call(writer, "POST", "/session", None, Some(data));
    let cookie = cookie_pair(reply.set_cookie().expect("a new session sets the cookie"));
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    (cookie, id)
}

fn session_of(apps: &Apps, side: Side, cookie: &str) -> Value {
    apps.call(side, "GET", "/session", Some(cookie), None)
        .json()
}

fn data_is_shared_both_ways(apps: &Apps) {
    for writer in [Side::Express, Side::Sesame] {
        let data = rich_data(writer);
        let (cookie, id) = start_session(apps, writer, data.clone());
        let seen = session_of(apps, writer.other(), &cookie);
        assert_eq!(seen["id"], id, "{writer:?} -> other: same session id");
        assert_eq!(seen["data"], data, "{writer:?} -> other: same data");
        assert_max_age(&seen, MAX_AGE_MS);
    }
}

fn changes_are_seen_by_the_other_side(apps: &Apps) {
    let (cookie, _) = start_session(apps, Side::Express, json!({"step": 0}));
    apps.call(
        Side::Sesame,
        "POST",
        "/session",
        Some(&cookie),
        Some(json!({"step": 1, "by_sesame": "yes"})),
    );
    let seen = session_of(apps, Side::Express, &cookie);
    assert_eq!(seen["data"], json!({"step": 1, "by_sesame": "yes"}));
    apps.call(
        Side::Express,
        "POST",
        "/session",
        Some(&cookie),
        Some(json!({"step": 2, "by_express": [1, 2]})),
    );
    let seen = session_of(apps, Side::Sesame, &cookie);
    assert_eq!(
        seen["data"],
        json!({"step": 2, "by_sesame": "yes", "by_express": [1, 2]})
    );
}

fn destroy_ends_the_session_for_the_other_side(apps: &Apps) {
    for destroyer in [Side::Express, Side::Sesame] {
        let (cookie, id) = start_session(apps, destroyer.other(), json!({"user": "ada"}));
        let reply = apps.call(destroyer, "POST", "/destroy", Some(&cookie), None);
        assert_eq!(reply.json()["destroyed"], true);
        let seen = session_of(apps, destroyer.other(), &cookie);
        assert_ne!(seen["id"], id, "{destroyer:?} destroyed: a new session");
        assert_eq!(seen["data"], json!({}), "{destroyer:?} destroyed: no data");
    }
}

fn regenerate_ends_the_old_id_for_the_other_side(apps: &Apps) {
    for regenerator in [Side::Express, Side::Sesame] {
        let (old_cookie, old_id) =
            start_session(apps, regenerator.other(), json!({"cart": [1, 2]}));
        let reply = apps.call(regenerator, "POST", "/regenerate", Some(&old_cookie), None);
        let new_cookie = cookie_pair(reply.set_cookie().expect("a new id sets the cookie"));
        let new_id = reply.json()["id"].clone();
        assert_ne!(new_id, old_id);
        let old = session_of(apps, regenerator.other(), &old_cookie);
        assert_ne!(
            old["id"], old_id,
            "{regenerator:?} regenerated: old id gone"
        );
        assert_eq!(old["data"], json!({}));
        let new = session_of(apps, regenerator.other(), &new_cookie);
        assert_eq!(
            new["id"], new_id,
            "{regenerator:?} regenerated: new id shared"
        );
        assert_eq!(new["data"], json!({"cart": [1, 2]}));
    }
}

/// An ISO 8601 date of a route's answer.
fn instant(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a date: {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
}

fn expiry_set_on_one_side_governs_the_other(apps: &Apps) {
    const SHORT_MS: u64 = 2_000;
    let mut sessions = Vec::new();
    for setter in [Side::Express, Side::Sesame] {
        let (cookie, id) = start_session(apps, setter.other(), json!({"n": 1}));
        let reply = apps.call(
            setter,
            "POST",
            &format!("/max-age?ms={SHORT_MS}"),
            Some(&cookie),
            None,
        );
        let expires = reply.json()["expires"].clone();
        let seen = session_of(apps, setter.other(), &cookie);
        assert_eq!(seen["id"], id);
        assert_eq!(
            seen["originalMaxAge"], SHORT_MS,
            "{setter:?} set the max age"
        );
        let (set, seen_expires) = (instant(&expires), instant(&seen["expires"]));
        assert!(
            (seen_expires - set).abs() <= time::Duration::seconds(1),
            "{setter:?}: both sides see the same expiry: {expires} vs {}",
            seen["expires"]
        );
        sessions.push((setter, cookie, id));
    }
    sleep(Duration::from_millis(SHORT_MS + 1_500));
    for (setter, cookie, id) in sessions {
        let seen = session_of(apps, setter.other(), &cookie);
        assert_ne!(seen["id"], id, "{setter:?} set a short max age: expired");
        assert_eq!(seen["data"], json!({}));
    }
}

fn flash_messages_are_read_once_by_the_other_side(apps: &Apps) {
    for pusher in [Side::Express, Side::Sesame] {
        let (cookie, _) = start_session(apps, pusher, json!({"user": "ada"}));
        apps.call(
            pusher,
            "POST",
            "/flash?kind=info&message=saved",
            Some(&cookie),
            None,
        );
        apps.call(
            pusher,
            "POST",
            "/flash?kind=info&message=again",
            Some(&cookie),
            None,
        );
        let reader = pusher.other();
        let first = apps.call(reader, "GET", "/flash?kind=info", Some(&cookie), None);
        assert_eq!(
            first.json()["messages"],
            json!(["saved", "again"]),
            "{pusher:?} pushed"
        );
        let second = apps.call(reader, "GET", "/flash?kind=info", Some(&cookie), None);
        assert_eq!(second.json()["messages"], json!([]), "read once");
        let back = apps.call(pusher, "GET", "/flash?kind=info", Some(&cookie), None);
        assert_eq!(back.json()["messages"], json!([]), "gone on both sides");
    }
}

/// `name=value; Attr=...` split into the value and the attributes with `Expires` taken apart.
fn cookie_parts(set_cookie: &str) -> (String, Vec<String>, Option<time::OffsetDateTime>) {
    let mut parts = set_cookie.split("; ");
    let value = parts.next().unwrap().to_owned();
    let mut attributes = Vec::new();
    let mut expires = None;
    for part in parts {
        match part.strip_prefix("Expires=") {
            Some(date) => {
                expires = Some(
                    time::OffsetDateTime::parse(
                        date,
                        &time::format_description::well_known::Rfc2822,
                    )
                    .unwrap_or_else(|error| panic!("{date}: {error}")),
                );
            }
            None => attributes.push(part.to_owned()),
        }
    }
    (value, attributes, expires)
}

fn set_cookie_headers_match(apps: &Apps) {
    let (cookie, _) = start_session(apps, Side::Express, json!({"n": 1}));
    // A change re-sends the cookie of a session with an expiry, on both sides (express-session's
    // rule): compare the two headers for the same session.
    let from_express = apps.call(
        Side::Express,
        "POST",
        "/session",
        Some(&cookie),
        Some(json!({"n": 2})),
    );
    let from_sesame = apps.call(
        Side::Sesame,
        "POST",
        "/session",
        Some(&cookie),
        Some(json!({"n": 3})),
    );
    let express = from_express
        .set_cookie()
        .expect("express re-sends the cookie");
    let sesame = from_sesame
        .set_cookie()
        .expect("sesame re-sends the cookie");
    let (express_value, express_attributes, express_expires) = cookie_parts(express);
    let (sesame_value, sesame_attributes, sesame_expires) = cookie_parts(sesame);
    assert_eq!(sesame_value, express_value, "same name and signed value");
    assert_eq!(sesame_attributes, express_attributes, "same attributes");
    let (express_expires, sesame_expires) = (express_expires.unwrap(), sesame_expires.unwrap());
    assert!(
        (sesame_expires - express_expires).abs() <= time::Duration::seconds(5),
        "{express} vs {sesame}"
    );
}

fn a_cookie_signed_with_an_older_secret_is_accepted(store: &SharedStore, apps: &Apps) {
    // An Express app that still signs with the old secret, on the same store.
    let (_old_express, old_port) = start_express(store, OLD_SECRET);
    let reply = request(
        old_port,
        "POST",
        "/session",
        None,
        Some(&json!({"signed_with": "old"})),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let cookie = cookie_pair(reply.set_cookie().unwrap());
    let id = reply.json()["id"].clone();
    let seen = session_of(apps, Side::Sesame, &cookie);
    assert_eq!(seen["id"], id, "sesame accepts the old secret's signature");
    assert_eq!(seen["data"], json!({"signed_with": "old"}));
}

fn shares_sessions_with_express(kind: &'static str) {
    let Some(()) = npm_ready() else { return };
    let Some(store) = SharedStore::reachable(kind) else {
        return;
    };
    let apps = Apps::start(&store);
    data_is_shared_both_ways(&apps);
    changes_are_seen_by_the_other_side(&apps);
    destroy_ends_the_session_for_the_other_side(&apps);
    regenerate_ends_the_old_id_for_the_other_side(&apps);
    flash_messages_are_read_once_by_the_other_side(&apps);
    set_cookie_headers_match(&apps);
    a_cookie_signed_with_an_older_secret_is_accepted(&store, &apps);
    expiry_set_on_one_side_governs_the_other(&apps);
    drop(apps.express);
    drop(apps.sesame);
}

#[test]
fn shares_sessions_with_express_on_redis() {
    shares_sessions_with_express("redis");
}

#[test]
fn shares_sessions_with_express_on_postgres() {
    shares_sessions_with_express("postgres");
}

#[test]
fn shares_sessions_with_express_on_mongodb() {
    shares_sessions_with_express("mongodb");
}
