//! Cost per request of raw axum (the floor), sesame and tower-sessions, side by side in one run,
//! for the five scenarios of issue #9, with in-memory stores.
//!
//! `cargo bench -p sesame-bench --bench layer`; `python3 scripts/bench_report.py` turns the results
//! into the README's table and chart.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{Criterion, criterion_group, criterion_main};
use sesame_bench::*;

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let apps = [
        ("raw", raw_app(), "none"),
        ("sesame", sesame_memory_app(), "connect.sid"),
        ("tower-sessions", tower_sessions_app(), "id"),
    ];
    for scenario in SCENARIOS {
        let mut group = c.benchmark_group(format!("memory/{scenario}"));
        for (name, app, cookie_name) in &apps {
            let cookie = runtime.block_on(scenario_cookie(app, scenario, cookie_name));
            let path = format!("/{scenario}");
            group.bench_function(*name, |b| {
                b.to_async(&runtime)
                    .iter(|| send(app, &path, cookie.as_deref()))
            });
        }
        group.finish();
    }
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
