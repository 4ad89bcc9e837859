//! `ferrite-agent net-up --interface IF [--ipv6] [--vlan-interfaces SPEC]`:
//! PID 1's IPv6 and VLAN bring-up on named interfaces, for debugging and
//! for the network-namespace tests. Prints what it got as JSON.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::init::net::{ipv6, link, vlan};

#[derive(clap::Args, Debug)]
pub struct NetUpArgs {
    /// The NICs to work on (repeatable); they are set up first.
    #[arg(long = "interface", required = true)]
    pub interfaces: Vec<String>,
    /// Run IPv6 (SLAAC and DHCPv6) on the first interface until it has a
    /// usable global address.
    #[arg(long)]
    pub ipv6: bool,
    /// `ipa-enable-vlan-interfaces`: `nic.vid`, `nic` or `all`, comma-separated.
    #[arg(long, value_name = "SPEC")]
    pub vlan_interfaces: Option<String>,
    /// How long to listen for LLDP when VLANs are learnt from it.
    #[arg(long, default_value_t = 30)]
    pub lldp_timeout: u64,
    /// Give up on an address after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Merge DHCPv6's DNS servers into this file (default: not written).
    #[arg(long)]
    pub resolv_conf: Option<PathBuf>,
    /// With --ipv6: print the address, then keep IPv6 running (renewing
    /// the DHCPv6 lease) this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub hold: Option<u64>,
}

fn nic(sysfs: &Path, name: &str) -> anyhow::Result<link::Nic> {
    let dir = sysfs.join("class/net").join(name);
    Ok(link::Nic {
        ifindex: link::ifindex(sysfs, name).with_context(|| format!("no interface {name}"))?,
        mac: std::fs::read_to_string(dir.join("address"))
            .with_context(|| format!("reading {name}'s MAC address"))?
            .trim()
            .to_string(),
        name: name.to_string(),
    })
}

pub fn run(args: NetUpArgs) -> anyhow::Result<()> {
    let sysfs = Path::new("/sys");
    let nics = args
        .interfaces
        .iter()
        .map(|n| nic(sysfs, n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let budget = Duration::from_secs(args.timeout);
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        for n in &nics {
            link::set_up(&handle, n.ifindex).await?;
        }
        let mut out = json!({});
        let mut failed = false;
        if let Some(spec) = &args.vlan_interfaces {
            let outcomes = vlan::bring_up(
                &handle,
                &nics,
                spec,
                Duration::from_secs(args.lldp_timeout),
                budget,
            )
            .await;
            out["vlans"] = outcomes
                .iter()
                .map(|o| match &o.result {
                    Ok((v, lease)) => json!({
                        "interface": v.name,
                        "address": lease.address.to_string(),
                        "prefix_len": lease.prefix_len,
                    }),
                    Err(e) => {
                        failed = true;
                        json!({"interface": format!("{}.{}", o.parent, o.vid), "error": format!("{e:#}")})
                    }
                })
                .collect();
        }
        if args.ipv6 {
            let opts = ipv6::V6Options {
                procfs: PathBuf::from("/proc"),
                resolv: args
                    .resolv_conf
                    .clone()
                    .map(|p| std::sync::Arc::new(crate::init::net::resolv::Resolv::new(p))),
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let run = ipv6::run_v6(&handle, &nics[0], &opts, move |a| {
                let _ = tx.send(a);
            });
            tokio::pin!(run);
            let first = tokio::select! {
                _ = &mut run => None,
                got = tokio::time::timeout(budget, rx.recv()) => got.ok().flatten(),
            };
            match first {
                Some(IpAddr::V6(a)) => {
                    out["ipv6"] = json!({"interface": nics[0].name, "address": a.to_string()});
                    if let Some(hold) = args.hold {
                        // Keep renewing, for the lease-renewal test.
                        println!("{out}");
                        let _ = tokio::time::timeout(Duration::from_secs(hold), &mut run).await;
                        return anyhow::Ok(());
                    }
                }
                _ => {
                    failed = true;
                    tracing::error!(
                        "no usable global IPv6 address on {} within {} s",
                        nics[0].name,
                        args.timeout
                    );
                }
            }
        }
        println!("{out}");
        anyhow::ensure!(!failed, "not everything got an address");
        anyhow::Ok(())
    })
}
