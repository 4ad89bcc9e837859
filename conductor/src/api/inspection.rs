//! In-band inspection, API level (Ironic's `ContinueInspectionController`
//! and the default hooks `ramdisk-error,validate-interfaces,ports,architecture`
//! plus the property hooks): validate the ramdisk's data, find the node,
//! store the inventory, fill in properties and ports. State transitions are
//! not done here; only [`inspection_data_accepted`] looks at the state.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use ferrite_protocol::node::{normalize_mac, Node, Port};
use ferrite_protocol::ApiVersion;
use serde_json::{json, Map, Value};
use tracing::{error, info, warn};

use super::error::{ApiError, ApiResult};
use super::version::Requested;
use super::AppState;
use crate::provision_state::{NodeStates, ProvisionState};
use crate::time::api_now;

/// `GET /v1/nodes/{id}/inventory` appeared at 1.81.
const NODE_INVENTORY: ApiVersion = ApiVersion::new(1, 81);
/// Ironic's `lookup_bmc_addresses` cache in `driver_internal_info`.
const LOOKUP_CACHE_FIELD: &str = "lookup_bmc_addresses";
const GIB: u64 = 1 << 30;

/// Ironic accepts inspection data only while it waits for it (and in
/// `enroll` with auto-discovery, which this conductor does not do).
pub fn inspection_data_accepted(node: &Node) -> bool {
    node.state() == Ok(ProvisionState::InspectWait)
}

fn not_found() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}

/// Python's `repr` of a JSON value, as jsonschema quotes it in messages.
use crate::pyrepr::repr as py_repr;

fn schema_error(message: String) -> ApiError {
    ApiError::bad_request(format!("Schema error for data: {message}"))
}

/// Ironic's `DATA_VALIDATOR`: a minimal acceptable inventory; anything
/// else in the body is allowed.
pub fn validate(data: &Value) -> ApiResult<()> {
    let Some(body) = data.as_object() else {
        return Err(schema_error(format!(
            "{} is not of type 'object'",
            py_repr(data)
        )));
    };
    let Some(inventory) = body.get("inventory") else {
        return Err(schema_error("'inventory' is a required property".into()));
    };
    let Some(inventory) = inventory.as_object() else {
        return Err(schema_error(format!(
            "{} is not of type 'object'",
            py_repr(inventory)
        )));
    };
    for key in ["bmc_address", "bmc_v6address"] {
        if let Some(v) = inventory
            .get(key)
            .filter(|v| !v.is_null() && !v.is_string())
        {
            return Err(schema_error(format!(
                "{} is not of type 'string', 'null'",
                py_repr(v)
            )));
        }
    }
    let Some(interfaces) = inventory.get("interfaces") else {
        return Err(schema_error("'interfaces' is a required property".into()));
    };
    let Some(list) = interfaces.as_array() else {
        return Err(schema_error(format!(
            "{} is not of type 'array'",
            py_repr(interfaces)
        )));
    };
    if list.is_empty() {
        return Err(schema_error("[] should be non-empty".into()));
    }
    for iface in list {
        let Some(obj) = iface.as_object() else {
            return Err(schema_error(format!(
                "{} is not of type 'object'",
                py_repr(iface)
            )));
        };
        match obj.get("mac_address") {
            None => return Err(schema_error("'mac_address' is a required property".into())),
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(schema_error(format!(
                    "{} is not of type 'string'",
                    py_repr(other)
                )))
            }
        }
    }
    Ok(())
}

/// The valid, normalized MACs of the inventory's interfaces.
pub fn inventory_macs(inventory: &Value) -> Vec<String> {
    let mut macs = Vec::new();
    for iface in inventory["interfaces"].as_array().into_iter().flatten() {
        match iface["mac_address"].as_str().and_then(normalize_mac) {
            Some(mac) if !macs.contains(&mac) => macs.push(mac),
            Some(_) => {}
            None => warn!(mac = %iface["mac_address"], "ignoring an invalid MAC address"),
        }
    }
    macs
}

/// The BMC addresses a node is known by: the cache Ironic fills on
/// inspection start, else the node's `*_address` driver fields.
fn node_bmc_addresses(node: &Node) -> BTreeSet<String> {
    if let Some(cached) = node.driver_internal_info.get(LOOKUP_CACHE_FIELD) {
        return cached
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
    }
    node.driver_info
        .iter()
        .filter(|(k, _)| k.ends_with("_address"))
        .filter_map(|(_, v)| v.as_str())
        .map(|addr| {
            let host = url::Url::parse(addr)
                .ok()
                .filter(|_| addr.contains("//"))
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| addr.to_string());
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .collect()
}

/// Whether one of `addresses` is a BMC address of the node.
pub fn bmc_matches(node: &Node, addresses: &[String]) -> bool {
    let known = node_bmc_addresses(node);
    addresses.iter().any(|a| known.contains(a))
}

/// Ironic's `inspect_utils.lookup_node`: by UUID, by port MACs, by BMC
/// address; any ambiguity or a node in the wrong state is a bare 404.
pub async fn lookup_node(
    state: &AppState,
    macs: &[String],
    bmc_addresses: &[String],
    node_uuid: Option<&str>,
) -> ApiResult<Node> {
    let mut node = match node_uuid {
        Some(uuid) => Some(state.store.get_node(uuid).await.map_err(|_| not_found())?),
        None => None,
    };
    if !macs.is_empty() {
        let mut owners = BTreeSet::new();
        for mac in macs {
            if let Some(port) = state.store.port_by_address(mac).await? {
                owners.insert(port.node_uuid);
            }
        }
        if owners.len() > 1 {
            error!(
                ?owners,
                "Conflict on inspection lookup: multiple nodes match the MACs"
            );
            return Err(not_found());
        }
        if let Some(owner) = owners.into_iter().next() {
            if node.as_ref().is_some_and(|n| n.uuid != owner) {
                error!(%owner, "Conflict on inspection lookup: the MACs belong to another node");
                return Err(not_found());
            }
            node = Some(state.store.get_node(&owner).await?);
        }
    }
    if let Some(n) = &node {
        if !inspection_data_accepted(n) {
            error!(node = %n.uuid, state = %n.provision_state,
                "node found during inspection lookup, but not waiting for inspection");
            return Err(not_found());
        }
    }
    if !bmc_addresses.is_empty() {
        let query = crate::store::NodeQuery::in_states(&[ProvisionState::InspectWait]);
        let by_bmc: BTreeSet<String> = state
            .store
            .list_nodes(&query)
            .await?
            .into_iter()
            .filter(|n| {
                let known = node_bmc_addresses(n);
                bmc_addresses.iter().any(|a| known.contains(a))
            })
            .map(|n| n.uuid)
            .collect();
        match &node {
            Some(n) if !by_bmc.is_empty() && !by_bmc.contains(&n.uuid) => {
                error!(node = %n.uuid, ?by_bmc, "Conflict on inspection lookup: BMC and MACs disagree");
                return Err(not_found());
            }
            Some(_) => {}
            None if by_bmc.len() > 1 => {
                error!(
                    ?by_bmc,
                    "several nodes match the BMC address; ports are needed"
                );
                return Err(not_found());
            }
            None => {
                if let Some(uuid) = by_bmc.into_iter().next() {
                    node = Some(state.store.get_node(&uuid).await?);
                }
            }
        }
    }
    node.ok_or_else(|| {
        error!(
            ?macs,
            ?bmc_addresses,
            "No nodes satisfy the MACs and BMC addresses during inspection lookup"
        );
        not_found()
    })
}

/// `boot.pxe_interface` as a MAC (pxelinux `01-aa-bb-...` or plain).
fn pxe_mac(inventory: &Value) -> Option<String> {
    let raw = inventory["boot"]["pxe_interface"].as_str()?;
    let mac = match raw.split_once('-') {
        Some((_, rest)) if raw.len() == 20 => rest.replace('-', ":"),
        _ => raw.to_string(),
    };
    normalize_mac(&mac)
}

/// Properties from the inventory; an operator's value is never replaced.
fn fill_properties(props: &mut Map<String, Value>, inventory: &Value, plugin_data: &Value) {
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            if props.get(key).is_none_or(Value::is_null) {
                props.insert(key.into(), v);
            }
        }
    };
    set(
        "cpus",
        inventory["cpu"]["count"]
            .as_u64()
            .filter(|c| *c > 0)
            .map(Value::from),
    );
    set(
        "cpu_arch",
        inventory["cpu"]["architecture"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(Value::from),
    );
    set(
        "memory_mb",
        inventory["memory"]["physical_mb"]
            .as_u64()
            .filter(|m| *m > 0)
            .map(Value::from),
    );
    // Ironic's root-device hook: whole GiB, one left for partitioning.
    set(
        "local_gb",
        plugin_data["root_disk"]["size"]
            .as_u64()
            .map(|size| Value::from((size / GIB).saturating_sub(1))),
    );
}

/// Ironic's `validate-interfaces`: named, non-loopback interfaces with a
/// valid MAC, as `(mac, has_ip)`.
fn valid_interfaces(inventory: &Value) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for iface in inventory["interfaces"].as_array().into_iter().flatten() {
        let name = iface["name"].as_str().unwrap_or_default();
        let ip = iface["ipv4_address"]
            .as_str()
            .or_else(|| iface["ipv6_address"].as_str())
            .filter(|ip| !ip.is_empty());
        let loopback = ip
            .and_then(|ip| ip.split('%').next()?.parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        if name.is_empty() || name == "lo" || loopback {
            continue;
        }
        if let Some(mac) = iface["mac_address"].as_str().and_then(normalize_mac) {
            if !out.iter().any(|(m, _)| m == &mac) {
                out.push((mac, ip.is_some()));
            }
        }
    }
    out
}

/// Ports for the interfaces Ironic's `ports` hook adds (`add_ports`: `pxe`
/// = only the PXE NIC when it is known, else all; `active` = those with an
/// IP; `all`; `disabled`), `pxe_enabled` only on the PXE NIC; existing
/// ports of the node follow the inventory's PXE NIC when it is known.
async fn sync_ports(state: &AppState, node: &Node, inventory: &Value) -> ApiResult<Vec<String>> {
    let interfaces = valid_interfaces(inventory);
    let macs: Vec<String> = interfaces.iter().map(|(m, _)| m.clone()).collect();
    let pxe = pxe_mac(inventory);
    let add: Vec<&String> = match state.config.inspector_add_ports.as_str() {
        "disabled" => Vec::new(),
        "pxe" if pxe.is_some() => macs.iter().filter(|m| Some(*m) == pxe.as_ref()).collect(),
        "active" => interfaces
            .iter()
            .filter(|(_, has_ip)| *has_ip)
            .map(|(m, _)| m)
            .collect(),
        _ => macs.iter().collect(),
    };
    let mut created = Vec::new();
    for mac in add {
        if let Some(existing) = state.store.port_by_address(mac).await? {
            if existing.node_uuid != node.uuid {
                warn!(%mac, owner = %existing.node_uuid, "Port already exists for MAC address");
            }
            continue;
        }
        let now = api_now();
        let port = Port {
            uuid: uuid::Uuid::new_v4().to_string(),
            address: mac.clone(),
            node_uuid: node.uuid.clone(),
            pxe_enabled: pxe.as_ref() == Some(mac),
            created_at: Some(now),
            ..Port::default()
        };
        state.store.create_port(&port).await?;
        info!(node = %node.uuid, %mac, pxe = port.pxe_enabled, "Port created");
        created.push(mac.clone());
    }
    if let Some(pxe) = &pxe {
        for mut port in state.store.list_ports(Some(&node.uuid)).await? {
            let wanted = &port.address == pxe;
            if port.pxe_enabled != wanted && macs.contains(&port.address) {
                port.pxe_enabled = wanted;
                port.updated_at = Some(api_now());
                state.store.update_port(&port).await?;
            }
        }
    }
    Ok(created)
}

/// The processing Ironic does after the API answered: a ramdisk error
/// fails inspection (recorded in `last_error`); otherwise store the data
/// and fill in properties and ports.
pub async fn process(
    state: &AppState,
    node: &Node,
    inventory: Value,
    plugin_data: Value,
) -> ApiResult<()> {
    if let Some(err) = plugin_data["error"].as_str().filter(|e| !e.is_empty()) {
        let message = format!("Ramdisk reported error: {err}");
        error!(node = %node.uuid, %message, "inspection failed");
        state
            .store
            .update_node::<ApiError, _>(&node.uuid, |n| {
                n.last_error = Some(message);
                Ok(())
            })
            .await?;
        return Ok(());
    }
    let created = sync_ports(state, node, &inventory).await?;
    state
        .store
        .update_node::<ApiError, _>(&node.uuid, |n| {
            fill_properties(&mut n.properties, &inventory, &plugin_data);
            n.last_error = None;
            Ok(())
        })
        .await?;
    // Logs go to the conductor's log directory in Ironic, not the database.
    let mut stored = plugin_data;
    if let Some(obj) = stored.as_object_mut() {
        obj.remove("logs");
    }
    state
        .store
        .save_inventory(&node.uuid, &inventory, &stored, &api_now())
        .await?;
    info!(node = %node.uuid, ports_created = created.len(), "inspection data stored");
    Ok(())
}

/// `GET /v1/nodes/{id}/inventory`.
pub async fn get_inventory(
    State(state): State<AppState>,
    Extension(Requested(version)): Extension<Requested>,
    Path(ident): Path<String>,
) -> ApiResult<Json<Value>> {
    if version < NODE_INVENTORY {
        return Err(not_found());
    }
    let node = state.store.get_node(&ident).await?;
    let stored = state
        .store
        .get_inventory(&node.uuid)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Node inventory record for node {} could not be found.",
                node.uuid
            ))
        })?;
    Ok(Json(json!({
        "inventory": stored.inventory,
        "plugin_data": stored.plugin_data,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: Value) -> String {
        validate(&v).unwrap_err().message
    }

    #[test]
    fn schema_errors_read_like_ironics() {
        assert_eq!(
            err(json!({})),
            "Schema error for data: 'inventory' is a required property"
        );
        assert_eq!(
            err(json!({"inventory": {}})),
            "Schema error for data: 'interfaces' is a required property"
        );
        assert_eq!(
            err(json!({"inventory": {"interfaces": []}})),
            "Schema error for data: [] should be non-empty"
        );
        assert_eq!(
            err(json!({"inventory": {"interfaces": [{"name": "eth0"}]}})),
            "Schema error for data: 'mac_address' is a required property"
        );
        assert_eq!(
            err(json!({"inventory": {"interfaces": [{"mac_address": 5}]}})),
            "Schema error for data: 5 is not of type 'string'"
        );
        assert_eq!(
            err(json!({"inventory": {"interfaces": [{"mac_address": "a"}], "bmc_address": ["x"]}})),
            "Schema error for data: ['x'] is not of type 'string', 'null'"
        );
        assert_eq!(
            err(json!([1])),
            "Schema error for data: [1] is not of type 'object'"
        );
        validate(&json!({"inventory": {"interfaces": [{"mac_address": "a"}],
            "bmc_address": null}, "extra": 1}))
        .unwrap();
    }

    #[test]
    fn properties_fill_gaps_only() {
        let inv = json!({"cpu": {"count": 8, "architecture": "x86_64"},
                         "memory": {"physical_mb": 16384}});
        let plugin = json!({"root_disk": {"size": 100u64 << 30}});
        let mut props = Map::new();
        props.insert("cpus".into(), json!(2));
        fill_properties(&mut props, &inv, &plugin);
        assert_eq!(
            Value::Object(props),
            json!({"cpus": 2, "cpu_arch": "x86_64", "memory_mb": 16384, "local_gb": 99})
        );
    }

    #[test]
    fn interfaces_ironic_would_keep() {
        let inv = json!({"interfaces": [
            {"name": "eth0", "mac_address": "52:54:00:00:00:01", "ipv4_address": "10.0.0.5"},
            {"name": "eth1", "mac_address": "52:54:00:00:00:02"},
            {"name": "lo", "mac_address": "00:00:00:00:00:00"},
            {"name": "eth2", "mac_address": "52:54:00:00:00:03", "ipv4_address": "127.0.0.1"},
            {"mac_address": "52:54:00:00:00:04"},
            {"name": "eth3", "mac_address": "bogus"},
            {"name": "eth4", "mac_address": "52:54:00:00:00:05", "ipv6_address": "fe80::1%eth4"},
        ]});
        assert_eq!(
            valid_interfaces(&inv),
            [
                ("52:54:00:00:00:01".to_string(), true),
                ("52:54:00:00:00:02".to_string(), false),
                ("52:54:00:00:00:05".to_string(), true),
            ]
        );
    }

    #[test]
    fn pxe_mac_forms() {
        let inv = |v: &str| json!({"boot": {"pxe_interface": v}});
        assert_eq!(
            pxe_mac(&inv("01-52-54-00-AB-CD-EF")).as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(
            pxe_mac(&inv("52:54:00:ab:cd:ef")).as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(pxe_mac(&json!({"boot": {}})), None);
    }
}
