//! The Redis benchmarks of issue #9, side by side in one run, against the Redis at `REDIS_URL`
//! (default `redis://127.0.0.1:6379`); without a reachable Redis they say so and skip.
//!
//! - `redis/<scenario>`: cost per request of raw axum (the floor), sesame on `RedisStore` and
//!   tower-sessions on tower-sessions-redis-store, for the five scenarios, one request at a time;
//!   the round trips each spends per request are counted first and printed.
//! - `throughput/write`: 64 tasks on a multi-thread runtime, each doing sequential writes on its
//!   own session, for sesame and tower-sessions; criterion reports requests per second.
//! - `caching/read`: the read scenario on `RedisStore` (`redis`), on a `CachingStore` in front
//!   of it (`cached-redis`), and on `RedisStore` with its client-side cache
//!   (`client-cached-redis`).
//!
//! `cargo bench -p sesame-bench --bench redis`; `python3 scripts/bench_report.py` prints the
//! tables. See `sesame_bench::redis` for the configuration of each side.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use sesame_bench::redis::*;
use sesame_bench::*;

/// Concurrent writers in the throughput benchmark.
const TASKS: usize = 64;
/// Sequential writes of each writer per iteration.
const WRITES_PER_TASK: usize = 16;

/// The Redis URL when Redis answers there; `None` (said once) when it does not.
fn redis() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        let url = redis_url();
        let runtime = current_thread();
        match runtime.block_on(check_reachable(&url)) {
            Ok(()) => Some(url),
            Err(error) => {
                eprintln!(
                    "\nRedis is not reachable at {url} ({error}): skipping the redis/*, \
                     throughput/* and caching/* benchmarks. Start Redis or set REDIS_URL.\n"
                );
                None
            }
        }
    })
    .as_deref()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn latency(c: &mut Criterion) {
    let Some(url) = redis() else { return };
    let runtime = current_thread();
    match runtime.block_on(count_round_trips(url, SESAME_PREFIX)) {
        Ok(rows) => {
            println!(
                "\nRedis round trips per request \
                 (sesame | tower-sessions | sesame with the client-side cache):"
            );
            for (scenario, [_, sesame, tower_sessions, cached]) in &rows {
                println!("  {scenario:<10} {sesame:>4.1} | {tower_sessions:>4.1} | {cached:>4.1}");
            }
            println!();
            let path = criterion_dir().join("redis-round-trips.json");
            let written = std::fs::create_dir_all(criterion_dir())
                .and_then(|()| std::fs::write(&path, round_trips_json(&rows)));
            if let Err(error) = written {
                eprintln!("could not write {}: {error}", path.display());
            }
        }
        Err(error) => eprintln!("could not count round trips: {error}"),
    }
    let raw = raw_app();
    let sesame = runtime
        .block_on(sesame_store(url, SESAME_PREFIX))
        .map(sesame_redis_app)
        .expect("sesame's store");
    let tower_sessions = runtime
        .block_on(tower_sessions_client(url))
        .map(tower_sessions_redis_app)
        .expect("tower-sessions' client");
    for scenario in SCENARIOS {
        let mut group = c.benchmark_group(format!("redis/{scenario}"));
        let path = format!("/{scenario}");
        bench_one(
            &mut group,
            &runtime,
            "raw",
            &raw,
            &path,
            scenario,
            "connect.sid",
        );
        bench_one(
            &mut group,
            &runtime,
            "sesame",
            &sesame,
            &path,
            scenario,
            "connect.sid",
        );
        bench_one(
            &mut group,
            &runtime,
            "tower-sessions",
            &tower_sessions,
            &path,
            scenario,
            "id",
        );
        group.finish();
    }
    runtime.block_on(clear_prefix(url, SESAME_PREFIX));
}

fn caching(c: &mut Criterion) {
    let Some(url) = redis() else { return };
    let runtime = current_thread();
    let redis = runtime
        .block_on(sesame_store(url, SESAME_PREFIX))
        .map(sesame_redis_app)
        .expect("sesame's store");
    let cached = runtime
        .block_on(sesame_store(url, CACHED_PREFIX))
        .map(sesame_cached_redis_app)
        .expect("sesame's store");
    let mut group = c.benchmark_group("caching/read");
    let name = "connect.sid";
    bench_one(&mut group, &runtime, "redis", &redis, "/read", "read", name);
    bench_one(
        &mut group,
        &runtime,
        "cached-redis",
        &cached,
        "/read",
        "read",
        name,
    );
    let client_cached = runtime
        .block_on(sesame_client_cached_store(url, SESAME_PREFIX))
        .map(sesame_redis_app)
        .expect("sesame's client-cached store");
    bench_one(
        &mut group,
        &runtime,
        "client-cached-redis",
        &client_cached,
        "/read",
        "read",
        name,
    );
    group.finish();
    runtime.block_on(clear_prefix(url, SESAME_PREFIX));
    runtime.block_on(clear_prefix(url, CACHED_PREFIX));
}

fn throughput(c: &mut Criterion) {
    let Some(url) = redis() else { return };
    // The stores' connection tasks must live on the runtime that drives the requests.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let sesame = runtime
        .block_on(sesame_store(url, THROUGHPUT_PREFIX))
        .map(sesame_redis_app)
        .expect("sesame's store");
    let tower_sessions = runtime
        .block_on(tower_sessions_client(url))
        .map(tower_sessions_redis_app)
        .expect("tower-sessions' client");
    let mut group = c.benchmark_group("throughput/write");
    group
        .throughput(Throughput::Elements((TASKS * WRITES_PER_TASK) as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10);
    let cached = runtime
        .block_on(sesame_client_cached_store(url, THROUGHPUT_PREFIX))
        .map(sesame_redis_app)
        .expect("sesame's client-cached store");
    throughput_one(&mut group, &runtime, "sesame", &sesame);
    throughput_one(&mut group, &runtime, "tower-sessions", &tower_sessions);
    throughput_one(&mut group, &runtime, "sesame-client-cache", &cached);
    group.finish();
    runtime.block_on(clear_prefix(url, THROUGHPUT_PREFIX));
}

fn throughput_one<A: App + Sync>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    app: &A,
) {
    let cookies = runtime.block_on(sessions_for(app, TASKS));
    let expected = (TASKS * WRITES_PER_TASK) as u64;
    let ok = runtime.block_on(concurrent_writes(app, &cookies, WRITES_PER_TASK));
    assert_eq!(ok, expected, "{name}: some concurrent writes failed");
    group.bench_function(name, |b| {
        b.to_async(runtime)
            .iter(|| concurrent_writes(app, &cookies, WRITES_PER_TASK))
    });
}

fn bench_one<A: App>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    app: &A,
    path: &str,
    scenario: &str,
    cookie_name: &str,
) {
    let cookie = runtime.block_on(redis_scenario_cookie(app, scenario, cookie_name));
    common::bench_app(group, runtime, name, app, path, cookie.as_deref());
}

criterion_group! {
    name = latency_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = latency, caching
}
criterion_group! {
    name = throughput_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = throughput
}

criterion_main!(latency_benches, throughput_benches);
