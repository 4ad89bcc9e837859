//! CPU facts from `/proc/cpuinfo` and sysfs (what IPA gets from lscpu).

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
            _ => {}
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
}
