//! Filesystems on partitions: FAT natively (the ESP: the deploy ramdisk
//! has no mkfs.vfat), the others by the mkfs tools (the issue allows
//! shelling out for these). A partition without a device node is formatted
//! through its disk at an offset, which only FAT and the ext tools can do.

use std::process::Command;

use super::region::Region;

#[derive(Debug, thiserror::Error)]
pub enum MkfsError {
    #[error("{tool} failed on {target}: {output}")]
    Failed {
        tool: String,
        target: String,
        output: String,
    },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "partition {0} has no device node, and mkfs.{1} cannot write at an offset of its disk"
    )]
    NoNode(String, String),
    #[error("unsupported filesystem {0:?}")]
    Unsupported(String),
    #[error("FAT label {0:?}: at most 11 ASCII characters")]
    FatLabel(String),
    #[error("formatting {target} as FAT: {source}")]
    Fat {
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// `mkfs.vfat -n <label>` natively: FAT12/16/32 and the cluster size
/// chosen from the size as mkfs.fat does (the 550 MiB ESP is FAT32, 4 KiB
/// clusters), a random volume ID, the label in the boot sector and the
/// root directory.
pub fn make_fat(region: &Region, label: &str) -> Result<(), MkfsError> {
    let target = region.path().display().to_string();
    if label.len() > 11 || !label.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(MkfsError::FatLabel(label.to_string()));
    }
    let mut volume_label = [b' '; 11];
    volume_label[..label.len()].copy_from_slice(label.as_bytes());
    let volume_id = u32::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..4].try_into().unwrap());
    let fat_error = |source| MkfsError::Fat {
        target: target.clone(),
        source,
    };
    let (path, start) = match &region.node {
        Some(node) => (node.clone(), 0),
        None => (region.disk.clone(), region.offset),
    };
    tracing::info!(target = %target, label, "making a FAT filesystem");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(fat_error)?;
    let slice = fscommon::StreamSlice::new(
        file.try_clone().map_err(fat_error)?,
        start,
        start + region.len,
    )
    .map_err(fat_error)?;
    fatfs::format_volume(
        slice,
        fatfs::FormatVolumeOptions::new()
            .volume_label(volume_label)
            .volume_id(volume_id),
    )
    .map_err(fat_error)?;
    file.sync_all().map_err(fat_error)
}

fn run(mut cmd: Command, target: &str) -> Result<(), MkfsError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    tracing::info!(command = ?cmd, "making a filesystem");
    let out = cmd.output().map_err(|source| MkfsError::Spawn {
        tool: tool.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(MkfsError::Failed {
            tool,
            target: target.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_string(),
        });
    }
    Ok(())
}

/// `mkfs -t <fstype> <label option> <label>` on the partition.
pub fn mkfs(region: &Region, fstype: &str, label: &str) -> Result<(), MkfsError> {
    let name = region.path().display().to_string();
    let fstype = fstype.to_ascii_lowercase();
    if !fstype
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(MkfsError::Unsupported(fstype));
    }
    if matches!(fstype.as_str(), "vfat" | "fat" | "msdos") {
        return make_fat(region, label);
    }
    let mut cmd = Command::new(format!("mkfs.{fstype}"));
    match fstype.as_str() {
        "ext2" | "ext3" | "ext4" => {
            cmd.args(["-F", "-q", "-L", label]);
            match &region.node {
                Some(node) => cmd.arg(node),
                None => cmd
                    .arg("-E")
                    .arg(format!("offset={}", region.offset))
                    .arg(&region.disk)
                    .arg(format!("{}k", region.len / 1024)),
            };
        }
        _ => {
            let mut region = region.clone();
            region.wait_for_node(5);
            let node = region
                .node
                .as_ref()
                .ok_or_else(|| MkfsError::NoNode(name.clone(), fstype.clone()))?;
            match fstype.as_str() {
                "xfs" | "btrfs" => cmd.args(["-f", "-L", label]),
                _ => cmd.args(["-L", label]),
            };
            cmd.arg(node);
        }
    }
    run(cmd, &name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::disk::fsinfo;

    /// Without a node, FAT and ext go through the disk at the offset and
    /// stay inside the partition.
    #[test]
    fn formats_by_offset_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk)
            .unwrap();
        let mib = 1u64 << 20;
        f.set_len(80 * mib).unwrap();
        let fill = vec![0xa5u8; mib as usize];
        for m in 0..80 {
            f.write_all_at(&fill, m * mib).unwrap();
        }
        let esp = Region::new(&disk, 1, 8 * mib, 34 * mib);
        let eph = Region::new(&disk, 2, 42 * mib, 32 * mib);
        assert!(esp.node.is_none());
        mkfs(&esp, "vfat", "efi-part").unwrap();
        mkfs(&eph, "ext4", "ephemeral0").unwrap();
        let info = fsinfo::probe(&esp).unwrap().unwrap();
        assert_eq!(
            (info.fstype, info.label.as_deref()),
            ("vfat", Some("efi-part"))
        );
        let info = fsinfo::probe(&eph).unwrap().unwrap();
        assert_eq!(info.label.as_deref(), Some("ephemeral0"));
        assert!(info.uuid.is_some());
        // Outside both partitions nothing changed.
        let mut b = vec![0u8; mib as usize];
        for m in (0..8).chain(74..80) {
            f.read_exact_at(&mut b, m * mib).unwrap();
            assert!(b.iter().all(|x| *x == 0xa5), "MiB {m} was written");
        }
        let Err(MkfsError::NoNode(..)) = mkfs(&eph, "xfs", "x") else {
            panic!("xfs cannot work by offset");
        };
    }

    /// The ESP as Ironic sizes it (550 MiB): FAT32, clean for fsck.fat,
    /// seen by blkid and by the FAT reader the bootloader code uses.
    #[test]
    fn native_fat32_esp_is_what_the_tools_expect() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("esp");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(550 << 20)
            .unwrap();
        let mut region = Region::new(&img, 1, 0, 550 << 20);
        region.node = Some(img.clone());
        mkfs(&region, "vfat", "efi-part").unwrap();
        let info = fsinfo::probe(&region).unwrap().unwrap();
        assert_eq!(
            (info.fstype, info.label.as_deref()),
            ("vfat", Some("efi-part"))
        );
        let fs = fatfs::FileSystem::new(
            std::fs::File::options()
                .read(true)
                .write(true)
                .open(&img)
                .unwrap(),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        drop(fs);
        if let Ok(out) = Command::new("fsck.fat").arg("-n").arg(&img).output() {
            assert!(
                out.status.success(),
                "fsck.fat: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Ok(out) = Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&img)
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("TYPE=vfat") && text.contains("VERSION=FAT32"),
                "{text}"
            );
            assert!(
                text.contains(&format!("UUID={}", info.uuid.unwrap())),
                "{text}"
            );
        }
        assert!(matches!(
            mkfs(&region, "vfat", "much-too-long-label"),
            Err(MkfsError::FatLabel(_))
        ));
    }
}
