//! `EFI_LOAD_OPTION` (UEFI spec 2.10 §3.1.3) with the device path firmware
//! needs to find a loader: hard-drive media node + file path node + end.
//! This is what `efibootmgr -c -d <disk> -p <n> -l <loader> -L <label>`
//! writes into `Boot####`.

use uuid::Uuid;

/// `LOAD_OPTION_ACTIVE`.
pub const ACTIVE: u32 = 0x1;

/// Where the loader's partition sits on its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardDrive {
    pub partition_number: u32,
    pub start_lba: u64,
    pub size_lba: u64,
    pub signature: DiskSignature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSignature {
    /// GPT: the partition's unique GUID.
    Gpt(Uuid),
    /// MBR: the 32-bit disk signature.
    Mbr(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    pub description: String,
    pub hard_drive: HardDrive,
    /// Backslash-separated path on the partition, e.g. `\EFI\debian\shimx64.efi`.
    pub loader: String,
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

impl LoadOption {
    pub fn encode(&self) -> Vec<u8> {
        let mut path = Vec::new();
        // Media device path (type 4), hard drive (subtype 1), 42 bytes.
        path.extend_from_slice(&[0x04, 0x01, 42, 0]);
        let hd = &self.hard_drive;
        path.extend_from_slice(&hd.partition_number.to_le_bytes());
        path.extend_from_slice(&hd.start_lba.to_le_bytes());
        path.extend_from_slice(&hd.size_lba.to_le_bytes());
        let (sig, format, sig_type) = match hd.signature {
            DiskSignature::Gpt(guid) => (guid.to_bytes_le(), 0x02u8, 0x02u8),
            DiskSignature::Mbr(id) => {
                let mut s = [0u8; 16];
                s[..4].copy_from_slice(&id.to_le_bytes());
                (s, 0x01, 0x01)
            }
        };
        path.extend_from_slice(&sig);
        path.extend_from_slice(&[format, sig_type]);
        // Media device path, file path (subtype 4).
        let file = utf16z(&self.loader);
        path.extend_from_slice(&[0x04, 0x04]);
        path.extend_from_slice(&((4 + file.len()) as u16).to_le_bytes());
        path.extend_from_slice(&file);
        // End of the entire device path.
        path.extend_from_slice(&[0x7f, 0xff, 0x04, 0x00]);

        let mut out = Vec::new();
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(&utf16z(&self.description));
        out.extend_from_slice(&path);
        out
    }
}

/// An active entry for a loader on partition 1 (2048 + 4096 sectors) of a
/// GPT disk with a nil GUID: the fixture the NVRAM tests share.
#[cfg(test)]
pub(crate) fn test_entry(label: &str, loader: &str) -> LoadOption {
    LoadOption {
        attributes: ACTIVE,
        description: label.into(),
        hard_drive: HardDrive {
            partition_number: 1,
            start_lba: 2048,
            size_lba: 4096,
            signature: DiskSignature::Gpt(Uuid::nil()),
        },
        loader: loader.into(),
    }
}

/// The description of any load option (other firmware entries too), or
/// None when the bytes are not a load option.
pub fn description(data: &[u8]) -> Option<String> {
    let text = data.get(6..)?;
    let units: Vec<u16> = text
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// Decode what `encode` writes (for entries this agent made and for tests).
pub fn decode(data: &[u8]) -> Option<LoadOption> {
    let attributes = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let path_len = u16::from_le_bytes(data.get(4..6)?.try_into().ok()?) as usize;
    let description = description(data)?;
    let path_at = 6 + (description.encode_utf16().count() + 1) * 2;
    let path = data.get(path_at..path_at + path_len)?;
    let hd = path.get(0..42)?;
    if hd[0..4] != [0x04, 0x01, 42, 0] {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(hd[i..i + 8].try_into().unwrap_or([0; 8]));
    let sig: [u8; 16] = hd[24..40].try_into().ok()?;
    let signature = match hd[41] {
        0x02 => DiskSignature::Gpt(Uuid::from_bytes_le(sig)),
        0x01 => DiskSignature::Mbr(u32::from_le_bytes(sig[..4].try_into().ok()?)),
        _ => return None,
    };
    let file = path.get(42..)?;
    if file.get(0..2)? != [0x04, 0x04] {
        return None;
    }
    let file_len = u16::from_le_bytes(file.get(2..4)?.try_into().ok()?) as usize;
    let units: Vec<u16> = file
        .get(4..file_len)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    Some(LoadOption {
        attributes,
        description,
        hard_drive: HardDrive {
            partition_number: u32::from_le_bytes(hd[4..8].try_into().ok()?),
            start_lba: u64_at(8),
            size_lba: u64_at(16),
            signature,
        },
        loader: String::from_utf16(&units).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Boot0001` for `\EFI\debian\shimx64.efi` on GPT partition 1
    /// (LBA 2048, 512 MiB), assembled field by field from the UEFI spec's
    /// tables (§3.1.3 EFI_LOAD_OPTION, §10.3.5.1 Hard Drive, §10.3.5.4 File
    /// Path, §10.3.1 End), independently of the encoder.
    const SPEC_ENTRY: &[&str] = &[
        "01000000",                         // Attributes: LOAD_OPTION_ACTIVE
        "6200",                             // FilePathListLength: 42 + 52 + 4
        "640065006200690061006e000000",     // Description "debian\0" (UTF-16LE)
        "04012a00",                         // HD node: type 4, subtype 1, length 42
        "01000000",                         // PartitionNumber 1
        "0008000000000000",                 // PartitionStart 2048
        "0000100000000000",                 // PartitionSize 1048576 sectors
        "4e3b3d8df1e8b247a8f0a6c1b8d0ad4f", // PartitionSignature (EFI_GUID layout)
        "0202",                             // MBRType GPT, SignatureType GUID
        "04043400",                         // File path node, length 4 + 48
        "5c004500460049005c00640065006200690061006e005c00\
         7300680069006d007800360034002e00650066006900 0000",
        "7fff0400", // End of hardware device path
    ];

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(char::is_ascii_hexdigit).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn encodes_per_the_spec() {
        let guid = Uuid::from_bytes_le(hex("4e3b3d8df1e8b247a8f0a6c1b8d0ad4f").try_into().unwrap());
        assert_eq!(guid.to_string(), "8d3d3b4e-e8f1-47b2-a8f0-a6c1b8d0ad4f");
        let opt = LoadOption {
            attributes: ACTIVE,
            description: "debian".into(),
            hard_drive: HardDrive {
                partition_number: 1,
                start_lba: 2048,
                size_lba: 1_048_576,
                signature: DiskSignature::Gpt(guid),
            },
            loader: r"\EFI\debian\shimx64.efi".into(),
        };
        let expected = hex(&SPEC_ENTRY.concat());
        assert_eq!(opt.encode(), expected);
        assert_eq!(decode(&opt.encode()), Some(opt));
    }

    #[test]
    fn mbr_signature_and_garbage() {
        let opt = LoadOption {
            attributes: ACTIVE,
            description: "ironic1".into(),
            hard_drive: HardDrive {
                partition_number: 2,
                start_lba: 4096,
                size_lba: 8192,
                signature: DiskSignature::Mbr(0xdead_beef),
            },
            loader: r"\EFI\BOOT\BOOTX64.EFI".into(),
        };
        assert_eq!(decode(&opt.encode()), Some(opt));
        assert_eq!(decode(&[1, 2, 3]), None);
        assert_eq!(description(&[0; 4]), None);
    }
}
