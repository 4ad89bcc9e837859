//! The Sanitize Status log page (Get Log Page, LID 81h; NVMe Base
//! Specification 2.0, figure 287): how far the sanitize is and how long
//! the controller expects each kind to take.

use std::time::Duration;

use super::admin::{Admin, Command};
use super::NvmeError;

const GET_LOG_PAGE: u8 = 0x02;
const LID_SANITIZE_STATUS: u32 = 0x81;
const LOG_LEN: usize = 512;
/// Retain Asynchronous Event (CDW10 bit 15): reading the page leaves the
/// sanitize-completed event to whoever else watches for it.
const RAE: u32 = 1 << 15;
const TIMEOUT: Duration = Duration::from_secs(30);
/// An estimated time of all ones: the controller gives no estimate.
const NO_ESTIMATE: u32 = u32::MAX;

/// Sanitize Status (SSTAT bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Never,
    Completed,
    InProgress,
    Failed,
    /// Completed, with deallocation after sanitize inhibited.
    CompletedNoDeallocate,
    Reserved(u8),
}

impl Status {
    fn from_sstat(sstat: u16) -> Self {
        match (sstat & 0x7) as u8 {
            0 => Self::Never,
            1 => Self::Completed,
            2 => Self::InProgress,
            3 => Self::Failed,
            4 => Self::CompletedNoDeallocate,
            other => Self::Reserved(other),
        }
    }

    pub fn sstat(self) -> u8 {
        match self {
            Self::Never => 0,
            Self::Completed => 1,
            Self::InProgress => 2,
            Self::Failed => 3,
            Self::CompletedNoDeallocate => 4,
            Self::Reserved(v) => v,
        }
    }
}

/// The fields the erase follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanitizeLog {
    /// SPROG: progress of the running sanitize, in 65536ths.
    pub progress: u16,
    pub status: Status,
    /// SCDW10: Command Dword 10 of the sanitize the status is about.
    pub cdw10: u32,
    /// ETO, ETBE, ETCE: estimated seconds for an overwrite, a block erase
    /// and a crypto erase (with deallocation); `None` when not estimated.
    pub overwrite_time: Option<Duration>,
    pub block_erase_time: Option<Duration>,
    pub crypto_erase_time: Option<Duration>,
}

impl SanitizeLog {
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if data.len() < 20 {
            return Err(format!(
                "Sanitize Status log page of {} bytes, expected {LOG_LEN}",
                data.len()
            ));
        }
        let u16_at = |at: usize| u16::from_le_bytes([data[at], data[at + 1]]);
        let u32_at =
            |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let estimate = |at: usize| {
            let secs = u32_at(at);
            (secs != NO_ESTIMATE).then(|| Duration::from_secs(u64::from(secs)))
        };
        Ok(Self {
            progress: u16_at(0),
            status: Status::from_sstat(u16_at(2)),
            cdw10: u32_at(4),
            overwrite_time: estimate(8),
            block_erase_time: estimate(12),
            crypto_erase_time: estimate(16),
        })
    }

    /// SPROG as a percentage (65535 is the last step before done).
    pub fn percent(&self) -> u32 {
        u32::from(self.progress) * 100 / 65536
    }
}

/// Command Dword 10 of Get Log Page for the whole page: LID 7:0, RAE 15,
/// NUMDL 31:16 (dwords, zero-based).
pub fn get_log_page_cdw10() -> u32 {
    LID_SANITIZE_STATUS | RAE | ((LOG_LEN / 4 - 1) as u32) << 16
}

pub fn read(dev: &mut dyn Admin) -> Result<SanitizeLog, NvmeError> {
    let mut data = [0u8; LOG_LEN];
    let cmd = Command {
        opcode: GET_LOG_PAGE,
        // The page is about the NVM subsystem, not a namespace.
        nsid: u32::MAX,
        cdw10: get_log_page_cdw10(),
        ..Command::default()
    };
    dev.submit("Get Log Page (Sanitize Status)", &cmd, &mut data, TIMEOUT)?;
    SanitizeLog::parse(&data).map_err(|reason| NvmeError::Identify {
        path: dev.path().to_path_buf(),
        reason,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A page as a controller lays it out.
    pub fn page(sprog: u16, sstat: u16, scdw10: u32, eto: u32, etbe: u32, etce: u32) -> Vec<u8> {
        let mut d = vec![0u8; LOG_LEN];
        d[0..2].copy_from_slice(&sprog.to_le_bytes());
        d[2..4].copy_from_slice(&sstat.to_le_bytes());
        d[4..8].copy_from_slice(&scdw10.to_le_bytes());
        d[8..12].copy_from_slice(&eto.to_le_bytes());
        d[12..16].copy_from_slice(&etbe.to_le_bytes());
        d[16..20].copy_from_slice(&etce.to_le_bytes());
        // The no-deallocate estimates must not be mistaken for these.
        d[20..32].fill(0x77);
        d
    }

    #[test]
    fn fields_come_from_their_offsets() {
        // SSTAT 0x0102: global data erased (bit 8), in progress.
        let log =
            SanitizeLog::parse(&page(0x8000, 0x0102, 0x0000_0204, 7200, u32::MAX, 3)).unwrap();
        assert_eq!(log.status, Status::InProgress);
        assert_eq!(log.percent(), 50);
        assert_eq!(log.cdw10, 0x204);
        assert_eq!(log.overwrite_time, Some(Duration::from_secs(7200)));
        assert_eq!(log.block_erase_time, None);
        assert_eq!(log.crypto_erase_time, Some(Duration::from_secs(3)));
        for (sstat, status) in [
            (0, Status::Never),
            (1, Status::Completed),
            (3, Status::Failed),
            (4, Status::CompletedNoDeallocate),
            (0xfd, Status::Reserved(5)),
        ] {
            let log = SanitizeLog::parse(&page(0, sstat, 0, 0, 0, 0)).unwrap();
            assert_eq!(log.status, status);
            assert_eq!(log.status.sstat(), (sstat & 7) as u8);
        }
        assert_eq!(
            SanitizeLog::parse(&page(0xffff, 2, 0, 0, 0, 0))
                .unwrap()
                .percent(),
            99
        );
        assert!(SanitizeLog::parse(&[0u8; 8]).is_err());
    }

    #[test]
    fn get_log_page_asks_for_the_whole_sanitize_page() {
        // LID 81h, RAE, NUMDL = 128 dwords - 1.
        assert_eq!(get_log_page_cdw10(), 0x007f_8081);
    }
}
