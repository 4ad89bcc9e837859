//! Which filesystem a file goes to, mounted for the time of one file as
//! IPA does: a partition of the install disk by number, a device by path,
//! or the first partition whose filesystem holds the path's first
//! directory. Filesystems are probed read-only and mounted read-write only
//! once chosen.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::mount::MsFlags;
use tracing::{debug, info};

use super::fs_root::FsRoot;
use super::InjectError;
use crate::disk::fsinfo;
use crate::disk::mounts::Mounts;
use crate::disk::partitions::{self, Partition};
use crate::disk::region::Region;
use crate::disk::DiskPolicy;

/// Where the agent finds disks, and which it may touch.
pub struct DiskEnv<'a> {
    pub sysfs_root: &'a Path,
    pub dev_root: &'a Path,
    pub policy: &'a DiskPolicy,
}

/// A filesystem mounted on a private directory; unmounted and the
/// directory removed on drop.
pub struct Mounted {
    pub device: PathBuf,
    /// Closed before the unmount, which it would keep busy.
    root: Option<FsRoot>,
    mounts: Mounts,
    dir: PathBuf,
}

impl Mounted {
    pub fn root(&self) -> &FsRoot {
        self.root.as_ref().expect("present until drop")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.root = None;
        if let Err(e) = self.mounts.unmount_all() {
            tracing::warn!("{e}");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn mount_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "ferrite-inject-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Mount `device` (a partition node) after identifying its filesystem.
pub fn mount(device: &Path, read_only: bool) -> Result<Mounted, String> {
    let len = std::fs::File::open(device)
        .and_then(|f| crate::disk::ioctl::device_size(&f))
        .map_err(|e| format!("{}: {e}", device.display()))?;
    let region = Region {
        disk: device.to_path_buf(),
        number: 0,
        offset: 0,
        len,
        node: None,
    };
    let info = fsinfo::probe(&region)
        .map_err(|e| format!("reading {}: {e}", device.display()))?
        .ok_or_else(|| format!("{} holds no filesystem the agent knows", device.display()))?;
    if matches!(info.fstype, "swap" | "iso9660") {
        return Err(format!(
            "{} holds {}, which cannot take files",
            device.display(),
            info.fstype
        ));
    }
    let dir = mount_dir();
    let mut mounts = Mounts::default();
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if let Err(e) = mounts.mount_with(device, &dir, info.fstype, flags) {
        let _ = std::fs::remove_dir(&dir);
        return Err(e);
    }
    let root = match FsRoot::open(&dir) {
        Ok(r) => r,
        Err(e) => {
            drop(mounts);
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("opening {}: {e}", dir.display()));
        }
    };
    Ok(Mounted {
        device: device.to_path_buf(),
        root: Some(root),
        mounts,
        dir,
    })
}

/// The install disk's partitions with their device nodes.
fn partitions_of(env: &DiskEnv, disk: &Path) -> Result<Vec<(Partition, PathBuf)>, InjectError> {
    let table = partitions::read_table(disk)
        .map_err(|e| InjectError::NotFound(format!("reading the partition table: {e}")))?;
    let nodes = partitions::expose_partitions(env.sysfs_root, disk, &table)
        .map_err(|e| InjectError::NotFound(e.to_string()))?;
    Ok(table
        .partitions
        .into_iter()
        .filter_map(|p| {
            let node = nodes.iter().find(|(n, _)| *n == p.number)?.1.clone();
            Some((p, node))
        })
        .collect())
}

/// Partition `number` of `disk`, mounted read-write.
pub fn by_number(env: &DiskEnv, disk: &Path, number: u32) -> Result<Mounted, InjectError> {
    let parts = partitions_of(env, disk)?;
    let (_, node) = parts
        .iter()
        .find(|(p, _)| p.number == number)
        .ok_or_else(|| {
            InjectError::NotFound(format!("{} has no partition {number}", disk.display()))
        })?;
    mount(node, false).map_err(InjectError::Mount)
}

/// A device given by path: a block device on a disk the agent may touch.
pub fn by_device(env: &DiskEnv, device: &Path) -> Result<Mounted, InjectError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(device)
        .map_err(|e| InjectError::NotFound(format!("{}: {e}", device.display())))?;
    if !meta.file_type().is_block_device() {
        return Err(InjectError::NotFound(format!(
            "{} is not a block device",
            device.display()
        )));
    }
    let disk = owning_disk(env, device);
    if !env.policy.allows(&disk) {
        return Err(InjectError::NotFound(format!(
            "{} is on {}, which this agent may not touch (ferrite-disks)",
            device.display(),
            disk.display()
        )));
    }
    mount(device, false).map_err(InjectError::Mount)
}

/// The whole disk a partition node belongs to (the node itself if it is a
/// disk), as sysfs links them: `/sys/class/block/sda2` → `…/sda/sda2`.
fn owning_disk(env: &DiskEnv, device: &Path) -> PathBuf {
    let name = device.file_name().map(PathBuf::from).unwrap_or_default();
    let class = env.sysfs_root.join("class/block").join(&name);
    if class.join("partition").exists() {
        if let Some(disk) = std::fs::canonicalize(&class)
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(PathBuf::from))
        {
            return env.dev_root.join(disk);
        }
    }
    env.dev_root.join(name)
}

/// IPA's `find_partition_with_path`: the first partition of `disk` whose
/// filesystem has the directory `dir`, mounted read-write.
pub fn with_directory(env: &DiskEnv, disk: &Path, dir: &Path) -> Result<Mounted, InjectError> {
    let parts = partitions_of(env, disk)?;
    let mut scanned = Vec::new();
    for (part, node) in &parts {
        scanned.push(part.number.to_string());
        if is_lvm(part) {
            debug!(partition = part.number, "skipping an LVM partition");
            continue;
        }
        let found = match mount(node, true) {
            Ok(m) => m.root().is_dir(dir),
            Err(e) => {
                debug!(partition = %node.display(), error = %e, "not a place for files");
                false
            }
        };
        if found {
            info!(path = %dir.display(), partition = %node.display(), "found the directory");
            return mount(node, false).map_err(InjectError::Mount);
        }
    }
    Err(InjectError::NotFound(format!(
        "No partition found with path /{}, scanned: [{}]",
        dir.display(),
        scanned.join(", ")
    )))
}

fn is_lvm(p: &Partition) -> bool {
    const LVM_GPT: uuid::Uuid = uuid::uuid!("e6d6d379-f507-44c2-a23c-238f2a3df928");
    match p.kind {
        partitions::PartitionType::Gpt(t) => t == LVM_GPT,
        partitions::PartitionType::Mbr(t) => t == 0x8e,
    }
}
