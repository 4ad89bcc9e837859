//! PID 1's network manager: a thread ("ferrite-net") that brings the NICs
//! up and keeps addresses on them for as long as the ramdisk runs.
//!
//! Which NICs: with `BOOTIF`, that NIC (readiness comes from it), and the
//! others only with `ipa-inspection-dhcp-all-interfaces`; without it, every
//! NIC, each as soon as it has carrier, in parallel (the first address
//! makes the machine ready). NICs still without carrier after
//! `ferrite-link-wait` are reported in one line and picked up if carrier
//! comes later. The BOOTIF NIC is tried with or without carrier.
//!
//! API for PID 1: [`NetParams::from_cmdline`], [`start`],
//! [`NetHandle::wait_ready`]. Per-NIC address sources hook into
//! [`start_nic`] and report addresses through [`AddressNotifier`].

pub mod dhcp;
pub mod lease;
pub mod link;
pub mod resolv;
pub mod v4;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::time::{sleep, Instant};
use tracing::{error, info, warn};

use link::Nic;

/// The kernel parameter for how long NICs get to show carrier, in seconds.
pub const LINK_WAIT_PARAM: &str = "ferrite-link-wait";
const DEFAULT_LINK_WAIT: Duration = Duration::from_secs(30);
/// The first DHCP attempt on a NIC lasts this long; later ones continue in
/// the background (see `v4.rs`).
const DHCP_FIRST_BUDGET: Duration = Duration::from_secs(30);

/// The network's kernel parameters, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetParams {
    /// `BOOTIF`'s MAC, normalized (lower-case `aa:bb:...`).
    pub bootif: Option<String>,
    /// `ipa-inspection-dhcp-all-interfaces`: with BOOTIF, configure the
    /// other NICs too.
    pub all_interfaces: bool,
    /// `ferrite-link-wait`: how long NICs get to show carrier before the
    /// ones without it are reported (they still start if it comes later).
    pub link_wait: Duration,
    /// The first DHCP attempt's budget on each NIC.
    pub dhcp_budget: Duration,
    /// sysfs, `/sys` but for tests.
    pub sysfs: PathBuf,
}

impl Default for NetParams {
    fn default() -> Self {
        Self {
            bootif: None,
            all_interfaces: false,
            link_wait: DEFAULT_LINK_WAIT,
            dhcp_budget: DHCP_FIRST_BUDGET,
            sysfs: PathBuf::from("/sys"),
        }
    }
}

impl NetParams {
    /// From `parse_cmdline`'s map. A bad value is logged and its default
    /// used: PID 1 must bring the network up anyway.
    pub fn from_cmdline(params: &BTreeMap<String, String>) -> Self {
        let mut p = Self::default();
        if let Some(v) = params.get("BOOTIF") {
            match crate::config::parse_bootif(v) {
                Ok(mac) => p.bootif = Some(mac),
                Err(e) => warn!("{e}; configuring every NIC with carrier"),
            }
        }
        if let Some(v) = params.get("ipa-inspection-dhcp-all-interfaces") {
            match crate::config::bool_word(v) {
                Some(b) => p.all_interfaces = b,
                None => warn!("ipa-inspection-dhcp-all-interfaces={v:?} is not a boolean; ignored"),
            }
        }
        if let Some(v) = params.get(LINK_WAIT_PARAM) {
            match crate::config::parse_secs(LINK_WAIT_PARAM, v, true) {
                Ok(d) => p.link_wait = d,
                Err(e) => warn!("{e}; using {} s", DEFAULT_LINK_WAIT.as_secs()),
            }
        }
        p
    }

    /// How long PID 1 should wait for the first address: the link wait,
    /// then a first DHCP attempt.
    pub fn ready_budget(&self) -> Duration {
        self.link_wait + self.dhcp_budget
    }
}

/// The first address that makes the machine reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub iface: String,
    pub address: IpAddr,
}

#[derive(Default)]
struct ReadyState {
    /// With BOOTIF, only that NIC's addresses make the machine ready.
    only_mac: Mutex<Option<String>>,
    ready: Mutex<Option<Ready>>,
    changed: Condvar,
}

/// What PID 1 keeps of the network manager.
#[derive(Clone)]
pub struct NetHandle {
    state: Arc<ReadyState>,
}

impl NetHandle {
    /// Block until the first address is applied (then return it at once
    /// on every call), or `None` after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Option<Ready> {
        let guard = self.state.ready.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .state
            .changed
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }
}

/// Handed to every address source (DHCPv4 lease, IPv6, a VLAN's address):
/// call [`AddressNotifier::address_applied`] once an address is on an
/// interface.
#[derive(Clone)]
pub struct AddressNotifier {
    state: Arc<ReadyState>,
}

impl AddressNotifier {
    /// `nic`: the physical NIC the source runs for (a VLAN's parent);
    /// `iface`: the interface holding `address`.
    pub fn address_applied(&self, nic: &Nic, iface: &str, address: IpAddr) {
        let only = self
            .state
            .only_mac
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if only.as_ref().is_some_and(|mac| *mac != nic.mac) {
            return;
        }
        let mut ready = self.state.ready.lock().unwrap_or_else(|e| e.into_inner());
        if ready.is_none() {
            info!("network ready: {address} on {iface}");
            *ready = Some(Ready {
                iface: iface.to_string(),
                address,
            });
            self.state.changed.notify_all();
        }
    }

    fn only_from(&self, mac: Option<String>) {
        *self
            .state
            .only_mac
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = mac;
    }
}

/// Start the network manager's thread; returns at once.
pub fn start(params: NetParams) -> NetHandle {
    let state = Arc::new(ReadyState::default());
    let notifier = AddressNotifier {
        state: state.clone(),
    };
    notifier.only_from(params.bootif.clone());
    let spawned = std::thread::Builder::new()
        .name("ferrite-net".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(manage(params, notifier)),
                Err(e) => error!("network: no runtime: {e}"),
            }
        });
    if let Err(e) = spawned {
        error!("network: cannot start its thread: {e}");
    }
    NetHandle { state }
}

/// What every per-NIC task gets.
#[derive(Clone)]
pub struct NicContext {
    pub nic: Nic,
    pub handle: rtnetlink::Handle,
    pub params: Arc<NetParams>,
    pub notifier: AddressNotifier,
    pub resolv: Arc<resolv::Resolv>,
    pub route: Arc<v4::DefaultRoute>,
}

/// ==== The per-NIC hook. ====
/// Called once per NIC, after its link is set up and (except for the BOOTIF
/// NIC) once it has carrier. Every address source for the NIC starts here
/// as its own task; each reports its addresses to `ctx.notifier` and its
/// DNS to `ctx.resolv` (under its own source name).
pub fn start_nic(ctx: NicContext) {
    // DHCPv4.
    let resolv = ctx.resolv.clone();
    let notifier = ctx.notifier.clone();
    let observer: v4::Observer = Arc::new(move |nic: &Nic, event: &v4::Event| {
        let source = format!("{} dhcpv4", nic.name);
        match event.applied() {
            Some(lease) => {
                notifier.address_applied(nic, &nic.name, lease.address.into());
                let search = lease.domain.iter().chain(&lease.search).cloned().collect();
                let servers = lease.dns.iter().map(|&a| a.into()).collect();
                resolv.set(&source, resolv::Dns { servers, search });
            }
            None if matches!(event, v4::Event::Nak { .. } | v4::Event::Expired { .. }) => {
                resolv.set(&source, resolv::Dns::default())
            }
            None => {}
        }
    });
    let client = v4::V4 {
        nic: ctx.nic.clone(),
        handle: ctx.handle.clone(),
        route: ctx.route.clone(),
        observer,
    };
    tokio::spawn(client.run(ctx.params.dhcp_budget));
    // Further sources (DHCPv6/SLAAC, VLAN sub-interfaces) go here.
}

/// The manager's main task: never returns.
async fn manage(params: NetParams, notifier: AddressNotifier) {
    let handle = loop {
        match rtnetlink::new_connection().context("opening rtnetlink") {
            Ok((conn, handle, _)) => {
                tokio::spawn(conn);
                break handle;
            }
            Err(e) => {
                error!("network: {e:#}; trying again in 5 s");
                sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let sysfs = params.sysfs.clone();
    if let Some(lo) = link::ifindex(&sysfs, "lo") {
        if let Err(e) = link::set_up(&handle, lo).await {
            warn!("lo: {e:#}");
        }
    }
    let params = Arc::new(params);
    // One resolv.conf view and one default route for all NICs.
    let resolv = Arc::new(resolv::Resolv::new("/etc/resolv.conf"));
    let route = Arc::new(v4::DefaultRoute::default());
    let start = |nic: Nic| {
        start_nic(NicContext {
            nic,
            handle: handle.clone(),
            params: params.clone(),
            notifier: notifier.clone(),
            resolv: resolv.clone(),
            route: route.clone(),
        })
    };
    watch_links(&sysfs, &params, &handle, &notifier, start).await
}

/// NICs appear as their drivers probe; each wanted one is set up, and
/// started once it has carrier (the BOOTIF NIC at once). Polls sysfs every
/// 100 ms during the link wait and every second after it, forever, so a
/// late switch port or a late NIC still gets an address.
async fn watch_links(
    sysfs: &Path,
    params: &NetParams,
    handle: &rtnetlink::Handle,
    notifier: &AddressNotifier,
    mut start: impl FnMut(Nic),
) -> ! {
    let deadline = Instant::now() + params.link_wait;
    let mut boot_mac = params.bootif.clone();
    let mut seen: Vec<String> = Vec::new();
    let mut boot_seen = false;
    let mut left_out: Vec<Nic> = Vec::new();
    let mut no_carrier: Vec<Nic> = Vec::new();
    let mut reported = false;
    loop {
        let mut new: Vec<Nic> = Vec::new();
        for nic in link::physical_nics(sysfs) {
            if !seen.contains(&nic.name) {
                seen.push(nic.name.clone());
                boot_seen |= boot_mac.as_deref() == Some(nic.mac.as_str());
                new.push(nic);
            }
        }
        let past_deadline = Instant::now() >= deadline;
        if let (Some(mac), false, true) = (boot_mac.clone(), boot_seen, past_deadline) {
            warn!(
                "no NIC has BOOTIF's MAC {mac} after {} s (NICs: {seen:?}); using every NIC",
                params.link_wait.as_secs()
            );
            boot_mac = None;
            notifier.only_from(None);
            new.append(&mut left_out);
        }
        for nic in new {
            let is_boot = boot_mac.as_deref() == Some(nic.mac.as_str());
            if boot_mac.is_some() && !is_boot && !params.all_interfaces {
                left_out.push(nic);
                continue;
            }
            // A NIC whose driver cannot open it (its firmware is missing,
            // say) is left out; the others still get their addresses.
            if let Err(e) = link::set_up(handle, nic.ifindex).await {
                warn!(
                    "{}: cannot bring the link up, leaving it out: {e:#}",
                    nic.name
                );
                continue;
            }
            if is_boot {
                info!("{}: BOOTIF NIC, starting DHCP", nic.name);
                start(nic);
            } else {
                no_carrier.push(nic);
            }
        }
        no_carrier.retain(|nic| {
            if link::has_carrier(sysfs, &nic.name) {
                if reported {
                    info!("{}: carrier came late, starting DHCP", nic.name);
                } else {
                    info!("{}: carrier, starting DHCP", nic.name);
                }
                start(nic.clone());
                false
            } else {
                true
            }
        });
        if past_deadline && !reported {
            reported = true;
            if !left_out.is_empty() {
                info!(
                    "not configured (not BOOTIF, and ipa-inspection-dhcp-all-interfaces is off): {:?}",
                    names(&left_out)
                );
            }
            if !no_carrier.is_empty() {
                warn!(
                    "no carrier after {} s on {:?}: no DHCP there unless carrier comes",
                    params.link_wait.as_secs(),
                    names(&no_carrier)
                );
            }
        }
        let tick = if past_deadline { 1000 } else { 100 };
        sleep(Duration::from_millis(tick)).await;
    }
}

fn names(nics: &[Nic]) -> Vec<&str> {
    nics.iter().map(|n| n.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(line: &str) -> NetParams {
        NetParams::from_cmdline(&crate::config::parse_cmdline(line))
    }

    #[test]
    fn kernel_parameters() {
        let p = params(
            "BOOTIF=01-52-54-00-AB-CD-EF ipa-inspection-dhcp-all-interfaces=yes \
             ferrite-link-wait=2.5",
        );
        assert_eq!(p.bootif.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert!(p.all_interfaces);
        assert_eq!(p.link_wait, Duration::from_millis(2500));
        assert_eq!(p.ready_budget(), Duration::from_millis(32_500));
        // Bad values fall back to the defaults.
        let p = params("BOOTIF=zz ipa-inspection-dhcp-all-interfaces=maybe ferrite-link-wait=-1");
        assert_eq!(p, NetParams::default());
    }

    fn nic(name: &str, mac: &str) -> Nic {
        Nic {
            name: name.into(),
            ifindex: 2,
            mac: mac.into(),
        }
    }

    #[test]
    fn readiness_comes_from_bootif_if_given() {
        let state = Arc::new(ReadyState::default());
        let handle = NetHandle {
            state: state.clone(),
        };
        let notifier = AddressNotifier { state };
        notifier.only_from(Some("52:54:00:00:00:02".into()));
        assert_eq!(handle.wait_ready(Duration::ZERO), None);
        let other = nic("eth0", "52:54:00:00:00:01");
        notifier.address_applied(&other, "eth0", "10.0.0.5".parse().unwrap());
        assert_eq!(handle.wait_ready(Duration::ZERO), None);
        let boot = nic("eth1", "52:54:00:00:00:02");
        notifier.address_applied(&boot, "eth1.100", "10.1.0.5".parse().unwrap());
        notifier.address_applied(&boot, "eth1", "10.0.0.6".parse().unwrap());
        // The first address stays the answer.
        let ready = Ready {
            iface: "eth1.100".into(),
            address: "10.1.0.5".parse().unwrap(),
        };
        assert_eq!(handle.wait_ready(Duration::ZERO), Some(ready.clone()));
        assert_eq!(handle.wait_ready(Duration::from_secs(60)), Some(ready));
    }
}
