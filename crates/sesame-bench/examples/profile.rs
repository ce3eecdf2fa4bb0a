//! Runs one scenario many times, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/profile sesame read 20000`.

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
        "raw" => runtime.block_on(run(raw_app(), &scenario, "none", iterations)),
        "tower-sessions" => {
            runtime.block_on(run(tower_sessions_app(), &scenario, "id", iterations))
        }
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
        send(&app, &path, cookie.as_deref()).await;
    }
}
