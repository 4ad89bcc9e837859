//! `GET /v1/nodes/{id}/history[/{event}]` (Ironic ≥ 1.78).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::store::HistoryEvent;

fn view(e: &HistoryEvent, base: &str, node: &str, detail: bool) -> Value {
    let mut v = json!({
        "uuid": e.uuid,
        "created_at": e.created_at,
        "severity": e.severity,
        "event": e.event,
        "links": [
            {"href": format!("{base}/v1/nodes/{node}/history/{}", e.uuid), "rel": "self"},
            {"href": format!("{base}/nodes/{node}/history/{}", e.uuid), "rel": "bookmark"},
        ],
    });
    if detail {
        v["event_type"] = json!(e.event_type);
        v["conductor"] = json!(e.conductor);
        v["user"] = json!(e.user);
    }
    v
}

pub async fn list(
    State(state): State<AppState>,
    Path(ident): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let node = state.store.get_node(&ident).await?;
    let detail = params
        .get("detail")
        .is_some_and(|d| d == "true" || d == "True");
    let base = state.config.public_url();
    let events = state.store.history(&node.uuid).await?;
    Ok(Json(json!({
        "history": events.iter().map(|e| view(e, &base, &node.uuid, detail)).collect::<Vec<_>>()
    })))
}

pub async fn show(
    State(state): State<AppState>,
    Path((ident, event)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let node = state.store.get_node(&ident).await?;
    let base = state.config.public_url();
    state
        .store
        .history(&node.uuid)
        .await?
        .iter()
        .find(|e| e.uuid == event)
        .map(|e| Json(view(e, &base, &node.uuid, true)))
        .ok_or_else(|| {
            ApiError::not_found(format!("Node history record {event} could not be found."))
        })
}
