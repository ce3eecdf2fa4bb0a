//! Round trips to Redis per request, counted by the server itself (`MONITOR` on a `redis-server`
//! of the test's own): none 0, bad cookie 0, read 1 (with `touch_after`; express-session's
//! every-request touch makes it 2), a read-modify-write 2 (the load and one patch script, whatever
//! other requests do meanwhile), new session 1.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;
#[path = "common/redis.rs"]
mod private_redis;

use std::time::Duration;

use axum::Router;
use axum_sesame::redis::redis;
use axum_sesame::{CookieOptions, RedisStore, SessionLayerBuilder};
use common::{app, builder, get_path};
use private_redis::PrivateRedis;

/// Counts what clients send to Redis, as `MONITOR` shows it: one line per command a client sent,
/// and separate `[0 lua]` lines for what a script runs inside the server (not round trips).
struct Counter {
    connection: redis::aio::MultiplexedConnection,
    lines: std::sync::mpsc::Receiver<String>,
    marks: u64,
}

impl Counter {
    async fn new(url: &str, port: u16) -> Self {
        let (sender, lines) = std::sync::mpsc::channel();
        let mut monitor = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::io::Write::write_all(&mut monitor, b"MONITOR\r\n").unwrap();
        std::thread::spawn(move || {
            let reader = std::io::BufReader::new(monitor);
            for line in std::io::BufRead::lines(reader) {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let client = redis::Client::open(url).unwrap();
        Self {
            connection: client.get_multiplexed_async_connection().await.unwrap(),
            lines,
            marks: 0,
        }
    }

    /// Sends a marker through Redis and returns the client commands `MONITOR` showed before it.
    async fn mark(&mut self) -> u64 {
        self.marks += 1;
        let marker = format!("sesame-mark-{}", self.marks);
        let _: String = redis::cmd("ECHO")
            .arg(&marker)
            .query_async(&mut self.connection)
            .await
            .unwrap();
        let mut commands = 0;
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(5))
                .expect("MONITOR output");
            if line.contains(&marker) {
                return commands;
            }
            if line.starts_with('+') && !line.contains(" lua]") {
                commands += 1;
            }
        }
    }

    /// Round trips `request` costs.
    async fn during(&mut self, request: impl std::future::Future<Output = ()>) -> u64 {
        self.mark().await;
        request.await;
        self.mark().await
    }
}

async fn setup(
    configure: impl FnOnce(SessionLayerBuilder) -> SessionLayerBuilder,
) -> Option<(PrivateRedis, Router, Counter)> {
    let redis = PrivateRedis::start()?;
    let store = RedisStore::builder().connect(&redis.url()).await.unwrap();
    let mut counter = Counter::new(&redis.url(), redis.port()).await;
    counter.mark().await;
    let one_hour = CookieOptions::default().max_age(Duration::from_secs(3600));
    let app = app(configure(builder().cookie(one_hour)), store);
    Some((redis, app, counter))
}

#[tokio::test]
async fn round_trips_per_request() {
    let Some((_redis, app, mut counter)) =
        setup(|builder| builder.touch_after(Duration::from_secs(60))).await
    else {
        return;
    };
    let mut pair = String::new();
    let new = counter
        .during(async { pair = get_path(&app, "/write", None).await.cookie_pair() })
        .await;
    assert_eq!(new, 1, "new session: one SET NX");
    let none = counter
        .during(async {
            get_path(&app, "/none", Some(&pair)).await;
        })
        .await;
    assert_eq!(none, 0, "a handler that ignores the session");
    let read = counter
        .during(async {
            assert_eq!(get_path(&app, "/read", Some(&pair)).await.body, "n=1");
        })
        .await;
    assert_eq!(read, 1, "read: one GET (the touch is throttled)");
    let write = counter
        .during(async {
            assert_eq!(get_path(&app, "/write", Some(&pair)).await.body, "n=2");
        })
        .await;
    assert_eq!(
        write, 2,
        "write (reads the count, then sets it): the load and one patch script"
    );
    let mut forged = pair.clone();
    forged.pop();
    forged.push(if pair.ends_with('A') { 'B' } else { 'A' });
    let bad = counter
        .during(async {
            assert_eq!(get_path(&app, "/read", Some(&forged)).await.body, "n=0");
        })
        .await;
    assert_eq!(bad, 0, "a forged cookie never reaches the store");
}

#[tokio::test]
async fn express_semantics_touch_every_read() {
    let Some((_redis, app, mut counter)) = setup(|builder| builder).await else {
        return;
    };
    let pair = get_path(&app, "/write", None).await.cookie_pair();
    let read = counter
        .during(async {
            get_path(&app, "/read", Some(&pair)).await;
        })
        .await;
    assert_eq!(read, 2, "read: GET, then PEXPIRE");
}
