//! A partition as a place to write: its disk, byte offset and length, and
//! its own device node when the kernel (and devtmpfs/udev) made one. Without
//! a node everything goes through the disk at the offset, so the agent works
//! on kernels or containers that do not expose partitions as devices.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Window;

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

/// The partition's node, only if the kernel says it is exactly this
/// partition of this disk (a node left from an older table may now name
/// another partition, or none).
fn verified_node(disk: &Path, number: u32, offset: u64, len: u64) -> Option<PathBuf> {
    let path = partition_path(disk, number);
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let sys = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(rdev),
        libc::minor(rdev)
    ));
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(sys.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let parent = std::fs::canonicalize(&sys).ok()?;
    let parent_name = parent.parent()?.file_name()?;
    let ok = parent_name == disk.file_name()?
        && read("partition")? == u64::from(number)
        && read("start")? * 512 == offset
        && read("size")? * 512 == len;
    ok.then_some(path)
}

/// Make the kernel see the partitions just written: re-read the table,
/// and add what it did not pick up (loop devices without partition
/// scanning) as `partx --add` would. devtmpfs then makes the nodes.
pub fn announce(disk: &Path, parts: &[(u32, u64, u64)]) {
    let Ok(f) = File::open(disk) else { return };
    if !f.metadata().is_ok_and(|m| m.file_type().is_block_device()) {
        return;
    }
    if let Err(e) = super::ioctl::reread_partitions(&f) {
        tracing::debug!(error = %e, "partition table not re-read");
    }
    for (number, offset, len) in parts {
        match super::ioctl::add_partition(&f, *number, *offset, *len) {
            // EBUSY: the kernel has it already.
            Err(e) if e.raw_os_error() != Some(libc::EBUSY) => {
                tracing::debug!(error = %e, number, "partition not added to the kernel's view");
            }
            _ => {}
        }
    }
}

impl Region {
    /// The region of partition `number`, with its node when one exists.
    pub fn new(disk: &Path, number: u32, offset: u64, len: u64) -> Self {
        let node = verified_node(disk, number, offset, len);
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
        let f = File::open(&self.disk)?;
        // mkfs may have written through the partition's node, whose cache
        // is not the disk's; drop the disk's possibly stale pages first.
        if f.metadata()?.file_type().is_block_device() {
            super::ioctl::flush_buffers(&f)?;
        }
        f.read_exact_at(buf, self.offset + at)
    }

    /// Look for the node again, waiting a little: udev (unlike devtmpfs)
    /// makes partition nodes some time after the kernel re-reads the table.
    pub fn wait_for_node(&mut self, attempts: u32) {
        for i in 0..attempts {
            if self.node.is_some() {
                return;
            }
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            self.node = verified_node(&self.disk, self.number, self.offset, self.len);
        }
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
