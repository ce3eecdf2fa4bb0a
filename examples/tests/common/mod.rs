//! What the tests of the example apps share: starting real processes on free ports of 127.0.0.1
//! and talking plain HTTP/1.1 to them, as curl would.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example binary cargo built next to this test's binary.
pub(crate) fn example_binary(name: &str) -> PathBuf {
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

/// A free port on 127.0.0.1 (free when asked; the server binds it right after).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed when the test ends, pass or fail. Its output goes to a log file
/// that failure messages quote.
pub(crate) struct Server {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Server {
    /// Starts `command` (output to a log file) and waits until it listens on `port`.
    pub(crate) fn start(name: &str, mut command: Command, port: u16) -> Self {
        let log = std::env::temp_dir().join(format!("sesame-{name}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name}: {error}"));
        let mut server = Server {
            child,
            name: name.to_owned(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{name} exited with {status} before listening:\n{}",
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {port} within 60 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// What the process wrote so far.
    pub(crate) fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- {} log ({}) ---\n{text}", self.name, self.log.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) set_cookies: Vec<String>,
    pub(crate) body: String,
}

impl Reply {
    /// The one `Set-Cookie` header, if any.
    pub(crate) fn set_cookie(&self) -> Option<&str> {
        assert!(self.set_cookies.len() <= 1, "{:?}", self.set_cookies);
        self.set_cookies.first().map(String::as_str)
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("{error}: not JSON: {:?}", self.body))
    }
}

/// Sends one request (`Connection: close`) and reads the whole response. `body` is sent as JSON.
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let set_cookies = head
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().to_owned())
        })
        .collect();
    let chunked = head.lines().any(|line| {
        line.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Reply {
        status,
        set_cookies,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    }
}

/// The body of a chunked response.
fn dechunk(mut raw: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&rest[..size]);
        raw = &rest[size + 2..];
    }
    body
}

/// The `name=value` part of a `Set-Cookie` header, what a browser sends back.
pub(crate) fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The URL of a server store's backend (`redis`, `postgres`, `mongodb`), from the environment as
/// the examples read it, if the server accepts connections; otherwise `None` after
/// `backend_missing`, which fails the test under CI.
pub(crate) fn server_url(store: &str) -> Option<String> {
    let (variable, default, backend) = match store {
        "redis" => ("REDIS_URL", "redis://127.0.0.1:6379", "Redis"),
        "postgres" => (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/test",
            "PostgreSQL",
        ),
        "mongodb" => (
            "MONGODB_URL",
            "mongodb://127.0.0.1:27017/?directConnection=true",
            "MongoDB",
        ),
        other => panic!("{other} is not a server store"),
    };
    let url = sesame_conformance::backend_url(variable, default);
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let address = authority.rsplit('@').next().unwrap_or_default();
    match TcpStream::connect(address) {
        Ok(_) => Some(url),
        Err(error) => sesame_conformance::backend_missing(backend, &error),
    }
}
