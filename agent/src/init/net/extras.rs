//! PID 1's IPv6 and VLAN jobs until the network manager owns them: a
//! thread of their own, for the ramdisk's whole life, next to the DHCPv4
//! bring-up (an IPv6-only network must not wait for DHCPv4 to give up).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{ipv6, link, vlan};

/// How long a VLAN's DHCPv4 may take.
const VLAN_DHCP_BUDGET: Duration = Duration::from_secs(60);

/// Start IPv6 (SLAAC and DHCPv6) on every NIC, and the VLANs that
/// `ipa-enable-vlan-interfaces` asks for. Returns at once.
pub fn start(sysfs: PathBuf, params: &BTreeMap<String, String>) {
    let vlans = params
        .get("ipa-enable-vlan-interfaces")
        .filter(|s| !s.trim().is_empty())
        .cloned();
    let lldp_timeout = params
        .get("ipa-lldp-timeout")
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(Duration::from_secs(30));
    let spawned = std::thread::Builder::new()
        .name("net6".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return error!("IPv6/VLAN: no runtime: {e}"),
            };
            rt.block_on(run(sysfs, vlans, lldp_timeout));
        });
    if let Err(e) = spawned {
        error!("IPv6/VLAN: cannot start its thread: {e}");
    }
}

async fn run(sysfs: PathBuf, vlans: Option<String>, lldp_timeout: Duration) {
    let (conn, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => return error!("IPv6/VLAN: opening rtnetlink: {e}"),
    };
    tokio::spawn(conn);
    // NICs appear as their drivers probe; give them the time DHCPv4 gets.
    let mut nics = Vec::new();
    for _ in 0..50 {
        nics = link::physical_nics(&sysfs);
        if !nics.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in &nics {
        if let Err(e) = link::set_up(&handle, n.ifindex).await {
            warn!("{}: {e:#}", n.name);
        }
    }
    let opts = ipv6::V6Options::default();
    let v6 = futures_util::future::join_all(nics.iter().map(|nic| {
        ipv6::run_v6(&handle, nic, &opts, move |a| {
            info!("{}: IPv6 ready with {a}", nic.name)
        })
    }));
    let vlan_job = async {
        if let Some(spec) = &vlans {
            vlan::bring_up(&handle, &nics, spec, lldp_timeout, VLAN_DHCP_BUDGET).await;
        }
    };
    tokio::join!(v6, vlan_job);
}
