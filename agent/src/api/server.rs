//! Routes, token check and fault bodies of the agent API, and the listener
//! (plain HTTP or auto-TLS).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferrite_protocol::agent_api::{
    AgentRoot, AgentStatus, AgentV1, AgentVersionDoc, MediaType, AGENT_API_DESCRIPTION,
    AGENT_API_NAME, AGENT_MEDIA_TYPE,
};
use ferrite_protocol::node::Link;
use ferrite_protocol::{CommandList, FaultBody, AGENT_VERSION};
use serde_json::Value;
use tracing::{info, warn};

use super::registry::Registry;
use super::runner::CommandRunner;
use crate::errors::RestError;
use crate::state::AgentContext;

#[derive(Clone)]
pub struct ApiState {
    pub ctx: Arc<AgentContext>,
    pub registry: Arc<Registry>,
    pub runner: Arc<CommandRunner>,
    /// `http` or `https`, for the links in the root documents.
    pub scheme: &'static str,
}

/// An HTTP error with a WSME-style `{faultcode, faultstring}` body.
struct Fault {
    status: StatusCode,
    faultstring: String,
}

impl Fault {
    fn new(status: StatusCode, faultstring: impl Into<String>) -> Self {
        Self {
            status,
            faultstring: faultstring.into(),
        }
    }

    fn bad_request(description: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("400 Bad Request: {description}"),
        )
    }
}

impl From<RestError> for Fault {
    fn from(e: RestError) -> Self {
        Self::new(
            StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        )
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let body = FaultBody::for_status(self.status.as_u16(), self.faultstring);
        (self.status, Json(body)).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v1", get(v1))
        .route("/v1/", get(v1))
        .route("/v1/status", get(status))
        .route("/status", get(status))
        .route("/v1/commands", get(list_commands).post(run_command))
        .route("/v1/commands/", get(list_commands).post(run_command))
        .route("/commands", get(list_commands).post(run_command))
        .route("/commands/", get(list_commands).post(run_command))
        .route("/v1/commands/{id}", get(get_command))
        .route("/commands/{id}", get(get_command))
        .fallback(not_found)
        .with_state(state)
}

fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", state.scheme)
}

async fn root(State(state): State<ApiState>, headers: HeaderMap) -> Json<AgentRoot> {
    let base = base_url(&state, &headers);
    let doc = AgentVersionDoc {
        id: "v1".into(),
        links: vec![
            Link::new(format!("{base}/v1"), "self"),
            Link {
                href: "https://docs.openstack.org/ironic-python-agent/".into(),
                rel: "describedby".into(),
                kind: Some("text/html".into()),
            },
        ],
    };
    Json(AgentRoot {
        name: AGENT_API_NAME.into(),
        description: AGENT_API_DESCRIPTION.into(),
        versions: vec![doc.clone()],
        default_version: doc,
    })
}

async fn v1(State(state): State<ApiState>, headers: HeaderMap) -> Json<AgentV1> {
    let base = base_url(&state, &headers);
    let pair = |path: &str| {
        vec![
            Link::new(format!("{base}/v1/{path}"), "self"),
            Link::new(format!("{base}/{path}"), "bookmark"),
        ]
    };
    Json(AgentV1 {
        id: "v1".into(),
        links: vec![Link::new(format!("{base}/v1/"), "self")],
        commands: pair("commands"),
        status: pair("status"),
        media_types: vec![MediaType {
            base: "application/json".into(),
            kind: AGENT_MEDIA_TYPE.into(),
        }],
    })
}

async fn status(State(state): State<ApiState>) -> Json<AgentStatus> {
    Json(AgentStatus {
        started_at: state.ctx.started_at,
        version: AGENT_VERSION.into(),
    })
}

/// The token travels only as the `agent_token` query parameter.
fn require_token(state: &ApiState, params: &HashMap<String, String>) -> Result<(), Fault> {
    if state
        .ctx
        .token_matches(params.get("agent_token").map(String::as_str))
    {
        Ok(())
    } else {
        Err(Fault::new(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: Token invalid.",
        ))
    }
}

fn wants_wait(params: &HashMap<String, String>) -> bool {
    params
        .get("wait")
        .is_some_and(|w| w.eq_ignore_ascii_case("true"))
}

async fn list_commands(
    State(state): State<ApiState>,
    Query(params): Params,
) -> Result<Json<CommandList>, Fault> {
    require_token(&state, &params)?;
    Ok(Json(CommandList {
        commands: state.runner.list(),
    }))
}

async fn get_command(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, Fault> {
    require_token(&state, &params)?;
    let record = state
        .runner
        .get(&id)
        .ok_or_else(|| RestError::not_found("Command Result", &id))?;
    if wants_wait(&params) {
        record.wait().await;
    }
    Ok(Json(record.snapshot()).into_response())
}

async fn run_command(
    State(state): State<ApiState>,
    Query(params): Params,
    body: axum::body::Body,
) -> Result<Response, Fault> {
    require_token(&state, &params)?;
    let body = super::body::read_capped(body).await.map_err(|e| match e {
        super::body::BodyError::TooLarge => Fault::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "413 Request Entity Too Large: the command body exceeds {} bytes",
                super::body::MAX_BODY
            ),
        ),
        super::body::BodyError::Read(e) => {
            Fault::bad_request(format!("reading the request body: {e}"))
        }
    })?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| Fault::bad_request(format!("Failed to decode JSON object: {e}")))?;
    let (Some(Value::String(name)), Some(Value::Object(cmd_params))) =
        (body.get("name"), body.get("params"))
    else {
        return Err(Fault::bad_request("Missing or invalid name or params"));
    };
    let record = state
        .runner
        .start(&state.ctx, &state.registry, name, cmd_params.clone())?;
    let is_sync = state
        .registry
        .resolve(name)
        .map(|r| r.spec.mode == super::registry::Mode::Sync)
        .unwrap_or(false);
    if is_sync || wants_wait(&params) {
        record.wait().await;
    }
    Ok(Json(record.snapshot()).into_response())
}

async fn not_found() -> Fault {
    Fault::new(
        StatusCode::NOT_FOUND,
        "404 Not Found: The requested URL was not found on the server.",
    )
}

/// Bind `host:port`; IPA's default `::` falls back to `0.0.0.0` on hosts
/// without IPv6.
pub fn bind(host: std::net::IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    let listener = match TcpListener::bind(SocketAddr::new(host, port)) {
        Ok(l) => l,
        Err(e) if host.is_unspecified() && host.is_ipv6() => {
            warn!(error = %e, "cannot listen on [::], falling back to 0.0.0.0");
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
                .with_context(|| format!("listening on 0.0.0.0:{port}"))?
        }
        Err(e) => return Err(e).with_context(|| format!("listening on {host}:{port}")),
    };
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    Ok(listener)
}

/// Serve until lockdown, then close the listener (in-flight replies finish).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    ctx: Arc<AgentContext>,
) -> anyhow::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        ctx.lockdown_entered().await;
        warn!("agent API shutting down (lockdown)");
        stopper.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    let service = app.into_make_service();
    match tls {
        Some(cfg) => {
            info!(%addr, "agent API listening (https)");
            axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(cfg),
            )?
            .handle(handle)
            .serve(service)
            .await
        }
        None => {
            info!(%addr, "agent API listening (http)");
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(service)
                .await
        }
    }
    .context("agent API server failed")
}
