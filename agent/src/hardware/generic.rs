//! The generic hardware manager: steps that work on any machine. Steps are
//! listed only once they are implemented, so a conductor never schedules a
//! step this agent cannot run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrite_protocol::steps::Step;
use serde_json::Value;
use tracing::{info, warn};

use super::burnin::burn_cpu;
use super::manager::{HardwareManager, StepCall, StepDef, StepKind};
use crate::errors::RestError;

/// IPA's `agent_burnin_cpu_timeout` default: one day.
const DEFAULT_BURNIN_SECS: u64 = 86_400;

pub struct GenericHardwareManager;

impl HardwareManager for GenericHardwareManager {
    fn name(&self) -> &'static str {
        "generic_hardware_manager"
    }

    fn class_name(&self) -> &'static str {
        "GenericHardwareManager"
    }

    fn version(&self) -> &'static str {
        "1.2"
    }

    fn support(&self) -> u8 {
        1
    }

    fn steps(&self) -> Vec<StepDef> {
        vec![
            StepDef {
                step: step("burnin_cpu", 0, "deploy"),
                kinds: &[StepKind::Clean, StepKind::Service],
                run: Arc::new(burnin_cpu),
            },
            StepDef {
                step: step("erase_devices_metadata", 99, "deploy"),
                kinds: &[StepKind::Clean],
                run: Arc::new(erase_devices_metadata),
            },
            StepDef {
                step: step("erase_devices_metadata", 0, "deploy"),
                kinds: &[StepKind::Deploy],
                run: Arc::new(erase_devices_metadata),
            },
            StepDef {
                step: step("erase_devices", 10, "deploy"),
                kinds: &[StepKind::Clean],
                run: Arc::new(|call| erase_devices(call, false)),
            },
            StepDef {
                step: step("erase_devices_express", 0, "deploy"),
                kinds: &[StepKind::Clean],
                run: Arc::new(|call| erase_devices(call, true)),
            },
            StepDef {
                step: step("erase_pstore", 0, "deploy"),
                kinds: &[StepKind::Clean],
                run: Arc::new(erase_pstore),
            },
            StepDef {
                step: step("write_image", 0, "deploy"),
                kinds: &[StepKind::Deploy, StepKind::Service],
                run: Arc::new(write_image),
            },
        ]
    }
}

fn step(name: &str, priority: i64, interface: &str) -> Step {
    Step {
        step: name.into(),
        priority,
        interface: interface.into(),
        reboot_requested: false,
        abortable: true,
        argsinfo: None,
        args: None,
        requires_ramdisk: None,
    }
}

fn burnin_cpu(call: &StepCall) -> Result<Value, RestError> {
    let secs = call
        .u64_setting("agent_burnin_cpu_timeout")?
        .unwrap_or(DEFAULT_BURNIN_SECS);
    let cpus = call.u64_setting("agent_burnin_cpu_cpu")?.unwrap_or(0) as usize;
    info!(seconds = secs, cpus, "CPU burn-in started");
    let rounds = burn_cpu(Duration::from_secs(secs), cpus);
    info!(rounds, "CPU burn-in finished");
    Ok(Value::Null)
}

/// `erase_pstore`: the pstore mount is found in procfs `mounts` (a fixture
/// tree in tests), so the step never guesses a path.
fn erase_pstore(call: &StepCall) -> Result<Value, RestError> {
    // Like power: the host's own crash records are not ours to erase. A
    // fixture procfs (tests) names its own pstore directory.
    if !crate::power::in_ramdisk() && call.ctx.config.procfs_root == Path::new("/proc") {
        return Err(RestError::cleaning(
            "refusing to erase pstore: the agent is not running as the ramdisk's init (PID 1)",
        ));
    }
    let mounts_path = call.ctx.config.procfs_root.join("mounts");
    let mounts = std::fs::read_to_string(&mounts_path)
        .map_err(|e| RestError::cleaning(format!("reading {}: {e}", mounts_path.display())))?;
    let Some(root) = super::pstore::find_mount(&mounts) else {
        info!("No pstore found");
        return Ok(Value::Null);
    };
    info!(path = %root.display(), "Cleaning up pstore");
    let removed = super::pstore::erase(&root)
        .map_err(|e| RestError::cleaning(format!("erasing pstore in {}: {e}", root.display())))?;
    info!(entries = removed.len(), "pstore erased");
    Ok(Value::Null)
}

/// The `write_image` deploy step: `prepare_image` in-process; its result is
/// what the `prepare_image` command would have returned.
fn write_image(call: &StepCall) -> Result<Value, RestError> {
    let image_info = call
        .args
        .get("image_info")
        .ok_or_else(|| RestError::invalid_params("write_image needs image_info"))?;
    let message = crate::deploy::prepare_image(
        &call.ctx,
        &call.node,
        image_info,
        call.args.get("configdrive"),
        &call.progress,
    )?;
    Ok(serde_json::json!({ "result": format!("prepare_image: {message}") }))
}

/// Kernel names of a disk's partitions, last first (IPA wipes partitions
/// before their disk, in reverse name order).
fn partitions(sysfs: &std::path::Path, disk: &str) -> Vec<String> {
    let mut parts: Vec<String> = std::fs::read_dir(sysfs.join("block").join(disk))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts.reverse();
    parts
}

/// A member of an assembled software RAID: left to `delete_configuration`, as IPA does.
fn active_raid_member(holders: &std::path::Path) -> bool {
    std::fs::read_dir(holders)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("md"))
        })
        .unwrap_or(false)
}

/// `erase_devices_metadata`: every disk this agent may touch, partitions
/// first; read-only disks and active RAID members are skipped.
fn erase_devices_metadata(call: &StepCall) -> Result<Value, RestError> {
    use crate::disk::{list_block_devices, wipe};
    let cfg = &call.ctx.config;
    let mut errors = Vec::new();
    for disk in list_block_devices(&cfg.sysfs_root, &cfg.dev_root, &cfg.disk_policy()) {
        if disk.read_only {
            info!(disk = %disk.path.display(), "skipping read-only disk");
            continue;
        }
        let disk_dir = cfg.sysfs_root.join("block").join(&disk.name);
        let mut devices: Vec<(std::path::PathBuf, std::path::PathBuf)> =
            partitions(&cfg.sysfs_root, &disk.name)
                .into_iter()
                .map(|p| {
                    (
                        std::path::Path::new("/dev").join(&p),
                        disk_dir.join(&p).join("holders"),
                    )
                })
                .collect();
        devices.push((disk.path.clone(), disk_dir.join("holders")));
        for (dev, holders) in devices {
            if active_raid_member(&holders) {
                info!(device = %dev.display(), "skipping an active software RAID member");
                continue;
            }
            match wipe::wipe_device(&dev) {
                Ok(w) => {
                    info!(device = %dev.display(), signatures = ?w.signatures, "metadata erased")
                }
                Err(e) => errors.push(format!("{}: {e}", dev.display())),
            }
        }
        wipe::reread_partitions(&disk.path);
    }
    if errors.is_empty() {
        Ok(Value::Null)
    } else {
        Err(RestError::block_device_erase(format!(
            "Failed to erase the metadata on the device(s): {}",
            errors.join("; ")
        )))
    }
}

/// `erase_devices` and `erase_devices_express`, as IPA's: every whole disk
/// this agent may touch, up to `disk_erasure_concurrency` at once; the
/// result maps each disk to `null`, as IPA's does. Express erases an NVMe
/// namespace in the controller (or a disk that offloads WRITE ZEROES) and
/// only the metadata of the others.
fn erase_devices(call: &StepCall, express: bool) -> Result<Value, RestError> {
    use crate::disk::erase::{self, Settings, Tunables};
    use crate::disk::list_block_devices;
    let cfg = &call.ctx.config;
    let settings = Settings {
        tunables: Tunables {
            iterations: call
                .u64_setting("agent_erase_devices_iterations")?
                .unwrap_or(1)
                .min(u64::from(u32::MAX)) as u32,
            zeroize: call.bool_setting("agent_erase_devices_zeroize", true)?,
        },
        nvme_secure_erase: call.bool_setting("agent_enable_nvme_secure_erase", true)?,
        ata_secure_erase: call.bool_setting("agent_enable_ata_secure_erase", true)?,
        shred_if_secure_erase_fails: match call.setting("agent_continue_if_secure_erase_failed") {
            Some(_) => call.bool_setting("agent_continue_if_secure_erase_failed", false)?,
            None => call.bool_setting("agent_continue_if_ata_erase_failed", false)?,
        },
    };
    let concurrency = call
        .u64_setting("disk_erasure_concurrency")?
        .unwrap_or(1)
        .clamp(1, 64) as usize;
    let skip_read_only = call.bool_setting("agent_erase_skip_read_only", false)?;

    let mut errors = Vec::new();
    let mut todo = Vec::new();
    for disk in list_block_devices(&cfg.sysfs_root, &cfg.dev_root, &cfg.disk_policy()) {
        if disk.read_only {
            if skip_read_only {
                info!(disk = %disk.path.display(), "skipping read-only disk");
            } else {
                errors.push(format!(
                    "{}: the disk is read-only, and the conductor has not signaled this is a permitted case",
                    disk.path.display()
                ));
            }
            continue;
        }
        if active_raid_member(
            &cfg.sysfs_root
                .join("block")
                .join(&disk.name)
                .join("holders"),
        ) {
            info!(disk = %disk.path.display(), "skipping an active software RAID member");
            continue;
        }
        todo.push(disk);
    }

    let erase_one = |disk: &crate::disk::BlockDevice| -> Result<(), String> {
        let path = &disk.path;
        if express {
            return express_erase(path, &disk.name, &cfg.sysfs_root, settings);
        }
        info!(disk = %path.display(), ?settings, "erasing disk");
        let method = erase::erase_disk(path, &disk.name, &cfg.sysfs_root, settings)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        info!(disk = %path.display(), ?method, "disk erased");
        crate::disk::wipe::reread_partitions(path);
        Ok(())
    };
    let results = run_bounded(&todo, concurrency, erase_one);

    let mut done = serde_json::Map::new();
    for (disk, result) in todo.iter().zip(results) {
        match result {
            Ok(()) => {
                done.insert(disk.path.display().to_string(), Value::Null);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(done))
    } else if express {
        Err(RestError::block_device_erase(format!(
            "Failed to conduct an express erase on the device(s): {}",
            errors.join("; ")
        )))
    } else {
        Err(RestError::block_device_erase(format!(
            "Failed to erase the device(s): {}",
            errors.join("; ")
        )))
    }
}

/// IPA's express erase of one disk: the controller's erase where there is
/// one, else (or when it fails) the metadata.
fn express_erase(
    path: &std::path::Path,
    name: &str,
    sysfs: &std::path::Path,
    settings: crate::disk::erase::Settings,
) -> Result<(), String> {
    use crate::disk::{erase, nvme, wipe};
    let mut secure_error = None;
    if nvme::is_nvme(name) && settings.nvme_secure_erase {
        match nvme::secure_erase(path) {
            Ok(ses) => {
                info!(disk = %path.display(), ?ses, "disk erased by its controller");
                return Ok(());
            }
            Err(e) => {
                warn!(disk = %path.display(), error = %e, "secure erase failed; erasing the metadata");
                secure_error = Some(e);
            }
        }
    } else if erase::write_zeroes_supported(sysfs, name) {
        let zeroed = erase::shred(
            path,
            true,
            erase::Tunables {
                iterations: 0,
                zeroize: true,
            },
        );
        match zeroed {
            Ok(_) => return Ok(()),
            Err(e) => {
                warn!(disk = %path.display(), error = %e, "WRITE ZEROES failed; erasing the metadata")
            }
        }
    }
    match wipe::wipe_device(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(match secure_error {
            Some(s) => format!(
                "{}: Secure erase failed: {s}. Fallback to metadata erase also failed: {e}.",
                path.display()
            ),
            None => format!("{}: {e}", path.display()),
        }),
    }
}

/// Run `f` over `items` on at most `width` threads; results in item order.
fn run_bounded<T: Sync, R: Send>(items: &[T], width: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..width.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                let r = f(item);
                if let Ok(mut slots) = slots.lock() {
                    slots[i] = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPA also lists `delete_configuration`/`create_configuration` (clean)
    /// and `apply_configuration` (deploy) on the `raid` interface. They are
    /// software RAID (mdadm) steps this agent does not implement; listing
    /// them would let Ironic's agent RAID interface schedule them, so they
    /// must stay out until they exist.
    #[test]
    fn advertised_clean_steps() {
        let steps: Vec<(String, i64, String)> = GenericHardwareManager
            .steps()
            .into_iter()
            .filter(|d| d.kinds.contains(&StepKind::Clean))
            .map(|d| (d.step.step, d.step.priority, d.step.interface))
            .collect();
        assert!(steps.contains(&("erase_pstore".into(), 0, "deploy".into())));
        assert!(steps.iter().all(|(_, _, iface)| iface == "deploy"));
    }
}
