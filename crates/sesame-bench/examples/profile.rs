//! Runs one scenario many times, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/profile sesame read 20000`.
//!
//! The implementations: `raw`, `sesame` and `tower-sessions` on the memory store, and on the Redis
//! at `REDIS_URL` `redis-sesame`, `redis-cached` (sesame on a `CachingStore` in front of Redis)
//! and `redis-tower-sessions`. Callgrind counts this process's instructions only, not Redis's.
//! The sessions a Redis run creates are left to expire (30 minutes), so that the count is the
//! requests' alone: subtract a run of N from a run of 3N and divide by 2N.

use sesame_bench::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let implementation = args.next().unwrap_or_else(|| "sesame".to_owned());
    let scenario = args.next().unwrap_or_else(|| "read".to_owned());
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match implementation.as_str() {
        "raw" => runtime.block_on(run(raw_app(), &scenario, "connect.sid", iterations)),
        "tower-sessions" => {
            runtime.block_on(run(tower_sessions_app(), &scenario, "id", iterations))
        }
        "redis-sesame" | "redis-cached" | "redis-tower-sessions" => runtime.block_on(async {
            use sesame_bench::redis::*;
            let url = redis_url();
            match implementation.as_str() {
                "redis-tower-sessions" => {
                    let app =
                        tower_sessions_redis_app(tower_sessions_client(&url).await.expect("Redis"));
                    run_redis(app, &scenario, "id", iterations).await;
                }
                "redis-cached" => {
                    let store = sesame_store(&url, CACHED_PREFIX).await.expect("Redis");
                    let app = sesame_cached_redis_app(store);
                    run_redis(app, &scenario, "connect.sid", iterations).await;
                }
                _ => {
                    let store = sesame_store(&url, SESAME_PREFIX).await.expect("Redis");
                    let app = sesame_redis_app(store);
                    run_redis(app, &scenario, "connect.sid", iterations).await;
                }
            }
        }),
        _ => runtime.block_on(run(
            sesame_memory_app(),
            &scenario,
            "connect.sid",
            iterations,
        )),
    }
}

async fn run<A: App>(app: A, scenario: &str, cookie_name: &str, iterations: usize) {
    let cookie = scenario_cookie(&app, scenario, cookie_name).await;
    let path = format!("/{scenario}");
    for _ in 0..iterations {
        drive(&app, &path, cookie.as_deref()).await;
    }
    // Leave without dropping the app: freeing a store of many sessions is not a request's cost,
    // and would dominate a sampling profile of the `new` scenario.
    std::process::exit(0);
}

async fn run_redis<A: App>(app: A, scenario: &str, cookie_name: &str, iterations: usize) {
    let cookie = sesame_bench::redis::redis_scenario_cookie(&app, scenario, cookie_name).await;
    let path = format!("/{scenario}");
    for _ in 0..iterations {
        drive(&app, &path, cookie.as_deref()).await;
    }
}
