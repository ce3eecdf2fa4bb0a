//! Runs batches of concurrent Redis writes on one implementation, as the interleaved throughput
//! pass of `benches/redis.rs` does, for a sampling profile of the client:
//! `perf record -g target/release/examples/profile_throughput sesame-client-cache 200`.
//!
//! The implementations: `sesame`, `sesame-client-cache`, `tower-sessions`, and the write
//! ceilings, `ceiling-redis-rs` and `ceiling-fred` (raw axum doing one `SET` per request) and
//! `ceiling-compare-and-set` (one compare-and-set script), on the Redis at `REDIS_URL`. Prints the
//! requests per second.

use sesame_bench::App;
use sesame_bench::redis::*;

/// Concurrent writers, as in the benchmark.
const TASKS: usize = 64;
/// Sequential writes of each writer per batch.
const WRITES_PER_TASK: usize = 16;

fn main() {
    let mut args = std::env::args().skip(1);
    let implementation = args
        .next()
        .unwrap_or_else(|| "sesame-client-cache".to_owned());
    let batches: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let url = redis_url();
    runtime.block_on(async {
        match implementation.as_str() {
            "sesame" => {
                let store = sesame_store(&url, THROUGHPUT_PREFIX).await.expect("Redis");
                run(sesame_redis_app(store), batches).await;
            }
            "tower-sessions" => {
                let client = tower_sessions_client(&url).await.expect("Redis");
                run(tower_sessions_redis_app(client), batches).await;
            }
            "ceiling-redis-rs" => {
                run(
                    redis_rs_write_ceiling_app(&url).await.expect("Redis"),
                    batches,
                )
                .await;
            }
            "ceiling-compare-and-set" => {
                let app = redis_rs_compare_and_set_ceiling_app(&url)
                    .await
                    .expect("Redis");
                run(app, batches).await;
            }
            "ceiling-fred" => {
                run(fred_write_ceiling_app(&url).await.expect("Redis"), batches).await;
            }
            _ => {
                let store = sesame_client_cached_store(&url, THROUGHPUT_PREFIX)
                    .await
                    .expect("Redis");
                run(sesame_redis_app(store), batches).await;
            }
        }
        clear_prefix(&url, THROUGHPUT_PREFIX).await;
    });
}

async fn run<A: App>(app: A, batches: usize) {
    let cookies = sessions_for(&app, TASKS).await;
    let started = std::time::Instant::now();
    let mut ok = 0;
    for _ in 0..batches {
        ok += concurrent_writes(&app, &cookies, WRITES_PER_TASK).await;
    }
    let rate = ok as f64 / started.elapsed().as_secs_f64();
    println!("{ok} writes, {rate:.0} requests/s");
}
