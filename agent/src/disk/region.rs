//! A partition as a place to write: its disk, byte offset and length, and
//! its own device node when the kernel (and devtmpfs/udev) made one. Without
//! a node everything goes through the disk at the offset, so the agent works
//! on kernels or containers that do not expose partitions as devices.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use crate::image::Window;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub disk: PathBuf,
    /// 1-based partition number.
    pub number: u32,
    pub offset: u64,
    pub len: u64,
    /// The partition's device node, if one exists.
    pub node: Option<PathBuf>,
}

/// `/dev/sda` + 2 → `/dev/sda2`; `/dev/nvme0n1` or `/dev/loop0` + 2 → `…p2`.
pub fn partition_path(disk: &Path, number: u32) -> PathBuf {
    let name = disk.to_string_lossy();
    if name.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{name}p{number}"))
    } else {
        PathBuf::from(format!("{name}{number}"))
    }
}

fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

impl Region {
    /// The region of partition `number`, with its node when one exists.
    pub fn new(disk: &Path, number: u32, offset: u64, len: u64) -> Self {
        let node = Some(partition_path(disk, number)).filter(|p| is_block_device(p));
        Self {
            disk: disk.to_path_buf(),
            number,
            offset,
            len,
            node,
        }
    }

    /// The name Ironic knows the partition by (`/dev/sda2`), node or not.
    pub fn path(&self) -> PathBuf {
        partition_path(&self.disk, self.number)
    }

    /// The image engine's view: the disk plus a window.
    pub fn window(&self) -> Window {
        Window {
            offset: self.offset,
            len: self.len,
        }
    }

    /// Read `buf.len()` bytes at `at` (relative to the partition).
    pub fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        File::open(&self.disk)?.read_exact_at(buf, self.offset + at)
    }

    /// Write `data` at the partition's start, refusing data larger than it.
    pub fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.write_at(data, 0)
    }

    /// Write `data` at `at` (relative), bounded by the partition's length.
    pub fn write_at(&self, data: &[u8], at: u64) -> io::Result<()> {
        if at + data.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes do not fit in partition {} ({} bytes)",
                    data.len(),
                    self.path().display(),
                    self.len
                ),
            ));
        }
        let f = OpenOptions::new().write(true).open(&self.disk)?;
        f.write_all_at(data, self.offset + at)?;
        f.sync_all()
    }
}
