//! The erase steps (`erase_devices`, `erase_devices_express`,
//! `erase_devices_metadata`) with IPA's guards: the node's
//! `skip_block_devices`, shared-disk filesystems (`ProtectedDeviceError`),
//! virtual media, software RAID members and read-only disks. Every disk is
//! checked before any is touched, so a protected disk fails the step with
//! nothing erased (IPA starts erasing earlier disks while it still checks
//! later ones).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::{info, warn};

use super::manager::StepCall;
use crate::disk::erase::{self, Method, Settings, Tunables};
use crate::disk::guard;
use crate::disk::skip_list::SkipList;
use crate::disk::{list_block_devices, nvme, wipe, BlockDevice};
use crate::errors::RestError;

/// What the node and the agent's configuration say about guarding disks.
struct Guards {
    skip: SkipList,
    /// `ipa-guard-special-filesystems` and the node's
    /// `wipe_special_filesystems` (IPA: both default to guarding).
    special_filesystems: bool,
    skip_read_only: bool,
}

impl Guards {
    fn of(call: &StepCall) -> Result<Self, RestError> {
        Ok(Self {
            skip: SkipList::from_node(&call.node).map_err(RestError::invalid_params)?,
            special_filesystems: call.ctx.config.guard_special_filesystems
                && call.bool_setting("wipe_special_filesystems", true)?,
            skip_read_only: call.bool_setting("agent_erase_skip_read_only", false)?,
        })
    }
}

/// The disks an erase step may touch, after every guard. `Err` when one is
/// protected (nothing may be erased then) or cannot be read to be checked.
/// With `strict_read_only`, a read-only disk is an error unless Ironic
/// allows skipping it (`erase_devices`); otherwise it is skipped.
fn erasable(
    call: &StepCall,
    guards: &Guards,
    strict_read_only: bool,
) -> Result<(Vec<BlockDevice>, Vec<String>), RestError> {
    let cfg = &call.ctx.config;
    let disks = guards.skip.apply(list_block_devices(
        &cfg.sysfs_root,
        &cfg.dev_root,
        &cfg.disk_policy(),
    ));
    let mut todo = Vec::new();
    let mut errors = Vec::new();
    for disk in disks {
        let path = &disk.path;
        let contents = guard::inspect(path).map_err(|e| {
            RestError::block_device_erase(format!(
                "{}: could not read the disk to check what it holds: {e}",
                path.display()
            ))
        })?;
        if let Some(what) = contents.protected.filter(|_| guards.special_filesystems) {
            return Err(RestError::protected_device(guard::protected_message(
                path, what,
            )));
        }
        if let Some(place) = contents.virtual_media {
            info!(disk = %path.display(), ?place, "skipping a virtual media device ({})", guard::VIRTUAL_MEDIA_LABEL);
            continue;
        }
        if let Some(place) = contents.raid_member {
            info!(disk = %path.display(), ?place, "skipping a software RAID member");
            continue;
        }
        if disk.read_only {
            if guards.skip_read_only || !strict_read_only {
                info!(disk = %path.display(), "skipping read-only disk");
            } else {
                errors.push(format!(
                    "Failed to invoke erase of device {} as the device is flagged read-only, and \
                     the conductor has not signaled this is a permitted case.",
                    path.display()
                ));
            }
            continue;
        }
        todo.push(disk);
    }
    Ok((todo, errors))
}

/// Kernel names of a disk's partitions, last first (IPA wipes partitions
/// before their disk, in reverse name order).
fn partitions(sysfs: &Path, disk: &str) -> Vec<String> {
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

/// `erase_devices_metadata`: every erasable disk, its partitions first.
pub fn erase_devices_metadata(call: &StepCall) -> Result<Value, RestError> {
    let guards = Guards::of(call)?;
    let (disks, _) = erasable(call, &guards, false)?;
    let cfg = &call.ctx.config;
    let mut errors = Vec::new();
    for disk in disks {
        let mut devices: Vec<PathBuf> = partitions(&cfg.sysfs_root, &disk.name)
            .into_iter()
            .map(|p| cfg.dev_root.join(p))
            .collect();
        devices.push(disk.path.clone());
        for dev in devices {
            match wipe::wipe_device(&dev) {
                Ok(w) => {
                    info!(device = %dev.display(), signatures = ?w.signatures, "metadata erased")
                }
                Err(e) => errors.push(format!("\"{}\": {e}", dev.display())),
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

/// What Ironic says about erasing, read once per step.
fn settings(call: &StepCall) -> Result<Settings, RestError> {
    Ok(Settings {
        tunables: Tunables {
            iterations: call
                .u64_setting("agent_erase_devices_iterations")?
                .unwrap_or(1)
                .min(u64::from(u32::MAX)) as u32,
            zeroize: call.bool_setting("agent_erase_devices_zeroize", true)?,
        },
        nvme_secure_erase: call.bool_setting("agent_enable_nvme_secure_erase", true)?,
        // The agent's own option (kernel command line), not the node's.
        nvme_sanitize: call.ctx.config.nvme_sanitize,
        ata_secure_erase: call.bool_setting("agent_enable_ata_secure_erase", true)?,
        discard_if_secure_erase_fails: call.bool_setting(
            "agent_enable_discard_erase",
            call.ctx.config.enable_discard_erase,
        )?,
        shred_if_secure_erase_fails: match call.setting("agent_continue_if_secure_erase_failed") {
            Some(_) => call.bool_setting("agent_continue_if_secure_erase_failed", false)?,
            None => call.bool_setting("agent_continue_if_ata_erase_failed", false)?,
        },
    })
}

/// `erase_devices` and `erase_devices_express`, as IPA's: every erasable
/// whole disk, up to `disk_erasure_concurrency` at once; the result maps
/// each disk to `null`, as IPA's does. Express erases an NVMe namespace in
/// the controller and only the metadata of the others.
pub fn erase_devices(call: &StepCall, express: bool) -> Result<Value, RestError> {
    let settings = settings(call)?;
    let guards = Guards::of(call)?;
    let concurrency = call
        .u64_setting("disk_erasure_concurrency")?
        .unwrap_or(1)
        .clamp(1, 64) as usize;
    let (todo, mut errors) = erasable(call, &guards, !express)?;
    let sysfs = &call.ctx.config.sysfs_root;

    let erase_one = |disk: &BlockDevice| -> Result<(), String> {
        let path = &disk.path;
        if express {
            return express_erase(path, &disk.name, settings);
        }
        info!(disk = %path.display(), ?settings, "erasing disk");
        let method = erase::erase_disk(disk, sysfs, settings)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        info!(disk = %path.display(), ?method, "disk erased");
        if let Method::Discarded { samples } = method {
            info!(disk = %path.display(), samples, "erased by a verified discard");
        }
        wipe::reread_partitions(path);
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
            errors.join("\n")
        )))
    } else {
        Err(RestError::block_device_erase(format!(
            "Failed to erase the device(s): {}",
            errors.join("; ")
        )))
    }
}

/// IPA's express erase of one disk: an NVMe namespace by its controller,
/// else (or when that fails) the metadata only. Of the sanitize operations
/// opted into, only a crypto erase is quick enough to be express.
fn express_erase(path: &Path, name: &str, settings: Settings) -> Result<(), String> {
    let mut secure_error = None;
    if nvme::is_nvme(name) && settings.nvme_secure_erase {
        let options = nvme::EraseOptions {
            sanitize: settings.nvme_sanitize.express(),
            // The metadata wipe below must be able to write the disk.
            leave_failure_mode: true,
        };
        match nvme::secure_erase(path, options) {
            Ok(erased) => {
                info!(disk = %path.display(), ?erased, "disk erased by its controller");
                return Ok(());
            }
            Err(e) => {
                warn!(disk = %path.display(), error = %e, "secure erase failed; erasing the metadata");
                secure_error = Some(e);
            }
        }
    }
    match wipe::wipe_device(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(match secure_error {
            Some(s) => format!(
                "\"{}\": Secure erase failed: {s}. Fallback to metadata erase also failed: {e}.",
                path.display()
            ),
            None => format!("\"{}\": {e}", path.display()),
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

    #[test]
    fn run_bounded_keeps_item_order_at_any_width() {
        let items: Vec<u32> = (0..17).collect();
        for width in [1, 3, 64] {
            let out = run_bounded(&items, width, |i| i * 2);
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
