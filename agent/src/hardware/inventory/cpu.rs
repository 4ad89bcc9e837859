//! CPU facts from `/proc/cpuinfo` and sysfs (what IPA gets from lscpu).
//!
//! On aarch64 the kernel prints no `model name`: lscpu (IPA's source) names
//! the core from the MIDR fields `CPU implementer` and `CPU part` with
//! util-linux's table (`lscpu-arm.c`), and so does [`arm_core_name`] for the
//! 64-bit cores in it. A core it does not know (QEMU's `-cpu max` has
//! implementer 0) gets no model name: lscpu prints `-` there, the agent null.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use ferrite_protocol::inventory::Cpu;

/// lscpu's maximum frequency (kHz), under the sysfs root.
pub const MAX_FREQ: &str = "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq";

pub fn collect(procfs: &Path, sysfs: &Path, architecture: &str) -> Cpu {
    let text = fs::read_to_string(procfs.join("cpuinfo")).unwrap_or_default();
    let mut cpu = Cpu {
        architecture: architecture.to_string(),
        ..Cpu::default()
    };
    let mut sockets = BTreeSet::new();
    let mut mhz: Option<String> = None;
    let (mut implementer, mut part) = (None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => cpu.count += 1,
            "model name" | "cpu model" if cpu.model_name.is_none() => {
                cpu.model_name = Some(value.to_string())
            }
            "cpu MHz" if mhz.is_none() => mhz = Some(value.to_string()),
            "physical id" => {
                sockets.insert(value.to_string());
            }
            "flags" | "Features" if cpu.flags.is_empty() => {
                cpu.flags = value.split_whitespace().map(str::to_string).collect()
            }
            "CPU implementer" if implementer.is_none() => implementer = parse_hex(value),
            "CPU part" if part.is_none() => part = parse_hex(value),
            _ => {}
        }
    }
    if cpu.model_name.is_none() {
        if let (Some(implementer), Some(part)) = (implementer, part) {
            cpu.model_name = arm_core_name(implementer, part).map(str::to_string);
        }
    }
    cpu.socket_count = sockets.len().max(usize::from(cpu.count > 0)) as u32;
    // lscpu prefers the maximum frequency (kHz in sysfs).
    let max_khz = fs::read_to_string(sysfs.join(MAX_FREQ))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    cpu.frequency = match max_khz {
        Some(khz) => Some(format!("{:.4}", khz as f64 / 1000.0)),
        None => mhz,
    };
    cpu
}

/// `0x41` → 0x41 (the MIDR fields /proc/cpuinfo prints in hex).
fn parse_hex(value: &str) -> Option<u32> {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

/// The name lscpu gives an Arm core (its "Model name"), from the MIDR's
/// implementer and part number: the 64-bit cores of util-linux's table.
/// lscpu treats part 0 as "no part", so neither names one.
pub fn arm_core_name(implementer: u32, part: u32) -> Option<&'static str> {
    let name = match (implementer, part) {
        (_, 0) => return None,
        // Arm Ltd.
        (0x41, 0xd02) => "Cortex-A34",
        (0x41, 0xd03) => "Cortex-A53",
        (0x41, 0xd04) => "Cortex-A35",
        (0x41, 0xd05) => "Cortex-A55",
        (0x41, 0xd06) => "Cortex-A65",
        (0x41, 0xd07) => "Cortex-A57",
        (0x41, 0xd08) => "Cortex-A72",
        (0x41, 0xd09) => "Cortex-A73",
        (0x41, 0xd0a) => "Cortex-A75",
        (0x41, 0xd0b) => "Cortex-A76",
        (0x41, 0xd0c) => "Neoverse-N1",
        (0x41, 0xd0d) => "Cortex-A77",
        (0x41, 0xd0e) => "Cortex-A76AE",
        (0x41, 0xd40) => "Neoverse-V1",
        (0x41, 0xd41) => "Cortex-A78",
        (0x41, 0xd42) => "Cortex-A78AE",
        (0x41, 0xd43) => "Cortex-A65AE",
        (0x41, 0xd44) => "Cortex-X1",
        (0x41, 0xd46) => "Cortex-A510",
        (0x41, 0xd47) => "Cortex-A710",
        (0x41, 0xd48) => "Cortex-X2",
        (0x41, 0xd49) => "Neoverse-N2",
        (0x41, 0xd4a) => "Neoverse-E1",
        (0x41, 0xd4b) => "Cortex-A78C",
        (0x41, 0xd4c) => "Cortex-X1C",
        (0x41, 0xd4d) => "Cortex-A715",
        (0x41, 0xd4e) => "Cortex-X3",
        (0x41, 0xd4f) => "Neoverse-V2",
        (0x41, 0xd80) => "Cortex-A520",
        (0x41, 0xd81) => "Cortex-A720",
        (0x41, 0xd82) => "Cortex-X4",
        (0x41, 0xd84) => "Neoverse-V3",
        (0x41, 0xd8e) => "Neoverse-N3",
        // Broadcom, Cavium / Marvell.
        (0x42, 0x516) => "ThunderX2",
        (0x43, 0x0a0) => "ThunderX",
        (0x43, 0x0a1) => "ThunderX-88XX",
        (0x43, 0x0a2) => "ThunderX-81XX",
        (0x43, 0x0a3) => "ThunderX-83XX",
        (0x43, 0x0af) => "ThunderX2-99xx",
        (0x43, 0x0b8) => "ThunderX3-T110",
        (0x46, 0x001) => "A64FX",
        (0x48, 0xd01) => "Kunpeng-920",
        (0x48, 0xd40) => "Cortex-A76",
        (0x4e, 0x003) => "Denver 2",
        (0x4e, 0x004) => "Carmel",
        (0x51, 0x800) => "Falkor-V1/Kryo",
        (0x51, 0xc00) => "Falkor",
        (0x51, 0xc01) => "Saphira",
        (0x70, 0x660) => "FTC660",
        (0x70, 0x661) => "FTC661",
        (0x70, 0x662) => "FTC662",
        (0x70, 0x663) => "FTC663",
        (0xc0, 0xac3) => "Ampere-1",
        (0xc0, 0xac4) => "Ampere-1a",
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sockets_and_max_frequency() {
        let root = tempfile::tempdir().unwrap();
        let proc_ = root.path().join("proc");
        let sys = root.path().join("sys");
        fs::create_dir_all(&proc_).unwrap();
        let mut info = String::new();
        for i in 0..4 {
            info.push_str(&format!(
                "processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Gold 6130\ncpu MHz\t\t: 2100.000\nphysical id\t: {}\nflags\t\t: fpu vme sse2\n\n",
                i / 2
            ));
        }
        fs::write(proc_.join("cpuinfo"), info).unwrap();
        fs::create_dir_all(sys.join("devices/system/cpu/cpu0/cpufreq")).unwrap();
        fs::write(
            sys.join("devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
            "3700000\n",
        )
        .unwrap();
        let cpu = collect(&proc_, &sys, "x86_64");
        assert_eq!(cpu.count, 4);
        assert_eq!(cpu.socket_count, 2);
        assert_eq!(cpu.frequency.as_deref(), Some("3700.0000"));
        assert_eq!(
            cpu.model_name.as_deref(),
            Some("Intel(R) Xeon(R) Gold 6130")
        );
        assert_eq!(cpu.flags, ["fpu", "vme", "sse2"]);
    }

    /// /proc/cpuinfo of the arm64 ramdisk on QEMU `virt -cpu neoverse-n1`
    /// (TCG; captured with `ferrite-capture-hardware=`, as the
    /// `qemu-virt-arm64` fixture, which has `-cpu max`).
    const NEOVERSE_N1: &str = "processor\t: 0\nBogoMIPS\t: 125.00\n\
        Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n\
        CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n";

    #[test]
    fn arm64_core_named_from_implementer_and_part() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cpuinfo"), NEOVERSE_N1).unwrap();
        let cpu = collect(root.path(), &root.path().join("no-sys"), "aarch64");
        assert_eq!(cpu.architecture, "aarch64");
        assert_eq!(cpu.count, 1);
        assert_eq!(cpu.socket_count, 1);
        assert_eq!(cpu.model_name.as_deref(), Some("Neoverse-N1"));
        assert_eq!(cpu.frequency, None, "no cpu MHz, no cpufreq on virt");
        assert_eq!(cpu.flags.len(), 16);
        assert_eq!(cpu.flags[..2], ["fp", "asimd"]);
    }

    #[test]
    fn arm64_unknown_core_has_no_model_name() {
        // QEMU's `-cpu max`: implementer 0, which lscpu does not decode.
        let fixture = crate::hardware::inventory::fixture("qemu-virt-arm64");
        let cpu = collect(&fixture.procfs, &fixture.sysfs, "aarch64");
        assert_eq!(cpu.count, 2);
        assert_eq!(cpu.socket_count, 1);
        assert_eq!(cpu.model_name, None);
        assert!(["asimd", "sve2", "rng"]
            .iter()
            .all(|f| cpu.flags.iter().any(|g| g == f)));
    }

    #[test]
    fn arm_core_table() {
        assert_eq!(arm_core_name(0x41, 0xd08), Some("Cortex-A72"));
        assert_eq!(arm_core_name(0x41, 0xd4f), Some("Neoverse-V2"));
        assert_eq!(arm_core_name(0x48, 0xd01), Some("Kunpeng-920"));
        assert_eq!(arm_core_name(0xc0, 0xac3), Some("Ampere-1"));
        assert_eq!(arm_core_name(0x00, 0x051), None, "QEMU max");
        assert_eq!(arm_core_name(0x41, 0xfff), None);
        assert_eq!(arm_core_name(0x50, 0x000), None, "part 0: lscpu names none");
        assert_eq!(parse_hex("0xd0c"), Some(0xd0c));
        assert_eq!(parse_hex("d0c"), None);
    }
}
