//! Network bring-up for the ramdisk: the PXE NIC (BOOTIF) or else every NIC
//! with carrier, addressed by DHCP.

pub mod dhcp;
pub mod link;

// IPv6 and VLANs (branch net6): self-contained entry points, see
// `ipv6::run_v6` and `vlan::bring_up`.
pub mod dhcpv6;
pub mod extras;
pub mod ipv6;
pub mod resolv;
pub mod slaac;
pub mod vlan;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use link::Nic;

/// Bring up `lo` and the boot NIC(s) and apply their DHCP leases; returns
/// the leases (the first router becomes the default route).
pub async fn configure(
    sysfs: &Path,
    bootif: Option<&str>,
    budget: Duration,
) -> anyhow::Result<Vec<(Nic, dhcp::Lease)>> {
    let deadline = Instant::now() + budget;
    let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(conn);
    if let Some(lo) = link::ifindex(sysfs, "lo") {
        link::set_up(&handle, lo).await?;
    }
    let boot_mac = bootif.and_then(|b| match crate::config::parse_bootif(b) {
        Ok(mac) => Some(mac),
        Err(e) => {
            warn!("{e}; using every NIC with carrier");
            None
        }
    });
    let found = wait_for_nics(sysfs, boot_mac.as_deref(), deadline).await?;
    // A NIC whose driver cannot open it (its firmware is missing, say) is
    // left out; the others still get their addresses.
    let mut nics = Vec::new();
    for nic in found {
        match link::set_up(&handle, nic.ifindex).await {
            Ok(()) => nics.push(nic),
            Err(e) => warn!(
                "{}: cannot bring the link up, leaving it out: {e:#}",
                nic.name
            ),
        }
    }
    if nics.is_empty() {
        bail!("no NIC could be brought up");
    }
    // Carrier follows link-up after autonegotiation; a wired NIC takes a
    // few seconds, virtio none.
    let carrier_deadline = Instant::now() + Duration::from_secs(5);
    let candidates: Vec<Nic> = loop {
        let up: Vec<Nic> = nics
            .iter()
            .filter(|n| link::has_carrier(sysfs, &n.name))
            .cloned()
            .collect();
        if up.len() == nics.len() || Instant::now() >= carrier_deadline {
            break if up.is_empty() && boot_mac.is_some() {
                // BOOTIF is authoritative: try it even without carrier.
                nics.clone()
            } else {
                up
            };
        }
        sleep(Duration::from_millis(100)).await;
    };
    if candidates.is_empty() {
        bail!("no NIC has carrier: {:?}", names(&nics));
    }
    info!("DHCP on {:?}", names(&candidates));
    let left = deadline.saturating_duration_since(Instant::now());
    let attempts = candidates.iter().map(|nic| async move {
        let lease = dhcp::obtain(&nic.name, &nic.mac_bytes(), left).await;
        (nic.clone(), lease)
    });
    let results = futures_util::future::join_all(attempts).await;
    let mut leases = Vec::new();
    let mut routed = false;
    for (nic, res) in results {
        let lease = match res {
            Ok(l) => l,
            Err(e) => {
                warn!("{e}");
                continue;
            }
        };
        routed |= apply_lease(&handle, &nic, &lease, !routed).await?;
        leases.push((nic, lease));
    }
    if leases.is_empty() {
        bail!("no DHCP lease on {:?}", names(&candidates));
    }
    write_resolv_conf(
        &leases
            .iter()
            .flat_map(|(_, l)| l.dns.clone())
            .collect::<Vec<_>>(),
    );
    Ok(leases)
}

/// Put the lease's address on the NIC and, if `route`, make its first
/// router the default gateway; true if a default route was added.
pub async fn apply_lease(
    handle: &rtnetlink::Handle,
    nic: &Nic,
    lease: &dhcp::Lease,
    route: bool,
) -> anyhow::Result<bool> {
    link::add_address(handle, nic.ifindex, lease.address, lease.prefix_len).await?;
    info!(
        "{}: {}/{} from {} (lease {:?} s, routers {:?})",
        nic.name, lease.address, lease.prefix_len, lease.server, lease.lease_secs, lease.routers
    );
    match lease.routers.first() {
        Some(gw) if route => {
            link::add_default_route(handle, nic.ifindex, *gw).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn names(nics: &[Nic]) -> Vec<&str> {
    nics.iter().map(|n| n.name.as_str()).collect()
}

/// The BOOTIF NIC once it appears (drivers probe asynchronously), else
/// all NICs present once they stop appearing.
async fn wait_for_nics(
    sysfs: &Path,
    boot_mac: Option<&str>,
    deadline: Instant,
) -> anyhow::Result<Vec<Nic>> {
    let mut seen = 0;
    let mut stable_since = Instant::now();
    loop {
        let nics = link::physical_nics(sysfs);
        if let Some(mac) = boot_mac {
            if let Some(nic) = nics.iter().find(|n| n.mac == mac) {
                return Ok(vec![nic.clone()]);
            }
        } else if !nics.is_empty() && stable_since.elapsed() >= Duration::from_secs(1) {
            return Ok(nics);
        }
        if nics.len() != seen {
            seen = nics.len();
            stable_since = Instant::now();
        }
        if Instant::now() >= deadline {
            match boot_mac {
                Some(mac) => bail!("no NIC with BOOTIF's MAC {mac}; NICs: {:?}", names(&nics)),
                None => bail!("no network interface appeared"),
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn write_resolv_conf(dns: &[Ipv4Addr]) {
    if dns.is_empty() {
        return;
    }
    let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    let _ = std::fs::create_dir_all("/etc");
    if let Err(e) = std::fs::write("/etc/resolv.conf", text) {
        warn!("writing /etc/resolv.conf: {e}");
    }
}
