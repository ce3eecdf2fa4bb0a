//! The sesame side of the Express interop tests (`tests/interop/app.js` is the Express side): the
//! same routes, the same options, so an Express app and this app share one cookie and one store.
//! It is also the template for a team moving an Express app to Rust route by route.
//!
//! ```text
//! SESAME_STORE=redis SESSION_SECRET=... PORT=3002 cargo run --example interop
//! ```
//!
//! Configuration from the environment, named as on the Express side: `PORT`, `SESSION_SECRET`
//! (comma-separated, first signs), `COOKIE_NAME` (default `connect.sid`), `COOKIE_MAX_AGE`
//! (milliseconds; unset gives a browser-session cookie), and the store's variables (see
//! `sesame_examples::store_from_env`).

use std::time::Duration;

use axum::extract::Query;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_sesame::core::{CookieOptions, SameSite};
use axum_sesame::{Flash, Session, SessionError, SessionLayer};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sesame_examples::{
    init_tracing, listen_address, secrets_from_env, shutdown_signal, store_from_env,
};

/// What a route answers, as the Express side's `describe` does: the id, the data without the
/// cookie, and the expiry as the session sees it.
fn describe(session: &Session) -> Json<Value> {
    let expires = session.expires().and_then(|at| {
        at.format(&time::format_description::well_known::Rfc3339)
            .ok()
    });
    Json(json!({
        "id": session.id().as_str(),
        "data": session.data(),
        "originalMaxAge": session.original_max_age().map(|age| age.as_millis() as u64),
        "expires": expires,
    }))
}

async fn show(session: Session) -> Json<Value> {
    describe(&session)
}

/// Sets every key of the JSON body.
async fn set_keys(
    session: Session,
    Json(body): Json<Map<String, Value>>,
) -> Result<Json<Value>, SessionError> {
    for (key, value) in body {
        session.insert_value(&key, value)?;
    }
    Ok(describe(&session))
}

#[derive(Deserialize)]
struct MaxAge {
    ms: u64,
}

/// Sets the cookie's max age and marks the session modified so it is saved.
async fn set_max_age(
    session: Session,
    Query(MaxAge { ms }): Query<MaxAge>,
) -> Result<Json<Value>, SessionError> {
    session.set_max_age(Some(Duration::from_millis(ms)));
    session.insert("maxAgeSetBy", "sesame")?;
    Ok(describe(&session))
}

async fn destroy(session: Session) -> Result<Json<Value>, SessionError> {
    session.destroy().await?;
    Ok(Json(json!({ "destroyed": true })))
}

/// A new id, the data kept (what the Express side does by copying the data over).
async fn regenerate(session: Session) -> Result<Json<Value>, SessionError> {
    session.cycle_id().await?;
    Ok(describe(&session))
}

#[derive(Deserialize)]
struct FlashQuery {
    kind: String,
    message: Option<String>,
}

async fn push_flash(
    flash: Flash,
    Query(query): Query<FlashQuery>,
) -> Result<Json<Value>, SessionError> {
    flash.push(&query.kind, query.message.unwrap_or_default())?;
    Ok(describe(flash.session()))
}

async fn take_flash(flash: Flash, Query(query): Query<FlashQuery>) -> Json<Value> {
    Json(json!({ "messages": flash.take(&query.kind) }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let mut cookie = CookieOptions::default()
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax);
    if let Ok(ms) = std::env::var("COOKIE_MAX_AGE") {
        let ms: u64 = ms
            .parse()
            .map_err(|_| format!("COOKIE_MAX_AGE {ms:?} is not a number of milliseconds"))?;
        cookie = cookie.max_age(Duration::from_millis(ms));
    }
    let sessions = SessionLayer::builder()
        .secrets(secrets_from_env())
        .name(std::env::var("COOKIE_NAME").unwrap_or_else(|_| "connect.sid".to_owned()))
        .cookie(cookie)
        .store(store_from_env().await?)
        .build()?;
    let app = Router::new()
        .route("/session", get(show).post(set_keys))
        .route("/max-age", post(set_max_age))
        .route("/destroy", post(destroy))
        .route("/regenerate", post(regenerate))
        .route("/flash", get(take_flash).post(push_flash))
        .layer(sessions);
    let listener = tokio::net::TcpListener::bind(listen_address()?).await?;
    tracing::info!("interop app listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
