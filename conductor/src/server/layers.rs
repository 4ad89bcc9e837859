//! Per-request limits as middleware: the time to produce a response, and
//! oversized bodies answered with an Ironic fault instead of a dropped
//! connection or axum's plain text.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_lite::StreamExt;

use crate::api::error::ApiError;

/// What handlers buffer: axum's default body limit.
pub const MAX_BODY: u64 = 2 * 1024 * 1024;
/// Beyond this an oversized body is not read to the end: the answer is
/// sent and the connection closed.
const MAX_DRAIN: u64 = 256 * 1024 * 1024;

fn too_large() -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request is too large: the limit is {MAX_BODY} bytes."),
    )
    .into_response()
}

/// 413 as an Ironic fault. A declared oversized body is read and dropped
/// first (up to [`MAX_DRAIN`]), so that a client still sending it gets
/// the answer rather than a reset connection.
pub async fn body_limit(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|l| *l > MAX_BODY) {
        if len <= MAX_DRAIN {
            drain(req.into_body()).await;
        }
        return too_large();
    }
    let resp = next.run(req).await;
    // A chunked body that grew past the limit: axum's extractor said so in
    // plain text.
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return too_large();
    }
    resp
}

async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > MAX_DRAIN {
            break;
        }
    }
}

/// Bound the time to produce a response (reading the request included);
/// a streamed response body is not timed here.
pub async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(%path, seconds = limit.as_secs(), "request timed out");
            let mut resp = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("Request timed out after {} seconds.", limit.as_secs()),
            )
            .into_response();
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            resp
        }
    }
}
