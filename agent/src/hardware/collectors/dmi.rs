//! IPA's `dmi-decode` collector without dmidecode: the SMBIOS BIOS (type
//! 0), processor (4), memory array (16) and memory device (17) structures,
//! decoded into the `{"Field": "value"}` dictionaries IPA builds from
//! `dmidecode -t bios -t processor -t memory`, with dmidecode's field names
//! and value spelling. Lists (`Characteristics`, `Flags`, ...) are arrays
//! of lines; `Handle` is dmidecode's whole handle line.
//!
//! The shape is IPA's `parse_dmi`: `bios` (the last type 0), `cpu` (every
//! type 4), `memory`: the first memory array's fields with `Number Of
//! Devices` summed over all arrays (a number), and `devices` (every type 17).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{read_table, CollectorError};
use crate::hardware::inventory::smbios::{self, Structure};
use crate::hardware::inventory::DMI_TABLE;

/// A dmidecode value: one line, or the lines of a list field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Field {
    Text(String),
    List(Vec<String>),
}

/// One structure as dmidecode prints it.
pub type Section = BTreeMap<String, Field>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dmi {
    pub bios: Section,
    pub cpu: Vec<Section>,
    pub memory: Memory,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// The first memory array's fields (without its `Handle`).
    #[serde(flatten)]
    pub array: Section,
    /// Summed over every memory array; absent without one.
    #[serde(rename = "Number Of Devices", skip_serializing_if = "Option::is_none")]
    pub number_of_devices: Option<u64>,
    pub devices: Vec<Section>,
}

/// Read and decode the machine's SMBIOS table.
pub fn collect(sysfs: &Path) -> Result<Dmi, CollectorError> {
    let table = read_table(&sysfs.join(DMI_TABLE))?;
    Ok(decode(&table))
}

pub fn decode(table: &[u8]) -> Dmi {
    let mut dmi = Dmi::default();
    let mut arrays: Vec<(Section, u64)> = Vec::new();
    for s in smbios::structures(table) {
        match s.kind {
            0 => dmi.bios = bios(&s),
            4 => dmi.cpu.push(processor(&s)),
            16 => arrays.push(memory_array(&s)),
            17 => dmi.memory.devices.push(memory_device(&s)),
            _ => {}
        }
    }
    if let Some((first, _)) = arrays.first() {
        let mut array = first.clone();
        array.remove("Handle");
        array.remove("Number Of Devices");
        dmi.memory.array = array;
        dmi.memory.number_of_devices = Some(arrays.iter().map(|(_, n)| n).sum());
    }
    dmi
}

/// Builds one section, skipping fields past the structure's length (an
/// older SMBIOS version), as dmidecode does.
struct Out<'a, 'b> {
    s: &'a Structure<'b>,
    section: Section,
}

impl<'a, 'b> Out<'a, 'b> {
    fn new(s: &'a Structure<'b>) -> Self {
        let mut section = Section::new();
        section.insert(
            "Handle".into(),
            Field::Text(format!(
                "Handle 0x{:04X}, DMI type {}, {} bytes",
                s.handle,
                s.kind,
                s.formatted.len()
            )),
        );
        Self { s, section }
    }

    fn has(&self, offset: usize) -> bool {
        self.s.formatted.len() > offset
    }

    fn text(&mut self, name: &str, value: impl Into<String>) {
        self.section.insert(name.into(), Field::Text(value.into()));
    }

    fn list(&mut self, name: &str, lines: Vec<String>) {
        self.section.insert(name.into(), Field::List(lines));
    }

    /// A string field: dmidecode's `Not Specified` for index 0.
    fn string(&mut self, name: &str, offset: usize) {
        let Some(index) = self.s.byte(offset) else {
            return;
        };
        let value = match index {
            0 => "Not Specified".to_string(),
            _ => self
                .s
                .strings
                .get(usize::from(index) - 1)
                .cloned()
                .unwrap_or_else(|| "<BAD INDEX>".into()),
        };
        // IPA keeps only non-empty values as text.
        if value.is_empty() {
            self.list(name, Vec::new());
        } else {
            self.text(name, value);
        }
    }

    fn table(&mut self, name: &str, offset: usize, names: &[(u8, &str)]) {
        if let Some(code) = self.s.byte(offset) {
            self.text(name, lookup(code, names));
        }
    }
}

fn lookup(code: u8, names: &[(u8, &str)]) -> String {
    names
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| "<OUT OF SPEC>".to_string(), |(_, n)| n.to_string())
}

/// The lines for set bits of `value`, `names[i]` naming bit `i + first`.
fn bits(value: u64, first: u32, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| value >> (first + *i as u32) & 1 == 1)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// dmidecode's sizes: `64 kB`, `16 MB`, `2 GB`, in the largest exact unit.
fn size(mut n: u64, mut unit: usize) -> String {
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    while n >= 1024 && n.is_multiple_of(1024) && unit + 1 < UNITS.len() {
        n /= 1024;
        unit += 1;
    }
    format!("{n} {}", UNITS[unit])
}

fn speed(mhz: u16, unit: &str) -> String {
    match mhz {
        0 => "Unknown".into(),
        n => format!("{n} {unit}"),
    }
}

fn handle_ref(h: u16) -> String {
    match h {
        0xfffe => "Not Provided".into(),
        0xffff => "No Error".into(),
        h => format!("0x{h:04X}"),
    }
}

const BIOS_CHARACTERISTICS: &[&str] = &[
    "BIOS characteristics not supported",
    "ISA is supported",
    "MCA is supported",
    "EISA is supported",
    "PCI is supported",
    "PC Card (PCMCIA) is supported",
    "PNP is supported",
    "APM is supported",
    "BIOS is upgradeable",
    "BIOS shadowing is allowed",
    "VLB is supported",
    "ESCD support is available",
    "Boot from CD is supported",
    "Selectable boot is supported",
    "BIOS ROM is socketed",
    "Boot from PC Card (PCMCIA) is supported",
    "EDD is supported",
    "Japanese floppy for NEC 9800 1.2 MB is supported (int 13h)",
    "Japanese floppy for Toshiba 1.2 MB is supported (int 13h)",
    "5.25\"/360 kB floppy services are supported (int 13h)",
    "5.25\"/1.2 MB floppy services are supported (int 13h)",
    "3.5\"/720 kB floppy services are supported (int 13h)",
    "3.5\"/2.88 MB floppy services are supported (int 13h)",
    "Print screen service is supported (int 5h)",
    "8042 keyboard services are supported (int 9h)",
    "Serial services are supported (int 14h)",
    "Printer services are supported (int 17h)",
    "CGA/mono video services are supported (int 10h)",
    "NEC PC-98",
];
const BIOS_CHARACTERISTICS_X1: &[&str] = &[
    "ACPI is supported",
    "USB legacy is supported",
    "AGP is supported",
    "I2O boot is supported",
    "LS-120 boot is supported",
    "ATAPI Zip drive boot is supported",
    "IEEE 1394 boot is supported",
    "Smart battery is supported",
];
const BIOS_CHARACTERISTICS_X2: &[&str] = &[
    "BIOS boot specification is supported",
    "Function key-initiated network boot is supported",
    "Targeted content distribution is supported",
    "UEFI is supported",
    "System is a virtual machine",
    "Manufacturing mode is supported",
    "Manufacturing mode is enabled",
];

fn bios(s: &Structure<'_>) -> Section {
    let mut o = Out::new(s);
    o.string("Vendor", 0x04);
    o.string("Version", 0x05);
    o.string("Release Date", 0x08);
    if let Some(segment) = s.word(0x06).filter(|seg| *seg != 0) {
        o.text("Address", format!("0x{segment:04X}0"));
        o.text("Runtime Size", size((0x10000 - u64::from(segment)) << 4, 0));
    }
    if let Some(rom) = s.byte(0x09) {
        let extended = s.word(0x18).filter(|_| rom == 0xff);
        let rom_size = match extended {
            Some(ext) => {
                let n = u64::from(ext & 0x3fff);
                match ext >> 14 {
                    0 => size(n, 2),
                    1 => size(n, 3),
                    _ => "<OUT OF SPEC>".into(),
                }
            }
            None => size((u64::from(rom) + 1) << 6, 1),
        };
        o.text("ROM Size", rom_size);
    }
    if let Some(c) = s.qword(0x0a) {
        let mut lines = if c & (1 << 3) != 0 {
            vec![BIOS_CHARACTERISTICS[0].to_string()]
        } else {
            bits(c, 4, &BIOS_CHARACTERISTICS[1..])
        };
        if let Some(x1) = s.byte(0x12) {
            lines.extend(bits(x1.into(), 0, BIOS_CHARACTERISTICS_X1));
        }
        if let Some(x2) = s.byte(0x13) {
            lines.extend(bits(x2.into(), 0, BIOS_CHARACTERISTICS_X2));
        }
        o.list("Characteristics", lines);
    }
    if let (Some(major), Some(minor)) = (s.byte(0x14), s.byte(0x15)) {
        if major != 0xff && minor != 0xff {
            o.text("BIOS Revision", format!("{major}.{minor}"));
        }
    }
    if let (Some(major), Some(minor)) = (s.byte(0x16), s.byte(0x17)) {
        if major != 0xff && minor != 0xff {
            o.text("Firmware Revision", format!("{major}.{minor}"));
        }
    }
    o.section
}

const PROCESSOR_TYPES: &[(u8, &str)] = &[
    (1, "Other"),
    (2, "Unknown"),
    (3, "Central Processor"),
    (4, "Math Processor"),
    (5, "DSP Processor"),
    (6, "Video Processor"),
];

/// The families servers and VMs report (SMBIOS 3.x, table 23).
const PROCESSOR_FAMILIES: &[(u16, &str)] = &[
    (0x01, "Other"),
    (0x02, "Unknown"),
    (0x0b, "Pentium"),
    (0x0e, "Pentium III"),
    (0x0f, "Pentium 4"),
    (0x18, "Athlon"),
    (0x1a, "K6"),
    (0x28, "Core Duo"),
    (0x2c, "Core M"),
    (0x48, "Opteron"),
    (0x83, "Athlon 64"),
    (0x84, "Opteron"),
    (0x8f, "Core i3"),
    (0xa1, "Xeon 3200"),
    (0xa8, "Atom"),
    (0xb3, "Xeon"),
    (0xbf, "Core 2 Duo"),
    (0xc6, "Core i7"),
    (0xcd, "Core i5"),
    (0xce, "Core i3"),
    (0xcf, "Core i9"),
    (0xe6, "Opteron 6100"),
    (0x101, "ARMv7"),
    (0x102, "ARMv8"),
    (0x104, "SH-3"),
    (0x118, "ARM"),
    (0x119, "StrongARM"),
    (0x200, "RISC-V RV32"),
    (0x201, "RISC-V RV64"),
    (0x202, "RISC-V RV128"),
    (0x6b, "Zen"),
];

const PROCESSOR_CHARACTERISTICS: &[&str] = &[
    "64-bit capable",
    "Multi-Core",
    "Hardware Thread",
    "Execute Protection",
    "Enhanced Virtualization",
    "Power/Performance Control",
    "128-bit Capable",
    "Arm64 SoC ID",
];

const PROCESSOR_UPGRADES: &[(u8, &str)] = &[
    (0x01, "Other"),
    (0x02, "Unknown"),
    (0x03, "Daughter Board"),
    (0x04, "ZIF Socket"),
    (0x05, "Replaceable Piggy Back"),
    (0x06, "None"),
    (0x07, "LIF Socket"),
    (0x08, "Slot 1"),
    (0x09, "Slot 2"),
    (0x0a, "370-pin Socket"),
    (0x0d, "Socket 423"),
    (0x0e, "Socket A (Socket 462)"),
    (0x0f, "Socket 478"),
    (0x10, "Socket 754"),
    (0x11, "Socket 940"),
    (0x12, "Socket 939"),
    (0x15, "Socket LGA775"),
    (0x19, "Socket LGA1366"),
    (0x1c, "Socket LGA1156"),
    (0x20, "Socket LGA1155"),
    (0x24, "Socket LGA2011"),
    (0x28, "Socket LGA1150"),
    (0x2c, "Socket LGA2011-3"),
    (0x36, "Socket LGA3647-1"),
    (0x38, "Socket SP3"),
    (0x39, "Socket SP3r2"),
    (0x3e, "Socket LGA4189"),
    (0x41, "Socket LGA4677"),
    (0x47, "Socket SP5"),
];

const X86_FLAGS: &[&str] = &[
    "FPU (Floating-point unit on-chip)",
    "VME (Virtual mode extension)",
    "DE (Debugging extension)",
    "PSE (Page size extension)",
    "TSC (Time stamp counter)",
    "MSR (Model specific registers)",
    "PAE (Physical address extension)",
    "MCE (Machine check exception)",
    "CX8 (CMPXCHG8 instruction supported)",
    "APIC (On-chip APIC hardware supported)",
    "",
    "SEP (Fast system call)",
    "MTRR (Memory type range registers)",
    "PGE (Page global enable)",
    "MCA (Machine check architecture)",
    "CMOV (Conditional move instruction supported)",
    "PAT (Page attribute table)",
    "PSE-36 (36-bit page size extension)",
    "PSN (Processor serial number present and enabled)",
    "CLFSH (CLFLUSH instruction supported)",
    "",
    "DS (Debug store)",
    "ACPI (ACPI supported)",
    "MMX (MMX technology supported)",
    "FXSR (FXSAVE and FXSTOR instructions supported)",
    "SSE (Streaming SIMD extensions)",
    "SSE2 (Streaming SIMD extensions 2)",
    "SS (Self-snoop)",
    "HTT (Multi-threading)",
    "TM (Thermal monitor supported)",
    "",
    "PBE (Pending break enabled)",
];

#[derive(Clone, Copy)]
enum X86Vendor {
    Intel,
    Amd,
}

/// Whether dmidecode decodes the ID as an x86 CPUID signature: by family,
/// or for "Other"/"Unknown" by the version string of a known CPU.
fn x86_vendor(family: u16, version: &str) -> Option<X86Vendor> {
    let intel = [
        (0x0b, 0x15),
        (0x28, 0x2f),
        (0xa1, 0xb3),
        (0xb5, 0xb5),
        (0xb9, 0xc7),
        (0xcd, 0xcf),
        (0xd2, 0xdb),
        (0xdd, 0xe0),
    ];
    let amd = [
        (0x18, 0x1d),
        (0x1f, 0x1f),
        (0x38, 0x3f),
        (0x46, 0x4f),
        (0x66, 0x6b),
        (0x83, 0x8f),
        (0xb6, 0xb7),
        (0xe4, 0xef),
    ];
    let within =
        |ranges: &[(u16, u16)]| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&family));
    if within(&intel) {
        return Some(X86Vendor::Intel);
    }
    if within(&amd) {
        return Some(X86Vendor::Amd);
    }
    if family == 0x01 || family == 0x02 {
        let intel_names = [
            "Pentium III MMX",
            "Intel(R) Core(TM)2",
            "Intel(R) Pentium(R)",
            "Genuine Intel(R) CPU U1400",
        ];
        let amd_names = [
            "AMD Athlon(TM)",
            "AMD Opteron(tm)",
            "Dual-Core AMD Opteron(tm)",
        ];
        if intel_names.iter().any(|n| version.starts_with(n)) {
            return Some(X86Vendor::Intel);
        }
        if amd_names.iter().any(|n| version.starts_with(n)) {
            return Some(X86Vendor::Amd);
        }
    }
    None
}

fn processor(s: &Structure<'_>) -> Section {
    let mut o = Out::new(s);
    o.string("Socket Designation", 0x04);
    o.table("Type", 0x05, PROCESSOR_TYPES);
    let family = match s.byte(0x06) {
        Some(0xfe) => s.word(0x28),
        f => f.map(u16::from),
    };
    if let Some(family) = family {
        let name = PROCESSOR_FAMILIES
            .iter()
            .find(|(c, _)| *c == family)
            .map_or("<OUT OF SPEC>", |(_, n)| n);
        o.text("Family", name);
    }
    o.string("Manufacturer", 0x07);
    if let Some(id) = s.formatted.get(0x08..0x10) {
        let hex: Vec<String> = id.iter().map(|b| format!("{b:02X}")).collect();
        o.text("ID", hex.join(" "));
        let eax = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
        let edx = u32::from_le_bytes([id[4], id[5], id[6], id[7]]);
        let version = s.string(0x10).unwrap_or_default();
        let sig = family.and_then(|f| x86_vendor(f, &version));
        if let (Some(vendor), true) = (sig, eax != 0) {
            let base_family = (eax >> 8) & 0xf;
            let family = if base_family == 0xf {
                base_family + ((eax >> 20) & 0xff)
            } else {
                base_family
            };
            let model = if base_family == 0x6 || base_family == 0xf {
                ((eax >> 12) & 0xf0) | ((eax >> 4) & 0xf)
            } else {
                (eax >> 4) & 0xf
            };
            let stepping = eax & 0xf;
            o.text(
                "Signature",
                match vendor {
                    X86Vendor::Intel => format!(
                        "Type {}, Family {family}, Model {model}, Stepping {stepping}",
                        (eax >> 12) & 0x3
                    ),
                    X86Vendor::Amd => {
                        format!("Family {family}, Model {model}, Stepping {stepping}")
                    }
                },
            );
            let flags: Vec<String> = X86_FLAGS
                .iter()
                .enumerate()
                .filter(|(i, n)| !n.is_empty() && edx >> i & 1 == 1)
                .map(|(_, n)| n.to_string())
                .collect();
            if flags.is_empty() {
                o.text("Flags", "None");
            } else {
                o.list("Flags", flags);
            }
        }
    }
    o.string("Version", 0x10);
    if let Some(v) = s.byte(0x11) {
        let value = if v & 0x80 != 0 {
            let tenths = u32::from(v & 0x7f);
            format!("{}.{} V", tenths / 10, tenths % 10)
        } else {
            let volts: Vec<&str> = [(0, "5.0 V"), (1, "3.3 V"), (2, "2.9 V")]
                .iter()
                .filter(|(bit, _)| v >> bit & 1 == 1)
                .map(|(_, n)| *n)
                .collect();
            if volts.is_empty() {
                "Unknown".to_string()
            } else {
                volts.join(" ")
            }
        };
        o.text("Voltage", value);
    }
    if let Some(v) = s.word(0x12) {
        o.text("External Clock", speed(v, "MHz"));
    }
    if let Some(v) = s.word(0x14) {
        o.text("Max Speed", speed(v, "MHz"));
    }
    if let Some(v) = s.word(0x16) {
        o.text("Current Speed", speed(v, "MHz"));
    }
    if let Some(status) = s.byte(0x18) {
        let cpu = match status & 0x07 {
            0 => "Unknown",
            1 => "Enabled",
            2 => "Disabled By User",
            3 => "Disabled By BIOS",
            4 => "Idle",
            7 => "Other",
            _ => "<OUT OF SPEC>",
        };
        let value = if status & 0x40 != 0 {
            format!("Populated, {cpu}")
        } else {
            "Unpopulated".to_string()
        };
        o.text("Status", value);
    }
    o.table("Upgrade", 0x19, PROCESSOR_UPGRADES);
    for (name, offset) in [
        ("L1 Cache Handle", 0x1a),
        ("L2 Cache Handle", 0x1c),
        ("L3 Cache Handle", 0x1e),
    ] {
        if let Some(h) = s.word(offset) {
            let value = if h == 0xffff {
                "Not Provided".to_string()
            } else {
                format!("0x{h:04X}")
            };
            o.text(name, value);
        }
    }
    if o.has(0x22) {
        o.string("Serial Number", 0x20);
        o.string("Asset Tag", 0x21);
        o.string("Part Number", 0x22);
    }
    let count = |byte: Option<u8>, word: Option<u16>| -> Option<String> {
        match (byte?, word) {
            (0xff, Some(w)) if w != 0 => Some(w.to_string()),
            (0, _) => None,
            (b, _) => Some(b.to_string()),
        }
    };
    for (name, byte, word) in [
        ("Core Count", 0x23, 0x2a),
        ("Core Enabled", 0x24, 0x2c),
        ("Thread Count", 0x25, 0x2e),
    ] {
        if let Some(v) = count(s.byte(byte), s.word(word)) {
            o.text(name, v);
        }
    }
    if let Some(c) = s.word(0x26) {
        let lines = if c & 0x02 != 0 {
            vec!["Unknown".to_string()]
        } else {
            bits(c.into(), 2, PROCESSOR_CHARACTERISTICS)
        };
        if lines.is_empty() {
            o.text("Characteristics", "None");
        } else {
            o.list("Characteristics", lines);
        }
    }
    o.section
}

const ARRAY_LOCATIONS: &[(u8, &str)] = &[
    (0x01, "Other"),
    (0x02, "Unknown"),
    (0x03, "System Board Or Motherboard"),
    (0x04, "ISA Add-on Card"),
    (0x05, "EISA Add-on Card"),
    (0x06, "PCI Add-on Card"),
    (0x07, "MCA Add-on Card"),
    (0x08, "PCMCIA Add-on Card"),
    (0x09, "Proprietary Add-on Card"),
    (0x0a, "NuBus"),
];
const ARRAY_USES: &[(u8, &str)] = &[
    (0x01, "Other"),
    (0x02, "Unknown"),
    (0x03, "System Memory"),
    (0x04, "Video Memory"),
    (0x05, "Flash Memory"),
    (0x06, "Non-volatile RAM"),
    (0x07, "Cache Memory"),
];
const ERROR_CORRECTION: &[(u8, &str)] = &[
    (0x01, "Other"),
    (0x02, "Unknown"),
    (0x03, "None"),
    (0x04, "Parity"),
    (0x05, "Single-bit ECC"),
    (0x06, "Multi-bit ECC"),
    (0x07, "CRC"),
];

/// A memory array and its device count.
fn memory_array(s: &Structure<'_>) -> (Section, u64) {
    let mut o = Out::new(s);
    o.table("Location", 0x04, ARRAY_LOCATIONS);
    o.table("Use", 0x05, ARRAY_USES);
    o.table("Error Correction Type", 0x06, ERROR_CORRECTION);
    if let Some(cap) = s.dword(0x07) {
        let value = match (cap, s.qword(0x0f)) {
            (0x8000_0000, Some(bytes)) => size(bytes, 0),
            (0x8000_0000, None) => "Unknown".into(),
            (kb, _) => size(kb.into(), 1),
        };
        o.text("Maximum Capacity", value);
    }
    if let Some(h) = s.word(0x0b) {
        o.text("Error Information Handle", handle_ref(h));
    }
    let devices = s.word(0x0d).unwrap_or(0);
    o.text("Number Of Devices", devices.to_string());
    (o.section, devices.into())
}

const FORM_FACTORS: &[(u8, &str)] = &[
    (0x01, "Other"),
    (0x02, "Unknown"),
    (0x03, "SIMM"),
    (0x04, "SIP"),
    (0x05, "Chip"),
    (0x06, "DIP"),
    (0x07, "ZIP"),
    (0x08, "Proprietary Card"),
    (0x09, "DIMM"),
    (0x0a, "TSOP"),
    (0x0b, "Row Of Chips"),
    (0x0c, "RIMM"),
    (0x0d, "SODIMM"),
    (0x0e, "SRIMM"),
    (0x0f, "FB-DIMM"),
    (0x10, "Die"),
];
const MEMORY_TYPES: &[(u8, &str)] = &[
    (0x01, "Other"),
    (0x02, "Unknown"),
    (0x03, "DRAM"),
    (0x04, "EDRAM"),
    (0x05, "VRAM"),
    (0x06, "SRAM"),
    (0x07, "RAM"),
    (0x08, "ROM"),
    (0x09, "Flash"),
    (0x0a, "EEPROM"),
    (0x0b, "FEPROM"),
    (0x0c, "EPROM"),
    (0x0d, "CDRAM"),
    (0x0e, "3DRAM"),
    (0x0f, "SDRAM"),
    (0x10, "SGRAM"),
    (0x11, "RDRAM"),
    (0x12, "DDR"),
    (0x13, "DDR2"),
    (0x14, "DDR2 FB-DIMM"),
    (0x18, "DDR3"),
    (0x19, "FBD2"),
    (0x1a, "DDR4"),
    (0x1b, "LPDDR"),
    (0x1c, "LPDDR2"),
    (0x1d, "LPDDR3"),
    (0x1e, "LPDDR4"),
    (0x1f, "Logical non-volatile device"),
    (0x20, "HBM"),
    (0x21, "HBM2"),
    (0x22, "DDR5"),
    (0x23, "LPDDR5"),
    (0x24, "HBM3"),
];
const TYPE_DETAILS: &[&str] = &[
    "Other",
    "Unknown",
    "Fast-paged",
    "Static Column",
    "Pseudo-static",
    "RAMBus",
    "Synchronous",
    "CMOS",
    "EDO",
    "Window DRAM",
    "Cache DRAM",
    "Non-Volatile",
    "Registered (Buffered)",
    "Unbuffered (Unregistered)",
    "LRDIMM",
];

fn memory_device(s: &Structure<'_>) -> Section {
    let mut o = Out::new(s);
    if let Some(h) = s.word(0x04) {
        o.text("Array Handle", format!("0x{h:04X}"));
    }
    if let Some(h) = s.word(0x06) {
        o.text("Error Information Handle", handle_ref(h));
    }
    for (name, offset) in [("Total Width", 0x08), ("Data Width", 0x0a)] {
        if let Some(w) = s.word(offset) {
            let value = match w {
                0xffff | 0 => "Unknown".to_string(),
                w => format!("{w} bits"),
            };
            o.text(name, value);
        }
    }
    if let Some(raw) = s.word(0x0c) {
        let value = match raw {
            0 => "No Module Installed".to_string(),
            0xffff => "Unknown".to_string(),
            0x7fff => s.dword(0x1c).map_or_else(
                || "Unknown".into(),
                |mb| size(u64::from(mb & 0x7fff_ffff), 2),
            ),
            kb if kb & 0x8000 != 0 => size(u64::from(kb & 0x7fff), 1),
            mb => size(mb.into(), 2),
        };
        o.text("Size", value);
    }
    o.table("Form Factor", 0x0e, FORM_FACTORS);
    if let Some(set) = s.byte(0x0f) {
        let value = match set {
            0 => "None".to_string(),
            0xff => "Unknown".to_string(),
            n => n.to_string(),
        };
        o.text("Set", value);
    }
    o.string("Locator", 0x10);
    o.string("Bank Locator", 0x11);
    o.table("Type", 0x12, MEMORY_TYPES);
    if let Some(d) = s.word(0x13) {
        let lines = bits(d.into(), 1, TYPE_DETAILS);
        if lines.is_empty() {
            o.text("Type Detail", "None");
        } else {
            o.text("Type Detail", lines.join(" "));
        }
    }
    if let Some(v) = s.word(0x15) {
        o.text("Speed", speed(v, "MT/s"));
    }
    if o.has(0x1a) {
        o.string("Manufacturer", 0x17);
        o.string("Serial Number", 0x18);
        o.string("Asset Tag", 0x19);
        o.string("Part Number", 0x1a);
    }
    if let Some(rank) = s.byte(0x1b) {
        let value = match rank & 0x0f {
            0 => "Unknown".to_string(),
            n => n.to_string(),
        };
        o.text("Rank", value);
    }
    if let Some(v) = s.word(0x20) {
        o.text("Configured Memory Speed", speed(v, "MT/s"));
    }
    o.section
}

#[cfg(test)]
mod tests {
    use super::*;
    use smbios::structure;

    fn text(section: &Section, key: &str) -> String {
        match section.get(key) {
            Some(Field::Text(t)) => t.clone(),
            other => panic!("{key}: {other:?} in {section:?}"),
        }
    }

    /// The SMBIOS table of the qemu-nvme-multinic capture (SeaBIOS with a
    /// type 0/1 override, two CPUs, 256 MiB of memory).
    #[test]
    fn decodes_a_captured_table() {
        let table = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/hardware/qemu-nvme-multinic/sys")
                .join(DMI_TABLE),
        )
        .unwrap();
        let dmi = decode(&table);
        assert_eq!(text(&dmi.bios, "Vendor"), "Ferrite Firmware Inc.");
        assert_eq!(text(&dmi.bios, "Version"), "FW-2.7.1");
        assert_eq!(text(&dmi.bios, "Release Date"), "11/20/2026");
        assert_eq!(text(&dmi.bios, "Address"), "0xE8000");
        assert_eq!(text(&dmi.bios, "Runtime Size"), "96 kB");
        assert_eq!(text(&dmi.bios, "ROM Size"), "64 kB");
        assert_eq!(
            text(&dmi.bios, "Handle"),
            "Handle 0x0000, DMI type 0, 24 bytes"
        );
        assert_eq!(dmi.cpu.len(), 2);
        let cpu = &dmi.cpu[0];
        assert_eq!(text(cpu, "Socket Designation"), "CPU 0");
        assert_eq!(text(cpu, "Type"), "Central Processor");
        assert_eq!(text(cpu, "Manufacturer"), "QEMU");
        assert_eq!(text(cpu, "Version"), "pc-i440fx-10.0");
        assert_eq!(text(cpu, "Max Speed"), "2000 MHz");
        assert_eq!(text(cpu, "Status"), "Populated, Enabled");
        assert_eq!(text(cpu, "Core Count"), "1");
        assert_eq!(text(cpu, "Thread Count"), "1");
        assert_eq!(text(cpu, "Family"), "Other");
        assert_eq!(text(cpu, "ID"), "B1 0F 06 00 FD FB 8B 07");
        // Family "Other" with QEMU's version: dmidecode decodes no CPUID.
        assert!(!cpu.contains_key("Signature") && !cpu.contains_key("Flags"));
        assert_eq!(text(&dmi.memory.array, "Use"), "System Memory");
        assert_eq!(text(&dmi.memory.array, "Maximum Capacity"), "256 MB");
        assert_eq!(dmi.memory.number_of_devices, Some(1));
        assert!(!dmi.memory.array.contains_key("Handle"));
        assert_eq!(dmi.memory.devices.len(), 1);
        let dimm = &dmi.memory.devices[0];
        assert_eq!(text(dimm, "Size"), "256 MB");
        assert_eq!(text(dimm, "Locator"), "DIMM 0");
        assert_eq!(text(dimm, "Type"), "RAM");
        assert_eq!(text(dimm, "Form Factor"), "DIMM");
        assert_eq!(text(dimm, "Array Handle"), "0x1000");

        // IPA's JSON shape.
        let json = serde_json::to_value(&dmi).unwrap();
        assert_eq!(json["memory"]["Number Of Devices"], 1);
        assert!(json["memory"]["devices"][0]["Handle"].is_string());
        assert!(json["cpu"][0]["Characteristics"].is_array());
    }

    #[test]
    fn xeon_signature_and_flags() {
        let mut body = vec![0u8; 0x30 - 4];
        body[0x04 - 4] = 1;
        body[0x05 - 4] = 3;
        body[0x06 - 4] = 0xb3; // Xeon
        body[0x08 - 4..0x10 - 4].copy_from_slice(&[0x54, 0x06, 0x05, 0x00, 0xff, 0xfb, 0xeb, 0xbf]);
        body[0x18 - 4] = 0x41;
        body[0x23 - 4] = 24;
        body[0x25 - 4] = 48;
        body[0x26 - 4] = 0xfc; // 64-bit .. power/performance control
        let t = structure(4, &body, &["CPU1"]);
        let cpu = &decode(&t).cpu[0];
        assert_eq!(text(cpu, "Family"), "Xeon");
        assert_eq!(
            text(cpu, "Signature"),
            "Type 0, Family 6, Model 85, Stepping 4"
        );
        let Some(Field::List(flags)) = cpu.get("Flags") else {
            panic!("{cpu:?}")
        };
        assert_eq!(flags[0], "FPU (Floating-point unit on-chip)");
        assert!(flags.contains(&"HTT (Multi-threading)".to_string()));
        assert!(!flags.iter().any(|f| f.starts_with("PSN")));
        assert_eq!(text(cpu, "Core Count"), "24");
        assert_eq!(text(cpu, "Thread Count"), "48");
        assert_eq!(text(cpu, "Socket Designation"), "CPU1");
        let Some(Field::List(ch)) = cpu.get("Characteristics") else {
            panic!("{cpu:?}")
        };
        assert_eq!(ch[0], "64-bit capable");
        assert_eq!(ch.len(), 6);
    }

    #[test]
    fn server_memory_and_missing_strings() {
        let mut t = Vec::new();
        // Two arrays of 12 slots each; 4 TiB max through the extended size.
        for handle in [0x20u8, 0x21] {
            let mut body = vec![0u8; 0x17 - 4];
            body[0] = 3; // system board
            body[1] = 3; // system memory
            body[2] = 6; // multi-bit ECC
            body[3..7].copy_from_slice(&0x8000_0000u32.to_le_bytes());
            body[7..9].copy_from_slice(&0xfffeu16.to_le_bytes());
            body[9..11].copy_from_slice(&12u16.to_le_bytes());
            body[11..19].copy_from_slice(&(4u64 << 40).to_le_bytes());
            let mut s = structure(16, &body, &[]);
            s[2] = handle;
            t.extend(s);
        }
        // A 64 GiB RDIMM via the extended size, strings out of range.
        let mut body = vec![0u8; 0x28 - 4];
        body[0..2].copy_from_slice(&0x20u16.to_le_bytes());
        body[4..6].copy_from_slice(&72u16.to_le_bytes());
        body[6..8].copy_from_slice(&64u16.to_le_bytes());
        body[8..10].copy_from_slice(&0x7fffu16.to_le_bytes());
        body[0x0e - 4] = 0x09;
        body[0x10 - 4] = 1; // locator
        body[0x11 - 4] = 0; // no bank locator
        body[0x12 - 4] = 0x22; // DDR5
        body[0x13 - 4..0x15 - 4].copy_from_slice(&((1u16 << 7) | (1 << 13)).to_le_bytes());
        body[0x15 - 4..0x17 - 4].copy_from_slice(&4800u16.to_le_bytes());
        body[0x17 - 4] = 9; // bad index
        body[0x1b - 4] = 2;
        body[0x1c - 4..0x20 - 4].copy_from_slice(&65536u32.to_le_bytes());
        t.extend(structure(17, &body, &["P0_DIMM_A1"]));
        t.extend(structure(127, &[], &[]));
        let dmi = decode(&t);
        assert_eq!(dmi.memory.number_of_devices, Some(24));
        assert_eq!(text(&dmi.memory.array, "Maximum Capacity"), "4 TB");
        assert_eq!(
            text(&dmi.memory.array, "Error Correction Type"),
            "Multi-bit ECC"
        );
        assert_eq!(
            text(&dmi.memory.array, "Error Information Handle"),
            "Not Provided"
        );
        let d = &dmi.memory.devices[0];
        assert_eq!(text(d, "Size"), "64 GB");
        assert_eq!(text(d, "Type"), "DDR5");
        assert_eq!(text(d, "Type Detail"), "Synchronous Registered (Buffered)");
        assert_eq!(text(d, "Speed"), "4800 MT/s");
        assert_eq!(text(d, "Total Width"), "72 bits");
        assert_eq!(text(d, "Locator"), "P0_DIMM_A1");
        assert_eq!(text(d, "Bank Locator"), "Not Specified");
        assert_eq!(text(d, "Manufacturer"), "<BAD INDEX>");
        assert_eq!(text(d, "Rank"), "2");
        assert!(dmi.bios.is_empty() && dmi.cpu.is_empty());
    }

    #[test]
    fn no_memory_array_no_count() {
        let json = serde_json::to_value(decode(&[])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"bios": {}, "cpu": [], "memory": {"devices": []}})
        );
    }
}
