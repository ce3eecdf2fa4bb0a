//! Cost per request of raw axum (the floor), sesame and tower-sessions, side by side in one run,
//! for the five scenarios of issue #9, with in-memory stores.
//!
//! `cargo bench -p sesame-bench --bench layer`; `python3 scripts/bench_report.py` turns the results
//! into the README's table and chart.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

mod common;

use axum_sesame::core::serde_json;
use criterion::{Criterion, criterion_group, criterion_main};
use sesame_bench::*;

/// The runtime that drives the apps, and the three apps on their memory stores.
fn runtime_and_apps() -> (tokio::runtime::Runtime, impl App, impl App, impl App) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    (
        runtime,
        raw_app(),
        sesame_memory_app(),
        tower_sessions_app(),
    )
}

fn layers(c: &mut Criterion) {
    let (runtime, raw, sesame, tower_sessions) = runtime_and_apps();
    for scenario in SCENARIOS {
        let mut group = c.benchmark_group(format!("memory/{scenario}"));
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
}

fn bench_one<A: App>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    app: &A,
    path: &str,
    scenario: &str,
    cookie_name: &str,
) {
    let cookie = runtime.block_on(scenario_cookie(app, scenario, cookie_name));
    common::bench_app(group, runtime, name, app, path, cookie.as_deref());
}

/// Rounds of the interleaved pass, and requests per implementation in each round.
const ROUNDS: usize = 150;
const BATCH: usize = 400;

/// The same comparison, interleaved: criterion measures raw, sesame and tower-sessions one after
/// the other, a few seconds each, and on a shared machine the background load drifts between
/// those blocks by more than the differences measured. Here each round runs a batch of requests
/// on each implementation in turn (rotating which goes first), so all three see the same
/// conditions; the median over the rounds of each implementation's ns/request is reported, and
/// written to `interleaved.json` in criterion's directory for `scripts/bench_report.py`.
fn interleaved(_: &mut Criterion) {
    let (runtime, raw, sesame, tower_sessions) = runtime_and_apps();
    let mut report = serde_json::Map::new();
    println!("interleaved ({ROUNDS} rounds of {BATCH} requests), median ns/request:");
    for scenario in SCENARIOS {
        let path = format!("/{scenario}");
        let raw_cookie = runtime.block_on(scenario_cookie(&raw, scenario, "connect.sid"));
        let sesame_cookie = runtime.block_on(scenario_cookie(&sesame, scenario, "connect.sid"));
        let tower_cookie = runtime.block_on(scenario_cookie(&tower_sessions, scenario, "id"));
        let mut batches: [Box<dyn FnMut() -> f64 + '_>; 3] = [
            Box::new(|| batch(&runtime, &raw, &path, raw_cookie.as_deref())),
            Box::new(|| batch(&runtime, &sesame, &path, sesame_cookie.as_deref())),
            Box::new(|| batch(&runtime, &tower_sessions, &path, tower_cookie.as_deref())),
        ];
        let mut samples: [Vec<f64>; 3] = Default::default();
        common::interleave(ROUNDS, 3, |which| samples[which].push(batches[which]()));
        let [raw_ns, sesame_ns, tower_ns] = samples.map(common::median);
        println!(
            "  {scenario:<10} raw {raw_ns:>6.0}  sesame {sesame_ns:>6.0} ({:.2}x)  tower-sessions {tower_ns:>6.0} ({:.2}x)",
            sesame_ns / raw_ns,
            tower_ns / raw_ns
        );
        report.insert(
            scenario.to_owned(),
            serde_json::json!({"raw": raw_ns, "sesame": sesame_ns, "tower-sessions": tower_ns}),
        );
    }
    let dir = criterion_dir();
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            dir.join("interleaved.json"),
            serde_json::Value::Object(report).to_string(),
        )
    });
    if let Err(error) = written {
        eprintln!("could not write interleaved.json: {error}");
    }
}

/// ns/request over one batch of `BATCH` requests.
fn batch<A: App>(
    runtime: &tokio::runtime::Runtime,
    app: &A,
    path: &str,
    cookie: Option<&str>,
) -> f64 {
    let started = std::time::Instant::now();
    runtime.block_on(async {
        for _ in 0..BATCH {
            drive(app, path, cookie).await;
        }
    });
    started.elapsed().as_nanos() as f64 / BATCH as f64
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50);
    targets = layers, interleaved
}
criterion_main!(benches);
