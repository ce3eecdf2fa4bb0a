//! Session management through the layer, on every store: log in, a user's sessions, revoke one,
//! the others or all (the revoked session stops working on its next request), idle and absolute
//! timeouts, remember me, and store metrics.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::routing::get;
use axum_sesame::{
    DynStore, Login, MemoryStore, Session, SessionError, SessionLayer, SessionLayerBuilder,
    StoreMetrics, StoreOperation,
};
use common::{DownStore, builder, get_path};
use serde::Deserialize;

#[derive(Deserialize)]
struct LoginQuery {
    user: String,
    remember: Option<bool>,
}

/// The routes of a small account area.
fn routes() -> Router {
    Router::new()
        .route(
            "/login",
            get(|s: Session, Query(q): Query<LoginQuery>| async move {
                s.log_in(Login::user(q.user).user_agent("test-agent").ip("127.0.0.1"))
                    .await?;
                if q.remember == Some(true) {
                    s.set_max_age(Some(Duration::from_secs(30 * 24 * 3600)));
                }
                Ok::<_, SessionError>("logged in")
            }),
        )
        .route(
            "/whoami",
            get(|s: Session| async move { s.user().unwrap_or_else(|| "anonymous".into()) }),
        )
        .route(
            "/sessions",
            get(|s: Session| async move {
                let sessions = s.user_sessions().await?;
                Ok::<_, SessionError>(
                    sessions
                        .iter()
                        .map(|session| {
                            format!(
                                "{} current={} agent={:?} ip={:?} seen={} login={}",
                                session.handle,
                                session.current,
                                session.user_agent,
                                session.ip,
                                session.last_seen.is_some(),
                                session.logged_in.is_some(),
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            }),
        )
        .route(
            "/last-seen",
            get(|s: Session| async move {
                let sessions = s.user_sessions().await?;
                let current = sessions.iter().find(|session| session.current).unwrap();
                Ok::<_, SessionError>(format!(
                    "{}",
                    current.last_seen.unwrap().unix_timestamp_nanos()
                ))
            }),
        )
        .route(
            "/revoke/{handle}",
            get(|s: Session, Path(handle): Path<String>| async move {
                Ok::<_, SessionError>(s.revoke(&handle).await?.to_string())
            }),
        )
        .route(
            "/revoke-others",
            get(|s: Session| async move {
                Ok::<_, SessionError>(s.revoke_others().await?.to_string())
            }),
        )
        .route(
            "/revoke-all",
            get(|s: Session| async move { Ok::<_, SessionError>(s.revoke_all().await?.to_string()) }),
        )
        .route(
            "/remembered",
            get(|s: Session| async move { format!("{:?}", s.original_max_age().map(|d| d.as_secs())) }),
        )
}

struct App {
    router: Router,
    layer: SessionLayer,
}

fn app(builder: SessionLayerBuilder, store: DynStore) -> App {
    let layer = builder.store(store).build().unwrap();
    App {
        router: routes().layer(layer.clone()),
        layer,
    }
}

/// One browser: keeps the session cookie between requests.
struct Client<'a> {
    app: &'a App,
    cookie: Option<String>,
}

impl<'a> Client<'a> {
    fn new(app: &'a App) -> Self {
        Self { app, cookie: None }
    }

    async fn get(&mut self, path: &str) -> (http::StatusCode, String) {
        let reply = get_path(&self.app.router, path, self.cookie.as_deref()).await;
        for set in &reply.set_cookies {
            let pair = set.split(';').next().unwrap();
            if set.contains("Expires=Thu, 01 Jan 1970") {
                self.cookie = None;
            } else {
                self.cookie = Some(pair.to_owned());
            }
        }
        (reply.status, reply.body)
    }

    async fn body(&mut self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

fn handles(listing: &str) -> Vec<(String, bool)> {
    listing
        .lines()
        .map(|line| {
            let (handle, rest) = line.split_once(' ').unwrap();
            (handle.to_owned(), rest.starts_with("current=true"))
        })
        .collect()
}

async fn lists_and_revokes(store: DynStore) {
    let app = app(builder(), store);
    let mut ada_laptop = Client::new(&app);
    let mut ada_phone = Client::new(&app);
    let mut bob = Client::new(&app);

    let (status, _) = ada_laptop.get("/sessions").await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED, "nobody logged in");

    assert_eq!(ada_laptop.body("/login?user=ada").await, "logged in");
    assert_eq!(ada_phone.body("/login?user=ada").await, "logged in");
    assert_eq!(bob.body("/login?user=bob").await, "logged in");
    assert_eq!(ada_laptop.body("/whoami").await, "ada");

    let listing = ada_laptop.body("/sessions").await;
    let sessions = handles(&listing);
    assert_eq!(
        sessions.len(),
        2,
        "ada's two sessions, not bob's: {listing}"
    );
    assert_eq!(sessions.iter().filter(|(_, current)| *current).count(), 1);
    assert!(
        listing.contains(r#"agent=Some("test-agent") ip=Some("127.0.0.1") seen=true login=true"#),
        "{listing}"
    );

    // Log out everywhere else: the phone's very next request is anonymous.
    assert_eq!(ada_laptop.body("/revoke-others").await, "1");
    assert_eq!(ada_phone.body("/whoami").await, "anonymous");
    assert_eq!(ada_laptop.body("/whoami").await, "ada");
    assert_eq!(handles(&ada_laptop.body("/sessions").await).len(), 1);

    // Revoke one by its handle; a handle of another user's session revokes nothing.
    ada_phone.body("/login?user=ada").await;
    let bob_handle = handles(&bob.body("/sessions").await)[0].0.clone();
    assert_eq!(
        ada_laptop.body(&format!("/revoke/{bob_handle}")).await,
        "false"
    );
    assert_eq!(bob.body("/whoami").await, "bob");
    let phone_handle = handles(&ada_laptop.body("/sessions").await)
        .into_iter()
        .find(|(_, current)| !current)
        .unwrap()
        .0;
    assert_eq!(
        ada_laptop.body(&format!("/revoke/{phone_handle}")).await,
        "true"
    );
    assert_eq!(ada_phone.body("/whoami").await, "anonymous");

    // Log out everywhere, this session included.
    ada_phone.body("/login?user=ada").await;
    assert_eq!(ada_laptop.body("/revoke-all").await, "2");
    assert_eq!(ada_laptop.body("/whoami").await, "anonymous");
    assert_eq!(ada_phone.body("/whoami").await, "anonymous");
    assert_eq!(bob.body("/whoami").await, "bob");

    // Outside a request: an admin ends all of bob's sessions.
    let users = app.layer.users();
    assert_eq!(users.list("bob").await.unwrap().len(), 1);
    assert_eq!(users.revoke_all("bob").await.unwrap(), 1);
    assert_eq!(bob.body("/whoami").await, "anonymous");
    assert!(users.list("bob").await.unwrap().is_empty());
}

async fn login_changes_the_id(store: DynStore) {
    let app = app(builder(), store);
    let mut client = Client::new(&app);
    // A session exists before login (say, a cart).
    client.body("/login?user=first").await;
    let before = client.cookie.clone().unwrap();
    client.body("/login?user=ada").await;
    let after = client.cookie.clone().unwrap();
    assert_ne!(before, after, "login gives the session a new id");
    let mut attacker = Client::new(&app);
    attacker.cookie = Some(before);
    assert_eq!(
        attacker.body("/whoami").await,
        "anonymous",
        "the id from before login is dead"
    );
    assert_eq!(client.body("/whoami").await, "ada");
}

async fn idle_timeout_ends_an_unused_session(store: DynStore) {
    let idle = Duration::from_millis(1500);
    let app = app(builder().idle_timeout(idle), store);
    let mut client = Client::new(&app);
    client.body("/login?user=ada").await;
    // Activity renews the idle timeout: three requests spread over more than the timeout.
    for _ in 0..3 {
        tokio::time::sleep(idle / 2).await;
        assert_eq!(
            client.body("/whoami").await,
            "ada",
            "active sessions live on"
        );
    }
    tokio::time::sleep(idle + Duration::from_millis(500)).await;
    assert_eq!(
        client.body("/whoami").await,
        "anonymous",
        "an idle session is gone, though its cookie never expires"
    );
}

async fn absolute_timeout_ends_even_an_active_session(store: DynStore) {
    let absolute = Duration::from_millis(2000);
    let app = app(builder().absolute_timeout(absolute), store);
    let mut client = Client::new(&app);
    client.body("/login?user=ada").await;
    let mut ended = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if client.body("/whoami").await == "anonymous" {
            ended = true;
            break;
        }
    }
    assert!(
        ended,
        "an active session still ends at the absolute timeout"
    );
}

async fn remember_me_is_per_session(store: DynStore) {
    let app = app(builder(), store);
    let mut remembered = Client::new(&app);
    let reply = get_path(&app.router, "/login?user=ada&remember=true", None).await;
    let set_cookie = reply.set_cookie().unwrap().to_owned();
    assert!(set_cookie.contains("Expires="), "{set_cookie}");
    remembered.cookie = Some(reply.cookie_pair());
    assert_eq!(remembered.body("/remembered").await, "Some(2592000)");

    let reply = get_path(&app.router, "/login?user=bob", None).await;
    let set_cookie = reply.set_cookie().unwrap().to_owned();
    assert!(
        !set_cookie.contains("Expires="),
        "a browser-session cookie: {set_cookie}"
    );
    let mut forgotten = Client::new(&app);
    forgotten.cookie = Some(reply.cookie_pair());
    assert_eq!(forgotten.body("/remembered").await, "None");
}

async fn scenarios(store: impl Fn() -> DynStore) {
    lists_and_revokes(store()).await;
    login_changes_the_id(store()).await;
    idle_timeout_ends_an_unused_session(store()).await;
    absolute_timeout_ends_even_an_active_session(store()).await;
    remember_me_is_per_session(store()).await;
}

#[tokio::test]
async fn on_memory() {
    scenarios(|| DynStore::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn with_ids_hashed_at_rest() {
    let app = app(
        builder().hash_ids_at_rest("a key for hashing ids at rest, 32 bytes+"),
        DynStore::new(MemoryStore::new()),
    );
    let mut laptop = Client::new(&app);
    let mut phone = Client::new(&app);
    laptop.body("/login?user=ada").await;
    phone.body("/login?user=ada").await;
    let listing = handles(&laptop.body("/sessions").await);
    assert_eq!(listing.len(), 2);
    assert_eq!(listing.iter().filter(|(_, current)| *current).count(), 1);
    assert_eq!(laptop.body("/revoke-others").await, "1");
    assert_eq!(phone.body("/whoami").await, "anonymous");
    assert_eq!(laptop.body("/whoami").await, "ada");
}

#[tokio::test]
async fn last_seen_moves_at_most_once_per_interval() {
    let interval = Duration::from_millis(400);
    let app = app(
        builder().touch_after(interval),
        DynStore::new(MemoryStore::new()),
    );
    let mut client = Client::new(&app);
    client.body("/login?user=ada").await;
    let first = client.body("/last-seen").await;
    assert_eq!(
        client.body("/last-seen").await,
        first,
        "not refreshed within the interval"
    );
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    client.body("/whoami").await; // this request refreshes it
    let later = client.body("/last-seen").await;
    assert!(
        later.parse::<i128>().unwrap() > first.parse::<i128>().unwrap(),
        "{first} then {later}"
    );
}

#[tokio::test]
async fn metrics_count_store_calls_and_failures() {
    let metrics = Arc::new(StoreMetrics::new());
    let app = app(
        builder().observe(Arc::clone(&metrics)),
        DynStore::new(MemoryStore::new()),
    );
    let mut client = Client::new(&app);
    client.body("/login?user=ada").await; // new session: a create
    client.body("/whoami").await; // a load and a touch
    client.body("/revoke-all").await; // a load, a user listing and a destroy
    let calls = |operation| metrics.snapshot(operation).calls;
    assert_eq!(calls(StoreOperation::Create), 1);
    assert_eq!(calls(StoreOperation::Load), 2);
    assert_eq!(calls(StoreOperation::Touch), 1);
    assert_eq!(calls(StoreOperation::UserSessions), 1);
    assert_eq!(calls(StoreOperation::Destroy), 1);
    assert_eq!(metrics.failures(), 0);

    let failing = Arc::new(StoreMetrics::new());
    let down = app_with_metrics(Arc::clone(&failing));
    let reply = get_path(&down, "/whoami", Some("connect.sid=s%3Aabc.def")).await;
    assert_eq!(
        reply.status,
        http::StatusCode::OK,
        "a forged cookie never reaches the store"
    );
    let reply = get_path(&down, "/login?user=ada", None).await;
    assert_eq!(reply.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing.snapshot(StoreOperation::Create).failures, 1);
    assert_eq!(failing.failures(), 1);
}

fn app_with_metrics(metrics: Arc<StoreMetrics>) -> Router {
    routes().layer(builder().observe(metrics).store(DownStore).build().unwrap())
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn on_redis() {
    let url = sesame_conformance::backend_url("REDIS_URL", "redis://127.0.0.1:6379");
    let probe = axum_sesame::RedisStore::builder().connect(&url).await;
    if let Err(error) = probe {
        return sesame_conformance::backend_missing("Redis", &error).unwrap_or(());
    }
    let mut stores = Vec::new();
    for _ in 0..5 {
        let store = axum_sesame::RedisStore::builder()
            .prefix(sesame_conformance::unique_name("mgmt:"))
            .connect(&url)
            .await
            .unwrap();
        stores.push(DynStore::new(store));
    }
    let stores = std::sync::Mutex::new(stores);
    scenarios(|| stores.lock().unwrap().pop().unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn on_postgres() {
    let url =
        sesame_conformance::backend_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
    let mut stores = Vec::new();
    for _ in 0..5 {
        let store = match axum_sesame::PostgresStore::builder()
            .table_name(sesame_conformance::unique_name("mgmt_"))
            .connect(&url)
            .await
        {
            Ok(store) => store,
            Err(error) => {
                return sesame_conformance::backend_missing("PostgreSQL", &error).unwrap_or(());
            }
        };
        stores.push(DynStore::new(store));
    }
    let stores = std::sync::Mutex::new(stores);
    scenarios(|| stores.lock().unwrap().pop().unwrap()).await;
}

#[cfg(feature = "mongodb")]
#[tokio::test]
async fn on_mongodb() {
    let url = sesame_conformance::backend_url(
        "MONGODB_URL",
        "mongodb://127.0.0.1:27017/?directConnection=true",
    );
    let mut stores = Vec::new();
    for _ in 0..5 {
        let store = axum_sesame::MongoStore::builder()
            .collection(sesame_conformance::unique_name("mgmt_"))
            .connect(&url)
            .await
            .unwrap();
        if let Err(error) = store.init().await {
            return sesame_conformance::backend_missing("MongoDB", &error).unwrap_or(());
        }
        stores.push(DynStore::new(store));
    }
    let stores = std::sync::Mutex::new(stores);
    scenarios(|| stores.lock().unwrap().pop().unwrap()).await;
}
