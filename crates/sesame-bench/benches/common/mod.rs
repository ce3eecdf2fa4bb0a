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

/// The median of interleaved samples (the upper one of an even count).
pub(crate) fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Runs `rounds` rounds of `run(which)` for each of `count` implementations, rotating which goes
/// first, so that every implementation sees the same conditions on a machine whose load drifts.
pub(crate) fn interleave(rounds: usize, count: usize, mut run: impl FnMut(usize)) {
    for round in 0..rounds {
        for turn in 0..count {
            run((round + turn) % count);
        }
    }
}
