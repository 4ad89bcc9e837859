//! `delete_configuration`'s on-disk part, once the arrays are stopped:
//! every md superblock on the disks' partitions and on the disks is zeroed,
//! then each disk that held a member loses its signatures and partition
//! table (IPA: `mdadm --zero-superblock` per member, then `wipefs -af` on
//! the holders). Partitions are reached through their disk, so this works
//! whether or not the kernel made partition nodes.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::disk::md::member::{self, MemberError};
use crate::disk::partitions::read_table;
use crate::disk::region::Region;
use crate::disk::wipe;

/// What was cleaned on one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub disk: PathBuf,
    /// Partition numbers whose superblock was zeroed (0: the disk itself).
    pub members: Vec<u32>,
    /// The signatures `wipe` zeroed on the disk.
    pub wiped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("zeroing the md superblock on {device}: {source}")]
    Zero {
        device: String,
        #[source]
        source: MemberError,
    },
    #[error("removing partitions on holder disk {disk}: {source}")]
    Wipe {
        disk: String,
        #[source]
        source: std::io::Error,
    },
}

/// Zero every md superblock on `disks` and their partitions, and wipe the
/// disks that carried one. Disks without md metadata are left alone.
pub fn clean(disks: &[PathBuf]) -> Result<Vec<Cleaned>, DeleteError> {
    let mut out = Vec::new();
    for disk in disks {
        let members = zero_members(disk)?;
        if members.is_empty() {
            continue;
        }
        let wiped = wipe::wipe_device(disk).map_err(|source| DeleteError::Wipe {
            disk: disk.display().to_string(),
            source,
        })?;
        wipe::reread_partitions(disk);
        tracing::info!(disk = %disk.display(), ?members, "software RAID holder cleaned");
        out.push(Cleaned {
            disk: disk.clone(),
            members,
            wiped: wiped.signatures,
        });
    }
    Ok(out)
}

/// Partitions first, then the disk (IPA's order: zeroing a disk-level
/// superblock first can leave partition ones behind).
fn zero_members(disk: &Path) -> Result<Vec<u32>, DeleteError> {
    let mut zeroed = Vec::new();
    let failed = |device: String| move |source| DeleteError::Zero { device, source };
    if let Ok(table) = read_table(disk) {
        for p in &table.partitions {
            let region = Region::new(disk, p.number, p.start, p.len);
            if member::zero(&region).map_err(failed(region.path().display().to_string()))? > 0 {
                zeroed.push(p.number);
            }
        }
    }
    let f = File::options()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(|e| DeleteError::Zero {
            device: disk.display().to_string(),
            source: e.into(),
        })?;
    if member::zero(&f).map_err(failed(disk.display().to_string()))? > 0 {
        zeroed.push(0);
    }
    Ok(zeroed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::raid::config::{validate, NodeContext};
    use crate::disk::raid::create::write;
    use crate::disk::raid::plan::{plan, BootMode};
    use crate::disk::{guard, BlockDevice};
    use serde_json::json;
    use std::process::Command;

    /// A loop device over a sparse file, detached on drop.
    struct Loop(PathBuf);

    impl Loop {
        fn new(file: &Path, bytes: u64) -> Self {
            std::fs::File::create(file).unwrap().set_len(bytes).unwrap();
            let out = Command::new("losetup")
                .args(["--find", "--show"])
                .arg(file)
                .output()
                .expect("losetup");
            assert!(out.status.success(), "{out:?}");
            Self(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }

    /// Create RAID-1 + RAID-10 over four loop disks, then clean: no md
    /// magic anywhere, no table, and the erase guard sees no RAID member.
    #[test]
    fn created_arrays_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = 2u64 << 30;
        let loops: Vec<Loop> = (0..4)
            .map(|i| Loop::new(&dir.path().join(format!("d{i}")), bytes))
            .collect();
        let disks: Vec<BlockDevice> = loops
            .iter()
            .map(|l| BlockDevice {
                path: l.0.clone(),
                size: bytes,
                logical_sectors: 512,
                ..Default::default()
            })
            .collect();
        let node = NodeContext {
            uuid: "n",
            raid_skip_list: false,
        };
        let raid = validate(
            &json!({"logical_disks": [
                {"size_gb": 1, "raid_level": "1", "controller": "software",
                 "physical_disks": [{"name": loops[0].0}, {"name": loops[1].0}]},
                {"size_gb": "MAX", "raid_level": "1+0", "controller": "software"},
            ]}),
            node,
        )
        .unwrap()
        .unwrap();
        let plan = plan(&disks, &raid, BootMode::Bios, None).unwrap();
        write(&plan, None, 1).unwrap();
        let paths: Vec<PathBuf> = loops.iter().map(|l| l.0.clone()).collect();
        assert!(guard::inspect(&paths[0]).unwrap().raid_member.is_some());

        let cleaned = clean(&paths).unwrap();
        assert_eq!(cleaned.len(), 4);
        assert_eq!(
            cleaned[0].members,
            vec![1, 2],
            "the RAID-1 and RAID-10 members"
        );
        assert_eq!(cleaned[3].members, vec![1], "only the RAID-10");
        for p in &paths {
            assert!(read_table(p).is_err(), "{} still has a table", p.display());
            assert_eq!(guard::inspect(p).unwrap(), guard::Contents::default());
        }
        assert!(
            clean(&paths).unwrap().is_empty(),
            "nothing left the second time"
        );
    }
}
