//! udev's job in the ramdisk, on one thread for the life of PID 1: coldplug
//! the devices present, load the boot module list, then load drivers for
//! devices as they appear and answer firmware requests.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::firmware;
use super::modules::{coldplug, load_listed, uevent, Loader};

/// What coldplug did, for PID 1's log.
#[derive(Debug, Default, Clone)]
pub struct Settled {
    pub coldplug: coldplug::Report,
}

/// Start the device thread. The receiver yields once, when the devices
/// present at boot have their drivers.
pub fn start(sysfs: PathBuf, boot_list: PathBuf) -> mpsc::Receiver<Settled> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("devices".into())
        .spawn(move || run(&sysfs, &boot_list, tx));
    if let Err(e) = spawned {
        error!("device thread: {e}; no drivers load");
    }
    rx
}

/// Wait for the first round, at most `budget`: a driver stuck in its probe
/// must not keep the machine from calling back.
pub fn wait_settled(rx: &mpsc::Receiver<Settled>, budget: Duration) -> Option<Settled> {
    match rx.recv_timeout(budget) {
        Ok(s) => Some(s),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            warn!("drivers still loading after {budget:?}; going on");
            None
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
    }
}

fn run(sysfs: &Path, boot_list: &Path, tx: mpsc::Sender<Settled>) {
    // Opened first: a device that appears during coldplug is then seen
    // either by the scan or as an event.
    let events = uevent::UeventSocket::open()
        .map_err(|e| warn!("uevents: {e}; devices added later get no driver"))
        .ok();
    let loader = match Loader::for_running_kernel() {
        Ok(l) => l,
        Err(e) => {
            error!("kernel modules: {e:#}");
            let _ = tx.send(Settled::default());
            return;
        }
    };
    // Devices first: the NIC's driver is what the first heartbeat waits on.
    let report = coldplug::coldplug(&loader, sysfs);
    for device in &report.unmatched {
        coldplug::log_unmatched(&loader, device);
    }
    let _ = tx.send(Settled { coldplug: report });
    // Then the boot list (filesystems, md, dm: nothing until a deploy needs
    // them, and the kernel's own requests load them on demand meanwhile),
    // at the lowest priority: on a small machine it would otherwise take
    // the CPU from DHCP and the agent's first call to Ironic.
    set_thread_nice(19);
    match load_listed(&loader, boot_list) {
        Ok(n) => info!("drivers: {n} modules from the boot list"),
        Err(e) => error!("kernel modules: {e:#}"),
    }
    set_thread_nice(0);
    let Some(events) = events else { return };
    let mut failures = 0u32;
    loop {
        match events.next() {
            Ok(Some(ev)) => {
                failures = 0;
                handle(&loader, sysfs, &ev);
            }
            Ok(None) => {}
            Err(e) => {
                // ENOBUFS: events were dropped in a burst; rescan for them.
                failures += 1;
                warn!("uevents: {e}; rescanning devices");
                let report = coldplug::coldplug(&loader, sysfs);
                for device in &report.unmatched {
                    coldplug::log_unmatched(&loader, device);
                }
                if failures > 100 {
                    error!("uevents keep failing; devices added from now on get no driver");
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn handle(loader: &Loader, sysfs: &Path, ev: &uevent::Uevent) {
    if ev.action != "add" {
        return;
    }
    if ev.var("SUBSYSTEM") == Some("firmware") {
        if let Some(name) = ev.var("FIRMWARE") {
            firmware::serve_fallback(sysfs, &ev.devpath, name, Path::new(firmware::FIRMWARE_DIR));
        }
        return;
    }
    let Some(modalias) = ev.var("MODALIAS") else {
        return;
    };
    let before = loader.loaded();
    let modules = loader.load_for_device(modalias);
    if modules.is_empty() {
        coldplug::log_unmatched(
            loader,
            &coldplug::Device {
                path: sysfs.join(ev.devpath.trim_start_matches('/')),
                modalias: modalias.to_string(),
                bound: false,
            },
        );
    } else if loader.loaded() > before {
        info!("new device {}: loaded {}", ev.devpath, modules.join(" "));
    } else {
        debug!(
            "new device {}: {} already loaded",
            ev.devpath,
            modules.join(" ")
        );
    }
}

/// This thread's nice value (Linux keeps one per thread).
fn set_thread_nice(nice: i32) {
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: setpriority has no memory effects.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
        debug!("setpriority({nice}): {}", std::io::Error::last_os_error());
    }
}
