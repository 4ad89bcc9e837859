//! `erase_devices` / `erase_devices_express`: whole-disk erasure with
//! IPA's semantics (`erase_block_device`). An NVMe namespace is erased by
//! the controller (Format NVM, crypto erase where offered; Sanitize when
//! the operator opts in with `ferrite-nvme-sanitize`), an ATA drive
//! with the security feature set by SECURITY ERASE UNIT; when that fails
//! the disk may be erased by a verified discard when Ironic or the kernel
//! command line enable it (`agent_enable_discard_erase`,
//! `ipa-enable-discard-erase`), and is only shredded if Ironic allows it
//! (`agent_continue_if_secure_erase_failed`). Shredding is IPA's:
//! `agent_erase_devices_iterations` random passes, then zeros when
//! `agent_erase_devices_zeroize`, and only that zero pass is offloaded to
//! the device when it does WRITE ZEROES (`queue/write_zeroes_max_bytes`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::ata;
use super::discard;
use super::ioctl;
use super::nvme::{self, SanitizeAction, SanitizePreference, SecureErase};
use super::BlockDevice;

const PASS_CHUNK: usize = 4 << 20;

/// How a device was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The NVMe controller erased the namespace.
    NvmeFormat(SecureErase),
    /// The NVMe controller sanitized the whole subsystem.
    NvmeSanitize(SanitizeAction),
    /// The ATA drive ran SECURITY ERASE UNIT.
    AtaSecureErase { enhanced: bool },
    /// Discarded, and `samples` sampled positions read back as zeros.
    Discarded { samples: usize },
    /// Random passes, then (unless `zeroes` is `None`) zeros.
    Shred {
        random_passes: u32,
        zeroes: Option<Zeroes>,
    },
}

/// How the final zero pass was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zeroes {
    /// One `BLKZEROOUT`, carried out by the device.
    Offloaded,
    /// Written block by block.
    Written,
}

/// IPA's shred tunables, from the node's `driver_internal_info`.
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

/// What Ironic says about erasing, read once per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub tunables: Tunables,
    /// `agent_enable_nvme_secure_erase` (IPA's default: true).
    pub nvme_secure_erase: bool,
    /// `ferrite-nvme-sanitize`: the NVMe Sanitize operations to try before
    /// Format NVM, in order (default: none, IPA's Format NVM).
    pub nvme_sanitize: SanitizePreference,
    /// `agent_enable_ata_secure_erase` (IPA's default: true).
    pub ata_secure_erase: bool,
    /// `agent_enable_discard_erase` (else `ipa-enable-discard-erase`; IPA's
    /// default: false): try a verified discard when the secure erase fails.
    pub discard_if_secure_erase_fails: bool,
    /// `agent_continue_if_secure_erase_failed` (or its old name
    /// `agent_continue_if_ata_erase_failed`): shred when the hardware
    /// erase fails. IPA's default: false, the step fails.
    pub shred_if_secure_erase_fails: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tunables: Tunables::default(),
            nvme_secure_erase: true,
            nvme_sanitize: SanitizePreference::default(),
            ata_secure_erase: true,
            discard_if_secure_erase_fails: false,
            shred_if_secure_erase_fails: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// IPA's words for the same case (`IncompatibleHardwareMethodError`).
    #[error("Failed to invoke secure erase, fallback to shred is not enabled: {0}")]
    SecureErase(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The device's queue says WRITE ZEROES is offloaded (and so guaranteed).
fn write_zeroes_supported(sysfs: &Path, name: &str) -> bool {
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

/// Erase the whole `disk` as IPA's `erase_block_device` does (the guards
/// are the caller's).
pub fn erase_disk(
    disk: &BlockDevice,
    sysfs: &Path,
    settings: Settings,
) -> Result<Method, EraseError> {
    erase_disk_with(disk, sysfs, settings, nvme::secure_erase)
}

/// [`erase_disk`] with the NVMe controller's erase given (a scripted
/// controller in tests).
fn erase_disk_with(
    disk: &BlockDevice,
    sysfs: &Path,
    settings: Settings,
    nvme_erase: impl FnOnce(&Path, nvme::EraseOptions) -> Result<nvme::Erased, nvme::NvmeError>,
) -> Result<Method, EraseError> {
    let (path, name) = (disk.path.as_path(), disk.name.as_str());
    let failed: Box<dyn std::error::Error + Send + Sync> = if nvme::is_nvme(name) {
        if !settings.nvme_secure_erase {
            return shred_disk(path, name, sysfs, settings);
        }
        let options = nvme::EraseOptions {
            sanitize: settings.nvme_sanitize,
            // A failed sanitize blocks media access: leave that mode only
            // when a discard or shred is to write the disk next.
            leave_failure_mode: settings.discard_if_secure_erase_fails
                || settings.shred_if_secure_erase_fails,
        };
        match nvme_erase(path, options) {
            Ok(nvme::Erased::Format(ses)) => return Ok(Method::NvmeFormat(ses)),
            Ok(nvme::Erased::Sanitize(action)) => return Ok(Method::NvmeSanitize(action)),
            Err(e) => Box::new(e),
        }
    } else {
        if !settings.ata_secure_erase {
            return shred_disk(path, name, sysfs, settings);
        }
        match ata::secure_erase(path) {
            Ok(ata::Outcome::Erased { enhanced }) => {
                return Ok(Method::AtaSecureErase { enhanced })
            }
            // No security feature set: IPA shreds, whatever the settings.
            Ok(ata::Outcome::Unsupported) => return shred_disk(path, name, sysfs, settings),
            Err(e) => Box::new(e),
        }
    };
    if settings.discard_if_secure_erase_fails {
        let max_bytes = discard::max_bytes(sysfs, name);
        match discard::erase(path, max_bytes, disk.logical_sectors) {
            Ok(samples) => {
                tracing::info!(disk = %path.display(), error = %failed,
                    "erased by discarding it because secure erase was not available");
                return Ok(Method::Discarded { samples });
            }
            Err(e) => warn!(disk = %path.display(), error = %e, "could not erase by discarding it"),
        }
    }
    if !settings.shred_if_secure_erase_fails {
        return Err(EraseError::SecureErase(failed));
    }
    warn!(disk = %path.display(), error = %failed, "secure erase failed; falling back to shred");
    shred_disk(path, name, sysfs, settings)
}

fn shred_disk(
    path: &Path,
    name: &str,
    sysfs: &Path,
    settings: Settings,
) -> Result<Method, EraseError> {
    shred(path, write_zeroes_supported(sysfs, name), settings.tunables).map_err(|source| {
        EraseError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// IPA's shred of a whole disk; `write_zeroes` from [`write_zeroes_supported`].
pub fn shred(path: &Path, write_zeroes: bool, tunables: Tunables) -> io::Result<Method> {
    let f = open(path)?;
    let size = ioctl::device_size(&f)?;
    random_passes(&f, size, tunables.iterations)?;
    let zeroes = if !tunables.zeroize {
        None
    } else if write_zeroes {
        ioctl::zero_out(&f, 0, size)?;
        f.sync_all()?;
        Some(Zeroes::Offloaded)
    } else {
        write_zeros(&f, size)?;
        Some(Zeroes::Written)
    };
    Ok(Method::Shred {
        random_passes: tunables.iterations,
        zeroes,
    })
}

/// `passes` passes of a fast pseudo-random stream over `size` bytes.
pub fn random_passes(f: &File, size: u64, passes: u32) -> io::Result<()> {
    let mut buf = vec![0u8; PASS_CHUNK];
    for pass in 0..passes {
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
    Ok(())
}

/// Zeros written over `size` bytes.
pub fn write_zeros(f: &File, size: u64) -> io::Result<()> {
    let buf = vec![0u8; PASS_CHUNK];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(PASS_CHUNK as u64) as usize;
        f.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(dir: &Path, size: u64) -> (PathBuf, File) {
        let path = dir.join("disk");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all_at(&vec![0xab; size as usize], 0).unwrap();
        (path, f)
    }

    #[test]
    fn random_passes_then_zeros_leave_only_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let size = (PASS_CHUNK as u64) * 2 + 4096;
        let (path, f) = file_of(dir.path(), size);
        random_passes(&f, size, 2).unwrap();
        write_zeros(&f, size).unwrap();
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn a_random_pass_leaves_neither_old_data_nor_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let size = (PASS_CHUNK as u64) * 2 + 4096;
        let (path, f) = file_of(dir.path(), size);
        random_passes(&f, size, 1).unwrap();
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

    fn sanitize_failed(path: &Path, left_failure_mode: bool) -> nvme::NvmeError {
        nvme::NvmeError::SanitizeFailed {
            path: path.to_path_buf(),
            sstat: 3,
            left_failure_mode,
        }
    }

    #[test]
    fn a_failed_sanitize_falls_back_as_a_failed_format_does() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _f) = file_of(dir.path(), 1 << 20);
        let sysfs = dir.path().join("sys");
        let disk = BlockDevice {
            name: "nvme0n1".into(),
            path: path.clone(),
            ..Default::default()
        };
        let opted_in = Settings {
            nvme_sanitize: SanitizePreference::parse("crypto").unwrap(),
            ..Settings::default()
        };
        // No fallback allowed: the step fails, the disk is untouched and
        // the controller is left in failure mode.
        let mut asked = None;
        let e = erase_disk_with(&disk, &sysfs, opted_in, |p, o| {
            asked = Some(o);
            Err(sanitize_failed(p, o.leave_failure_mode))
        })
        .unwrap_err();
        let o = asked.unwrap();
        assert_eq!(o.sanitize, opted_in.nvme_sanitize);
        assert!(!o.leave_failure_mode);
        assert!(e.to_string().contains("Sanitize failed (SSTAT=3)"), "{e}");
        assert!(e.to_string().contains("exit failure mode"), "{e}");
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b == 0xab));
        // agent_continue_if_secure_erase_failed: failure mode left, and on
        // to shred, which sizes the device with an ioctl a plain file
        // refuses: the error is the shred's, no longer the sanitize's.
        let shred = Settings {
            shred_if_secure_erase_fails: true,
            ..opted_in
        };
        let mut asked = None;
        let e = erase_disk_with(&disk, &sysfs, shred, |p, o| {
            asked = Some(o);
            Err(sanitize_failed(p, o.leave_failure_mode))
        })
        .unwrap_err();
        assert!(asked.unwrap().leave_failure_mode);
        assert!(matches!(e, EraseError::Io { .. }), "{e:?}");
    }

    #[test]
    fn a_sanitize_is_reported_as_such_and_off_by_default() {
        let disk = BlockDevice {
            name: "nvme0n1".into(),
            path: "/nonexistent/nvme0n1".into(),
            ..Default::default()
        };
        let m = erase_disk_with(
            &disk,
            Path::new("/nonexistent"),
            Settings::default(),
            |_, o| {
                assert!(o.sanitize.is_off(), "IPA's Format NVM unless opted in");
                Ok(nvme::Erased::Format(SecureErase::Crypto))
            },
        )
        .unwrap();
        assert_eq!(m, Method::NvmeFormat(SecureErase::Crypto));
        let m = erase_disk_with(
            &disk,
            Path::new("/nonexistent"),
            Settings::default(),
            |_, _| Ok(nvme::Erased::Sanitize(SanitizeAction::Block)),
        )
        .unwrap();
        assert_eq!(m, Method::NvmeSanitize(SanitizeAction::Block));
    }

    #[test]
    fn a_disk_named_nvme_that_is_not_refuses_shred_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _f) = file_of(dir.path(), 1 << 20);
        let sysfs = dir.path().join("sys");
        let disk = BlockDevice {
            name: "nvme0n1".into(),
            path: path.clone(),
            ..Default::default()
        };
        let e = erase_disk(&disk, &sysfs, Settings::default()).unwrap_err();
        assert!(matches!(e, EraseError::SecureErase(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("Failed to invoke secure erase, fallback to shred is not enabled"),
            "{e}"
        );
        assert!(
            std::fs::read(&path).unwrap().iter().all(|b| *b == 0xab),
            "untouched"
        );
    }
}
