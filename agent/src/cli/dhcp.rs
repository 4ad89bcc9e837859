//! `ferrite-agent dhcp --interface IF [--apply] [--keep-for SECS]`: PID 1's
//! DHCP client on one interface, for debugging and for the
//! network-namespace tests. It sets the link up, prints the lease as JSON;
//! `--apply` also configures it, and `--keep-for` then keeps it for that
//! long with PID 1's renewal state machine, printing one JSON line per
//! state change.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::init::net::{dhcp, link, v4};

#[derive(clap::Args, Debug)]
pub struct DhcpArgs {
    /// The interface to run DHCP on.
    #[arg(long)]
    pub interface: String,
    /// Give up after this many seconds without a lease.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Put the address and default route on the interface.
    #[arg(long)]
    pub apply: bool,
    /// Keep the lease (renewing, rebinding, starting over) for this many
    /// seconds, then exit; implies --apply.
    #[arg(long, value_name = "SECS")]
    pub keep_for: Option<u64>,
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
        let mut client = dhcp::Client::new(&nic.name, &nic.mac_bytes())?;
        let acked = client.obtain(Duration::from_secs(args.timeout)).await?;
        let lease = &acked.lease;
        println!(
            "{}",
            serde_json::json!({
                "interface": nic.name,
                "address": lease.address.to_string(),
                "prefix_len": lease.prefix_len,
                "routers": lease.routers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "dns": lease.dns.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "domain": lease.domain,
                "search": lease.search,
                "server": lease.server.to_string(),
                "lease_secs": lease.lease_secs,
                "renew_secs": lease.renew_secs,
                "rebind_secs": lease.rebind_secs,
            })
        );
        let machine = v4::V4 {
            nic: nic.clone(),
            handle,
            route: Arc::new(v4::DefaultRoute::default()),
            observer: Arc::new(|nic: &link::Nic, event: &v4::Event| {
                println!("{}", event.to_json(&nic.name))
            }),
        };
        match args.keep_for {
            Some(secs) => {
                let keep = machine.keep(&mut client, acked);
                let _ = tokio::time::timeout(Duration::from_secs(secs), keep).await;
            }
            None if args.apply => machine.apply(&acked.lease, None).await,
            None => {}
        }
        anyhow::Ok(())
    })
}
