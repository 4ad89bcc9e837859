//! Lay a plan down on the disks: each holder gets a fresh partition table
//! holding its RAID partitions (GPT or msdos, as the plan says), then each
//! array's members get their 1.2 superblocks. Starting the arrays is
//! [`crate::disk::md::assemble`]'s, which needs the md driver.

use uuid::Uuid;

use super::plan::RaidPlan;
use crate::disk::layout::{write_layout, LayoutError, Planned, Role};
use crate::disk::md::geometry::{superblocks, ArraySpec, GeometryError, Level, Metadata};
use crate::disk::md::member::{self, MemberError};
use crate::disk::partitions::read_table;
use crate::disk::region::Region;

/// An array whose members now carry superblocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenArray {
    /// `/dev/md<index>` once assembled.
    pub index: usize,
    pub set_name: String,
    pub set_uuid: Uuid,
    pub level: Level,
    /// The member partitions, in role order.
    pub members: Vec<Region>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("md{index}: {source}")]
    Geometry {
        index: usize,
        #[source]
        source: GeometryError,
    },
    #[error("Partitions detected on devices {} during RAID config", .0.join(", "))]
    Partitioned(Vec<String>),
    #[error("writing the md superblock on {device}: {source}")]
    Member {
        device: String,
        #[source]
        source: MemberError,
    },
}

/// IPA's guard before partitioning: holders must carry no partitions (a
/// left-over table is `delete_configuration`'s to remove). Unreadable or
/// absent tables count as none.
pub fn check_unpartitioned(plan: &RaidPlan) -> Result<(), CreateError> {
    let with_parts: Vec<String> = plan
        .holders
        .iter()
        .filter(|h| read_table(&h.disk).is_ok_and(|t| !t.partitions.is_empty()))
        .map(|h| h.disk.display().to_string())
        .collect();
    if with_parts.is_empty() {
        Ok(())
    } else {
        Err(CreateError::Partitioned(with_parts))
    }
}

/// Write every holder's table and every array's superblocks. `homehost`
/// prefixes the set names as mdadm does with the host's name.
pub fn write(
    plan: &RaidPlan,
    homehost: Option<&str>,
    now: u64,
) -> Result<Vec<WrittenArray>, CreateError> {
    let mut regions: Vec<Vec<Region>> = Vec::with_capacity(plan.holders.len());
    for holder in &plan.holders {
        let planned: Vec<Planned> = holder
            .raid_parts
            .iter()
            .map(|p| Planned {
                role: Role::Raid,
                number: p.number,
                start: p.start,
                len: p.len,
            })
            .collect();
        let written = write_layout(&holder.disk, plan.label, &planned, false)?;
        tracing::info!(disk = %holder.disk.display(), partitions = written.len(), "RAID holder partitioned");
        regions.push(written.into_iter().map(|w| w.region).collect());
    }
    let mut out = Vec::with_capacity(plan.arrays.len());
    for array in &plan.arrays {
        // Plan numbers are 1.. in creation order, so number - 1 indexes `regions`.
        let members: Vec<Region> = array
            .members
            .iter()
            .filter_map(|(h, number)| regions.get(*h)?.get(*number as usize - 1).cloned())
            .collect();
        let spec = ArraySpec {
            metadata: Metadata::V1_2,
            level: array.level,
            set_uuid: Uuid::new_v4(),
            name: crate::disk::md::set_name(homehost, &array.name),
            member_sectors: members.iter().map(|r| r.len / 512).collect(),
            device_uuids: members.iter().map(|_| Uuid::new_v4()).collect(),
            now,
        };
        let sbs = superblocks(&spec).map_err(|source| CreateError::Geometry {
            index: array.index,
            source,
        })?;
        for (region, sb) in members.iter().zip(&sbs) {
            let failed = |source| CreateError::Member {
                device: region.path().display().to_string(),
                source,
            };
            // A 1.0 superblock left at this partition's end by an older
            // array would make the member look like two.
            member::zero(region).map_err(failed)?;
            member::write(region, sb).map_err(failed)?;
        }
        tracing::info!(
            md = array.index,
            name = %spec.name,
            level = array.level.md_level(),
            members = members.len(),
            "md superblocks written"
        );
        out.push(WrittenArray {
            index: array.index,
            set_name: spec.name,
            set_uuid: spec.set_uuid,
            level: array.level,
            members,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::Label;
    use crate::disk::partitions::TableKind;
    use crate::disk::raid::config::{validate, NodeContext};
    use crate::disk::raid::plan::{plan, BootMode};
    use crate::disk::BlockDevice;
    use serde_json::json;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const GIB: u64 = 1 << 30;

    fn disks(dir: &Path, n: usize, bytes: u64) -> Vec<BlockDevice> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("disk{i}"));
                std::fs::File::create(&path)
                    .unwrap()
                    .set_len(bytes)
                    .unwrap();
                BlockDevice {
                    name: format!("disk{i}"),
                    path,
                    size: bytes,
                    logical_sectors: 512,
                    physical_sectors: 512,
                    ..Default::default()
                }
            })
            .collect()
    }

    /// A read-only loop device over `len` bytes of `file` at `offset`, so
    /// mdadm can examine a partition of a disk image; detached on drop.
    struct Loop(String);

    impl Loop {
        fn over(file: &Path, offset: u64, len: u64) -> Self {
            let out = Command::new("losetup")
                .args(["--find", "--show", "--read-only", "--offset"])
                .arg(offset.to_string())
                .arg("--sizelimit")
                .arg(len.to_string())
                .arg(file)
                .output()
                .expect("losetup");
            assert!(out.status.success(), "{out:?}");
            Self(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }

    fn examine(dev: &str) -> String {
        let out = Command::new("mdadm")
            .args(["--examine", dev])
            .env("LC_ALL", "C")
            .output()
            .expect("mdadm (run scripts/setup)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn field<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.split_once(" : ").filter(|(k, _)| k.trim() == key))
            .map(|(_, v)| v.trim())
            .unwrap_or_else(|| panic!("{key} missing from\n{text}"))
    }

    /// RAID-1 root of 2 GiB (ending at 2 GiB) and a RAID-0 `MAX` on two
    /// sparse disk images, UEFI: GPT tables as planned, and superblocks
    /// that mdadm reads back from each partition.
    #[test]
    fn writes_tables_and_superblocks_mdadm_reads() {
        let dir = tempfile::tempdir().unwrap();
        let disks = disks(dir.path(), 2, 3 * GIB);
        let node = NodeContext {
            uuid: "n",
            raid_skip_list: false,
        };
        let raid = validate(
            &json!({"logical_disks": [
                {"size_gb": 2, "raid_level": "1", "controller": "software",
                 "volume_name": "root", "is_root_volume": true},
                {"size_gb": "MAX", "raid_level": "0", "controller": "software"},
            ]}),
            node,
        )
        .unwrap()
        .unwrap();
        let plan = plan(&disks, &raid, BootMode::Uefi, None).unwrap();
        let arrays = write(&plan, Some("ramdisk"), 1_764_000_000).unwrap();
        assert_eq!(arrays.len(), 2);
        assert_eq!(arrays[0].set_name, "ramdisk:root");
        assert_eq!(arrays[1].set_name, "ramdisk:md1");

        for d in &disks {
            let table = read_table(&d.path).unwrap();
            assert!(
                matches!(table.kind, TableKind::Gpt { .. }),
                "{:?}",
                table.kind
            );
            let p1 = table.get(1).unwrap();
            assert_eq!((p1.start, p1.start + p1.len), (551 << 20, 2 * GIB));
            let p2 = table.get(2).unwrap();
            assert_eq!(p2.start, 2 * GIB);
            assert_eq!(
                table.partitions.len(),
                2,
                "the ESP comes with the bootloader"
            );
        }

        for array in &arrays {
            let mut uuids = Vec::new();
            for (role, region) in array.members.iter().enumerate() {
                let lo = Loop::over(&region.disk, region.offset, region.len);
                let text = examine(&lo.0);
                assert!(field(&text, "Checksum").ends_with("- correct"), "{text}");
                assert_eq!(field(&text, "Name"), array.set_name);
                assert_eq!(field(&text, "Device Role"), format!("Active device {role}"));
                let level = match array.level {
                    Level::Raid0 => "raid0",
                    Level::Raid1 => "raid1",
                    Level::Raid10 => "raid10",
                };
                assert_eq!(field(&text, "Raid Level"), level);
                uuids.push(field(&text, "Array UUID").to_string());
            }
            assert_eq!(uuids[0], uuids[1], "one array");
        }
        let paths: Vec<PathBuf> = arrays[0].members.iter().map(|r| r.disk.clone()).collect();
        assert_eq!(paths, [disks[0].path.clone(), disks[1].path.clone()]);
    }

    #[test]
    fn msdos_for_bios_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let disks = disks(dir.path(), 2, GIB);
        let node = NodeContext {
            uuid: "n",
            raid_skip_list: false,
        };
        let raid = validate(
            &json!({"logical_disks": [
                {"size_gb": "MAX", "raid_level": "1", "controller": "software"}]}),
            node,
        )
        .unwrap()
        .unwrap();
        let plan = plan(&disks, &raid, BootMode::Bios, None).unwrap();
        assert_eq!(plan.label, Label::Msdos);
        check_unpartitioned(&plan).unwrap();
        let arrays = write(&plan, None, 1).unwrap();
        let err = check_unpartitioned(&plan).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Partitions detected on devices {}, {} during RAID config",
                disks[0].path.display(),
                disks[1].path.display()
            )
        );
        assert_eq!(arrays[0].set_name, "md0");
        let table = read_table(&disks[1].path).unwrap();
        assert!(
            matches!(table.kind, TableKind::Mbr { .. }),
            "{:?}",
            table.kind
        );
        assert_eq!(table.get(1).unwrap().start, 1 << 20);
        let sb = member::read(&arrays[0].members[1]).unwrap().unwrap();
        assert_eq!(sb.role(), Some(1));
        assert_eq!(sb.set_name, "md0");
    }
}
