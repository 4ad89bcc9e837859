//! NICs: found in sysfs, configured over rtnetlink (no `ip` binary in the
//! ramdisk).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;
use rtnetlink::packet_route::address::{AddressAttribute, CacheInfo};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub ifindex: u32,
    /// Lower-case `aa:bb:...`.
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

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Ethernet NICs backed by a device (not lo, bridges, veth, ...), by name.
pub fn physical_nics(sysfs: &Path) -> Vec<Nic> {
    let Ok(entries) = std::fs::read_dir(sysfs.join("class/net")) else {
        return Vec::new();
    };
    let mut nics: Vec<Nic> = entries
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if read(&dir.join("type")).as_deref() != Some("1") || !dir.join("device").exists() {
                return None;
            }
            Some(Nic {
                ifindex: read(&dir.join("ifindex"))?.parse().ok()?,
                mac: read(&dir.join("address"))?.to_ascii_lowercase(),
                name,
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

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
