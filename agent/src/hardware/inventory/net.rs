//! Network interfaces for the inventory: sysfs for the hardware facts, the
//! kernel's address list (getifaddrs, i.e. netlink) for the IPs.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use ferrite_protocol::inventory::Interface;

use crate::hardware::nics::{self, Nic};

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `0000:18:00.0`-shaped path component.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars().filter(|c| c.is_ascii_hexdigit()).count() == 9
}

/// What [`collect`] and `hardware::nics` (the lookup's and PID 1's NIC
/// list) read under `<sysfs>/class/net/<name>/`; the hardware capture
/// records exactly these.
pub const SYSFS_NET_FILES: &[&str] = &[
    "address",
    "type",
    "ifindex",
    "carrier",
    "speed",
    "device/vendor",
    "device/device",
];
/// Links it follows: the device (its PCI address) and its driver's name.
pub const SYSFS_NET_LINKS: &[&str] = &["device", "device/driver"];
/// Directories whose existence it checks.
pub const SYSFS_NET_MARKERS: &[&str] = &["bonding"];

/// Addresses per interface: (first IPv4, first global-or-any IPv6).
pub type Addresses = BTreeMap<String, (Option<String>, Option<String>)>;

/// The live system's addresses.
pub fn live_addresses() -> Addresses {
    let mut out: Addresses = BTreeMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let Some(ip) = a.address.as_ref().and_then(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        }) else {
            continue;
        };
        let entry = out.entry(a.interface_name.clone()).or_default();
        match ip {
            IpAddr::V4(v4) if entry.0.is_none() => entry.0 = Some(v4.to_string()),
            IpAddr::V6(v6) => {
                // Prefer a global address; keep a link-local one only if nothing better.
                let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
                let have_global = entry
                    .1
                    .as_ref()
                    .is_some_and(|cur: &String| !cur.starts_with("fe80"));
                if entry.1.is_none() || (!link_local && !have_global) {
                    entry.1 = Some(v6.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// The machine's NICs (`hardware::nics::list`, IPA's `list_interfaces`:
/// physical NICs, bonds and VLANs) with their hardware facts.
pub fn collect(sysfs: &Path, addresses: &Addresses) -> Vec<Interface> {
    nics::list(sysfs)
        .into_iter()
        .map(|Nic { name, mac, .. }| {
            let dir = sysfs.join("class/net").join(&name);
            let device = fs::canonicalize(dir.join("device")).ok();
            let pci_address = device.as_ref().and_then(|p| {
                p.ancestors()
                    .filter_map(|a| a.file_name()?.to_str().map(str::to_string))
                    .find(|c| is_pci_address(c))
            });
            // The link's last component names the driver; its target need not exist
            // (fixture trees keep only the link).
            let driver = fs::read_link(dir.join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
            let (ipv4, ipv6) = addresses.get(&name).cloned().unwrap_or_default();
            Interface {
                mac_address: mac,
                ipv4_address: ipv4,
                ipv6_address: ipv6,
                has_carrier: read_trim(&dir.join("carrier")).as_deref() == Some("1"),
                lldp: None,
                vendor: read_trim(&dir.join("device/vendor")),
                product: read_trim(&dir.join("device/device")),
                client_id: None,
                biosdevname: None,
                speed_mbps: read_trim(&dir.join("speed"))
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|s| *s > 0)
                    .map(|s| s as u64),
                pci_address,
                driver,
                name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// Two PCI NICs (one a virtio child of its PCI function), a VLAN, a
    /// virtual bridge that IPA leaves out, and loopback.
    #[test]
    fn multi_nic_tree() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        let add_nic =
            |name: &str, mac: &str, devpath: &str, driver: &str, carrier: &str, speed: &str| {
                let dev = sys.join(devpath);
                fs::create_dir_all(&dev).unwrap();
                fs::write(dev.join("vendor"), "0x8086\n").unwrap();
                fs::write(dev.join("device"), "0x1572\n").unwrap();
                let drv = sys.join("bus/pci/drivers").join(driver);
                fs::create_dir_all(&drv).unwrap();
                symlink(&drv, dev.join("driver")).unwrap();
                let net = sys.join("class/net").join(name);
                fs::create_dir_all(&net).unwrap();
                symlink(&dev, net.join("device")).unwrap();
                fs::write(net.join("address"), format!("{mac}\n")).unwrap();
                fs::write(net.join("carrier"), carrier).unwrap();
                fs::write(net.join("speed"), speed).unwrap();
            };
        add_nic(
            "eno1",
            "AA:BB:CC:00:00:01",
            "devices/pci0000:17/0000:18:00.0",
            "i40e",
            "1\n",
            "10000\n",
        );
        add_nic(
            "ens3",
            "52:54:00:00:00:02",
            "devices/pci0000:00/0000:00:03.0/virtio0",
            "virtio_net",
            "0\n",
            "-1\n",
        );
        for (name, mac) in [
            ("eno1.100", "aa:bb:cc:00:00:01"),
            ("virbr0", "52:54:00:00:00:09"),
            ("lo", "00:00:00:00:00:00"),
        ] {
            let net = sys.join("class/net").join(name);
            fs::create_dir_all(&net).unwrap();
            fs::write(net.join("address"), format!("{mac}\n")).unwrap();
        }
        let mut addrs = Addresses::new();
        addrs.insert(
            "eno1".into(),
            (Some("10.0.0.5".into()), Some("2001:db8::5".into())),
        );
        let nics = collect(sys, &addrs);
        let names: Vec<_> = nics.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["eno1", "eno1.100", "ens3"]);
        let eno1 = &nics[0];
        assert_eq!(eno1.mac_address, "aa:bb:cc:00:00:01");
        assert_eq!(eno1.pci_address.as_deref(), Some("0000:18:00.0"));
        assert_eq!(eno1.driver.as_deref(), Some("i40e"));
        assert_eq!(
            (eno1.vendor.as_deref(), eno1.product.as_deref()),
            (Some("0x8086"), Some("0x1572"))
        );
        assert_eq!(eno1.speed_mbps, Some(10000));
        assert!(eno1.has_carrier);
        assert_eq!(eno1.ipv4_address.as_deref(), Some("10.0.0.5"));
        let ens3 = &nics[2];
        assert_eq!(ens3.pci_address.as_deref(), Some("0000:00:03.0"));
        assert_eq!((ens3.speed_mbps, ens3.has_carrier), (None, false));
    }
}
