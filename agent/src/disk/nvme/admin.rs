//! Admin commands as the erase sends them, and the one way they reach a
//! controller: the kernel's passthrough ioctl on the real thing, a
//! scripted controller in tests (QEMU's `nvme` device has no Sanitize).

use std::path::Path;
use std::time::Duration;

use super::NvmeError;

/// The command dwords an admin command carries (NVMe Base Spec 2.0,
/// figure 88), without the data pointer the transport fills in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Command {
    pub opcode: u8,
    pub nsid: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

pub trait Admin {
    /// The device the commands go to, for errors.
    fn path(&self) -> &Path;
    /// Send `cmd` (named `what` in errors) and wait at most `timeout` for
    /// its completion; a controller-to-host transfer lands in `data`
    /// (empty: the command moves no data).
    fn submit(
        &mut self,
        what: &'static str,
        cmd: &Command,
        data: &mut [u8],
        timeout: Duration,
    ) -> Result<(), NvmeError>;
}
