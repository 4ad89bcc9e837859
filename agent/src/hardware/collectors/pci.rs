//! IPA's `pci-devices` collector: every device under
//! `/sys/bus/pci/devices` with its ids, class, revision, address and NUMA
//! node, all strings as sysfs spells them without the `0x`.

use std::path::Path;

use serde::Serialize;
use tracing::{debug, warn};

use super::{list_dir, read_attr, CollectorError};

/// Where the devices are, under the sysfs root.
pub const DEVICES_DIR: &str = "bus/pci/devices";
/// What is read in each device directory.
pub const DEVICE_FILES: &[&str] = &["vendor", "device", "class", "revision", "numa_node"];

/// One entry of `pci_devices` (IPA's keys; `revision` and `numa_node_id`
/// are `null` when the file is missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    pub vendor_id: String,
    pub product_id: String,
    pub class: String,
    pub revision: Option<String>,
    pub bus: String,
    pub numa_node_id: Option<String>,
}

/// `0x8086` → `8086`, as IPA's `split('x')[1]`.
fn hex_tail(path: &Path) -> Result<String, CollectorError> {
    let raw = read_attr(path)?;
    raw.split('x')
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| CollectorError::format(path, format!("{raw:?} is not 0x-prefixed")))
}

fn device(dir: &Path, bus: &str) -> Result<PciDevice, CollectorError> {
    let vendor_id = hex_tail(&dir.join("vendor"))?;
    let product_id = hex_tail(&dir.join("device"))?;
    let class = hex_tail(&dir.join("class"))?;
    let revision = match dir.join("revision") {
        p if p.is_file() => hex_tail(&p)
            .inspect_err(|e| warn!(device = bus, error = %e, "no PCI revision"))
            .ok(),
        _ => None,
    };
    let numa_node_id = match dir.join("numa_node") {
        p if p.is_file() => read_attr(&p)
            .inspect_err(|e| warn!(device = bus, error = %e, "no PCI NUMA node"))
            .ok(),
        _ => None,
    };
    Ok(PciDevice {
        vendor_id,
        product_id,
        class,
        revision,
        bus: bus.to_string(),
        numa_node_id,
    })
}

/// All PCI devices; an error only when the bus directory cannot be listed.
/// A device whose ids cannot be read is logged and skipped, as IPA does.
pub fn collect(sysfs: &Path) -> Result<Vec<PciDevice>, CollectorError> {
    let root = sysfs.join(DEVICES_DIR);
    let mut out = Vec::new();
    for bus in list_dir(&root)? {
        let dir = root.join(&bus);
        if !dir.is_dir() {
            continue;
        }
        match device(&dir, &bus) {
            Ok(d) => {
                debug!(vendor = %d.vendor_id, product = %d.product_id, class = %d.class, revision = ?d.revision, "found a PCI device");
                out.push(d);
            }
            Err(e) => warn!(device = %bus, error = %e, "skipping a PCI device"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hardware/ferrite-ci-host/sys")
    }

    #[test]
    fn reads_a_captured_machine() {
        let devices = collect(&fixture()).unwrap();
        assert!(!devices.is_empty());
        let first = &devices[0];
        assert_eq!(first.bus, "0000:00:00.0");
        for d in &devices {
            assert_eq!(d.vendor_id.len(), 4, "{d:?}");
            assert_eq!(d.product_id.len(), 4, "{d:?}");
            assert_eq!(d.class.len(), 6, "{d:?}");
            assert!(d.vendor_id.chars().all(|c| c.is_ascii_hexdigit()), "{d:?}");
        }
        let json = serde_json::to_value(first).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bus",
                "class",
                "numa_node_id",
                "product_id",
                "revision",
                "vendor_id"
            ]
        );
    }

    #[test]
    fn odd_devices_are_skipped_or_partial() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(DEVICES_DIR);
        let good = root.join("0000:00:1f.2");
        fs::create_dir_all(&good).unwrap();
        fs::write(good.join("vendor"), "0x8086\n").unwrap();
        fs::write(good.join("device"), "0x2922\n").unwrap();
        fs::write(good.join("class"), "0x010601\n").unwrap();
        // No revision, no numa_node: both null.
        let bad = root.join("0000:00:02.0");
        fs::create_dir_all(&bad).unwrap();
        fs::write(bad.join("vendor"), "garbage\n").unwrap();
        fs::write(bad.join("device"), "0x1234\n").unwrap();
        fs::write(bad.join("class"), "0x030000\n").unwrap();
        fs::write(root.join("not-a-dir"), "").unwrap();
        let devices = collect(dir.path()).unwrap();
        assert_eq!(
            devices,
            [PciDevice {
                vendor_id: "8086".into(),
                product_id: "2922".into(),
                class: "010601".into(),
                revision: None,
                bus: "0000:00:1f.2".into(),
                numa_node_id: None,
            }]
        );
        assert!(collect(&dir.path().join("nowhere")).is_err());
    }
}
