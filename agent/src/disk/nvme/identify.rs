//! The Identify command and its data structures (NVMe Base Specification
//! 2.0, figures 275 and 280): only the fields an erase decides by.

use std::time::Duration;

use super::admin::{Admin, Command};
use super::NvmeError;

const OPCODE: u8 = 0x06;
const CNS_NAMESPACE: u32 = 0x00;
const CNS_CONTROLLER: u32 = 0x01;
const CNS_ACTIVE_NAMESPACES: u32 = 0x02;
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn controller(dev: &mut dyn Admin) -> Result<Controller, NvmeError> {
    let data = identify(dev, 0, CNS_CONTROLLER, "Identify Controller")?;
    Controller::parse(&data).map_err(|reason| identify_error(dev, reason))
}

pub fn namespace(dev: &mut dyn Admin, nsid: u32) -> Result<Namespace, NvmeError> {
    let data = identify(dev, nsid, CNS_NAMESPACE, "Identify Namespace")?;
    Namespace::parse(&data).map_err(|reason| identify_error(dev, reason))
}

/// How many namespaces are attached to the controller (CNS 02h lists up to
/// 1024 active ids in increasing order, zero-filled).
pub fn active_namespaces(dev: &mut dyn Admin) -> Result<usize, NvmeError> {
    let data = identify(
        dev,
        0,
        CNS_ACTIVE_NAMESPACES,
        "Identify Active Namespace ID list",
    )?;
    Ok(data
        .chunks_exact(4)
        .take_while(|id| id.iter().any(|b| *b != 0))
        .count())
}

fn identify(
    dev: &mut dyn Admin,
    nsid: u32,
    cns: u32,
    what: &'static str,
) -> Result<Vec<u8>, NvmeError> {
    let mut data = vec![0u8; 4096];
    let cmd = Command {
        opcode: OPCODE,
        nsid,
        cdw10: cns,
        ..Command::default()
    };
    dev.submit(what, &cmd, &mut data, TIMEOUT)?;
    Ok(data)
}

fn identify_error(dev: &dyn Admin, reason: String) -> NvmeError {
    NvmeError::Identify {
        path: dev.path().to_path_buf(),
        reason,
    }
}

/// Identify Controller (CNS 01h), 4096 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub serial: String,
    pub model: String,
    /// Optional Admin Command Support: bit 1, Format NVM.
    pub oacs: u16,
    /// Format NVM Attributes: bit 0, a format applies to every namespace;
    /// bit 1, so does a secure erase; bit 2, cryptographic erase supported.
    pub fna: u8,
    pub sanicap: Sanicap,
    /// Number of namespaces the controller supports.
    pub nn: u32,
}

pub const OACS_FORMAT: u16 = 1 << 1;
pub const FNA_CRYPTO_ERASE: u8 = 1 << 2;

impl Controller {
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if data.len() < 4096 {
            return Err(format!(
                "Identify Controller returned {} bytes, expected 4096",
                data.len()
            ));
        }
        Ok(Self {
            serial: ascii(&data[4..24]),
            model: ascii(&data[24..64]),
            oacs: u16::from_le_bytes([data[256], data[257]]),
            sanicap: Sanicap(u32::from_le_bytes([
                data[328], data[329], data[330], data[331],
            ])),
            nn: u32::from_le_bytes([data[516], data[517], data[518], data[519]]),
            fna: data[524],
        })
    }

    pub fn supports_format(&self) -> bool {
        self.oacs & OACS_FORMAT != 0
    }

    pub fn supports_crypto_erase(&self) -> bool {
        self.fna & FNA_CRYPTO_ERASE != 0
    }
}

/// Sanitize Capabilities (SANICAP, Identify Controller bytes 331:328).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sanicap(pub u32);

impl Sanicap {
    /// CES, bit 0.
    pub fn crypto_erase(self) -> bool {
        self.0 & 1 != 0
    }
    /// BES, bit 1.
    pub fn block_erase(self) -> bool {
        self.0 & 1 << 1 != 0
    }
    /// OWS, bit 2.
    pub fn overwrite(self) -> bool {
        self.0 & 1 << 2 != 0
    }
    /// No sanitize operation at all: the controller has no Sanitize command.
    pub fn none(self) -> bool {
        self.0 & 0b111 == 0
    }
    /// NDI, bit 29: a sanitize that leaves the media allocated (NDAS=1) is
    /// refused.
    pub fn no_deallocate_inhibited(self) -> bool {
        self.0 & 1 << 29 != 0
    }
    /// NODMMAS, bits 31:30: whether such a sanitize modifies the media
    /// afterwards (0 not reported, 1 no, 2 yes).
    pub fn no_deallocate_modifies_media(self) -> u8 {
        (self.0 >> 30) as u8
    }
}

/// Identify Namespace (CNS 00h), 4096 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Size in logical blocks.
    pub nsze: u64,
    /// The LBA format in use (FLBAS bits 3:0 and, NVMe 2.0, 6:5).
    pub lba_format: u8,
    /// Metadata travels at the end of each block (FLBAS bit 4).
    pub extended_metadata: bool,
    /// Protection information type (DPS bits 2:0) and location (bit 3).
    pub pi_type: u8,
    pub pi_first: bool,
    /// Bytes per logical block of the format in use.
    pub block_size: u64,
}

impl Namespace {
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if data.len() < 4096 {
            return Err(format!(
                "Identify Namespace returned {} bytes, expected 4096",
                data.len()
            ));
        }
        let nsze = u64::from_le_bytes(data[0..8].try_into().map_err(|_| "short NSZE")?);
        let nlbaf = data[25];
        let flbas = data[26];
        let dps = data[29];
        let lba_format = (flbas & 0x0f) | ((flbas >> 5) & 0x03) << 4;
        if lba_format > nlbaf {
            return Err(format!(
                "the namespace uses LBA format {lba_format} of {} it lists",
                u16::from(nlbaf) + 1
            ));
        }
        let at = 128 + 4 * usize::from(lba_format);
        let lbaf = u32::from_le_bytes(data[at..at + 4].try_into().map_err(|_| "short LBAF")?);
        let lbads = (lbaf >> 16) & 0xff;
        if !(9..=16).contains(&lbads) {
            return Err(format!(
                "LBA format {lba_format} has a block size of 2^{lbads}"
            ));
        }
        Ok(Self {
            nsze,
            lba_format,
            extended_metadata: flbas & 0x10 != 0,
            pi_type: dps & 0x07,
            pi_first: dps & 0x08 != 0,
            block_size: 1 << lbads,
        })
    }
}

fn ascii(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(oacs: u16, fna: u8) -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        d[4..12].copy_from_slice(b"SN123   ");
        d[24..40].copy_from_slice(b"QEMU NVMe Ctrl  ");
        d[256..258].copy_from_slice(&oacs.to_le_bytes());
        d[328..332].copy_from_slice(&0b011u32.to_le_bytes());
        d[516..520].copy_from_slice(&256u32.to_le_bytes());
        d[524] = fna;
        d
    }

    #[test]
    fn controller_fields_come_from_their_offsets() {
        let c = Controller::parse(&controller(0x000a, 0x04)).unwrap();
        assert_eq!(c.serial, "SN123");
        assert_eq!(c.model, "QEMU NVMe Ctrl");
        assert!(c.supports_format());
        assert!(c.supports_crypto_erase());
        assert_eq!(c.sanicap, Sanicap(0b011));
        assert!(c.sanicap.crypto_erase() && c.sanicap.block_erase());
        assert!(!c.sanicap.overwrite() && !c.sanicap.none());
        assert_eq!(c.nn, 256);
        let c = Controller::parse(&controller(0x0008, 0x03)).unwrap();
        assert!(!c.supports_format());
        assert!(!c.supports_crypto_erase());
        assert!(Controller::parse(&[0u8; 100]).is_err());
    }

    #[test]
    fn sanicap_bits() {
        let s = Sanicap(1 << 31 | 1 << 29 | 0b100);
        assert!(s.overwrite() && !s.crypto_erase() && !s.block_erase() && !s.none());
        assert!(s.no_deallocate_inhibited());
        assert_eq!(s.no_deallocate_modifies_media(), 2);
        assert!(Sanicap(1 << 29 | 1 << 3).none());
    }

    fn namespace(flbas: u8, dps: u8, formats: &[u32]) -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        d[0..8].copy_from_slice(&(16u64 << 20).to_le_bytes());
        d[25] = formats.len() as u8 - 1;
        d[26] = flbas;
        d[29] = dps;
        for (i, f) in formats.iter().enumerate() {
            d[128 + 4 * i..132 + 4 * i].copy_from_slice(&f.to_le_bytes());
        }
        d
    }

    #[test]
    fn namespace_format_in_use_and_protection() {
        // Format 0: 512 B; format 1: 4 KiB with 8 bytes of metadata.
        let formats = [9 << 16, (12 << 16) | 8];
        let ns = Namespace::parse(&namespace(0x11, 0x09, &formats)).unwrap();
        assert_eq!(ns.lba_format, 1);
        assert!(ns.extended_metadata);
        assert_eq!(ns.block_size, 4096);
        assert_eq!((ns.pi_type, ns.pi_first), (1, true));
        assert_eq!(ns.nsze, 16 << 20);
        let ns = Namespace::parse(&namespace(0x00, 0, &formats)).unwrap();
        assert_eq!((ns.lba_format, ns.block_size), (0, 512));
    }

    #[test]
    fn a_namespace_that_names_a_missing_format_is_refused() {
        let e = Namespace::parse(&namespace(0x03, 0, &[9 << 16])).unwrap_err();
        assert!(e.contains("LBA format 3 of 1"), "{e}");
        let e = Namespace::parse(&namespace(0x00, 0, &[30 << 16])).unwrap_err();
        assert!(e.contains("2^30"), "{e}");
    }
}
