//! IPA's `prepare_boot_partitions_for_softraid` for BIOS: GRUB's core.img
//! needs a place on every holder of the root array. On msdos the gap after
//! the MBR holds it (the RAID layout starts at 1 MiB); a GPT has no such
//! gap, so each GPT holder gets a 2 MiB BIOS boot partition (`ef02`,
//! `bios-boot-part-<i>`) at the first free MiB, in the room the RAID layout
//! left before its first partition (8 MiB on GPT in BIOS mode).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::plan::BIOS_GRUB_MIB;
use crate::disk::gpt_edit::Gpt;
use crate::disk::ioctl;
use crate::disk::region::announce;

const MIB: u64 = 1 << 20;
/// `21686148-6449-6E6F-744E-656564454649`, sgdisk's `ef02`.
pub const BIOS_BOOT_TYPE: Uuid = uuid::uuid!("21686148-6449-6e6f-744e-656564454649");

#[derive(Debug, thiserror::Error)]
pub enum BiosBootError {
    #[error("{disk}: {source}")]
    Io {
        disk: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{disk}: no room for a {BIOS_GRUB_MIB} MiB BIOS boot partition before its first \
         partition at byte {first}"
    )]
    NoRoom { disk: String, first: u64 },
}

/// What a holder got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderBoot {
    /// msdos (or no GPT): GRUB embeds itself after the MBR.
    MbrGap,
    /// The BIOS boot partition's number, new or already there.
    BiosBootPartition(u32),
}

/// Give every GPT holder a BIOS boot partition (kept if it has one).
pub fn prepare(holders: &[PathBuf]) -> Result<Vec<HolderBoot>, BiosBootError> {
    holders
        .iter()
        .enumerate()
        .map(|(i, d)| holder(d, i))
        .collect()
}

fn holder(disk: &Path, i: usize) -> Result<HolderBoot, BiosBootError> {
    let io = |source| BiosBootError::Io {
        disk: disk.display().to_string(),
        source,
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(io)?;
    let size = ioctl::device_size(&f)
        .or_else(|_| f.metadata().map(|m| m.len()))
        .map_err(io)?;
    let sector = ioctl::sector_size(&f);
    let Some(mut gpt) = Gpt::read(&f, sector, size / sector).map_err(io)? else {
        return Ok(HolderBoot::MbrGap);
    };
    let used = gpt.used();
    if let Some(e) = used.iter().find(|e| e.type_guid == BIOS_BOOT_TYPE) {
        return Ok(HolderBoot::BiosBootPartition(e.number));
    }
    let first = MIB / sector;
    let last = first + BIOS_GRUB_MIB * MIB / sector - 1;
    let next = used.iter().map(|e| e.first_lba).min().unwrap_or(u64::MAX);
    if last >= next {
        return Err(BiosBootError::NoRoom {
            disk: disk.display().to_string(),
            first: next.saturating_mul(sector),
        });
    }
    let name = format!("bios-boot-part-{i}");
    let number = gpt.add(BIOS_BOOT_TYPE, first, last, &name).map_err(io)?;
    gpt.write(&f).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    // The kernel must see it (grub-install reads the table through the
    // disk's node, but a rescan keeps /dev in step with the disk).
    announce(disk, &[(number, first * sector, BIOS_GRUB_MIB * MIB)]);
    tracing::info!(disk = %disk.display(), number, name, "BIOS boot partition added for GRUB");
    Ok(HolderBoot::BiosBootPartition(number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::{write_layout, Label, Planned, Role};
    use crate::disk::partitions::{read_table, PartitionType};

    const GIB: u64 = 1 << 30;

    fn holder_with_raid_at(dir: &Path, name: &str, label: Label, start: u64) -> PathBuf {
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().set_len(GIB).unwrap();
        let plan = [Planned {
            role: Role::Raid,
            number: 1,
            start,
            len: 512 * MIB,
        }];
        write_layout(&path, label, &plan, false).unwrap();
        path
    }

    #[test]
    fn gpt_holders_get_a_bios_boot_partition_msdos_ones_nothing() {
        let d = tempfile::tempdir().unwrap();
        let gpt0 = holder_with_raid_at(d.path(), "a", Label::Gpt, 8 * MIB);
        let gpt1 = holder_with_raid_at(d.path(), "b", Label::Gpt, 8 * MIB);
        let mbr = holder_with_raid_at(d.path(), "c", Label::Msdos, MIB);
        let mbr_before = std::fs::read(&mbr).unwrap();
        let got = prepare(&[gpt0.clone(), gpt1.clone(), mbr.clone()]).unwrap();
        assert_eq!(
            got,
            [
                HolderBoot::BiosBootPartition(2),
                HolderBoot::BiosBootPartition(2),
                HolderBoot::MbrGap
            ]
        );
        for (i, disk) in [&gpt0, &gpt1].into_iter().enumerate() {
            let table = read_table(disk).unwrap();
            let p = table.get(2).unwrap();
            assert_eq!((p.start, p.len), (MIB, 2 * MIB));
            assert_eq!(p.kind, PartitionType::Gpt(BIOS_BOOT_TYPE));
            assert_eq!(p.name, format!("bios-boot-part-{i}"));
            // The RAID member is untouched.
            assert_eq!(table.get(1).unwrap().start, 8 * MIB);
        }
        assert!(std::fs::read(&mbr).unwrap() == mbr_before, "msdos changed");
        // Again: the partition is found, not added twice.
        assert_eq!(
            prepare(std::slice::from_ref(&gpt0)).unwrap(),
            [HolderBoot::BiosBootPartition(2)]
        );
        assert_eq!(read_table(&gpt0).unwrap().partitions.len(), 2);
    }

    #[test]
    fn no_room_before_the_raid_partition() {
        let d = tempfile::tempdir().unwrap();
        let disk = holder_with_raid_at(d.path(), "a", Label::Gpt, 2 * MIB);
        let err = prepare(&[disk]).unwrap_err();
        assert!(
            matches!(err, BiosBootError::NoRoom { first, .. } if first == 2 * MIB),
            "{err}"
        );
    }
}
