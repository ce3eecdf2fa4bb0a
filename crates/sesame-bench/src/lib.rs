//! The apps the benchmarks drive: the same five handlers under raw axum (no session layer, the
//! floor), sesame, and tower-sessions, each as an in-process tower service.
#![forbid(unsafe_code)]
#![allow(missing_docs)] // benchmark plumbing

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

/// Each app is the router wrapped by its session middleware as a whole (`layer.layer(router)`),
/// so the figures are the middleware's own cost, not axum's per-route re-boxing that
/// `Router::layer` adds for any middleware.
pub trait App:
    Service<http::Request<Body>, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: Service<http::Request<Body>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// The scenarios of issue #9.
pub const SCENARIOS: [&str; 5] = ["none", "read", "write", "new", "bad-cookie"];

/// A secret of the required length.
pub const SECRET: &str = "a benchmark secret of at least thirty-two bytes";

/// Raw axum: handlers that do what the session handlers do, minus the session. Where a session
/// handler formats the counter into its body, the raw one formats the same number the same way
/// (hidden from the optimiser), so the floor includes the handler's own work and the difference
/// is the session's alone.
pub fn raw_app() -> Router {
    use std::hint::black_box;
    Router::new()
        .route("/none", get(|| async { "ok" }))
        .route("/read", get(|| async { format!("n={}", black_box(1u64)) }))
        .route(
            "/write",
            get(|| async { format!("n={}", black_box(1u64) + 1) }),
        )
        .route("/new", get(|| async { "n=1" }))
        .route(
            "/bad-cookie",
            get(|| async { format!("n={}", black_box(0u64)) }),
        )
}

/// The five handlers on a sesame session, before its session layer.
pub fn sesame_router() -> Router {
    use axum_sesame::Session;
    Router::new()
        .route("/none", get(|| async { "ok" }))
        .route(
            "/read",
            get(|s: Session| async move {
                format!("n={}", s.get::<u64>("n").ok().flatten().unwrap_or(0))
            }),
        )
        .route(
            "/write",
            get(|s: Session| async move {
                let n = s.get::<u64>("n").ok().flatten().unwrap_or(0) + 1;
                let _ = s.insert("n", n);
                format!("n={n}")
            }),
        )
        .route(
            "/new",
            get(|s: Session| async move {
                let _ = s.insert("n", 1u64);
                "n=1"
            }),
        )
        .route(
            "/bad-cookie",
            get(|s: Session| async move {
                format!("n={}", s.get::<u64>("n").ok().flatten().unwrap_or(0))
            }),
        )
}

/// sesame with a store (the memory store by default).
pub fn sesame_app(layer: axum_sesame::SessionLayer) -> impl App {
    layer.layer(sesame_router())
}

/// sesame on its memory store.
pub fn sesame_memory_app() -> impl App {
    sesame_app(
        axum_sesame::SessionLayer::builder()
            .secret(SECRET)
            .store_timeout(if std::env::var("NO_TIMEOUT").is_ok() {
                None
            } else {
                Some(std::time::Duration::from_secs(5))
            })
            .build()
            .expect("a valid layer"),
    )
}

/// tower-sessions with its memory store, the same handlers.
pub fn tower_sessions_app() -> impl App {
    use tower_sessions::{MemoryStore, SessionManagerLayer};
    SessionManagerLayer::new(MemoryStore::default())
        .with_secure(false)
        .layer(tower_sessions_router::<tower_sessions::Session>())
}

/// A GET request with an optional `Cookie` header.
pub fn request(path: &str, cookie: Option<&str>) -> http::Request<Body> {
    let mut builder = http::Request::get(path);
    if let Some(cookie) = cookie {
        builder = builder.header(http::header::COOKIE, cookie);
    }
    builder.body(Body::empty()).expect("a valid request")
}

/// Sends one request and drains the body, as the measured loops do: the client's own work (such
/// as reading the `Set-Cookie` header) stays out of the figures.
pub async fn drive<A: App>(app: &A, path: &str, cookie: Option<&str>) {
    let response = app
        .clone()
        .oneshot(request(path, cookie))
        .await
        .expect("infallible");
    let _ = response.into_body().collect().await;
}

/// Sends one request and drains the body; returns the `Set-Cookie` pair, if any.
pub async fn send<A: App>(app: &A, path: &str, cookie: Option<&str>) -> Option<String> {
    let response = app
        .clone()
        .oneshot(request(path, cookie))
        .await
        .expect("infallible");
    let set_cookie = response
        .headers()
        .get(http::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let _ = response.into_body().collect().await;
    set_cookie
}

/// The cookie each scenario sends: a live session's for none/read/write, none for new, a forged
/// one for bad-cookie. Raw axum sets no cookie; it gets one of the same shape, so every
/// implementation parses the same request and the floor is the floor for that request.
pub async fn scenario_cookie<A: App>(app: &A, scenario: &str, name: &str) -> Option<String> {
    let forged = || {
        format!(
            "{name}=s%3AforgedForgedForgedForgedForged12.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        )
    };
    match scenario {
        "new" => None,
        "bad-cookie" => Some(forged()),
        _ => Some(send(app, "/write", None).await.unwrap_or_else(forged)),
    }
}

/// The session of a tower-sessions version, as the handlers use it: 0.15 on the memory store, and
/// 0.14 on Redis (the version `tower-sessions-redis-store` is released for), with the same API.
pub trait TowerSessionsSession:
    axum::extract::FromRequestParts<(), Rejection: axum::response::IntoResponse>
    + Clone
    + Send
    + Sync
    + 'static
{
    /// The counter `n`, 0 when absent or unreadable.
    fn n(&self) -> impl Future<Output = u64> + Send;
    /// Sets the counter `n`, ignoring errors (as the other implementations' handlers do).
    fn set_n(&self, n: u64) -> impl Future<Output = ()> + Send;
}

macro_rules! tower_sessions_session {
    ($session:ty) => {
        impl TowerSessionsSession for $session {
            async fn n(&self) -> u64 {
                self.get::<u64>("n").await.ok().flatten().unwrap_or(0)
            }
            async fn set_n(&self, n: u64) {
                let _ = self.insert("n", n).await;
            }
        }
    };
}
tower_sessions_session!(tower_sessions::Session);
tower_sessions_session!(tower_sessions_014::Session);

/// The five handlers on a tower-sessions session, before its session layer.
pub fn tower_sessions_router<S: TowerSessionsSession>() -> Router {
    Router::new()
        .route("/none", get(|| async { "ok" }))
        .route(
            "/read",
            get(|s: S| async move { format!("n={}", s.n().await) }),
        )
        .route(
            "/write",
            get(|s: S| async move {
                let n = s.n().await + 1;
                s.set_n(n).await;
                format!("n={n}")
            }),
        )
        .route(
            "/new",
            get(|s: S| async move {
                s.set_n(1).await;
                "n=1"
            }),
        )
        .route(
            "/bad-cookie",
            get(|s: S| async move { format!("n={}", s.n().await) }),
        )
}

pub mod redis;

/// The scaling benchmark's apps, fills and measurements (`benches/scaling.rs`).
pub mod scaling;

/// Where criterion writes its results: `CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, or
/// `criterion` in the target directory the running binary was built in
/// (`<target>/<profile>/deps/<binary>`).
pub fn criterion_dir() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return std::path::PathBuf::from(target).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .nth(3)
                .map(|target| target.join("criterion"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from("target/criterion"))
}
