//! What the side-by-side benchmarks share.

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use sesame_bench::{App, drive};

/// Measures `app` answering `path` with `cookie`, as the benchmark `name` of `group`.
pub(crate) fn bench_app<A: App>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    app: &A,
    path: &str,
    cookie: Option<&str>,
) {
    group.bench_function(name, |b| {
        b.to_async(runtime).iter(|| drive(app, path, cookie))
    });
}
