//! The hardware inventory in IPA's `list_hardware_info` shape, read natively
//! from sysfs, procfs, the SMBIOS table and the kernel's address list. All
//! roots are injectable so tests run on fixture trees.

pub mod bmc;
pub mod cpu;
pub mod lldp;
pub mod net;
pub mod smbios;

use std::fs;
use std::path::{Path, PathBuf};

use ferrite_protocol::inventory::{Boot, Disk, Firmware, Inventory, Memory, SystemVendor};

use crate::config::Config;
use crate::disk::{list_block_devices, DiskPolicy};

/// The inventory of this machine as the agent's settings describe it
/// (IPA's `list_hardware_info`): what `get_hardware_info` returns and
/// what inspection posts. `skip_bmc` is Ironic's `agent_skip_bmc_detect`.
pub fn collect_for(cfg: &Config, skip_bmc: bool) -> Inventory {
    let roots = Roots {
        sysfs: cfg.sysfs_root.clone(),
        procfs: cfg.procfs_root.clone(),
        dev: cfg.dev_root.clone(),
    };
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let arch = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.to_string());
    let mut inv = collect(&roots, cfg.bootif_raw.as_deref(), &hostname, &arch);
    // An explicit `ferrite-disks` list is the machine's set of disks (an
    // agent simulating a machine on a host): report only those, so the
    // conductor's root disk and local_gb describe what the agent may deploy
    // to. Without a list every disk is reported (reading harms nothing).
    if let Some(policy @ DiskPolicy::Only(_)) = &cfg.disks {
        inv.disks = disks(&roots, policy);
    }
    if cfg.collect_lldp {
        let names: Vec<String> = inv.interfaces.iter().map(|i| i.name.clone()).collect();
        let mut found = lldp::collect(&names, cfg.lldp_timeout);
        for iface in &mut inv.interfaces {
            iface.lldp = found.remove(&iface.name).map(|tlvs| lldp::to_json(&tlvs));
        }
    }
    if !skip_bmc {
        let bmc = bmc::collect(&cfg.dev_root);
        inv.bmc_address = bmc.address;
        inv.bmc_v6address = bmc.v6address;
        inv.bmc_mac = bmc.mac;
    }
    inv
}

/// The SMBIOS table (system vendor, firmware, installed memory).
pub const DMI_TABLE: &str = "firmware/dmi/tables/DMI";
/// Present on UEFI boots.
pub const EFI_DIR: &str = "firmware/efi";
/// Hot-plug memory blocks: `block_size_bytes` and `memory*/online`.
pub const MEMORY_BLOCKS_DIR: &str = "devices/system/memory";
/// What the inventory reads under the procfs root.
pub const PROCFS_FILES: &[&str] = &["cpuinfo", "meminfo"];

/// Installed memory without SMBIOS memory devices (many VMs): the online
/// hot-plug memory blocks, as lshw counts them for IPA.
fn memory_blocks_mb(sysfs: &Path) -> Option<u64> {
    let dir = sysfs.join(MEMORY_BLOCKS_DIR);
    let block = fs::read_to_string(dir.join("block_size_bytes")).ok()?;
    let block = u64::from_str_radix(block.trim().trim_start_matches("0x"), 16).ok()?;
    let online = fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("memory"))
        .filter(|e| fs::read_to_string(e.path().join("online")).is_ok_and(|o| o.trim() == "1"))
        .count() as u64;
    (online > 0).then(|| online * block / (1 << 20))
}

/// IPA's `utils.guess_root_disk`: the smallest disk of at least 4 GiB
/// (name breaks ties), the disk deploy picks when there are no hints.
pub fn guess_root_disk(disks: &[Disk]) -> Option<Disk> {
    crate::disk::root::smallest_root(disks, |d| (d.size, d.name.as_str())).cloned()
}

/// Where to read from.
#[derive(Debug, Clone)]
pub struct Roots {
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub dev: PathBuf,
}

impl Roots {
    /// The live system (IPs come from the kernel only then).
    pub fn is_live(&self) -> bool {
        self.sysfs == Path::new("/sys")
    }
}

/// The disks `policy` lets the agent see, as IPA reports them.
fn disks(roots: &Roots, policy: &DiskPolicy) -> Vec<Disk> {
    list_block_devices(&roots.sysfs, &roots.dev, policy)
        .into_iter()
        .map(|d| Disk {
            name: d.path.to_string_lossy().into_owned(),
            // lsblk's MODEL and IPA's sysfs `vendor` are null when absent
            // (virtio disks have no model, NVMe no vendor).
            model: Some(d.model).filter(|m| !m.is_empty()),
            size: d.size,
            rotational: d.rotational,
            wwn: d.wwn,
            serial: d.serial,
            vendor: Some(d.vendor).filter(|v| !v.is_empty()),
            wwn_with_extension: d.wwn_with_extension,
            wwn_vendor_extension: d.wwn_vendor_extension,
            hctl: d.hctl,
            by_path: d.by_path,
            logical_sectors: d.logical_sectors,
            physical_sectors: d.physical_sectors,
            tran: d.tran,
        })
        .collect()
}

/// Collect the inventory. `bootif` is the raw `BOOTIF` kernel parameter.
pub fn collect(
    roots: &Roots,
    bootif: Option<&str>,
    hostname: &str,
    architecture: &str,
) -> Inventory {
    let addresses = if roots.is_live() {
        net::live_addresses()
    } else {
        net::Addresses::new()
    };
    let dmi = fs::read(roots.sysfs.join(DMI_TABLE))
        .map(|t| smbios::parse(&t))
        .unwrap_or_default();
    let total = fs::read_to_string(roots.procfs.join("meminfo"))
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    let disks = disks(roots, &DiskPolicy::All);
    Inventory {
        interfaces: net::collect(&roots.sysfs, &addresses),
        cpu: cpu::collect(&roots.procfs, &roots.sysfs, architecture),
        disks,
        memory: Memory {
            total,
            physical_mb: dmi.memory_mb.or_else(|| memory_blocks_mb(&roots.sysfs)),
        },
        // Filled in by `collect_for` (it needs the IPMI device).
        bmc_address: None,
        bmc_v6address: None,
        bmc_mac: None,
        system_vendor: SystemVendor {
            product_name: dmi.product_name,
            serial_number: dmi.serial_number,
            manufacturer: dmi.manufacturer,
            firmware: Firmware {
                vendor: dmi.bios_vendor,
                version: dmi.bios_version,
                build_date: dmi.bios_date,
            },
        },
        boot: Boot {
            current_boot_mode: if roots.sysfs.join(EFI_DIR).exists() {
                "uefi"
            } else {
                "bios"
            }
            .into(),
            pxe_interface: bootif.map(str::to_string),
        },
        hostname: hostname.to_string(),
    }
}

/// A captured machine under `agent/tests/fixtures/hardware/`.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Roots {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hardware")
        .join(name);
    assert!(base.is_dir(), "no fixture {}", base.display());
    Roots {
        sysfs: base.join("sys"),
        procfs: base.join("proc"),
        dev: base.join("dev"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_memory_from_memory_blocks_without_smbios() {
        let sys = tempfile::tempdir().unwrap();
        let mem = sys.path().join("devices/system/memory");
        fs::create_dir_all(&mem).unwrap();
        fs::write(mem.join("block_size_bytes"), "8000000\n").unwrap();
        for (i, online) in ["1", "1", "0"].iter().enumerate() {
            fs::create_dir_all(mem.join(format!("memory{i}"))).unwrap();
            fs::write(mem.join(format!("memory{i}/online")), online).unwrap();
        }
        assert_eq!(
            memory_blocks_mb(sys.path()),
            Some(256),
            "two online 128 MiB blocks"
        );
        assert_eq!(memory_blocks_mb(&sys.path().join("nothing")), None);
    }

    #[test]
    fn root_disk_guess_is_the_smallest_of_at_least_4_gib() {
        let disk = |name: &str, size: u64| Disk {
            name: name.into(),
            size,
            ..Disk::default()
        };
        let disks = [
            disk("/dev/sdc", 8 << 30),
            disk("/dev/sda", 2 << 30),
            disk("/dev/sdb", 8 << 30),
            disk("/dev/sdd", 100 << 30),
        ];
        assert_eq!(guess_root_disk(&disks).unwrap().name, "/dev/sdb");
        assert_eq!(guess_root_disk(&disks[1..2]), None);
    }

    #[test]
    fn fixture_tree_gives_a_complete_inventory() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let proc_ = root.path().join("proc");
        let dev = root.path().join("dev");
        for d in [&sys, &proc_, &dev] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(
            proc_.join("meminfo"),
            "MemTotal:        2097152 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        fs::write(proc_.join("cpuinfo"), "processor\t: 0\nmodel name\t: QEMU Virtual CPU\ncpu MHz\t: 2400.000\nflags\t: fpu lm\n").unwrap();
        fs::create_dir_all(sys.join("firmware/efi")).unwrap();
        fs::create_dir_all(sys.join("firmware/dmi/tables")).unwrap();
        let mut table = smbios::structure(1, &[1, 2, 0, 0], &["QEMU", "Standard PC"]);
        let mut mem = vec![0u8; 0x20];
        mem[0x0c - 4..0x0e - 4].copy_from_slice(&2048u16.to_le_bytes());
        table.extend(smbios::structure(17, &mem, &[]));
        fs::write(sys.join("firmware/dmi/tables/DMI"), table).unwrap();
        let nvme = sys.join("block/nvme0n1");
        fs::create_dir_all(nvme.join("queue")).unwrap();
        fs::write(nvme.join("size"), format!("{}\n", 800u64 << 21)).unwrap();
        let roots = Roots {
            sysfs: sys,
            procfs: proc_,
            dev,
        };
        let inv = collect(&roots, Some("01-52-54-00-ab-cd-01"), "node-1", "x86_64");
        assert_eq!(inv.memory.total, 2 << 30);
        assert_eq!(inv.memory.physical_mb, Some(2048));
        assert_eq!(inv.cpu.count, 1);
        assert_eq!(inv.boot.current_boot_mode, "uefi");
        assert_eq!(
            inv.boot.pxe_interface.as_deref(),
            Some("01-52-54-00-ab-cd-01")
        );
        assert_eq!(inv.system_vendor.manufacturer.as_deref(), Some("QEMU"));
        assert_eq!(inv.disks.len(), 1);
        assert_eq!(inv.disks[0].name, "/dev/nvme0n1");
        assert_eq!(inv.disks[0].size, 800 << 30);
        assert_eq!(inv.disks[0].tran.as_deref(), Some("nvme"));
        assert_eq!(inv.hostname, "node-1");
    }

    /// This project's CI machine, captured with `scripts/capture-hardware-fixture`.
    #[test]
    fn captured_ci_vm() {
        let inv = collect(&fixture("ferrite-ci-vm"), None, "ci", "x86_64");
        let names: Vec<_> = inv.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0"], "ifb*/lo are virtual");
        let eth0 = &inv.interfaces[0];
        assert_eq!(eth0.mac_address, "02:fc:00:00:00:01");
        assert_eq!(eth0.pci_address.as_deref(), Some("0000:00:03.0"));
        assert_eq!(eth0.driver.as_deref(), Some("virtio_net"));
        assert_eq!(eth0.vendor.as_deref(), Some("0x1af4"));
        assert_eq!(inv.cpu.count, 2);
        assert_eq!(inv.cpu.model_name.as_deref(), Some("AMD EPYC"));
        assert_eq!(inv.disks.len(), 1);
        assert_eq!(
            (inv.disks[0].name.as_str(), inv.disks[0].size),
            ("/dev/vda", 536870912 * 512)
        );
        assert_eq!(inv.disks[0].vendor.as_deref(), Some("0x1af4"));
        assert_eq!(inv.boot.current_boot_mode, "bios");
        assert!(inv.memory.total > 20 << 30);
        assert_eq!(inv.memory.physical_mb, None, "this VM has no SMBIOS table");
    }

    /// A QEMU guest captured by the ramdisk's PID 1
    /// (`scripts/capture-qemu-fixture`): NVMe (multipath-capable, so the
    /// kernel also shows the hidden path device `nvme0c0n1`), virtio and
    /// virtio-SCSI disks, two virtio-net NICs and a vmxnet3, two sockets,
    /// SMBIOS strings from `-smbios`. No udev in the ramdisk: no by-path.
    #[test]
    fn captured_qemu_nvme_multinic() {
        let inv = collect(
            &fixture("qemu-nvme-multinic"),
            Some("01-52-54-00-fe-00-01"),
            "node",
            "x86_64",
        );
        let nics: Vec<_> = inv
            .interfaces
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.mac_address.as_str(),
                    i.driver.as_deref(),
                    i.pci_address.as_deref(),
                    i.vendor.as_deref(),
                    i.product.as_deref(),
                    i.speed_mbps,
                    i.has_carrier,
                )
            })
            .collect();
        assert_eq!(
            nics,
            [
                (
                    "eth0",
                    "52:54:00:fe:00:01",
                    Some("virtio_net"),
                    Some("0000:00:08.0"),
                    Some("0x1af4"),
                    Some("0x0001"),
                    None,
                    true
                ),
                (
                    "eth1",
                    "52:54:00:fe:00:02",
                    Some("virtio_net"),
                    Some("0000:00:09.0"),
                    Some("0x1af4"),
                    Some("0x0001"),
                    None,
                    true
                ),
                (
                    "eth2",
                    "52:54:00:fe:00:03",
                    Some("vmxnet3"),
                    Some("0000:00:0a.0"),
                    Some("0x15ad"),
                    Some("0x07b0"),
                    Some(1000),
                    true
                ),
            ],
            "lo is left out; virtio-net reports no speed"
        );

        let names: Vec<_> = inv.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["/dev/nvme0n1", "/dev/sda", "/dev/vda", "/dev/vdb"],
            "the hidden NVMe path device nvme0c0n1 is not a disk"
        );
        let nvme = &inv.disks[0];
        assert_eq!(nvme.model.as_deref(), Some("QEMU NVMe Ctrl"));
        assert_eq!(nvme.serial.as_deref(), Some("FERRITE-NVME-1"));
        assert_eq!(nvme.size, 8 << 30);
        assert!(!nvme.rotational);
        assert_eq!(nvme.tran.as_deref(), Some("nvme"));
        assert_eq!(
            nvme.wwn.as_deref(),
            Some("nvme.1b36-464552524954452d4e564d452d31-51454d55204e564d65204374726c-00000001"),
            "the namespace's wwid (vendor 1b36, serial, model, nsid 1), as udev's ID_WWN"
        );
        assert_eq!(
            (
                nvme.wwn_with_extension.as_deref(),
                nvme.vendor.as_deref(),
                nvme.hctl.as_deref(),
                nvme.by_path.as_deref()
            ),
            (None, None, None, None)
        );
        assert_eq!((nvme.logical_sectors, nvme.physical_sectors), (512, 512));

        let sda = &inv.disks[1];
        assert_eq!(
            (
                sda.vendor.as_deref(),
                sda.model.as_deref(),
                sda.serial.as_deref()
            ),
            (Some("FERRITE"), Some("SCSI-DISK"), Some("FERRITE-SCSI-1"))
        );
        assert_eq!(sda.wwn.as_deref(), Some("0x5000c50015ea71ac"));
        assert_eq!(
            sda.wwn_with_extension.as_deref(),
            Some("0x5000c50015ea71ac")
        );
        assert_eq!(sda.hctl.as_deref(), Some("0:0:0:0"));
        assert_eq!(sda.size, 16 << 30);
        assert!(sda.rotational);
        assert_eq!(sda.tran, None, "virtio-scsi has no lsblk transport");

        let vda = &inv.disks[2];
        assert_eq!(
            (
                vda.serial.as_deref(),
                vda.model.as_deref(),
                vda.vendor.as_deref(),
                vda.size
            ),
            (Some("FERRITE-VD-1"), None, Some("0x1af4"), 12 << 30)
        );
        assert_eq!(inv.disks[3].serial.as_deref(), Some("FERRITE-CAPTURE"));
        assert_eq!(inv.disks[3].size, 64 << 20);
        assert_eq!(
            guess_root_disk(&inv.disks).unwrap().name,
            "/dev/nvme0n1",
            "8 GiB: the smallest disk of at least 4 GiB (vdb has 64 MiB)"
        );

        assert_eq!(inv.cpu.count, 2);
        assert_eq!(inv.cpu.socket_count, 2);
        assert_eq!(
            inv.cpu.model_name.as_deref(),
            Some("QEMU Virtual CPU version 2.5+")
        );
        assert!(
            inv.cpu.flags.iter().any(|f| f == "lm"),
            "{:?}",
            inv.cpu.flags
        );

        let sv = &inv.system_vendor;
        assert_eq!(sv.manufacturer.as_deref(), Some("Ferrite Labs"));
        assert_eq!(sv.product_name.as_deref(), Some("FX-1000 Test Node"));
        assert_eq!(sv.serial_number.as_deref(), Some("FERRITE-SN-0001"));
        assert_eq!(sv.firmware.vendor.as_deref(), Some("Ferrite Firmware Inc."));
        assert_eq!(sv.firmware.version.as_deref(), Some("FW-2.7.1"));
        assert_eq!(sv.firmware.build_date.as_deref(), Some("11/20/2026"));

        assert_eq!(inv.memory.physical_mb, Some(256), "-m 256: SMBIOS type 17");
        assert!(inv.memory.total > 200 << 20 && inv.memory.total < 256 << 20);
        assert_eq!(inv.boot.current_boot_mode, "bios");
    }

    /// The arm64 ramdisk on QEMU `virt` (TCG, `-cpu max`, `-smp 2`, 512 MiB,
    /// direct kernel boot: no firmware, so no SMBIOS and no EFI), captured by
    /// its PID 1 onto the first virtio disk (16 MiB; the second is 64 MiB):
    ///   qemu-system-aarch64 -M virt -cpu max -accel tcg -m 512 -smp 2 -nodefaults
    ///     -kernel deploy.kernel -initrd deploy.initramfs
    ///     -append "console=ttyAMA0 ferrite-capture-hardware=/dev/vda"
    ///     -device virtio-blk-pci (capture, then disk)
    ///     -device virtio-net-pci,mac=52:54:00:a6:40:01 (sealed slirp)
    #[test]
    fn captured_qemu_virt_arm64() {
        let inv = collect(
            &fixture("qemu-virt-arm64"),
            Some("01-52-54-00-a6-40-01"),
            "node",
            "aarch64",
        );
        assert_eq!(inv.cpu.architecture, "aarch64");
        assert_eq!(inv.cpu.count, 2);
        assert_eq!(inv.cpu.model_name, None, "implementer 0: no name");
        assert_eq!(inv.cpu.frequency, None);
        let nics: Vec<_> = inv
            .interfaces
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.mac_address.as_str(),
                    i.driver.as_deref(),
                    i.pci_address.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            nics,
            [(
                "eth0",
                "52:54:00:a6:40:01",
                Some("virtio_net"),
                Some("0000:00:03.0")
            )]
        );
        let disks: Vec<_> = inv
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.size, d.vendor.as_deref()))
            .collect();
        assert_eq!(
            disks,
            [
                ("/dev/vda", 16 << 20, Some("0x1af4")),
                ("/dev/vdb", 64 << 20, Some("0x1af4"))
            ]
        );
        let sv = &inv.system_vendor;
        assert_eq!(
            (&sv.manufacturer, &sv.product_name, &sv.firmware.vendor),
            (&None, &None, &None),
            "no SMBIOS on virt without firmware"
        );
        assert_eq!(inv.memory.total, 486532 * 1024);
        assert_eq!(
            inv.memory.physical_mb,
            Some(512),
            "4 memory blocks of 128 MiB"
        );
        assert_eq!(inv.boot.current_boot_mode, "bios", "no /sys/firmware/efi");
    }

    /// Every captured machine's inventory has IPA's JSON shape, key for key.
    #[test]
    fn captured_fixtures_have_ipas_json_shape() {
        for name in ["ferrite-ci-vm", "qemu-nvme-multinic", "qemu-virt-arm64"] {
            let inv = collect(&fixture(name), Some("01-52-54-00-fe-00-01"), "h", "x86_64");
            assert!(
                !inv.disks.is_empty() && !inv.interfaces.is_empty(),
                "{name}"
            );
            let json = serde_json::to_value(&inv).unwrap();
            assert_eq!(
                ferrite_protocol::inventory::ipa_shape_mismatches(&json),
                Vec::<String>::new(),
                "{name}"
            );
        }
    }
}
