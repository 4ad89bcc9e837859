//! Coldplug: the devices the kernel found before PID 1 started each have a
//! `modalias` file in sysfs. Load the drivers they match, then look again:
//! a loaded driver creates child devices that need drivers of their own
//! (virtio PCI → virtio net device → virtio_net; SCSI host → disk →
//! sd_mod). Devices that appear later arrive as uevents (`uevent.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::Loader;

/// sysfs nests devices a dozen levels deep; a bound stops a malformed tree
/// (or a fixture) from recursing forever.
const MAX_DEPTH: usize = 32;
/// Passes over sysfs at most: each pass after the first only finds the
/// children of drivers the previous pass loaded.
pub const MAX_PASSES: usize = 8;

/// A device that names the driver it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its directory under `/sys/devices`.
    pub path: PathBuf,
    pub modalias: String,
    /// A driver is bound already (built into the kernel, or loaded).
    pub bound: bool,
}

/// Every device under `<sysfs>/devices` with a non-empty modalias.
/// Symlinks are not followed (sysfs links every device from many places).
pub fn scan(sysfs: &Path) -> Vec<Device> {
    let mut out = Vec::new();
    walk(&sysfs.join("devices"), 0, &mut out);
    out
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<Device>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            subdirs.push(entry.path());
        } else if kind.is_file() && entry.file_name() == "modalias" {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                let modalias = text.trim();
                if !modalias.is_empty() {
                    out.push(Device {
                        path: dir.to_path_buf(),
                        modalias: modalias.to_string(),
                        bound: dir.join("driver").exists(),
                    });
                }
            }
        }
    }
    subdirs.sort();
    for sub in subdirs {
        walk(&sub, depth + 1, out);
    }
}

/// What coldplug did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub passes: usize,
    /// Distinct modaliases seen.
    pub devices: usize,
    /// Module files loaded (dependencies included).
    pub loaded: usize,
    /// Devices no shipped module matched and no driver is bound to.
    pub unmatched: Vec<Device>,
}

/// Threads loading drivers at once. Module loading is mostly the driver's
/// probe, which often sleeps (ATA ports time out, NICs reset): more threads
/// than CPUs still help.
const LOADERS: usize = 8;

/// Load drivers for every device in `sysfs`, pass after pass, until a pass
/// finds no modalias it has not seen (or `MAX_PASSES`). Within a pass the
/// devices' drivers load in parallel.
pub fn coldplug(loader: &Loader, sysfs: &Path) -> Report {
    let mut seen = BTreeSet::new();
    let mut report = Report::default();
    let before = loader.loaded();
    for _ in 0..MAX_PASSES {
        let fresh: Vec<Device> = scan(sysfs)
            .into_iter()
            .filter(|d| seen.insert(d.modalias.clone()))
            .collect();
        if fresh.is_empty() {
            break;
        }
        report.passes += 1;
        for (device, modules) in load_all(loader, fresh) {
            if modules.is_empty() && !device.bound {
                report.unmatched.push(device);
            } else if !modules.is_empty() {
                debug!("{}: {}", device.modalias, modules.join(" "));
            }
        }
    }
    report.devices = seen.len();
    report.loaded = loader.loaded() - before;
    report
}

/// Each device with the modules that drive it, loaded by up to `LOADERS`
/// threads taking devices from one queue (in scan order).
fn load_all(loader: &Loader, devices: Vec<Device>) -> Vec<(Device, Vec<String>)> {
    let count = devices.len();
    let queue = std::sync::Mutex::new(devices.into_iter().enumerate());
    let done = std::sync::Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|s| {
        for _ in 0..LOADERS.min(count) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some((i, device)) = next else { break };
                let modules = loader.load_for_device(&device.modalias);
                done.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, device, modules));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _, _)| *i);
    done.into_iter().map(|(_, d, m)| (d, m)).collect()
}

/// Log a device without a driver: a warning, with the driver's name, when
/// the kernel has a module for it that this ramdisk does not ship; quietly
/// otherwise (bridges, CPU features and the like need none).
pub fn log_unmatched(loader: &Loader, device: &Device) {
    if device.path.join("driver").exists() {
        return;
    }
    let wanted = loader.unshipped_drivers(&device.modalias);
    if wanted.is_empty() {
        debug!(
            "no driver for {} ({})",
            device.modalias,
            device.path.display()
        );
    } else {
        warn!(
            "no driver in this ramdisk for device {} (modalias {}): the kernel's {} would drive it; \
             build the ramdisk with a profile that ships it",
            device.path.display(),
            device.modalias,
            wanted.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn device(root: &Path, rel: &str, modalias: &str, bound: bool) {
        let dir = root.join("devices").join(rel);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("modalias"), format!("{modalias}\n")).unwrap();
        if bound {
            fs::create_dir_all(dir.join("driver")).unwrap();
        }
    }

    #[test]
    fn scan_finds_modaliases_and_bound_drivers() {
        let root = tempfile::tempdir().unwrap();
        device(
            root.path(),
            "pci0000:00/0000:00:02.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            true,
        );
        device(
            root.path(),
            "pci0000:00/0000:00:02.0/virtio0",
            "virtio:d00000001v00001AF4",
            false,
        );
        // Empty modalias files (some platform devices) are not devices.
        let cpu = root.path().join("devices/system/cpu");
        fs::create_dir_all(&cpu).unwrap();
        fs::write(cpu.join("modalias"), "\n").unwrap();
        // A symlink loop must not be followed.
        std::os::unix::fs::symlink(
            root.path().join("devices"),
            root.path().join("devices/pci0000:00/loop"),
        )
        .unwrap();
        let found = scan(root.path());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].bound);
        assert_eq!(found[1].modalias, "virtio:d00000001v00001AF4");
        assert!(!found[1].bound);
    }

    #[test]
    fn coldplug_reports_devices_nothing_matches() {
        let root = tempfile::tempdir().unwrap();
        let moddir = root.path().join("lib");
        fs::create_dir_all(&moddir).unwrap();
        // No module files at all: every device is unmatched, and the
        // unshipped table names the driver the megasas controller needs.
        fs::write(moddir.join("modules.dep"), "").unwrap();
        fs::write(
            moddir.join(crate::init::modules::UNSHIPPED_ALIASES),
            "alias pci:v00001000d00000411sv*sd*bc*sc*i* megaraid_sas\n",
        )
        .unwrap();
        let sys = root.path().join("sys");
        let megasas = "pci:v00001000d00000411sv00001000sd00001013bc01sc04i00";
        device(&sys, "pci0000:00/0000:00:03.0", megasas, false);
        device(
            &sys,
            "pci0000:00/0000:00:00.0",
            "pci:v00008086d00001237",
            true,
        );
        let loader = Loader::open(&moddir).unwrap();
        let report = coldplug(&loader, &sys);
        assert_eq!(report.passes, 1);
        assert_eq!(report.devices, 2);
        assert_eq!(report.loaded, 0);
        assert_eq!(report.unmatched.len(), 1);
        assert_eq!(report.unmatched[0].modalias, megasas);
        assert_eq!(loader.unshipped_drivers(megasas), ["megaraid_sas"]);
    }
}
