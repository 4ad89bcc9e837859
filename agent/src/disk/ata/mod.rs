//! ATA Security Erase through SG_IO ATA PASS-THROUGH, as IPA does it with
//! `hdparm` (no hdparm or smartctl in the ramdisk).

mod cdb;
mod identify;
mod security;
mod sgio;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub use identify::{Identify, Security};
pub use security::Outcome;
pub use sgio::Transport;

#[derive(Debug, thiserror::Error)]
pub enum AtaError {
    #[error("SG_IO: {0}")]
    Transport(#[source] std::io::Error),
    #[error("the device does not take ATA commands")]
    NotAta,
    #[error("the host adapter reported status {0:#x}")]
    Host(u16),
    #[error("SCSI status {0:#x}")]
    Status(u8),
    #[error("the drive aborted the command (sense key {sense_key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}, ATA error {ata_error:?}, status {ata_status:?})")]
    Aborted {
        sense_key: u8,
        asc: u8,
        ascq: u8,
        ata_error: Option<u8>,
        ata_status: Option<u8>,
    },
    /// IPA's words.
    #[error("the block device is frozen and cannot be erased")]
    Frozen,
    #[error("the block device already has a security password set")]
    PasswordSet,
    #[error("{0}: {1}")]
    Step(&'static str, #[source] Box<AtaError>),
    #[error("an unknown error occurred: security is still enabled after the erase")]
    StillEnabled,
}

/// IPA's `_ata_erase` on the disk at `path`.
pub fn secure_erase(path: &Path) -> Result<Outcome, AtaError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_NONBLOCK)
        .open(path)
        .map_err(AtaError::Transport)?;
    security::secure_erase(&mut sgio::SgIo { file: &file })
}
