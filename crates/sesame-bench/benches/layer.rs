//! Cost per request of raw axum (the floor), sesame and tower-sessions, side by side in one run,
//! for the five scenarios of issue #9, with in-memory stores.
//!
//! `cargo bench -p sesame-bench --bench layer`; `python3 scripts/bench_report.py` turns the results
//! into the README's table and chart.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use sesame_bench::*;

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let raw = raw_app();
    let sesame = sesame_memory_app();
    let tower_sessions = tower_sessions_app();
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50);
    targets = layers
}
criterion_main!(benches);
