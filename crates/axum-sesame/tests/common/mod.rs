//! Shared pieces of the HTTP tests: a store that counts calls, an app with one route per session
//! operation, and request/response helpers.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::Query;
use axum::routing::get;
use axum_sesame::core::serde_json::Value;
use axum_sesame::core::{
    Capabilities, Error, Patch, Record, Result, SessionId, SessionStore, Swap,
};
use axum_sesame::{Flash, MemoryStore, Session, SessionError, SessionLayerBuilder};
use http::{Request, Response, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use std::time::Duration;
use tower::ServiceExt;

pub const SECRET: &str = "a test secret that is at least 32 bytes long";

/// Counts every store call, over a real `MemoryStore`.
#[derive(Clone, Default)]
pub struct CountingStore {
    pub inner: MemoryStore,
    pub counts: Arc<Counts>,
}

#[derive(Default)]
pub struct Counts {
    pub loads: AtomicUsize,
    pub saves: AtomicUsize,
    pub creates: AtomicUsize,
    pub patches: AtomicUsize,
    pub swaps: AtomicUsize,
    pub touches: AtomicUsize,
    pub destroys: AtomicUsize,
}

/// Store calls by kind; each is one round trip to a server store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub loads: usize,
    pub saves: usize,
    pub creates: usize,
    pub patches: usize,
    pub swaps: usize,
    pub touches: usize,
    pub destroys: usize,
}

impl Counts {
    pub fn snapshot(&self) -> Calls {
        Calls {
            loads: self.loads.load(Ordering::SeqCst),
            saves: self.saves.load(Ordering::SeqCst),
            creates: self.creates.load(Ordering::SeqCst),
            patches: self.patches.load(Ordering::SeqCst),
            swaps: self.swaps.load(Ordering::SeqCst),
            touches: self.touches.load(Ordering::SeqCst),
            destroys: self.destroys.load(Ordering::SeqCst),
        }
    }

    pub fn total(&self) -> usize {
        let c = self.snapshot();
        c.loads + c.saves + c.creates + c.patches + c.swaps + c.touches + c.destroys
    }
}

impl SessionStore for CountingStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        self.counts.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(id).await
    }
    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.counts.saves.fetch_add(1, Ordering::SeqCst);
        self.inner.save(id, record).await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.counts.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create(id, record).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.counts.destroys.fetch_add(1, Ordering::SeqCst);
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.counts.touches.fetch_add(1, Ordering::SeqCst);
        self.inner.touch(id, record).await
    }
    fn name(&self) -> &'static str {
        "counting"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn patch(&self, id: &SessionId, patch: &Patch) -> Result<bool> {
        self.counts.patches.fetch_add(1, Ordering::SeqCst);
        self.inner.patch(id, patch).await
    }
    async fn compare_and_swap(
        &self,
        id: &SessionId,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<Swap> {
        self.counts.swaps.fetch_add(1, Ordering::SeqCst);
        self.inner.compare_and_swap(id, key, expected, new).await
    }
}

/// A store whose every operation fails as an unreachable backend does.
#[derive(Clone, Copy, Default)]
pub struct DownStore;

fn down() -> Error {
    Error::backend(
        "down",
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
    )
}

impl SessionStore for DownStore {
    async fn load(&self, _: &SessionId) -> Result<Option<Record>> {
        Err(down())
    }
    async fn save(&self, _: &SessionId, _: &Record) -> Result<()> {
        Err(down())
    }
    async fn create(&self, _: &SessionId, _: &Record) -> Result<()> {
        Err(down())
    }
    async fn destroy(&self, _: &SessionId) -> Result<()> {
        Err(down())
    }
    async fn touch(&self, _: &SessionId, _: &Record) -> Result<()> {
        Err(down())
    }
    fn name(&self) -> &'static str {
        "down"
    }
}

#[derive(Deserialize)]
pub struct FlashQuery {
    kind: String,
    msg: Option<String>,
}

/// One route per session operation.
pub fn routes() -> Router {
    Router::new()
        .route("/none", get(|| async { "no session here" }))
        .route(
            "/read",
            get(|s: Session| async move {
                format!("n={}", s.get::<u64>("n").unwrap().unwrap_or(0))
            }),
        )
        .route(
            "/write",
            get(|s: Session| async move {
                let n = s.get::<u64>("n")?.unwrap_or(0) + 1;
                s.insert("n", n)?;
                Ok::<_, SessionError>(format!("n={n}"))
            }),
        )
        .route(
            "/same",
            get(|s: Session| async move {
                let n = s.get::<u64>("n")?.unwrap_or(0);
                s.insert("n", n)?;
                Ok::<_, SessionError>(format!("n={n}"))
            }),
        )
        .route(
            "/id",
            get(|s: Session| async move { s.id().to_string() }),
        )
        .route(
            "/destroy",
            get(|s: Session| async move {
                s.destroy().await?;
                Ok::<_, SessionError>("destroyed")
            }),
        )
        .route(
            "/login",
            get(|s: Session| async move {
                s.regenerate().await?;
                s.insert("user", "ada")?;
                Ok::<_, SessionError>(s.id().to_string())
            }),
        )
        .route(
            "/regenerate",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, SessionError>(s.id().to_string())
            }),
        )
        .route(
            "/cycle",
            get(|s: Session| async move {
                s.cycle_id().await?;
                Ok::<_, SessionError>(s.id().to_string())
            }),
        )
        .route(
            "/reload",
            get(|s: Session| async move {
                s.insert("n", 1000)?;
                s.reload().await?;
                Ok::<_, SessionError>(format!("n={}", s.get::<u64>("n")?.unwrap_or(0)))
            }),
        )
        .route(
            "/save-early",
            get(|s: Session| async move {
                s.insert("early", true)?;
                s.save().await?;
                Ok::<_, SessionError>("saved")
            }),
        )
        .route(
            "/detach",
            get(|s: Session| async move {
                s.insert("ignored", true)?;
                s.detach();
                Ok::<_, SessionError>("detached")
            }),
        )
        .route(
            "/remember",
            get(|s: Session| async move {
                s.set_max_age(Some(Duration::from_secs(30 * 24 * 3600)));
                format!("{:?}", s.max_age().map(|d| d.as_secs()))
            }),
        )
        .route(
            "/cookie-state",
            get(|s: Session| async move {
                format!(
                    "max_age={:?} original={:?} expires={}",
                    s.max_age().map(|d| d.as_secs()),
                    s.original_max_age().map(|d| d.as_secs()),
                    s.expires().is_some()
                )
            }),
        )
        .route(
            "/flash/push",
            get(|f: Flash, Query(q): Query<FlashQuery>| async move {
                f.push(&q.kind, q.msg.unwrap_or_default())?;
                Ok::<_, SessionError>("pushed")
            }),
        )
        .route(
            "/flash/take",
            get(|f: Flash, Query(q): Query<FlashQuery>| async move { f.take(&q.kind).join("|") }),
        )
        .route(
            "/flash/all",
            get(|f: Flash| async move { format!("{:?}", f.take_all()) }),
        )
}

/// The app: the test routes under a layer built from `builder` over `store`.
pub fn app(builder: SessionLayerBuilder, store: impl SessionStore) -> Router {
    routes().layer(builder.store(store).build().expect("a valid layer"))
}

pub fn builder() -> SessionLayerBuilder {
    axum_sesame::SessionLayer::builder().secret(SECRET)
}

pub struct Reply {
    pub status: http::StatusCode,
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Reply {
    /// The one `Set-Cookie` header, if any (panics on several).
    pub fn set_cookie(&self) -> Option<&str> {
        assert!(
            self.set_cookies.len() <= 1,
            "several Set-Cookie headers: {:?}",
            self.set_cookies
        );
        self.set_cookies.first().map(String::as_str)
    }

    /// `name=value` of the `Set-Cookie` header, to send back as `Cookie`.
    pub fn cookie_pair(&self) -> String {
        let set = self.set_cookie().expect("a Set-Cookie header");
        set.split(';').next().unwrap().to_owned()
    }
}

pub async fn call(app: &Router, request: Request<Body>) -> Reply {
    let response: Response<Body> = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let set_cookies = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        set_cookies,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

pub fn get_req(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::empty()).unwrap()
}

pub async fn get_path(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    call(app, get_req(path, cookie)).await
}

/// The session id inside a `name=s%3A<id>.<sig>` pair.
pub fn id_of(pair: &str) -> String {
    let value = pair.split_once('=').unwrap().1;
    let decoded = axum_sesame::core::decode_uri_component(value);
    let signed = decoded.strip_prefix("s:").unwrap();
    signed.rsplit_once('.').unwrap().0.to_owned()
}
