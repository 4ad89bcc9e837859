//! The operator web console at `/console/`: server-rendered pages
//! (`maud`), a small embedded script and stylesheet, and a server-sent
//! event stream that keeps the fleet table live. It is mounted on the API
//! listener inside the API's authentication layer: a browser logs in on
//! a form with the same htpasswd users and holds a session cookie
//! (`auth::session`); basic credentials work too, as on the API.
//!
//! A layer of its own: it reads through the store and acts by sending
//! requests through the REST API's router; no domain module imports it.

mod actions;
mod fleet;
mod logs;
mod pages;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_lite::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::api::AppState;
use crate::auth::{session, BasicAuth};
use crate::store::StoreError;
use fleet::{Filter, FleetRow};

/// How often a live stream re-reads the fleet.
const TICK: Duration = Duration::from_secs(1);
/// A comment line this often on a quiet stream: it keeps proxies from
/// closing it, and it is the write that finds a client gone, which
/// ends the stream and frees its slot.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Live streams open at once, over all clients: each holds a connection
/// and filters and encodes the fleet every tick, so they are bounded;
/// one more is refused with 503.
const MAX_STREAMS: usize = 64;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

#[derive(Clone)]
struct ConsoleState {
    app: AppState,
    /// The REST API's router, which actions are sent through.
    api: Router,
    streams: Arc<Semaphore>,
    listings: Arc<SharedListings>,
    /// The htpasswd users the login form checks; `None` under noauth.
    auth: Option<Arc<BasicAuth>>,
}

#[derive(Debug, thiserror::Error)]
enum ConsoleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("too many live streams are open; try again later")]
    Busy,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
            ConsoleError::Store(StoreError::Unavailable(_)) | ConsoleError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ConsoleError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "console request failed");
        }
        let page = pages::error(status.as_u16(), &self.to_string());
        (status, Html(page.into_string())).into_response()
    }
}

type ConsoleResult<T> = Result<T, ConsoleError>;

pub fn router(app: AppState, auth: Option<Arc<BasicAuth>>) -> Router {
    let state = ConsoleState {
        api: crate::api::router(app.clone()),
        app,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        listings: Arc::default(),
        auth,
    };
    Router::new()
        .route(
            "/console",
            get(|| async { axum::response::Redirect::permanent("/console/") }),
        )
        .route("/console/", get(fleet_page))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/events", get(events))
        .route("/console/nodes/{ident}", get(node_page))
        .route("/console/nodes/{ident}/actions", post(node_action))
        .route("/console/nodes/{ident}/logs/{file}", get(download_log))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Defence in depth behind the template engine's escaping: only the
/// console's own script and stylesheet run, no page frames it, and no
/// URL leaks in a Referer.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    resp
}

async fn login_page(State(state): State<ConsoleState>) -> Response {
    if state.auth.is_none() {
        return axum::response::Redirect::to("/console/").into_response();
    }
    Html(pages::login(None).into_string()).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

/// The login form's post: the same htpasswd check as the API's basic
/// credentials, then a session cookie. A wrong password gets the form
/// again with a 401, and a warning in the log naming the user only.
async fn login(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if let Err(status) = actions::same_origin(&headers) {
        let page = pages::error(status.as_u16(), "A login from another site is refused.");
        return (status, Html(page.into_string())).into_response();
    }
    let Some(auth) = &state.auth else {
        return axum::response::Redirect::to("/console/").into_response();
    };
    let user: String = form.username.chars().take(256).collect();
    if !auth.check(&user, form.password.into_bytes()).await {
        tracing::warn!(user = %user.chars().take(64).collect::<String>(), "console login refused: incorrect username or password");
        let page = pages::login(Some("Incorrect username or password."));
        return (StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response();
    }
    let token = auth.sessions.open(&user);
    tracing::info!(user = %user.chars().take(64).collect::<String>(), "console login");
    let cookie = session::set_cookie(&token, state.secure_cookies());
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

async fn logout(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Err(status) = actions::same_origin(&headers) {
        return status.into_response();
    }
    if let (Some(auth), Some(token)) = (&state.auth, session::token(&headers)) {
        auth.sessions.close(&token);
    }
    let cookie = session::clear_cookie(state.secure_cookies());
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

impl ConsoleState {
    /// Cookies marked Secure only where the API is served over TLS: on
    /// plain HTTP a browser would drop them.
    fn secure_cookies(&self) -> bool {
        self.app.config.tls_cert.is_some()
    }
}

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
}

/// Fleet listings shared by every page and stream for a short while, so
/// that N open consoles cost one database listing a second, not N. Keyed
/// by the state filter (the search runs on the shared rows); a state
/// that is not a known one is listed for its caller alone, so the map
/// cannot grow without bound.
#[derive(Default)]
struct SharedListings {
    entries: tokio::sync::Mutex<HashMap<Option<String>, Listing>>,
}

/// One listing and when it was read.
type Listing = (Instant, Arc<Vec<FleetRow>>);

/// How long a listing is reused: under the streams' tick, so each tick
/// sees a fresh one.
const LISTING_TTL: Duration = Duration::from_millis(900);

impl SharedListings {
    async fn rows(&self, app: &AppState, filter: &Filter) -> ConsoleResult<Vec<FleetRow>> {
        let key = filter.state_key();
        let shareable = key.as_deref().is_none_or(|s| pages::STATES.contains(&s));
        let listed = if shareable {
            // Held across the listing: callers that arrive meanwhile wait
            // for it and reuse it instead of listing too.
            let mut entries = self.entries.lock().await;
            match entries.get(&key) {
                Some((at, rows)) if at.elapsed() < LISTING_TTL => rows.clone(),
                _ => {
                    let rows = Arc::new(list(app, filter).await?);
                    entries.insert(key, (Instant::now(), rows.clone()));
                    rows
                }
            }
        } else {
            Arc::new(list(app, filter).await?)
        };
        Ok(listed
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect())
    }
}

async fn list(app: &AppState, filter: &Filter) -> ConsoleResult<Vec<FleetRow>> {
    let nodes = app.store.list_nodes(&filter.query()).await?;
    Ok(nodes.iter().map(FleetRow::of).collect())
}

async fn fleet_page(
    State(state): State<ConsoleState>,
    Query(filter): Query<Filter>,
) -> ConsoleResult<Html<String>> {
    let rows = state.listings.rows(&state.app, &filter).await?;
    let counts = state.app.store.node_state_counts().await?;
    Ok(Html(pages::fleet(&rows, &filter, &counts).into_string()))
}

/// `?done=<action>` after an action the API accepted.
#[derive(Debug, Default, serde::Deserialize)]
struct NodeQueryParams {
    #[serde(default)]
    done: Option<String>,
}

async fn node_page(
    State(state): State<ConsoleState>,
    Path(ident): Path<String>,
    Query(params): Query<NodeQueryParams>,
) -> ConsoleResult<Html<String>> {
    let flash = params
        .done
        .as_deref()
        .and_then(actions::Action::parse)
        .map(|a| pages::Flash::Done(a.as_str().to_string()));
    render_node(&state, &ident, flash).await.map(Html)
}

async fn render_node(
    state: &ConsoleState,
    ident: &str,
    flash: Option<pages::Flash>,
) -> ConsoleResult<String> {
    let store = &state.app.store;
    let node = store.get_node(ident).await?;
    // Masked exactly as `GET /v1/nodes/{id}` masks it.
    let masked = crate::api::views::node_full(&node, &state.app.config.public_url());
    let ports = store.list_ports(Some(&node.uuid)).await?;
    let history = store.history(&node.uuid).await?;
    let inventory = store.get_inventory(&node.uuid).await?;
    let logs = logs::list(&state.app.config.deploy_logs_dir(), &node.uuid).await;
    let page = pages::node(&pages::NodePage {
        logs: &logs,
        node: &node,
        masked: &masked,
        ports: &ports,
        history: &history,
        inventory: inventory.as_ref(),
        flash,
    });
    Ok(page.into_string())
}

/// One of the node's ramdisk log archives, streamed from disk.
async fn download_log(
    State(state): State<ConsoleState>,
    Path((ident, file)): Path<(String, String)>,
    req: axum::extract::Request,
) -> ConsoleResult<Response> {
    let node = state.app.store.get_node(&ident).await?;
    let dir = state.app.config.deploy_logs_dir();
    let Some(path) = logs::find(&dir, &node.uuid, &file).await else {
        return Err(ConsoleError::Store(StoreError::NotFound(format!(
            "No ramdisk log {file} for node {}.",
            node.uuid
        ))));
    };
    let mut resp = tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
        .map_err(|e| ConsoleError::Store(StoreError::Db(e.to_string())))?
        .map(axum::body::Body::new);
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// A form post from the node page: confirmed if destructive, then sent
/// through the REST API; accepted → back to the node (303), refused →
/// the node page with the API's error and status.
async fn node_action(
    State(state): State<ConsoleState>,
    Path(ident): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ConsoleResult<Response> {
    let form = actions::ActionForm::parse(&body);
    if let Err(status) = actions::same_origin(&headers) {
        let page = pages::error(status.as_u16(), "Cross-site request refused.");
        return Ok((status, Html(page.into_string())).into_response());
    }
    let node = state.app.store.get_node(&ident).await?;
    let Some(action) = actions::Action::parse(&form.action) else {
        let flash = pages::Flash::Failed(format!("Unknown action {:?}.", form.action));
        let page = render_node(&state, &node.uuid, Some(flash)).await?;
        return Ok((StatusCode::BAD_REQUEST, Html(page)).into_response());
    };
    if action.destructive() && form.confirm != "yes" {
        return Ok(Html(pages::confirm(&node, action, &form).into_string()).into_response());
    }
    match actions::perform(&state.api, &node.uuid, action, &form).await {
        Ok(()) => Ok(axum::response::Redirect::to(&format!(
            "/console/nodes/{}?done={}",
            node.uuid,
            action.as_str()
        ))
        .into_response()),
        Err(refused) => {
            let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_REQUEST);
            let flash = pages::Flash::Failed(refused.message);
            let page = render_node(&state, &node.uuid, Some(flash)).await?;
            Ok((status, Html(page)).into_response())
        }
    }
}

/// The live stream's query: the fleet's filters, or one node.
#[derive(Debug, Default, serde::Deserialize)]
struct StreamQuery {
    #[serde(flatten)]
    filter: Filter,
    #[serde(default)]
    uuid: Option<String>,
}

/// One stream's state between ticks. The permit is released when the
/// client goes away: axum drops the stream with the connection.
struct Ticker {
    app: AppState,
    listings: Arc<SharedListings>,
    query: StreamQuery,
    last: Option<String>,
    first: bool,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Ticker {
    async fn rows(&self) -> ConsoleResult<Vec<FleetRow>> {
        match &self.query.uuid {
            Some(uuid) => Ok(vec![FleetRow::of(&self.app.store.get_node(uuid).await?)]),
            None => self.listings.rows(&self.app, &self.query.filter).await,
        }
    }

    /// The next `fleet` event: the rows when they changed since the last
    /// one sent, else nothing (the keep-alive comment holds the line).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if self.done {
            return None;
        }
        loop {
            if !self.first {
                tokio::time::sleep(TICK).await;
            }
            self.first = false;
            let event = match self.rows().await {
                Ok(rows) => {
                    let json = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into());
                    if self.last.as_deref() == Some(json.as_str()) {
                        continue;
                    }
                    self.last = Some(json.clone());
                    Event::default().event("fleet").data(json)
                }
                // A node deleted under its page: say so, then end.
                Err(ConsoleError::Store(StoreError::NotFound(m))) => {
                    self.done = true;
                    Event::default().event("gone").data(m)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "console stream: listing failed");
                    continue;
                }
            };
            return Some((Ok(event), self));
        }
    }
}

async fn events(
    State(state): State<ConsoleState>,
    Query(query): Query<StreamQuery>,
) -> ConsoleResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let permit = state
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ConsoleError::Busy)?;
    let ticker = Ticker {
        app: state.app,
        listings: state.listings,
        query,
        last: None,
        first: true,
        done: false,
        _permit: permit,
    };
    let stream = futures_lite::stream::unfold(Some(ticker), |t| async move {
        let (ev, t) = t?.next().await?;
        Some((ev, Some(t)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
