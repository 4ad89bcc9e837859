//! Filesystem UUIDs and labels read straight from superblocks (what
//! `blkid` reports as UUID and LABEL), and a native `mkswap`.

use std::io;

use super::region::Region;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub fstype: &'static str,
    /// As blkid prints it: lowercase hyphenated, or `ABCD-1234` for FAT.
    pub uuid: Option<String>,
    pub label: Option<String>,
}

fn uuid_text(b: &[u8]) -> Option<String> {
    let bytes: [u8; 16] = b.try_into().ok()?;
    (bytes != [0u8; 16]).then(|| uuid::Uuid::from_bytes(bytes).hyphenated().to_string())
}

fn label_text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// Identify the filesystem at the start of `region` (ext2/3/4, xfs, btrfs,
/// vfat, swap, iso9660). `None` when none is recognised.
pub fn probe(region: &Region) -> io::Result<Option<FsInfo>> {
    // Enough for every superblock below (btrfs lives at 64 KiB).
    let want = region.len.min(68 * 1024) as usize;
    let mut buf = vec![0u8; want];
    region.read_at(&mut buf, 0)?;
    Ok(identify(&buf))
}

/// blkid's iso9660 UUID: the volume creation time `YYYY-MM-DD-HH-MM-SS-CC`.
fn iso_uuid(date: &[u8]) -> Option<String> {
    let d = std::str::from_utf8(date).ok()?;
    if d.len() < 16 || !d.bytes().all(|c| c.is_ascii_digit()) || d.bytes().all(|c| c == b'0') {
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

pub fn identify(b: &[u8]) -> Option<FsInfo> {
    let at = |off: usize, len: usize| b.get(off..off + len);
    let info = |fstype, uuid, label| {
        Some(FsInfo {
            fstype,
            uuid,
            label,
        })
    };
    if at(1080, 2) == Some(&[0x53, 0xef]) {
        // The superblock's feature flags name the variant (and the type to
        // mount it with): extents or 64bit → ext4, a journal → ext3.
        let word = |off| at(off, 4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        let compat = word(1024 + 0x5c).unwrap_or(0);
        let incompat = word(1024 + 0x60).unwrap_or(0);
        let fstype = if incompat & (0x40 | 0x80) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return info(
            fstype,
            at(1128, 16).and_then(uuid_text),
            at(1144, 16).and_then(label_text),
        );
    }
    if at(0, 4) == Some(b"XFSB") {
        return info(
            "xfs",
            at(32, 16).and_then(uuid_text),
            at(108, 12).and_then(label_text),
        );
    }
    if at(65_600, 8) == Some(b"_BHRfS_M") {
        return info(
            "btrfs",
            at(65_568, 16).and_then(uuid_text),
            at(65_536 + 0x12b, 256).and_then(label_text),
        );
    }
    if at(32_769, 5) == Some(b"CD001") {
        return info(
            "iso9660",
            at(32_768 + 813, 16).and_then(iso_uuid),
            at(32_808, 32).and_then(label_text),
        );
    }
    // FAT32 keeps its serial and label further in than FAT12/16.
    let fat = if at(82, 8) == Some(b"FAT32   ") {
        Some((67, 71))
    } else if matches!(at(54, 5), Some(b"FAT12") | Some(b"FAT16")) {
        Some((39, 43))
    } else {
        None
    };
    if let Some((serial, label)) = fat {
        let id = at(serial, 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
        let label = at(label, 11)
            .and_then(label_text)
            .filter(|l| l != "NO NAME");
        return info(
            "vfat",
            id.map(|v| format!("{:04X}-{:04X}", v >> 16, v & 0xffff)),
            label,
        );
    }
    for page in [4096usize, 8192, 16_384, 65_536] {
        if at(page - 10, 10) == Some(b"SWAPSPACE2") {
            return info(
                "swap",
                at(1024 + 12, 16).and_then(uuid_text),
                at(1024 + 28, 16).and_then(label_text),
            );
        }
    }
    None
}

/// `mkswap -L <label>`: a version-1 swap header in the first page.
pub fn make_swap(region: &Region, label: &str) -> io::Result<String> {
    const PAGE: u64 = 4096;
    let pages = region.len / PAGE;
    if pages < 10 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a swap area needs at least 10 pages",
        ));
    }
    let uuid = uuid::Uuid::new_v4();
    let mut page = vec![0u8; PAGE as usize];
    page[1024..1028].copy_from_slice(&1u32.to_le_bytes()); // version
    let last = u32::try_from(pages - 1).unwrap_or(u32::MAX);
    page[1028..1032].copy_from_slice(&last.to_le_bytes());
    // nr_badpages stays 0.
    page[1036..1052].copy_from_slice(uuid.as_bytes());
    let l = label.as_bytes();
    let n = l.len().min(15);
    page[1052..1052 + n].copy_from_slice(&l[..n]);
    page[PAGE as usize - 10..].copy_from_slice(b"SWAPSPACE2");
    region.write_all(&page)?;
    Ok(uuid.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Make a filesystem image with the real mkfs tool (scripts/setup installs them).
    fn mkfs_image(dir: &std::path::Path, name: &str, size: u64, cmd: &[&str]) -> Vec<u8> {
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        let out = std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", cmd[0]));
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        let mut head = vec![0u8; 68 * 1024];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(&path).unwrap(),
            &mut head,
            0,
        )
        .unwrap();
        head
    }

    fn blkid(dir: &std::path::Path, name: &str, tag: &str) -> String {
        let out = std::process::Command::new("blkid")
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
            ("ext2", &["mkfs.ext2", "-q", "-F"], "ext2", None),
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
        for (name, cmd, fstype, label) in cases {
            let size = if *name == "xfs" { 320 << 20 } else { 64 << 20 };
            let head = mkfs_image(d, name, size, cmd);
            let got = identify(&head).expect(name);
            assert_eq!(got.fstype, *fstype);
            assert_eq!(got.label.as_deref(), *label, "{name}");
            assert_eq!(got.uuid.unwrap(), blkid(d, name, "UUID"), "{name}");
        }
        assert_eq!(
            identify(&vec![0u8; 68 * 1024]),
            None,
            "zeros are no filesystem"
        );
    }

    #[test]
    fn reads_what_it_writes_for_swap_and_knows_fat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        let region = Region::new(&path, 1, 1 << 20, 1 << 20);
        let uuid = make_swap(&region, "swap1").unwrap();
        let info = probe(&region).unwrap().unwrap();
        assert_eq!(info.fstype, "swap");
        assert_eq!(info.uuid.as_deref(), Some(uuid.as_str()));
        assert_eq!(info.label.as_deref(), Some("swap1"));

        let mut fat = vec![0u8; 4096];
        fat[82..90].copy_from_slice(b"FAT32   ");
        fat[67..71].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        fat[71..82].copy_from_slice(b"EFI-PART   ");
        let info = identify(&fat).unwrap();
        assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"));
        assert_eq!(info.label.as_deref(), Some("EFI-PART"));
        assert_eq!(identify(&[0u8; 4096]), None);
    }
}
