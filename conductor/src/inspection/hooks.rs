//! Ironic's inspection hooks that turn an inventory into the node's
//! fields: `validate-interfaces`, `ports` and the property hooks
//! (`architecture`, `cpu`, `memory`, `root-device`).

use ferrite_protocol::node::{normalize_mac, Node, Port};
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::InspectorAddPorts;
use crate::store::{Store, StoreError};
use crate::time::api_now;

const GIB: u64 = 1 << 30;

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
pub fn fill_properties(props: &mut Map<String, Value>, inventory: &Value, plugin_data: &Value) {
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
pub async fn sync_ports(
    store: &Store,
    add_ports: InspectorAddPorts,
    node: &Node,
    inventory: &Value,
) -> Result<Vec<String>, StoreError> {
    let interfaces = valid_interfaces(inventory);
    let macs: Vec<String> = interfaces.iter().map(|(m, _)| m.clone()).collect();
    let pxe = pxe_mac(inventory);
    let add: Vec<&String> = match add_ports {
        InspectorAddPorts::Disabled => Vec::new(),
        InspectorAddPorts::Pxe if pxe.is_some() => {
            macs.iter().filter(|m| Some(*m) == pxe.as_ref()).collect()
        }
        InspectorAddPorts::Active => interfaces
            .iter()
            .filter(|(_, has_ip)| *has_ip)
            .map(|(m, _)| m)
            .collect(),
        InspectorAddPorts::Pxe | InspectorAddPorts::All => macs.iter().collect(),
    };
    let mut created = Vec::new();
    for mac in add {
        if let Some(existing) = store.port_by_address(mac).await? {
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
        store.create_port(&port).await?;
        info!(node = %node.uuid, %mac, pxe = port.pxe_enabled, "Port created");
        created.push(mac.clone());
    }
    if let Some(pxe) = &pxe {
        for mut port in store.list_ports(Some(&node.uuid)).await? {
            let wanted = &port.address == pxe;
            if port.pxe_enabled != wanted && macs.contains(&port.address) {
                port.pxe_enabled = wanted;
                port.updated_at = Some(api_now());
                store.update_port(&port).await?;
            }
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
