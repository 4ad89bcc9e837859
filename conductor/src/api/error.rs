//! Ironic API errors: status + `{"error_message": "<json fault>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrite_protocol::IronicErrorBody;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Ironic's NodeLocked, which a request tries again for a moment.
    node_locked: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            node_locked: false,
        }
    }

    /// Whether `answer` is NodeLocked: the predicate for `LockRetry::run`.
    pub fn held<T>(answer: &Result<T, Self>) -> bool {
        matches!(answer, Err(e) if e.node_locked)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// Ironic's NoValidHost: no live conductor serves the node's driver in
    /// its group. A 404 there (a NotFound), which the API turns into a 400
    /// where the client chose the group (node create, the agent's heartbeat).
    pub fn no_valid_host(status: StatusCode, driver: &str, group: &str) -> Self {
        Self::new(
            status,
            format!(
                "No valid host was found. Reason: No conductor service registered which supports driver {driver} for conductor group \"{group}\"."
            ),
        )
    }

    /// Ironic's NodeLocked (409): another task holds the node's reservation.
    pub fn node_locked(node: &str, holder: &str) -> Self {
        Self {
            node_locked: true,
            ..Self::conflict(format!(
                "Node {node} is locked by host {holder}, please retry after the current operation is completed."
            ))
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            // A lost database is not the request's fault and passes: the
            // client (an agent's heartbeat, the CLI) retries.
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => {
                tracing::error!(error = %e, "store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(IronicErrorBody::new(self.status.as_u16(), self.message)),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("10"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Parse a JSON body ourselves so that malformed input gets Ironic's error shape.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))
}
