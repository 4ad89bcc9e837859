//! The partition layout IPA makes for partition images
//! (`partition_utils.make_partitions`), planned in bytes and written
//! natively: `gpt` for GPT, `mbrman` for MBR.
//!
//! Order: ESP (UEFI), BIOS boot (BIOS on GPT), ephemeral, swap, config
//! drive, and root last so cloud-init's growpart can extend it. Every
//! partition starts and ends on a MiB boundary, the first at 1 MiB.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition_types::{self, Type};
use gpt::GptConfig;
use mbrman::{MBRPartitionEntry, BOOT_ACTIVE, BOOT_INACTIVE, CHS, MBR};

use super::ioctl;
use super::region::{announce, Region};

pub const MIB: u64 = 1 << 20;
/// `[disk_utils]efi_system_partition_size`.
pub const ESP_MB: u64 = 550;
/// `[disk_utils]bios_boot_partition_size`.
pub const BIOS_BOOT_MB: u64 = 1;
/// MBR addresses sectors with 32 bits.
const MBR_MAX_SECTORS: u64 = 1 << 32;

/// The partition table kind (`disk_label` on the wire).
pub use ferrite_protocol::image_info::DiskLabel as Label;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Esp,
    BiosBoot,
    Ephemeral,
    Swap,
    ConfigDrive,
    Root,
    /// A software RAID member, as IPA's `parted mkpart primary` leaves it.
    Raid,
}

impl Role {
    /// The key of `get_partition_uuids`' `partitions` map.
    pub fn key(self) -> &'static str {
        match self {
            Self::Esp => "efi system partition",
            Self::BiosBoot => "BIOS Boot partition",
            Self::Ephemeral => "ephemeral",
            Self::Swap => "swap",
            Self::ConfigDrive => "configdrive",
            Self::Root => "root",
            Self::Raid => "raid",
        }
    }

    /// GPT partition name (the config drive's is what IPA searches for).
    fn gpt_name(self) -> &'static str {
        match self {
            Self::Esp => "efi-part",
            Self::BiosBoot => "bios-boot",
            Self::Ephemeral => "ephemeral0",
            Self::Swap => "swap1",
            Self::ConfigDrive => "config-2",
            Self::Root => "root",
            Self::Raid => "primary",
        }
    }

    fn gpt_type(self) -> Type {
        match self {
            Self::Esp => partition_types::EFI,
            Self::BiosBoot => partition_types::BIOS,
            Self::Swap => partition_types::LINUX_SWAP,
            _ => partition_types::LINUX_FS,
        }
    }

    fn mbr_type(self) -> u8 {
        match self {
            Self::Esp => 0xef,
            Self::Swap => 0x82,
            _ => 0x83,
        }
    }
}

/// What IPA's `make_partitions` is asked for, sizes in MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRequest {
    pub label: Label,
    pub uefi: bool,
    /// 0: the rest of the disk.
    pub root_mb: u64,
    pub swap_mb: u64,
    pub ephemeral_mb: u64,
    pub configdrive_mb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub role: Role,
    pub number: u32,
    /// Bytes from the start of the disk.
    pub start: u64,
    pub len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("the partitions need {needed} MiB but the disk has only {available} MiB usable")]
    NoSpace { needed: u64, available: u64 },
    #[error("an msdos label holds 4 primary partitions; this layout needs {0}")]
    TooManyPrimaries(usize),
    #[error("an msdos label cannot address past 2 TiB with {0}-byte sectors; use disk_label=gpt")]
    MbrTooLarge(u64),
    #[error("writing the partition table on {disk}: {source}")]
    Io {
        disk: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the GPT on {disk}: {source}")]
    Gpt {
        disk: String,
        #[source]
        source: gpt::GptError,
    },
    #[error("writing the MBR on {disk}: {source}")]
    Mbr {
        disk: String,
        #[source]
        source: mbrman::Error,
    },
}

/// Bytes a GPT reserves at the disk's end: the backup header and a 128-entry array.
pub fn gpt_tail(sector: u64) -> u64 {
    sector + (128 * 128u64).div_ceil(sector) * sector
}

/// Partitions in IPA's order, packed from 1 MiB on.
pub fn plan(req: &LayoutRequest, disk_size: u64, sector: u64) -> Result<Vec<Planned>, LayoutError> {
    let mut wanted: Vec<(Role, u64)> = Vec::new();
    if req.uefi {
        wanted.push((Role::Esp, ESP_MB));
    } else if req.label == Label::Gpt {
        wanted.push((Role::BiosBoot, BIOS_BOOT_MB));
    }
    for (role, mb) in [
        (Role::Ephemeral, req.ephemeral_mb),
        (Role::Swap, req.swap_mb),
        (Role::ConfigDrive, req.configdrive_mb),
    ] {
        if mb > 0 {
            wanted.push((role, mb));
        }
    }
    let count = wanted.len() + 1;
    if req.label == Label::Msdos && count > 4 {
        return Err(LayoutError::TooManyPrimaries(count));
    }
    let mut usable_end = match req.label {
        Label::Gpt => disk_size.saturating_sub(gpt_tail(sector)),
        Label::Msdos => disk_size,
    };
    if req.label == Label::Msdos {
        let limit = MBR_MAX_SECTORS * sector;
        if req.root_mb == 0 && disk_size > limit {
            usable_end = limit;
        }
    }
    let usable_end = usable_end / MIB * MIB;
    let mut start = MIB;
    let mut out = Vec::with_capacity(count);
    for (role, mb) in wanted {
        out.push(Planned {
            role,
            number: out.len() as u32 + 1,
            start,
            len: mb * MIB,
        });
        start += mb * MIB;
    }
    let root_len = if req.root_mb == 0 {
        usable_end.saturating_sub(start)
    } else {
        req.root_mb * MIB
    };
    if root_len == 0 || start + root_len > usable_end {
        return Err(LayoutError::NoSpace {
            needed: (start + root_len.max(MIB)) / MIB,
            available: usable_end / MIB,
        });
    }
    out.push(Planned {
        role: Role::Root,
        number: out.len() as u32 + 1,
        start,
        len: root_len,
    });
    if req.label == Label::Msdos && (start + root_len) / sector > MBR_MAX_SECTORS {
        return Err(LayoutError::MbrTooLarge(sector));
    }
    Ok(out)
}

/// A partition as written: where it is, and its PARTUUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub role: Role,
    pub region: Region,
    pub partuuid: String,
}

/// Write a fresh table holding `plan` on `disk`, then ask the kernel to
/// re-read it. Partition contents are not touched.
pub fn write_layout(
    disk: &Path,
    label: Label,
    plan: &[Planned],
    uefi: bool,
) -> Result<Vec<Written>, LayoutError> {
    let name = disk.display().to_string();
    let io = |source| LayoutError::Io {
        disk: name.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(io)?;
    let size = ioctl::device_size(&file).or_else(|_| file.metadata().map(|m| m.len()));
    let size = size.map_err(io)?;
    let sector = ioctl::sector_size(&file);
    let partuuids = match label {
        Label::Gpt => write_gpt(&mut file, &name, plan, size, sector)?,
        Label::Msdos => {
            clear_gpt_signatures(&file, size, sector).map_err(io)?;
            write_mbr(&mut file, &name, plan, sector, uefi)?
        }
    };
    file.sync_all().map_err(io)?;
    drop(file);
    let spans: Vec<(u32, u64, u64)> = plan.iter().map(|p| (p.number, p.start, p.len)).collect();
    announce(disk, &spans);
    Ok(plan
        .iter()
        .zip(partuuids)
        .map(|(p, partuuid)| Written {
            role: p.role,
            region: Region::new(disk, p.number, p.start, p.len),
            partuuid,
        })
        .collect())
}

fn write_gpt(
    file: &mut File,
    name: &str,
    plan: &[Planned],
    size: u64,
    sector: u64,
) -> Result<Vec<String>, LayoutError> {
    let err = |source| LayoutError::Gpt {
        disk: name.to_string(),
        source,
    };
    let lb = if sector == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    };
    let sectors = u32::try_from(size / sector - 1).unwrap_or(u32::MAX);
    ProtectiveMBR::with_lb_size(sectors)
        .overwrite_lba0(file)
        .map_err(|e| LayoutError::Io {
            disk: name.to_string(),
            source: io::Error::other(e.to_string()),
        })?;
    let mut gpt = GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .create_from_device(&mut *file, None)
        .map_err(err)?;
    for p in plan {
        gpt.add_partition_at(
            p.role.gpt_name(),
            p.number,
            p.start / sector,
            p.len / sector,
            p.role.gpt_type(),
            0,
        )
        .map_err(err)?;
    }
    let uuids = plan
        .iter()
        .map(|p| {
            gpt.partitions()
                .get(&p.number)
                .map(|e| e.part_guid.hyphenated().to_string())
                .unwrap_or_default()
        })
        .collect();
    gpt.write_inplace().map_err(err)?;
    Ok(uuids)
}

fn write_mbr(
    file: &mut File,
    name: &str,
    plan: &[Planned],
    sector: u64,
    uefi: bool,
) -> Result<Vec<String>, LayoutError> {
    let err = |source| LayoutError::Mbr {
        disk: name.to_string(),
        source,
    };
    let signature: [u8; 4] = rand::random();
    let mut mbr = MBR::new_from(file, sector as u32, signature).map_err(err)?;
    for p in plan {
        // The active flag: the ESP on UEFI, root on BIOS (parted's `boot`).
        let active = if uefi {
            p.role == Role::Esp
        } else {
            p.role == Role::Root
        };
        let entry = mbr
            .get_mut(p.number as usize)
            .ok_or(LayoutError::TooManyPrimaries(plan.len()))?;
        *entry = MBRPartitionEntry {
            boot: if active { BOOT_ACTIVE } else { BOOT_INACTIVE },
            first_chs: CHS::empty(),
            sys: p.role.mbr_type(),
            last_chs: CHS::empty(),
            starting_lba: (p.start / sector) as u32,
            sectors: (p.len / sector) as u32,
        };
    }
    mbr.write_into(file).map_err(err)?;
    let sig = u32::from_le_bytes(signature);
    Ok(plan
        .iter()
        .map(|p| format!("{sig:08x}-{:02x}", p.number))
        .collect())
}

/// An msdos label over a stale GPT would leave tools reading the GPT.
fn clear_gpt_signatures(file: &File, size: u64, sector: u64) -> io::Result<()> {
    for at in [sector, size.saturating_sub(sector)] {
        let mut sig = [0u8; 8];
        if at + 8 <= size && file.read_exact_at(&mut sig, at).is_ok() && &sig == b"EFI PART" {
            file.write_all_at(&[0u8; 8], at)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(label: Label, uefi: bool) -> LayoutRequest {
        LayoutRequest {
            label,
            uefi,
            root_mb: 100,
            swap_mb: 16,
            ephemeral_mb: 32,
            configdrive_mb: 2,
        }
    }

    fn roles(p: &[Planned]) -> Vec<Role> {
        p.iter().map(|x| x.role).collect()
    }

    #[test]
    fn uefi_gpt_order_and_offsets() {
        let p = plan(&req(Label::Gpt, true), 1 << 30, 512).unwrap();
        assert_eq!(
            roles(&p),
            [
                Role::Esp,
                Role::Ephemeral,
                Role::Swap,
                Role::ConfigDrive,
                Role::Root
            ]
        );
        assert_eq!(p[0].start, MIB);
        assert_eq!(p[0].len, 550 * MIB);
        assert_eq!(p[1].start, 551 * MIB);
        assert_eq!(p[2].start, 583 * MIB);
        assert_eq!(p[3].start, 599 * MIB);
        assert_eq!(p[4].start, 601 * MIB);
        assert_eq!(p[4].len, 100 * MIB);
        for (i, x) in p.iter().enumerate() {
            assert_eq!(x.number, i as u32 + 1);
            assert_eq!(x.start % MIB, 0);
            assert_eq!(x.len % MIB, 0);
        }
    }

    #[test]
    fn bios_gpt_gets_a_bios_boot_partition_and_msdos_does_not() {
        let p = plan(&req(Label::Gpt, false), 1 << 30, 512).unwrap();
        assert_eq!(p[0].role, Role::BiosBoot);
        assert_eq!(p[0].len, MIB);
        assert_eq!(p.last().unwrap().role, Role::Root);
        let p = plan(&req(Label::Msdos, false), 1 << 30, 512).unwrap();
        assert_eq!(
            roles(&p),
            [Role::Ephemeral, Role::Swap, Role::ConfigDrive, Role::Root]
        );
    }

    #[test]
    fn msdos_has_four_primaries_at_most() {
        assert!(matches!(
            plan(&req(Label::Msdos, true), 1 << 30, 512),
            Err(LayoutError::TooManyPrimaries(5))
        ));
    }

    #[test]
    fn root_zero_fills_the_disk_and_gpt_keeps_its_tail() {
        let mut r = req(Label::Gpt, false);
        r.root_mb = 0;
        let size = 200 * MIB;
        let p = plan(&r, size, 512).unwrap();
        let root = p.last().unwrap();
        // The backup GPT takes the last 33 sectors: root ends a MiB before.
        assert_eq!(root.start + root.len, 199 * MIB);
        let mut r = req(Label::Msdos, false);
        r.root_mb = 0;
        let root = *plan(&r, size, 512).unwrap().last().unwrap();
        assert_eq!(root.start + root.len, size);
        assert_eq!(gpt_tail(512), 33 * 512);
        assert_eq!(gpt_tail(4096), 5 * 4096);
    }

    #[test]
    fn too_small_disks_are_refused() {
        let e = plan(&req(Label::Gpt, true), 600 * MIB, 512).unwrap_err();
        assert!(matches!(e, LayoutError::NoSpace { .. }), "{e}");
        // Exactly enough: 1 + 48 + 2 + 100 MiB plus the GPT tail.
        let r = req(Label::Msdos, false);
        assert!(plan(&r, 151 * MIB, 512).is_ok());
        assert!(plan(&r, 151 * MIB - 512, 512).is_err());
    }
}
