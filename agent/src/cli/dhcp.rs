//! `ferrite-agent dhcp --interface IF [--apply]`: PID 1's DHCP client on
//! one interface, for debugging and for the network-namespace test. It
//! sets the link up; `--apply` also configures the lease.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::init::net::{apply_lease, dhcp, link};

#[derive(clap::Args, Debug)]
pub struct DhcpArgs {
    /// The interface to run DHCP on.
    #[arg(long)]
    pub interface: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Put the address and default route on the interface.
    #[arg(long)]
    pub apply: bool,
}

pub fn run(args: DhcpArgs) -> anyhow::Result<()> {
    let sysfs = Path::new("/sys");
    let dir = sysfs.join("class/net").join(&args.interface);
    let nic = link::Nic {
        ifindex: link::ifindex(sysfs, &args.interface)
            .with_context(|| format!("no interface {}", args.interface))?,
        mac: std::fs::read_to_string(dir.join("address"))
            .context("reading the MAC address")?
            .trim()
            .to_string(),
        name: args.interface.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        link::set_up(&handle, nic.ifindex).await?;
        let lease = dhcp::obtain(
            &nic.name,
            &nic.mac_bytes(),
            Duration::from_secs(args.timeout),
        )
        .await?;
        println!(
            "{}",
            serde_json::json!({
                "interface": nic.name,
                "address": lease.address.to_string(),
                "prefix_len": lease.prefix_len,
                "routers": lease.routers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "dns": lease.dns.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "server": lease.server.to_string(),
                "lease_secs": lease.lease_secs,
            })
        );
        if args.apply {
            apply_lease(&handle, &nic, &lease, true).await?;
        }
        anyhow::Ok(())
    })
}
