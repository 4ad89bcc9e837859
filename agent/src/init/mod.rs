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
pub mod modules;
pub mod mounts;
pub mod net;
pub mod power;
pub mod supervise;

use std::path::Path;
use std::time::Duration;

use tracing::{error, info, warn};

/// The modules loaded at every boot (names, one a line; the ramdisk build
/// writes it from `ramdisk-build/profiles/base.list`). Every other module
/// loads when a device's modalias asks for it.
pub const MODULES_LIST: &str = "/etc/ferrite/modules.list";
/// Set in the agent's environment so it knows it runs under this init.
pub const CHILD_MARKER: &str = "FERRITE_INIT_CHILD";

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
        .and_then(|v| crate::config::bool_word(v))
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
    info!("ferrite-init {} starting", env!("CARGO_PKG_VERSION"));
    for e in mount_errors {
        error!("{e:#}");
    }
    if let Err(e) = &cmdline {
        error!("reading /proc/cmdline: {e}");
    }

    firmware::watch_kernel_log();
    let settled = devices::start("/sys".into(), MODULES_LIST.into());
    if let Some(s) = devices::wait_settled(&settled, DRIVERS_BUDGET) {
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
    if let Some(target) = params.get(crate::hardware::capture::CMDLINE_PARAM) {
        if let Err(e) = crate::hardware::capture::run_as_init(Path::new(target)) {
            error!("hardware capture: {e:#}");
        }
        power::shutdown(crate::power::PowerAction::PowerOff);
    }

    let bootif = params.get("BOOTIF").map(String::as_str);
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            if let Err(e) = rt.block_on(net::configure(Path::new("/sys"), bootif, NET_BUDGET)) {
                error!("network: {e:#}; the agent starts anyway and keeps retrying its lookup");
            }
            // Hook: once the first address is up, before the agent (its
            // auto-TLS certificate is dated from this clock).
            rt.block_on(clock::at_boot(&params));
        }
        Err(e) => error!("network: no runtime: {e}"),
    }
    if let Err(e) = nix::unistd::sethostname("ferrite") {
        warn!("sethostname: {e}");
    }
    supervise::run(debug_shell::DebugShell::from_params(&params))
}

/// How long PID 1 waits for the drivers of the devices present at boot.
const DRIVERS_BUDGET: Duration = Duration::from_secs(60);
/// How long PID 1 waits for NICs and DHCP before starting the agent.
const NET_BUDGET: Duration = Duration::from_secs(60);
