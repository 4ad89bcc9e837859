//! NICs: found in sysfs, configured over rtnetlink (no `ip` binary in the
//! ramdisk).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;
use rtnetlink::packet_route::address::{AddressAttribute, CacheInfo};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};

pub use crate::hardware::nics::Nic;

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The NICs PID 1 may open, by name: of the one listing's interfaces
/// (`hardware::nics::scan`), the Ethernet ones backed by a device whose
/// driver is bound. VLANs and bonds are PID 1's own to make, not to find.
/// `scan`, not `list`: a NIC whose MAC IPA keeps from Ironic (`fa:...`)
/// still needs an address.
pub fn openable_nics(sysfs: &Path) -> Vec<Nic> {
    crate::hardware::nics::scan(sysfs)
        .into_iter()
        .filter(|n| {
            n.ifindex != 0
                && crate::hardware::nics::is_physical(sysfs, &n.name)
                && read(&sysfs.join("class/net").join(&n.name).join("type")).as_deref()
                    == Some(ARPHRD_ETHER)
                && driver_bound(sysfs, &n.name)
        })
        .collect()
}

/// ARPHRD_ETHER: DHCP here speaks Ethernet frames.
const ARPHRD_ETHER: &str = "1";

/// Whether the NIC's driver has finished probing its device: the kernel
/// links `device/driver` only once probe returns. Some drivers register
/// the netdev before their probe is done (e100 creates its DMA pool after
/// `register_netdev`), and opening the link in that window oopses the
/// kernel (seen under QEMU: a NULL dereference in `e100_alloc_cbs`, and
/// no network for the boot). A NIC not yet bound is left for the next scan.
pub fn driver_bound(sysfs: &Path, name: &str) -> bool {
    sysfs
        .join("class/net")
        .join(name)
        .join("device/driver")
        .exists()
}

/// `carrier` reads 1 only once the link is up and cabled.
pub fn has_carrier(sysfs: &Path, name: &str) -> bool {
    read(&sysfs.join("class/net").join(name).join("carrier")).as_deref() == Some("1")
}

/// Wait until the kernel runs the link (`operstate` up, or `unknown` for
/// drivers that do not report it), polling every 10 ms, at most `budget`;
/// true if it does.
pub async fn wait_operational(sysfs: &Path, name: &str, budget: std::time::Duration) -> bool {
    let path = sysfs.join("class/net").join(name).join("operstate");
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        if matches!(read(&path).as_deref(), Some("up" | "unknown")) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub fn ifindex(sysfs: &Path, name: &str) -> Option<u32> {
    read(&sysfs.join("class/net").join(name).join("ifindex"))?
        .parse()
        .ok()
}

pub async fn set_up(handle: &Handle, ifindex: u32) -> anyhow::Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(ifindex).up().build())
        .execute()
        .await
        .with_context(|| format!("setting link {ifindex} up"))
}

/// Lifetimes of an address, in seconds (`ip addr ... preferred_lft P
/// valid_lft V`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub preferred: u32,
    pub valid: u32,
}

impl Lifetimes {
    /// A DHCPv4 lease: valid and preferred for its remaining time.
    pub fn lease(secs: u32) -> Self {
        Self {
            preferred: secs,
            valid: secs,
        }
    }
}

/// Add or update (`replace`: a renewal never drops the address)
/// `addr/prefix_len` with its lifetimes (`None`: forever), as
/// `ip addr replace ... preferred_lft P valid_lft V`.
pub async fn add_address(
    handle: &Handle,
    ifindex: u32,
    addr: IpAddr,
    prefix_len: u8,
    lifetimes: Option<Lifetimes>,
) -> anyhow::Result<()> {
    let mut req = handle.address().add(ifindex, addr, prefix_len).replace();
    if let Some(l) = lifetimes {
        let mut info = CacheInfo::default();
        info.ifa_preferred = l.preferred;
        info.ifa_valid = l.valid;
        req.message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(info));
    }
    req.execute()
        .await
        .with_context(|| format!("adding {addr}/{prefix_len} to link {ifindex}"))
}

/// Remove `addr/prefix_len`; the kernel drops the routes through it with it.
pub async fn del_address(
    handle: &Handle,
    ifindex: u32,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> anyhow::Result<()> {
    let msg = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(ifindex)
        .address(addr, prefix_len)
        .build();
    handle
        .address()
        .del(msg)
        .execute()
        .await
        .with_context(|| format!("removing {addr}/{prefix_len} from link {ifindex}"))
}

pub async fn add_default_route(handle: &Handle, ifindex: u32, gw: Ipv4Addr) -> anyhow::Result<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(ifindex)
        .gateway(gw)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding the default route via {gw}"))
}

#[cfg(test)]
mod driver_tests {
    use super::*;

    #[test]
    fn a_nic_is_bound_once_its_device_has_a_driver() {
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("devices/pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(&dev).unwrap();
        let net = root.path().join("class/net/eth0");
        std::fs::create_dir_all(&net).unwrap();
        std::os::unix::fs::symlink(&dev, net.join("device")).unwrap();
        assert!(!driver_bound(root.path(), "eth0"), "probing");
        let drv = root.path().join("bus/pci/drivers/e100");
        std::fs::create_dir_all(&drv).unwrap();
        std::os::unix::fs::symlink(&drv, dev.join("driver")).unwrap();
        assert!(driver_bound(root.path(), "eth0"));
        assert!(!driver_bound(root.path(), "eth9"));
    }
}

#[cfg(test)]
mod openable_tests {
    use std::fs;

    use super::*;

    /// `class/net/<name>` with a MAC, a link type and an ifindex; with
    /// `driver`, a device whose driver is bound; with `Some("")`, a device
    /// still probing.
    fn iface(root: &Path, name: &str, mac: &str, link_type: &str, driver: Option<&str>) {
        let net = root.join("class/net").join(name);
        fs::create_dir_all(&net).unwrap();
        fs::write(net.join("address"), format!("{mac}\n")).unwrap();
        fs::write(net.join("type"), format!("{link_type}\n")).unwrap();
        fs::write(net.join("ifindex"), "7\n").unwrap();
        if let Some(driver) = driver {
            let dev = root.join("devices").join(name);
            fs::create_dir_all(&dev).unwrap();
            std::os::unix::fs::symlink(&dev, net.join("device")).unwrap();
            if !driver.is_empty() {
                let drv = root.join("bus/pci/drivers").join(driver);
                fs::create_dir_all(&drv).unwrap();
                std::os::unix::fs::symlink(&drv, dev.join("driver")).unwrap();
            }
        }
    }

    #[test]
    fn pid1_opens_bound_ethernet_devices_of_the_one_listing() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        iface(sys, "eth0", "52:54:00:00:00:01", "1", Some("virtio_net"));
        iface(sys, "eth1", "52:54:00:00:00:02", "1", Some(""));
        iface(sys, "usb0", "fa:16:3e:00:00:03", "1", Some("cdc_ether"));
        iface(sys, "wwan0", "52:54:00:00:00:04", "519", Some("qmi"));
        iface(sys, "eth0.100", "52:54:00:00:00:01", "1", None);
        iface(sys, "veth0", "52:54:00:00:00:05", "1", None);
        iface(sys, "eth2", "52:54:00:00:00:06", "1", Some("e1000"));
        fs::remove_file(sys.join("class/net/eth2/ifindex")).unwrap();
        let names: Vec<String> = openable_nics(sys).into_iter().map(|n| n.name).collect();
        // eth1 is probing, wwan0 is not Ethernet, eth0.100 and veth0 are not
        // devices, eth2 has no index to open it by.
        assert_eq!(names, ["eth0", "usb0"]);
        assert_eq!(openable_nics(sys)[0].ifindex, 7);
    }
}
