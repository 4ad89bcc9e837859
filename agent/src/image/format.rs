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

impl Format {
    /// A compression wrapped around a raw or qcow2 image
    /// (`image::decompress` opens it).
    pub fn is_compression(self) -> bool {
        match self {
            Self::Gzip | Self::Zstd | Self::Xz => true,
            Self::Raw | Self::Qcow2 => false,
        }
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

/// IPA's default `permitted_image_formats` (its config.py), for an agent
/// that never got Ironic's list.
pub const IPA_PERMITTED_FORMATS: &[&str] = &["raw", "gpt", "qcow2"];

/// Ironic's image format policy, from the lookup `config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatPolicy {
    /// `disable_deep_image_inspection`: the content decides the format;
    /// neither the declared `disk_format` nor the permitted list is checked.
    pub inspection_disabled: bool,
    /// `permitted_image_formats`; `None`: no list (the `write-image` CLI).
    pub permitted: Option<Vec<String>>,
}

impl FormatPolicy {
    /// IPA's `get_and_validate_image_format`: an image declared `raw` or
    /// `gpt` is not converted, so its format is not checked against the
    /// list (a qcow2 declared raw is still refused, as a mismatch); any
    /// other is checked by the name the content gives it. `head` is the
    /// start of the (decompressed) image, `detected` its container.
    pub fn check(
        &self,
        declared: Option<&str>,
        detected: Format,
        head: &[u8],
    ) -> Result<(), super::ImageError> {
        if self.inspection_disabled {
            return Ok(());
        }
        let Some(permitted) = &self.permitted else {
            return Ok(());
        };
        if declared.is_some_and(|d| matches!(d.to_ascii_lowercase().as_str(), "raw" | "gpt")) {
            return Ok(());
        }
        let name = inspector_name(detected, head);
        if permitted.iter().any(|p| p.trim() == name) {
            return Ok(());
        }
        Err(super::ImageError::NotPermitted {
            detected: name.to_string(),
            permitted: permitted.clone(),
        })
    }
}

/// The name IPA's format inspector gives this content: `qcow2`, `iso`
/// (ISO 9660), `gpt` (a protective MBR), else `raw`.
pub fn inspector_name(detected: Format, head: &[u8]) -> &'static str {
    match detected {
        Format::Qcow2 => "qcow2",
        Format::Gzip => "gzip",
        Format::Zstd => "zstd",
        Format::Xz => "xz",
        Format::Raw => {
            if head.get(0x8001..0x8006) == Some(b"CD001") {
                "iso"
            } else if head.get(510..512) == Some(&[0x55, 0xaa][..])
                && (0..4).any(|i| head.get(446 + 16 * i + 4) == Some(&0xee))
            {
                "gpt"
            } else {
                "raw"
            }
        }
    }
}

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

    #[test]
    fn policy_follows_ipa() {
        let list = |l: &[&str]| FormatPolicy {
            inspection_disabled: false,
            permitted: Some(l.iter().map(|s| s.to_string()).collect()),
        };
        let mut gpt = vec![0u8; 4096];
        gpt[510] = 0x55;
        gpt[511] = 0xaa;
        gpt[446 + 4] = 0xee;
        assert_eq!(inspector_name(Format::Raw, &gpt), "gpt");
        assert_eq!(inspector_name(Format::Raw, &[0u8; 512]), "raw");
        let raw_only = list(&["raw"]);
        let err = raw_only
            .check(Some("qcow2"), Format::Qcow2, b"QFI\xfb")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Security: Detected image format was qcow2, but only raw are allowed ([conductor]permitted_image_formats)"
        );
        assert!(raw_only.check(None, Format::Qcow2, b"").is_err());
        // Declared raw or gpt: not converted, so not checked (IPA).
        assert!(list(&["qcow2"])
            .check(Some("raw"), Format::Raw, &gpt)
            .is_ok());
        // IPA compares names exactly: a GPT disk is "gpt", not "raw".
        assert!(raw_only.check(None, Format::Raw, &gpt).is_err());
        assert!(list(&["gpt"]).check(None, Format::Raw, &gpt).is_ok());
        let off = FormatPolicy {
            inspection_disabled: true,
            ..list(&[])
        };
        assert!(off.check(None, Format::Qcow2, b"").is_ok());
        assert!(FormatPolicy::default()
            .check(None, Format::Qcow2, b"")
            .is_ok());
    }
}
