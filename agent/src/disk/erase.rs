//! `erase_devices` / `erase_devices_express`: whole-disk erasure. Where the
//! device offloads WRITE ZEROES (a non-zero `queue/write_zeroes_max_bytes`)
//! one `BLKZEROOUT` clears it; otherwise IPA's overwrite passes
//! (`agent_erase_devices_iterations` random passes, then zeros when
//! `agent_erase_devices_zeroize`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::ioctl;

const PASS_CHUNK: usize = 4 << 20;

/// How a device was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    WriteZeroes,
    Overwrite { random_passes: u32, zeroed: bool },
}

/// IPA's tunables, from the node's `driver_internal_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    pub iterations: u32,
    pub zeroize: bool,
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            iterations: 1,
            zeroize: true,
        }
    }
}

/// The device's queue says WRITE ZEROES is offloaded (and so guaranteed).
pub fn write_zeroes_supported(sysfs: &Path, name: &str) -> bool {
    std::fs::read_to_string(
        sysfs
            .join("block")
            .join(name)
            .join("queue/write_zeroes_max_bytes"),
    )
    .ok()
    .and_then(|s| s.trim().parse::<u64>().ok())
    .is_some_and(|n| n > 0)
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
}

/// Erase a whole disk. `write_zeroes` comes from [`write_zeroes_supported`].
pub fn erase_device(path: &Path, write_zeroes: bool, tunables: Tunables) -> io::Result<Method> {
    let f = open(path)?;
    let size = ioctl::device_size(&f)?;
    if write_zeroes {
        ioctl::zero_out(&f, 0, size)?;
        f.sync_all()?;
        return Ok(Method::WriteZeroes);
    }
    overwrite(&f, size, tunables)
}

/// Overwrite passes on any writable file or device of `size` bytes.
pub fn overwrite(f: &File, size: u64, tunables: Tunables) -> io::Result<Method> {
    let mut buf = vec![0u8; PASS_CHUNK];
    for pass in 0..tunables.iterations {
        // A fresh xorshift stream per pass: not crypto, as shred's default is not either.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (u64::from(pass) + 1) ^ size;
        let mut off = 0u64;
        while off < size {
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            let n = (size - off).min(PASS_CHUNK as u64) as usize;
            f.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        f.sync_data()?;
    }
    if tunables.zeroize {
        buf.fill(0);
        let mut off = 0u64;
        while off < size {
            let n = (size - off).min(PASS_CHUNK as u64) as usize;
            f.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        f.sync_data()?;
    }
    Ok(Method::Overwrite {
        random_passes: tunables.iterations,
        zeroed: tunables.zeroize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_passes_end_in_zeros_or_noise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let size = (PASS_CHUNK as u64) * 2 + 4096;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all_at(&vec![0xab; size as usize], 0).unwrap();
        let m = overwrite(
            &f,
            size,
            Tunables {
                iterations: 2,
                zeroize: true,
            },
        )
        .unwrap();
        assert_eq!(
            m,
            Method::Overwrite {
                random_passes: 2,
                zeroed: true
            }
        );
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b == 0));
        overwrite(
            &f,
            size,
            Tunables {
                iterations: 1,
                zeroize: false,
            },
        )
        .unwrap();
        let data = std::fs::read(&path).unwrap();
        assert!(
            data.iter().filter(|b| **b == 0xab).count() < data.len() / 100,
            "old data left"
        );
        assert!(
            data.iter().filter(|b| **b == 0).count() < data.len() / 100,
            "random pass left zeros"
        );
    }
}
