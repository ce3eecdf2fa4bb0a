//! The counter demo: `GET /` answers `views: N`, N counting this session's requests.
//!
//! ```text
//! cargo run --example counter
//! curl -c jar -b jar http://127.0.0.1:3000/   # views: 1, then 2, 3, ...
//! ```
//!
//! Configuration from the environment: `PORT` (default 3000), `SESSION_SECRET` (comma-separated
//! list, first signs; random if unset), `SESAME_STORE` (default `memory`).

use axum::{Router, routing::get};
use axum_sesame::{Session, SessionError, SessionLayer};
use sesame_examples::{
    init_tracing, listen_address, secrets_from_env, shutdown_signal, store_from_env,
};

async fn counter(session: Session) -> Result<String, SessionError> {
    let views: u64 = session.get("views")?.unwrap_or(0) + 1;
    session.insert("views", views)?;
    Ok(format!("views: {views}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let sessions = SessionLayer::builder()
        .secrets(secrets_from_env())
        .store(store_from_env().await?)
        .build()?;
    let app = Router::new().route("/", get(counter)).layer(sessions);
    let listener = tokio::net::TcpListener::bind(listen_address()?).await?;
    tracing::info!("counter listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
