//! `GET /metrics`: the conductor's Prometheus exposition. On the API
//! listener it is behind the API's authentication (not in
//! [`crate::auth::is_public`]); `--metrics-listen` serves it alone, open.
//! Also the middleware that times every API request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::metrics::{self, Metrics, NodeCount};

/// `/metrics` and nothing else, for `--metrics-listen`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

/// The node gauges come from one `GROUP BY` at scrape time, so they are
/// right whichever conductor moved the nodes.
pub async fn scrape(State(state): State<AppState>) -> ApiResult<Response> {
    let counts: Vec<NodeCount> = state
        .store
        .node_state_counts()
        .await?
        .into_iter()
        .map(|c| NodeCount {
            provision_state: c.provision_state,
            power_state: c.power_state,
            maintenance: c.maintenance,
            nodes: c.nodes,
        })
        .collect();
    let body = state.metrics.render(&counts).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response())
}

/// Time a request: labelled by its route's pattern (bounded: not the
/// node's UUID), `unmatched` for paths no route has.
pub async fn count_request(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let resp = next.run(req).await;
    metrics.http_request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}
