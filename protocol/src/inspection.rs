//! In-band inspection: what the agent posts to `/v1/continue_inspection`
//! (IPA's `inspector.call_inspector`) and what Ironic answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inventory::{Disk, Inventory};

/// The body IPA posts. `inventory` and `error` are always present;
/// the rest only when their collector ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InspectionData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// `guess_root_disk` on the inventory's disks (absent if none fits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk: Option<Disk>,
    /// The raw `BOOTIF` (deprecated by IPA but still sent).
    /// Always sent, `null` when unknown, as IPA does.
    #[serde(default)]
    pub boot_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<InspectionConfiguration>,
    /// Base64 tar.gz of the ramdisk logs (`logs` collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    /// `{ifname: [[tlv_type, "hex"], ...]}` (`lldp` collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lldp_raw: Option<Value>,
    /// `[{vendor_id, product_id, class, revision, bus, numa_node_id}]`
    /// (`pci-devices` collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_devices: Option<Value>,
    /// `{ram: [...], cpus: [...], nics: [...]}` (`numa-topology`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_topology: Option<Value>,
    /// `{bios: {...}, cpu: [...], memory: {..., devices: [...]}}`, dmidecode's
    /// fields (`dmi-decode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmi: Option<Value>,
    /// `[{product, vendor, handle}]` (`usb-devices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb_devices: Option<Value>,
    /// hardware-detect's `[[category, item, key, value], ...]`
    /// (`extra-hardware`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// `None`, or `"The following errors were encountered:\n* ..."`.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectionConfiguration {
    pub collectors: Vec<String>,
    pub managers: Vec<ManagerVersion>,
}

/// One hardware manager, as `get_version()` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagerVersion {
    pub name: String,
    pub version: String,
}

/// IPA's `AccumulatedFailures.get_error`.
pub fn accumulated_error(failures: &[String]) -> Option<String> {
    if failures.is_empty() {
        return None;
    }
    let items: Vec<String> = failures.iter().map(|f| format!("* {f}")).collect();
    Some(format!(
        "The following errors were encountered:\n{}",
        items.join("\n")
    ))
}

/// Ironic's answer: `{"uuid": ...}` below 1.84 (and from ironic-inspector),
/// the lookup-shaped `{"node": {"uuid": ...}, "config": ...}` at ≥ 1.84.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InspectionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Value>,
}

impl InspectionResponse {
    pub fn node_uuid(&self) -> Option<String> {
        self.uuid
            .clone()
            .or_else(|| {
                self.node
                    .as_ref()?
                    .get("uuid")?
                    .as_str()
                    .map(str::to_string)
            })
            .filter(|u| !u.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_ipas() {
        assert_eq!(accumulated_error(&[]), None);
        assert_eq!(
            accumulated_error(&["a".into(), "b c".into()]).as_deref(),
            Some("The following errors were encountered:\n* a\n* b c")
        );
    }

    #[test]
    fn both_answer_shapes_give_the_uuid() {
        let old: InspectionResponse = serde_json::from_str(r#"{"uuid": "u1"}"#).unwrap();
        assert_eq!(old.node_uuid().as_deref(), Some("u1"));
        let new: InspectionResponse =
            serde_json::from_str(r#"{"node": {"uuid": "u2", "properties": {}}, "config": {}}"#)
                .unwrap();
        assert_eq!(new.node_uuid().as_deref(), Some("u2"));
        let none: InspectionResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(none.node_uuid(), None);
    }

    /// IPA's optional collectors' keys survive a round trip (the
    /// conductor stores what IPA posted).
    #[test]
    fn optional_collector_keys_round_trip() {
        let body = serde_json::json!({
            "boot_interface": null,
            "error": null,
            "pci_devices": [{"vendor_id": "8086", "product_id": "0d57", "class": "060000",
                             "revision": "00", "bus": "0000:00:00.0", "numa_node_id": "-1"}],
            "numa_topology": {"ram": [], "cpus": [], "nics": []},
            "dmi": {"bios": {}, "cpu": [], "memory": {"devices": []}},
            "usb_devices": [],
            "data": [["system", "product", "name", "X"]],
        });
        let data: InspectionData = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(data.data, Some(body["data"].clone()));
        assert_eq!(serde_json::to_value(&data).unwrap(), body);
    }

    #[test]
    fn error_and_boot_interface_are_always_serialized() {
        let data = InspectionData::default();
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            r#"{"boot_interface":null,"error":null}"#
        );
    }
}
