//! What is on a disk that an erase must leave alone: IPA's cleaning guards,
//! read natively from the disk instead of from `lsblk`.
//!
//! - Shared-disk cluster filesystems (IPA's `safety_check_block_device`):
//!   a GPFS or VMFS partition type, or a GFS2 filesystem, on the disk or any
//!   partition; erasing one can take down a whole cluster, so the step fails
//!   with IPA's `ProtectedDeviceError` text unless the operator turned the
//!   guard off. IPA only looks at the disk's own identifiers (lsblk's first
//!   row, without the FSTYPE column its GFS2 check reads), so it misses a
//!   protected *partition*; this guard does not. A VMFS volume is also known
//!   by its on-disk magic, as blkid knows it, whatever the partition type.
//! - Linux software RAID members (IPA's `_is_linux_raid_member`): an md
//!   superblock (0.90, 1.0, 1.1 or 1.2) on the disk or a partition, found
//!   whether the array is assembled or not.
//! - Virtual media (IPA's `_is_virtual_media_device`): a filesystem labelled
//!   `ir-vfd-dev` on the disk or a partition.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use uuid::{uuid, Uuid};

use super::fsinfo;
use super::ioctl;
use super::partitions::{self, PartitionType};

/// Ironic's virtual media floppy/USB label.
pub const VIRTUAL_MEDIA_LABEL: &str = "ir-vfd-dev";

const GPFS_TYPE: Uuid = uuid!("37AFFC90-EF7D-4E96-91C3-2D7AE055B174");
const VMFS_TYPE: Uuid = uuid!("AA31E02A-400F-11DB-9590-000C2911D1B8");
const VMFS_MBR_TYPE: u8 = 0xfb;

const MD_MAGIC: u32 = 0xa92b_4efc;
const GFS2_MAGIC: u32 = 0x0116_1970;
const GFS2_SB_OFFSET: u64 = 64 << 10;
/// `vmfs_volume_member`: blkid's magic at 1 MiB.
const VMFS_VOLUME_MAGIC: [u8; 4] = [0x0d, 0xd0, 0x01, 0xc0];
const VMFS_VOLUME_OFFSET: u64 = 1 << 20;

/// A shared-disk filesystem found, in IPA's words for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    Gpfs,
    VmfsGpt,
    VmfsMbr,
    VmfsVolume,
    Gfs2,
}

impl Protected {
    /// IPA's `what` for `ProtectedDeviceError`.
    pub fn what(self) -> &'static str {
        match self {
            Self::Gpfs => "IBM GPFS Partition",
            Self::VmfsGpt => "VMware VMFS Partition (GPT)",
            Self::VmfsMbr => "VMware VMFS Partition (MBR)",
            Self::VmfsVolume => "VMware VMFS Volume",
            Self::Gfs2 => "Red Hat Global File System 2",
        }
    }
}

/// IPA's `ProtectedDeviceError` message, word for word.
pub fn protected_message(device: &Path, what: Protected) -> String {
    format!(
        "Protected {} located on device {}. This volume or contents may be a shared block device. \
         Please consult your storage administrator, and restart cleaning after either detaching \
         the volumes, or instructing IPA to not protect contents. See Ironic Python Agent \
         documentation for more information.",
        what.what(),
        device.display()
    )
}

/// What the guards found on one disk (its partitions included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    pub protected: Option<Protected>,
    /// Where an md superblock was found (the disk or a partition number).
    pub raid_member: Option<Place>,
    /// Where the `ir-vfd-dev` label was found.
    pub virtual_media: Option<Place>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Disk,
    Partition(u32),
}

/// Read what the guards need from `disk`: its head and tail, its partition
/// table, and each partition's head and tail (a few hundred KiB in all).
pub fn inspect(disk: &Path) -> io::Result<Contents> {
    let f = File::open(disk)?;
    let size = ioctl::device_size(&f).or_else(|_| f.metadata().map(|m| m.len()))?;
    let mut found = Contents::default();
    look_at(&f, 0, size, Place::Disk, &mut found)?;
    // No readable table is no partitions (a blank disk, a whole-disk filesystem).
    if let Ok(table) = partitions::read_table(disk) {
        for p in &table.partitions {
            let by_type = match p.kind {
                PartitionType::Gpt(t) if t == GPFS_TYPE => Some(Protected::Gpfs),
                PartitionType::Gpt(t) if t == VMFS_TYPE => Some(Protected::VmfsGpt),
                PartitionType::Mbr(VMFS_MBR_TYPE) => Some(Protected::VmfsMbr),
                _ => None,
            };
            found.protected = found.protected.or(by_type);
            let len = p.len.min(size.saturating_sub(p.start));
            look_at(&f, p.start, len, Place::Partition(p.number), &mut found)?;
        }
    }
    Ok(found)
}

/// The signatures of one device (a disk or a partition at `start`).
fn look_at(f: &File, start: u64, len: u64, place: Place, found: &mut Contents) -> io::Result<()> {
    let head = read_upto(f, start, len, 0, GFS2_SB_OFFSET as usize + 4096)?;
    if found.raid_member.is_none() && md_at_head(&head) {
        found.raid_member = Some(place);
    }
    if found.raid_member.is_none() && md_at_tail(f, start, len)? {
        found.raid_member = Some(place);
    }
    if found.protected.is_none() && gfs2(&head) {
        found.protected = Some(Protected::Gfs2);
    }
    if found.protected.is_none() {
        let vmfs = read_upto(f, start, len, VMFS_VOLUME_OFFSET, 4)?;
        if vmfs == VMFS_VOLUME_MAGIC {
            found.protected = Some(Protected::VmfsVolume);
        }
    }
    if found.virtual_media.is_none()
        && fsinfo::identify(&head)
            .and_then(|fs| fs.label)
            .is_some_and(|l| l == VIRTUAL_MEDIA_LABEL)
    {
        found.virtual_media = Some(place);
    }
    Ok(())
}

/// Up to `want` bytes at `at` within the device `[start, start + len)`;
/// short (or empty) near its end.
fn read_upto(f: &File, start: u64, len: u64, at: u64, want: usize) -> io::Result<Vec<u8>> {
    let n = len.saturating_sub(at).min(want as u64) as usize;
    let mut buf = vec![0u8; n];
    let mut done = 0;
    while done < n {
        let got = f.read_at(&mut buf[done..], start + at + done as u64)?;
        if got == 0 {
            break;
        }
        done += got;
    }
    buf.truncate(done);
    Ok(buf)
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// An md v1 superblock starts with the magic and major version 1.
fn md_v1(b: &[u8], off: usize) -> bool {
    le32(b, off) == Some(MD_MAGIC) && le32(b, off + 4) == Some(1)
}

/// Versions 1.1 (at 0) and 1.2 (at 4 KiB).
fn md_at_head(head: &[u8]) -> bool {
    md_v1(head, 0) || md_v1(head, 4096)
}

/// Versions 0.90 (64 KiB-aligned, 64 KiB from the end; native byte order,
/// so either) and 1.0 (4 KiB-aligned, at least 8 KiB from the end).
fn md_at_tail(f: &File, start: u64, len: u64) -> io::Result<bool> {
    if len >= 128 << 10 {
        let at = (len & !0xffff) - (64 << 10);
        let b = read_upto(f, start, len, at, 8)?;
        let major = |v: Option<u32>| v == Some(0);
        if (le32(&b, 0) == Some(MD_MAGIC) && major(le32(&b, 4)))
            || (be32(&b, 0) == Some(MD_MAGIC) && major(be32(&b, 4)))
        {
            return Ok(true);
        }
    }
    if len >= 12 << 10 {
        let at = (len - (8 << 10)) & !0xfff;
        let b = read_upto(f, start, len, at, 8)?;
        if md_v1(&b, 0) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The GFS2 superblock at 64 KiB: metadata magic, type 1 (superblock) and
/// the multi-host format GFS2 writes (1900), as blkid checks.
fn gfs2(head: &[u8]) -> bool {
    let sb = GFS2_SB_OFFSET as usize;
    be32(head, sb) == Some(GFS2_MAGIC)
        && be32(head, sb + 4) == Some(1)
        && be32(head, sb + 28) == Some(1900)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn disk(dir: &Path, size: u64) -> std::path::PathBuf {
        let path = dir.join("disk.img");
        let f = File::create(&path).unwrap();
        f.set_len(size).unwrap();
        path
    }

    fn put(path: &Path, at: u64, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, at).unwrap();
    }

    /// Run a tool the test needs; its stderr is the failure message.
    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn sgdisk(path: &Path, args: &[&str]) {
        run(Command::new("sgdisk").args(args).arg(path));
    }

    fn md_v1_sb() -> Vec<u8> {
        let mut b = MD_MAGIC.to_le_bytes().to_vec();
        b.extend_from_slice(&1u32.to_le_bytes());
        b
    }

    #[test]
    fn a_blank_disk_holds_nothing_guarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = disk(dir.path(), 8 << 20);
        assert_eq!(inspect(&path).unwrap(), Contents::default());
    }

    #[test]
    fn md_superblocks_of_every_version_are_found_on_the_disk() {
        let size: u64 = (8 << 20) + 12_345 * 512;
        let v090_at = (size & !0xffff) - (64 << 10);
        let v10_at = (size - (8 << 10)) & !0xfff;
        let mut v090_be = MD_MAGIC.to_be_bytes().to_vec();
        v090_be.extend_from_slice(&0u32.to_be_bytes());
        let mut v090_le = MD_MAGIC.to_le_bytes().to_vec();
        v090_le.extend_from_slice(&0u32.to_le_bytes());
        for (at, sb) in [
            (0, md_v1_sb()),
            (4096, md_v1_sb()),
            (v10_at, md_v1_sb()),
            (v090_at, v090_le),
            (v090_at, v090_be),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = disk(dir.path(), size);
            put(&path, at, &sb);
            assert_eq!(
                inspect(&path).unwrap().raid_member,
                Some(Place::Disk),
                "at {at}"
            );
        }
        // The magic alone, at a place no version uses, is not a member.
        let dir = tempfile::tempdir().unwrap();
        let path = disk(dir.path(), size);
        put(&path, 8192, &md_v1_sb());
        assert_eq!(inspect(&path).unwrap().raid_member, None);
    }

    #[test]
    fn an_md_member_partition_and_protected_partition_types_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = disk(dir.path(), 64 << 20);
        sgdisk(
            &path,
            &[
                "-n",
                "1:2048:+16M",
                "-t",
                "1:8300",
                "-n",
                "2:0:+16M",
                "-t",
                "2:fd00",
            ],
        );
        let start2 = (2048 + 16 * 2048) * 512;
        put(&path, start2 + 4096, &md_v1_sb());
        let found = inspect(&path).unwrap();
        assert_eq!(found.raid_member, Some(Place::Partition(2)));
        assert_eq!(found.protected, None);

        for (code, what) in [
            ("37AFFC90-EF7D-4E96-91C3-2D7AE055B174", Protected::Gpfs),
            ("AA31E02A-400F-11DB-9590-000C2911D1B8", Protected::VmfsGpt),
        ] {
            sgdisk(&path, &["-t", &format!("1:{code}")]);
            assert_eq!(inspect(&path).unwrap().protected, Some(what));
        }
    }

    #[test]
    fn an_mbr_vmfs_partition_is_protected() {
        let dir = tempfile::tempdir().unwrap();
        let path = disk(dir.path(), 16 << 20);
        let out = Command::new("sfdisk")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(b"label: dos\n2048,8192,fb\n")?;
                c.wait()
            })
            .unwrap();
        assert!(out.success());
        assert_eq!(inspect(&path).unwrap().protected, Some(Protected::VmfsMbr));
    }

    #[test]
    fn gfs2_and_a_vmfs_volume_are_protected_by_their_magic() {
        let dir = tempfile::tempdir().unwrap();
        let path = disk(dir.path(), 8 << 20);
        let mut sb = vec![0u8; 32];
        sb[0..4].copy_from_slice(&GFS2_MAGIC.to_be_bytes());
        sb[4..8].copy_from_slice(&1u32.to_be_bytes());
        sb[28..32].copy_from_slice(&1900u32.to_be_bytes());
        put(&path, GFS2_SB_OFFSET, &sb);
        assert_eq!(inspect(&path).unwrap().protected, Some(Protected::Gfs2));

        let path = disk(dir.path(), 8 << 20);
        put(&path, VMFS_VOLUME_OFFSET, &VMFS_VOLUME_MAGIC);
        assert_eq!(
            inspect(&path).unwrap().protected,
            Some(Protected::VmfsVolume)
        );
    }

    #[test]
    fn the_virtual_media_label_is_found_on_a_whole_disk_vfat() {
        let dir = tempfile::tempdir().unwrap();
        let path = disk(dir.path(), 8 << 20);
        run(Command::new("mkfs.vfat")
            .args(["-n", VIRTUAL_MEDIA_LABEL])
            .arg(&path));
        assert_eq!(inspect(&path).unwrap().virtual_media, Some(Place::Disk));
    }

    #[test]
    fn the_protected_message_is_ipas() {
        let m = protected_message(Path::new("/dev/sdb"), Protected::Gfs2);
        assert!(m.starts_with(
            "Protected Red Hat Global File System 2 located on device /dev/sdb. This volume"
        ));
    }
}
