//! The login example in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! two browser profiles, on the memory store and on every server store, the same binary
//! configured by `SESAME_STORE`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! `.ci/run` installs them). Paths can be set with `CHROMIUM` and `CHROMEDRIVER`. Screenshots of
//! each page are saved under `target/tmp/screenshots/`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Server, example_binary, free_port, server_url};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// One browser test at a time: each runs two Chromium instances, enough for two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SECRET: &str = "a browser test secret of at least thirty-two bytes";

fn tool(variable: &str, default: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var(variable).unwrap_or_else(|_| default.to_owned()));
    path.exists().then_some(path)
}

/// chromedriver, listening on a free port until dropped.
fn start_chromedriver(driver: &Path) -> (Server, u16) {
    let port = free_port();
    let mut command = Command::new(driver);
    command.arg(format!("--port={port}"));
    (Server::start("chromedriver", command, port), port)
}

/// A headless Chromium with its own fresh profile (cookies included).
async fn browser(chromium: &Path, driver_port: u16, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--window-size=1100,760",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .unwrap_or_else(|error| panic!("starting Chromium through chromedriver: {error}"))
}

struct Page<'a> {
    client: &'a Client,
    base: String,
    shots: PathBuf,
}

impl Page<'_> {
    async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The page's visible text, or nothing while a navigation replaces the document.
    async fn text(&self) -> String {
        let script = "return document.body ? document.body.innerText : ''";
        match self.client.execute(script, Vec::new()).await {
            Ok(serde_json::Value::String(text)) => text,
            _ => String::new(),
        }
    }

    async fn fill(&self, selector: &str, value: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }

    async fn click(&self, selector: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    async fn log_in(&self, user: &str, password: &str, remember: bool) {
        self.open("/login").await;
        self.fill("#username", user).await;
        self.fill("#password", password).await;
        if remember {
            self.click("#remember").await;
        }
        self.click("#login").await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(&self.shots).unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

/// Waits for a page to show `needle` (a form post navigates asynchronously).
async fn wait_for_text(page: &Page<'_>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = page.text().await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the page at {} never showed {needle:?}; it shows:\n{text}",
            page.path().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scenario(store: &str, base: String, chromium: &Path, driver_port: u16) {
    let profiles = tempdir(&format!("profiles-{store}"));
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("screenshots")
        .join(store);
    let laptop_client = browser(chromium, driver_port, &profiles.join("laptop")).await;
    let phone_client = browser(chromium, driver_port, &profiles.join("phone")).await;
    let laptop = Page {
        client: &laptop_client,
        base: base.clone(),
        shots: shots.clone(),
    };
    let phone = Page {
        client: &phone_client,
        base,
        shots,
    };

    // Anonymous visitors of a protected page are sent to the login form.
    laptop.open("/account").await;
    assert_eq!(laptop.path().await, "/login");
    wait_for_text(&laptop, "Please log in.").await;
    laptop.screenshot("1-login").await;

    // A wrong password is refused with a message.
    laptop.log_in("ada", "wrong", false).await;
    wait_for_text(&laptop, "Wrong user name or password.").await;

    // Log in: the flash shows once, and is gone on reload.
    laptop.log_in("ada", "lovelace", false).await;
    wait_for_text(&laptop, "Welcome, ada!").await;
    assert_eq!(laptop.path().await, "/account");
    laptop.screenshot("2-welcome").await;
    laptop_client.refresh().await.unwrap();
    let text = wait_for_text(&laptop, "Logged in as ada").await;
    assert!(!text.contains("Welcome, ada!"), "a flash is shown once");

    // The cookie as the browser holds it: HttpOnly, SameSite=Lax, a browser-session cookie, and
    // out of reach of scripts.
    let cookie = laptop_client.get_named_cookie("sesame.sid").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|same_site| same_site.to_string()),
        Some("Lax".to_owned())
    );
    assert_eq!(cookie.path(), Some("/"));
    assert!(
        cookie.expires().and_then(|e| e.datetime()).is_none(),
        "no remember me: a browser-session cookie, {cookie:?}"
    );
    let from_script = laptop_client
        .execute("return document.cookie", Vec::new())
        .await
        .unwrap();
    assert_eq!(
        from_script,
        json!(""),
        "scripts cannot read the session cookie"
    );

    // A second browser logs in as the same user, with remember me: a 30-day cookie.
    phone.log_in("ada", "lovelace", true).await;
    wait_for_text(&phone, "Welcome, ada!").await;
    let phone_cookie = phone_client.get_named_cookie("sesame.sid").await.unwrap();
    let expires = phone_cookie
        .expires()
        .and_then(|e| e.datetime())
        .expect("remember me gives the cookie an expiry");
    let days = (expires - time::OffsetDateTime::now_utc()).whole_days();
    assert!((29..=30).contains(&days), "{days} days");

    // The laptop sees both sessions and logs the other one out.
    laptop.open("/account").await;
    let text = wait_for_text(&laptop, "Your sessions (2)").await;
    assert!(text.contains("this browser"), "{text}");
    laptop.screenshot("3-two-sessions").await;
    laptop.click("#logout-others").await;
    wait_for_text(&laptop, "Logged out 1 other session.").await;
    wait_for_text(&laptop, "Your sessions (1)").await;
    laptop.screenshot("4-logged-out-elsewhere").await;

    // The phone's very next request finds its session gone.
    phone.open("/account").await;
    wait_for_text(&phone, "Please log in.").await;
    assert_eq!(phone.path().await, "/login");
    phone.screenshot("5-phone-sent-to-login").await;

    // Log out: the session ends and the browser keeps no session cookie.
    laptop.click("#logout").await;
    wait_for_text(&laptop, "You have logged out.").await;
    assert_eq!(laptop.path().await, "/login");
    laptop.screenshot("6-logged-out").await;
    let cookies = laptop_client.get_all_cookies().await.unwrap();
    assert!(
        cookies.iter().all(|cookie| cookie.name() != "sesame.sid"),
        "the session cookie is removed: {cookies:?}"
    );
    laptop.open("/account").await;
    wait_for_text(&laptop, "Please log in.").await;

    laptop_client.close().await.unwrap();
    phone_client.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&profiles);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("browser-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the scenario on the login example started with `store` and its environment.
fn in_browser(store: &str, store_env: &[(&str, String)]) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(chromium) = tool("CHROMIUM", "/usr/bin/chromium") else {
        return sesame_conformance::backend_missing("Chromium", &"/usr/bin/chromium not found")
            .unwrap_or(());
    };
    let Some(driver) = tool("CHROMEDRIVER", "/usr/bin/chromedriver") else {
        return sesame_conformance::backend_missing(
            "chromedriver",
            &"/usr/bin/chromedriver not found",
        )
        .unwrap_or(());
    };
    let (_driver, driver_port) = start_chromedriver(&driver);
    let port = free_port();
    let mut command = Command::new(example_binary("login"));
    command
        .env("PORT", port.to_string())
        .env("SESSION_SECRET", SECRET)
        .env("SESAME_STORE", store)
        .env("RUST_LOG", "warn")
        .envs(store_env.iter().map(|(k, v)| (k, v)));
    let server = Server::start("login", command, port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(scenario(
            store,
            format!("http://127.0.0.1:{port}"),
            &chromium,
            driver_port,
        ));
    }));
    if let Err(panic) = outcome {
        eprintln!("{}", server.log());
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn login_app_in_a_browser_on_memory() {
    in_browser("memory", &[]);
}

#[test]
fn login_app_in_a_browser_on_redis() {
    let Some(url) = server_url("redis") else {
        return;
    };
    let prefix = sesame_conformance::unique_name("browser:");
    in_browser("redis", &[("REDIS_URL", url), ("REDIS_PREFIX", prefix)]);
}

#[test]
fn login_app_in_a_browser_on_postgres() {
    let Some(url) = server_url("postgres") else {
        return;
    };
    let table = sesame_conformance::unique_name("browser_");
    in_browser("postgres", &[("DATABASE_URL", url), ("PG_TABLE", table)]);
}

#[test]
fn login_app_in_a_browser_on_mongodb() {
    let Some(url) = server_url("mongodb") else {
        return;
    };
    let collection = sesame_conformance::unique_name("browser_");
    in_browser(
        "mongodb",
        &[("MONGODB_URL", url), ("MONGODB_COLLECTION", collection)],
    );
}
