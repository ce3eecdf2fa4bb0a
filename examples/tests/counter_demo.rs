//! Runs the real `counter` example binary and talks HTTP to it, as the README's user would with
//! curl: the count rises with the cookie, a tampered cookie starts over, and the cookie carries the
//! configured attributes.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::Command;

use common::{Server, cookie_pair as pair, example_binary, free_port, request, server_url};

fn start_counter(port: u16, secret: Option<&str>) -> Server {
    start_counter_on(port, secret, "memory", &[])
}

fn start_counter_on(
    port: u16,
    secret: Option<&str>,
    store: &str,
    store_env: &[(&str, String)],
) -> Server {
    let mut command = Command::new(example_binary("counter"));
    command
        .env("PORT", port.to_string())
        .env("SESAME_STORE", store)
        .env("RUST_LOG", "warn")
        .envs(store_env.iter().map(|(k, v)| (k, v)));
    match secret {
        Some(secret) => command.env("SESSION_SECRET", secret),
        None => command.env_remove("SESSION_SECRET"),
    };
    Server::start("counter", command, port)
}

struct Reply {
    status: u16,
    set_cookie: Option<String>,
    body: String,
}

fn get(port: u16, cookie: Option<&str>) -> Reply {
    let reply = request(port, "GET", "/", cookie, None);
    Reply {
        status: reply.status,
        set_cookie: reply.set_cookie().map(str::to_owned),
        body: reply.body,
    }
}

#[test]
fn the_count_rises_with_the_cookie_and_a_tampered_cookie_starts_over() {
    let port = free_port();
    let _server = start_counter(
        port,
        Some(
            "a new secret of at least thirty-two bytes,an old secret of at least thirty-two bytes",
        ),
    );

    let first = get(port, None);
    assert_eq!((first.status, first.body.as_str()), (200, "views: 1"));
    let set_cookie = first
        .set_cookie
        .expect("the first response sets the cookie");
    assert!(set_cookie.starts_with("connect.sid=s%3A"), "{set_cookie}");
    assert!(set_cookie.ends_with("; Path=/; HttpOnly"), "{set_cookie}");
    let cookie = pair(&set_cookie);

    assert_eq!(get(port, Some(&cookie)).body, "views: 2");
    assert_eq!(get(port, Some(&cookie)).body, "views: 3");

    let mut tampered = cookie.clone();
    tampered.pop();
    tampered.push(if cookie.ends_with('A') { 'B' } else { 'A' });
    let reset = get(port, Some(&tampered));
    assert_eq!(reset.body, "views: 1", "a tampered cookie starts over");
    assert_ne!(pair(&reset.set_cookie.unwrap()), cookie);

    assert_eq!(
        get(port, Some(&cookie)).body,
        "views: 4",
        "the real session is intact"
    );
}

#[test]
fn without_a_secret_the_demo_still_runs_on_a_random_one() {
    let port = free_port();
    let _server = start_counter(port, None);
    let first = get(port, None);
    assert_eq!(first.body, "views: 1");
    let cookie = pair(&first.set_cookie.unwrap());
    assert_eq!(get(port, Some(&cookie)).body, "views: 2");
}

/// The same binary counts on a server store chosen by `SESAME_STORE`; the count lives in the store,
/// so it survives a restart of the app.
fn counts_on(store: &str, store_env: &[(&str, String)]) {
    const SECRET: &str = "a demo secret of at least thirty-two bytes";
    let port = free_port();
    let server = start_counter_on(port, Some(SECRET), store, store_env);
    let first = get(port, None);
    assert_eq!(first.body, "views: 1", "{}", server.log());
    let cookie = pair(&first.set_cookie.unwrap());
    assert_eq!(get(port, Some(&cookie)).body, "views: 2");
    drop(server);
    let port = free_port();
    let _restarted = start_counter_on(port, Some(SECRET), store, store_env);
    assert_eq!(
        get(port, Some(&cookie)).body,
        "views: 3",
        "the session outlived the app process"
    );
}

#[test]
fn counts_on_redis() {
    let Some(url) = server_url("redis") else {
        return;
    };
    let prefix = sesame_conformance::unique_name("counter:");
    counts_on("redis", &[("REDIS_URL", url), ("REDIS_PREFIX", prefix)]);
}

#[test]
fn counts_on_mongodb() {
    let Some(url) = server_url("mongodb") else {
        return;
    };
    let collection = sesame_conformance::unique_name("counter_");
    counts_on(
        "mongodb",
        &[("MONGODB_URL", url), ("MONGODB_COLLECTION", collection)],
    );
}

#[test]
fn counts_on_postgres() {
    let Some(url) = server_url("postgres") else {
        return;
    };
    let table = sesame_conformance::unique_name("counter_");
    counts_on("postgres", &[("DATABASE_URL", url), ("PG_TABLE", table)]);
}
