//! `/sys/block/*` → disks worth deploying to.

use std::fs;
use std::path::{Path, PathBuf};

/// Which disks the agent may touch. In a ramdisk (PID 1) that is every disk;
/// anywhere else only an explicit list, so a test never reaches the host's own disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskPolicy {
    All,
    Only(Vec<PathBuf>),
}

impl DiskPolicy {
    /// `ferrite-disks=all` or `ferrite-disks=/dev/loop3,/dev/loop4`.
    pub fn parse(value: &str) -> Self {
        if value.trim() == "all" {
            return Self::All;
        }
        Self::Only(
            value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
        )
    }

    fn allows(&self, dev: &Path) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.iter().any(|p| p == dev),
        }
    }

    fn explicitly_lists(&self, dev: &Path) -> bool {
        matches!(self, Self::Only(list) if list.iter().any(|p| p == dev))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub rotational: bool,
    pub read_only: bool,
    pub removable: bool,
    pub model: String,
    pub vendor: String,
}

/// Kernel names of devices that are never install targets (unless listed
/// explicitly, as tests do with loop devices).
const VIRTUAL_PREFIXES: &[&str] = &["loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md"];

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Disks under `<sysfs>/block`, sorted by name, filtered by the policy.
pub fn list_block_devices(
    sysfs_root: &Path,
    dev_root: &Path,
    policy: &DiskPolicy,
) -> Vec<BlockDevice> {
    let Ok(entries) = fs::read_dir(sysfs_root.join("block")) else {
        return Vec::new();
    };
    let mut devices: Vec<BlockDevice> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = dev_root.join(&name);
            if !policy.allows(&path) {
                return None;
            }
            let virtual_dev = VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
                || name.contains("boot")
                || name.ends_with("rpmb");
            if virtual_dev && !policy.explicitly_lists(&path) {
                return None;
            }
            let dir = entry.path();
            let sectors: u64 = read_trim(&dir.join("size")).parse().unwrap_or(0);
            if sectors == 0 {
                return None;
            }
            Some(BlockDevice {
                size: sectors * 512,
                rotational: read_trim(&dir.join("queue/rotational")) == "1",
                read_only: read_trim(&dir.join("ro")) == "1",
                removable: read_trim(&dir.join("removable")) == "1",
                model: read_trim(&dir.join("device/model")),
                vendor: read_trim(&dir.join("device/vendor")),
                name,
                path,
            })
        })
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(root: &Path, name: &str, sectors: u64, ro: bool) {
        let d = root.join("block").join(name);
        fs::create_dir_all(d.join("queue")).unwrap();
        fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
        fs::write(d.join("ro"), if ro { "1\n" } else { "0\n" }).unwrap();
        fs::write(d.join("queue/rotational"), "0\n").unwrap();
    }

    #[test]
    fn policy_and_filters() {
        let sys = tempfile::tempdir().unwrap();
        disk(sys.path(), "sda", 100 << 21, false);
        disk(sys.path(), "vda", 10 << 21, false);
        disk(sys.path(), "loop0", 10 << 21, false);
        disk(sys.path(), "sr0", 10 << 21, false);
        disk(sys.path(), "sdz", 0, false);
        let all = list_block_devices(sys.path(), Path::new("/dev"), &DiskPolicy::All);
        let names: Vec<_> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "vda"]);
        let only = list_block_devices(
            sys.path(),
            Path::new("/dev"),
            &DiskPolicy::parse("/dev/loop0"),
        );
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].path, PathBuf::from("/dev/loop0"));
        assert_eq!(only[0].size, 10 << 30);
        let none = list_block_devices(sys.path(), Path::new("/dev"), &DiskPolicy::Only(vec![]));
        assert!(none.is_empty());
    }
}
