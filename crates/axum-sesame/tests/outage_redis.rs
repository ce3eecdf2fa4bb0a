//! Store outages through the whole layer, on a real Redis: the test runs its own `redis-server`,
//! stops it mid-test (SIGSTOP: connections hang, as with a dead host) and lets it come back
//! (SIGCONT), with each outage policy. No panic, no hang, nothing stored lost.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum_sesame::{OnStoreError, RedisStore};
use common::{app, builder, get_path};

/// The Redis store's bound on each command here.
const TIMEOUT: Duration = Duration::from_millis(500);

/// A `redis-server` of this test's own, on a free port, killed when the test ends.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spawned = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) => return sesame_conformance::backend_missing("redis-server", &error),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// Stops the server: it keeps its data and its connections, and answers nothing.
    fn stop(&self) {
        self.signal("-STOP");
    }

    fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn store(redis: &PrivateRedis) -> RedisStore {
    RedisStore::builder()
        .timeout(TIMEOUT)
        .connect(&redis.url())
        .await
        .unwrap()
}

/// Bound on a request while Redis is stopped: the store's timeout plus slack for a slow machine.
fn assert_quick(started: Instant) {
    let took = started.elapsed();
    assert!(took < TIMEOUT + Duration::from_secs(2), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_while_redis_is_stopped_and_recovers() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let app = app(builder(), store(&redis).await);
    let pair = get_path(&app, "/write", None).await.cookie_pair();
    assert_eq!(get_path(&app, "/write", Some(&pair)).await.body, "n=2");

    redis.stop();
    let started = Instant::now();
    let reply = get_path(&app, "/write", Some(&pair)).await;
    assert_quick(started);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "Session store unavailable");
    assert!(reply.set_cookies.is_empty(), "the cookie is left alone");
    let started = Instant::now();
    let fresh = get_path(&app, "/write", None).await;
    assert_quick(started);
    assert_eq!(fresh.status, StatusCode::SERVICE_UNAVAILABLE);

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = loop {
        let reply = get_path(&app, "/write", Some(&pair)).await;
        if reply.status == StatusCode::OK || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "n=3"),
        "the session survived the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_without_session_serves_fresh_sessions_while_redis_is_stopped() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let app = app(
        builder().on_store_error(OnStoreError::ContinueWithoutSession),
        store(&redis).await,
    );
    let pair = get_path(&app, "/write", None).await.cookie_pair();

    redis.stop();
    let started = Instant::now();
    let reply = get_path(&app, "/write", Some(&pair)).await;
    assert_quick(started);
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "n=1"));
    assert!(
        reply.set_cookies.is_empty(),
        "an unsaved session sets no cookie"
    );

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = loop {
        let reply = get_path(&app, "/write", Some(&pair)).await;
        if reply.body == "n=2" || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reply.body, "n=2", "the stored session is intact");
}
