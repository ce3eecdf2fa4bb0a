//! express-session's decision table, row by row, through a real axum `Router`: when sesame loads,
//! saves, touches, and sends the cookie.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum_sesame::core::{KeyRing, Record, SessionId, SessionStore};
use axum_sesame::{
    CookieOptions, MemoryStore, Priority, SameSite, SameSitePolicy, Secure, SessionLayer, Unset,
};
use common::*;
use http::{Request, StatusCode, header};

const OLD_SECRET: &str = "the old secret, retired but still verifying";
const NEW_SECRET: &str = "the new secret, which signs every new cookie";

/// Starts a session by writing once; returns the cookie pair to send back.
async fn start(app: &axum::Router) -> String {
    let reply = get_path(app, "/write", None).await;
    assert_eq!(reply.body, "n=1");
    reply.cookie_pair()
}

// --- New sessions -------------------------------------------------------------------------------

#[tokio::test]
async fn new_unmodified_session_is_not_saved_and_gets_no_cookie() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let reply = get_path(&app, "/read", None).await;
    assert_eq!(reply.body, "n=0");
    assert_eq!(reply.set_cookie(), None);
    assert_eq!(
        store.counts.snapshot(),
        Calls::default(),
        "no store I/O at all"
    );
}

#[tokio::test]
async fn save_uninitialized_saves_and_sends_a_new_unmodified_session() {
    let store = CountingStore::default();
    let app = app(builder().save_uninitialized(true), store.clone());
    let reply = get_path(&app, "/read", None).await;
    let pair = reply.cookie_pair();
    assert_eq!(
        store.counts.snapshot(),
        Calls {
            creates: 1,
            ..Calls::default()
        },
        "one create"
    );
    let id = SessionId::parse(&id_of(&pair)).unwrap();
    assert!(store.inner.load(&id).await.unwrap().is_some());
}

#[tokio::test]
async fn new_modified_session_is_created_and_its_cookie_sent() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let reply = get_path(&app, "/write", None).await;
    let set_cookie = reply.set_cookie().unwrap();
    assert!(set_cookie.starts_with("connect.sid=s%3A"), "{set_cookie}");
    assert!(set_cookie.ends_with("; Path=/; HttpOnly"), "{set_cookie}");
    assert_eq!(
        store.counts.snapshot(),
        Calls {
            creates: 1,
            ..Calls::default()
        }
    );
    // The cookie verifies under the secret, and the record is express-session's JSON.
    let value = reply.cookie_pair().split_once('=').unwrap().1.to_owned();
    let id = KeyRing::new([SECRET])
        .unwrap()
        .verify_cookie_value(&value)
        .unwrap();
    let record = store.inner.load(&id).await.unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_str(&record.to_json().unwrap()).unwrap();
    assert_eq!(json["n"], 1);
    assert_eq!(json["cookie"]["httpOnly"], true);
    assert_eq!(json["cookie"]["path"], "/");
    assert_eq!(json["cookie"]["originalMaxAge"], serde_json::Value::Null);
}

// --- Existing sessions --------------------------------------------------------------------------

#[tokio::test]
async fn existing_unmodified_session_is_touched_not_saved_and_gets_no_cookie() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = start(&app).await;
    let reply = get_path(&app, "/read", Some(&pair)).await;
    assert_eq!(reply.body, "n=1");
    assert_eq!(reply.set_cookie(), None);
    assert_eq!(
        store.counts.snapshot(),
        Calls {
            loads: 1,
            creates: 1,
            touches: 1,
            ..Calls::default()
        },
        "load + touch only"
    );
}

#[tokio::test]
async fn setting_a_key_to_its_value_is_not_a_modification() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = start(&app).await;
    let reply = get_path(&app, "/same", Some(&pair)).await;
    assert_eq!(reply.body, "n=1");
    assert_eq!(
        store.counts.snapshot(),
        Calls {
            loads: 1,
            creates: 1,
            touches: 1,
            ..Calls::default()
        },
        "touched, not saved"
    );
}

#[tokio::test]
async fn existing_modified_session_is_saved_without_cookie_when_browser_session() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = start(&app).await;
    let reply = get_path(&app, "/write", Some(&pair)).await;
    assert_eq!(reply.body, "n=2");
    assert_eq!(
        store.counts.snapshot(),
        Calls {
            loads: 1,
            creates: 1,
            patches: 1,
            ..Calls::default()
        },
        "load + one patch (one round trip)"
    );
    // express-session re-sends the cookie of a modified session only when it has an expiry.
    assert_eq!(reply.set_cookie(), None);
    assert_eq!(get_path(&app, "/read", Some(&pair)).await.body, "n=2");
}

#[tokio::test]
async fn existing_modified_session_with_max_age_gets_a_fresh_cookie() {
    let store = CountingStore::default();
    let cookie = CookieOptions::default().max_age(Duration::from_secs(3600));
    let app = app(builder().cookie(cookie), store.clone());
    let pair = start(&app).await;
    let reply = get_path(&app, "/write", Some(&pair)).await;
    let set_cookie = reply.set_cookie().expect("a refreshed cookie");
    assert!(set_cookie.contains("; Expires="), "{set_cookie}");
    assert_eq!(reply.cookie_pair(), pair, "same id, same signature");
    // An unmodified request does not re-send it (rolling is off).
    assert_eq!(
        get_path(&app, "/read", Some(&pair)).await.set_cookie(),
        None
    );
}

#[tokio::test]
async fn resave_saves_an_unmodified_session() {
    let store = CountingStore::default();
    let app = app(builder().resave(true), store.clone());
    let pair = start(&app).await;
    get_path(&app, "/read", Some(&pair)).await;
    assert_eq!(
        store.counts.snapshot(),
        Calls {
            loads: 1,
            creates: 1,
            patches: 1,
            ..Calls::default()
        },
        "written (as an empty patch that moves the expiry), not touched"
    );
}

#[tokio::test]
async fn rolling_sends_the_cookie_on_every_response_with_a_new_expiry() {
    let store = CountingStore::default();
    let cookie = CookieOptions::default().max_age(Duration::from_secs(60));
    let app = app(builder().rolling(true).cookie(cookie), store.clone());
    let pair = start(&app).await;
    let first = get_path(&app, "/read", Some(&pair)).await;
    let first_cookie = first
        .set_cookie()
        .expect("rolling sends the cookie")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = get_path(&app, "/read", Some(&pair)).await;
    let second_cookie = second.set_cookie().expect("rolling sends the cookie again");
    assert_ne!(
        first_cookie, second_cookie,
        "the Expires attribute moved on"
    );
    assert_eq!(second.cookie_pair(), pair);
    assert_eq!(
        store
            .counts
            .touches
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[tokio::test]
async fn touch_moves_the_stored_expiry_of_an_unmodified_session() {
    let store = CountingStore::default();
    let cookie = CookieOptions::default().max_age(Duration::from_secs(2));
    let app = app(builder().cookie(cookie), store.clone());
    let pair = start(&app).await;
    // Keep using the session (reads only) past its original expiry: each touch extends it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(get_path(&app, "/read", Some(&pair)).await.body, "n=1");
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        get_path(&app, "/read", Some(&pair)).await.body,
        "n=0",
        "idle past max age: expired"
    );
}

#[tokio::test]
async fn touch_after_skips_touches_within_the_interval() {
    let store = CountingStore::default();
    let cookie = CookieOptions::default().max_age(Duration::from_secs(3600));
    let app = app(
        builder()
            .cookie(cookie)
            .rolling(true)
            .touch_after(Duration::from_millis(1500)),
        store.clone(),
    );
    let pair = start(&app).await;
    let first = get_path(&app, "/read", Some(&pair)).await;
    assert_eq!(store.counts.snapshot().touches, 0, "just written: no touch");
    // With rolling, the cookie still goes out, carrying the stored expiry, not a new one.
    let expires_of = |set_cookie: &str| {
        set_cookie
            .split("; ")
            .find_map(|part| part.strip_prefix("Expires="))
            .map(str::to_owned)
    };
    let first_expiry = expires_of(first.set_cookie().unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = get_path(&app, "/read", Some(&pair)).await;
    assert_eq!(
        store.counts.snapshot().touches,
        0,
        "within the interval: no touch"
    );
    assert_eq!(
        expires_of(second.set_cookie().unwrap()),
        first_expiry,
        "within the interval the expiry stays"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let third = get_path(&app, "/read", Some(&pair)).await;
    assert_eq!(third.body, "n=1");
    assert_eq!(
        store.counts.snapshot().touches,
        1,
        "past the interval: touched"
    );
    assert_ne!(expires_of(third.set_cookie().unwrap()), first_expiry);
}

#[tokio::test]
async fn without_touch_after_every_read_touches() {
    let store = CountingStore::default();
    let cookie = CookieOptions::default().max_age(Duration::from_secs(3600));
    let app = app(builder().cookie(cookie), store.clone());
    let pair = start(&app).await;
    for _ in 0..3 {
        get_path(&app, "/read", Some(&pair)).await;
    }
    assert_eq!(store.counts.snapshot().touches, 3);
}

// --- Lazy and cheap -----------------------------------------------------------------------------

#[tokio::test]
async fn a_handler_that_ignores_the_session_costs_no_store_io_and_no_cookie() {
    let store = CountingStore::default();
    let app = app(builder().rolling(true).resave(true), store.clone());
    let pair = start(&app).await;
    let before = store.counts.total();
    for cookie in [
        None,
        Some(pair.as_str()),
        Some("connect.sid=s%3Aforged.sig"),
    ] {
        let reply = get_path(&app, "/none", cookie).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.set_cookies.is_empty());
    }
    assert_eq!(store.counts.total(), before, "no store calls");
}

#[tokio::test]
async fn a_bad_signature_costs_no_store_round_trip_and_gets_a_new_id() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = start(&app).await;
    let id = id_of(&pair);
    let forged_with_other_secret = format!(
        "connect.sid={}",
        KeyRing::new(["not the secret, though just as long as it"])
            .unwrap()
            .sign_cookie_value(&SessionId::parse(&id).unwrap())
    );
    let mut tampered = pair.clone();
    tampered.pop();
    tampered.push('x');
    for bad in [
        forged_with_other_secret.as_str(),
        tampered.as_str(),
        "connect.sid=garbage",
        "connect.sid=s%3A",
        "connect.sid=%ZZ%",
        &format!("connect.sid=s%3A{id}"),
        &format!("connect.sid={}", "a".repeat(5000)),
    ] {
        let loads_before = store.counts.loads.load(std::sync::atomic::Ordering::SeqCst);
        let reply = get_path(&app, "/write", Some(bad)).await;
        assert_eq!(reply.body, "n=1", "{bad}: a fresh session");
        assert_eq!(
            store.counts.loads.load(std::sync::atomic::Ordering::SeqCst),
            loads_before,
            "{bad}: no load"
        );
        assert_ne!(id_of(&reply.cookie_pair()), id, "{bad}: a new id");
    }
}

#[tokio::test]
async fn an_unknown_but_validly_signed_id_is_never_adopted() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let planted = SessionId::parse("attacker-chosen-session-id-000001").unwrap();
    let cookie = format!(
        "connect.sid={}",
        KeyRing::new([SECRET]).unwrap().sign_cookie_value(&planted)
    );
    let reply = get_path(&app, "/write", Some(&cookie)).await;
    assert_eq!(
        store.counts.loads.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let issued = id_of(&reply.cookie_pair());
    assert_ne!(
        issued,
        planted.as_str(),
        "a fresh id replaces the planted one"
    );
    assert!(store.inner.load(&planted).await.unwrap().is_none());
}

// --- Secrets ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_cookie_signed_with_an_older_secret_of_the_list_is_accepted() {
    let store = CountingStore::default();
    let old_app = app(SessionLayer::builder().secret(OLD_SECRET), store.clone());
    let pair = start(&old_app).await;
    let rotated = app(
        SessionLayer::builder().secrets([NEW_SECRET, OLD_SECRET]),
        store.clone(),
    );
    let reply = get_path(&rotated, "/write", Some(&pair)).await;
    assert_eq!(reply.body, "n=2", "the session continues");
    // New cookies are signed with the first secret.
    let fresh = get_path(&rotated, "/write", None).await.cookie_pair();
    let value = fresh.split_once('=').unwrap().1;
    assert!(
        KeyRing::new([NEW_SECRET])
            .unwrap()
            .verify_cookie_value(value)
            .is_some()
    );
    assert!(
        KeyRing::new([OLD_SECRET])
            .unwrap()
            .verify_cookie_value(value)
            .is_none()
    );
}

#[tokio::test]
async fn a_cookie_sent_again_is_signed_by_the_current_secret() {
    let store = CountingStore::default();
    // With a max age, every write sends the cookie again (with its new expiry).
    let cookie = CookieOptions::default().max_age(Duration::from_secs(3600));
    let old_app = app(
        SessionLayer::builder()
            .secret(OLD_SECRET)
            .cookie(cookie.clone()),
        store.clone(),
    );
    let old_pair = start(&old_app).await;
    let rotated = app(
        SessionLayer::builder()
            .secrets([NEW_SECRET, OLD_SECRET])
            .cookie(cookie),
        store.clone(),
    );
    let resent = get_path(&rotated, "/write", Some(&old_pair))
        .await
        .cookie_pair();
    assert_eq!(id_of(&resent), id_of(&old_pair), "the same session");
    let value = resent.split_once('=').unwrap().1;
    let verifies_with = |secret| {
        KeyRing::new([secret])
            .unwrap()
            .verify_cookie_value(value)
            .is_some()
    };
    assert!(verifies_with(NEW_SECRET), "moved to the current secret");
    assert!(!verifies_with(OLD_SECRET));
    // A cookie already signed by the current secret comes back as it was sent: byte for byte what
    // signing it again gives.
    let again = get_path(&rotated, "/write", Some(&resent)).await;
    assert_eq!(again.body, "n=3");
    assert_eq!(again.cookie_pair(), resent);
    // The same signature without the percent-encoding comes back encoded.
    let unencoded = format!("connect.sid=s:{}", &value["s%3A".len()..]);
    let encoded = get_path(&rotated, "/write", Some(&unencoded)).await;
    assert_eq!(encoded.body, "n=4");
    assert_eq!(encoded.cookie_pair(), resent);
}

#[tokio::test]
async fn the_express_test_vector_cookie_is_accepted() {
    let store = CountingStore::default();
    let id = SessionId::parse("2TVZ0jQ7uX3wqkXF8H3yKxhE5pBcYJmN").unwrap();
    let mut record = Record::default();
    record.data_mut().insert("n".into(), 41.into());
    store.inner.save(&id, &record).await.unwrap();
    // express-session's docs use this short secret; sharing it needs the explicit opt-in.
    let app = app(
        SessionLayer::builder()
            .secret("keyboard cat")
            .allow_short_secrets(true),
        store.clone(),
    );
    let cookie = "connect.sid=s%3A2TVZ0jQ7uX3wqkXF8H3yKxhE5pBcYJmN.2FjJYw%2B%2FJHztItNfCstHIeECIHFx6WpLk%2By2IWCFol8";
    assert_eq!(get_path(&app, "/write", Some(cookie)).await.body, "n=42");
}

#[test]
fn building_a_layer_without_a_secret_is_an_error() {
    let error = SessionLayer::builder().build().unwrap_err();
    assert!(error.to_string().contains("secret"), "{error}");
    assert!(SessionLayer::builder().secret("").build().is_err());
    let short = SessionLayer::builder()
        .secret("keyboard cat")
        .build()
        .unwrap_err();
    assert!(short.to_string().contains("secret"), "{short}");
    assert!(
        SessionLayer::builder()
            .secret("s")
            .name("bad name")
            .build()
            .is_err()
    );
}

// --- Cookie attributes --------------------------------------------------------------------------

#[tokio::test]
async fn cookie_options_appear_in_set_cookie() {
    let cookie = CookieOptions::default()
        .path("/app")
        .domain("example.com")
        .http_only(false)
        .same_site(SameSite::Strict)
        .partitioned(true)
        .priority(Priority::High)
        .max_age(Duration::from_secs(3600));
    let app = axum::Router::new()
        .nest("/app", routes())
        .layer(builder().name("sid").cookie(cookie).build().unwrap());
    let reply = get_path(&app, "/app/write", None).await;
    let set_cookie = reply.set_cookie().unwrap();
    assert!(set_cookie.starts_with("sid=s%3A"), "{set_cookie}");
    assert!(
        set_cookie.contains("; Domain=example.com; Path=/app; Expires="),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(
        set_cookie.ends_with("; Partitioned; Priority=High; SameSite=Strict"),
        "{set_cookie}"
    );
    // Expires is about an hour away.
    let expires = set_cookie
        .split("Expires=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let parsed = httpdate(expires);
    let delta = parsed - axum_sesame::core::now();
    assert!((3590..=3600).contains(&delta.whole_seconds()), "{expires}");
}

fn httpdate(text: &str) -> time::OffsetDateTime {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text, format)
        .expect("an HTTP date")
        .assume_utc()
}

#[tokio::test]
async fn no_secure_cookie_over_plain_http() {
    let cookie = CookieOptions::default().secure(Secure::Always);
    let store = CountingStore::default();
    let app = app(builder().cookie(cookie), store.clone());
    let reply = get_path(&app, "/write", None).await;
    assert_eq!(
        reply.set_cookie(),
        None,
        "a Secure cookie is not sent over http"
    );
    assert_eq!(
        store
            .counts
            .creates
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "still saved"
    );
}

fn forwarded(path: &str, proto: &str) -> Request<Body> {
    Request::get(path)
        .header("x-forwarded-proto", proto)
        .body(Body::empty())
        .expect("a request")
}

#[tokio::test]
async fn secure_cookie_through_a_trusted_proxy_only() {
    let cookie = CookieOptions::default().secure(Secure::Always);
    let trusted = app(
        builder().cookie(cookie.clone()).proxy(true),
        CountingStore::default(),
    );
    let reply = call(&trusted, forwarded("/write", "https")).await;
    assert!(reply.set_cookie().unwrap().contains("; Secure"));
    let reply = call(&trusted, forwarded("/write", "http")).await;
    assert_eq!(reply.set_cookie(), None);
    let untrusted = app(builder().cookie(cookie.clone()), CountingStore::default());
    let reply = call(&untrusted, forwarded("/write", "https")).await;
    assert_eq!(
        reply.set_cookie(),
        None,
        "X-Forwarded-Proto ignored without proxy(true)"
    );
    // A request marked as https by the server itself.
    let mut request = get_req("/write", None);
    request.extensions_mut().insert(axum_sesame::Https);
    assert!(
        call(&untrusted, request)
            .await
            .set_cookie()
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test]
async fn secure_auto_and_same_site_auto_follow_the_scheme() {
    let cookie = CookieOptions::default()
        .secure(Secure::Auto)
        .same_site(SameSitePolicy::Auto);
    let app = app(
        builder().cookie(cookie).proxy(true),
        CountingStore::default(),
    );
    let plain = get_path(&app, "/write", None).await;
    let plain = plain.set_cookie().unwrap();
    assert!(!plain.contains("Secure"), "{plain}");
    assert!(plain.ends_with("; SameSite=Lax"), "{plain}");
    let https = call(&app, forwarded("/write", "https")).await;
    let https = https.set_cookie().unwrap();
    assert!(https.contains("; Secure"), "{https}");
    assert!(https.ends_with("; SameSite=None"), "{https}");
}

#[tokio::test]
async fn cookie_options_can_be_computed_per_request() {
    let layer = builder()
        .cookie_with(|parts| {
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("default.test");
            CookieOptions::default().domain(host.to_owned())
        })
        .build()
        .unwrap();
    let app = routes().layer(layer);
    let request = Request::get("/write")
        .header(header::HOST, "tenant.example")
        .body(Body::empty())
        .unwrap();
    let reply = call(&app, request).await;
    assert!(
        reply
            .set_cookie()
            .unwrap()
            .contains("; Domain=tenant.example;")
    );
}

#[tokio::test]
async fn custom_genid_and_cookie_name() {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids = counter.clone();
    let app = app(
        builder().name("my.sid").genid(move || {
            format!(
                "custom-{}",
                ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            )
        }),
        CountingStore::default(),
    );
    let reply = get_path(&app, "/write", None).await;
    let pair = reply.cookie_pair();
    assert!(pair.starts_with("my.sid="));
    assert_eq!(id_of(&pair), "custom-0");
    assert_eq!(get_path(&app, "/read", Some(&pair)).await.body, "n=1");
}

/// An id generator whose first id is `always-the-same` (taken in the tests' stores), then
/// `the-second-id`.
fn taken_then_free() -> impl Fn() -> String + Send + Sync + 'static {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    move || {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            "always-the-same".to_owned()
        } else {
            "the-second-id".to_owned()
        }
    }
}

#[tokio::test]
async fn an_id_collision_gets_a_new_id_before_the_cookie_is_sent() {
    let store = CountingStore::default();
    let taken = SessionId::parse("always-the-same").unwrap();
    store.inner.save(&taken, &Record::default()).await.unwrap();
    let app = app(builder().genid(taken_then_free()), store.clone());
    let reply = get_path(&app, "/write", None).await;
    assert_eq!(id_of(&reply.cookie_pair()), "the-second-id");
    assert!(
        store
            .inner
            .load(&taken)
            .await
            .unwrap()
            .unwrap()
            .data()
            .is_empty(),
        "not overwritten"
    );
}

#[tokio::test]
async fn an_id_collision_in_the_bare_memory_store_also_gets_a_new_id() {
    // The memory store, called directly, creates in place under the state's lock; a collision
    // falls back to the path that retries.
    let store = MemoryStore::new();
    let taken = SessionId::parse("always-the-same").unwrap();
    store.save(&taken, &Record::default()).await.unwrap();
    let app = app(builder().genid(taken_then_free()), store.clone());
    let reply = get_path(&app, "/write", None).await;
    let pair = reply.cookie_pair();
    assert_eq!(id_of(&pair), "the-second-id");
    assert!(
        store.load(&taken).await.unwrap().unwrap().data().is_empty(),
        "not overwritten"
    );
    assert_eq!(get_path(&app, "/read", Some(&pair)).await.body, "n=1");
}

// --- Session methods ----------------------------------------------------------------------------

#[tokio::test]
async fn destroy_deletes_the_record_and_removes_the_cookie_with_matching_attributes() {
    let store = CountingStore::default();
    let cookie = CookieOptions::default()
        .path("/")
        .domain("example.com")
        .same_site(SameSite::Lax);
    let app = app(
        builder().cookie(cookie).save_uninitialized(true),
        store.clone(),
    );
    let pair = start(&app).await;
    let id = SessionId::parse(&id_of(&pair)).unwrap();
    let reply = get_path(&app, "/destroy", Some(&pair)).await;
    let removal = reply.set_cookie().expect("a removal cookie");
    assert_eq!(
        removal,
        "connect.sid=; Max-Age=0; Domain=example.com; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
    );
    assert!(store.inner.load(&id).await.unwrap().is_none());
    assert_eq!(
        store
            .counts
            .destroys
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // The old cookie now starts a fresh session.
    assert_eq!(get_path(&app, "/read", Some(&pair)).await.body, "n=0");
}

#[tokio::test]
async fn regenerate_issues_a_new_id_and_destroys_the_old_record() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = start(&app).await;
    let old = SessionId::parse(&id_of(&pair)).unwrap();
    let reply = get_path(&app, "/login", Some(&pair)).await;
    let new_pair = reply.cookie_pair();
    assert_eq!(id_of(&new_pair), reply.body);
    assert_ne!(reply.body, old.as_str());
    assert!(
        store.inner.load(&old).await.unwrap().is_none(),
        "old record destroyed"
    );
    let new = store
        .inner
        .load(&SessionId::parse(&reply.body).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.data().get("user").unwrap(), "ada");
    assert!(
        new.data().get("n").is_none(),
        "regenerate starts with no data"
    );
}

#[tokio::test]
async fn regenerate_without_new_data_removes_the_stale_cookie() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = start(&app).await;
    let reply = get_path(&app, "/regenerate", Some(&pair)).await;
    assert!(reply.set_cookie().unwrap().contains("Max-Age=0"));
    assert!(store.inner.len().await.unwrap() == 0);
}

#[tokio::test]
async fn cycle_id_keeps_the_data_under_a_new_id() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = start(&app).await;
    let reply = get_path(&app, "/cycle", Some(&pair)).await;
    let new_pair = reply.cookie_pair();
    assert_ne!(id_of(&new_pair), id_of(&pair));
    assert_eq!(get_path(&app, "/read", Some(&new_pair)).await.body, "n=1");
    assert_eq!(
        get_path(&app, "/read", Some(&pair)).await.body,
        "n=0",
        "old id is dead"
    );
}

#[tokio::test]
async fn reload_discards_unsaved_changes() {
    let app = app(builder(), CountingStore::default());
    let pair = start(&app).await;
    assert_eq!(get_path(&app, "/reload", Some(&pair)).await.body, "n=1");
    // reload of a session that was never saved is a clear error, answered 500.
    assert_eq!(
        get_path(&app, "/reload", None).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn an_explicit_save_is_not_repeated_at_the_end() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let reply = get_path(&app, "/save-early", None).await;
    assert!(
        reply.set_cookie().is_some(),
        "the saved session gets its cookie"
    );
    assert_eq!(
        store.counts.snapshot(),
        Calls {
            creates: 1,
            ..Calls::default()
        },
        "one create, no second write"
    );
}

#[tokio::test]
async fn detach_keeps_or_destroys_the_record_by_the_unset_option() {
    for (unset, survives) in [(Unset::Keep, true), (Unset::Destroy, false)] {
        let store = CountingStore::default();
        let app = app(builder().unset(unset), store.clone());
        let pair = start(&app).await;
        let reply = get_path(&app, "/detach", Some(&pair)).await;
        assert!(reply.set_cookies.is_empty(), "{unset:?}: no cookie");
        let id = SessionId::parse(&id_of(&pair)).unwrap();
        let record = store.inner.load(&id).await.unwrap();
        assert_eq!(record.is_some(), survives, "{unset:?}");
        if let Some(record) = record {
            assert!(
                !record.data().contains_key("ignored"),
                "nothing saved after detach"
            );
        }
    }
}

#[tokio::test]
async fn remember_me_gives_a_browser_session_an_expiry() {
    let store = CountingStore::default();
    let app = app(builder(), store.clone());
    let pair = start(&app).await;
    let reply = get_path(&app, "/remember", Some(&pair)).await;
    // The max age left, read back in the same request: 30 days, less the millisecond that may
    // have passed between setting and reading it.
    assert!(
        ["Some(2592000)", "Some(2591999)"].contains(&reply.body.as_str()),
        "{}",
        reply.body
    );
    assert!(
        reply.set_cookie().unwrap().contains("; Expires="),
        "cookie now persistent"
    );
    let id = SessionId::parse(&id_of(&pair)).unwrap();
    let record = store.inner.load(&id).await.unwrap().unwrap();
    assert_eq!(record.cookie().original_max_age, Some(2_592_000_000));
    let state = get_path(&app, "/cookie-state", Some(&pair)).await.body;
    assert!(state.starts_with("max_age=Some(259"), "{state}");
    assert!(
        state.contains("original=Some(2592000) expires=true"),
        "{state}"
    );
}

// --- Failures -----------------------------------------------------------------------------------

#[tokio::test]
async fn extracting_a_session_without_the_layer_is_a_clear_rejection() {
    let app = routes();
    let reply = get_path(&app, "/read", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("SessionLayer"), "{}", reply.body);
}

#[tokio::test]
async fn an_unreachable_store_answers_503_not_a_panic() {
    let app = app(builder(), DownStore);
    // A new session needs no load, but its save fails: 503.
    let reply = get_path(&app, "/write", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.set_cookies.is_empty(),
        "no cookie for an unsaved session"
    );
    // A signed cookie needs a load, which fails: 503.
    let cookie = format!(
        "connect.sid={}",
        KeyRing::new([SECRET])
            .unwrap()
            .sign_cookie_value(&SessionId::generate())
    );
    let reply = get_path(&app, "/read", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "Session store unavailable");
    // Routes without the session are unaffected.
    assert_eq!(
        get_path(&app, "/none", Some(&cookie)).await.status,
        StatusCode::OK
    );
}
