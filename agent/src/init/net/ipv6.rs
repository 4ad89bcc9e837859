//! IPv6 on one NIC, for as long as the ramdisk runs: SLAAC by the kernel
//! (watched) and stateful DHCPv6 (ours), side by side. Whichever yields a
//! usable global address first is reported through `on_address`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtnetlink::Handle;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

use super::dhcpv6::{self, Client, Lease6};
use super::link::{self, Nic};
use super::resolv::{Dns, Resolv};
use super::slaac;

/// Where the IPv6 side keeps its outside effects.
#[derive(Debug, Clone)]
pub struct V6Options {
    /// procfs root (its `sys/net/ipv6/conf/<if>/` knobs).
    pub procfs: PathBuf,
    /// The resolver view DHCPv6's servers and domains join (as the source
    /// `<nic> dhcpv6`); none: not written.
    pub resolv: Option<Arc<Resolv>>,
}

impl Default for V6Options {
    fn default() -> Self {
        Self {
            procfs: PathBuf::from("/proc"),
            resolv: None,
        }
    }
}

/// Run IPv6 on `nic` forever (the link must be up, or come up): report
/// each usable global address once, whether SLAAC or DHCPv6 made it.
pub async fn run_v6(handle: &Handle, nic: &Nic, opts: &V6Options, on_address: impl Fn(IpAddr)) {
    if let Err(e) = slaac::enable(&opts.procfs, &nic.name) {
        warn!("{}: cannot enable router advertisements: {e}", nic.name);
    }
    let reported = Mutex::new(HashSet::new());
    tokio::join!(
        watch(&nic.name, &reported, &on_address),
        dhcpv6_forever(handle, nic, opts)
    );
}

/// Report every usable global address as it appears (polling; quick until
/// the first, then slower).
async fn watch(ifname: &str, reported: &Mutex<HashSet<Ipv6Addr>>, on_address: &impl Fn(IpAddr)) {
    loop {
        let fresh: Vec<Ipv6Addr> = {
            let mut seen = reported.lock().unwrap_or_else(|p| p.into_inner());
            slaac::usable_globals(ifname)
                .into_iter()
                .filter(|a| seen.insert(*a))
                .collect()
        };
        for a in &fresh {
            info!("{ifname}: usable global IPv6 address {a}");
            on_address(IpAddr::V6(*a));
        }
        let any = !reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        sleep(Duration::from_millis(if any { 2000 } else { 200 })).await;
    }
}

/// Solicit, apply, renew, rebind; start over when the lease is lost.
async fn dhcpv6_forever(handle: &Handle, nic: &Nic, opts: &V6Options) {
    let mut pause = Duration::from_secs(1);
    loop {
        match dhcpv6_once(handle, nic, opts).await {
            Ok(()) => pause = Duration::from_secs(1),
            Err(e) => {
                warn!("{}: DHCPv6: {e:#}; retrying in {pause:?}", nic.name);
                sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// One lease's life, from SOLICIT to its expiry (returns Ok when it ran
/// out, to be solicited again).
async fn dhcpv6_once(handle: &Handle, nic: &Nic, opts: &V6Options) -> anyhow::Result<()> {
    let client = Client::new(&nic.name, nic.ifindex, &nic.mac_bytes())?;
    // Solicit in rounds of a few minutes, so a socket problem is retried.
    let Some(mut lease) = client
        .obtain(Instant::now() + Duration::from_secs(300))
        .await?
    else {
        anyhow::bail!("no DHCPv6 server answered (an RA-only network needs none)");
    };
    loop {
        let got = Instant::now();
        apply(handle, nic, &lease, opts).await?;
        let t1 = dhcpv6::after(got, lease.t1);
        let t2 = dhcpv6::after(got, lease.t2);
        let expiry = dhcpv6::after(got, lease.valid());
        sleep_until(t1).await;
        info!("{}: DHCPv6 RENEW", nic.name);
        if let Some(l) = client.renew(&lease, t2).await? {
            lease = l;
            continue;
        }
        info!("{}: DHCPv6 REBIND", nic.name);
        if let Some(l) = client.rebind(&lease, expiry).await? {
            lease = l;
            continue;
        }
        warn!("{}: DHCPv6 lease expired, soliciting again", nic.name);
        return Ok(());
    }
}

/// Put the lease on the NIC: resolver first (so whoever sees the address
/// also has DNS), then each address as a /128 with the lease's lifetimes
/// (the on-link prefix route comes from the router advertisement).
pub async fn apply(
    handle: &Handle,
    nic: &Nic,
    lease: &Lease6,
    opts: &V6Options,
) -> anyhow::Result<()> {
    if let Some(resolv) = &opts.resolv {
        resolv.set(
            &format!("{} dhcpv6", nic.name),
            Dns {
                servers: lease.dns.iter().map(|d| IpAddr::V6(*d)).collect(),
                search: lease.search.clone(),
            },
        );
    }
    for a in &lease.addresses {
        link::add_address(
            handle,
            nic.ifindex,
            a.addr.into(),
            128,
            Some(link::Lifetimes {
                preferred: a.preferred,
                valid: a.valid,
            }),
        )
        .await?;
        info!(
            "{}: {}/128 from DHCPv6 (preferred {} s, valid {} s, T1 {} s, T2 {} s, DNS {:?}, search {:?})",
            nic.name, a.addr, a.preferred, a.valid, lease.t1, lease.t2, lease.dns, lease.search
        );
    }
    Ok(())
}
