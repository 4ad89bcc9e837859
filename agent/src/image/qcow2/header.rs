//! The qcow2 header (versions 2 and 3), validated for streaming: anything
//! that would make the guest image depend on something other than this one
//! file (backing file, external data file, encryption) is refused, as are
//! incompatible features we do not know.

use super::Qcow2Error;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Size of the fixed v2 header; v3 headers are at least 104 bytes.
const V2_HEADER_LEN: u64 = 72;
const V3_MIN_HEADER_LEN: u64 = 104;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_EXTERNAL_DATA
    | INCOMPAT_COMPRESSION_TYPE
    | INCOMPAT_EXTENDED_L2;

/// Header extension types that matter here.
const EXT_END: u32 = 0;
const EXT_EXTERNAL_DATA_FILE: u32 = 0x4441_5441;
const EXT_FULL_DISK_ENCRYPTION: u32 = 0x0537_be77;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub virtual_size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub extended_l2: bool,
    pub compression: Compression,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2 (subcluster bitmaps).
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    /// Guest bytes one L2 table maps.
    pub fn l2_coverage(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size() * self.cluster_size()
    }

    pub fn l1_bytes(&self) -> u64 {
        u64::from(self.l1_size) * 8
    }

    /// How many header bytes `parse` wants to see (the whole first cluster
    /// holds the header and its extensions).
    pub fn wanted_prefix(buf: &[u8]) -> Option<u64> {
        if buf.len() < 24 || buf[..4] != MAGIC {
            return None;
        }
        let cluster_bits = u32::from_be_bytes(buf[20..24].try_into().ok()?);
        (9..=21)
            .contains(&cluster_bits)
            .then(|| 1u64 << cluster_bits)
    }

    /// Parse from the start of the file; `buf` should hold the first cluster
    /// (or the whole file if shorter).
    pub fn parse(buf: &[u8]) -> Result<Self, Qcow2Error> {
        let be32 = |o: usize| -> Result<u32, Qcow2Error> {
            buf.get(o..o + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(Qcow2Error::Truncated("header"))
        };
        let be64 = |o: usize| -> Result<u64, Qcow2Error> {
            buf.get(o..o + 8)
                .map(|b| u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .ok_or(Qcow2Error::Truncated("header"))
        };
        if buf.get(..4) != Some(&MAGIC[..]) {
            return Err(Qcow2Error::NotQcow2);
        }
        let version = be32(4)?;
        if version != 2 && version != 3 {
            return Err(Qcow2Error::Unsupported(format!("qcow2 version {version}")));
        }
        if be64(8)? != 0 {
            return Err(Qcow2Error::Unsupported(
                "the image has a backing file; only self-contained images can be streamed".into(),
            ));
        }
        let cluster_bits = be32(20)?;
        if !(9..=21).contains(&cluster_bits) {
            return Err(Qcow2Error::Corrupt(format!(
                "cluster_bits {cluster_bits} outside 9..=21"
            )));
        }
        let virtual_size = be64(24)?;
        let crypt_method = be32(32)?;
        if crypt_method != 0 {
            return Err(Qcow2Error::Unsupported(format!(
                "encrypted image (crypt_method {crypt_method})"
            )));
        }
        let l1_size = be32(36)?;
        let l1_table_offset = be64(40)?;

        let mut extended_l2 = false;
        let mut compression = Compression::Zlib;
        let mut header_len = V2_HEADER_LEN;
        if version == 3 {
            let incompatible = be64(72)?;
            header_len = u64::from(be32(100)?);
            if header_len < V3_MIN_HEADER_LEN {
                return Err(Qcow2Error::Corrupt(format!(
                    "header_length {header_len} < 104"
                )));
            }
            if incompatible & !INCOMPAT_KNOWN != 0 {
                return Err(Qcow2Error::Unsupported(format!(
                    "unknown incompatible features {:#x}",
                    incompatible & !INCOMPAT_KNOWN
                )));
            }
            if incompatible & INCOMPAT_CORRUPT != 0 {
                return Err(Qcow2Error::Corrupt("the image is marked corrupt".into()));
            }
            if incompatible & INCOMPAT_EXTERNAL_DATA != 0 {
                return Err(Qcow2Error::Unsupported(
                    "the image keeps its data in an external data file".into(),
                ));
            }
            extended_l2 = incompatible & INCOMPAT_EXTENDED_L2 != 0;
            if incompatible & INCOMPAT_COMPRESSION_TYPE != 0 {
                compression = match buf.get(104) {
                    Some(0) => Compression::Zlib,
                    Some(1) => Compression::Zstd,
                    Some(other) => {
                        return Err(Qcow2Error::Unsupported(format!("compression type {other}")))
                    }
                    None => return Err(Qcow2Error::Truncated("header")),
                };
            }
            let refcount_order = be32(96)?;
            if refcount_order > 6 {
                return Err(Qcow2Error::Corrupt(format!(
                    "refcount_order {refcount_order} > 6"
                )));
            }
        }
        let header = Header {
            version,
            cluster_bits,
            virtual_size,
            l1_size,
            l1_table_offset,
            extended_l2,
            compression,
        };
        if extended_l2 && cluster_bits < 14 {
            return Err(Qcow2Error::Corrupt(
                "extended L2 entries need clusters of at least 16 KiB".into(),
            ));
        }
        let needed_l1 = virtual_size.div_ceil(header.l2_coverage());
        if u64::from(l1_size) < needed_l1 {
            return Err(Qcow2Error::Corrupt(format!(
                "L1 table has {l1_size} entries but the virtual size needs {needed_l1}"
            )));
        }
        if l1_table_offset % header.cluster_size() != 0 || (l1_size > 0 && l1_table_offset == 0) {
            return Err(Qcow2Error::Corrupt(format!(
                "L1 table offset {l1_table_offset:#x} is not cluster aligned"
            )));
        }
        // The L1 table is tiny even for huge disks (8 bytes per L2 coverage);
        // a giant one is a corrupt header, not an image.
        if header.l1_bytes() > 32 << 20 {
            return Err(Qcow2Error::Corrupt(format!(
                "L1 table of {l1_size} entries is implausibly large"
            )));
        }
        header.check_extensions(buf, header_len)?;
        Ok(header)
    }

    /// Walk the header extensions: refuse encryption and external data even
    /// when only announced there.
    fn check_extensions(&self, buf: &[u8], header_len: u64) -> Result<(), Qcow2Error> {
        let mut off =
            usize::try_from(header_len).map_err(|_| Qcow2Error::Corrupt("header_length".into()))?;
        loop {
            let Some(raw) = buf.get(off..off + 8) else {
                // Extensions run past what we were given: only a problem if
                // the header claims to be larger than a cluster.
                return if off as u64 > self.cluster_size() {
                    Err(Qcow2Error::Corrupt(
                        "header extensions run past the first cluster".into(),
                    ))
                } else {
                    Ok(())
                };
            };
            let kind = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
            match kind {
                EXT_END => return Ok(()),
                EXT_EXTERNAL_DATA_FILE => {
                    return Err(Qcow2Error::Unsupported(
                        "the image names an external data file".into(),
                    ))
                }
                EXT_FULL_DISK_ENCRYPTION => {
                    return Err(Qcow2Error::Unsupported(
                        "encrypted image (LUKS header)".into(),
                    ))
                }
                _ => {}
            }
            off = off
                .checked_add(8 + len.div_ceil(8) * 8)
                .ok_or_else(|| Qcow2Error::Corrupt("header extension length".into()))?;
        }
    }
}
