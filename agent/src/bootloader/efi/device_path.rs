//! UEFI device paths (UEFI spec 2.10 §10.3) as text, the way efivar's
//! `efidp_format_device_path` (and so `efibootmgr -v`) prints them:
//! `HD(1,GPT,<guid>,0x800,0x100000)/File(\EFI\debian\shimx64.efi)`.
//! IPA's `clean_uefi_nvram` matches its patterns against this text, so the
//! nodes IPA's default patterns look at (`HD(`, `File(`) are rendered as
//! efivar does; other common nodes in a close form (efivar's IPv4 text, for
//! one, carries more fields), and unknown ones as `Path(type,subtype,hex)`.

use std::fmt::Write;

use uuid::Uuid;

/// The load option's device path as text (`None`: not a load option).
pub fn load_option_path(data: &[u8]) -> Option<String> {
    let path_len = u16::from_le_bytes(data.get(4..6)?.try_into().ok()?) as usize;
    let mut at = 6;
    // The description: NUL-terminated UTF-16.
    loop {
        let unit = data.get(at..at + 2)?;
        at += 2;
        if unit == [0, 0] {
            break;
        }
    }
    Some(format(data.get(at..at + path_len)?))
}

/// Every node of `path` until its end node; a malformed node ends the text
/// where it starts (firmware data is not trusted to be well formed).
pub fn format(path: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    let mut first = true;
    while let Some(head) = path.get(at..at + 4) {
        let (kind, sub) = (head[0], head[1]);
        let len = u16::from_le_bytes([head[2], head[3]]) as usize;
        let Some(node) = path.get(at..at + len).filter(|_| len >= 4) else {
            break;
        };
        at += len;
        match (kind, sub) {
            (0x7f, 0xff) => break,
            (0x7f, 0x01) => {
                out.push(',');
                first = true;
                continue;
            }
            _ => {}
        }
        if !first {
            out.push('/');
        }
        first = false;
        node_text(&mut out, kind, sub, &node[4..]);
    }
    out
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn guid(b: &[u8], at: usize) -> Option<String> {
    let bytes: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Uuid::from_bytes_le(bytes).hyphenated().to_string())
}
fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}
fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn node_text(out: &mut String, kind: u8, sub: u8, d: &[u8]) {
    if let Some(text) = known(kind, sub, d) {
        out.push_str(&text);
    } else {
        let _ = write!(out, "Path({kind},{sub},{})", hex(d));
    }
}

/// The nodes efivar names; `None` for others (or a node too short).
fn known(kind: u8, sub: u8, d: &[u8]) -> Option<String> {
    Some(match (kind, sub) {
        // Hardware: PCI, vendor.
        (0x01, 0x01) => format!("Pci({:#x},{:#x})", d.get(1)?, d.first()?),
        (0x01, 0x04) => format!("VenHw({},{})", guid(d, 0)?, hex(d.get(16..)?)),
        // ACPI: PciRoot/PcieRoot by their PNP ids, else the raw ids.
        (0x02, 0x01) => {
            let (hid, uid) = (le32(d, 0)?, le32(d, 4)?);
            match hid {
                0x0a03_41d0 => format!("PciRoot({uid:#x})"),
                0x0a08_41d0 => format!("PcieRoot({uid:#x})"),
                _ => format!("Acpi({hid:#x},{uid:#x})"),
            }
        }
        // Messaging.
        (0x03, 0x02) => format!("SCSI({},{})", le16(d, 0)?, le16(d, 2)?),
        (0x03, 0x05) => format!("USB({},{})", d.first()?, d.get(1)?),
        (0x03, 0x0a) => format!("VenMsg({},{})", guid(d, 0)?, hex(d.get(16..)?)),
        (0x03, 0x0b) => format!("MAC({},{})", hex(d.get(0..6)?), d.get(32)?),
        (0x03, 0x0c) => {
            let ip = |at: usize| {
                d.get(at..at + 4)
                    .map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
            };
            format!("IPv4({},{})", ip(4)?, ip(0)?)
        }
        (0x03, 0x12) => format!("Sata({},{},{})", le16(d, 0)?, le16(d, 2)?, le16(d, 4)?),
        (0x03, 0x17) => format!("NVMe({:#x},{})", le32(d, 0)?, hex(d.get(4..12)?)),
        (0x03, 0x18) => format!("Uri({})", String::from_utf8_lossy(d)),
        // Media: hard drive, CD-ROM, vendor, file, firmware volumes.
        (0x04, 0x01) => {
            let (part, start, size) = (le32(d, 0)?, le64(d, 4)?, le64(d, 12)?);
            let sig = match d.get(37)? {
                0x02 => format!("GPT,{}", guid(d, 20)?),
                0x01 => format!("MBR,{:#x}", le32(d, 20)?),
                _ => format!("{},{}", d.get(37)?, hex(d.get(20..36)?)),
            };
            format!("HD({part},{sig},{start:#x},{size:#x})")
        }
        (0x04, 0x02) => format!(
            "CDROM({},{:#x},{:#x})",
            le32(d, 0)?,
            le64(d, 4)?,
            le64(d, 12)?
        ),
        (0x04, 0x03) => format!("VenMedia({},{})", guid(d, 0)?, hex(d.get(16..)?)),
        (0x04, 0x04) => format!("File({})", utf16(d)),
        (0x04, 0x06) => format!("FvFile({})", guid(d, 0)?),
        (0x04, 0x07) => format!("FvVol({})", guid(d, 0)?),
        // BIOS boot specification.
        (0x05, 0x01) => format!(
            "BBS({},{},{:#x})",
            le16(d, 0)?,
            String::from_utf8_lossy(d.get(4..)?).trim_end_matches('\0'),
            le16(d, 2)?
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::load_option::{DiskSignature, HardDrive, LoadOption, ACTIVE};
    use super::*;

    #[test]
    fn a_load_option_made_by_the_agent_reads_as_efibootmgr_prints_it() {
        let guid: Uuid = "0f5c3b4e-8d1a-4b4e-9c7e-2a6b1d3c4e5f".parse().unwrap();
        let option = LoadOption {
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
        assert_eq!(
            load_option_path(&option.encode()).unwrap(),
            r"HD(1,GPT,0f5c3b4e-8d1a-4b4e-9c7e-2a6b1d3c4e5f,0x800,0x100000)/File(\EFI\debian\shimx64.efi)"
        );
        let mbr = LoadOption {
            hard_drive: HardDrive {
                signature: DiskSignature::Mbr(0x1234_abcd),
                ..option.hard_drive
            },
            ..option
        };
        assert!(load_option_path(&mbr.encode())
            .unwrap()
            .starts_with("HD(1,MBR,0x1234abcd,0x800,0x100000)/"));
    }

    #[test]
    fn firmware_entries_of_ovmf_read_as_efivar_prints_them() {
        // PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)/IPv4(0.0.0.0,0.0.0.0) from an OVMF PXE entry.
        let mut p = vec![0x02, 0x01, 12, 0];
        p.extend_from_slice(&0x0a03_41d0u32.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&[0x01, 0x01, 6, 0, 0x00, 0x03]);
        let mut mac = vec![0x03, 0x0b, 37, 0, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        mac.resize(36, 0);
        mac.push(0x01);
        p.extend_from_slice(&mac);
        p.extend_from_slice(&[0x03, 0x0c, 27, 0]);
        p.extend_from_slice(&[0u8; 23]);
        p.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        assert_eq!(
            format(&p),
            "PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)/IPv4(0.0.0.0,0.0.0.0)"
        );
    }

    #[test]
    fn unknown_and_malformed_nodes_do_not_panic() {
        assert_eq!(format(&[0x09, 0x09, 6, 0, 0xab, 0xcd]), "Path(9,9,abcd)");
        // A length past the end, and a zero length: the text stops there.
        assert_eq!(format(&[0x04, 0x04, 200, 0, 0x41, 0]), "");
        assert_eq!(format(&[0x04, 0x04, 0, 0]), "");
        // A node shorter than its fields falls back to the generic form.
        assert_eq!(format(&[0x04, 0x01, 6, 0, 1, 0]), "Path(4,1,0100)");
        assert!(load_option_path(&[1, 0, 0, 0, 4]).is_none());
    }
}
