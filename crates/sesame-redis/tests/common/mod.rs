//! Helpers shared by the integration tests: where the servers are, raw connections, and a private
//! `redis-server` that a test can stop and start.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sesame_conformance::{backend_missing, backend_url, unique_name};
use sesame_redis::redis::aio::MultiplexedConnection;
use sesame_redis::redis::cluster_async::ClusterConnection;
use sesame_redis::redis::{self, RedisResult};
use sesame_redis::{RedisStore, RedisStoreBuilder};
use tokio::process::{Child, Command};

/// The Redis of this machine (`REDIS_URL`).
pub fn redis_url() -> String {
    backend_url("REDIS_URL", "redis://127.0.0.1:6379")
}

/// The nodes of the local Redis Cluster started by `.ci/redis-cluster.sh start`
/// (`REDIS_CLUSTER_URLS`, comma or space separated).
pub fn cluster_urls() -> Vec<String> {
    backend_url(
        "REDIS_CLUSTER_URLS",
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002",
    )
    .split([',', ' '])
    .filter(|url| !url.is_empty())
    .map(str::to_owned)
    .collect()
}

/// A fresh prefix for one test, so tests sharing a Redis never see each other's keys.
pub fn test_prefix() -> String {
    format!("{}:", unique_name("sesame-test-"))
}

/// A store on the Redis of this machine with a fresh prefix, configured by `configure`; `None`
/// (after a loud skip, or a panic under CI) when Redis is missing.
pub async fn single_store(
    configure: impl FnOnce(RedisStoreBuilder) -> RedisStoreBuilder,
) -> Option<RedisStore> {
    let builder = configure(RedisStore::builder().prefix(test_prefix()));
    match builder.connect(&redis_url()).await {
        Ok(store) => Some(store),
        Err(error) => backend_missing("Redis (REDIS_URL)", &chain(&error)),
    }
}

/// A store on the local Redis Cluster with a fresh prefix.
pub async fn cluster_store(
    configure: impl FnOnce(RedisStoreBuilder) -> RedisStoreBuilder,
) -> Option<RedisStore> {
    let builder = configure(RedisStore::builder().prefix(test_prefix()));
    match builder.connect_cluster(cluster_urls()).await {
        Ok(store) => Some(store),
        Err(error) => backend_missing(
            "Redis Cluster (REDIS_CLUSTER_URLS; start it with .ci/redis-cluster.sh start)",
            &chain(&error),
        ),
    }
}

/// An error with its sources, for a skip or failure message that says what went wrong.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A plain connection to a single Redis, to look at what the store wrote.
pub async fn raw(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A plain connection to the local cluster.
pub async fn raw_cluster() -> ClusterConnection {
    redis::cluster::ClusterClient::new(cluster_urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

/// Runs one command on a raw connection.
pub async fn cmd<T: redis::FromRedisValue>(
    conn: &mut impl redis::aio::ConnectionLike,
    cmd: &redis::Cmd,
) -> T {
    let result: RedisResult<T> = cmd.query_async(conn).await;
    result.unwrap()
}

/// A `redis-server` of the test's own, on a free port of 127.0.0.1, that keeps nothing on disk and
/// is killed when dropped.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one, or `None` (after a loud skip, or a panic under CI) when `redis-server` cannot
    /// be run.
    pub async fn start() -> Option<Self> {
        let port = free_port();
        let mut server = Self { port, child: None };
        match server.spawn().await {
            Ok(()) => Some(server),
            Err(error) => backend_missing("redis-server (for a private server)", &error),
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: no goodbye to clients) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open but nothing answers, as in a network partition.
    pub async fn freeze(&self) {
        self.signal("-STOP").await;
    }

    /// Thaws a frozen server (SIGCONT).
    pub async fn thaw(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).unwrap();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await.unwrap();
    }

    async fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
                    if pong.is_ok() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "redis-server did not start on port {}",
                    self.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A port nobody listens on now (the OS picks it; the listener is closed right away).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
