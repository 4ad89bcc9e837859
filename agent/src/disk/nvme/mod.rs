//! NVMe secure erase through the kernel's admin passthrough, as IPA does
//! with `nvme id-ctrl` and `nvme format -s <ses>`: a cryptographic erase
//! (SES=2) where the controller's FNA says it has one, else a user-data
//! erase (SES=1), keeping the namespace's LBA format and protection
//! information. No nvme-cli in the ramdisk.

mod format;
mod identify;
mod passthru;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use format::{FormatPlan, SecureErase};
pub use identify::{Controller, Namespace};

/// How long the controller may take to format, as nvme-cli's default.
pub const FORMAT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{}: {command} failed with NVMe status {status:#06x} ({meaning})", path.display())]
    Status {
        path: PathBuf,
        command: &'static str,
        status: u16,
        meaning: &'static str,
    },
    #[error("{}: the controller does not support Format NVM (OACS {oacs:#06x})", path.display())]
    FormatUnsupported { path: PathBuf, oacs: u16 },
    #[error("{}: {reason}", path.display())]
    Identify { path: PathBuf, reason: String },
}

/// A whole NVMe namespace by its block device name (`nvme0n1`), as IPA's
/// `_is_nvme` decides by the `/dev/nvme` prefix.
pub fn is_nvme(name: &str) -> bool {
    name.starts_with("nvme")
}

/// What the controller and namespace behind `path` are, and the format
/// that would erase it; nothing is changed.
pub fn inspect(path: &Path) -> Result<(Controller, Namespace, FormatPlan), NvmeError> {
    let f = open(path, false)?;
    let nsid = passthru::namespace_id(&f).map_err(io_err(path, "reading the namespace id"))?;
    let ctrl = passthru::identify_controller(&f, path)?;
    let ns = passthru::identify_namespace(&f, path, nsid)?;
    let plan =
        FormatPlan::for_erase(&ctrl, &ns, nsid).ok_or_else(|| NvmeError::FormatUnsupported {
            path: path.to_path_buf(),
            oacs: ctrl.oacs,
        })?;
    Ok((ctrl, ns, plan))
}

/// Erase the namespace with Format NVM; returns the erase that ran.
pub fn secure_erase(path: &Path) -> Result<SecureErase, NvmeError> {
    let (ctrl, _ns, plan) = inspect(path)?;
    let f = open(path, true)?;
    tracing::info!(device = %path.display(), model = %ctrl.model, ses = ?plan.ses,
                   nsid = plan.nsid, "NVMe Format NVM");
    passthru::format(&f, path, &plan, FORMAT_TIMEOUT)?;
    // The namespace may have a new capacity or block size, and certainly
    // no partitions: let the kernel see it.
    if let Err(e) = crate::disk::ioctl::reread_partitions(&f) {
        tracing::debug!(device = %path.display(), error = %e, "re-reading partitions after format");
    }
    Ok(plan.ses)
}

fn open(path: &Path, exclusive: bool) -> Result<File, NvmeError> {
    let mut o = OpenOptions::new();
    o.read(true);
    if exclusive {
        // Nobody else may hold the namespace open while it is formatted.
        o.write(true).custom_flags(libc::O_EXCL);
    }
    o.open(path).map_err(io_err(path, "opening"))
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> NvmeError + 'a {
    move |source| NvmeError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}
