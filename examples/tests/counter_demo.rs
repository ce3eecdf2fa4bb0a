//! Runs the real `counter` example binary and talks HTTP to it, as the README's user would with
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! curl: the count rises with the cookie, a tampered cookie starts over, and the cookie carries the
//! configured attributes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example binary cargo built next to this test's binary.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --example {name}` (cargo test builds examples)",
        path.display()
    );
    path
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_counter(port: u16, secret: Option<&str>) -> Server {
    let mut command = Command::new(example_binary("counter"));
    command
        .env("PORT", port.to_string())
        .env("SESAME_STORE", "memory")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match secret {
        Some(secret) => command.env("SESSION_SECRET", secret),
        None => command.env_remove("SESSION_SECRET"),
    };
    let server = Server(command.spawn().expect("start the counter example"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the counter example did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

struct Reply {
    status: u16,
    set_cookie: Option<String>,
    body: String,
}

fn get(port: u16, cookie: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cookie_line = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie_line}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let set_cookie = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("set-cookie")
            .then(|| value.trim().to_owned())
    });
    Reply {
        status,
        set_cookie,
        body: body.to_owned(),
    }
}

fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
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
