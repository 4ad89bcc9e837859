//! The arrays the kernel runs, read from sysfs (`/sys/block/md*/md`), and
//! what a deploy sees because of them: an array is an install target, its
//! holder disks no longer are. Also IPA's `mdadm --assemble --scan`, done
//! natively: complete arrays found on disk are started.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::disk::md::assemble::{self, Attrs, Sysfs};
use crate::disk::md::scan;
use crate::disk::{BlockDevice, DiskPolicy};

/// Loads a kernel module by name: the ramdisk's own loader, or nothing
/// where the agent must not load modules (on a host).
pub type LoadModule<'a> = &'a (dyn Fn(&str) + Sync);

/// Modules load in the background while the agent already runs, and a
/// profile may not list them at all: load md and the level's personality
/// before touching md's sysfs files.
fn ensure_modules(sysfs_root: &Path, personality: Option<&str>, load: LoadModule<'_>) {
    for module in std::iter::once("md_mod").chain(personality) {
        if !sysfs_root.join("module").join(module).exists() {
            tracing::debug!(module, "loading for software RAID");
            load(module);
        }
    }
}

/// The personality module of an md level number.
fn personality(level: i32) -> Option<&'static str> {
    match level {
        0 => Some("raid0"),
        1 => Some("raid1"),
        10 => Some("raid10"),
        _ => None,
    }
}

/// An md array the kernel has (running, or stopped but not yet cleared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningArray {
    /// `md<index>`.
    pub index: usize,
    pub path: PathBuf,
    /// Bytes (0 when not running).
    pub size: u64,
    /// `array_state`: `clean`, `active`, `inactive`, `read-auto`, …
    pub state: String,
    /// Kernel names of the member devices (`vda1`).
    pub members: Vec<String>,
    /// Kernel names of the disks the members are on (`vda`).
    pub holders: Vec<String>,
}

impl RunningArray {
    pub fn name(&self) -> String {
        format!("md{}", self.index)
    }

    /// Running arrays serve I/O; `inactive` ones only hold their members.
    pub fn is_running(&self) -> bool {
        !matches!(self.state.as_str(), "inactive" | "clear" | "")
    }

    /// As a disk in a listing: what root device hints and IPA's size rule see.
    pub fn as_block_device(&self) -> BlockDevice {
        BlockDevice {
            name: self.name(),
            path: self.path.clone(),
            size: self.size,
            model: "RAID".into(),
            logical_sectors: 512,
            physical_sectors: 512,
            ..Default::default()
        }
    }
}

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The disk a block device is on: itself for a disk, its parent for a
/// partition (`/sys/class/block/vda1` sits in `…/block/vda/`).
fn holder_of(sysfs_root: &Path, name: &str) -> String {
    let dir = sysfs_root.join("class/block").join(name);
    if dir.join("partition").exists() {
        if let Some(parent) = fs::canonicalize(&dir).ok().and_then(|p| {
            p.parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_os_string())
        }) {
            return parent.to_string_lossy().into_owned();
        }
    }
    name.to_string()
}

/// Every md device under `<sysfs>/block`, by index.
pub fn arrays(sysfs_root: &Path) -> Vec<RunningArray> {
    let Ok(entries) = fs::read_dir(sysfs_root.join("block")) else {
        return Vec::new();
    };
    let mut out: Vec<RunningArray> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let index: usize = name.strip_prefix("md")?.parse().ok()?;
            let dir = e.path();
            let state = read_trim(&dir.join("md/array_state"));
            let mut members: Vec<String> = fs::read_dir(dir.join("slaves"))
                .map(|d| {
                    d.flatten()
                        .map(|m| m.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            members.sort();
            let mut holders: Vec<String> =
                members.iter().map(|m| holder_of(sysfs_root, m)).collect();
            holders.sort();
            holders.dedup();
            let sectors: u64 = read_trim(&dir.join("size")).parse().unwrap_or(0);
            Some(RunningArray {
                index,
                path: PathBuf::from(format!("/dev/md{index}")),
                size: sectors * 512,
                state,
                members,
                holders,
            })
        })
        .collect();
    out.sort_by_key(|a| a.index);
    out
}

/// What a deploy may write an image to: the disks the policy allows, less
/// the holders of any array, plus the running arrays whose holders are
/// all allowed (IPA lists md devices beside disks; writing to a holder
/// would tear its array apart, so those are left out).
pub fn install_candidates(
    mut disks: Vec<BlockDevice>,
    sysfs_root: &Path,
    policy: &DiskPolicy,
) -> Vec<BlockDevice> {
    let arrays = arrays(sysfs_root);
    disks.retain(|d| !arrays.iter().any(|a| a.holders.contains(&d.name)));
    disks.extend(
        arrays
            .iter()
            .filter(|a| a.is_running() && a.size > 0)
            .filter(|a| {
                a.holders
                    .iter()
                    .all(|h| policy.allows(&Path::new("/dev").join(h)))
            })
            .map(RunningArray::as_block_device),
    );
    disks
}

/// The devices that may carry md superblocks: each allowed disk and its
/// partitions, as `/dev` paths (what `mdadm --examine --scan` reads).
pub fn member_candidates(sysfs_root: &Path, disks: &[BlockDevice]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for disk in disks {
        out.push(disk.path.clone());
        let Ok(entries) = fs::read_dir(sysfs_root.join("block").join(&disk.name)) else {
            continue;
        };
        let mut parts: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&disk.name) && n.len() > disk.name.len())
            .collect();
        parts.sort();
        out.extend(parts.into_iter().map(|p| Path::new("/dev").join(p)));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{device}: {source}")]
    Device {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{device} is not a block device")]
    NotBlock { device: String },
    #[error(transparent)]
    Assemble(#[from] assemble::AssembleError),
    #[error("no free md device number below {0}")]
    NoFreeIndex(usize),
}

/// `MAJOR:MINOR` of a device node.
pub fn dev_number(path: &Path) -> Result<(u32, u32), RunError> {
    let meta = fs::metadata(path).map_err(|source| RunError::Device {
        device: path.display().to_string(),
        source,
    })?;
    if !meta.file_type().is_block_device() {
        return Err(RunError::NotBlock {
            device: path.display().to_string(),
        });
    }
    let rdev = meta.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

/// md supports far more, but a ramdisk never needs more arrays than this.
const MAX_ARRAYS: usize = 512;

/// The lowest `md<N>` the kernel does not have.
pub fn free_index(sysfs_root: &Path) -> Result<usize, RunError> {
    let taken: Vec<usize> = arrays(sysfs_root).iter().map(|a| a.index).collect();
    (0..MAX_ARRAYS)
        .find(|i| !taken.contains(i))
        .ok_or(RunError::NoFreeIndex(MAX_ARRAYS))
}

/// Start `md<index>` from member nodes in role order.
pub fn start(
    sysfs_root: &Path,
    index: usize,
    level: i32,
    metadata: crate::disk::md::Metadata,
    members: &[PathBuf],
    load: LoadModule<'_>,
) -> Result<(), RunError> {
    ensure_modules(sysfs_root, personality(level), load);
    let numbers = members
        .iter()
        .map(|m| dev_number(m))
        .collect::<Result<Vec<_>, _>>()?;
    let sys = Sysfs(sysfs_root.to_path_buf());
    if let Err(e) = assemble::assemble(&sys, index, metadata, &numbers) {
        // Leave no half-built array holding the members.
        let _ = assemble::stop(&sys, index);
        return Err(e.into());
    }
    Ok(())
}

/// Stop an array (its members are free afterwards).
pub fn stop(sysfs_root: &Path, index: usize) -> Result<(), RunError> {
    let sys = Sysfs(sysfs_root.to_path_buf());
    if sys
        .read(&format!("block/md{index}/md/array_state"))
        .is_ok_and(|s| s == "clear")
    {
        return Ok(());
    }
    assemble::stop(&sys, index)?;
    Ok(())
}

/// IPA's `mdadm --assemble --scan`: start every complete array found on
/// `candidates` whose members the kernel does not already use. Returns the
/// indices started; failures are logged (a half-present array is not an
/// error until something needs it).
pub fn assemble_found(
    sysfs_root: &Path,
    candidates: &[PathBuf],
    load: LoadModule<'_>,
) -> Vec<usize> {
    let running = arrays(sysfs_root);
    let in_use = |p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        running
            .iter()
            .any(|a| name.as_ref().is_some_and(|n| a.members.contains(n)))
    };
    let mut started = Vec::new();
    for group in scan::group(&scan::scan(candidates)) {
        if !group.complete() {
            tracing::warn!(set = %group.set_name, uuid = %group.set_uuid,
                members = group.members.len(), raid_disks = group.raid_disks,
                "md array incomplete: not started");
            continue;
        }
        if group.members.iter().any(|(p, _)| in_use(p)) {
            continue;
        }
        let members: Vec<PathBuf> = group.members.iter().map(|(p, _)| p.clone()).collect();
        let result = free_index(sysfs_root).and_then(|index| {
            start(
                sysfs_root,
                index,
                group.level,
                group.metadata,
                &members,
                load,
            )
            .map(|()| index)
        });
        match result {
            Ok(index) => {
                tracing::info!(md = index, set = %group.set_name, "md array assembled");
                started.push(index);
            }
            Err(e) => tracing::warn!(set = %group.set_name, error = %e, "md array not assembled"),
        }
    }
    started
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, value: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, value).unwrap();
    }

    /// A sysfs tree with disks vda, vdb (partitions vda1, vdb1), vdc, and
    /// md0 over vda1 + vdb1.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for disk in ["vda", "vdb"] {
            let part = format!("{disk}1");
            write(
                root,
                &format!("devices/virtio/block/{disk}/{part}/partition"),
                "1",
            );
            std::os::unix::fs::symlink(root.join(format!("devices/virtio/block/{disk}/{part}")), {
                fs::create_dir_all(root.join("class/block")).unwrap();
                root.join(format!("class/block/{part}"))
            })
            .unwrap();
            fs::create_dir_all(root.join(format!("block/md0/slaves/{part}"))).unwrap();
        }
        write(root, "block/md0/md/array_state", "clean\n");
        write(root, "block/md0/size", "8388608\n");
        write(root, "block/md1/md/array_state", "inactive\n");
        write(root, "block/md1/size", "0\n");
        dir
    }

    fn disk(name: &str, gib: u64) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            path: Path::new("/dev").join(name),
            size: gib << 30,
            ..Default::default()
        }
    }

    #[test]
    fn arrays_members_and_holders_from_sysfs() {
        let t = tree();
        let a = arrays(t.path());
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].name(), "md0");
        assert_eq!(a[0].members, ["vda1", "vdb1"]);
        assert_eq!(a[0].holders, ["vda", "vdb"]);
        assert_eq!(a[0].size, 4 << 30);
        assert!(a[0].is_running());
        assert!(!a[1].is_running());
        assert_eq!(free_index(t.path()).unwrap(), 2);
    }

    #[test]
    fn an_array_replaces_its_holders_as_an_install_target() {
        let t = tree();
        let got = install_candidates(
            vec![disk("vda", 5), disk("vdb", 5), disk("vdc", 8)],
            t.path(),
            &DiskPolicy::All,
        );
        let names: Vec<&str> = got.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vdc", "md0"]);
        assert_eq!(got[1].path, Path::new("/dev/md0"));
        // An array on a disk the agent may not touch is not offered.
        let only = DiskPolicy::parse("/dev/vda,/dev/vdc");
        let got = install_candidates(vec![disk("vda", 5), disk("vdc", 8)], t.path(), &only);
        let names: Vec<&str> = got.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vdc"]);
    }

    #[test]
    fn a_regular_file_is_not_a_member_node() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        fs::write(&f, b"").unwrap();
        assert!(matches!(dev_number(&f), Err(RunError::NotBlock { .. })));
        assert!(matches!(
            dev_number(&dir.path().join("missing")),
            Err(RunError::Device { .. })
        ));
    }
}
