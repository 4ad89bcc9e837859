//! The machine's network interfaces, read from `<sysfs>/class/net/*` by
//! IPA's rule. One listing serves the lookup, the inventory and PID 1, so
//! the MACs the agent looks up with are the MACs its inventory reports.
//!
//! IPA (`ironic_python_agent/netutils.py`, 13.0.0):
//!
//! ```python
//! def list_interfaces():
//!     iface_names = os.listdir('/sys/class/net')
//!     return [name for name in iface_names
//!             if is_vlan(name) or is_network_device(name) or is_bond(name)]
//! ```
//!
//! `is_network_device`: `/sys/class/net/<name>/device` exists;
//! `is_bond`: `/sys/class/net/<name>/bonding` exists; `is_vlan`:
//! `name.partition('.')` leaves a suffix of digits. Then
//! `hardware.py:get_interface_info` drops an interface whose
//! `get_mac_addr` is `None`, which it is for a MAC starting `fa:`.
//! Bridges, veths, `ifb`s, tunnels and `lo` have none of the three marks,
//! so they are not the machine's NICs.

use std::fs;
use std::path::Path;

use ferrite_protocol::node::normalize_mac;
use tracing::debug;

/// The first octet IPA's `get_mac_addr` refuses: "a locally assigned
/// address", possibly an in-band BMC connection, which Ironic must not
/// take for a port.
const IGNORED_MAC_PREFIX: &str = "fa:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    /// The kernel's link index; 0 (never a link's index) where sysfs has no
    /// `ifindex`, as in captured fixture trees. Only PID 1 needs it, and it
    /// opens only NICs that have one (`init::net::link::openable_nics`).
    pub ifindex: u32,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

impl Nic {
    pub fn mac_bytes(&self) -> Vec<u8> {
        self.mac
            .split(':')
            .filter_map(|b| u8::from_str_radix(b, 16).ok())
            .collect()
    }
}

/// IPA's `is_vlan`: `eth0.100`, not `eth0.` or `eth0.1.2`.
fn is_vlan_name(name: &str) -> bool {
    name.split_once('.')
        .is_some_and(|(_, vid)| !vid.is_empty() && vid.bytes().all(|b| b.is_ascii_digit()))
}

/// IPA's `is_network_device`: a device (PCI, USB, virtio...) backs it.
pub fn is_physical(sysfs: &Path, name: &str) -> bool {
    sysfs.join("class/net").join(name).join("device").exists()
}

/// IPA's `list_interfaces` rule.
fn listed_by_ipa(sysfs: &Path, name: &str) -> bool {
    let dir = sysfs.join("class/net").join(name);
    is_vlan_name(name) || dir.join("device").exists() || dir.join("bonding").exists()
}

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// One interface by name, whatever it is; `None` without a usable MAC.
/// An all-zero address is no MAC: it identifies no port (IPA would report
/// it, and Ironic would take it for one).
fn read_nic(sysfs: &Path, name: &str) -> Option<Nic> {
    let dir = sysfs.join("class/net").join(name);
    let mac = normalize_mac(&read_trim(&dir.join("address"))?)?;
    if mac == "00:00:00:00:00:00" {
        return None;
    }
    let ifindex = read_trim(&dir.join("ifindex"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Some(Nic {
        name: name.to_string(),
        ifindex,
        mac,
    })
}

/// Every interface IPA's `list_interfaces` keeps that has a MAC, by name,
/// including those whose MAC IPA then ignores: the links that exist, for
/// PID 1 to bring up. What Ironic is told is [`list`].
/// A missing tree is empty, and a NIC that vanishes mid-scan is skipped.
pub fn scan(sysfs: &Path) -> Vec<Nic> {
    let Ok(entries) = fs::read_dir(sysfs.join("class/net")) else {
        return Vec::new();
    };
    let mut nics: Vec<Nic> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !listed_by_ipa(sysfs, &name) {
                return None;
            }
            read_nic(sysfs, &name)
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// The machine's NICs as Ironic sees them: the inventory's interfaces, and
/// so the MACs of the lookup (IPA's lookup sends its inventory's MACs).
pub fn list(sysfs: &Path) -> Vec<Nic> {
    scan(sysfs)
        .into_iter()
        .filter(|nic| {
            let ignored = nic.mac.starts_with(IGNORED_MAC_PREFIX);
            if ignored {
                debug!(nic = %nic.name, mac = %nic.mac, "locally assigned MAC, not reported (as IPA)");
            }
            !ignored
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `class/net` entry; `marks` are the sub-directories it has
    /// (`device`, `bonding`).
    fn iface(root: &Path, name: &str, mac: &str, marks: &[&str]) {
        let dir = root.join("class/net").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        for m in marks {
            fs::create_dir_all(dir.join(m)).unwrap();
        }
    }

    fn names(nics: &[Nic]) -> Vec<&str> {
        nics.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn keeps_what_ipa_keeps() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        iface(sys, "eth1", "52:54:00:12:34:57", &["device"]);
        iface(sys, "eth0", "52:54:00:12:34:56", &["device"]);
        iface(sys, "bond0", "52:54:00:12:34:56", &["bonding"]);
        iface(sys, "eth0.100", "52:54:00:12:34:56", &[]);
        // Virtual: no device, not a bond, not a VLAN name.
        iface(sys, "lo", "00:00:00:00:00:00", &[]);
        iface(sys, "virbr0", "52:54:00:00:00:09", &[]);
        iface(sys, "ifb0", "76:f5:50:cb:3b:1a", &[]);
        iface(sys, "veth.x", "76:f5:50:cb:3b:1b", &[]);
        iface(sys, "eth0.", "76:f5:50:cb:3b:1c", &[]);
        let nics = list(sys);
        assert_eq!(names(&nics), ["bond0", "eth0", "eth0.100", "eth1"]);
        assert_eq!(nics[1].mac, "52:54:00:12:34:56");
    }

    #[test]
    fn a_nic_needs_a_mac_ipa_would_report() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        iface(sys, "eth0", "52:54:00:12:34:56", &["device"]);
        iface(sys, "eth1", "00:00:00:00:00:00", &["device"]);
        iface(sys, "ib0", "80:00:00:48:fe:80:00:00:00:00", &["device"]);
        iface(sys, "usb0", "FA:16:3E:00:00:01", &["device"]);
        fs::create_dir_all(sys.join("class/net/eth2/device")).unwrap();
        assert_eq!(names(&list(sys)), ["eth0"]);
        // The `fa:` NIC exists as a link; only Ironic is not told of it.
        assert_eq!(names(&scan(sys)), ["eth0", "usb0"]);
        assert_eq!(scan(sys)[1].mac, "fa:16:3e:00:00:01");
    }

    #[test]
    fn ifindex_when_sysfs_has_it() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        iface(sys, "eth0", "52:54:00:12:34:56", &["device"]);
        iface(sys, "eth1", "52:54:00:12:34:57", &["device"]);
        fs::write(sys.join("class/net/eth0/ifindex"), "2\n").unwrap();
        let nics = list(sys);
        assert_eq!((nics[0].ifindex, nics[1].ifindex), (2, 0));
        assert_eq!(nics[0].mac_bytes(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn vlan_names_as_ipa_reads_them() {
        for (name, vlan) in [
            ("eth0.100", true),
            ("eno1.4094", true),
            ("eth0", false),
            ("eth0.", false),
            ("eth0.1.2", false),
            ("eth0.x", false),
        ] {
            assert_eq!(is_vlan_name(name), vlan, "{name}");
        }
    }

    #[test]
    fn missing_tree_is_empty() {
        assert!(list(Path::new("/nonexistent-sysfs")).is_empty());
    }
}
