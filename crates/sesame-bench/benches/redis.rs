//! The Redis benchmarks of issue #9, side by side in one run, against the Redis at `REDIS_URL`
//! (default `redis://127.0.0.1:6379`); without a reachable Redis they say so and skip.
//!
//! - `redis/<scenario>`: cost per request of raw axum (the floor), sesame on `RedisStore` and
//!   tower-sessions on tower-sessions-redis-store, for the five scenarios, one request at a time;
//!   the round trips each spends per request are counted first and printed.
//! - `throughput/write`: 64 tasks on a multi-thread runtime, each doing sequential writes on its
//!   own session, for sesame and tower-sessions; criterion reports requests per second.
//! - the interleaved throughput pass (printed, and written to `redis-throughput.json`): the same
//!   writes, rotating between the implementations round by round, beside three ceilings: raw
//!   axum doing one `SET` per request (on redis-rs, then on fred) or one compare-and-set script,
//!   and nothing else. No session layer on the same client outruns its ceiling here, where the
//!   client and Redis share two cores; the compare-and-set one bounds any layer that, like
//!   sesame, never loses a concurrent update on a Redis without a conditional `SET` (before 8.4).
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

use axum_sesame::core::serde_json;
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use sesame_bench::redis::*;
use sesame_bench::scaling::process_cpu_time;
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

/// The multi-thread runtime of the throughput benchmarks (the stores' connection tasks must live
/// on the runtime that drives the requests) and their three apps: sesame, tower-sessions and
/// sesame with the client-side cache.
fn throughput_apps(
    url: &str,
) -> (
    tokio::runtime::Runtime,
    impl App + Sync,
    impl App + Sync,
    impl App + Sync,
) {
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
    let cached = runtime
        .block_on(sesame_client_cached_store(url, THROUGHPUT_PREFIX))
        .map(sesame_redis_app)
        .expect("sesame's client-cached store");
    (runtime, sesame, tower_sessions, cached)
}

fn throughput(c: &mut Criterion) {
    let Some(url) = redis() else { return };
    let (runtime, sesame, tower_sessions, cached) = throughput_apps(url);
    let mut group = c.benchmark_group("throughput/write");
    group
        .throughput(Throughput::Elements((TASKS * WRITES_PER_TASK) as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10);
    throughput_one(&mut group, &runtime, "sesame", &sesame);
    throughput_one(&mut group, &runtime, "tower-sessions", &tower_sessions);
    throughput_one(&mut group, &runtime, "sesame-client-cache", &cached);
    group.finish();
    runtime.block_on(clear_prefix(url, THROUGHPUT_PREFIX));
}

/// Rounds of the interleaved throughput pass; each runs every implementation once.
const THROUGHPUT_ROUNDS: usize = 40;

/// The throughput comparison again, interleaved: criterion measures each implementation for
/// seconds on end, and on this shared machine the background load drifts between those blocks by
/// more than the differences measured (runs of the same code have differed by a third). Here each
/// round runs one batch of [`TASKS`] × [`WRITES_PER_TASK`] concurrent writes on each
/// implementation in turn (rotating which goes first), so all three see the same conditions; the
/// median requests/s of each over the rounds is reported, and written to
/// `redis-throughput.json` in criterion's directory for `scripts/bench_report.py`.
fn throughput_interleaved(_: &mut Criterion) {
    let Some(url) = redis() else { return };
    let (runtime, sesame, tower_sessions, cached) = throughput_apps(url);
    let ceilings = runtime.block_on(async {
        let redis_rs = redis_rs_write_ceiling_app(url).await?;
        let fred = fred_write_ceiling_app(url).await?;
        let compare_and_set = redis_rs_compare_and_set_ceiling_app(url).await?;
        Ok::<_, String>((redis_rs, fred, compare_and_set))
    });
    let (redis_rs_ceiling, fred_ceiling, compare_and_set_ceiling) =
        ceilings.expect("the write ceilings' clients");
    let runtime = &runtime;
    let writes = TASKS * WRITES_PER_TASK;
    // Each implementation: its name in the report, and one batch of writes on its sessions.
    let mut implementations: Vec<(&str, Batches<'_>)> = vec![
        ("sesame", throughput_batches(runtime, sesame)),
        (
            "tower-sessions",
            throughput_batches(runtime, tower_sessions),
        ),
        ("sesame-client-cache", throughput_batches(runtime, cached)),
        (
            "ceiling-redis-rs",
            throughput_batches(runtime, redis_rs_ceiling),
        ),
        ("ceiling-fred", throughput_batches(runtime, fred_ceiling)),
        (
            "ceiling-compare-and-set",
            throughput_batches(runtime, compare_and_set_ceiling),
        ),
    ];
    let count = implementations.len();
    let mut samples = vec![Vec::new(); count];
    // The process's CPU time during each implementation's batches: both cores are busy, so
    // throughput follows the CPU a request costs the client (Redis' own time is apart).
    let mut cpu = vec![Duration::ZERO; count];
    common::interleave(THROUGHPUT_ROUNDS, count, |which| {
        let before = process_cpu_time();
        samples[which].push((implementations[which].1)());
        if let (Some(before), Some(after)) = (before, process_cpu_time()) {
            cpu[which] += after.saturating_sub(before);
        }
    });
    let requests = (THROUGHPUT_ROUNDS * writes) as f64;
    let rates: Vec<f64> = samples.into_iter().map(common::median).collect();
    let cpu_us: Vec<f64> = cpu
        .iter()
        .map(|cpu| cpu.as_secs_f64() * 1e6 / requests)
        .collect();
    let tower_sessions_rate = rates[1];
    println!(
        "\nwrite throughput, interleaved ({THROUGHPUT_ROUNDS} rounds of {writes} writes by \
         {TASKS} tasks), median requests/s (client CPU per request, ratio to tower-sessions):"
    );
    for (((name, _), rate), cpu_us) in implementations.iter().zip(&rates).zip(&cpu_us) {
        println!(
            "  {name:<20} {rate:>7.0} ({cpu_us:>4.1} µs, {:.2}x)",
            rate / tower_sessions_rate
        );
    }
    println!(
        "  (a ceiling is raw axum doing one SET per request and nothing else, on that client; \
         ceiling-compare-and-set does one EVALSHA of a GET-compare-SET script instead)\n"
    );
    let by_name = |values: &[f64]| {
        implementations
            .iter()
            .zip(values)
            .map(|((name, _), value)| ((*name).to_owned(), serde_json::json!(value)))
            .collect::<serde_json::Map<_, _>>()
    };
    let report = serde_json::json!({
        "tasks": TASKS,
        "writes_per_task": WRITES_PER_TASK,
        "rounds": THROUGHPUT_ROUNDS,
        "requests_per_second": by_name(&rates),
        "client_cpu_us_per_request": by_name(&cpu_us),
    });
    let path = criterion_dir().join("redis-throughput.json");
    let written = std::fs::create_dir_all(criterion_dir())
        .and_then(|()| std::fs::write(&path, report.to_string()));
    if let Err(error) = written {
        eprintln!("could not write {}: {error}", path.display());
    }
    runtime.block_on(clear_prefix(url, THROUGHPUT_PREFIX));
}

/// Runs one batch of concurrent writes and returns its requests per second.
type Batches<'a> = Box<dyn FnMut() -> f64 + 'a>;

/// Batches of concurrent writes on `app`, each on the same sessions (made now).
fn throughput_batches<'a, A: App + Sync>(
    runtime: &'a tokio::runtime::Runtime,
    app: A,
) -> Batches<'a> {
    let cookies = runtime.block_on(sessions_for(&app, TASKS));
    Box::new(move || rate(runtime, &app, &cookies))
}

/// Requests per second of one batch of concurrent writes; every write must succeed.
fn rate<A: App + Sync>(
    runtime: &tokio::runtime::Runtime,
    app: &A,
    cookies: &std::sync::Arc<Vec<String>>,
) -> f64 {
    let started = std::time::Instant::now();
    let ok = runtime.block_on(concurrent_writes(app, cookies, WRITES_PER_TASK));
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        ok,
        (TASKS * WRITES_PER_TASK) as u64,
        "some concurrent writes failed"
    );
    ok as f64 / elapsed
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
    targets = throughput, throughput_interleaved
}

criterion_main!(latency_benches, throughput_benches);
