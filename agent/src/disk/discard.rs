//! IPA 13's verified discard erase (`_discard_erase`, opt-in through
//! `ipa-enable-discard-erase` or the node's `agent_enable_discard_erase`):
//! for a disk whose secure erase is unavailable (a frozen SATA drive), write
//! a marker at ten sampled positions, discard the whole device (a secure
//! discard first, else a plain one), drop the page cache, and call it erased
//! only if every sample then reads back as zeros. A device that ignores the
//! discard, or keeps the old data readable, is not erased by this path and
//! the caller goes on to its other options.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use tracing::{info, warn};

use super::ioctl;

/// Bytes read back at each sampled position.
pub const SAMPLE: usize = 1 << 20;
/// Positions as fractions of the range that can be read in full (IPA's).
const FRACTIONS: [f64; 10] = [0.0, 0.01, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.99];
const MARKER: u8 = 0xa5;
const DEFAULT_ALIGNMENT: u64 = 4096;

/// Why a discard erase did not erase the device.
#[derive(Debug, thiserror::Error)]
pub enum DiscardError {
    #[error("the device does not report support for discard")]
    Unsupported,
    #[error("its size ({0} bytes) is too small to verify a discard")]
    TooSmall(u64),
    #[error("the verification markers could not be written: {0}")]
    Markers(#[source] io::Error),
    #[error("neither a secure discard nor a plain discard succeeded: {0}")]
    Discard(#[source] io::Error),
    #[error("its buffers could not be flushed: {0}")]
    Flush(#[source] io::Error),
    #[error("it still holds data at offset {0:#x} after the discard")]
    NotZeroed(u64),
    #[error("it could not be read back: {0}")]
    ReadBack(#[source] io::Error),
    #[error("opening it: {0}")]
    Open(#[source] io::Error),
}

/// `queue/discard_max_bytes` of the disk `name` (0: no discard).
pub fn max_bytes(sysfs: &Path, name: &str) -> u64 {
    std::fs::read_to_string(
        sysfs
            .join("block")
            .join(name)
            .join("queue/discard_max_bytes"),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

/// The sampled positions: distinct, aligned to the logical sector, each
/// with a whole sample after it.
pub fn sample_offsets(size: u64, logical_sector: u64) -> Vec<u64> {
    if size <= SAMPLE as u64 {
        return Vec::new();
    }
    let align = if logical_sector > 0 {
        logical_sector
    } else {
        DEFAULT_ALIGNMENT
    };
    let readable = size - SAMPLE as u64;
    let mut offsets: Vec<u64> = FRACTIONS
        .iter()
        .map(|f| {
            let at = (readable as f64 * f) as u64;
            at - at % align
        })
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// Erase the whole disk at `path` by a verified discard.
pub fn erase(path: &Path, max_bytes: u64, logical_sector: u64) -> Result<usize, DiscardError> {
    if max_bytes == 0 {
        return Err(DiscardError::Unsupported);
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
        .map_err(DiscardError::Open)?;
    let size = ioctl::device_size(&f).map_err(DiscardError::Open)?;
    let offsets = sample_offsets(size, logical_sector);
    if offsets.is_empty() {
        return Err(DiscardError::TooSmall(size));
    }
    // From here the device is modified even if the discard then fails: a
    // device not erased leaves the step failed, never handed to a tenant.
    let marker = vec![MARKER; SAMPLE];
    for &at in &offsets {
        f.write_all_at(&marker, at).map_err(DiscardError::Markers)?;
    }
    f.sync_all().map_err(DiscardError::Markers)?;
    discard_all(&f, path, size, max_bytes)?;
    // Else the read-back could be served the markers from the page cache.
    ioctl::flush_buffers(&f).map_err(DiscardError::Flush)?;
    verify(&f, &offsets)?;
    info!(disk = %path.display(), samples = offsets.len(), "verified as zeroed after the discard");
    Ok(offsets.len())
}

fn discard_all(f: &File, path: &Path, size: u64, max_bytes: u64) -> Result<(), DiscardError> {
    let mut last = None;
    for secure in [true, false] {
        let kind = if secure { "secure discard" } else { "discard" };
        info!(disk = %path.display(), kind, max_bytes, "erasing by discard");
        match ioctl::discard(f, 0, size, secure) {
            Ok(()) => return Ok(()),
            Err(e) => {
                warn!(disk = %path.display(), kind, error = %e, "discard refused");
                last = Some(e);
            }
        }
    }
    Err(DiscardError::Discard(
        last.unwrap_or_else(|| io::Error::other("no discard tried")),
    ))
}

fn verify(f: &File, offsets: &[u64]) -> Result<(), DiscardError> {
    let mut buf = vec![0u8; SAMPLE];
    for &at in offsets {
        f.read_exact_at(&mut buf, at)
            .map_err(DiscardError::ReadBack)?;
        if let Some(i) = buf.iter().position(|b| *b != 0) {
            return Err(DiscardError::NotZeroed(at + i as u64));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_distinct_aligned_and_leave_a_whole_sample() {
        let size = 10 << 30;
        let offs = sample_offsets(size, 512);
        assert_eq!(offs.len(), 10);
        assert_eq!(offs[0], 0);
        assert!(offs
            .iter()
            .all(|o| o % 512 == 0 && o + SAMPLE as u64 <= size));
        assert!(offs.windows(2).all(|w| w[0] < w[1]));
        // A small device gives fewer distinct positions, never duplicates.
        let small = sample_offsets(SAMPLE as u64 + 8192, 4096);
        assert_eq!(small, vec![0, 4096]);
        assert!(sample_offsets(SAMPLE as u64, 512).is_empty());
        assert_eq!(sample_offsets(64 << 20, 0)[1] % DEFAULT_ALIGNMENT, 0);
    }

    #[test]
    fn no_discard_support_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        std::fs::write(&path, vec![7u8; 4 << 20]).unwrap();
        assert!(matches!(
            erase(&path, 0, 512),
            Err(DiscardError::Unsupported)
        ));
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b == 7));
    }

    /// A loop device over a sparse file: it discards by punching holes, so
    /// a verified discard erase must succeed and leave only zeros. (Needs
    /// root and loop devices, as the integration tests do.)
    #[test]
    fn a_loop_device_is_erased_by_a_verified_discard() {
        struct Loop(String);
        impl Drop for Loop {
            fn drop(&mut self) {
                let _ = std::process::Command::new("losetup")
                    .args(["-d", &self.0])
                    .status();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("disk");
        std::fs::write(&backing, vec![0x5au8; 48 << 20]).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let name = dev.0.trim_start_matches("/dev/").to_string();
        let max = max_bytes(Path::new("/sys"), &name);
        assert!(max > 0, "loop devices discard");
        let samples = erase(Path::new(&dev.0), max, 512).unwrap();
        assert_eq!(samples, 10);
        let data = std::fs::read(&dev.0).unwrap();
        assert!(data.iter().all(|b| *b == 0), "data left after the discard");
    }

    #[test]
    fn max_bytes_reads_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("block/sdb/queue");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("discard_max_bytes"), "2147450880\n").unwrap();
        assert_eq!(max_bytes(dir.path(), "sdb"), 2_147_450_880);
        assert_eq!(max_bytes(dir.path(), "sdc"), 0);
    }
}
