//! The tower layer and service: attach a session to each request, and at the end decide, as
//! express-session does, whether to save, touch, and send the cookie.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HeaderName;
use http::uri::Scheme;
use http::{HeaderValue, Request, Response, StatusCode};
use sesame_core::{CookieOptions, DynStore, SessionId, SessionStore};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{Config, CookieSource, OnStoreError, SessionLayerBuilder, Unset, check_prefix};
use crate::cookies::{CookieAttributes, append_set_cookie, set_cookie};
use crate::session::{RequestSession, SessionHandle, State, lock_state};

/// Marks a request as received over https, for servers that terminate TLS themselves: insert it
/// into the request's extensions (e.g. from your TLS acceptor) so `Secure` cookies and
/// [`Secure::Auto`](crate::Secure::Auto) work without trusting a proxy header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Https;

/// How many fresh ids `create` tries before giving up on a run of collisions (only a broken custom
/// `genid` makes a second attempt likely).
const CREATE_ATTEMPTS: usize = 3;

/// The session middleware: wrap a `Router` in it and extract [`Session`](crate::Session) in
/// handlers.
///
/// ```
/// use axum::{Router, routing::get};
/// use axum_sesame::{Session, SessionLayer};
///
/// # fn app() -> Result<Router, axum_sesame::ConfigError> {
/// let app = Router::new()
///     .route("/", get(|session: Session| async move {
///         let views: u64 = session.get("views").ok().flatten().unwrap_or(0) + 1;
///         session.insert("views", views).ok();
///         format!("views: {views}")
///     }))
///     .layer(SessionLayer::builder().secret("keyboard cat").build()?);
/// # Ok(app)
/// # }
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    config: Arc<Config>,
}

impl SessionLayer {
    /// Starts configuring a layer. A secret is required; every other option has a default.
    pub fn builder() -> SessionLayerBuilder {
        SessionLayerBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The store sessions are kept in, for administrative use (listing sessions, clearing them).
    pub fn store(&self) -> &DynStore {
        &self.config.store.inner
    }

    /// The sessions of any user, outside a request (an admin page, "log out everywhere" when a
    /// password changes), through this layer's store, timeout and id hashing.
    pub fn users(&self) -> crate::UserSessions {
        crate::UserSessions::new(Arc::clone(&self.config))
    }
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<I> Layer<I> for SessionLayer {
    type Service = SessionService<I>;

    fn layer(&self, inner: I) -> Self::Service {
        SessionService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct SessionService<I> {
    inner: I,
    config: Arc<Config>,
}

impl<I> SessionService<I> {
    /// The inner service.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: std::fmt::Debug> std::fmt::Debug for SessionService<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`SessionService`]: the inner service's response, then, only if the handler
    /// used the session, the end-of-request store write and cookie. A request whose handler never
    /// touched the session costs no allocation here.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        inner: F,
        session: Option<Arc<RequestSession>>,
        finishing: Option<Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>>,
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<&'static str> + Send + 'static,
    E: Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(finishing) = this.finishing.as_mut() {
            return finishing.as_mut().poll(cx);
        }
        let response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(response)) => response,
        };
        let Some(session) = this.session.take() else {
            return Poll::Ready(Ok(response));
        };
        if session.used_state().is_none() {
            // The handler never touched the session: no store I/O, no cookie.
            return Poll::Ready(Ok(response));
        }
        if session.config.store.answers_at_once() {
            // The memory store answers every call on its first poll: finish right here, with no
            // boxed future to allocate.
            let mut response = response;
            let finished = std::pin::pin!(finish_response(&session, &mut response))
                .poll(cx)
                .is_ready();
            if finished {
                return Poll::Ready(Ok(response));
            }
            // Unreachable with the memory store; the future borrows this frame and cannot be
            // kept, so the request fails rather than hangs or pretends the session was saved.
            tracing::error!("the in-process session store did not answer at once");
            return Poll::Ready(Ok(failure_response(&sesame_core::Error::Timeout {
                store: session.config.store.name(),
                timeout: std::time::Duration::ZERO,
            })));
        }
        let mut finishing: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>> =
            Box::pin(async move {
                let mut response = response;
                finish_response(&session, &mut response).await;
                Ok(response)
            });
        let polled = finishing.as_mut().poll(cx);
        if polled.is_pending() {
            *this.finishing = Some(finishing);
        }
        polled
    }
}

impl<F, B, E> std::fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("finishing", &self.finishing.is_some())
            .finish_non_exhaustive()
    }
}

/// The end of a request whose handler used the session: save or touch, set the cookie, and turn
/// a failure into the configured outcome.
async fn finish_response<B: From<&'static str>>(
    session: &RequestSession,
    response: &mut Response<B>,
) {
    if let Err(error) = finish(session, response).await {
        let carry_on = error.is_unavailable()
            && session.config.on_store_error == OnStoreError::ContinueWithoutSession;
        if carry_on {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "the session could not be saved; responding without it"
            );
        } else {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "the session could not be saved; answering with an error instead"
            );
            *response = failure_response(&error);
        }
    }
}

impl<I, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<I>
where
    I: Service<Request<ReqBody>, Response = Response<ResBody>>,
    I::Future: Send + 'static,
    I::Error: Send + 'static,
    ResBody: From<&'static str> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = I::Error;
    type Future = ResponseFuture<I::Future, ResBody, I::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let cookie_options = match &self.config.cookie {
            CookieSource::Fixed(options) => Arc::clone(options),
            CookieSource::PerRequest(options) => {
                // Per-request options see the request's parts: take the request apart and put
                // it back, only when such options are configured.
                let (parts, body) = request.into_parts();
                let computed = Arc::new(options(&parts));
                request = Request::from_parts(parts, body);
                computed
            }
        };
        let session = attach(&self.config, &mut request, cookie_options);
        ResponseFuture {
            inner: self.inner.call(request),
            session: Some(session),
            finishing: None,
        }
    }
}

/// Creates the request's (not yet loaded) session and puts its handle in the extensions. The
/// request is borrowed, not moved: it is large, and every move is a copy.
fn attach<B>(
    config: &Arc<Config>,
    request: &mut Request<B>,
    cookie_options: Arc<CookieOptions>,
) -> Arc<RequestSession> {
    let https = is_https(request, config.proxy);
    let session = Arc::new(RequestSession {
        config: Arc::clone(config),
        cookie_options,
        https,
        state: std::sync::OnceLock::new(),
    });
    request
        .extensions_mut()
        .insert(SessionHandle(Arc::clone(&session)));
    session
}

fn is_https<B>(request: &Request<B>, trust_proxy: bool) -> bool {
    if request.uri().scheme() == Some(&Scheme::HTTPS)
        || request.extensions().get::<Https>().is_some()
    {
        return true;
    }
    if !trust_proxy {
        return false;
    }
    // Like express's `req.protocol` behind a trusted proxy: the first value of the header.
    static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    request
        .headers()
        .get(&X_FORWARDED_PROTO)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// What to do with the store at the end of a request.
enum StoreAction {
    Nothing,
    /// The record is copied from the state when the write is made.
    Create(SessionId),
    Save(SessionId),
    /// The patch is built only when the store cannot take the record whole (see `settle`).
    Patch(SessionId),
    /// The record to send is built only for a store that needs more than the cookie state.
    Touch(SessionId),
    Destroy(SessionId),
}

/// What to do with the cookie at the end of a request.
enum CookieAction {
    Nothing,
    Set,
    Remove,
}

/// express-session's end-of-request decisions (its `shouldSave`, `shouldTouch`, `shouldSetCookie`
/// and `shouldDestroy`), taken on a used session.
fn decide(
    config: &Config,
    state: &mut State,
    now: sesame_core::time::OffsetDateTime,
) -> (StoreAction, CookieAction) {
    if state.ephemeral {
        tracing::debug!("session is ephemeral (the store failed): not saved, no cookie");
        return (StoreAction::Nothing, CookieAction::Nothing);
    }
    if state.detached {
        let action = match (&config.unset, &state.stored_id) {
            (Unset::Destroy, Some(id)) => StoreAction::Destroy(id.clone()),
            _ => StoreAction::Nothing,
        };
        tracing::debug!(unset = ?config.unset, "session detached from the request");
        return (action, CookieAction::Nothing);
    }
    if state.destroyed {
        let cookie = if state.client_sent_cookie || state.stale_client_cookie {
            CookieAction::Remove
        } else {
            CookieAction::Nothing
        };
        return (StoreAction::Nothing, cookie);
    }

    state.prepare_write(config, now);
    let persisted = state.is_persisted();
    let save = if persisted {
        state.unsaved || config.resave
    } else {
        state.unsaved || config.save_uninitialized
    };
    let mut touch = !save && persisted && !state.is_new;
    let throttled = touch && !state.cookie_changed && touched_recently(config, state, now);
    if throttled {
        touch = false;
        tracing::debug!("session touched recently; touch skipped (touch_after)");
    } else if !state.cookie_changed {
        // express-session restarts the cookie's max age on every request that has a session.
        state.record.cookie_mut().reset_expiry(now);
    }
    let set_cookie = if state.is_new {
        config.save_uninitialized || state.modified || state.cookie_changed || persisted
    } else {
        config.rolling
            || state.cookie_changed
            || (state.modified && state.record.cookie().expires.is_some())
    };
    tracing::debug!(
        new = state.is_new,
        modified = state.modified,
        save,
        touch,
        set_cookie,
        "session decision"
    );
    let store = if save && persisted && config.store.capabilities().patch {
        // Only this request's changes: keys other requests wrote meanwhile survive, and a session
        // destroyed meanwhile stays destroyed.
        StoreAction::Patch(state.id(config))
    } else if save && persisted {
        StoreAction::Save(state.id(config))
    } else if save {
        StoreAction::Create(state.id(config))
    } else if touch {
        // Touch moves the expiry only: the cookie state is all the store needs.
        StoreAction::Touch(state.id(config))
    } else {
        StoreAction::Nothing
    };
    let cookie = if set_cookie {
        CookieAction::Set
    } else if state.stale_client_cookie {
        CookieAction::Remove
    } else {
        CookieAction::Nothing
    };
    (store, cookie)
}

/// Whether the stored expiry was moved less than `touch_after` ago: it was set to "then + max
/// age", so "then" is the expiry minus the max age.
fn touched_recently(
    config: &Config,
    state: &State,
    now: sesame_core::time::OffsetDateTime,
) -> bool {
    let Some(interval) = config.touch_after else {
        return false;
    };
    let cookie = state.record.cookie();
    let (Some(expires), Some(max_age)) = (cookie.expires, cookie.original_max_age) else {
        // A browser-session cookie: the store's own TTL, renewed by every touch. Without a max
        // age there is no way to tell when the last touch was, so touch.
        return false;
    };
    let max_age =
        sesame_core::time::Duration::milliseconds(i64::try_from(max_age).unwrap_or(i64::MAX));
    // Out of range (a forged or absurd record): not "recent", so the session is touched.
    expires
        .checked_sub(max_age)
        .is_some_and(|last_touch| now - last_touch < interval)
}

/// Runs the end-of-request decisions for a session a handler used: store write first, then the
/// cookie, all before the response leaves.
async fn finish<B>(
    session: &RequestSession,
    response: &mut Response<B>,
) -> Result<(), sesame_core::Error> {
    let Some(state) = session.used_state() else {
        // The handler never touched the session: no store I/O, no cookie.
        return Ok(());
    };
    let header = match settle(session, state)? {
        Settled::Done(header) => header,
        Settled::Await {
            action,
            cookie,
            now,
        } => {
            if !store_action(session, state, action, now).await? {
                destroyed_meanwhile();
                return Ok(());
            }
            cookie_header_for(session, cookie, &mut lock_state(state))
        }
    };
    if let Some(header) = header {
        append_set_cookie(response.headers_mut(), header);
    }
    Ok(())
}

/// Where the decision left the request.
enum Settled {
    /// All done under one lock of the state: the cookie header to send, if any.
    Done(Option<HeaderValue>),
    /// A store call to await (with the state unlocked), then the cookie.
    Await {
        action: StoreAction,
        cookie: CookieAction,
        now: sesame_core::time::OffsetDateTime,
    },
}

/// Takes the decision, and with the memory store carries it out, under one lock of the state:
/// what that store does in place (a touch, or the whole record written over the one the request
/// loaded) answers at once.
fn settle(
    session: &RequestSession,
    state: &std::sync::Mutex<State>,
) -> Result<Settled, sesame_core::Error> {
    let config = &session.config;
    let mut locked = lock_state(state);
    if locked.is_unused_new_session(config) {
        // Nothing to store and no cookie to send (a forged cookie lands here): no clock read.
        return Ok(Settled::Done(None));
    }
    // One clock read for the decision and the store call that carries it out.
    let now = sesame_core::now();
    let (action, cookie) = decide(config, &mut locked, now);

    let writes = matches!(
        action,
        StoreAction::Create(..) | StoreAction::Save(..) | StoreAction::Patch(..)
    );
    if writes && config.max_record_size.is_some() {
        // The whole record as this request sees it: what the store will hold after the write.
        config.check_size(&locked.record)?;
    }
    // What is left to await once the memory store has done what it does in place.
    let remaining = match action {
        StoreAction::Nothing => None,
        StoreAction::Patch(id) => {
            let replaced = locked.loaded.as_ref().and_then(|loaded| {
                config
                    .store
                    .replace_in_place(&id, loaded, &locked.record, now)
            });
            match replaced {
                Some(true) => {
                    locked.mark_saved_as(&id);
                    None
                }
                Some(false) => {
                    destroyed_meanwhile();
                    return Ok(Settled::Done(None));
                }
                None => Some(StoreAction::Patch(id)),
            }
        }
        StoreAction::Create(id) => match config.store.create_in_place(&id, &locked.record, now) {
            Some(Ok(())) => {
                locked.mark_saved_as(&id);
                None
            }
            Some(Err(error)) if !matches!(error, sesame_core::Error::AlreadyExists { .. }) => {
                return Err(error);
            }
            // Another store, or an id collision: the awaited path retries with new ids.
            _ => Some(StoreAction::Create(id)),
        },
        StoreAction::Touch(id)
            if config
                .store
                .touch_in_place(&id, locked.record.cookie(), now) =>
        {
            None
        }
        action => Some(action),
    };
    if let Some(action) = remaining {
        return Ok(Settled::Await {
            action,
            cookie,
            now,
        });
    }
    Ok(Settled::Done(cookie_header_for(
        session,
        cookie,
        &mut locked,
    )))
}

/// The `Set-Cookie` header `cookie` calls for.
fn cookie_header_for(
    session: &RequestSession,
    cookie: CookieAction,
    state: &mut State,
) -> Option<HeaderValue> {
    let options = &*session.cookie_options;
    match cookie {
        CookieAction::Nothing => None,
        CookieAction::Set => cookie_header(session, options, state, false),
        CookieAction::Remove => cookie_header(session, options, state, true),
    }
}

/// Another request destroyed the session while this one ran: destroy wins, so the changes are
/// dropped and no cookie for the dead id is sent.
fn destroyed_meanwhile() {
    tracing::debug!("session destroyed by a concurrent request; changes dropped");
}

/// Carries out a store action that was not done in place; `false` when the session turned out to
/// be destroyed meanwhile.
async fn store_action(
    session: &RequestSession,
    state: &std::sync::Mutex<State>,
    action: StoreAction,
    now: sesame_core::time::OffsetDateTime,
) -> Result<bool, sesame_core::Error> {
    let config = &session.config;
    match action {
        StoreAction::Nothing => {}
        StoreAction::Patch(id) => {
            let patch = lock_state(state).patch();
            if !config.store.patch_at(&id, &patch, now).await? {
                return Ok(false);
            }
            lock_state(state).mark_saved_as(&id);
        }
        StoreAction::Save(id) => {
            let record = lock_state(state).record.clone();
            config.store.save(&id, &record).await?;
            lock_state(state).mark_saved_as(&id);
        }
        StoreAction::Create(mut id) => {
            let record = lock_state(state).record.clone();
            let mut attempt = 1;
            loop {
                match config.store.create_at(&id, &record, now).await {
                    Ok(()) => break,
                    Err(sesame_core::Error::AlreadyExists { .. }) if attempt < CREATE_ATTEMPTS => {
                        // The cookie has not been sent yet, so the session can still change id.
                        tracing::warn!("session id collision in the store; retrying with a new id");
                        attempt += 1;
                        id = config.generate_id();
                        lock_state(state).set_id(id.clone());
                    }
                    Err(error) => return Err(error),
                }
            }
            lock_state(state).mark_saved_as(&id);
        }
        StoreAction::Touch(id) => {
            let record = lock_state(state).touch_record();
            // Boxed, as the other stores' calls (see `GuardedStore::load_at`).
            Box::pin(config.store.touch(&id, &record)).await?;
        }
        StoreAction::Destroy(id) => config.store.destroy(&id).await?,
    }
    Ok(true)
}

/// The `Set-Cookie` header for the session (or for removing the client's cookie), or `None` when
/// it must not be sent: a `Secure` cookie over plain http would be dropped by the browser, so,
/// like express-session, sesame does not send it.
fn cookie_header(
    session: &RequestSession,
    options: &CookieOptions,
    state: &mut State,
    remove: bool,
) -> Option<HeaderValue> {
    if let Err(error) = check_prefix(&session.config.name, options) {
        tracing::error!(
            error = &error as &dyn std::error::Error,
            "the cookie options computed for this request break the cookie name's prefix rules; \
             not sending the cookie"
        );
        return None;
    }
    let secure = options.is_secure(session.https);
    if secure && !session.https {
        tracing::debug!("not sending a Secure session cookie over plain http");
        return None;
    }
    let attributes = CookieAttributes {
        options,
        expires: if remove {
            Some(sesame_core::time::OffsetDateTime::UNIX_EPOCH)
        } else {
            state.record.cookie().expires
        },
        secure,
        same_site: options.resolve_same_site(session.https),
    };
    let id;
    let value = if remove {
        std::borrow::Cow::Borrowed("")
    } else {
        id = state.id(&session.config);
        state.cookie_value_for(&session.config.keys, &id)
    };
    let header = set_cookie(&session.config.name, &value, remove, &attributes);
    if header.is_none() {
        tracing::error!("the session cookie's options do not form a valid Set-Cookie header");
    } else {
        tracing::debug!(remove, "sending the session cookie");
    }
    header
}

fn failure_response<B: From<&'static str>>(error: &sesame_core::Error) -> Response<B> {
    let (status, body) = if error.is_unavailable() {
        (StatusCode::SERVICE_UNAVAILABLE, "Session store unavailable")
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Session could not be saved",
        )
    };
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
