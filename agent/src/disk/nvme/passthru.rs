//! `NVME_IOCTL_ADMIN_CMD` (`<linux/nvme_ioctl.h>`): admin commands through
//! the kernel's driver, on the namespace's block device.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

use super::admin::{Admin, Command};
use super::NvmeError;

/// `struct nvme_passthru_cmd` (72 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct AdminCommand {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

const _: () = assert!(std::mem::size_of::<AdminCommand>() == 72);

/// `_IOWR('N', 0x41, struct nvme_admin_cmd)`.
const NVME_IOCTL_ADMIN_CMD: libc::Ioctl = 0xc048_4e41_u32 as libc::Ioctl;
/// `_IO('N', 0x40)`: the namespace id of a namespace block device.
const NVME_IOCTL_ID: libc::Ioctl = 0x4e40;

/// The namespace id behind a namespace block device.
pub fn namespace_id(f: &File) -> std::io::Result<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument and returns the id.
    let id = unsafe { libc::ioctl(f.as_raw_fd(), NVME_IOCTL_ID, 0) };
    if id < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(id as u32)
}

/// Admin commands through the namespace block device `file`.
pub struct Ioctl<'a> {
    pub file: &'a File,
    pub path: &'a Path,
}

impl Admin for Ioctl<'_> {
    fn path(&self) -> &Path {
        self.path
    }

    fn submit(
        &mut self,
        what: &'static str,
        cmd: &Command,
        data: &mut [u8],
        timeout: Duration,
    ) -> Result<(), NvmeError> {
        let data_len = u32::try_from(data.len()).map_err(|_| NvmeError::Io {
            path: self.path.to_path_buf(),
            what,
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        let mut raw = AdminCommand {
            opcode: cmd.opcode,
            nsid: cmd.nsid,
            addr: if data.is_empty() {
                0
            } else {
                data.as_mut_ptr() as u64
            },
            data_len,
            cdw10: cmd.cdw10,
            cdw11: cmd.cdw11,
            cdw12: cmd.cdw12,
            cdw13: cmd.cdw13,
            cdw14: cmd.cdw14,
            cdw15: cmd.cdw15,
            timeout_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            ..AdminCommand::default()
        };
        submit(self.file, self.path, &mut raw, what)
    }
}

fn submit(
    f: &File,
    path: &Path,
    cmd: &mut AdminCommand,
    command: &'static str,
) -> Result<(), NvmeError> {
    // SAFETY: the kernel reads the 72-byte command and, for a data
    // transfer, writes at most `data_len` bytes at `addr`, which the caller
    // keeps alive and at least that long for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            NVME_IOCTL_ADMIN_CMD,
            cmd as *mut AdminCommand,
        )
    };
    match rc {
        0 => Ok(()),
        rc if rc < 0 => Err(NvmeError::Io {
            path: path.to_path_buf(),
            what: command,
            source: std::io::Error::last_os_error(),
        }),
        status => {
            let status = (status & 0x7ff) as u16;
            Err(NvmeError::Status {
                path: path.to_path_buf(),
                command,
                status,
                meaning: status_meaning(status),
            })
        }
    }
}

/// The statuses an erase meets (Status Code Type in bits 10:8, code in 7:0).
pub fn status_meaning(status: u16) -> &'static str {
    match status & 0x7ff {
        0x001 => "invalid command opcode",
        0x002 => "invalid field in command",
        0x00b => "invalid namespace or format",
        0x01c => "sanitize failed",
        0x01d => "sanitize in progress",
        0x020 => "namespace is write protected",
        0x10a => "invalid format",
        0x123 => "sanitize prohibited while persistent memory region is enabled",
        0x180..=0x1ff => "command specific error",
        0x280..=0x2ff => "media or data integrity error",
        _ => "see the NVMe status code tables",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
        let iowr = |ty: u8, nr: u8, size: usize| -> u32 {
            3 << 30 | (size as u32) << 16 | u32::from(ty) << 8 | u32::from(nr)
        };
        assert_eq!(
            NVME_IOCTL_ADMIN_CMD as u32,
            iowr(b'N', 0x41, std::mem::size_of::<AdminCommand>())
        );
        assert_eq!(NVME_IOCTL_ID as u32, u32::from(b'N') << 8 | 0x40);
    }

    #[test]
    fn statuses_are_named() {
        assert_eq!(status_meaning(0x10a), "invalid format");
        assert_eq!(status_meaning(0x4002), "invalid field in command");
        // Generic 1Ch/1Dh/20h and command specific 23h (NVMe 2.0 figures 101, 103).
        assert_eq!(status_meaning(0x01c), "sanitize failed");
        assert_eq!(status_meaning(0x020), "namespace is write protected");
        assert!(status_meaning(0x123).starts_with("sanitize prohibited"));
    }

    #[test]
    fn a_file_that_is_not_nvme_is_an_io_error_not_a_crash() {
        let f = tempfile::tempfile().unwrap();
        assert!(namespace_id(&f).is_err());
        let mut dev = Ioctl {
            file: &f,
            path: Path::new("/tmp/x"),
        };
        let e = super::super::identify::controller(&mut dev).unwrap_err();
        assert!(e.to_string().contains("Identify Controller"), "{e}");
    }
}
