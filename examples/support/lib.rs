//! What the example apps share: reading the configuration (secrets, store, port) from the
//! environment, as a deployed app would.
#![forbid(unsafe_code)]

use std::error::Error;

use axum_sesame::DynStore;

/// Logging for the examples: `RUST_LOG` if set, else info for the app and debug for sesame's
/// decisions (load, save, touch, set-cookie).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,axum_sesame=debug"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// The session secrets from `SESSION_SECRET`, a comma-separated list (the first signs, all
/// verify). Without it, a random secret is generated and a warning logged: sessions then end with
/// the process.
pub fn secrets_from_env() -> Vec<String> {
    let configured: Vec<String> = std::env::var("SESSION_SECRET")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(str::to_owned)
        .collect();
    if configured.is_empty() {
        tracing::warn!(
            "SESSION_SECRET is not set: using a random secret, so sessions end when the server \
             stops. Set SESSION_SECRET (comma-separated for rotation, first signs) in production."
        );
        vec![axum_sesame::core::random_secret()]
    } else {
        configured
    }
}

/// The store named by `SESAME_STORE` (default `memory`), configured from the environment:
///
/// | `SESAME_STORE` | variables (defaults) |
/// |---|---|
/// | `memory` | — |
/// | `redis` | `REDIS_URL` (`redis://127.0.0.1:6379`), `REDIS_PREFIX` (`sess:`) |
/// | `mongodb` | `MONGODB_URL` (`mongodb://127.0.0.1:27017/sesame?directConnection=true`; the database is the URL's path), `MONGODB_COLLECTION` (`sessions`), `MONGODB_STRINGIFY` (`true`) |
/// | `postgres` | `DATABASE_URL` (`postgres://postgres@127.0.0.1:5432/test`), `PG_SCHEMA` (`public`), `PG_TABLE` (`session`) |
///
/// The variable names are the Express interop app's (`tests/interop/app.js`), so both sides of a
/// migration read one configuration.
pub async fn store_from_env() -> Result<DynStore, Box<dyn Error>> {
    let kind = std::env::var("SESAME_STORE").unwrap_or_else(|_| "memory".to_owned());
    let store = match kind.as_str() {
        "memory" => DynStore::new(axum_sesame::MemoryStore::new()),
        "redis" => {
            let url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
            let store = axum_sesame::RedisStore::builder()
                .prefix(env_or("REDIS_PREFIX", "sess:"))
                .connect(&url)
                .await?;
            DynStore::new(store)
        }
        "mongodb" => {
            let url = env_or(
                "MONGODB_URL",
                "mongodb://127.0.0.1:27017/sesame?directConnection=true",
            );
            let store = axum_sesame::MongoStore::builder()
                .collection(env_or("MONGODB_COLLECTION", "sessions"))
                .stringify(env_or("MONGODB_STRINGIFY", "true") == "true")
                .connect(&url)
                .await?;
            DynStore::new(store)
        }
        "postgres" => {
            let url = env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
            let store = axum_sesame::PostgresStore::builder()
                .schema_name(env_or("PG_SCHEMA", "public"))
                .table_name(env_or("PG_TABLE", "session"))
                .connect(&url)
                .await?;
            DynStore::new(store)
        }
        other => {
            return Err(format!(
                "unknown SESAME_STORE {other:?}: expected memory, redis, mongodb or postgres"
            )
            .into());
        }
    };
    tracing::info!(store = kind, "session store ready");
    Ok(store)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The address to listen on: 127.0.0.1 and `PORT` (default 3000).
pub fn listen_address() -> Result<std::net::SocketAddr, Box<dyn Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT {port:?} is not a port number"))?,
        Err(_) => 3000,
    };
    Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Resolves when the process is asked to stop (Ctrl-C), for graceful shutdown.
pub async fn shutdown_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        // Without a signal handler, run until killed.
        std::future::pending::<()>().await;
    }
}
