//! `/v1/ports` and `/v1/nodes/{node}/ports`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrite_protocol::node::{normalize_mac, Port};
use serde_json::{Map, Value};

use super::error::{parse_body, ApiError, ApiResult};
use super::views::{self, PORT_LIST_FIELDS};
use super::{list_page, patch, AppState, ListParams};
use crate::time::api_now;

const WRITABLE: &[&str] = &[
    "address",
    "node_uuid",
    "pxe_enabled",
    "local_link_connection",
    "physical_network",
    "extra",
    "is_smartnic",
    "name",
    "description",
    "category",
    "portgroup_uuid",
    "vendor",
];

/// Normalize the MAC and make sure the node exists.
async fn validate(state: &AppState, port: &mut Port) -> ApiResult<()> {
    port.address = normalize_mac(&port.address).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Expected a MAC address but received {}.",
            port.address
        ))
    })?;
    if port.node_uuid.is_empty() {
        return Err(ApiError::bad_request("Mandatory field missing: node_uuid"));
    }
    let node = state.store.get_node(&port.node_uuid).await.map_err(|_| {
        ApiError::bad_request(format!("Node {} could not be found.", port.node_uuid))
    })?;
    port.node_uuid = node.uuid;
    Ok(())
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let body: Map<String, Value> = parse_body(&body)?;
    if let Some(bad) = body
        .keys()
        .find(|k| !WRITABLE.contains(&k.as_str()) && k.as_str() != "uuid")
    {
        return Err(ApiError::bad_request(format!(
            "Unknown attribute for argument port: {bad}"
        )));
    }
    if !body.contains_key("address") {
        return Err(ApiError::bad_request("Mandatory field missing: address"));
    }
    let mut port: Port = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::bad_request(format!("Invalid port: {e}")))?;
    if port.uuid.is_empty() {
        port.uuid = uuid::Uuid::new_v4().to_string();
    } else if uuid::Uuid::parse_str(&port.uuid).is_err() {
        return Err(ApiError::bad_request(format!(
            "Expected a UUID but received {}.",
            port.uuid
        )));
    }
    validate(&state, &mut port).await?;
    port.created_at = Some(api_now());
    state.store.create_port(&port).await?;
    let base = state.config.public_url();
    let location = format!("{base}/v1/ports/{}", port.uuid);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(views::port_view(&port, &base, None)),
    )
        .into_response())
}

async fn list_impl(
    state: AppState,
    params: HashMap<String, String>,
    node_filter: Option<String>,
    detail: bool,
) -> ApiResult<Json<Value>> {
    let base = state.config.public_url();
    let template = views::port_full(&Port::default(), &base);
    let list = ListParams::parse(
        &params,
        detail,
        &template,
        PORT_LIST_FIELDS,
        state.config.api_max_limit as usize,
    )?;
    let node_ident = node_filter.or_else(|| {
        params
            .get("node")
            .or_else(|| params.get("node_uuid"))
            .cloned()
    });
    let node_uuid = match node_ident {
        Some(ident) => Some(state.store.get_node(&ident).await?.uuid),
        None => None,
    };
    let mut ports = state.store.list_ports(node_uuid.as_deref()).await?;
    if let Some(address) = params.get("address") {
        let wanted = normalize_mac(address);
        ports.retain(|p| Some(&p.address) == wanted.as_ref());
    }
    let items = ports.iter().map(|p| views::port_full(p, &base)).collect();
    Ok(Json(list_page(
        items,
        &list,
        &format!("{base}/v1/ports"),
        "ports",
    )?))
}

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    list_impl(state, params, None, false).await
}

pub async fn list_detail(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    list_impl(state, params, None, true).await
}

pub async fn list_for_node(
    State(state): State<AppState>,
    Path(node): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    list_impl(state, params, Some(node), false).await
}

pub async fn list_for_node_detail(
    State(state): State<AppState>,
    Path(node): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    list_impl(state, params, Some(node), true).await
}

pub async fn show(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let port = state.store.get_port(&uuid).await?;
    let base = state.config.public_url();
    let fields = views::parse_fields(
        params.get("fields").map(String::as_str),
        &views::port_full(&port, &base),
    )?;
    Ok(Json(views::port_view(&port, &base, fields.as_deref())))
}

pub async fn update(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let port = state.store.get_port(&uuid).await?;
    let mut patched: Port = patch::apply(&port, &body, WRITABLE, |_| {})?;
    validate(&state, &mut patched).await?;
    patched.updated_at = Some(api_now());
    state.store.update_port(&patched).await?;
    Ok(Json(views::port_view(
        &patched,
        &state.config.public_url(),
        None,
    )))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_port(&uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
