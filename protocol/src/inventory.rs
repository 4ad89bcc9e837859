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
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&inv),
            [
                "bmc_address",
                "bmc_v6address",
                "boot",
                "cpu",
                "disks",
                "hostname",
                "interfaces",
                "memory",
                "system_vendor"
            ]
        );
        assert_eq!(
            keys(&inv["interfaces"][0]),
            [
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
                "vendor"
            ]
        );
        assert_eq!(
            keys(&inv["cpu"]),
            [
                "architecture",
                "count",
                "flags",
                "frequency",
                "model_name",
                "socket_count"
            ]
        );
        assert_eq!(
            keys(&inv["disks"][0]),
            [
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
                "wwn_with_extension"
            ]
        );
        assert_eq!(keys(&inv["memory"]), ["physical_mb", "total"]);
        assert_eq!(
            keys(&inv["system_vendor"]),
            ["firmware", "manufacturer", "product_name", "serial_number"]
        );
        assert_eq!(
            keys(&inv["system_vendor"]["firmware"]),
            ["build_date", "vendor", "version"]
        );
        assert_eq!(keys(&inv["boot"]), ["current_boot_mode", "pxe_interface"]);
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
