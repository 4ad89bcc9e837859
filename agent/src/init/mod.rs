//! PID 1 of the deploy ramdisk. The kernel starts `/init` (this binary);
//! it mounts the pseudo filesystems, loads the NIC and disk drivers, brings
//! the boot NIC up with DHCP, then runs the agent proper as a supervised
//! child. PID 1 must never exit (the kernel would panic), so every failure
//! here is logged and the agent is started anyway: it retries its lookup
//! and the console shows what went wrong.

pub mod clock;
pub mod debug_shell;
pub mod devices;
pub mod firmware;
pub mod handoff;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod power;
pub mod rescue;
pub mod supervise;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tracing::{error, info, warn};

/// The modules loaded at every boot (names, one a line; the ramdisk build
/// writes it from `ramdisk-build/profiles/base.list`). Every other module
/// loads when a device's modalias asks for it.
pub const MODULES_LIST: &str = "/etc/ferrite/modules.list";
pub use crate::power::CHILD_MARKER;

/// Run as PID 1; never returns.
pub fn run() -> ! {
    // First: every thread started from here on inherits the mask.
    supervise::block_signals();
    let mount_errors = mounts::mount_all();
    mounts::ensure_console();
    let cmdline = std::fs::read_to_string("/proc/cmdline");
    let params = cmdline
        .as_ref()
        .map(|c| crate::config::parse_cmdline(c))
        .unwrap_or_default();
    // ipa-debug: debug level, on every console (the agent does the same).
    let debug = params
        .get("ipa-debug")
        .and_then(|v| ferrite_protocol::loose::bool_word(v))
        .unwrap_or(false);
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_max_level(if debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .with_writer(crate::consoles::Console::choose(debug))
        .try_init();
    crate::timeline::begin(Path::new(crate::timeline::PATH));
    info!("ferrite-init {} starting", env!("CARGO_PKG_VERSION"));
    for e in mount_errors {
        error!("{e:#}");
    }
    if let Err(e) = &cmdline {
        error!("reading /proc/cmdline: {e}");
    }

    firmware::watch_kernel_log();
    let settled = devices::start("/sys".into(), MODULES_LIST.into());
    // DHCP starts as soon as the NIC's driver is in, while the rest of the
    // drivers load (a hardware capture needs no network).
    let capture = params.get(crate::hardware::capture::CMDLINE_PARAM);
    if capture.is_none() {
        start_network(&params);
    }
    if let Some(s) = devices::wait_settled(&settled, DRIVERS_BUDGET) {
        crate::timeline::mark("drivers");
        info!(
            "drivers: {} modules for {} devices in {} coldplug passes; {} devices without a driver",
            s.coldplug.loaded,
            s.coldplug.devices,
            s.coldplug.passes,
            s.coldplug.unmatched.len()
        );
    }
    match mounts::mount_efivarfs() {
        Ok(true) => info!("UEFI boot: efivarfs mounted"),
        Ok(false) => {}
        Err(e) => error!("{e:#}"),
    }

    // A hardware capture instead of the agent: write it, power off.
    if let Some(target) = capture {
        if let Err(e) = crate::hardware::capture::run_as_init(Path::new(target)) {
            error!("hardware capture: {e:#}");
        }
        power::shutdown(crate::power::PowerAction::PowerOff);
    }

    // The agent starts now, alongside DHCP: it finds its disks and makes
    // its key meanwhile, and waits for `handoff::NETWORK_READY` to call
    // Ironic.
    if let Err(e) = nix::unistd::sethostname("ferrite") {
        warn!("sethostname: {e}");
    }
    supervise::run(debug_shell::DebugShell::from_params(&params))
}

/// Start PID 1's network manager (it runs for the ramdisk's whole life and
/// renews the leases), and tell the agent once the first address is on.
fn start_network(params: &BTreeMap<String, String>) {
    let net_params = net::NetParams::from_cmdline(params);
    let params = params.clone();
    let budget = net_params.ready_budget();
    let net = net::start(net_params);
    let spawned = std::thread::Builder::new()
        .name("net-ready".into())
        .spawn(move || match net.wait_ready(budget) {
            Some(ready) => {
                info!("network: {} on {}", ready.address, ready.iface);
                let summary = format!("{} {}", ready.iface, ready.address);
                crate::timeline::mark(&format!("address ({summary})"));
                // The clock before the agent calls Ironic: its auto-TLS
                // certificate is dated from it.
                if params.contains_key(clock::PARAM) {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(clock::at_boot(&params)),
                        Err(e) => error!("clock: no runtime: {e}"),
                    }
                    crate::timeline::mark("clock");
                }
                handoff::announce_network(Path::new(handoff::NETWORK_READY), &summary);
            }
            None => error!(
                "network: no address within {} s; the agent calls Ironic anyway and keeps \
                 retrying its lookup while DHCP keeps trying",
                budget.as_secs()
            ),
        });
    if let Err(e) = spawned {
        error!("network: {e}");
    }
}

/// How long PID 1 waits for the drivers of the devices present at boot.
const DRIVERS_BUDGET: Duration = Duration::from_secs(60);
