//! The Redis side of the benchmarks: sesame on `axum_sesame::RedisStore` (alone and behind a
//! `CachingStore`) and tower-sessions on `tower-sessions-redis-store`, on the same handlers as the
//! memory benchmark, against the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).
//!
//! Configuration, chosen so that both implementations do the same work per request:
//! - neither moves a session's expiry on a request that only reads it: tower-sessions never does,
//!   and sesame is given `touch_after` (with a cookie max age, which it needs to know when the
//!   last touch was). sesame's default, express-session's, touches the store on every such
//!   request (`PEXPIRE`, a second round trip on `read`), and a touch drops the session from a
//!   `CachingStore`, so the cache would never hit;
//! - both cookies carry the same 30-minute max age, and records expire in Redis after 30 minutes,
//!   so whatever a run leaves behind goes away by itself (sesame's keys are also cleared after the
//!   run: they live under their own prefix; tower-sessions-redis-store has no key prefix, so its
//!   keys are the bare session ids);
//! - each side talks to Redis over one multiplexed connection (redis-rs' `ConnectionManager` for
//!   sesame, one `fred` client for tower-sessions).
//!
//! The forged cookie of the `bad-cookie` scenario is well formed for each implementation: a
//! signed-looking cookie with a wrong signature for sesame (refused before any store call), and a
//! syntactically valid but unknown session id for tower-sessions, whose cookies are not signed
//! (so it asks Redis).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum_sesame::{CachingStore, CookieOptions, RedisStore, SessionLayer, SessionStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::Layer;
use tower_sessions_redis_store::fred::prelude::{ClientLike, Config};

use crate::{App, SECRET, send, sesame_app, tower_sessions_router};

/// The Redis the benchmarks use when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The key prefix of sesame's records in the latency benchmarks.
pub const SESAME_PREFIX: &str = "sesame-bench:sesame:";
/// The key prefix of sesame's records behind the `CachingStore`.
pub const CACHED_PREFIX: &str = "sesame-bench:cached:";
/// The key prefix of sesame's records in the throughput benchmark.
pub const THROUGHPUT_PREFIX: &str = "sesame-bench:throughput:";

/// How long a benchmark session lives (cookie max age and Redis TTL): leftovers expire.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The Redis URL: `REDIS_URL`, or [`DEFAULT_REDIS_URL`].
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// sesame's `RedisStore` under `prefix`, with records expiring after [`SESSION_LIFETIME`].
pub async fn sesame_store(url: &str, prefix: &str) -> Result<RedisStore, String> {
    RedisStore::builder()
        .prefix(prefix)
        .default_ttl(SESSION_LIFETIME)
        .timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(|error| {
            format!(
                "cannot connect sesame's RedisStore to {url}: {}",
                with_sources(&error)
            )
        })
}

/// [`sesame_store`] with the client-side cache (Redis tracking) on.
pub async fn sesame_client_cached_store(url: &str, prefix: &str) -> Result<RedisStore, String> {
    RedisStore::builder()
        .prefix(prefix)
        .default_ttl(SESSION_LIFETIME)
        .timeout(Duration::from_secs(2))
        .client_side_cache(axum_sesame::redis::DEFAULT_CLIENT_CACHE_CAPACITY)
        .connect(url)
        .await
        .map_err(|error| {
            format!(
                "cannot connect sesame's client-cached RedisStore to {url}: {}",
                with_sources(&error)
            )
        })
}

/// sesame's layer over `store` (see the module docs for why `touch_after` and the max age).
pub fn sesame_redis_layer(store: impl SessionStore) -> SessionLayer {
    SessionLayer::builder()
        .secret(SECRET)
        .store(store)
        .touch_after(Duration::from_secs(60))
        .cookie(CookieOptions::default().max_age(SESSION_LIFETIME))
        .store_timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("a valid layer")
}

/// sesame on `RedisStore`.
pub fn sesame_redis_app(store: RedisStore) -> impl App {
    sesame_app(sesame_redis_layer(store))
}

/// sesame on a `CachingStore` (default TTL and capacity) in front of `RedisStore`.
pub fn sesame_cached_redis_app(store: RedisStore) -> impl App {
    sesame_app(sesame_redis_layer(CachingStore::new(store)))
}

/// A connected `fred` client, tower-sessions-redis-store's driver. Connect it on the runtime that
/// will drive the requests: its connection task lives there.
pub async fn tower_sessions_client(
    url: &str,
) -> Result<tower_sessions_redis_store::fred::prelude::Client, String> {
    let config = Config::from_url(url).map_err(|error| format!("bad REDIS_URL {url}: {error}"))?;
    let client = tower_sessions_redis_store::fred::prelude::Client::new(config, None, None, None);
    client
        .init()
        .await
        .map_err(|error| format!("cannot connect fred to {url}: {error}"))?;
    Ok(client)
}

/// tower-sessions (0.14) on tower-sessions-redis-store, the same handlers.
pub fn tower_sessions_redis_app(
    client: tower_sessions_redis_store::fred::prelude::Client,
) -> impl App {
    use tower_sessions_014::{Expiry, SessionManagerLayer, cookie::time};
    let lifetime = time::Duration::try_from(SESSION_LIFETIME).expect("a short duration");
    SessionManagerLayer::new(tower_sessions_redis_store::RedisStore::new(client))
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(lifetime))
        .layer(tower_sessions_router::<tower_sessions_014::Session>())
}

/// What the write ceilings store: the size of sesame's record in the `write` scenario (its cookie
/// state and one counter, as connect-redis writes it).
const CEILING_RECORD: &str = r#"{"cookie":{"originalMaxAge":1800000,"expires":"2026-12-03T16:00:00.000Z","httpOnly":true,"path":"/"},"n":2}"#;

/// Raw axum whose `/write` does the least that a session write to Redis does: one round trip,
/// `set`, that stores a record the size of sesame's with an expiry (a `SET`, or the
/// compare-and-set script of [`redis_rs_compare_and_set_ceiling_app`]); nothing else (no session
/// to load, no signature, no data to encode). A first request without a cookie gets one naming
/// its key. On a machine where the client and Redis share the cores, the requests per second of
/// this app bound what a session layer doing that round trip on the same client can reach: the
/// ceiling of the throughput comparison, as raw axum is the floor of the per-request costs.
fn write_ceiling_app<S, F>(name: &'static str, set: S) -> impl App
where
    S: Fn(String, &'static str) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = bool> + Send,
{
    use axum::response::IntoResponse;
    static NEXT_KEY: AtomicU64 = AtomicU64::new(0);
    let write = move |headers: http::HeaderMap| async move {
        let cookie = headers
            .get(http::header::COOKIE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let fresh = cookie.is_none();
        let cookie = cookie
            .unwrap_or_else(|| format!("{name}={}", NEXT_KEY.fetch_add(1, Ordering::Relaxed)));
        if !set(format!("{THROUGHPUT_PREFIX}{cookie}"), CEILING_RECORD).await {
            return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        if fresh {
            ([(http::header::SET_COOKIE, cookie)], "n=1").into_response()
        } else {
            "n=2".into_response()
        }
    };
    axum::Router::new().route("/write", axum::routing::get(write))
}

/// A redis-rs `ConnectionManager` (the client under sesame's store) to `url`.
async fn redis_rs_connection(
    url: &str,
) -> Result<axum_sesame::redis::redis::aio::ConnectionManager, String> {
    use axum_sesame::redis::redis;
    let client =
        redis::Client::open(url).map_err(|error| format!("bad REDIS_URL {url}: {error}"))?;
    redis::aio::ConnectionManager::new(client)
        .await
        .map_err(|error| format!("cannot connect redis-rs to {url}: {error}"))
}

/// [`write_ceiling_app`] on redis-rs' `ConnectionManager`, the client under sesame's store.
pub async fn redis_rs_write_ceiling_app(url: &str) -> Result<impl App, String> {
    use axum_sesame::redis::redis;
    let connection = redis_rs_connection(url).await?;
    let lifetime = SESSION_LIFETIME.as_millis() as u64;
    Ok(write_ceiling_app("redis-rs", move |key, record| {
        let mut connection = connection.clone();
        async move {
            redis::cmd("SET")
                .arg(key)
                .arg(record)
                .arg("PX")
                .arg(lifetime)
                .query_async::<()>(&mut connection)
                .await
                .is_ok()
        }
    }))
}

/// The least compare-and-set a write can do on Redis 7 (which has no conditional `SET`): a script
/// that reads the key, compares it with the record the request read, and sets the new one, as
/// sesame's replace script does (two `redis.call`s). Absent keys are set too, so the first write
/// of a session passes.
const CEILING_COMPARE_AND_SET: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored == false or stored == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// [`write_ceiling_app`] whose one round trip is [`CEILING_COMPARE_AND_SET`] (`EVALSHA`) on
/// redis-rs' `ConnectionManager`: the ceiling of a write that cannot lose a concurrent update.
pub async fn redis_rs_compare_and_set_ceiling_app(url: &str) -> Result<impl App, String> {
    use axum_sesame::redis::redis;
    let connection = redis_rs_connection(url).await?;
    let script = Arc::new(redis::Script::new(CEILING_COMPARE_AND_SET));
    let lifetime = SESSION_LIFETIME.as_millis() as u64;
    Ok(write_ceiling_app("compare-and-set", move |key, record| {
        let mut connection = connection.clone();
        let script = Arc::clone(&script);
        async move {
            script
                .key(key)
                .arg(record)
                .arg(record)
                .arg(lifetime)
                .invoke_async::<i64>(&mut connection)
                .await
                .is_ok_and(|set| set == 1)
        }
    }))
}

/// [`write_ceiling_app`] on a `fred` client, the client under tower-sessions-redis-store.
pub async fn fred_write_ceiling_app(url: &str) -> Result<impl App, String> {
    use tower_sessions_redis_store::fred::prelude::{Expiration, KeysInterface};
    let client = tower_sessions_client(url).await?;
    let lifetime = SESSION_LIFETIME.as_millis() as i64;
    Ok(write_ceiling_app("fred", move |key, record| {
        let client = client.clone();
        async move {
            client
                .set::<(), _, _>(key, record, Some(Expiration::PX(lifetime)), None, false)
                .await
                .is_ok()
        }
    }))
}

/// The cookie a scenario sends (see [`crate::scenario_cookie`]), with a well-formed forged cookie
/// for tower-sessions (cookie name `id`): an unknown session id.
pub async fn redis_scenario_cookie<A: App>(app: &A, scenario: &str, name: &str) -> Option<String> {
    if scenario == "bad-cookie" && name == "id" {
        return Some("id=AAAAAAAAAAAAAAAAAAAAAA".to_owned());
    }
    crate::scenario_cookie(app, scenario, name).await
}

/// Checks that Redis answers at `url` within a second, with the reason when it does not.
pub async fn check_reachable(url: &str) -> Result<(), String> {
    let store = RedisStore::builder()
        .prefix(SESAME_PREFIX)
        .timeout(Duration::from_secs(1))
        .connect(url);
    match tokio::time::timeout(Duration::from_secs(2), store).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(with_sources(&error)),
        Err(_) => Err("no answer within 2 s".to_owned()),
    }
}

/// An error and its sources, `error: source: source`.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Deletes the sesame records a run left under `prefix`.
pub async fn clear_prefix(url: &str, prefix: &str) {
    match sesame_store(url, prefix).await {
        Ok(store) => {
            if let Err(error) = store.clear().await {
                eprintln!("could not clear {prefix}* in Redis: {error}");
            }
        }
        Err(error) => eprintln!("could not clear {prefix}* in Redis: {error}"),
    }
}

/// Writes done concurrently by `cookies.len()` tasks, each `per_task` sequential `/write`
/// requests on its own session; returns how many succeeded (a failed write is one whose response
/// is not a 200).
pub async fn concurrent_writes<A: App>(
    app: &A,
    cookies: &Arc<Vec<String>>,
    per_task: usize,
) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..cookies.len() {
        let app = app.clone();
        let cookies = Arc::clone(cookies);
        tasks.spawn(async move {
            let mut ok = 0;
            for _ in 0..per_task {
                let response = tower::ServiceExt::oneshot(
                    app.clone(),
                    crate::request("/write", Some(&cookies[i])),
                )
                .await
                .expect("infallible");
                if response.status() == http::StatusCode::OK {
                    ok += 1;
                }
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += done.expect("a write task");
    }
    ok
}

/// One live session per task, for [`concurrent_writes`].
pub async fn sessions_for<A: App>(app: &A, tasks: usize) -> Arc<Vec<String>> {
    let mut cookies = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        cookies.push(send(app, "/write", None).await.expect("a session cookie"));
    }
    Arc::new(cookies)
}

/// A TCP relay in front of Redis that counts round trips: each chunk a client sends before it
/// waits for an answer is one (a pipeline is one; the commands here are small enough for one
/// read each). Only for counting: it adds a hop, so never time through it.
#[derive(Debug, Clone)]
pub struct RoundTripCounter {
    url: String,
    count: Arc<AtomicU64>,
}

impl RoundTripCounter {
    /// Listens on an ephemeral loopback port and relays every connection to the Redis at `url`.
    pub async fn start(url: &str) -> Result<Self, String> {
        let (before, host, after) = split_url(url)?;
        let upstream = host.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| error.to_string())?;
        let local = listener.local_addr().map_err(|error| error.to_string())?;
        let count = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let count = Arc::clone(&counter);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, count).await;
                    }
                });
            }
        });
        Ok(Self {
            url: format!("{before}{local}{after}"),
            count,
        })
    }

    /// The URL to connect through the relay.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Round trips since the last reset.
    pub fn take(&self) -> u64 {
        self.count.swap(0, Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, server: TcpStream, count: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    count.fetch_add(1, Ordering::SeqCst);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

/// `redis://[userinfo@]host:port[/db]` as (`redis://[userinfo@]`, `host:port`, `[/db]`).
fn split_url(url: &str) -> Result<(&str, &str, &str), String> {
    let scheme_end = url
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| format!("not a redis:// URL: {url}"))?;
    let rest = &url[scheme_end..];
    let path_start = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..path_start];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let mut host = &authority[host_start..];
    let split = scheme_end + host_start;
    if !host.contains(':') {
        host = "";
    }
    if host.is_empty() {
        return Err(format!(
            "REDIS_URL needs an explicit host:port for counting: {url}"
        ));
    }
    Ok((&url[..split], host, &rest[path_start..]))
}

/// The round trips each implementation spends per request in each scenario, through a
/// [`RoundTripCounter`]: `(scenario, [raw, sesame, tower-sessions])`. sesame's records go under
/// `prefix` (the caller clears it).
pub async fn count_round_trips(
    url: &str,
    prefix: &str,
) -> Result<Vec<(&'static str, [f64; 4])>, String> {
    const REQUESTS: u64 = 20;
    let counter = RoundTripCounter::start(url).await?;
    let sesame = sesame_redis_app(sesame_store(counter.url(), prefix).await?);
    let tower_sessions = tower_sessions_redis_app(tower_sessions_client(counter.url()).await?);
    let cached = sesame_redis_app(sesame_client_cached_store(counter.url(), prefix).await?);
    let mut rows = Vec::new();
    for scenario in crate::SCENARIOS {
        let path = format!("/{scenario}");
        let mut row = [0.0; 4];
        let sesame_cookie = redis_scenario_cookie(&sesame, scenario, "connect.sid").await;
        counter.take();
        for _ in 0..REQUESTS {
            send(&sesame, &path, sesame_cookie.as_deref()).await;
        }
        row[1] = counter.take() as f64 / REQUESTS as f64;
        let tower_cookie = redis_scenario_cookie(&tower_sessions, scenario, "id").await;
        counter.take();
        for _ in 0..REQUESTS {
            send(&tower_sessions, &path, tower_cookie.as_deref()).await;
        }
        row[2] = counter.take() as f64 / REQUESTS as f64;
        let cached_cookie = redis_scenario_cookie(&cached, scenario, "connect.sid").await;
        // The first request of a session this store has not seen reads it; count the rest.
        send(&cached, &path, cached_cookie.as_deref()).await;
        counter.take();
        for _ in 0..REQUESTS {
            send(&cached, &path, cached_cookie.as_deref()).await;
        }
        row[3] = counter.take() as f64 / REQUESTS as f64;
        rows.push((scenario, row));
    }
    Ok(rows)
}

/// The round trips of [`count_round_trips`] as JSON, for `scripts/bench_report.py`:
/// `{"sesame": {"none": 0.0, ...}, "tower-sessions": {...}, "sesame-client-cache": {...}}`.
pub fn round_trips_json(rows: &[(&str, [f64; 4])]) -> String {
    let side = |i: usize| {
        let members: Vec<String> = rows
            .iter()
            .map(|(scenario, row)| format!("\"{scenario}\": {}", row[i]))
            .collect();
        format!("{{{}}}", members.join(", "))
    };
    format!(
        "{{\"sesame\": {}, \"tower-sessions\": {}, \"sesame-client-cache\": {}}}\n",
        side(1),
        side(2),
        side(3)
    )
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn splits_redis_urls() {
        assert_eq!(
            split_url("redis://127.0.0.1:6379"),
            Ok(("redis://", "127.0.0.1:6379", ""))
        );
        assert_eq!(
            split_url("redis://:pw@localhost:6380/2"),
            Ok(("redis://:pw@", "localhost:6380", "/2"))
        );
        assert!(split_url("redis://localhost").is_err());
    }
}
