//! `NVME_IOCTL_ADMIN_CMD` (`<linux/nvme_ioctl.h>`): admin commands through
//! the kernel's driver, on the namespace's block device.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

use super::format::{self, FormatPlan};
use super::identify::{Controller, Namespace};
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

const IDENTIFY: u8 = 0x06;
const CNS_NAMESPACE: u32 = 0x00;
const CNS_CONTROLLER: u32 = 0x01;
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// The namespace id behind a namespace block device.
pub fn namespace_id(f: &File) -> std::io::Result<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument and returns the id.
    let id = unsafe { libc::ioctl(f.as_raw_fd(), NVME_IOCTL_ID, 0) };
    if id < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(id as u32)
}

pub fn identify_controller(f: &File, path: &Path) -> Result<Controller, NvmeError> {
    let data = identify(f, path, 0, CNS_CONTROLLER, "Identify Controller")?;
    Controller::parse(&data).map_err(|reason| NvmeError::Identify {
        path: path.to_path_buf(),
        reason,
    })
}

pub fn identify_namespace(f: &File, path: &Path, nsid: u32) -> Result<Namespace, NvmeError> {
    let data = identify(f, path, nsid, CNS_NAMESPACE, "Identify Namespace")?;
    Namespace::parse(&data).map_err(|reason| NvmeError::Identify {
        path: path.to_path_buf(),
        reason,
    })
}

fn identify(
    f: &File,
    path: &Path,
    nsid: u32,
    cns: u32,
    command: &'static str,
) -> Result<Vec<u8>, NvmeError> {
    let mut data = vec![0u8; 4096];
    let mut cmd = AdminCommand {
        opcode: IDENTIFY,
        nsid,
        addr: data.as_mut_ptr() as u64,
        data_len: data.len() as u32,
        cdw10: cns,
        timeout_ms: IDENTIFY_TIMEOUT.as_millis() as u32,
        ..AdminCommand::default()
    };
    submit(f, path, &mut cmd, command)?;
    Ok(data)
}

/// Format NVM as planned; returns when the controller has finished.
pub fn format(
    f: &File,
    path: &Path,
    plan: &FormatPlan,
    timeout: Duration,
) -> Result<(), NvmeError> {
    let mut cmd = AdminCommand {
        opcode: format::OPCODE,
        nsid: plan.nsid,
        cdw10: plan.cdw10(),
        timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
        ..AdminCommand::default()
    };
    submit(f, path, &mut cmd, "Format NVM")
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
    }

    #[test]
    fn a_file_that_is_not_nvme_is_an_io_error_not_a_crash() {
        let f = tempfile::tempfile().unwrap();
        assert!(namespace_id(&f).is_err());
        let e = identify_controller(&f, Path::new("/tmp/x")).unwrap_err();
        assert!(e.to_string().contains("Identify Controller"), "{e}");
    }
}
