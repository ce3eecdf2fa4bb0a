//! The login demo: a small server-rendered app with accounts, on any store.
//!
//! ```text
//! cargo run --example login          # then open http://127.0.0.1:3000 and log in as ada / lovelace
//! SESAME_STORE=redis cargo run --example login
//! ```
//!
//! What it shows:
//! - login with hashed passwords (PBKDF2-HMAC-SHA256), a new session id at login (no fixation),
//!   "remember me" (a 30-day cookie, a browser-session cookie otherwise);
//! - flash messages after login, logout and refused requests, shown once;
//! - an account page listing the user's active sessions (browser, address, login and last-seen
//!   times) with "log out" per session and "log out everywhere else";
//! - logout that destroys the session and removes the cookie;
//! - idle (30 min) and absolute (12 h) timeouts, touch throttling, `SameSite=Lax` cookies (with
//!   `Secure` over https).
//!
//! Configuration from the environment, as the counter demo: `PORT` (3000), `SESSION_SECRET`,
//! `SESAME_STORE` (`memory`, `redis`, `mongodb`, `postgres`) and the store's variables.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Form, State};
use axum::http::HeaderMap;
use axum::http::header::USER_AGENT;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use axum_sesame::core::time::OffsetDateTime;
use axum_sesame::{
    CookieOptions, FLASH_KEY, Flash, Login, SameSite, Secure, Session, SessionError, SessionLayer,
};
use ring::{digest, pbkdf2, rand::SecureRandom};
use serde::Deserialize;
use sesame_examples::{
    init_tracing, listen_address, secrets_from_env, shutdown_signal, store_from_env,
};

/// The demo's accounts: user name → password hash. A real app keeps these in its database.
struct Users {
    hashes: HashMap<&'static str, PasswordHash>,
}

struct PasswordHash {
    salt: [u8; 16],
    hash: [u8; digest::SHA256_OUTPUT_LEN],
}

/// PBKDF2 iterations: OWASP's 2023 figure for PBKDF2-HMAC-SHA256 is 600 000; the demo uses fewer
/// so that it starts quickly in debug builds. Use a memory-hard hash (argon2) in production.
const PBKDF2_ITERATIONS: u32 = 100_000;

/// The demo users and their passwords, shown on the login page.
const DEMO_USERS: [(&str, &str); 2] = [("ada", "lovelace"), ("grace", "hopper")];

impl Users {
    fn demo() -> Result<Self, ring::error::Unspecified> {
        let random = ring::rand::SystemRandom::new();
        let mut hashes = HashMap::new();
        for (user, password) in DEMO_USERS {
            let mut salt = [0; 16];
            random.fill(&mut salt)?;
            let mut hash = [0; digest::SHA256_OUTPUT_LEN];
            pbkdf2::derive(
                pbkdf2::PBKDF2_HMAC_SHA256,
                iterations(),
                &salt,
                password.as_bytes(),
                &mut hash,
            );
            hashes.insert(user, PasswordHash { salt, hash });
        }
        Ok(Self { hashes })
    }

    /// Whether `password` is `user`'s. Unknown users cost a hash too, so timing does not tell
    /// which user names exist.
    fn check(&self, user: &str, password: &str) -> bool {
        const NOBODY: PasswordHash = PasswordHash {
            salt: [0; 16],
            hash: [0; digest::SHA256_OUTPUT_LEN],
        };
        let (known, stored) = match self.hashes.get(user) {
            Some(stored) => (true, stored),
            None => (false, &NOBODY),
        };
        let matches = pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations(),
            &stored.salt,
            password.as_bytes(),
            &stored.hash,
        )
        .is_ok();
        known && matches
    }
}

fn iterations() -> NonZeroU32 {
    NonZeroU32::new(PBKDF2_ITERATIONS).unwrap_or(NonZeroU32::MIN)
}

type AppState = Arc<Users>;

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    remember: Option<String>,
}

#[derive(Deserialize)]
struct RevokeForm {
    handle: String,
}

/// How long "remember me" keeps a session.
const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

async fn home(session: Session) -> Redirect {
    if session.user().is_some() {
        Redirect::to("/account")
    } else {
        Redirect::to("/login")
    }
}

async fn login_page(flash: Flash) -> Result<Response, SessionError> {
    let session = flash.session().clone();
    if session.user().is_some() {
        return Ok(Redirect::to("/account").into_response());
    }
    let messages = flash_html(&flash);
    // An anonymous session that held only flash messages (say, "you have logged out") has served
    // its purpose: end it, so a logged-out browser keeps no session cookie.
    let only_flash = session.keys().iter().all(|key| key == FLASH_KEY);
    if only_flash && !session.is_new() {
        session.destroy().await?;
    }
    let demo = DEMO_USERS
        .iter()
        .map(|(user, password)| format!("<code>{user}</code> / <code>{password}</code>"))
        .collect::<Vec<_>>()
        .join(" or ");
    Ok(Html(page(
        "Log in",
        &format!(
            r#"{messages}
<form method="post" action="/login" class="card">
  <label>User name <input name="username" id="username" autocomplete="username" required></label>
  <label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
  <label class="check"><input type="checkbox" name="remember" id="remember" value="on"> Remember me for 30 days</label>
  <button type="submit" id="login">Log in</button>
</form>
<p class="hint">Demo accounts: {demo}.</p>"#
        ),
    ))
    .into_response())
}

async fn login(
    State(users): State<AppState>,
    flash: Flash,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Redirect, SessionError> {
    if !users.check(&form.username, &form.password) {
        flash.push("error", "Wrong user name or password.")?;
        return Ok(Redirect::to("/login"));
    }
    let session = flash.session();
    let user_agent = headers
        .get(USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("unknown browser");
    // A new session id (the old one is destroyed), tagged with the user for the sessions list.
    session
        .log_in(
            Login::user(form.username.as_str())
                .user_agent(user_agent)
                .ip(address.ip().to_string()),
        )
        .await?;
    if form.remember.is_some() {
        session.set_max_age(Some(REMEMBER_FOR));
    }
    flash.push("info", format!("Welcome, {}!", form.username))?;
    Ok(Redirect::to("/account"))
}

async fn account(flash: Flash) -> Result<Html<String>, SessionError> {
    let session = flash.session();
    let user = session.user().unwrap_or_default();
    let messages = flash_html(&flash);
    let mut rows = String::new();
    let sessions = session.user_sessions().await?;
    for listed in &sessions {
        let action = if listed.current {
            "<em>this browser</em>".to_owned()
        } else {
            format!(
                r#"<form method="post" action="/revoke"><input type="hidden" name="handle" value="{}"><button class="small">Log out</button></form>"#,
                escape(&listed.handle)
            )
        };
        rows += &format!(
            "<tr class=\"session{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>\n",
            if listed.current { " current" } else { "" },
            escape(listed.user_agent.as_deref().unwrap_or("?")),
            escape(listed.ip.as_deref().unwrap_or("?")),
            when(listed.logged_in),
            when(listed.last_seen),
            listed
                .expires
                .map_or("when the browser closes".to_owned(), |at| when(Some(at))),
        );
    }
    let others = sessions.iter().filter(|listed| !listed.current).count();
    Ok(Html(page(
        "Your account",
        &format!(
            r#"{messages}
<p>Logged in as <strong id="user">{user}</strong>.</p>
<h2>Your sessions (<span id="session-count">{count}</span>)</h2>
<table>
<tr><th>Browser</th><th>Address</th><th>Logged in</th><th>Last seen</th><th>Expires</th><th></th></tr>
{rows}</table>
<div class="actions">
  <form method="post" action="/logout-others"><button id="logout-others" {disabled}>Log out everywhere else</button></form>
  <form method="post" action="/logout"><button id="logout">Log out</button></form>
</div>"#,
            user = escape(&user),
            count = sessions.len(),
            disabled = if others == 0 { "disabled" } else { "" },
        ),
    )))
}

async fn logout_others(flash: Flash) -> Result<Redirect, SessionError> {
    let ended = flash.session().revoke_others().await?;
    let plural = if ended == 1 { "" } else { "s" };
    flash.push("info", format!("Logged out {ended} other session{plural}."))?;
    Ok(Redirect::to("/account"))
}

async fn revoke(flash: Flash, Form(form): Form<RevokeForm>) -> Result<Redirect, SessionError> {
    if flash.session().revoke(&form.handle).await? {
        flash.push("info", "That session is logged out.")?;
    } else {
        flash.push("error", "That session had already ended.")?;
    }
    Ok(Redirect::to("/account"))
}

async fn logout(flash: Flash) -> Result<Redirect, SessionError> {
    // Destroy the session: the store forgets it and the response removes the cookie. The flash
    // below then rides on a new, empty session that the login page ends once it is shown.
    flash.session().destroy().await?;
    flash.push("info", "You have logged out.")?;
    Ok(Redirect::to("/login"))
}

/// Sends anonymous visitors of protected pages to the login page, with a message.
async fn require_login(
    flash: Flash,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Result<Response, SessionError> {
    if flash.session().user().is_none() {
        flash.push("error", "Please log in.")?;
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(next.run(request).await)
}

fn flash_html(flash: &Flash) -> String {
    let mut html = String::new();
    for (kind, messages) in flash.take_all() {
        for message in messages {
            html += &format!(
                "<p class=\"flash {kind}\">{}</p>\n",
                escape(&message),
                kind = escape(&kind)
            );
        }
    }
    html
}

fn when(at: Option<OffsetDateTime>) -> String {
    at.map_or("?".to_owned(), |at| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        )
    })
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · sesame</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 56rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.6rem; }} h1 span {{ color: #b5651d; }}
.card {{ display: grid; gap: .8rem; max-width: 22rem; padding: 1.2rem; border: 1px solid #ddd; border-radius: .5rem; }}
label {{ display: grid; gap: .2rem; }} label.check {{ display: flex; gap: .4rem; }}
input {{ padding: .4rem; }} button {{ padding: .45rem .9rem; cursor: pointer; }}
button.small {{ padding: .15rem .5rem; }}
.flash {{ padding: .6rem .9rem; border-radius: .4rem; }} .info {{ background: #e6f4ea; }} .error {{ background: #fce8e6; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #eee; font-size: .9rem; }}
tr.current {{ background: #fff8e1; }} .actions {{ display: flex; gap: 1rem; margin-top: 1.2rem; }}
.hint {{ color: #666; font-size: .9rem; }}
</style></head>
<body><h1><span>sesame</span> · {title}</h1>
{body}
</body></html>"#
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let users = Arc::new(Users::demo().map_err(|_| "the system random generator failed")?);
    let sessions = SessionLayer::builder()
        .secrets(secrets_from_env())
        .name("sesame.sid")
        .cookie(
            CookieOptions::default()
                .same_site(SameSite::Lax)
                .secure(Secure::Auto),
        )
        .idle_timeout(Duration::from_secs(30 * 60))
        .absolute_timeout(Duration::from_secs(12 * 3600))
        .touch_after(Duration::from_secs(60))
        .store(store_from_env().await?)
        .build()?;
    let protected = Router::new()
        .route("/account", get(account))
        .route("/logout-others", post(logout_others))
        .route("/revoke", post(revoke))
        .route_layer(middleware::from_fn(require_login));
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .merge(protected)
        .with_state(users)
        .layer(sessions);
    let listener = tokio::net::TcpListener::bind(listen_address()?).await?;
    tracing::info!("login demo listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    Ok(())
}
