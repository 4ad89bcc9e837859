//! Nodes and ports with Ironic's field names, as stored and as shown by the
//! API. View-only decorations (`links`, `ports`, `states`...) are added by the
//! API layer, not stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub href: String,
    pub rel: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Link {
    pub fn new(href: impl Into<String>, rel: impl Into<String>) -> Self {
        Self {
            href: href.into(),
            rel: rel.into(),
            kind: None,
        }
    }
}

/// An Ironic node. Every field Ironic 39 shows in `node show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    pub uuid: String,
    pub name: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub driver: String,
    pub driver_info: Map<String, Value>,
    pub driver_internal_info: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub instance_info: Map<String, Value>,
    pub instance_uuid: Option<String>,
    pub instance_name: Option<String>,
    pub extra: Map<String, Value>,
    pub description: Option<String>,
    pub resource_class: Option<String>,
    pub automated_clean: Option<bool>,
    pub power_state: Option<String>,
    pub target_power_state: Option<String>,
    pub provision_state: String,
    pub target_provision_state: Option<String>,
    pub provision_updated_at: Option<String>,
    pub last_error: Option<String>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub fault: Option<String>,
    pub reservation: Option<String>,
    pub console_enabled: bool,
    pub clean_step: Map<String, Value>,
    pub deploy_step: Map<String, Value>,
    pub service_step: Map<String, Value>,
    pub raid_config: Map<String, Value>,
    pub target_raid_config: Map<String, Value>,
    pub network_data: Map<String, Value>,
    /// Trait names. Agents get Ironic's `node.as_dict()` form,
    /// `{"objects": [{"trait": ...}]}`; both forms are read.
    #[serde(deserialize_with = "traits_either_form")]
    pub traits: Vec<String>,
    pub boot_mode: Option<String>,
    pub secure_boot: Option<bool>,
    pub conductor_group: String,
    pub conductor: Option<String>,
    pub chassis_uuid: Option<String>,
    pub allocation_uuid: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    pub protected: bool,
    pub protected_reason: Option<String>,
    pub retired: bool,
    pub retired_reason: Option<String>,
    pub disable_power_off: bool,
    pub parent_node: Option<String>,
    pub shard: Option<String>,
    pub health: Option<String>,
    pub inspection_started_at: Option<String>,
    pub inspection_finished_at: Option<String>,
    pub bios_interface: Option<String>,
    pub boot_interface: Option<String>,
    pub console_interface: Option<String>,
    pub deploy_interface: Option<String>,
    pub firmware_interface: Option<String>,
    pub inspect_interface: Option<String>,
    pub management_interface: Option<String>,
    pub network_interface: Option<String>,
    pub power_interface: Option<String>,
    pub raid_interface: Option<String>,
    pub rescue_interface: Option<String>,
    pub storage_interface: Option<String>,
    pub vendor_interface: Option<String>,
}

impl Default for Node {
    fn default() -> Self {
        Self {
            uuid: String::new(),
            name: None,
            created_at: None,
            updated_at: None,
            driver: String::new(),
            driver_info: Map::new(),
            driver_internal_info: Map::new(),
            properties: Map::new(),
            instance_info: Map::new(),
            instance_uuid: None,
            instance_name: None,
            extra: Map::new(),
            description: None,
            resource_class: None,
            automated_clean: None,
            power_state: None,
            target_power_state: None,
            provision_state: "enroll".into(),
            target_provision_state: None,
            provision_updated_at: None,
            last_error: None,
            maintenance: false,
            maintenance_reason: None,
            fault: None,
            reservation: None,
            console_enabled: false,
            clean_step: Map::new(),
            deploy_step: Map::new(),
            service_step: Map::new(),
            raid_config: Map::new(),
            target_raid_config: Map::new(),
            network_data: Map::new(),
            traits: Vec::new(),
            boot_mode: None,
            secure_boot: None,
            conductor_group: String::new(),
            conductor: None,
            chassis_uuid: None,
            allocation_uuid: None,
            owner: None,
            lessee: None,
            protected: false,
            protected_reason: None,
            retired: false,
            retired_reason: None,
            disable_power_off: false,
            parent_node: None,
            shard: None,
            health: None,
            inspection_started_at: None,
            inspection_finished_at: None,
            bios_interface: None,
            boot_interface: None,
            console_interface: None,
            deploy_interface: None,
            firmware_interface: None,
            inspect_interface: None,
            management_interface: None,
            network_interface: None,
            power_interface: None,
            raid_interface: None,
            rescue_interface: None,
            storage_interface: None,
            vendor_interface: None,
        }
    }
}

/// An Ironic port (a NIC of a node, keyed by MAC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Port {
    pub uuid: String,
    pub address: String,
    pub node_uuid: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub pxe_enabled: bool,
    pub local_link_connection: Map<String, Value>,
    pub physical_network: Option<String>,
    pub extra: Map<String, Value>,
    pub internal_info: Map<String, Value>,
    pub is_smartnic: bool,
    pub portgroup_uuid: Option<String>,
    pub category: Option<String>,
    pub vendor: Option<String>,
}

impl Default for Port {
    fn default() -> Self {
        Self {
            uuid: String::new(),
            address: String::new(),
            node_uuid: String::new(),
            name: None,
            description: None,
            created_at: None,
            updated_at: None,
            pxe_enabled: true,
            local_link_connection: Map::new(),
            physical_network: None,
            extra: Map::new(),
            internal_info: Map::new(),
            is_smartnic: false,
            portgroup_uuid: None,
            category: None,
            vendor: None,
        }
    }
}

/// Normalize a MAC address to Ironic's form (lower-case, colon-separated).
/// Accepts `aa:bb:..`, `aa-bb-..` and `aabb.ccdd.eeff`; `None` if invalid.
pub fn normalize_mac(raw: &str) -> Option<String> {
    let hex: String = raw
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let lower = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).map(|i| &lower[i * 2..i * 2 + 2]).collect();
    Some(pairs.join(":"))
}

/// Read traits as the REST API lists them (`["CUSTOM_A"]`) or as Ironic's
/// object list in agent command parameters (`{"objects": [{"trait": "CUSTOM_A"}]}`).
fn traits_either_form<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Trait {
        #[serde(rename = "trait")]
        name: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Traits {
        Names(Vec<String>),
        Objects { objects: Vec<Trait> },
    }
    Ok(match Option::<Traits>::deserialize(d)? {
        None => Vec::new(),
        Some(Traits::Names(names)) => names,
        Some(Traits::Objects { objects }) => objects.into_iter().map(|t| t.name).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_parses_captured_node() {
        let raw = include_str!("../tests/fixtures/node-final.json");
        let node: Node = serde_json::from_str(raw).unwrap();
        assert_eq!(node.provision_state, "active");
        assert_eq!(node.driver, "fake-hardware");
        assert_eq!(node.deploy_interface.as_deref(), Some("direct"));
    }

    #[test]
    fn macs_normalize() {
        assert_eq!(
            normalize_mac("52-54-00-AB-cd-EF").as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(
            normalize_mac("5254.00ab.cdef").as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(normalize_mac("52:54:00:ab:cd"), None);
        assert_eq!(normalize_mac("zz:54:00:ab:cd:ef"), None);
    }

    #[test]
    fn traits_in_both_forms() {
        let mut raw: Value =
            serde_json::from_str(include_str!("../tests/fixtures/node-final.json")).unwrap();
        raw["traits"] = serde_json::json!(["CUSTOM_GPU"]);
        let listed: Node = serde_json::from_value(raw.clone()).unwrap();
        raw["traits"] = serde_json::json!({"objects": [{"trait": "CUSTOM_GPU", "node_id": 3}]});
        let objects: Node = serde_json::from_value(raw).unwrap();
        assert_eq!(listed.traits, vec!["CUSTOM_GPU"]);
        assert_eq!(objects.traits, listed.traits);
    }
}
