//! `burnin_disk`: IPA's fio job (`--rw readwrite --bs 4k --direct 1
//! --verify crc32c --continue_on_error verify --loops N --runtime R
//! --time_based`) natively, on every disk at once. Each loop writes every
//! 4 KiB block of the disk with a self-describing pattern (its offset, the
//! loop number and a checksum) and reads it all back. A block that comes
//! back different is a verify error: counted and reported as fio's
//! `continue_on_error=verify` does, and the step fails at the end. With a
//! runtime, loops repeat until it is over, and the part of the disk written
//! in the last, cut-short loop is still verified.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// fio's `--bs 4k`: the unit of verification.
pub const BLOCK: usize = 4096;
/// Bytes per I/O: 256 blocks.
const CHUNK: usize = 1 << 20;
const MAGIC: &[u8; 8] = b"FERBURN1";
/// Header: magic, offset, loop; then the checksum of everything else.
const CRC_AT: usize = 24;
const PAYLOAD_AT: usize = 28;

/// What the operator asked for (`agent_burnin_fio_disk_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Write-and-verify passes over the whole disk (IPA: 4).
    pub loops: u64,
    /// With a runtime, passes repeat until it is over (fio's `time_based`).
    pub runtime: Option<Duration>,
}

/// One disk's result, as the output file and the log report it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DiskReport {
    pub device: String,
    /// Bytes covered by each pass (whole 4 KiB blocks).
    pub bytes_per_pass: u64,
    pub loops_completed: u64,
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub verify_errors: u64,
    pub first_bad_offset: Option<u64>,
    pub write_mib_per_s: f64,
    pub read_mib_per_s: f64,
}

/// The disk as burn-in sees it; a trait so tests can break one.
pub trait BlockDev: Sync {
    fn size(&self) -> u64;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn sync(&self) -> io::Result<()>;
}

/// A block device opened for direct I/O (the page cache would hide what
/// the disk really returns).
pub struct DirectDisk {
    file: File,
    len: u64,
}

impl DirectDisk {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_EXCL)
            .open(path)?;
        let len = crate::disk::ioctl::device_size(&file)?;
        Ok(Self { file, len })
    }
}

impl BlockDev for DirectDisk {
    fn size(&self) -> u64 {
        self.len
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// A 4096-aligned buffer without `unsafe`: a slice of a larger vector.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + BLOCK];
        let start = storage.as_ptr().align_offset(BLOCK).min(BLOCK);
        Self { storage, start }
    }
    fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.storage[self.start..self.start + len]
    }
}

/// The payload generator: xorshift64* seeded by the block's place and loop.
fn fill_block(block: &mut [u8], offset: u64, pass: u64) {
    block[..8].copy_from_slice(MAGIC);
    block[8..16].copy_from_slice(&offset.to_le_bytes());
    block[16..24].copy_from_slice(&pass.to_le_bytes());
    let mut x = (offset ^ pass.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    for word in block[PAYLOAD_AT..].chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
    let crc = checksum(block);
    block[CRC_AT..PAYLOAD_AT].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(block: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&block[..CRC_AT]);
    h.update(&block[PAYLOAD_AT..]);
    h.finalize()
}

/// Is `block` the one written at `offset` in `pass`, intact?
fn block_ok(block: &[u8], offset: u64, pass: u64) -> bool {
    block[..8] == MAGIC[..]
        && block[8..16] == offset.to_le_bytes()
        && block[16..24] == pass.to_le_bytes()
        && block[CRC_AT..PAYLOAD_AT] == checksum(block).to_le_bytes()
}

/// Burn one disk in. An I/O error ends it with that error; verify errors
/// are counted in the report.
pub fn burn(dev: &dyn BlockDev, name: &str, plan: Plan) -> Result<DiskReport, String> {
    let span = dev.size() / BLOCK as u64 * BLOCK as u64;
    let mut report = DiskReport {
        device: name.to_string(),
        bytes_per_pass: span,
        ..Default::default()
    };
    if span == 0 {
        return Ok(report);
    }
    let started = Instant::now();
    let deadline = plan.runtime.filter(|d| !d.is_zero()).map(|d| started + d);
    let over = || deadline.is_some_and(|d| Instant::now() >= d);
    let mut buf = Aligned::new(CHUNK);
    let (mut write_time, mut read_time) = (Duration::ZERO, Duration::ZERO);
    let mut pass = 0u64;
    loop {
        if deadline.is_none() && pass >= plan.loops {
            break;
        }
        if deadline.is_some() && pass > 0 && over() {
            break;
        }
        pass += 1;
        // Write the pass (up to the deadline).
        let t = Instant::now();
        let mut written = 0u64;
        while written < span && !(deadline.is_some() && over()) {
            let n = (span - written).min(CHUNK as u64) as usize;
            let chunk = buf.get(n);
            for (i, block) in chunk.chunks_mut(BLOCK).enumerate() {
                fill_block(block, written + (i * BLOCK) as u64, pass);
            }
            dev.write_at(chunk, written)
                .map_err(|e| format!("{name}: writing at offset {written}: {e}"))?;
            written += n as u64;
        }
        dev.sync().map_err(|e| format!("{name}: flushing: {e}"))?;
        write_time += t.elapsed();
        report.bytes_written += written;
        // Read it all back.
        let t = Instant::now();
        let mut read = 0u64;
        while read < written {
            let n = (written - read).min(CHUNK as u64) as usize;
            let chunk = buf.get(n);
            dev.read_at(chunk, read)
                .map_err(|e| format!("{name}: reading at offset {read}: {e}"))?;
            for (i, block) in chunk.chunks(BLOCK).enumerate() {
                let at = read + (i * BLOCK) as u64;
                if !block_ok(block, at, pass) {
                    report.verify_errors += 1;
                    report.first_bad_offset.get_or_insert(at);
                }
            }
            read += n as u64;
        }
        read_time += t.elapsed();
        report.bytes_verified += read;
        if written == span {
            report.loops_completed += 1;
        }
    }
    let rate = |bytes: u64, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            (bytes as f64 / (1 << 20) as f64 / d.as_secs_f64() * 10.0).round() / 10.0
        }
    };
    report.write_mib_per_s = rate(report.bytes_written, write_time);
    report.read_mib_per_s = rate(report.bytes_verified, read_time);
    Ok(report)
}

/// A disk's verdict in one line, for the step's error.
pub fn verdict(r: &DiskReport) -> Option<String> {
    (r.verify_errors > 0).then(|| {
        format!(
            "{}: {} blocks of 4 KiB failed verification (first at offset {})",
            r.device,
            r.verify_errors,
            r.first_bad_offset.unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Memory as a disk; `flip` corrupts one byte on every read there.
    struct MemDisk {
        data: Mutex<Vec<u8>>,
        flip: Option<u64>,
        fail_write_at: Option<u64>,
    }

    impl MemDisk {
        fn new(len: usize) -> Self {
            Self {
                data: Mutex::new(vec![0; len]),
                flip: None,
                fail_write_at: None,
            }
        }
    }

    impl BlockDev for MemDisk {
        fn size(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            if self
                .fail_write_at
                .is_some_and(|f| (offset..offset + buf.len() as u64).contains(&f))
            {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let o = offset as usize;
            self.data.lock().unwrap()[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.data.lock().unwrap()[o..o + buf.len()]);
            if let Some(f) = self.flip {
                if (offset..offset + buf.len() as u64).contains(&f) {
                    buf[(f - offset) as usize] ^= 0x40;
                }
            }
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn clean_disk_passes_every_loop() {
        // 3 MiB + 5 KiB: the partial block at the end is not covered.
        let disk = MemDisk::new((3 << 20) + 5 * 1024);
        let plan = Plan {
            loops: 2,
            runtime: None,
        };
        let r = burn(&disk, "mem", plan).unwrap();
        assert_eq!(r.bytes_per_pass, (3 << 20) + 4096);
        assert_eq!(r.loops_completed, 2);
        assert_eq!(r.bytes_written, 2 * r.bytes_per_pass);
        assert_eq!(r.bytes_verified, r.bytes_written);
        assert_eq!(r.verify_errors, 0);
        assert!(verdict(&r).is_none());
        // The second pass's pattern is what is left on the disk.
        let data = disk.data.lock().unwrap();
        assert!(block_ok(&data[4096..8192], 4096, 2));
        assert!(!block_ok(&data[4096..8192], 4096, 1));
    }

    #[test]
    fn a_flipped_bit_is_a_verify_error_and_the_pass_goes_on() {
        let mut disk = MemDisk::new(2 << 20);
        disk.flip = Some((1 << 20) + 4096 * 3 + 100);
        let plan = Plan {
            loops: 1,
            runtime: None,
        };
        let r = burn(&disk, "mem", plan).unwrap();
        assert_eq!(r.verify_errors, 1);
        assert_eq!(r.first_bad_offset, Some((1 << 20) + 4096 * 3));
        assert_eq!(r.bytes_verified, 2 << 20);
        assert_eq!(
            verdict(&r).unwrap(),
            "mem: 1 blocks of 4 KiB failed verification (first at offset 1060864)"
        );
    }

    #[test]
    fn a_write_error_ends_the_disk_with_its_offset() {
        let mut disk = MemDisk::new(2 << 20);
        disk.fail_write_at = Some(1 << 20);
        let plan = Plan {
            loops: 1,
            runtime: None,
        };
        let err = burn(&disk, "mem", plan).unwrap_err();
        assert!(err.starts_with("mem: writing at offset 1048576:"), "{err}");
    }

    #[test]
    fn runtime_repeats_loops_until_it_is_over() {
        let disk = MemDisk::new(1 << 20);
        let plan = Plan {
            loops: 1,
            runtime: Some(Duration::from_millis(300)),
        };
        let t = Instant::now();
        let r = burn(&disk, "mem", plan).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(r.loops_completed > 1, "{r:?}");
        assert_eq!(r.verify_errors, 0);
    }
}
