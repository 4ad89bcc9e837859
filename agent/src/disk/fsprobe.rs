//! Filesystem identity (type, UUID, label) read from superblocks, the way
//! `blkid` reports it: enough to find the partition Ironic names by
//! `root_uuid`, to mount it with the right type, and to recognise a
//! `config-2` drive. Works on a byte range of a device, so a partition can
//! be probed through its parent disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    /// `blkid`'s TYPE: ext4, xfs, vfat, btrfs, swap, iso9660.
    pub fs_type: &'static str,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

/// Read `len` bytes at `at` within the region, or None past its end.
fn read(
    f: &File,
    region_start: u64,
    region_len: u64,
    at: u64,
    len: usize,
) -> io::Result<Option<Vec<u8>>> {
    if at + len as u64 > region_len {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, region_start + at)?;
    Ok(Some(buf))
}

fn uuid_string(b: &[u8]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let bytes: [u8; 16] = b.try_into().ok()?;
    Some(uuid::Uuid::from_bytes(bytes).to_string())
}

fn label_string(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// Identify the filesystem in `[start, start+len)` of `f`, if any.
pub fn probe(f: &File, start: u64, len: u64) -> io::Result<Option<FsIdentity>> {
    let r = |at, n| read(f, start, len, at, n);
    if let Some(sb) = r(1024, 256)? {
        if sb[0x38..0x3a] == [0x53, 0xef] {
            let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
            let compat = u32::from_le_bytes([sb[0x5c], sb[0x5d], sb[0x5e], sb[0x5f]]);
            // extents or 64bit → ext4; a journal → ext3; else ext2.
            let fs_type = if incompat & (0x40 | 0x80) != 0 {
                "ext4"
            } else if compat & 0x4 != 0 {
                "ext3"
            } else {
                "ext2"
            };
            return Ok(Some(FsIdentity {
                fs_type,
                uuid: uuid_string(&sb[0x68..0x78]),
                label: label_string(&sb[0x78..0x88]),
            }));
        }
    }
    if let Some(sb) = r(0, 128)? {
        if &sb[0..4] == b"XFSB" {
            return Ok(Some(FsIdentity {
                fs_type: "xfs",
                uuid: uuid_string(&sb[32..48]),
                label: label_string(&sb[108..120]),
            }));
        }
    }
    if let Some(sb) = r(65_536, 0x22b + 256)? {
        if &sb[0x40..0x48] == b"_BHRfS_M" {
            return Ok(Some(FsIdentity {
                fs_type: "btrfs",
                uuid: uuid_string(&sb[0x20..0x30]),
                label: label_string(&sb[0x12b..0x22b]),
            }));
        }
    }
    if let Some(bs) = r(0, 512)? {
        let fat = if &bs[82..90] == b"FAT32   " {
            Some((67, 71))
        } else if &bs[54..62] == b"FAT16   " || &bs[54..62] == b"FAT12   " {
            Some((39, 43))
        } else {
            None
        };
        if let Some((id_at, label_at)) = fat {
            let id = u32::from_le_bytes([bs[id_at], bs[id_at + 1], bs[id_at + 2], bs[id_at + 3]]);
            let label = label_string(&bs[label_at..label_at + 11]).filter(|l| l != "NO NAME");
            return Ok(Some(FsIdentity {
                fs_type: "vfat",
                uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff)),
                label,
            }));
        }
    }
    if let Some(pvd) = r(32_768, 2048)? {
        if &pvd[1..6] == b"CD001" {
            return Ok(Some(FsIdentity {
                fs_type: "iso9660",
                uuid: iso_uuid(&pvd[813..830]),
                label: label_string(&pvd[40..72]),
            }));
        }
    }
    if let Some(page) = r(0, 4096)? {
        if &page[4086..4096] == b"SWAPSPACE2" {
            return Ok(Some(FsIdentity {
                fs_type: "swap",
                uuid: uuid_string(&page[1024 + 12..1024 + 28]),
                label: label_string(&page[1024 + 28..1024 + 44]),
            }));
        }
    }
    Ok(None)
}

/// blkid's iso9660 UUID: the volume creation time `YYYY-MM-DD-HH-MM-SS-CC`.
fn iso_uuid(date: &[u8]) -> Option<String> {
    let d = std::str::from_utf8(&date[..16]).ok()?;
    if !d.bytes().all(|c| c.is_ascii_digit()) || d.bytes().all(|c| c == b'0') {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}-{}-{}",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[8..10],
        &d[10..12],
        &d[12..14],
        &d[14..16]
    ))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Make a filesystem image with the real mkfs tool (scripts/setup installs them).
    fn mkfs(dir: &std::path::Path, name: &str, size: u64, cmd: &[&str]) -> File {
        let path = dir.join(name);
        File::create(&path).unwrap().set_len(size).unwrap();
        let out = Command::new(cmd[0])
            .args(&cmd[1..])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", cmd[0]));
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        File::open(&path).unwrap()
    }

    fn blkid(dir: &std::path::Path, name: &str, tag: &str) -> String {
        let out = Command::new("blkid")
            .args(["-p", "-s", tag, "-o", "value"])
            .arg(dir.join(name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn agrees_with_blkid() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases: &[(&str, &[&str], &str, Option<&str>)] = &[
            (
                "ext4",
                &["mkfs.ext4", "-q", "-F", "-L", "rootfs"],
                "ext4",
                Some("rootfs"),
            ),
            (
                "xfs",
                &["mkfs.xfs", "-q", "-f", "-L", "data"],
                "xfs",
                Some("data"),
            ),
            (
                "vfat",
                &["mkfs.vfat", "-n", "EFI-PART"],
                "vfat",
                Some("EFI-PART"),
            ),
            ("swap", &["mkswap", "-L", "swap1"], "swap", Some("swap1")),
        ];
        for (name, cmd, fs_type, label) in cases {
            let size = if *name == "xfs" { 320 << 20 } else { 64 << 20 };
            let f = mkfs(d, name, size, cmd);
            let id = probe(&f, 0, size).unwrap().expect(name);
            assert_eq!(id.fs_type, *fs_type);
            assert_eq!(id.label.as_deref(), *label, "{name}");
            assert_eq!(id.uuid.unwrap(), blkid(d, name, "UUID"), "{name}");
        }
    }

    #[test]
    fn probes_inside_a_region_and_not_beyond() {
        let dir = tempfile::tempdir().unwrap();
        let f = mkfs(dir.path(), "fs", 16 << 20, &["mkfs.ext4", "-q", "-F"]);
        assert_eq!(probe(&f, 0, 16 << 20).unwrap().unwrap().fs_type, "ext4");
        // A region too short to hold the superblock finds nothing.
        assert_eq!(probe(&f, 0, 1024).unwrap(), None);
        // Zeros are no filesystem.
        let z = File::create(dir.path().join("z")).unwrap();
        z.set_len(1 << 20).unwrap();
        assert_eq!(
            probe(&File::open(dir.path().join("z")).unwrap(), 0, 1 << 20).unwrap(),
            None
        );
    }
}
