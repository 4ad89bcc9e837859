//! The agent's life (IPA's `IronicPythonAgent.run`): find our NICs, look
//! the node up, take the token, start the API (auto-TLS), heartbeat.

use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ferrite_protocol::lookup::{MASKED_TOKEN, MIN_TOKEN_LEN};
use ferrite_protocol::{ApiVersion, LookupResponse};
use tracing::{error, info, warn};

use crate::api::runner::CommandRunner;
use crate::api::{self, ApiState};
use crate::commands;
use crate::config::{Config, TlsVersion};
use crate::hardware::disk_wait::{cache_node, wait_for_disks};
use crate::hardware::generic::GenericHardwareManager;
use crate::hardware::nics;
use crate::hardware::HardwareManagers;
use crate::ironic::heartbeat::Heartbeater;
use crate::ironic::lookup::lookup_node;
use crate::ironic::IronicClient;
use crate::logbuf::LogBuffer;
use crate::state::AgentContext;
use crate::tls::AgentCertificate;

/// IPA waits this long for any NIC to show a MAC.
const NIC_WAIT: Duration = Duration::from_secs(60);
const NIC_POLL: Duration = Duration::from_secs(5);
/// How long the agent waits for PID 1 to bring the network up.
const NETWORK_WAIT: Duration = Duration::from_secs(60);
/// IPA's `ip_lookup_attempts` × `ip_lookup_sleep`.
const IP_LOOKUP_ATTEMPTS: u32 = 6;
const IP_LOOKUP_SLEEP: Duration = Duration::from_secs(10);

pub async fn run(config: Config, logs: LogBuffer) -> anyhow::Result<()> {
    let hardware = HardwareManagers::new(vec![Arc::new(GenericHardwareManager::new(&config))]);
    let ctx = AgentContext::new(config, logs, hardware);
    let cfg = &ctx.config;
    info!(
        version = ferrite_protocol::AGENT_VERSION,
        "ferrite-agent starting"
    );

    crate::timeline::mark("agent started");
    // A restarted agent of a rescued ramdisk stays silent (IPA checks
    // `/etc/.rescued` the same way): no lookup, no API, no heartbeat.
    if crate::rescue::is_rescued(&cfg.rescue_root) {
        return hold_rescued().await;
    }
    // The TLS key takes a while on a slow CPU: make it while PID 1 runs
    // DHCP and the disks are found.
    let early_key = cfg
        .auto_tls
        .then(|| tokio::task::spawn_blocking(crate::tls::generate_key));
    // IPA's hardware manager initialization: wait for a disk a deploy
    // could use (no node yet: the smallest-disk rule) ...
    let init_ctx = ctx.clone();
    tokio::task::spawn_blocking(move || wait_for_disks(&init_ctx.config, None))
        .await
        .context("waiting for the root device")?;
    // ... then the operator's pause (IPA sleeps after the managers are up).
    if !cfg.hardware_initialization_delay.is_zero() {
        info!(
            "Waiting {} seconds before proceeding",
            cfg.hardware_initialization_delay.as_secs()
        );
        tokio::time::sleep(cfg.hardware_initialization_delay).await;
    }

    let macs = wait_for_macs(cfg).await?;
    // PID 1 started us before the network was up; wait for its word.
    if crate::power::supervised_by_init() {
        let ready = Path::new(crate::init::handoff::NETWORK_READY);
        if crate::init::handoff::wait_network(ready, NETWORK_WAIT).await {
            crate::timeline::mark("network ready");
        } else {
            warn!("no address after {NETWORK_WAIT:?}; calling Ironic anyway, and retrying");
        }
    }
    // Before lookup: an unknown node has no ports until inspection adds them.
    let inspected_uuid = crate::ironic::inspection::inspect(&ctx).await;
    if cfg.api_urls.is_empty() {
        info!("No ipa-api-url configured, heartbeat and lookup skipped for inspector");
        std::future::pending::<()>().await;
    }
    let client = Arc::new(IronicClient::connect(cfg).await?);
    info!(version = %client.version(), "using Ironic API microversion");

    let found = lookup_node(
        &client,
        &macs,
        inspected_uuid.as_deref(),
        cfg.lookup_timeout,
        cfg.lookup_interval,
    )
    .await?;
    crate::timeline::mark("lookup");
    let node_uuid = found.node.uuid.clone();
    // A new node: wait for the disk its root device hints name.
    let lookup_ctx = ctx.clone();
    let node = found.node.clone();
    tokio::task::spawn_blocking(move || cache_node(&lookup_ctx, node))
        .await
        .context("waiting for the node's root device")?;
    if let Some(config) = &found.config {
        ctx.set_lookup_config(config.clone());
    }
    // An earlier agent process of this boot kept its token: we restarted.
    let restarted = cfg.agent_token.is_none() && crate::token_store::path(&cfg.run_dir).exists();
    if !accept_token(&ctx, &found) {
        error!(
            "FATAL: the agent token was already handed out and this agent has none; locking down"
        );
        ctx.enter_lockdown();
        return hold_lockdown().await;
    }

    let advertise_ip = advertise_address(cfg, &client).await?;
    ctx.set_advertise_ip(advertise_ip);
    let tls_wanted = cfg.auto_tls && client.version() >= ApiVersion::AGENT_VERIFY_CA;
    let (tls, verify_ca) = if tls_wanted {
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "ferrite-agent".into());
        // A restarted agent (its token kept) serves the certificate Ironic
        // already recorded: a new one would fail every heartbeat.
        let kept = if restarted {
            AgentCertificate::load(&cfg.run_dir).unwrap_or_else(|e| {
                warn!(error = %e, "cannot reuse the agent certificate");
                None
            })
        } else {
            None
        };
        let cert = match kept {
            Some(cert) => {
                info!("serving the certificate of the previous agent process");
                cert
            }
            None => {
                let key = match early_key {
                    Some(job) => job.await.context("generating the TLS key")??,
                    None => crate::tls::generate_key()?,
                };
                let cert = AgentCertificate::sign(key, advertise_ip, &hostname)?;
                if let Err(e) = cert.write_files(&cfg.run_dir) {
                    warn!(error = %e, "cannot keep a copy of the agent certificate");
                }
                cert
            }
        };
        let min = tls_min_version(cfg, &found);
        (Some(cert.server_config(min)?), Some(cert.cert_pem.clone()))
    } else {
        (None, None)
    };
    let callback_url = cfg.callback_url(if tls.is_some() { "https" } else { "http" }, advertise_ip);
    info!(%callback_url, node = %node_uuid, "serving the agent API");

    let listener = api::server::bind(cfg.listen_host, cfg.listen_port)?;
    let state = ApiState {
        ctx: ctx.clone(),
        registry: Arc::new(commands::registry()),
        runner: Arc::new(CommandRunner::default()),
        scheme: if tls.is_some() { "https" } else { "http" },
    };
    let server = tokio::spawn(api::serve(listener, api::router(state), tls, ctx.clone()));
    tokio::spawn(
        Heartbeater {
            client: client.clone(),
            ctx: ctx.clone(),
            node_uuid,
            callback_url,
            verify_ca,
            heartbeat_timeout: found.heartbeat_timeout(),
        }
        .run(),
    );

    server.await.context("agent API task")??;
    if ctx.is_rescued() {
        return hold_rescued().await;
    }
    if ctx.in_lockdown() {
        return hold_lockdown().await;
    }
    Ok(())
}

/// IPA's token rules: take a token of ≥ 32 characters; `******` with no
/// token on file means another agent got it first, which is fatal.
fn accept_token(ctx: &AgentContext, found: &LookupResponse) -> bool {
    let Some(token) = found.config.as_ref().and_then(|c| c.agent_token.clone()) else {
        return true;
    };
    if token == MASKED_TOKEN {
        warn!("the agent token has already been retrieved");
        return ctx.token().is_some();
    }
    if token.len() >= MIN_TOKEN_LEN {
        crate::token_store::save(&ctx.config.run_dir, &token);
        ctx.set_token(token);
    } else {
        warn!(
            length = token.len(),
            "ignoring an agent token shorter than {MIN_TOKEN_LEN} characters"
        );
    }
    true
}

/// Ironic's `config.tls_min_version` wins over the kernel parameter.
fn tls_min_version(cfg: &Config, found: &LookupResponse) -> TlsVersion {
    found
        .config
        .as_ref()
        .and_then(|c| c.tls_min_version.as_deref())
        .and_then(TlsVersion::parse)
        .or(cfg.tls_min_version)
        .unwrap_or(TlsVersion::V1_2)
}

/// In lockdown IPA stops serving and sleeps forever (it must not be
/// reachable, and exiting would get it restarted).
async fn hold_lockdown() -> anyhow::Result<()> {
    error!("FATAL: agent is in lockdown: API closed, heartbeats stopped");
    std::future::pending::<()>().await;
    Ok(())
}

/// After `finalize_rescue` the agent waits forever: exiting would only get
/// it restarted by PID 1 (and a panic if it were PID 1 itself); PID 1 runs
/// the rescue service meanwhile (`init::rescue`).
async fn hold_rescued() -> anyhow::Result<()> {
    info!("rescue mode: agent API closed, heartbeats stopped; the rescue service has the machine");
    std::future::pending::<()>().await;
    Ok(())
}

/// MACs to look up with: `BOOTIF` first, then the inventory's NICs'.
/// IPA's lookup sends its inventory's MACs, so a MAC the inventory does not
/// report (a bridge's, a veth's) is not looked up with either: Ironic then
/// knows the node by the same ports at lookup and at inspection. A host
/// with only virtual NICs has none to send, as under IPA; without BOOTIF
/// the wait below runs out and the agent says why.
fn lookup_macs(boot_mac: Option<&str>, sysfs: &Path) -> Vec<String> {
    let mut macs: Vec<String> = boot_mac.into_iter().map(str::to_string).collect();
    for nic in nics::list(sysfs) {
        if !macs.contains(&nic.mac) {
            macs.push(nic.mac);
        }
    }
    macs
}

async fn wait_for_macs(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + NIC_WAIT;
    loop {
        let macs = lookup_macs(cfg.boot_mac.as_deref(), &cfg.sysfs_root);
        if !macs.is_empty() {
            info!(macs = %macs.join(","), "network interfaces found");
            return Ok(macs);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no physical, bond or VLAN interface with a MAC address under {} and no BOOTIF",
                cfg.sysfs_root.join("class/net").display()
            );
        }
        warn!("no network interface yet; waiting");
        tokio::time::sleep(NIC_POLL).await;
    }
}

/// `ipa-advertise-host`, else the source address the kernel would use to
/// reach Ironic (IPA runs `ip route get`; a connected UDP socket asks the
/// same question without sending anything).
async fn advertise_address(cfg: &Config, client: &IronicClient) -> anyhow::Result<IpAddr> {
    if let Some(ip) = cfg.advertise_host {
        return Ok(ip);
    }
    let url = client.primary_url().context("no Ironic API URL")?;
    let host = url
        .host_str()
        .context("Ironic API URL has no host")?
        .to_string();
    let port = url.port_or_known_default().unwrap_or(6385);
    let mut last = String::new();
    for attempt in 1..=IP_LOOKUP_ATTEMPTS {
        match route_source(&host, port).await {
            Ok(ip) if !is_link_local(ip) => return Ok(ip),
            Ok(ip) => last = format!("only the link-local address {ip}"),
            Err(e) => last = e.to_string(),
        }
        warn!(attempt, error = %last, "cannot find our address towards Ironic yet");
        if attempt < IP_LOOKUP_ATTEMPTS {
            tokio::time::sleep(IP_LOOKUP_SLEEP).await;
        }
    }
    bail!("Error finding IP for Ironic Agent: {last}; set ipa-advertise-host")
}

async fn route_source(host: &str, port: u16) -> anyhow::Result<IpAddr> {
    let target =
        tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
    let bind_addr: std::net::SocketAddr = if target.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let socket = UdpSocket::bind(bind_addr)?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;

    use super::*;
    use crate::hardware::inventory::net;

    fn inventory_macs(sysfs: &Path) -> BTreeSet<String> {
        net::collect(sysfs, &net::Addresses::new())
            .into_iter()
            .map(|i| i.mac_address)
            .collect()
    }

    fn iface(sysfs: &Path, name: &str, mac: &str, device: bool) {
        let dir = sysfs.join("class/net").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        fs::write(dir.join("type"), "1\n").unwrap();
        if device {
            fs::create_dir_all(dir.join("device")).unwrap();
        }
    }

    /// The bug this listing fixed: virtual NICs' MACs were looked up with
    /// but not reported, so a host with nothing else posted an inventory
    /// with no interfaces (which Ironic's inspection schema rejects) after
    /// a lookup with MACs. Now both have none.
    #[test]
    fn only_virtual_nics_give_lookup_and_inventory_the_same_no_macs() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        iface(sys, "lo", "00:00:00:00:00:00", false);
        iface(sys, "ifb0", "76:f5:50:cb:3b:1a", false);
        iface(sys, "virbr0", "52:54:00:00:00:09", false);
        iface(sys, "veth0", "52:54:00:00:00:0a", false);
        assert!(lookup_macs(None, sys).is_empty());
        assert!(inventory_macs(sys).is_empty());
    }

    #[test]
    fn lookup_sends_the_inventorys_macs() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        iface(sys, "eth0", "52:54:00:00:00:01", true);
        iface(sys, "eth1", "52:54:00:00:00:02", true);
        iface(sys, "eth0.100", "52:54:00:00:00:01", false);
        iface(sys, "virbr0", "52:54:00:00:00:09", false);
        iface(sys, "usb0", "fa:16:3e:00:00:03", true);
        let macs = lookup_macs(None, sys);
        assert_eq!(macs, ["52:54:00:00:00:01", "52:54:00:00:00:02"]);
        assert_eq!(
            macs.into_iter().collect::<BTreeSet<_>>(),
            inventory_macs(sys)
        );
        // BOOTIF leads.
        let macs = lookup_macs(Some("52:54:00:00:00:02"), sys);
        assert_eq!(macs, ["52:54:00:00:00:02", "52:54:00:00:00:01"]);
    }

    /// The captured CI machine: eth0 and two `ifb`s. The lookup used to send
    /// the `ifb`s' MACs too.
    #[test]
    fn captured_ci_vm_looks_up_with_its_inventorys_macs() {
        for machine in ["ferrite-ci-vm", "ferrite-ci-host"] {
            let sys = crate::hardware::inventory::fixture(machine).sysfs;
            let macs = lookup_macs(None, &sys);
            assert_eq!(macs, ["02:fc:00:00:00:01"], "{machine}");
            assert_eq!(
                macs.into_iter().collect::<BTreeSet<_>>(),
                inventory_macs(&sys)
            );
        }
    }
}
