//! IPA's `extra-hardware` collector without the `hardware-detect` program:
//! the same `[category, item, key, value]` records (posted under `data`;
//! Ironic's `extra_hardware` hook turns them into `extra.<category>.
//! <item>.<key>`), built from what the agent already reads natively: the
//! inventory, the decoded SMBIOS table, the NUMA topology, `/proc/cpuinfo`
//! and the kernel's identity in procfs.
//!
//! Covered categories and keys (hardware-detect's names):
//! `system/product/{vendor,name,serial,uuid,version}`,
//! `system/kernel/{version,arch,cmdline}`, `firmware/bios/{vendor,version,date}`,
//! `memory/total/size` (bytes), `memory/bank:<n>/{size,slot,description,vendor,product,serial,clock}`,
//! `cpu/physical/number`, `cpu/logical/number`,
//! `cpu/physical_<n>/{vendor,product,cores,threads,frequency,flags}`,
//! `disk/logical/count`, `disk/<name>/{size,vendor,model,serial,rotational}` (size in GB),
//! `network/<name>/{serial,ipv4,ipv6,link,driver,businfo,speed}`,
//! `numa/nodes/count`, `numa/node_<n>/{cpu_count,cpu_mask}`.
//! Benchmarks (`ipa-inspection-benchmarks`) are not run.

use std::collections::BTreeMap;
use std::path::Path;

use ferrite_protocol::inventory::Inventory;
use serde::Serialize;

use super::dmi::{Dmi, Field};
use super::numa::NumaTopology;
use super::read_bounded;
use crate::hardware::inventory::smbios;

/// The kernel's release, under the procfs root (a capture records it).
pub const OSRELEASE: &str = "sys/kernel/osrelease";
/// What is read under the procfs root besides `cpuinfo` (the kernel
/// command line is read too, but is not machine data worth a fixture).
pub const PROCFS_FILES: &[&str] = &[OSRELEASE];

/// A record value: hardware-detect emits numbers for counts, else text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Number(u64),
    Text(String),
}

/// `[category, item, key, value]`.
pub type Item = (String, String, String, Value);

/// What the records are made from; each part optional.
#[derive(Debug, Default)]
pub struct Sources<'a> {
    pub inventory: Option<&'a Inventory>,
    pub dmi: Option<&'a Dmi>,
    /// The raw SMBIOS table (system UUID and version).
    pub smbios: Option<&'a [u8]>,
    pub numa: Option<&'a NumaTopology>,
    /// The procfs root (`cpuinfo`, `sys/kernel/osrelease`, `cmdline`).
    pub procfs: Option<&'a Path>,
    pub arch: &'a str,
}

#[derive(Default)]
struct Items(Vec<Item>);

impl Items {
    fn text(&mut self, c: &str, i: &str, k: &str, v: impl Into<String>) {
        let v = v.into();
        if !v.is_empty() {
            self.0.push((c.into(), i.into(), k.into(), Value::Text(v)));
        }
    }

    fn opt(&mut self, c: &str, i: &str, k: &str, v: Option<&String>) {
        if let Some(v) = v {
            self.text(c, i, k, v.as_str());
        }
    }

    fn num(&mut self, c: &str, i: &str, k: &str, v: u64) {
        self.0
            .push((c.into(), i.into(), k.into(), Value::Number(v)));
    }
}

pub fn collect(src: &Sources<'_>) -> Vec<Item> {
    let mut out = Items::default();
    system(&mut out, src);
    memory(&mut out, src);
    cpus(&mut out, src);
    if let Some(inv) = src.inventory {
        disks(&mut out, inv);
        network(&mut out, inv);
    }
    if let Some(numa) = src.numa {
        numa_nodes(&mut out, numa);
    }
    out.0
}

/// SMBIOS type 1's UUID as dmidecode prints it (SMBIOS ≥ 2.6 byte order).
fn system_uuid(table: &[u8]) -> Option<String> {
    let s = smbios::structures(table)
        .into_iter()
        .find(|s| s.kind == 1)?;
    let b = s.formatted.get(0x08..0x18)?;
    if b.iter().all(|x| *x == 0) || b.iter().all(|x| *x == 0xff) {
        return None;
    }
    let hex = |r: &[u8]| r.iter().map(|x| format!("{x:02X}")).collect::<String>();
    let rev = |r: &[u8]| hex(&r.iter().rev().copied().collect::<Vec<_>>());
    Some(format!(
        "{}-{}-{}-{}-{}",
        rev(&b[0..4]),
        rev(&b[4..6]),
        rev(&b[6..8]),
        hex(&b[8..10]),
        hex(&b[10..16])
    ))
}

fn system(out: &mut Items, src: &Sources<'_>) {
    if let Some(inv) = src.inventory {
        let v = &inv.system_vendor;
        out.opt("system", "product", "vendor", v.manufacturer.as_ref());
        out.opt("system", "product", "name", v.product_name.as_ref());
        out.opt("system", "product", "serial", v.serial_number.as_ref());
    }
    if let Some(table) = src.smbios {
        if let Some(uuid) = system_uuid(table) {
            out.text("system", "product", "uuid", uuid);
        }
        let version = smbios::structures(table)
            .into_iter()
            .find(|s| s.kind == 1)
            .and_then(|s| s.string(0x06));
        out.opt("system", "product", "version", version.as_ref());
    }
    if let Some(proc_) = src.procfs {
        if let Ok(release) = read_bounded(&proc_.join(OSRELEASE), 256) {
            out.text("system", "kernel", "version", release.trim());
        }
        out.text("system", "kernel", "arch", src.arch);
        if let Ok(cmdline) = read_bounded(&proc_.join("cmdline"), 4096) {
            out.text("system", "kernel", "cmdline", cmdline.trim());
        }
    }
    if let Some(inv) = src.inventory {
        let f = &inv.system_vendor.firmware;
        out.opt("firmware", "bios", "vendor", f.vendor.as_ref());
        out.opt("firmware", "bios", "version", f.version.as_ref());
        out.opt("firmware", "bios", "date", f.build_date.as_ref());
    }
}

/// `16 GB` → bytes.
fn dmi_bytes(size: &str) -> Option<u64> {
    let (n, unit) = size.split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let shift = match unit {
        "bytes" => 0,
        "kB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

fn memory(out: &mut Items, src: &Sources<'_>) {
    if let Some(inv) = src.inventory {
        let total = inv
            .memory
            .physical_mb
            .map_or(inv.memory.total, |mb| mb << 20);
        out.num("memory", "total", "size", total);
    }
    let Some(dmi) = src.dmi else { return };
    let text = |s: &BTreeMap<String, Field>, k: &str| match s.get(k) {
        Some(Field::Text(t)) if t != "Not Specified" && t != "Unknown" => Some(t.clone()),
        _ => None,
    };
    for (n, dev) in dmi.memory.devices.iter().enumerate() {
        let Some(bytes) = text(dev, "Size").and_then(|s| dmi_bytes(&s)) else {
            continue;
        };
        let bank = format!("bank:{n}");
        out.num("memory", &bank, "size", bytes);
        out.opt("memory", &bank, "slot", text(dev, "Locator").as_ref());
        let description: Vec<String> = ["Form Factor", "Type", "Type Detail"]
            .iter()
            .filter_map(|k| text(dev, k))
            .collect();
        out.text("memory", &bank, "description", description.join(" "));
        out.opt(
            "memory",
            &bank,
            "vendor",
            text(dev, "Manufacturer").as_ref(),
        );
        out.opt(
            "memory",
            &bank,
            "product",
            text(dev, "Part Number").as_ref(),
        );
        out.opt(
            "memory",
            &bank,
            "serial",
            text(dev, "Serial Number").as_ref(),
        );
        if let Some(mts) = text(dev, "Speed").and_then(|s| s.split(' ').next()?.parse::<u64>().ok())
        {
            out.num("memory", &bank, "clock", mts * 1_000_000);
        }
    }
}

/// One socket as /proc/cpuinfo describes it.
#[derive(Default)]
struct Socket {
    vendor: Option<String>,
    product: Option<String>,
    cores: Option<u64>,
    threads: u64,
    mhz: Option<String>,
    flags: Option<String>,
}

fn cpus(out: &mut Items, src: &Sources<'_>) {
    let Some(proc_) = src.procfs else { return };
    let Ok(text) = read_bounded(&proc_.join("cpuinfo"), 4 << 20) else {
        return;
    };
    let mut sockets: BTreeMap<u64, Socket> = BTreeMap::new();
    let mut logical = 0;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let field = |name: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        if field("processor").is_none() {
            continue;
        }
        logical += 1;
        let id = field("physical id")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let s = sockets.entry(id).or_default();
        s.threads += 1;
        s.vendor = s.vendor.take().or_else(|| field("vendor_id"));
        s.product = s.product.take().or_else(|| field("model name"));
        s.cores = s
            .cores
            .or_else(|| field("cpu cores").and_then(|v| v.parse().ok()));
        s.mhz = s.mhz.take().or_else(|| field("cpu MHz"));
        s.flags = s
            .flags
            .take()
            .or_else(|| field("flags").or_else(|| field("Features")));
    }
    if logical == 0 {
        return;
    }
    out.num("cpu", "physical", "number", sockets.len() as u64);
    for (n, (_, s)) in sockets.iter().enumerate() {
        let item = format!("physical_{n}");
        out.opt("cpu", &item, "vendor", s.vendor.as_ref());
        out.opt("cpu", &item, "product", s.product.as_ref());
        out.num("cpu", &item, "cores", s.cores.unwrap_or(s.threads));
        out.num("cpu", &item, "threads", s.threads);
        if let Some(hz) = s
            .mhz
            .as_deref()
            .and_then(|m| m.parse::<f64>().ok())
            .map(|m| (m * 1e6).round() as u64)
        {
            out.num("cpu", &item, "frequency", hz);
        }
        out.opt("cpu", &item, "flags", s.flags.as_ref());
    }
    out.num("cpu", "logical", "number", logical);
}

fn disks(out: &mut Items, inv: &Inventory) {
    out.num("disk", "logical", "count", inv.disks.len() as u64);
    for d in &inv.disks {
        let name = d.name.trim_start_matches("/dev/");
        out.num("disk", name, "size", d.size / 1_000_000_000);
        out.opt("disk", name, "vendor", d.vendor.as_ref());
        out.opt("disk", name, "model", d.model.as_ref());
        out.opt("disk", name, "serial", d.serial.as_ref());
        out.num("disk", name, "rotational", u64::from(d.rotational));
    }
}

fn network(out: &mut Items, inv: &Inventory) {
    for i in &inv.interfaces {
        let n = i.name.as_str();
        out.text("network", n, "serial", i.mac_address.as_str());
        out.opt("network", n, "ipv4", i.ipv4_address.as_ref());
        out.opt("network", n, "ipv6", i.ipv6_address.as_ref());
        out.text(
            "network",
            n,
            "link",
            if i.has_carrier { "yes" } else { "no" },
        );
        out.opt("network", n, "driver", i.driver.as_ref());
        if let Some(pci) = &i.pci_address {
            out.text("network", n, "businfo", format!("pci@{pci}"));
        }
        if let Some(speed) = i.speed_mbps {
            out.text("network", n, "speed", format!("{speed}Mbit/s"));
        }
    }
}

fn numa_nodes(out: &mut Items, numa: &NumaTopology) {
    out.num("numa", "nodes", "count", numa.ram.len() as u64);
    for node in &numa.ram {
        let threads: Vec<u32> = numa
            .cpus
            .iter()
            .filter(|c| c.numa_node == node.numa_node)
            .flat_map(|c| c.thread_siblings.iter().copied())
            .collect();
        let item = format!("node_{}", node.numa_node);
        out.num("numa", &item, "cpu_count", threads.len() as u64);
        let mask = threads
            .iter()
            .filter(|t| **t < 128)
            .fold(0u128, |m, t| m | 1 << t);
        out.text("numa", &item, "cpu_mask", format!("0x{mask:x}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::collectors::{dmi, numa};
    use crate::hardware::inventory::{collect as inventory, Roots};

    fn find<'a>(items: &'a [Item], c: &str, i: &str, k: &str) -> Option<&'a Value> {
        items
            .iter()
            .find(|(a, b, d, _)| a == c && b == i && d == k)
            .map(|(_, _, _, v)| v)
    }

    /// The qemu-nvme-multinic capture: its inventory, SMBIOS and cpuinfo.
    #[test]
    fn records_from_a_captured_machine() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hardware/qemu-nvme-multinic");
        let roots = Roots {
            sysfs: base.join("sys"),
            procfs: base.join("proc"),
            dev: base.join("dev"),
        };
        let inv = inventory(&roots, None, "fixture", "x86_64");
        let table = std::fs::read(base.join("sys/firmware/dmi/tables/DMI")).unwrap();
        let dmi = dmi::decode(&table);
        let items = collect(&Sources {
            inventory: Some(&inv),
            dmi: Some(&dmi),
            smbios: Some(&table),
            numa: None,
            procfs: Some(&roots.procfs),
            arch: "x86_64",
        });
        let text = |c, i, k| match find(&items, c, i, k) {
            Some(Value::Text(t)) => t.clone(),
            other => panic!("{c}/{i}/{k}: {other:?}"),
        };
        let num = |c, i, k| match find(&items, c, i, k) {
            Some(Value::Number(n)) => *n,
            other => panic!("{c}/{i}/{k}: {other:?}"),
        };
        assert_eq!(text("system", "product", "vendor"), "Ferrite Labs");
        assert_eq!(text("system", "product", "name"), "FX-1000 Test Node");
        assert_eq!(text("system", "product", "serial"), "FERRITE-SN-0001");
        assert_eq!(text("system", "product", "version"), "rev-B");
        assert_eq!(text("system", "product", "uuid").len(), 36);
        assert_eq!(text("firmware", "bios", "vendor"), "Ferrite Firmware Inc.");
        assert_eq!(text("system", "kernel", "arch"), "x86_64");
        assert_eq!(
            num("memory", "total", "size"),
            inv.memory.physical_mb.unwrap() << 20
        );
        assert_eq!(num("memory", "bank:0", "size"), 256 << 20);
        assert_eq!(text("memory", "bank:0", "slot"), "DIMM 0");
        assert_eq!(num("cpu", "logical", "number"), u64::from(inv.cpu.count));
        assert_eq!(
            num("cpu", "physical", "number"),
            u64::from(inv.cpu.socket_count)
        );
        assert_eq!(num("disk", "logical", "count"), inv.disks.len() as u64);
        for nic in &inv.interfaces {
            assert_eq!(text("network", &nic.name, "serial"), nic.mac_address);
        }
        // Every record is a 4-list, as Ironic's strict extra_hardware check wants.
        let json = serde_json::to_value(&items).unwrap();
        assert!(json
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i.as_array().is_some_and(|a| a.len() == 4)));
    }

    #[test]
    fn numa_records() {
        let t = numa::NumaTopology {
            ram: vec![
                numa::NodeRam {
                    numa_node: 0,
                    size_kb: 1,
                },
                numa::NodeRam {
                    numa_node: 1,
                    size_kb: 1,
                },
            ],
            cpus: vec![
                numa::NodeCpu {
                    cpu: 0,
                    numa_node: 0,
                    thread_siblings: vec![0, 2],
                },
                numa::NodeCpu {
                    cpu: 0,
                    numa_node: 1,
                    thread_siblings: vec![1, 3],
                },
            ],
            nics: vec![],
        };
        let items = collect(&Sources {
            numa: Some(&t),
            ..Sources::default()
        });
        assert_eq!(
            find(&items, "numa", "nodes", "count"),
            Some(&Value::Number(2))
        );
        assert_eq!(
            find(&items, "numa", "node_1", "cpu_count"),
            Some(&Value::Number(2))
        );
        assert_eq!(
            find(&items, "numa", "node_1", "cpu_mask"),
            Some(&Value::Text("0xa".into()))
        );
    }
}
