//! `GET /v1/conductors[/{hostname}]` (Ironic ≥ 1.49): the conductors that
//! share this database, and whether each is alive.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::store::ConductorRecord;

fn view(c: &ConductorRecord, alive_after_us: i64, base: &str, detail: bool) -> Value {
    let mut v = json!({
        "hostname": c.hostname,
        "conductor_group": c.conductor_group,
        "alive": c.online && c.updated_us >= alive_after_us,
        "links": [
            {"href": format!("{base}/v1/conductors/{}", c.hostname), "rel": "self"},
            {"href": format!("{base}/conductors/{}", c.hostname), "rel": "bookmark"},
        ],
    });
    if detail {
        v["created_at"] = json!(c.created_at);
        v["updated_at"] = json!(c.updated_at);
        v["drivers"] = json!(c.hardware_types);
    }
    v
}

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let detail = params
        .get("detail")
        .is_some_and(|d| d.eq_ignore_ascii_case("true"));
    let base = state.config.public_url();
    let alive_after = state.flows.cluster().alive_after_us();
    let rows = state.store.list_conductors().await?;
    Ok(Json(json!({
        "conductors": rows.iter().map(|c| view(c, alive_after, &base, detail)).collect::<Vec<_>>()
    })))
}

pub async fn show(
    State(state): State<AppState>,
    Path(hostname): Path<String>,
) -> ApiResult<Json<Value>> {
    let base = state.config.public_url();
    let alive_after = state.flows.cluster().alive_after_us();
    state
        .store
        .list_conductors()
        .await?
        .iter()
        .find(|c| c.hostname == hostname)
        .map(|c| Json(view(c, alive_after, &base, true)))
        .ok_or_else(|| ApiError::not_found(format!("Conductor {hostname} could not be found.")))
}
