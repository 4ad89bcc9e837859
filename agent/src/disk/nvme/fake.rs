//! A scripted NVMe controller behind the [`Admin`] trait, with a Sanitize
//! that runs for a given number of status reads: what QEMU's `nvme`
//! device cannot show. And a clock that only moves when slept on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::admin::{Admin, Command};
use super::sanitize::Clock;
use super::sanitize_log::tests::page;
use super::NvmeError;

/// How the controller's next sanitize ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// After this many status reads in progress, with SSTAT 1.
    Succeeds(u16),
    /// After this many status reads in progress, with SSTAT 3.
    Fails(u16),
    Never,
}

pub struct Controller {
    pub path: PathBuf,
    pub oacs: u16,
    pub fna: u8,
    pub sanicap: u32,
    pub active_namespaces: Vec<u32>,
    pub ending: Ending,
    /// ETO, ETBE, ETCE as the log page gives them.
    pub estimates: [u32; 3],
    /// The sanitize status as the agent finds it: SPROG, SSTAT, SCDW10.
    pub sprog: u16,
    pub sstat: u16,
    pub scdw10: u32,
    reads_left: u16,
    reads_total: u16,
    pub sent: Vec<Command>,
}

impl Controller {
    pub fn new(sanicap: u32) -> Self {
        Self {
            path: PathBuf::from("/dev/nvme0n1"),
            oacs: 0x02,
            fna: 0x04,
            sanicap,
            active_namespaces: vec![1],
            ending: Ending::Succeeds(3),
            estimates: [u32::MAX; 3],
            sprog: 0,
            sstat: 0,
            scdw10: 0,
            reads_left: 0,
            reads_total: 0,
            sent: Vec::new(),
        }
    }

    /// A sanitize with CDW10 `cdw10` found running, for `reads` more
    /// status reads.
    pub fn already_running(&mut self, cdw10: u32, reads: u16) {
        self.scdw10 = cdw10;
        self.sstat = 2;
        self.reads_left = reads;
        self.reads_total = reads * 2;
    }

    /// The opcodes sent, in order.
    pub fn opcodes(&self) -> Vec<u8> {
        self.sent.iter().map(|c| c.opcode).collect()
    }

    /// The Sanitize commands' CDW10s, in order.
    pub fn sanitizes(&self) -> Vec<u32> {
        self.sent
            .iter()
            .filter(|c| c.opcode == 0x84)
            .map(|c| c.cdw10)
            .collect()
    }

    fn identify(&self, cmd: &Command, data: &mut [u8]) {
        match cmd.cdw10 {
            0x01 => {
                data[24..33].copy_from_slice(b"Fake NVMe");
                data[256..258].copy_from_slice(&self.oacs.to_le_bytes());
                data[328..332].copy_from_slice(&self.sanicap.to_le_bytes());
                data[516..520].copy_from_slice(&32u32.to_le_bytes());
                data[524] = self.fna;
            }
            0x02 => {
                for (i, id) in self.active_namespaces.iter().enumerate() {
                    data[4 * i..4 * i + 4].copy_from_slice(&id.to_le_bytes());
                }
            }
            // One 512-byte LBA format, in use.
            _ => {
                data[0..8].copy_from_slice(&(1u64 << 21).to_le_bytes());
                data[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
            }
        }
    }

    fn sanitize(&mut self, cmd: &Command) -> Result<(), NvmeError> {
        if self.sstat & 7 == 2 {
            return Err(NvmeError::Status {
                path: self.path.clone(),
                command: "Sanitize",
                status: 0x1d,
                meaning: "sanitize in progress",
            });
        }
        if cmd.cdw10 & 7 == 1 {
            // Exit Failure Mode: media accessible again, SSTAT unchanged.
            return Ok(());
        }
        self.scdw10 = cmd.cdw10;
        self.sstat = 2;
        self.sprog = 0;
        (self.reads_left, self.reads_total) = match self.ending {
            Ending::Succeeds(n) | Ending::Fails(n) => (n, n.max(1)),
            Ending::Never => (u16::MAX, u16::MAX),
        };
        Ok(())
    }

    fn log_page(&mut self, data: &mut [u8]) {
        if self.sstat & 7 == 2 {
            if self.reads_left == 0 {
                self.sstat = match self.ending {
                    Ending::Fails(_) => 3,
                    _ => 1,
                };
                self.sprog = 0xffff;
            } else if self.ending != Ending::Never {
                self.reads_left -= 1;
                let done = u32::from(self.reads_total - self.reads_left);
                self.sprog = (done * 0xffff / u32::from(self.reads_total)) as u16;
            }
        }
        let [eto, etbe, etce] = self.estimates;
        let p = page(self.sprog, self.sstat, self.scdw10, eto, etbe, etce);
        data.copy_from_slice(&p[..data.len()]);
    }
}

impl Admin for Controller {
    fn path(&self) -> &Path {
        &self.path
    }

    fn submit(
        &mut self,
        _what: &'static str,
        cmd: &Command,
        data: &mut [u8],
        _timeout: Duration,
    ) -> Result<(), NvmeError> {
        self.sent.push(*cmd);
        match cmd.opcode {
            0x06 => self.identify(cmd, data),
            0x02 => self.log_page(data),
            0x84 => self.sanitize(cmd)?,
            0x80 => {}
            _ => {
                return Err(NvmeError::Status {
                    path: self.path.clone(),
                    command: "unknown",
                    status: 0x001,
                    meaning: "invalid command opcode",
                })
            }
        }
        Ok(())
    }
}

/// Time that passes only when slept.
#[derive(Default)]
pub struct FakeClock {
    pub now: Duration,
    pub sleeps: Vec<Duration>,
}

impl Clock for FakeClock {
    fn elapsed(&self) -> Duration {
        self.now
    }
    fn sleep(&mut self, d: Duration) {
        self.sleeps.push(d);
        self.now += d;
    }
}
