//! Requests for another conductor group's node go to that node's owner.
//!
//! Within one group any API instance does a node's work itself, under the
//! node's reservation. A group's conductors sit on their own networks
//! (PXE, BMCs), so work for a node of another group must not run here:
//! as Ironic's API sends the RPC to the owner's topic, this layer sends the
//! HTTP request to the owner's `api_url` (the `conductors` table) and
//! answers with the owner's response. A forwarded request carries
//! [`FORWARDED_BY`] and is never forwarded again: a receiver outside the
//! node's group (the rings changed meanwhile) answers 503, to be retried.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{debug, info, warn};

use super::error::ApiError;
use super::AppState;
use crate::config::ConductorConfig;
use crate::server::layers::MAX_BODY;
use crate::store::StoreError;

/// Names the conductor that forwarded a request (loop guard).
pub const FORWARDED_BY: &str = "x-ferrite-forwarded-by";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole exchange with the owner, its answer included: under
/// `--request-timeout`'s default (60 s), so the client hears why.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(45);
/// What the API answers are: small JSON documents or none.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Request headers the owner needs: credentials, microversions, body
/// type. Credentials are passed on, never logged.
const REQUEST_HEADERS: [&str; 7] = [
    "authorization",
    "x-auth-token",
    "x-openstack-ironic-api-version",
    "openstack-api-version",
    "content-type",
    "accept",
    "user-agent",
];

/// Response headers that describe the connection, not the answer.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The HTTP client for the peers' APIs, built once.
pub struct Forwarder {
    client: reqwest::Client,
}

impl Forwarder {
    /// Peers on https are verified against the system roots and, when
    /// this conductor has one, the CA it hands its ramdisks (`--tls-ca`,
    /// else `--tls-cert`): the conductors of one deployment share it.
    pub fn new(config: &ConductorConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            // The owner's answer goes back as it is, a redirect included.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = config.tls_ca_path() {
            let pem = std::fs::read(&path)
                .with_context(|| format!("reading the API CA {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing the API CA {}", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            client: builder
                .build()
                .context("building the client for the peers' APIs")?,
        })
    }
}

/// The layer on the node verbs (`states/provision`, `states/power`,
/// `states/raid`, `management/boot_device`): Ironic answers NoValidHost
/// there as a 404.
pub async fn node_verb(State(state): State<AppState>, req: Request, next: Next) -> Response {
    to_owner(state, StatusCode::NOT_FOUND, req, next).await
}

/// The layer on the agent's heartbeat: NoValidHost is a 400 there.
pub async fn heartbeat(State(state): State<AppState>, req: Request, next: Next) -> Response {
    to_owner(state, StatusCode::BAD_REQUEST, req, next).await
}

enum Route {
    Here,
    Owner { hostname: String, url: String },
}

async fn to_owner(state: AppState, no_host: StatusCode, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let route = match Path::<String>::from_request_parts(&mut parts, &state).await {
        Ok(Path(ident)) => decide(&state, &ident, &parts.headers, no_host).await,
        // The handler's own extractor answers a bad path.
        Err(_) => Ok(Route::Here),
    };
    let req = Request::from_parts(parts, body);
    match route {
        Ok(Route::Here) => {
            if let Some(by) = req.headers().get(FORWARDED_BY) {
                debug!(path = %req.uri().path(), by = ?by, "serving a forwarded request");
            }
            next.run(req).await
        }
        Ok(Route::Owner { hostname, url }) => {
            match state.forwarder.send(&state, &hostname, &url, req).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

/// Here when the node is of this conductor's group (or unknown: the
/// handler answers 404); else its owner.
async fn decide(
    state: &AppState,
    ident: &str,
    headers: &HeaderMap,
    no_host: StatusCode,
) -> Result<Route, ApiError> {
    let cluster = state.flows.cluster();
    // One group in the table (the usual case): no node read on the
    // heartbeat's path. A node moved by PATCH to a group that has no
    // conductor at all is then served here, as it was before groups.
    if !cluster.other_groups() {
        return Ok(Route::Here);
    }
    let node = match state.store.get_node(ident).await {
        Ok(node) => node,
        Err(StoreError::NotFound(_)) => return Ok(Route::Here),
        Err(e) => return Err(e.into()),
    };
    if node.conductor_group == cluster.conductor_group() {
        return Ok(Route::Here);
    }
    let Some(owner) = cluster.owner(&node) else {
        return Err(ApiError::no_valid_host(
            no_host,
            &node.driver,
            &node.conductor_group,
        ));
    };
    if let Some(by) = headers.get(FORWARDED_BY) {
        // Rings disagree for a moment (a conductor joined or left): the
        // sender retries with a fresh ring rather than this conductor
        // working a node on another group's network.
        warn!(node = %node.uuid, group = %node.conductor_group, by = ?by, "a forwarded request for another group's node; not forwarding it again");
        return Err(unavailable(format!(
            "Conductor {} (conductor group \"{}\") does not serve node {} of conductor group \"{}\", and does not forward a request that was already forwarded. Please retry.",
            cluster.hostname(),
            cluster.conductor_group(),
            node.uuid,
            node.conductor_group
        )));
    }
    let url = cluster.api_url(&owner).ok_or_else(|| {
        unavailable(format!(
            "Conductor {owner}, which serves node {} (conductor group \"{}\"), has no API URL registered. Please retry.",
            node.uuid, node.conductor_group
        ))
    })?;
    info!(node = %node.uuid, group = %node.conductor_group, %owner, "forwarding the request to the node's conductor");
    Ok(Route::Owner {
        hostname: owner,
        url,
    })
}

/// An error and its sources, as one line.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// 503, which [`ApiError`] answers with `Retry-After`.
fn unavailable(message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
}

impl Forwarder {
    async fn send(
        &self,
        state: &AppState,
        owner: &str,
        base: &str,
        req: Request,
    ) -> Result<Response, ApiError> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY as usize)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Request is too large: the limit is {MAX_BODY} bytes."),
                )
            })?;
        let base = base.trim_end_matches('/');
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        let mut out = self
            .client
            .request(parts.method.clone(), format!("{base}{path}"))
            .header(FORWARDED_BY, state.flows.cluster().hostname())
            .body(body);
        for name in REQUEST_HEADERS {
            for value in parts.headers.get_all(name) {
                out = out.header(name, value.clone());
            }
        }
        let unreachable = |e: reqwest::Error| {
            let connect = e.is_connect();
            // reqwest's text names the URL, never the headers; its causes
            // say why (refused, timed out, the certificate).
            let e = causes(&e);
            warn!(%owner, error = %e, "the node's conductor could not be reached");
            unavailable(if connect {
                format!("The conductor {owner} that serves this node could not be reached at {base}: {e}. Please retry.")
            } else {
                // Sent: it may be under way; a retry of a done verb is refused.
                format!("The conductor {owner} that serves this node did not answer from {base}: {e}. The node's state shows whether the request was done.")
            })
        };
        let mut answer = match out.send().await {
            Ok(a) => a,
            Err(e) => return Err(unreachable(e)),
        };
        let status = answer.status();
        let mut headers = HeaderMap::new();
        for (name, value) in answer.headers() {
            if HOP_BY_HOP.contains(&name.as_str()) {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        // The owner's links name the owner; the client asked this API,
        // which reads the same database.
        if let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
            if let Some(rest) = location.strip_prefix(base) {
                if let Ok(v) = HeaderValue::try_from(format!("{}{rest}", state.config.public_url()))
                {
                    headers.insert(header::LOCATION, v);
                }
            }
        }
        let mut bytes = Vec::new();
        loop {
            match answer.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_ANSWER => {
                    bytes.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "The answer of conductor {owner} was larger than {MAX_ANSWER} bytes."
                        ),
                    ))
                }
                Ok(None) => break,
                // Sent, and maybe done: the outcome is unknown, not refused.
                Err(e) => {
                    let e = causes(&e);
                    warn!(%owner, error = %e, "the answer of the node's conductor was cut");
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("The answer of conductor {owner} was cut: {e}. The node's state shows whether the request was done."),
                    ));
                }
            }
        }
        debug!(%owner, status = status.as_u16(), "the node's conductor answered");
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;

    #[test]
    fn header_names_are_valid_and_lowercase() {
        HeaderName::from_static(FORWARDED_BY);
        for name in REQUEST_HEADERS.iter().chain(HOP_BY_HOP.iter()) {
            HeaderName::from_static(name);
        }
    }
}
