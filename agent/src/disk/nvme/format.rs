//! The Format NVM command (admin opcode 80h) that erases a namespace.

use std::time::Duration;

use super::admin::{Admin, Command};
use super::identify::{Controller, Namespace};
use super::NvmeError;

pub const OPCODE: u8 = 0x80;

/// Format NVM as planned; returns when the controller has finished.
pub fn run(dev: &mut dyn Admin, plan: &FormatPlan, timeout: Duration) -> Result<(), NvmeError> {
    let cmd = Command {
        opcode: OPCODE,
        nsid: plan.nsid,
        cdw10: plan.cdw10(),
        ..Command::default()
    };
    dev.submit("Format NVM", &cmd, &mut [], timeout)
}

/// Secure Erase Settings (Format NVM CDW10 bits 11:9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureErase {
    /// Every user data block erased (SES=1).
    UserData = 1,
    /// The media encryption key replaced (SES=2): seconds, whatever the size.
    Crypto = 2,
}

impl SecureErase {
    /// The name in a step's result.
    pub fn name(self) -> &'static str {
        match self {
            Self::UserData => "nvme_format_user_data_erase",
            Self::Crypto => "nvme_format_crypto_erase",
        }
    }
}

/// A Format NVM that keeps the namespace as it is (LBA format, metadata,
/// protection information) and erases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatPlan {
    pub nsid: u32,
    pub ses: SecureErase,
    pub lba_format: u8,
    pub extended_metadata: bool,
    pub pi_type: u8,
    pub pi_first: bool,
}

impl FormatPlan {
    /// IPA's choice: nothing without Format NVM support (OACS bit 1), a
    /// crypto erase when FNA bit 2 offers one, else a user-data erase.
    pub fn for_erase(ctrl: &Controller, ns: &Namespace, nsid: u32) -> Option<Self> {
        if !ctrl.supports_format() {
            return None;
        }
        let ses = if ctrl.supports_crypto_erase() {
            SecureErase::Crypto
        } else {
            SecureErase::UserData
        };
        Some(Self {
            nsid,
            ses,
            lba_format: ns.lba_format,
            extended_metadata: ns.extended_metadata,
            pi_type: ns.pi_type,
            pi_first: ns.pi_first,
        })
    }

    /// Command Dword 10: LBAFL 3:0, MSET 4, PI 7:5, PIL 8, SES 11:9, LBAFU 13:12.
    pub fn cdw10(&self) -> u32 {
        let lbaf = u32::from(self.lba_format);
        (lbaf & 0x0f)
            | u32::from(self.extended_metadata) << 4
            | (u32::from(self.pi_type) & 0x07) << 5
            | u32::from(self.pi_first) << 8
            | (self.ses as u32) << 9
            | ((lbaf >> 4) & 0x03) << 12
    }
}

#[cfg(test)]
mod tests {
    use super::super::identify::Sanicap;
    use super::*;

    fn ctrl(oacs: u16, fna: u8) -> Controller {
        Controller {
            serial: String::new(),
            model: String::new(),
            oacs,
            fna,
            sanicap: Sanicap(0),
            nn: 1,
        }
    }

    fn ns(lba_format: u8) -> Namespace {
        Namespace {
            nsze: 1 << 21,
            lba_format,
            extended_metadata: false,
            pi_type: 0,
            pi_first: false,
            block_size: 512,
        }
    }

    #[test]
    fn crypto_erase_when_offered_else_user_data_else_nothing() {
        let p = FormatPlan::for_erase(&ctrl(0x02, 0x04), &ns(0), 1).unwrap();
        assert_eq!(p.ses, SecureErase::Crypto);
        assert_eq!(p.cdw10(), 2 << 9);
        let p = FormatPlan::for_erase(&ctrl(0x02, 0x03), &ns(0), 1).unwrap();
        assert_eq!(p.ses, SecureErase::UserData);
        assert_eq!(p.cdw10(), 1 << 9);
        assert!(FormatPlan::for_erase(&ctrl(0x0c, 0x04), &ns(0), 1).is_none());
    }

    #[test]
    fn the_namespace_keeps_its_format_and_protection() {
        let mut n = ns(0x13);
        n.extended_metadata = true;
        n.pi_type = 3;
        n.pi_first = true;
        let p = FormatPlan::for_erase(&ctrl(0x02, 0), &n, 7).unwrap();
        // LBAF 0x13: low nibble 3, high bits 1 -> bit 12.
        assert_eq!(p.cdw10(), 0x3 | 1 << 4 | 3 << 5 | 1 << 8 | 1 << 9 | 1 << 12);
        assert_eq!(p.nsid, 7);
    }
}
