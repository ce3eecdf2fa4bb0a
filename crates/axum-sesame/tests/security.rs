//! Security and failure options: private cookies, ids hashed at rest, cookie prefixes, store
//! timeouts and outage policies, corrupt records, record size limits, hostile cookie headers.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum_sesame::core::{Error, Record, Result, SessionId, SessionStore};
use axum_sesame::{
    CookieOptions, KeyRing, MemoryStore, OnCorruptRecord, OnStoreError, SessionLayer,
};
use common::*;
use http::{Request, StatusCode, header};

// --- Private cookies ----------------------------------------------------------------------------

#[tokio::test]
async fn private_cookies_hide_the_id_and_carry_the_session() {
    let store = CountingStore::default();
    let app = app(builder().private_cookies(true), store.clone());
    let reply = get_path(&app, "/write", None).await;
    let pair = reply.cookie_pair();
    let value = pair.split_once('=').unwrap().1;
    assert!(
        !value.starts_with("s%3A"),
        "not express's signed format: {value}"
    );
    let stored: Vec<SessionId> = store.inner.ids().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        !value.contains(stored[0].as_str()),
        "the id is not readable in the cookie"
    );
    assert_eq!(get_path(&app, "/write", Some(&pair)).await.body, "n=2");

    // A signed cookie for the same id is not accepted by a private layer.
    let signed = format!(
        "connect.sid={}",
        KeyRing::new([SECRET])
            .unwrap()
            .sign_cookie_value(&stored[0])
    );
    assert_eq!(get_path(&app, "/read", Some(&signed)).await.body, "n=0");
}

#[tokio::test]
async fn private_cookie_keys_rotate() {
    let store = CountingStore::default();
    let old = "an old private key of at least thirty-two bytes";
    let new = "a new private key of at least thirty-two bytes!";
    let before = app(
        SessionLayer::builder().secret(old).private_cookies(true),
        store.clone(),
    );
    let pair = get_path(&before, "/write", None).await.cookie_pair();
    let after = app(
        SessionLayer::builder()
            .secrets([new, old])
            .private_cookies(true),
        store.clone(),
    );
    assert_eq!(get_path(&after, "/write", Some(&pair)).await.body, "n=2");
    let only_new = app(
        SessionLayer::builder().secret(new).private_cookies(true),
        store.clone(),
    );
    assert_eq!(get_path(&only_new, "/read", Some(&pair)).await.body, "n=0");
}

// --- Ids hashed at rest -------------------------------------------------------------------------

#[tokio::test]
async fn hashed_ids_keep_cookie_ids_out_of_the_store() {
    let store = CountingStore::default();
    let app = app(
        builder().hash_ids_at_rest("a separate key for hashing ids at rest!"),
        store.clone(),
    );
    let pair = get_path(&app, "/write", None).await.cookie_pair();
    let cookie_id = SessionId::parse(&id_of(&pair)).unwrap();
    assert!(
        store.inner.load(&cookie_id).await.unwrap().is_none(),
        "not stored under the id"
    );
    let stored = store.inner.ids().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], cookie_id);
    assert_eq!(get_path(&app, "/write", Some(&pair)).await.body, "n=2");
    get_path(&app, "/destroy", Some(&pair)).await;
    assert_eq!(
        store.inner.len().await.unwrap(),
        0,
        "destroy reaches the hashed record"
    );
}

// --- Cookie prefixes ----------------------------------------------------------------------------

#[test]
fn prefixed_cookie_names_require_matching_options() {
    let insecure = builder().name("__Host-sid").build();
    assert!(insecure.unwrap_err().to_string().contains("Secure"));
    let with_domain = builder()
        .name("__Host-sid")
        .cookie(
            CookieOptions::default()
                .host_prefixed()
                .domain("example.com"),
        )
        .build();
    assert!(with_domain.unwrap_err().to_string().contains("Domain"));
    let with_path = builder()
        .name("__Host-sid")
        .cookie(CookieOptions::default().host_prefixed().path("/app"))
        .build();
    assert!(with_path.unwrap_err().to_string().contains("Path"));
    assert!(builder().name("__Secure-sid").build().is_err());
    assert!(
        builder()
            .name("__Host-sid")
            .cookie(CookieOptions::default().host_prefixed())
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn host_prefixed_cookie_is_sent_over_https() {
    let app = app(
        builder()
            .name("__Host-sid")
            .cookie(CookieOptions::default().host_prefixed())
            .proxy(true),
        CountingStore::default(),
    );
    let request = Request::get("/write")
        .header("x-forwarded-proto", "https")
        .body(Body::empty())
        .unwrap();
    let reply = call(&app, request).await;
    let set_cookie = reply.set_cookie().unwrap();
    assert!(set_cookie.starts_with("__Host-sid=s%3A"), "{set_cookie}");
    assert!(
        set_cookie.contains("; Path=/; HttpOnly; Secure"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");
}

// --- Hostile cookie headers ---------------------------------------------------------------------

#[tokio::test]
async fn huge_and_hostile_cookie_headers_are_ignored_without_a_store_call() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let huge = format!("connect.sid={}", "x".repeat(200_000));
    let many = (0..5000)
        .map(|i| format!("c{i}=v"))
        .collect::<Vec<_>>()
        .join("; ");
    for cookie in [
        huge.as_str(),
        many.as_str(),
        "connect.sid",
        ";;;==;",
        "connect.sid=\u{7f}",
    ] {
        let Ok(value) = http::HeaderValue::from_str(cookie) else {
            continue;
        };
        let request = Request::get("/write")
            .header(header::COOKIE, value)
            .body(Body::empty())
            .unwrap();
        let reply = call(&app, request).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "n=1", "a fresh session");
    }
    assert_eq!(store.counts.loads.load(Ordering::SeqCst), 0);
}

// --- Store failures -----------------------------------------------------------------------------

/// A store that can be taken down and brought back while the app runs.
#[derive(Clone, Default)]
struct FlakyStore {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
}

impl FlakyStore {
    async fn gate(&self) -> Result<()> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::backend(
                "flaky",
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "stopped"),
            ));
        }
        Ok(())
    }
}

impl SessionStore for FlakyStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>> {
        self.gate().await?;
        self.inner.load(id).await
    }
    async fn save(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.gate().await?;
        self.inner.save(id, record).await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.gate().await?;
        self.inner.create(id, record).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.gate().await?;
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.gate().await?;
        self.inner.touch(id, record).await
    }
    fn name(&self) -> &'static str {
        "flaky"
    }
}

#[tokio::test]
async fn fail_closed_answers_503_while_down_and_recovers() {
    let store = FlakyStore::default();
    let app = app(builder(), store.clone());
    let pair = get_path(&app, "/write", None).await.cookie_pair();
    store.down.store(true, Ordering::SeqCst);
    let reply = get_path(&app, "/write", Some(&pair)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "Session store unavailable");
    store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        get_path(&app, "/write", Some(&pair)).await.body,
        "n=2",
        "nothing was lost"
    );
}

#[tokio::test]
async fn continue_without_session_serves_a_fresh_unsaved_session_while_down() {
    let store = FlakyStore::default();
    let app = app(
        builder().on_store_error(OnStoreError::ContinueWithoutSession),
        store.clone(),
    );
    let pair = get_path(&app, "/write", None).await.cookie_pair();
    store.down.store(true, Ordering::SeqCst);
    let reply = get_path(&app, "/write", Some(&pair)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "n=1"));
    assert!(
        reply.set_cookies.is_empty(),
        "no cookie for an unsaved session"
    );
    let fresh = get_path(&app, "/write", None).await;
    assert_eq!(
        fresh.status,
        StatusCode::OK,
        "a failed save keeps the response"
    );
    assert!(fresh.set_cookies.is_empty());
    store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        get_path(&app, "/write", Some(&pair)).await.body,
        "n=2",
        "the stored session is intact"
    );
}

#[tokio::test]
async fn a_hanging_store_is_cut_off_by_the_timeout() {
    let store = FlakyStore::default();
    let app = app(
        builder().store_timeout(Some(Duration::from_millis(200))),
        store.clone(),
    );
    let pair = get_path(&app, "/write", None).await.cookie_pair();
    store.hang.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let reply = get_path(&app, "/read", Some(&pair)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    store.hang.store(false, Ordering::SeqCst);
    assert_eq!(get_path(&app, "/read", Some(&pair)).await.body, "n=1");
}

// --- Corrupt records and size limits ------------------------------------------------------------

/// A store whose records all fail to decode.
#[derive(Clone, Copy)]
struct CorruptStore;

impl SessionStore for CorruptStore {
    async fn load(&self, _: &SessionId) -> Result<Option<Record>> {
        Record::from_json(b"{\"not\": \"a session\"}").map(Some)
    }
    async fn save(&self, _: &SessionId, _: &Record) -> Result<()> {
        Ok(())
    }
    async fn create(&self, _: &SessionId, _: &Record) -> Result<()> {
        Ok(())
    }
    async fn destroy(&self, _: &SessionId) -> Result<()> {
        Ok(())
    }
    async fn touch(&self, _: &SessionId, _: &Record) -> Result<()> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "corrupt"
    }
}

#[tokio::test]
async fn a_corrupt_record_starts_a_new_session_or_fails_by_option() {
    let cookie = format!(
        "connect.sid={}",
        KeyRing::new([SECRET])
            .unwrap()
            .sign_cookie_value(&SessionId::generate())
    );
    let lenient = app(builder(), CorruptStore);
    let reply = get_path(&lenient, "/write", Some(&cookie)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "n=1"));
    assert_ne!(reply.cookie_pair(), cookie, "a new id");
    let strict = app(
        builder().on_corrupt_record(OnCorruptRecord::Fail),
        CorruptStore,
    );
    let reply = get_path(&strict, "/read", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_record_over_the_size_limit_is_refused_and_not_stored() {
    let store = CountingStore::default();
    let app = routes()
        .route(
            "/big",
            axum::routing::get(|s: axum_sesame::Session| async move {
                s.insert("blob", "x".repeat(4096))
            }),
        )
        .layer(
            builder()
                .max_record_size(1024)
                .store(store.clone())
                .build()
                .unwrap(),
        );
    let reply = get_path(&app, "/big", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(store.inner.len().await.unwrap(), 0, "nothing stored");
    assert_eq!(
        get_path(&app, "/write", None).await.status,
        StatusCode::OK,
        "small is fine"
    );
}
