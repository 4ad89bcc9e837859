//! IPA's hardware inventory (`list_hardware_info`), key for key: what the
//! agent reports and what inspection stores.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Inventory {
    pub interfaces: Vec<Interface>,
    pub cpu: Cpu,
    pub disks: Vec<Disk>,
    pub memory: Memory,
    pub bmc_address: Option<String>,
    pub bmc_v6address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_mac: Option<String>,
    pub system_vendor: SystemVendor,
    pub boot: Boot,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Interface {
    pub name: String,
    pub mac_address: String,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub has_carrier: bool,
    pub lldp: Option<Value>,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub client_id: Option<String>,
    pub biosdevname: Option<String>,
    pub speed_mbps: Option<u64>,
    pub pci_address: Option<String>,
    pub driver: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Cpu {
    pub model_name: Option<String>,
    /// MHz as a string, as lscpu prints it.
    pub frequency: Option<String>,
    pub count: u32,
    pub architecture: String,
    pub flags: Vec<String>,
    pub socket_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Disk {
    pub name: String,
    pub model: Option<String>,
    pub size: u64,
    pub rotational: bool,
    pub wwn: Option<String>,
    pub serial: Option<String>,
    pub vendor: Option<String>,
    pub wwn_with_extension: Option<String>,
    pub wwn_vendor_extension: Option<String>,
    pub hctl: Option<String>,
    pub by_path: Option<String>,
    pub logical_sectors: u64,
    pub physical_sectors: u64,
    pub tran: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Memory {
    /// Bytes the kernel manages (`MemTotal`).
    pub total: u64,
    /// Installed DIMMs, MiB (SMBIOS memory devices).
    pub physical_mb: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Firmware {
    pub vendor: Option<String>,
    pub version: Option<String>,
    pub build_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SystemVendor {
    pub product_name: Option<String>,
    pub serial_number: Option<String>,
    pub manufacturer: Option<String>,
    pub firmware: Firmware,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Boot {
    /// `uefi` or `bios`.
    pub current_boot_mode: String,
    /// The raw `BOOTIF` value.
    pub pxe_interface: Option<String>,
}

/// IPA's `serializable_fields`, object by object (sorted): the inventory
/// JSON's key sets, exactly. `bmc_mac` is sent only when detected.
pub mod ipa_keys {
    pub const INVENTORY: &[&str] = &[
        "bmc_address",
        "bmc_v6address",
        "boot",
        "cpu",
        "disks",
        "hostname",
        "interfaces",
        "memory",
        "system_vendor",
    ];
    pub const INVENTORY_OPTIONAL: &[&str] = &["bmc_mac"];
    pub const INTERFACE: &[&str] = &[
        "biosdevname",
        "client_id",
        "driver",
        "has_carrier",
        "ipv4_address",
        "ipv6_address",
        "lldp",
        "mac_address",
        "name",
        "pci_address",
        "product",
        "speed_mbps",
        "vendor",
    ];
    pub const CPU: &[&str] = &[
        "architecture",
        "count",
        "flags",
        "frequency",
        "model_name",
        "socket_count",
    ];
    pub const DISK: &[&str] = &[
        "by_path",
        "hctl",
        "logical_sectors",
        "model",
        "name",
        "physical_sectors",
        "rotational",
        "serial",
        "size",
        "tran",
        "vendor",
        "wwn",
        "wwn_vendor_extension",
        "wwn_with_extension",
    ];
    pub const MEMORY: &[&str] = &["physical_mb", "total"];
    pub const SYSTEM_VENDOR: &[&str] =
        &["firmware", "manufacturer", "product_name", "serial_number"];
    pub const FIRMWARE: &[&str] = &["build_date", "vendor", "version"];
    pub const BOOT: &[&str] = &["current_boot_mode", "pxe_interface"];
}

/// Where an inventory's JSON differs in shape from IPA's: objects whose
/// keys are not exactly [`ipa_keys`]'s (empty: the same shape).
pub fn ipa_shape_mismatches(inventory: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, v: &Value, want: &[&str], optional: &[&str]| {
        let Some(obj) = v.as_object() else {
            out.push(format!("{what}: not an object"));
            return;
        };
        let mut keys: Vec<&str> = obj
            .keys()
            .map(String::as_str)
            .filter(|k| !optional.contains(k))
            .collect();
        keys.sort_unstable();
        if keys != want {
            out.push(format!("{what}: keys {keys:?}, IPA's {want:?}"));
        }
    };
    check(
        "inventory",
        inventory,
        ipa_keys::INVENTORY,
        ipa_keys::INVENTORY_OPTIONAL,
    );
    let list = |key: &str| inventory[key].as_array().cloned().unwrap_or_default();
    for (i, iface) in list("interfaces").iter().enumerate() {
        check(&format!("interfaces[{i}]"), iface, ipa_keys::INTERFACE, &[]);
    }
    for (i, disk) in list("disks").iter().enumerate() {
        check(&format!("disks[{i}]"), disk, ipa_keys::DISK, &[]);
    }
    check("cpu", &inventory["cpu"], ipa_keys::CPU, &[]);
    check("memory", &inventory["memory"], ipa_keys::MEMORY, &[]);
    check(
        "system_vendor",
        &inventory["system_vendor"],
        ipa_keys::SYSTEM_VENDOR,
        &[],
    );
    check(
        "system_vendor.firmware",
        &inventory["system_vendor"]["firmware"],
        ipa_keys::FIRMWARE,
        &[],
    );
    check("boot", &inventory["boot"], ipa_keys::BOOT, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key set must be exactly IPA's (`serializable_fields`).
    #[test]
    fn key_sets_match_ipa() {
        let inv = serde_json::to_value(Inventory {
            interfaces: vec![Interface::default()],
            disks: vec![Disk::default()],
            ..Inventory::default()
        })
        .unwrap();
        // IPA's key lists (`ipa_keys`) are checked against the real IPA's
        // inventory in tests/interop_fixtures.rs.
        assert_eq!(ipa_shape_mismatches(&inv), Vec::<String>::new());
        let mut extra = inv.clone();
        extra["disks"][0]["uuid"] = Value::Null;
        extra.as_object_mut().unwrap().remove("hostname");
        assert_eq!(ipa_shape_mismatches(&extra).len(), 2);
    }

    #[test]
    fn parses_the_captured_inspection_inventory() {
        let raw = include_str!("../tests/fixtures/inspect-stored-inventory.json");
        let v: Value = serde_json::from_str(raw).unwrap();
        let inv: Inventory =
            serde_json::from_value(v.get("inventory").cloned().unwrap_or(v)).unwrap();
        assert!(!inv.interfaces.is_empty());
    }
}
