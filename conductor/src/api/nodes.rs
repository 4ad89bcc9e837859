//! `/v1/nodes`: create, list, show, patch, delete; node ports and states.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferrite_protocol::node::Node;
use ferrite_protocol::ApiVersion;
use serde_json::{json, Map, Value};

use super::error::{parse_body, ApiError, ApiResult};
use super::node_lock::{unlocked, update_unlocked};
use super::version::Requested;
use super::views::{self, NODE_LIST_FIELDS};
use super::{list_page, patch, render_page, AppState, ListParams};
use crate::drivers::default_interfaces;
use crate::fsm;
use crate::provision_state::{NodeStates, ProvisionState};
use crate::store::{NodeQuery, Page, SortKey};
use crate::time::api_now;

/// Attributes a client may set at creation or by PATCH.
const WRITABLE: &[&str] = &[
    "name",
    "description",
    "driver",
    "driver_info",
    "properties",
    "extra",
    "instance_info",
    "instance_uuid",
    "resource_class",
    "owner",
    "lessee",
    "automated_clean",
    "network_data",
    "conductor_group",
    "chassis_uuid",
    "shard",
    "parent_node",
    "disable_power_off",
    "protected",
    "protected_reason",
    "retired",
    "retired_reason",
    "bios_interface",
    "boot_interface",
    "console_interface",
    "deploy_interface",
    "firmware_interface",
    "inspect_interface",
    "management_interface",
    "network_interface",
    "power_interface",
    "raid_interface",
    "rescue_interface",
    "storage_interface",
    "vendor_interface",
];
/// Accepted in a create body besides the writable ones.
const CREATE_ONLY: &[&str] = &["uuid"];
/// Before 1.11 new nodes started `available`; since, `enroll`.
const ENROLL_VERSION: ApiVersion = ApiVersion::new(1, 11);

pub async fn create(
    State(state): State<AppState>,
    Extension(Requested(version)): Extension<Requested>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: Map<String, Value> = parse_body(&body)?;
    patch::check_bounds(&Value::Object(body.clone()))?;
    if let Some(bad) = body
        .keys()
        .find(|k| !WRITABLE.contains(&k.as_str()) && !CREATE_ONLY.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "Unknown attribute for argument node: {bad}"
        )));
    }
    let mut node: Node = serde_json::from_value(Value::Object(body.clone()))
        .map_err(|e| ApiError::bad_request(format!("Invalid node: {e}")))?;
    if node.uuid.is_empty() {
        node.uuid = uuid::Uuid::new_v4().to_string();
    } else if uuid::Uuid::parse_str(&node.uuid).is_err() {
        return Err(ApiError::bad_request(format!(
            "Expected a UUID but received {}.",
            node.uuid
        )));
    }
    validate(&state, &node)?;
    fill_interfaces(&mut node, &body);
    let now = api_now();
    node.created_at = Some(now.clone());
    node.provision_updated_at = None;
    node.set_state(if version >= ENROLL_VERSION {
        ProvisionState::Enroll
    } else {
        ProvisionState::Available
    });
    node.power_state = None;
    node.conductor = None;
    state.store.create_node(&node).await?;
    let node = with_owner(&state, node);
    tracing::info!(node = %node.uuid, driver = %node.driver, "node created");
    let base = state.config.public_url();
    let location = format!("{base}/v1/nodes/{}", node.uuid);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(views::node_view(&node, &base, None)),
    )
        .into_response())
}

fn validate(state: &AppState, node: &Node) -> ApiResult<()> {
    if node.driver.is_empty() {
        return Err(ApiError::bad_request("Mandatory field missing: driver"));
    }
    // As Ironic: some live conductor must serve the node's group and driver.
    if default_interfaces(&node.driver).is_none() || state.flows.cluster().owner(node).is_none() {
        return Err(ApiError::no_valid_host(
            StatusCode::BAD_REQUEST,
            &node.driver,
            &node.conductor_group,
        ));
    }
    if let Some(name) = &node.name {
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c));
        if name.is_empty() || !ok_chars || uuid::Uuid::parse_str(name).is_ok() {
            return Err(ApiError::bad_request(format!(
                "Cannot create node with invalid name '{name}'"
            )));
        }
    }
    Ok(())
}

/// Interfaces not given by the client get the hardware type's defaults.
fn fill_interfaces(node: &mut Node, given: &Map<String, Value>) {
    let Some(d) = default_interfaces(&node.driver) else {
        return;
    };
    let slots: [(&str, &mut Option<String>, &str); 13] = [
        ("bios_interface", &mut node.bios_interface, d.bios),
        ("boot_interface", &mut node.boot_interface, d.boot),
        ("console_interface", &mut node.console_interface, d.console),
        ("deploy_interface", &mut node.deploy_interface, d.deploy),
        (
            "firmware_interface",
            &mut node.firmware_interface,
            d.firmware,
        ),
        ("inspect_interface", &mut node.inspect_interface, d.inspect),
        (
            "management_interface",
            &mut node.management_interface,
            d.management,
        ),
        ("network_interface", &mut node.network_interface, d.network),
        ("power_interface", &mut node.power_interface, d.power),
        ("raid_interface", &mut node.raid_interface, d.raid),
        ("rescue_interface", &mut node.rescue_interface, d.rescue),
        ("storage_interface", &mut node.storage_interface, d.storage),
        ("vendor_interface", &mut node.vendor_interface, d.vendor),
    ];
    for (key, slot, default) in slots {
        if !given.get(key).is_some_and(|v| v.is_string()) {
            *slot = Some(default.to_string());
        }
    }
}

/// Node fields Ironic refuses to sort by (`invalid_sort_key_list`).
const UNSORTABLE: &[&str] = &[
    "properties",
    "driver_info",
    "extra",
    "instance_info",
    "driver_internal_info",
    "clean_step",
    "deploy_step",
    "raid_config",
    "target_raid_config",
    "traits",
    "network_data",
    "service_step",
];

fn query_from(params: &HashMap<String, String>) -> ApiResult<NodeQuery> {
    let flag = |key: &str| -> ApiResult<Option<bool>> {
        params
            .get(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "Invalid value for {key}: {v}"
                ))),
            })
            .transpose()
    };
    let text = |key: &str| params.get(key).cloned();
    Ok(NodeQuery {
        provision_state: text("provision_state").into_iter().collect(),
        driver: text("driver"),
        maintenance: flag("maintenance")?,
        associated: flag("associated")?,
        resource_class: text("resource_class"),
        fault: text("fault"),
        conductor_group: text("conductor_group").map(|g| g.to_ascii_lowercase()),
        owner: text("owner"),
        lessee: text("lessee"),
        retired: flag("retired")?,
        instance_uuid: text("instance_uuid"),
        page: None,
    })
}

async fn list_impl(
    state: AppState,
    params: HashMap<String, String>,
    detail: bool,
) -> ApiResult<Json<Value>> {
    let base = state.config.public_url();
    let template = views::node_full(&Node::default(), &base);
    let list = ListParams::parse(
        &params,
        detail,
        &template,
        NODE_LIST_FIELDS,
        state.config.api_max_limit as usize,
    )?;
    let mut query = query_from(&params)?;
    let sort = match list.sort_key.as_deref() {
        Some(key) if UNSORTABLE.contains(&key) => return Err(super::invalid_sort_key(key)),
        Some(key) => SortKey::column(key),
        None => Some(SortKey::ID),
    };
    let url = format!("{base}/v1/nodes");
    let render = |nodes: Vec<Node>| -> Vec<Map<String, Value>> {
        nodes
            .into_iter()
            .map(|n| views::node_full(&with_owner(&state, n), &base))
            .filter(|n| {
                // Ironic filters by owner after the query, as here.
                params
                    .get("conductor")
                    .is_none_or(|c| n.get("conductor").and_then(Value::as_str) == Some(c))
            })
            .collect()
    };
    let Some(sort) = sort else {
        // A field that is not a column: filtered in SQL, sorted in memory.
        let items = render(state.store.list_nodes(&query).await?);
        return Ok(Json(list_page(items, &list, &url, "nodes")?));
    };
    if let Some(marker) = &list.marker {
        // Ironic's Node.get_by_uuid: an unknown marker is a 404.
        let found = state.store.get_node(marker).await?;
        if &found.uuid != marker {
            return Err(ApiError::not_found(format!(
                "Node {marker} could not be found."
            )));
        }
    }
    query.page = Some(Page {
        sort,
        descending: list.descending,
        marker: list.marker.clone(),
        limit: list.limit,
    });
    let items = render(state.store.list_nodes(&query).await?);
    Ok(Json(render_page(items, &list, &url, "nodes")))
}

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    list_impl(state, params, false).await
}

pub async fn list_detail(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    list_impl(state, params, true).await
}

pub async fn show(
    State(state): State<AppState>,
    Path(ident): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let node = with_owner(&state, state.store.get_node(&ident).await?);
    let base = state.config.public_url();
    let fields = views::parse_fields(
        params.get("fields").map(String::as_str),
        &views::node_full(&node, &base),
    )?;
    Ok(Json(views::node_view(&node, &base, fields.as_deref())))
}

pub async fn update(
    State(state): State<AppState>,
    Path(ident): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let updated = update_unlocked(&state, &ident, |node| {
        let old_driver = node.driver.clone();
        let patched: Node = patch::apply(&*node, &body, WRITABLE, super::secrets::mask_node_value)?;
        validate(&state, &patched)?;
        *node = patched;
        if node.driver != old_driver {
            fill_interfaces(node, &Map::new());
        }
        Ok(())
    })
    .await?;
    Ok(Json(views::node_view(
        &with_owner(&state, updated),
        &state.config.public_url(),
        None,
    )))
}

/// The `conductor` field (API 1.49): the node's owner by the hash ring,
/// worked out at read time, never stored; null when no live conductor
/// serves its group and driver.
fn with_owner(state: &AppState, mut node: Node) -> Node {
    node.conductor = state.flows.cluster().owner(&node);
    node
}

pub async fn delete(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> ApiResult<StatusCode> {
    let node = state.store.get_node(&ident).await?;
    if node.protected {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Node {} is protected and cannot be undeployed, rebuilt or deleted",
                node.uuid
            ),
        ));
    }
    if !node.maintenance && !node.state().is_ok_and(fsm::delete_allowed) {
        return Err(ApiError::conflict(format!(
            "Can not delete node \"{}\" while it is in provision state \"{}\". Valid provision states to start deletion are: available, manageable, enroll, adopt failed",
            node.uuid, node.provision_state
        )));
    }
    let node = unlocked(&state, node).await?;
    state.store.delete_node(&node.uuid).await?;
    tracing::info!(node = %node.uuid, "node deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn states(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> ApiResult<Json<Value>> {
    let n = state.store.get_node(&ident).await?;
    Ok(Json(json!({
        "power_state": n.power_state,
        "target_power_state": n.target_power_state,
        "provision_state": n.provision_state,
        "target_provision_state": n.target_provision_state,
        "provision_updated_at": n.provision_updated_at,
        "last_error": n.last_error,
        "console_enabled": n.console_enabled,
        "raid_config": n.raid_config,
        "target_raid_config": n.target_raid_config,
        "boot_mode": n.boot_mode,
        "secure_boot": n.secure_boot,
    })))
}
