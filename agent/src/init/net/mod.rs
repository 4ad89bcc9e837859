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
pub mod dhcpv6;
pub mod ipv6;
pub mod lease;
pub mod link;
pub mod resolv;
pub mod slaac;
pub mod udp;
pub mod v4;
pub mod vlan;

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
/// IPA's `lldp_timeout` default.
const DEFAULT_LLDP_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// `ipa-enable-vlan-interfaces` (`all`, `nic`, `nic.vid`, comma list).
    pub vlans: Option<String>,
    /// `ipa-lldp-timeout`: how long to listen for the LLDP frames that
    /// name a NIC's VLANs.
    pub lldp_timeout: Duration,
    /// Whether `ipa-api-url`'s host is an IPv6 literal (`None`: a name,
    /// or no URL): the family whose address makes the machine ready.
    pub api_ipv6: Option<bool>,
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
            vlans: None,
            lldp_timeout: DEFAULT_LLDP_TIMEOUT,
            api_ipv6: None,
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
            match ferrite_protocol::loose::bool_word(v) {
                Some(b) => p.all_interfaces = b,
                None => warn!("ipa-inspection-dhcp-all-interfaces={v:?} is not a boolean; ignored"),
            }
        }
        p.api_ipv6 = params
            .get("ipa-api-url")
            .and_then(|urls| urls.split(',').next())
            .and_then(|u| url::Url::parse(u.trim()).ok())
            .and_then(|u| match u.host() {
                Some(url::Host::Ipv4(_)) => Some(false),
                Some(url::Host::Ipv6(_)) => Some(true),
                _ => None,
            });
        if let Some(v) = params.get("ipa-enable-vlan-interfaces") {
            p.vlans = Some(v.trim().to_string()).filter(|v| !v.is_empty());
        }
        if let Some(v) = params.get("ipa-lldp-timeout") {
            match crate::config::parse_secs("ipa-lldp-timeout", v, true) {
                Ok(d) => p.lldp_timeout = d,
                Err(e) => warn!("{e}; using {} s", DEFAULT_LLDP_TIMEOUT.as_secs()),
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
    /// With an IP literal in `ipa-api-url`, only an address of its family
    /// does: on a dual-stack network a SLAAC address often comes before
    /// the IPv4 lease an IPv4 API needs.
    api_ipv6: Option<bool>,
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
        if only.as_ref().is_some_and(|mac| *mac != nic.mac)
            || self
                .state
                .api_ipv6
                .is_some_and(|v6| v6 != address.is_ipv6())
        {
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
    let state = Arc::new(ReadyState {
        api_ipv6: params.api_ipv6,
        ..ReadyState::default()
    });
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
    // IPv6: SLAAC (the kernel's, watched) and stateful DHCPv6.
    tokio::spawn(async move {
        let opts = ipv6::V6Options {
            resolv: Some(ctx.resolv.clone()),
            ..ipv6::V6Options::default()
        };
        let notifier = ctx.notifier.clone();
        let nic = ctx.nic.clone();
        ipv6::run_v6(&ctx.handle, &ctx.nic, &opts, move |address| {
            notifier.address_applied(&nic, &nic.name, address)
        })
        .await
    });
}

/// `ipa-enable-vlan-interfaces`: once the NICs it names are there, create
/// the VLAN sub-interfaces (learning IDs from LLDP where asked) and run
/// every address source on each, as on a NIC.
async fn start_vlans(
    handle: rtnetlink::Handle,
    params: Arc<NetParams>,
    spec: String,
    start: Arc<dyn Fn(Nic) + Send + Sync>,
) {
    let deadline = Instant::now() + params.link_wait;
    let nics = loop {
        let nics = link::openable_nics(&params.sysfs);
        let all_named = vlan::named_parents(&spec)
            .iter()
            .all(|name| nics.iter().any(|n| &n.name == name));
        if (!nics.is_empty() && all_named) || Instant::now() >= deadline {
            break nics;
        }
        sleep(Duration::from_millis(100)).await;
    };
    for nic in &nics {
        if let Err(e) = link::set_up(&handle, nic.ifindex).await {
            warn!("{}: {e:#}", nic.name);
        }
    }
    for vlan_nic in vlan::create_all(&handle, &nics, &spec, params.lldp_timeout).await {
        info!("{}: VLAN interface up, starting DHCP", vlan_nic.name);
        start(vlan_nic);
    }
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
    // Starts every address source on a NIC or a VLAN.
    let start: Arc<dyn Fn(Nic) + Send + Sync> = {
        let (handle, params, notifier) = (handle.clone(), params.clone(), notifier.clone());
        Arc::new(move |nic: Nic| {
            start_nic(NicContext {
                nic,
                handle: handle.clone(),
                params: params.clone(),
                notifier: notifier.clone(),
                resolv: resolv.clone(),
                route: route.clone(),
            })
        })
    };
    if let Some(spec) = params.vlans.clone() {
        tokio::spawn(start_vlans(
            handle.clone(),
            params.clone(),
            spec,
            start.clone(),
        ));
    }
    watch_links(&sysfs, &params, &handle, &notifier, |nic| start(nic)).await
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
        // Until its driver's probe is done, a NIC is not listed (it must not
        // be opened); it is taken at a later scan.
        for nic in link::openable_nics(sysfs) {
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

    #[test]
    fn readiness_needs_the_api_urls_family() {
        let mut params = BTreeMap::new();
        params.insert(
            "ipa-api-url".to_string(),
            "http://10.0.2.100:6385".to_string(),
        );
        assert_eq!(NetParams::from_cmdline(&params).api_ipv6, Some(false));
        params.insert(
            "ipa-api-url".to_string(),
            "http://[fd00::1]:6385,http://10.0.0.1".to_string(),
        );
        assert_eq!(NetParams::from_cmdline(&params).api_ipv6, Some(true));
        params.insert(
            "ipa-api-url".to_string(),
            "http://ironic.example:6385".to_string(),
        );
        assert_eq!(NetParams::from_cmdline(&params).api_ipv6, None);

        let state = Arc::new(ReadyState {
            api_ipv6: Some(false),
            ..ReadyState::default()
        });
        let handle = NetHandle {
            state: state.clone(),
        };
        let notifier = AddressNotifier { state };
        let eth0 = nic("eth0", "52:54:00:00:00:01");
        // A SLAAC address first: not what an IPv4 API needs.
        notifier.address_applied(&eth0, "eth0", "fec0::5054:ff:fe00:1".parse().unwrap());
        assert_eq!(handle.wait_ready(Duration::ZERO), None);
        notifier.address_applied(&eth0, "eth0", "10.0.2.15".parse().unwrap());
        assert_eq!(
            handle.wait_ready(Duration::ZERO).map(|r| r.address),
            Some("10.0.2.15".parse().unwrap())
        );
    }
}
