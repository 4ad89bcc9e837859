//! The SMBIOS/DMI table as the kernel exports it
//! (`/sys/firmware/dmi/tables/DMI`): system and firmware identity, and the
//! installed memory devices. Only the few structures the inventory needs.

/// What the inventory takes from SMBIOS.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Smbios {
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    pub manufacturer: Option<String>,
    pub product_name: Option<String>,
    pub serial_number: Option<String>,
    /// Sum of the sizes of installed memory devices (type 17), MiB.
    pub memory_mb: Option<u64>,
}

/// One SMBIOS structure: its header, formatted area and string set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure<'a> {
    pub kind: u8,
    pub handle: u16,
    /// The whole formatted area, header included (offsets as in the spec).
    pub formatted: &'a [u8],
    /// The string set, in order (string `n` is `strings[n - 1]`).
    pub strings: Vec<String>,
}

impl Structure<'_> {
    /// The string a formatted-area byte at `offset` points to; `None` when
    /// the area is too short, the index is 0 or out of range, or it is empty.
    pub fn string(&self, offset: usize) -> Option<String> {
        let index = *self.formatted.get(offset)? as usize;
        self.strings
            .get(index.checked_sub(1)?)
            .cloned()
            .filter(|s| !s.is_empty())
    }

    pub fn byte(&self, offset: usize) -> Option<u8> {
        self.formatted.get(offset).copied()
    }

    pub fn word(&self, offset: usize) -> Option<u16> {
        Some(u16::from_le_bytes([
            self.byte(offset)?,
            self.byte(offset + 1)?,
        ]))
    }

    pub fn dword(&self, offset: usize) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.byte(offset)?,
            self.byte(offset + 1)?,
            self.byte(offset + 2)?,
            self.byte(offset + 3)?,
        ]))
    }

    pub fn qword(&self, offset: usize) -> Option<u64> {
        Some(u64::from(self.dword(offset)?) | u64::from(self.dword(offset + 4)?) << 32)
    }
}

/// Walk a whole table up to the end-of-table structure (type 127).
/// Malformed structures end the walk; what was read stays.
pub fn structures(table: &[u8]) -> Vec<Structure<'_>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= table.len() {
        let kind = table[pos];
        let len = table[pos + 1] as usize;
        if len < 4 || pos + len > table.len() {
            break;
        }
        let formatted = &table[pos..pos + len];
        // The string set follows, ended by a double NUL.
        let strings_start = pos + len;
        let mut end = strings_start;
        while end + 1 < table.len() && !(table[end] == 0 && table[end + 1] == 0) {
            end += 1;
        }
        let strings: Vec<String> = table[strings_start..end.min(table.len())]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).trim().to_string())
            .collect();
        out.push(Structure {
            kind,
            handle: u16::from_le_bytes([table[pos + 2], table[pos + 3]]),
            formatted,
            strings,
        });
        if kind == 127 {
            break;
        }
        pos = end + 2;
    }
    out
}

/// Parse a whole table. Malformed structures end the walk; what was read stays.
pub fn parse(table: &[u8]) -> Smbios {
    let mut out = Smbios::default();
    let mut memory: Option<u64> = None;
    for s in structures(table) {
        match s.kind {
            0 => {
                out.bios_vendor = s.string(4);
                out.bios_version = s.string(5);
                out.bios_date = s.string(8);
            }
            1 => {
                out.manufacturer = s.string(4);
                out.product_name = s.string(5);
                out.serial_number = s.string(7);
            }
            17 => {
                if let Some(mb) = memory_device_mb(s.formatted) {
                    *memory.get_or_insert(0) += mb;
                }
            }
            _ => {}
        }
    }
    out.memory_mb = memory;
    out
}

/// Size of one memory device in MiB; `None` when empty or unknown.
pub fn memory_device_mb(s: &[u8]) -> Option<u64> {
    let size = u16::from_le_bytes([*s.get(0x0c)?, *s.get(0x0d)?]);
    match size {
        0 | 0xffff => None,
        0x7fff => {
            let ext =
                u32::from_le_bytes([*s.get(0x1c)?, *s.get(0x1d)?, *s.get(0x1e)?, *s.get(0x1f)?]);
            Some(u64::from(ext & 0x7fff_ffff))
        }
        // Bit 15 set: the size is in KiB.
        s if s & 0x8000 != 0 => Some(u64::from(s & 0x7fff) / 1024),
        s => Some(u64::from(s)),
    }
}

/// Build a structure (for tests and fixtures): formatted bytes + strings.
pub fn structure(kind: u8, body: &[u8], strings: &[&str]) -> Vec<u8> {
    let mut s = vec![kind, (body.len() + 4) as u8, 0, 0];
    s.extend_from_slice(body);
    for st in strings {
        s.extend_from_slice(st.as_bytes());
        s.push(0);
    }
    if strings.is_empty() {
        s.push(0);
    }
    s.push(0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_device(size: u16, ext: u32) -> Vec<u8> {
        let mut body = vec![0u8; 0x24];
        body[0x0c - 4..0x0e - 4].copy_from_slice(&size.to_le_bytes());
        body[0x1c - 4..0x20 - 4].copy_from_slice(&ext.to_le_bytes());
        structure(17, &body, &[])
    }

    #[test]
    fn reads_identity_and_memory() {
        let mut t = Vec::new();
        // Type 0: vendor=1, version=2, date=3 at offsets 4, 5, 8.
        t.extend(structure(
            0,
            &[1, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &["EDK II", "stable202302", "02/06/2023"],
        ));
        t.extend(structure(
            1,
            &[
                1, 2, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            &["QEMU", "Standard PC (Q35 + ICH9, 2009)", "SN-1"],
        ));
        t.extend(memory_device(1024, 0));
        t.extend(memory_device(0, 0)); // empty slot
        t.extend(memory_device(0x7fff, 65536)); // 64 GiB via the extended size
        t.extend(memory_device(0x8000 | 512, 0)); // 512 KiB → 0 MiB
        t.extend(structure(127, &[], &[]));
        let s = parse(&t);
        assert_eq!(s.bios_vendor.as_deref(), Some("EDK II"));
        assert_eq!(s.bios_date.as_deref(), Some("02/06/2023"));
        assert_eq!(s.manufacturer.as_deref(), Some("QEMU"));
        assert_eq!(
            s.product_name.as_deref(),
            Some("Standard PC (Q35 + ICH9, 2009)")
        );
        assert_eq!(s.serial_number.as_deref(), Some("SN-1"));
        assert_eq!(s.memory_mb, Some(1024 + 65536));
    }

    #[test]
    fn garbage_is_harmless() {
        for junk in [
            &[][..],
            &[1, 2, 3][..],
            &[17, 200, 0, 0, 1][..],
            &[0, 4, 0, 0][..],
        ] {
            let _ = parse(junk);
        }
    }
}
