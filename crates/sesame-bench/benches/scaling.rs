//! How sesame's cost grows with the work (issue #9, "Scaling"), in one run:
//!
//! 1. **Payload size**: the `read` and `write` scenarios through the layer with session data of
//!    100 B, 4 KB and 64 KB (as JSON), sesame and tower-sessions (both on their memory store)
//!    side by side: groups `payload/<size>/<scenario>`, functions `sesame` and `tower-sessions`.
//! 2. **Live sessions**: lookups in a `MemoryStore` holding 1 k, 100 k and 1 M live sessions
//!    (filled through `SessionStore::save` with small records): groups `live/<count>/<what>`,
//!    function `sesame`, where `<what>` is
//!    - `read`: the `read` scenario through the layer, cycling over 1 024 of the sessions;
//!    - `load`: `MemoryStore::load` of the same 1 024 sessions (a hot working set);
//!    - `load-spread`: `MemoryStore::load` of 65 536 sessions picked at random (all of them at
//!      1 k), so that at 1 M most lookups miss the CPU caches.
//! 3. **Memory** (not criterion: one measurement in a fresh child process): resident memory before
//!    and after filling 1 M sessions with 100 B of data each, as bytes per session beyond the data.
//! 4. **Sweep stall** (likewise): 1 M sessions that all expire, then `MemoryStore::sweep()` on a
//!    two-worker runtime while another task sends `read` requests through the layer without pause;
//!    the request latencies during the sweep against the same loop without a sweep, and the
//!    sweep's duration.
//!
//! At the end it prints a summary of all four and writes it as JSON to
//! `target/criterion/scaling-report.json` (merged into what is there, so a filtered run updates
//! only its parts).
//!
//! ```text
//! cargo bench -p sesame-bench --bench scaling                  # everything, a few minutes
//! cargo bench -p sesame-bench --bench scaling -- payload       # criterion filter: one part
//! cargo bench -p sesame-bench --bench scaling -- report        # memory and sweep only
//! SCALING_MAX_SESSIONS=100000 cargo bench -p sesame-bench --bench scaling   # a quick run
//! ```
//!
//! The memory and sweep measurements run when there is no filter or when the filter is a part of
//! `report/memory` or `report/sweep`. Under `cargo test --benches` everything runs once with at
//! most 10 000 sessions and no JSON is written.
#![allow(missing_docs)] // benchmark plumbing

use std::cell::OnceCell;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum_sesame::core::serde_json::{self, Map, Value, json};
use axum_sesame::{MemoryStore, Record, SessionId, SessionLayer, SessionStore};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use http_body_util::BodyExt;
use sesame_bench::scaling::*;
use sesame_bench::*;
use tower::ServiceExt;

/// Set in the child processes that take the memory and sweep measurements.
const CHILD_ENV: &str = "SESAME_SCALING_CHILD";
/// How many sessions a child fills.
const CHILD_SESSIONS_ENV: &str = "SESAME_SCALING_SESSIONS";
/// Caps every session count, for quick runs while developing.
const MAX_ENV: &str = "SCALING_MAX_SESSIONS";

/// The probes of `read` and `load`.
const HOT_PROBES: usize = 1024;
/// The probes of `load-spread`.
const SPREAD_PROBES: usize = 65_536;
/// Sessions the requests read during the sweep measurement: spread over the shards.
const SWEEP_PROBES: usize = 256;
/// Max age of the sessions the sweep removes.
const SWEEP_MAX_AGE: Duration = Duration::from_secs(2);
/// How long the request loop runs without a sweep, for the baseline.
const BASELINE_WINDOW: Duration = Duration::from_secs(1);

fn main() {
    if let Ok(part) = std::env::var(CHILD_ENV) {
        child(&part);
        return;
    }
    let args = Args::parse();
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .configure_from_args();
    payloads(&mut c);
    live_sessions(&mut c, args.session_cap());
    c.final_summary();
    if args.mode == Mode::Bench || args.mode == Mode::Test {
        report(&args, started);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Payload sizes

fn payloads(c: &mut Criterion) {
    let runtime = current_thread_runtime();
    for (label, bytes) in PAYLOAD_SIZES {
        let sesame = sesame_memory_payload_app(bytes);
        let tower_sessions = tower_sessions_payload_app(bytes);
        for scenario in PAYLOAD_SCENARIOS {
            let mut group = c.benchmark_group(format!("payload/{label}/{scenario}"));
            let path = format!("/{scenario}");
            bench_payload(&mut group, &runtime, "sesame", &sesame, &path);
            bench_payload(
                &mut group,
                &runtime,
                "tower-sessions",
                &tower_sessions,
                &path,
            );
            group.finish();
        }
    }
}

fn bench_payload<A: App>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    app: &A,
    path: &str,
) {
    // A session carrying the payload, made by the app itself; `read` must find it.
    let cookie = OnceCell::new();
    group.bench_function(name, |b| {
        let cookie = cookie.get_or_init(|| {
            runtime.block_on(async {
                let cookie = send(app, "/fill", None).await.expect("a session cookie");
                assert_eq!(
                    get_body(app, "/read", &cookie).await,
                    "n=1",
                    "{name}: the session"
                );
                cookie
            })
        });
        b.to_async(runtime).iter(|| drive(app, path, Some(cookie)))
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Live sessions

/// A store with many live sessions, the layer over it, and the probes.
struct Live<A> {
    store: MemoryStore,
    app: A,
    hot: Vec<SessionId>,
    hot_cookies: Vec<String>,
    spread: Vec<SessionId>,
}

fn live_sessions(c: &mut Criterion, cap: usize) {
    let runtime = current_thread_runtime();
    for (label, count) in LIVE_SESSIONS {
        if count > cap {
            eprintln!("live/{label}: skipped ({MAX_ENV} or test mode caps sessions at {cap})");
            continue;
        }
        // Filled on first use, so that a filter that skips these benchmarks skips the fill too.
        let cell = OnceCell::new();
        let live = || cell.get_or_init(|| fill_live(&runtime, label, count));

        let mut read = c.benchmark_group(format!("live/{label}/read"));
        read.bench_function("sesame", |b| {
            let live = live();
            let mut i = 0;
            b.to_async(&runtime).iter(|| {
                i += 1;
                send(
                    &live.app,
                    "/read",
                    Some(&live.hot_cookies[i % live.hot_cookies.len()]),
                )
            })
        });
        read.finish();

        for (what, spread) in [("load", false), ("load-spread", true)] {
            let mut load = c.benchmark_group(format!("live/{label}/{what}"));
            load.bench_function("sesame", |b| {
                let live = live();
                let ids = if spread { &live.spread } else { &live.hot };
                let store = &live.store;
                let mut i = 0;
                b.to_async(&runtime).iter(|| {
                    i += 1;
                    store.load(&ids[i % ids.len()])
                })
            });
            load.finish();
        }
    }
}

fn fill_live(runtime: &tokio::runtime::Runtime, label: &str, count: usize) -> Live<impl App> {
    let started = Instant::now();
    // No background sweeper: it would walk every shard once a minute in the middle of a sample.
    let store = MemoryStore::builder().no_sweeping().build();
    let app = sesame_app(layer_over(&store));
    let spread = runtime.block_on(fill(&store, count, SPREAD_PROBES, &small_record()));
    let hot: Vec<SessionId> = spread.iter().take(HOT_PROBES).cloned().collect();
    let hot_cookies = signed_cookies(&hot);
    runtime.block_on(async {
        assert_eq!(store.len().await.ok(), Some(count));
        for cookie in &hot_cookies {
            assert_eq!(
                get_body(&app, "/read", cookie).await,
                "n=1",
                "a live session"
            );
        }
    });
    eprintln!(
        "live/{label}: filled {count} sessions in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Live {
        store,
        app,
        hot,
        hot_cookies,
        spread,
    }
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. Memory and sweep stall, each in a fresh child process

fn report(args: &Args, started: SystemTime) {
    let sessions = args.session_cap().min(REPORT_SESSIONS);
    let mut out = Map::new();
    for part in ["memory", "sweep"] {
        if args.wants(&format!("report/{part}")) {
            if let Some(value) = run_child(part, sessions) {
                out.insert(part.to_owned(), value);
            }
        }
    }
    let criterion_dir = criterion_dir();
    let figures = criterion_figures(&criterion_dir, started);
    out.extend(figures);
    if out.is_empty() {
        return;
    }
    print_summary(&out);
    if args.mode != Mode::Bench {
        return;
    }
    let path = criterion_dir.join("scaling-report.json");
    let mut merged = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .unwrap_or_default();
    merge(&mut merged, out);
    let written = std::fs::create_dir_all(&criterion_dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&merged).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => println!("scaling report written to {}", path.display()),
        Err(error) => eprintln!("could not write {}: {error}", path.display()),
    }
}

/// Merges `from` into `into`, object by object, so a filtered run replaces only its own figures.
fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(old)), Value::Object(new)) => merge(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Runs this binary again as a child that measures `part`; its human-readable output goes to
/// stderr as it comes, its figures come back as JSON on stdout.
fn run_child(part: &str, sessions: usize) -> Option<Value> {
    let exe = std::env::current_exe().ok()?;
    let output = Command::new(exe)
        .env(CHILD_ENV, part)
        .env(CHILD_SESSIONS_ENV, sessions.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    match output {
        Ok(output) if output.status.success() => serde_json::from_slice(&output.stdout).ok(),
        Ok(output) => {
            eprintln!("report/{part}: the child failed ({})", output.status);
            None
        }
        Err(error) => {
            eprintln!("report/{part}: could not run the child: {error}");
            None
        }
    }
}

fn child(part: &str) {
    let sessions = std::env::var(CHILD_SESSIONS_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(REPORT_SESSIONS);
    let value = match part {
        "memory" => memory(sessions),
        "sweep" => sweep_stall(sessions),
        other => panic!("unknown part {other}"),
    };
    println!("{value}");
}

/// Resident memory per session beyond its data, at `count` sessions of 100 B of data.
fn memory(count: usize) -> Value {
    let runtime = current_thread_runtime();
    let store = MemoryStore::builder().no_sweeping().build();
    let record = Record::from_parts(payload_data(MEMORY_PAYLOAD_BYTES), Default::default());
    let payload = json_len(record.data());
    let before = rss_bytes();
    let started = Instant::now();
    runtime.block_on(fill(&store, count, 0, &record));
    let fill_time = started.elapsed();
    let after = rss_bytes();
    assert_eq!(runtime.block_on(store.len()).ok(), Some(count));
    let (Some(before), Some(after)) = (before, after) else {
        eprintln!("report/memory: no /proc/self/status here, no figure");
        return Value::Null;
    };
    let per_session = after.saturating_sub(before) as f64 / count as f64;
    let beyond = per_session - payload as f64;
    // The shards' hash tables hold each entry inline, in power-of-two bucket counts no more than
    // 7/8 full.
    let shards = MemoryStore::SHARDS;
    let per_shard = count.div_ceil(shards);
    let buckets = (per_shard * 8).div_ceil(7).next_power_of_two();
    let table_per_session = (shards * buckets * (inline_slot_bytes() + 1)) as f64 / count as f64;
    eprintln!(
        "report/memory: {count} sessions of {payload} B of data in {:.2} s: RSS {:.1} MiB -> \
         {:.1} MiB, {per_session:.0} B per session, {beyond:.0} B beyond the data \
         (hash-table slots alone: {} B per entry, of which {} B Record and {} B CookieState; \
         about {table_per_session:.0} B per session at this count)",
        fill_time.as_secs_f64(),
        mib(before),
        mib(after),
        inline_slot_bytes(),
        record_inline_bytes().0,
        record_inline_bytes().1,
    );
    json!({
        "sessions": count,
        "payload_bytes": payload,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "bytes_per_session": per_session.round(),
        "bytes_per_session_beyond_payload": beyond.round(),
        "inline_slot_bytes": inline_slot_bytes(),
        "record_inline_bytes": record_inline_bytes().0,
        "cookie_state_inline_bytes": record_inline_bytes().1,
        "table_bytes_per_session": table_per_session.round(),
        "fill_ms": fill_time.as_millis() as u64,
    })
}

/// The latency of requests through the layer while `MemoryStore::sweep()` removes `count` expired
/// sessions, against the same requests without a sweep.
fn sweep_stall(count: usize) -> Value {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = MemoryStore::builder().no_sweeping().build();
        let app = sesame_app(layer_over(&store));
        let live_data = small_record().into_parts().0;
        let live = fill(
            &store,
            SWEEP_PROBES,
            SWEEP_PROBES,
            &record_expiring_in(Duration::from_secs(3600), live_data.clone()),
        )
        .await;
        let cookies = Arc::new(signed_cookies(&live));
        let rss_before = rss_bytes();

        // The sessions to sweep, each expiring SWEEP_MAX_AGE after its save.
        let started = Instant::now();
        let mut left = count;
        while left > 0 {
            let chunk = left.min(4096);
            let record = record_expiring_in(SWEEP_MAX_AGE, live_data.clone());
            fill(&store, chunk, 0, &record).await;
            left -= chunk;
        }
        let filled = Instant::now();
        let fill_time = filled - started;
        let rss_filled = rss_bytes();
        tokio::time::sleep_until((filled + SWEEP_MAX_AGE + Duration::from_millis(100)).into())
            .await;
        assert_eq!(store.len().await.ok(), Some(SWEEP_PROBES), "all others expired");
        for cookie in cookies.iter() {
            assert_eq!(get_body(&app, "/read", cookie).await, "n=1", "a live session");
        }

        // Without a sweep (the expired sessions still in the map).
        let stop = Arc::new(AtomicBool::new(false));
        let requests = tokio::spawn(request_loop(app.clone(), cookies.clone(), stop.clone()));
        tokio::time::sleep(BASELINE_WINDOW).await;
        stop.store(true, Ordering::Relaxed);
        let baseline = requests.await.expect("the request loop");
        let baseline = Latencies::of(baseline.into_iter().map(|(_, latency)| latency).collect());

        // During a sweep.
        stop.store(false, Ordering::Relaxed);
        let requests = tokio::spawn(request_loop(app.clone(), cookies.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sweeper = store.clone();
        let sweep_start = Instant::now();
        let removed = tokio::spawn(async move { sweeper.sweep().await })
            .await
            .expect("the sweep");
        let sweep_end = Instant::now();
        let sweep_time = sweep_end - sweep_start;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let samples = requests.await.expect("the request loop");
        // Every request whose time overlapped the sweep's.
        let during = Latencies::of(
            samples
                .into_iter()
                .filter(|&(start, latency)| start <= sweep_end && start + latency >= sweep_start)
                .map(|(_, latency)| latency)
                .collect(),
        );
        let rss_swept = rss_bytes();
        assert_eq!(removed, count, "the sweep removed every expired session");

        let per_second = |n: usize, window: Duration| (n as f64 / window.as_secs_f64()).round();
        let baseline_rate = per_second(baseline.count, BASELINE_WINDOW);
        let during_rate = per_second(during.count, sweep_time);
        eprintln!(
            "report/sweep: {count} expired sessions (filled in {:.2} s); sweep() took {:.1} ms, \
             {:.2} ms per shard on average ({} shards)\n\
             report/sweep:   without a sweep ({} ms): {baseline}; {baseline_rate} requests/s\n\
             report/sweep:   during the sweep: {during}; {during_rate} requests/s\n\
             report/sweep:   RSS {:.1} MiB before filling, {:.1} MiB filled, {:.1} MiB after the sweep",
            fill_time.as_secs_f64(),
            sweep_time.as_secs_f64() * 1e3,
            sweep_time.as_secs_f64() * 1e3 / MemoryStore::SHARDS as f64,
            MemoryStore::SHARDS,
            BASELINE_WINDOW.as_millis(),
            rss_before.map_or(f64::NAN, mib),
            rss_filled.map_or(f64::NAN, mib),
            rss_swept.map_or(f64::NAN, mib),
        );
        json!({
            "sessions": count,
            "max_age_ms": SWEEP_MAX_AGE.as_millis() as u64,
            "fill_ms": fill_time.as_millis() as u64,
            "removed": removed,
            "sweep_ms": sweep_time.as_secs_f64() * 1e3,
            "runtime": "tokio multi-thread, 2 workers: one sweeping, one sending requests",
            "baseline_window_ms": BASELINE_WINDOW.as_millis() as u64,
            "baseline": baseline.to_json(),
            "baseline_requests_per_s": baseline_rate,
            "during_sweep": during.to_json(),
            "during_sweep_requests_per_s": during_rate,
            "rss_before_bytes": rss_before,
            "rss_filled_bytes": rss_filled,
            "rss_after_sweep_bytes": rss_swept,
        })
    })
}

/// Sends `read` requests back to back until `stop`; each request's start and latency.
async fn request_loop<A: App + Sync>(
    app: A,
    cookies: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> Vec<(Instant, Duration)> {
    let mut samples = Vec::with_capacity(1 << 20);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        drive(&app, "/read", Some(&cookies[i % cookies.len()])).await;
        samples.push((start, start.elapsed()));
        i += 1;
    }
    samples
}

// ---------------------------------------------------------------------------------------------
// The summary

/// The medians of this run's criterion benchmarks, from `<criterion dir>/<id>/new/estimates.json`
/// (only those written since `started`).
fn criterion_figures(dir: &std::path::Path, started: SystemTime) -> Map<String, Value> {
    let median = |group: &str, function: &str| -> Option<f64> {
        let path = dir
            .join(group.replace('/', "_"))
            .join(function)
            .join("new/estimates.json");
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified >= started);
        if !fresh {
            return None;
        }
        let estimates: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        estimates["median"]["point_estimate"].as_f64()
    };
    let mut out = Map::new();
    let mut payload = Map::new();
    for (label, _) in PAYLOAD_SIZES {
        let mut size = Map::new();
        for scenario in PAYLOAD_SCENARIOS {
            let mut row = Map::new();
            for function in ["sesame", "tower-sessions"] {
                if let Some(ns) = median(&format!("payload/{label}/{scenario}"), function) {
                    row.insert(function.to_owned(), json!(ns.round()));
                }
            }
            if !row.is_empty() {
                size.insert(scenario.to_owned(), Value::Object(row));
            }
        }
        if !size.is_empty() {
            payload.insert(label.to_owned(), Value::Object(size));
        }
    }
    if !payload.is_empty() {
        out.insert("payload_ns".to_owned(), Value::Object(payload));
    }
    let mut live = Map::new();
    for (label, _) in LIVE_SESSIONS {
        let mut row = Map::new();
        for what in ["read", "load", "load-spread"] {
            if let Some(ns) = median(&format!("live/{label}/{what}"), "sesame") {
                row.insert(what.to_owned(), json!(ns.round()));
            }
        }
        if !row.is_empty() {
            live.insert(label.to_owned(), Value::Object(row));
        }
    }
    if !live.is_empty() {
        out.insert("live_ns".to_owned(), Value::Object(live));
    }
    out
}

fn print_summary(report: &Map<String, Value>) {
    let ns = |v: &Value| v.as_f64().map_or("-".to_owned(), |ns| format!("{ns:.0}"));
    println!("\n=== scaling summary (medians, ns per request or lookup)");
    if let Some(payload) = report.get("payload_ns") {
        println!("payload        scenario   sesame   tower-sessions");
        for (size, _) in PAYLOAD_SIZES {
            for scenario in PAYLOAD_SCENARIOS {
                let row = &payload[size][scenario];
                if row.is_object() {
                    println!(
                        "  {size:<12} {scenario:<8} {:>8} {:>16}",
                        ns(&row["sesame"]),
                        ns(&row["tower-sessions"])
                    );
                }
            }
        }
    }
    if let Some(live) = report.get("live_ns") {
        println!("live sessions  read (layer)   load (hot 1k)   load (spread)");
        for (count, _) in LIVE_SESSIONS {
            let row = &live[count];
            if row.is_object() {
                println!(
                    "  {count:<12} {:>12} {:>15} {:>15}",
                    ns(&row["read"]),
                    ns(&row["load"]),
                    ns(&row["load-spread"])
                );
            }
        }
    }
    if let Some(memory) = report.get("memory").filter(|m| !m.is_null()) {
        println!(
            "memory: {} sessions of {} B of data: {} B per session, {} B beyond the data",
            memory["sessions"],
            memory["payload_bytes"],
            memory["bytes_per_session"],
            memory["bytes_per_session_beyond_payload"]
        );
    }
    if let Some(sweep) = report.get("sweep") {
        let us = |v: &Value| v.as_f64().map_or(f64::NAN, |ns| ns / 1e3);
        println!(
            "sweep: {} expired sessions swept in {:.1} ms",
            sweep["sessions"],
            sweep["sweep_ms"].as_f64().unwrap_or(f64::NAN)
        );
        for (label, key) in [
            ("without a sweep", "baseline"),
            ("during the sweep", "during_sweep"),
        ] {
            let l = &sweep[key];
            println!(
                "  {label}: {} requests ({} /s), p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, \
                 worst {:.1} µs, {} over 1 ms ({:.1} ms in all)",
                l["count"],
                sweep[format!("{key}_requests_per_s")],
                us(&l["p50_ns"]),
                us(&l["p99_ns"]),
                us(&l["p999_ns"]),
                us(&l["max_ns"]),
                l["over_1ms"],
                us(&l["over_1ms_total_ns"]) / 1e3,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plumbing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bench,
    Test,
    Other,
}

/// What this run was asked for: criterion's mode and filter, as criterion reads them.
struct Args {
    mode: Mode,
    filter: Option<String>,
}

impl Args {
    fn parse() -> Self {
        // criterion's options that take a value (`--name value`; `--name=value` is one argument).
        const WITH_VALUE: [&str; 16] = [
            "--color",
            "--save-baseline",
            "--baseline",
            "--baseline-lenient",
            "--format",
            "--profile-time",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
        ];
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|arg| arg == flag);
        let mode = if has("--list") || args.iter().any(|a| a.starts_with("--profile-time")) {
            Mode::Other
        } else if has("--bench") && !has("--test") {
            Mode::Bench
        } else {
            Mode::Test
        };
        let mut filter = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if WITH_VALUE.contains(&arg.as_str()) || arg == "-c" {
                iter.next();
            } else if !arg.starts_with('-') {
                filter = Some(arg.clone());
                break;
            }
        }
        Self { mode, filter }
    }

    /// The most sessions any part fills: `SCALING_MAX_SESSIONS`, and 10 000 in test mode.
    fn session_cap(&self) -> usize {
        let cap = std::env::var(MAX_ENV)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        if self.mode == Mode::Test {
            cap.min(10_000)
        } else {
            cap
        }
    }

    /// Whether a part outside criterion runs: no filter, or a filter found in its name.
    fn wants(&self, name: &str) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|filter| name.contains(filter))
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A layer as [`sesame_memory_app`]'s, over `store`.
fn layer_over(store: &MemoryStore) -> SessionLayer {
    SessionLayer::builder()
        .secret(SECRET)
        .store_timeout(Some(Duration::from_secs(5)))
        .store(store.clone())
        .build()
        .expect("a valid layer")
}

/// The body of a GET of `path` with `cookie`.
async fn get_body<A: App>(app: &A, path: &str, cookie: &str) -> String {
    let response = app
        .clone()
        .oneshot(request(path, Some(cookie)))
        .await
        .expect("infallible");
    let body: Body = response.into_body();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
