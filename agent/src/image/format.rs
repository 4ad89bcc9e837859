//! Image format by content, never by name.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    Gzip,
    Zstd,
    Xz,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
        })
    }
}

/// Formats we recognise but refuse to write: writing them as raw would
/// put a container, not a disk, on the target.
const FOREIGN: &[(&[u8], usize, &str)] = &[
    (b"KDMV", 0, "vmdk"),
    (b"# Disk DescriptorFile", 0, "vmdk descriptor"),
    (b"conectix", 0, "vhd"),
    (b"vhdxfile", 0, "vhdx"),
    (b"QED\0", 0, "qed"),
    (b"\x7f\x10\xda\xbe", 0x40, "vdi"),
];

/// Bytes needed to decide.
pub const SNIFF_LEN: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("image format {0} is not supported (only raw, qcow2 and gzip/zstd/xz-compressed raw or qcow2)")]
    Foreign(&'static str),
}

pub fn sniff(head: &[u8]) -> Result<Format, FormatError> {
    if head.starts_with(b"QFI\xfb") {
        return Ok(Format::Qcow2);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Format::Gzip);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Format::Zstd);
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Ok(Format::Xz);
    }
    for (magic, at, name) in FOREIGN {
        if head.get(*at..at + magic.len()) == Some(magic) {
            return Err(FormatError::Foreign(name));
        }
    }
    Ok(Format::Raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_magic() {
        assert_eq!(sniff(b"QFI\xfb\0\0\0\x03"), Ok(Format::Qcow2));
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Ok(Format::Gzip));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Ok(Format::Zstd));
        assert_eq!(sniff(b"\xfd7zXZ\0rest"), Ok(Format::Xz));
        assert_eq!(sniff(&[0u8; 512]), Ok(Format::Raw));
        assert_eq!(sniff(b"KDMV\x01\0\0\0"), Err(FormatError::Foreign("vmdk")));
        let mut vdi = vec![0u8; 512];
        vdi[0x40..0x44].copy_from_slice(b"\x7f\x10\xda\xbe");
        assert_eq!(sniff(&vdi), Err(FormatError::Foreign("vdi")));
    }
}
