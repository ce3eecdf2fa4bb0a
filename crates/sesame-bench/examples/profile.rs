//! Runs one scenario many times, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/profile sesame read 20000`.

use sesame_bench::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let implementation = args.next().unwrap_or_else(|| "sesame".to_owned());
    let scenario = args.next().unwrap_or_else(|| "read".to_owned());
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let (app, cookie_name) = match implementation.as_str() {
        "raw" => (raw_app(), "none"),
        "tower-sessions" => (tower_sessions_app(), "id"),
        _ => (sesame_memory_app(), "connect.sid"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let cookie = scenario_cookie(&app, &scenario, cookie_name).await;
        let path = format!("/{scenario}");
        for _ in 0..iterations {
            send(&app, &path, cookie.as_deref()).await;
        }
    });
}
