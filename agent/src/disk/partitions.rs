//! A disk's partition table as read back after an image was written (GPT
//! through the `gpt` crate, MBR through `mbrman`), and the partition device
//! nodes the kernel must expose before anything can be mounted.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpt::disk::LogicalBlockSize;
use uuid::Uuid;

use super::ioctl;

/// The GPT type of an EFI system partition.
pub const ESP_TYPE: Uuid = uuid::uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
/// MBR type byte of an EFI system partition.
pub const ESP_MBR_TYPE: u8 = 0xef;
/// MBR type byte of a GPT protective MBR.
const PROTECTIVE_MBR_TYPE: u8 = 0xee;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: unreadable GPT: {message}")]
    Gpt { path: PathBuf, message: String },
    #[error("{path}: unreadable MBR: {message}")]
    Mbr { path: PathBuf, message: String },
    #[error("{path}: no partition table")]
    NoTable { path: PathBuf },
    #[error("partition {number} of {disk} did not appear in {}", .node.display())]
    NodeMissing {
        disk: String,
        number: u32,
        node: PathBuf,
    },
}

/// What kind of table, with the identifier firmware uses in device paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Gpt { disk_guid: Uuid },
    Mbr { signature: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionType {
    Gpt(Uuid),
    Mbr(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `/dev/sda1`.
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    pub kind: PartitionType,
    /// GPT unique partition GUID, or `<mbr signature>-<nn>` as Linux names it.
    pub part_uuid: String,
    /// GPT partition name (empty on MBR).
    pub name: String,
    /// MBR active flag.
    pub bootable: bool,
}

impl Partition {
    pub fn is_esp(&self) -> bool {
        match self.kind {
            PartitionType::Gpt(t) => t == ESP_TYPE,
            PartitionType::Mbr(t) => t == ESP_MBR_TYPE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// Logical sector size in bytes.
    pub sector: u64,
    pub partitions: Vec<Partition>,
}

impl PartitionTable {
    pub fn get(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }
}

/// Read the table on `disk` (a block device or an image file).
pub fn read_table(disk: &Path) -> Result<PartitionTable, PartitionError> {
    let io_err = |source| PartitionError::Io {
        path: disk.to_path_buf(),
        source,
    };
    let mut file = File::open(disk).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let sector = if meta.file_type().is_block_device() {
        ioctl::sector_size(&file)
    } else {
        512
    };
    let mbr = mbrman::MBR::read_from(&mut file, sector as u32).map_err(|e| PartitionError::Mbr {
        path: disk.to_path_buf(),
        message: e.to_string(),
    });
    let protective = match &mbr {
        Ok(m) => m.iter().any(|(_, p)| p.sys == PROTECTIVE_MBR_TYPE),
        // No valid MBR: GPT is still worth a look (a disk whose MBR was wiped).
        Err(_) => true,
    };
    if protective {
        if let Some(table) = read_gpt(disk, file.try_clone().map_err(io_err)?, sector)? {
            return Ok(table);
        }
    }
    let mbr = mbr?;
    let signature = u32::from_le_bytes(mbr.header.disk_signature);
    let partitions: Vec<Partition> = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(i, p)| Partition {
            number: i as u32,
            start: u64::from(p.starting_lba) * sector,
            len: u64::from(p.sectors) * sector,
            kind: PartitionType::Mbr(p.sys),
            part_uuid: format!("{signature:08x}-{i:02x}"),
            name: String::new(),
            bootable: p.boot == mbrman::BOOT_ACTIVE,
        })
        .collect();
    if partitions.is_empty() && signature == 0 {
        return Err(PartitionError::NoTable {
            path: disk.to_path_buf(),
        });
    }
    Ok(PartitionTable {
        kind: TableKind::Mbr { signature },
        sector,
        partitions,
    })
}

fn read_gpt(
    disk: &Path,
    file: File,
    sector: u64,
) -> Result<Option<PartitionTable>, PartitionError> {
    let lb = if sector == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    };
    // A whole-disk image smaller than the disk has its backup header in the
    // middle of the disk: the primary header alone is enough to read.
    let gpt = match gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(lb)
        .only_valid_headers(false)
        .open_from_device(file)
    {
        Ok(g) => g,
        Err(e) => {
            return if matches!(e, gpt::GptError::Io(_)) {
                Err(PartitionError::Gpt {
                    path: disk.to_path_buf(),
                    message: e.to_string(),
                })
            } else {
                Ok(None)
            }
        }
    };
    let partitions = gpt
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| Partition {
            number: *n,
            start: p.first_lba * sector,
            len: (p.last_lba + 1 - p.first_lba) * sector,
            kind: PartitionType::Gpt(p.part_type_guid.guid),
            part_uuid: p.part_guid.to_string(),
            name: p.name.clone(),
            bootable: false,
        })
        .collect();
    Ok(Some(PartitionTable {
        kind: TableKind::Gpt {
            disk_guid: *gpt.guid(),
        },
        sector,
        partitions,
    }))
}

/// The kernel's name for partition `number` of `disk` (`sda1`, `nvme0n1p1`, `loop0p1`).
pub fn partition_name(disk: &str, number: u32) -> String {
    super::region::partition_path(Path::new(disk), number)
        .to_string_lossy()
        .into_owned()
}

/// Make sure the kernel exposes every partition of `table` on the block
/// device `disk` and that each has a device node; returns the nodes by
/// partition number. Without udev (a ramdisk without devtmpfs, or a host
/// where loop partitions are not scanned) the nodes are made here.
pub fn expose_partitions(
    sysfs_root: &Path,
    disk: &Path,
    table: &PartitionTable,
) -> Result<Vec<(u32, PathBuf)>, PartitionError> {
    let io_err = |source| PartitionError::Io {
        path: disk.to_path_buf(),
        source,
    };
    let disk_name = disk
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let dev_dir = disk.parent().unwrap_or(Path::new("/dev"));
    let sys_disk = sysfs_root.join("block").join(&disk_name);
    let f = File::open(disk).map_err(io_err)?;
    let missing = |p: &Partition| !sys_disk.join(partition_name(&disk_name, p.number)).exists();
    if table.partitions.iter().any(missing) {
        // Fails with EBUSY while a partition is mounted; BLKPG below covers that.
        let _ = ioctl::reread_partitions(&f);
    }
    for p in table.partitions.iter().filter(|p| missing(p)) {
        if let Err(e) = ioctl::add_partition(&f, p.number, p.start, p.len) {
            // EBUSY: the kernel already knows a partition with that number.
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(io_err(e));
            }
        }
    }
    let mut nodes = Vec::new();
    for p in &table.partitions {
        let name = partition_name(&disk_name, p.number);
        let node = dev_dir.join(&name);
        let ready = wait_until(Duration::from_secs(5), || {
            node.exists() || sys_disk.join(&name).join("dev").exists()
        });
        if !node.exists() {
            let devnum = std::fs::read_to_string(sys_disk.join(&name).join("dev"))
                .ok()
                .filter(|_| ready);
            let Some((major, minor)) = devnum.as_deref().and_then(parse_devnum) else {
                return Err(PartitionError::NodeMissing {
                    disk: disk_name,
                    number: p.number,
                    node,
                });
            };
            nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(major, minor),
            )
            .map_err(|e| io_err(io::Error::from(e)))?;
        }
        nodes.push((p.number, node));
    }
    Ok(nodes)
}

fn parse_devnum(s: &str) -> Option<(u64, u64)> {
    let (major, minor) = s.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_partition_names() {
        assert_eq!(partition_name("sda", 2), "sda2");
        assert_eq!(partition_name("nvme0n1", 1), "nvme0n1p1");
        assert_eq!(partition_name("loop7", 3), "loop7p3");
    }

    #[test]
    fn reads_gpt_and_mbr_images() {
        let dir = tempfile::tempdir().unwrap();
        let gpt_img = dir.path().join("gpt.img");
        File::create(&gpt_img).unwrap().set_len(64 << 20).unwrap();
        let out = std::process::Command::new("sgdisk")
            .args([
                "-n",
                "1:2048:+8M",
                "-t",
                "1:ef00",
                "-n",
                "2:0:0",
                "-c",
                "2:root",
            ])
            .arg(&gpt_img)
            .output()
            .expect("sgdisk (run scripts/setup)");
        assert!(out.status.success(), "{out:?}");
        let t = read_table(&gpt_img).unwrap();
        assert!(matches!(t.kind, TableKind::Gpt { .. }));
        assert_eq!(t.partitions.len(), 2);
        assert!(t.partitions[0].is_esp());
        assert_eq!(t.partitions[0].start, 2048 * 512);
        assert_eq!(t.partitions[0].len, 8 << 20);
        assert_eq!(t.partitions[1].name, "root");
        assert!(!t.partitions[1].is_esp());

        let mbr_img = dir.path().join("mbr.img");
        let mut f = File::create(&mbr_img).unwrap();
        f.set_len(64 << 20).unwrap();
        let mut mbr = mbrman::MBR::new_from(&mut f, 512, [0x78, 0x56, 0x34, 0x12]).unwrap();
        mbr[1] = mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_ACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys: 0x83,
            last_chs: mbrman::CHS::empty(),
            starting_lba: 2048,
            sectors: 4096,
        };
        mbr.write_into(&mut f).unwrap();
        let t = read_table(&mbr_img).unwrap();
        assert_eq!(
            t.kind,
            TableKind::Mbr {
                signature: 0x1234_5678
            }
        );
        assert_eq!(t.partitions[0].part_uuid, "12345678-01");
        assert!(t.partitions[0].bootable);
        assert_eq!(t.partitions[0].len, 4096 * 512);
    }

    #[test]
    fn blank_disk_has_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("blank.img");
        File::create(&img).unwrap().set_len(1 << 20).unwrap();
        assert!(matches!(
            read_table(&img),
            Err(PartitionError::NoTable { .. } | PartitionError::Mbr { .. })
        ));
    }
}
