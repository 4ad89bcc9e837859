//! `erase_devices_metadata`: make a disk look blank to every prober. What
//! IPA does with `wipefs --all`, two `dd`s and `sgdisk -Z`, done natively: a
//! table of on-disk signatures (filesystems, swap, RAID, LVM, LUKS, partition
//! tables) whose magic bytes are zeroed, partitions first, then the disk,
//! then the first and last sectors IPA zeroes (primary and backup GPT, MBR).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::ioctl;

/// md superblock magic 0xa92b4efc, little-endian on disk.
const MD_MAGIC: &[u8] = &[0xfc, 0x4e, 0x2b, 0xa9];

/// Where a signature lives and what it looks like.
struct Probe {
    name: &'static str,
    offset: u64,
    magic: &'static [u8],
}

/// Every location worth checking on a device of `size` bytes.
fn probes(size: u64, sector: u64) -> Vec<Probe> {
    let p = |name, offset, magic| Probe {
        name,
        offset,
        magic,
    };
    let mut v = vec![
        p("xfs", 0, b"XFSB".as_slice()),
        p("ext2/3/4", 1080, &[0x53, 0xef]),
        p("btrfs", 65_600, b"_BHRfS_M"),
        p("vfat", 82, b"FAT32   "),
        p("vfat", 54, b"FAT16   "),
        p("vfat", 54, b"FAT12   "),
        p("dos/PMBR", 510, &[0x55, 0xaa]),
        p("iso9660", 32_769, b"CD001"),
        p("crypto_LUKS", 0, b"LUKS\xba\xbe"),
        p("linux_raid_member (1.1)", 0, MD_MAGIC),
        p("linux_raid_member (1.2)", 4096, MD_MAGIC),
        p("gpt", sector, b"EFI PART"),
    ];
    for page in [4096u64, 8192, 16_384, 65_536] {
        v.push(p("swap", page - 10, b"SWAPSPACE2"));
        v.push(p("swap", page - 10, b"SWAP-SPACE"));
    }
    for s in 0..4u64 {
        v.push(p("LVM2_member", s * 512, b"LABELONE"));
    }
    // LUKS2 keeps a second header at one of these offsets.
    for off in [
        0x4000u64, 0x8000, 0x1_0000, 0x2_0000, 0x4_0000, 0x8_0000, 0x10_0000, 0x20_0000, 0x40_0000,
    ] {
        v.push(p("crypto_LUKS (secondary)", off, b"SKUL\xba\xbe"));
    }
    if size >= 65_536 * 2 {
        v.push(p(
            "linux_raid_member (0.90)",
            (size & !65_535) - 65_536,
            MD_MAGIC,
        ));
    }
    if size >= 8192 * 2 {
        v.push(p(
            "linux_raid_member (1.0)",
            ((size / 512 - 16) & !7) * 512,
            MD_MAGIC,
        ));
    }
    if size >= sector * 2 {
        v.push(p("gpt (backup)", size - sector, b"EFI PART"));
    }
    v.retain(|pr| pr.offset + pr.magic.len() as u64 <= size);
    v
}

/// A device (disk or partition) and what was wiped on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiped {
    pub device: PathBuf,
    pub signatures: Vec<String>,
}

/// Wipe one block device: zero every signature found, then IPA's first and
/// last `gpt_sectors` (33 for 512-byte sectors, 5 for 4 KiB). Opened
/// exclusively: a mounted or otherwise held device is an error, not a wipe.
pub fn wipe_device(path: &Path) -> io::Result<Wiped> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)?;
    let size = ioctl::device_size(&f)?;
    let sector = ioctl::sector_size(&f);
    let mut found = Vec::new();
    for probe in probes(size, sector) {
        let mut buf = vec![0u8; probe.magic.len()];
        f.read_exact_at(&mut buf, probe.offset)?;
        if buf == probe.magic {
            f.write_all_at(&vec![0u8; buf.len()], probe.offset)?;
            found.push(format!("{} at {:#x}", probe.name, probe.offset));
        }
    }
    let gpt_sectors = if sector >= 4096 { 5 } else { 33 };
    let span = (gpt_sectors * sector).min(size);
    let zeros = vec![0u8; span as usize];
    f.write_all_at(&zeros, 0)?;
    if size > span {
        f.write_all_at(&zeros, size - span)?;
    }
    f.sync_all()?;
    Ok(Wiped {
        device: path.to_path_buf(),
        signatures: found,
    })
}

/// Ask the kernel to drop the partitions of a disk whose table is gone.
pub fn reread_partitions(path: &Path) {
    if let Ok(f) = File::open(path) {
        // Best effort: a busy disk keeps its old view until the next boot.
        let _ = ioctl::reread_partitions(&f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_offsets_fit_small_devices() {
        for size in [0u64, 512, 4096, 70_000, 1 << 30] {
            for p in probes(size, 512) {
                assert!(
                    p.offset + p.magic.len() as u64 <= size,
                    "{} at {}",
                    p.name,
                    p.offset
                );
            }
        }
        let big: Vec<_> = probes(1 << 30, 512).into_iter().map(|p| p.name).collect();
        for name in [
            "xfs",
            "ext2/3/4",
            "swap",
            "LVM2_member",
            "crypto_LUKS",
            "gpt (backup)",
            "linux_raid_member (0.90)",
        ] {
            assert!(big.contains(&name), "{name}");
        }
    }
}
