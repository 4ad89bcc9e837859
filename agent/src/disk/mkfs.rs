//! Filesystems on partitions, by the mkfs tools (the issue allows shelling
//! out for these). A partition without a device node is formatted through
//! its disk at an offset, which only the FAT and ext tools can do.

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
    let mut cmd = Command::new(format!("mkfs.{fstype}"));
    match fstype.as_str() {
        "vfat" | "fat" | "msdos" => {
            cmd.args(["-n", label]);
            match &region.node {
                Some(node) => cmd.arg(node),
                // -I: the target is a whole disk; the offset is in sectors, the size in KiB.
                None => cmd
                    .arg("-I")
                    .arg(format!("--offset={}", region.offset / 512))
                    .arg(&region.disk)
                    .arg((region.len / 1024).to_string()),
            };
        }
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
}
