//! Network interfaces as sysfs shows them (`<sysfs>/class/net/*`).

use std::fs;
use std::path::Path;

use ferrite_protocol::node::normalize_mac;

/// ARPHRD_ETHER: the only link type whose MAC Ironic knows as a port.
const ARPHRD_ETHER: &str = "1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: String,
}

/// Ethernet NICs with a real MAC, sorted by name. Missing or unreadable
/// entries are skipped: a NIC that vanishes mid-scan is not an error.
pub fn list_nics(sysfs_root: &Path) -> Vec<Nic> {
    let Ok(entries) = fs::read_dir(sysfs_root.join("class/net")) else {
        return Vec::new();
    };
    let mut nics: Vec<Nic> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            let link_type = fs::read_to_string(dir.join("type")).unwrap_or_default();
            if name == "lo" || link_type.trim() != ARPHRD_ETHER {
                return None;
            }
            let mac = normalize_mac(fs::read_to_string(dir.join("address")).ok()?.trim())?;
            (mac != "00:00:00:00:00:00").then_some(Nic { name, mac })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(root: &Path, name: &str, mac: &str, link_type: &str) {
        let dir = root.join("class/net").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        fs::write(dir.join("type"), format!("{link_type}\n")).unwrap();
    }

    #[test]
    fn lists_ethernet_nics_only() {
        let root = tempfile::tempdir().unwrap();
        nic(root.path(), "lo", "00:00:00:00:00:00", "772");
        nic(root.path(), "eth1", "52:54:00:12:34:57", "1");
        nic(root.path(), "eth0", "52:54:00:12:34:56", "1");
        nic(root.path(), "dummy0", "00:00:00:00:00:00", "1");
        nic(root.path(), "ib0", "80:00:00:48:fe:80", "32");
        let nics = list_nics(root.path());
        let macs: Vec<_> = nics.iter().map(|n| n.mac.as_str()).collect();
        assert_eq!(macs, ["52:54:00:12:34:56", "52:54:00:12:34:57"]);
    }

    #[test]
    fn missing_tree_is_empty() {
        assert!(list_nics(Path::new("/nonexistent-sysfs")).is_empty());
    }
}
