//! The server ramdisk on the hardware QEMU can emulate. Each machine has
//! one NIC model and one disk controller model, so every model is once the
//! machine's only NIC or only disk: PID 1 must load its driver by modalias
//! (nothing names it), the agent must look up and heartbeat through that
//! NIC, and the inventory (IPA's `get_hardware_info`, as Ironic asks it)
//! must list the NIC's MAC and the disk's size and serial. On the AHCI and
//! MegaRAID machines the conductor then deploys a whole-disk image to that
//! disk (fast track: the running agent does it), compared from the host
//! afterwards.
//!
//! The `virtual` profile boots once more with devices it lacks a driver or
//! firmware for: both are named in the log and the agent still runs.
//!
//! Direct kernel boot (PXE is not what this proves) on a sealed network,
//! one VM at a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ferrite_tests::{wait_exit, wait_for, AgentApi, Conductor};
use serde_json::{json, Value};

use crate::e2e::{conductor_serving, verb, wait_states};
use crate::qemu::{ramdisk, virtual_ramdisk, vm_slot, workspace, Arch, DirectBoot, Vm};

/// Disks are 5 GiB (sparse): the root device rule wants at least 4 GiB.
const DISK_BYTES: u64 = 5 << 30;
/// The NVMe namespace the erase runs on (issue 16 asks for 8 GiB).
const NVME_BYTES: u64 = 8 << 30;

/// A disk controller and the way QEMU attaches a disk to it.
#[derive(Debug, Clone, Copy)]
enum Disk {
    Ahci,
    Nvme,
    Megasas,
    Lsi,
    VirtioScsi,
    UsbStorage,
}

impl Disk {
    /// QEMU arguments for the controller and `drive` id `d0` on it.
    fn args(self, serial: &str) -> Vec<String> {
        let controller = |dev: &str, id: &str| vec!["-device".into(), format!("{dev},id={id}")];
        let (mut args, disk) = match self {
            Disk::Ahci => (
                controller("ich9-ahci", "hba"),
                format!("ide-hd,drive=d0,bus=hba.0,serial={serial}"),
            ),
            Disk::Nvme => (vec![], format!("nvme,drive=d0,serial={serial}")),
            Disk::Megasas => (
                controller("megasas", "hba"),
                format!("scsi-hd,drive=d0,bus=hba.0,serial={serial}"),
            ),
            Disk::Lsi => (
                controller("lsi53c895a", "hba"),
                format!("scsi-hd,drive=d0,bus=hba.0,serial={serial}"),
            ),
            Disk::VirtioScsi => (
                controller("virtio-scsi-pci", "hba"),
                format!("scsi-hd,drive=d0,bus=hba.0,serial={serial}"),
            ),
            Disk::UsbStorage => (
                controller("qemu-xhci", "hba"),
                format!("usb-storage,drive=d0,bus=hba.0,serial={serial}"),
            ),
        };
        args.extend(["-device".into(), disk]);
        args
    }

    /// The driver it needs (names the case in logs).
    fn driver(self) -> &'static str {
        match self {
            Disk::Ahci => "ahci",
            Disk::Nvme => "nvme",
            Disk::Megasas => "megaraid_sas",
            Disk::Lsi => "sym53c8xx",
            Disk::VirtioScsi => "virtio_scsi",
            Disk::UsbStorage => "usb-storage",
        }
    }
}

/// Guest memory: 512 MiB, or `FERRITE_TEST_VM_MIB` (scripts/bench-ramdisk
/// looks for the smallest that still deploys).
fn memory_mib() -> u32 {
    std::env::var("FERRITE_TEST_VM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// The ramdisk the matrix boots: the `server` profile, or
/// `FERRITE_TEST_PROFILE=virtual` (scripts/bench-ramdisk).
fn matrix_ramdisk() -> &'static (PathBuf, PathBuf) {
    match std::env::var("FERRITE_TEST_PROFILE").as_deref() {
        Ok("virtual") => virtual_ramdisk(),
        _ => ramdisk(),
    }
}

/// A machine under test: QEMU with one NIC and one disk, direct-booting a
/// ramdisk that calls back to `conductor_port`; no BOOTIF, so nothing tells
/// PID 1 which driver or NIC to use.
struct Machine {
    vm: Vm,
    disk: PathBuf,
}

impl Machine {
    fn boot(
        dir: &Path,
        ramdisk: &(PathBuf, PathBuf),
        conductor_port: u16,
        (nic, mac): (&str, &str),
        devices: Vec<String>,
        tag: &str,
    ) -> Self {
        Self::boot_with_disk(
            dir,
            ramdisk,
            conductor_port,
            (nic, mac),
            devices,
            tag,
            DISK_BYTES,
            &[],
        )
    }

    /// As [`Machine::boot`], with a disk of `bytes` holding `marks` (data
    /// at offsets) before the machine starts.
    #[allow(clippy::too_many_arguments)]
    fn boot_with_disk(
        dir: &Path,
        ramdisk: &(PathBuf, PathBuf),
        conductor_port: u16,
        (nic, mac): (&str, &str),
        devices: Vec<String>,
        tag: &str,
        bytes: u64,
        marks: &[(u64, &[u8])],
    ) -> Self {
        use std::os::unix::fs::FileExt;
        let disk = dir.join("disk.raw");
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(bytes).unwrap();
        for (offset, data) in marks {
            f.write_all_at(data, *offset).unwrap();
        }
        drop(f);
        let mut all = vec![
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=d0", disk.display()),
        ];
        all.extend(devices);
        let keep_as = format!("hardware-{tag}.log");
        let vm = Vm::boot_direct(
            dir,
            conductor_port,
            DirectBoot {
                arch: Arch::X86_64,
                ramdisk,
                memory_mib: memory_mib(),
                nic,
                mac,
                bootif: false,
                params: "",
                devices: all,
                keep_as: &keep_as,
                open_net: false,
            },
        );
        Self { vm, disk }
    }
}

/// When the kernel handed over to `/init`, in seconds of its uptime
/// (`[    3.177726] Run /init as init process`); NaN if it did not.
fn kernel_boot_secs(serial: &str) -> f64 {
    serial
        .lines()
        .find(|l| l.contains("] Run /init as init process"))
        .and_then(|l| l.split_once(']'))
        .and_then(|(ts, _)| ts.trim_start_matches('[').trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// `system.get_hardware_info` as Ironic runs it, retried while the agent
/// is busy with the conductor's first command.
async fn inventory(api: &AgentApi) -> Value {
    let res = api
        .run_within(
            "system.get_hardware_info",
            json!({}),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(res["command_status"], "SUCCEEDED", "{res}");
    res["command_result"].clone()
}

/// The inventory lists the NIC by its MAC and the disk by size and serial.
fn assert_inventory(inv: &Value, mac: &str, serial: &str, size: u64, log: &str) {
    let nics = inv["interfaces"].as_array().expect("interfaces");
    assert!(
        nics.iter().any(|n| n["mac_address"] == mac),
        "no NIC {mac} in {nics:?}\n{log}"
    );
    let disks = inv["disks"].as_array().expect("disks");
    let disk = disks
        .iter()
        .find(|d| d["serial"] == serial)
        .unwrap_or_else(|| panic!("no disk with serial {serial} in {disks:?}\n{log}"));
    assert_eq!(disk["size"], size, "{disk}");
}

/// One machine: boot, heartbeat, inventory. A deploy follows when `image`
/// is given (the node is then taken through the conductor's deploy).
async fn boot_case(nic_model: &str, disk: Disk, n: u8, image: Option<&TestImage>) {
    let _slot = vm_slot().await;
    let mac = format!("52:54:00:a5:00:{n:02x}");
    // QEMU caps SCSI serials at 20 characters.
    let serial = format!("FERRITE-HW-{n}");
    let tag = format!("{nic_model}-{}", disk.driver());
    let conductor = match image {
        Some(img) => conductor_serving(&img.dir, &["--fast-track", "true"]).await,
        None => Conductor::start(&["--fast-track", "true"]).await,
    };
    let uuid = conductor
        .create_node(json!({"driver": "fake-hardware", "name": format!("hw-{n}"),
            "automated_clean": false}))
        .await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    conductor.create_port(&uuid, &mac).await;
    if let Some(img) = image {
        verb(&conductor, &uuid, "manage").await;
        wait_states(&conductor, &uuid, &["manageable"], Duration::from_secs(30)).await;
        verb(&conductor, &uuid, "provide").await;
        wait_states(&conductor, &uuid, &["available"], Duration::from_secs(30)).await;
        img.set_as_instance_image(&conductor, &uuid).await;
    }
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bytes, marks) = match disk {
        Disk::Nvme => (NVME_BYTES, ERASE_MARKS.to_vec()),
        _ => (DISK_BYTES, Vec::new()),
    };
    let guards = matches!(disk, Disk::Nvme).then(|| GuardDisks::create(dir.path()));
    let mut devices = disk.args(&serial);
    if let Some(g) = &guards {
        devices.extend(g.qemu_args());
    }
    let mut machine = Machine::boot_with_disk(
        dir.path(),
        matrix_ramdisk(),
        port,
        (nic_model, &mac),
        devices,
        &tag,
        bytes,
        &marks,
    );
    machine
        .vm
        .wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    let secs = machine.vm.started.elapsed().as_secs_f64();
    let kernel = kernel_boot_secs(&machine.vm.proc.log_text());
    eprintln!(
        "{tag}: QEMU start -> first heartbeat {secs:.1} s (the kernel started /init at {kernel:.1} s of its uptime)"
    );

    let api = machine.vm.agent_api(&conductor, &uuid).await;
    let inv = inventory(&api).await;
    let serial_log = machine.vm.proc.log_text();
    assert_inventory(&inv, &mac, &serial, bytes, &serial_log);
    assert!(
        serial_log.contains("coldplug passes"),
        "PID 1 did not coldplug:\n{serial_log}"
    );

    if let Some(g) = &guards {
        erase_by_format(&api, &machine, g, &tag).await;
        burn_in(&api, &machine, &tag).await;
    }

    if let Some(img) = image {
        // Fast track: the agent that just heartbeated does the deploy.
        verb(&conductor, &uuid, "active").await;
        let node = wait_states(
            &conductor,
            &uuid,
            &["active", "deploy failed"],
            Duration::from_secs(300),
        )
        .await;
        assert_eq!(node["provision_state"], "active", "{}", node["last_error"]);
        wait_exit(&mut machine.vm.proc, Duration::from_secs(60))
            .await
            .expect("the agent powers the machine off after the deploy");
        img.assert_written(&machine.disk);
    }
}

/// Data the NVMe erase must remove: the start (a partition table's place),
/// the middle, and the last MiB of the namespace.
const ERASE_MARKS: [(u64, &[u8]); 3] = [
    (0, b"FERRITE-ERASE-MARK-START"),
    (4 << 30, b"FERRITE-ERASE-MARK-MIDDLE"),
    (NVME_BYTES - (1 << 20), b"FERRITE-ERASE-MARK-END"),
];

/// `erase_devices`, as Ironic's automated clean sends it, beside IPA's
/// guards ([`GuardDisks`]): first the GFS2 disk fails the step with IPA's
/// `ProtectedDeviceError` and nothing anywhere is erased; then, with the
/// node's `wipe_special_filesystems: false`, the step succeeds with IPA's
/// result shape: the NVMe namespace is erased by Format NVM (QEMU's
/// controller implements it; the log names it, the marks are gone from the
/// backing file), the GFS2 disk is erased, and the disk on the node's
/// `skip_block_devices` (by serial) and the RAID member keep every byte.
async fn erase_by_format(api: &AgentApi, machine: &Machine, guards: &GuardDisks, tag: &str) {
    use std::os::unix::fs::FileExt;
    let step = |dii: Value| {
        json!({
        "step": {"step": "erase_devices", "interface": "deploy", "priority": 10},
        "node": {"driver_internal_info": dii,
                 "properties": {"skip_block_devices": [{"serial": GuardDisks::KEEP_SERIAL}]}},
        "ports": [], "clean_version": {"generic_hardware_manager": "1.2"}})
    };
    let marks_left = || {
        let f = std::fs::File::open(&machine.disk).unwrap();
        ERASE_MARKS
            .iter()
            .filter(|(offset, mark)| {
                let mut back = vec![0u8; mark.len()];
                f.read_exact_at(&mut back, *offset).unwrap();
                back == *mark
            })
            .count()
    };
    let before = guards.contents();

    let refused = api
        .run_within(
            "clean.execute_clean_step",
            step(json!({"disk_erasure_concurrency": 4})),
            Duration::from_secs(120),
        )
        .await;
    let log = machine.vm.proc.log_text();
    assert_eq!(refused["command_status"], "FAILED", "{refused}\n{log}");
    assert_eq!(
        refused["command_error"]["type"], "ProtectedDeviceError",
        "{refused}"
    );
    let details = refused["command_error"]["details"]
        .as_str()
        .unwrap_or_default();
    assert!(
        details.starts_with("Protected Red Hat Global File System 2 located on device /dev/vd"),
        "{details}"
    );
    assert_eq!(
        marks_left(),
        ERASE_MARKS.len(),
        "a refused step erased the NVMe namespace"
    );
    assert_eq!(
        guards.contents(),
        before,
        "a refused step changed a guarded disk"
    );

    let t = std::time::Instant::now();
    let res = api
        .run_within(
            "clean.execute_clean_step",
            step(json!({"disk_erasure_concurrency": 4, "wipe_special_filesystems": false})),
            Duration::from_secs(300),
        )
        .await;
    let secs = t.elapsed().as_secs_f64();
    let log = machine.vm.proc.log_text();
    assert_eq!(res["command_status"], "SUCCEEDED", "{res}\n{log}");
    let erased = res["command_result"]["clean_result"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(erased.contains_key("/dev/nvme0n1"), "{res}");
    assert_eq!(
        erased.len(),
        2,
        "only the NVMe and the GFS2 disk may be erased: {res}"
    );
    assert!(
        log.contains("NVMe Format NVM"),
        "no Format NVM in the log:\n{log}"
    );
    assert!(
        log.contains("skipping a software RAID member"),
        "the RAID member was not named as skipped:\n{log}"
    );
    eprintln!(
        "{tag}: erase_devices of an {} GiB NVMe namespace by Format NVM (and a 64 MiB disk by shred): {secs:.1} s",
        NVME_BYTES >> 30
    );
    assert_eq!(marks_left(), 0, "data left on the NVMe namespace");
    let after = guards.contents();
    assert_eq!(after.keep, before.keep, "skip_block_devices ignored");
    assert_eq!(after.member, before.member, "the RAID member was touched");
    assert_ne!(
        after.gfs2, before.gfs2,
        "the GFS2 disk was not erased when allowed"
    );
    assert!(
        !blkid_type(&guards.gfs2).contains("gfs2"),
        "GFS2 still found after the erase"
    );
}

/// Three small virtio disks beside the NVMe namespace, each one of IPA's
/// erase guards, made on the host and checked there by the tools that
/// know them (blkid, mdadm): an ext4 disk named in the node's
/// `skip_block_devices` by serial, a GFS2 filesystem (shared-disk: the
/// step must refuse it), and a member of a two-disk RAID-1 (md v1.2).
struct GuardDisks {
    keep: PathBuf,
    gfs2: PathBuf,
    member: PathBuf,
}

/// What the guarded disks hold, to compare before and after.
#[derive(Debug, PartialEq, Eq)]
struct GuardContents {
    keep: Vec<u8>,
    gfs2: Vec<u8>,
    member: Vec<u8>,
}

impl GuardDisks {
    const KEEP_SERIAL: &'static str = "FERRITE-KEEP";
    const BYTES: u64 = 64 << 20;

    fn create(dir: &Path) -> Self {
        let blank = |name: &str| {
            let path = dir.join(name);
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(Self::BYTES))
                .unwrap();
            path
        };
        let (keep, gfs2, member) = (blank("keep.raw"), blank("gfs2.raw"), blank("member.raw"));
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "keep"])
            .arg(&keep)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        write_at(&gfs2, 64 << 10, &gfs2_superblock());
        assert_eq!(
            blkid_type(&gfs2),
            "gfs2",
            "blkid does not see the GFS2 superblock"
        );
        write_at(&member, 4096, &md_v12_superblock(Self::BYTES));
        let examine = Command::new("mdadm")
            .arg("--examine")
            .arg(&member)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&examine.stdout);
        assert!(
            examine.status.success() && text.contains("raid1"),
            "mdadm does not see a RAID-1 member: {text}{}",
            String::from_utf8_lossy(&examine.stderr)
        );
        Self { keep, gfs2, member }
    }

    fn qemu_args(&self) -> Vec<String> {
        [
            (&self.keep, Self::KEEP_SERIAL),
            (&self.gfs2, "FERRITE-GFS2"),
            (&self.member, "FERRITE-MEMBER"),
        ]
        .iter()
        .enumerate()
        .flat_map(|(i, (path, serial))| {
            [
                "-drive".to_string(),
                format!("file={},format=raw,if=none,id=g{i}", path.display()),
                "-device".to_string(),
                format!("virtio-blk-pci,drive=g{i},serial={serial}"),
            ]
        })
        .collect()
    }

    fn contents(&self) -> GuardContents {
        let read = |p: &Path| std::fs::read(p).unwrap();
        GuardContents {
            keep: read(&self.keep),
            gfs2: read(&self.gfs2),
            member: read(&self.member),
        }
    }
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(data, offset))
        .unwrap();
}

/// `blkid -p`'s TYPE for a file ("" when it finds nothing).
fn blkid_type(path: &Path) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A GFS2 superblock (big-endian, at 64 KiB): the metadata header (magic,
/// type 1 = superblock, format 100), then `sb_fs_format` 1801 and
/// `sb_multihost_format` 1900, as mkfs.gfs2 writes them and blkid checks.
fn gfs2_superblock() -> Vec<u8> {
    let mut sb = vec![0u8; 512];
    for (at, v) in [
        (0, 0x0116_1970u32),
        (4, 1),
        (16, 100),
        (24, 1801),
        (28, 1900),
    ] {
        sb[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    sb
}

/// An md v1.2 superblock (at 4 KiB) of device 0 of a two-disk RAID-1 on a
/// disk of `bytes`, with the checksum the kernel computes
/// (`calc_sb_1_csum`): enough for mdadm and the kernel to call it a member.
fn md_v12_superblock(bytes: u64) -> Vec<u8> {
    const MAX_DEV: usize = 2;
    let mut sb = vec![0u8; 256 + 2 * MAX_DEV];
    let put32 =
        |sb: &mut Vec<u8>, at: usize, v: u32| sb[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |sb: &mut Vec<u8>, at: usize, v: u64| sb[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let data_offset: u64 = 2048; // sectors
    let data_size = bytes / 512 - data_offset;
    put32(&mut sb, 0, 0xa92b_4efc); // magic
    put32(&mut sb, 4, 1); // major_version
    sb[16..32].copy_from_slice(&[0x5a; 16]); // set_uuid
    sb[32..44].copy_from_slice(b"ferrite:md0\0");
    put64(&mut sb, 64, 1_700_000_000); // ctime
    put32(&mut sb, 72, 1); // level
    put64(&mut sb, 80, data_size); // size
    put32(&mut sb, 92, 2); // raid_disks
    put64(&mut sb, 128, data_offset);
    put64(&mut sb, 136, data_size);
    put64(&mut sb, 144, 8); // super_offset: 4 KiB
    put64(&mut sb, 152, 0); // recovery_offset
    put32(&mut sb, 160, 0); // dev_number
    sb[168..184].copy_from_slice(&[0xa5; 16]); // device_uuid
    put64(&mut sb, 192, 1_700_000_000); // utime
    put64(&mut sb, 200, 1); // events
    put64(&mut sb, 208, u64::MAX); // resync_offset: in sync
    put32(&mut sb, 220, MAX_DEV as u32);
    sb[256..258].copy_from_slice(&0u16.to_le_bytes()); // dev_roles[0] = slot 0
    sb[258..260].copy_from_slice(&1u16.to_le_bytes()); // dev_roles[1] = slot 1
    let sum: u64 = sb
        .chunks(4)
        .map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap())))
        .sum();
    let csum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    put32(&mut sb, 216, csum);
    sb
}

/// Each burn-in step for about two seconds in the guest, with IPA's
/// parameters, on the real CPU, memory and NVMe namespace; then one of its
/// failure conditions (memory the guest cannot map) fails its step.
async fn burn_in(api: &AgentApi, machine: &Machine, tag: &str) {
    let step = |name: &str, driver_info: Value| {
        json!({
        "step": {"step": name, "interface": "deploy", "priority": 0},
        "node": {"driver_info": driver_info}, "ports": [],
        "clean_version": {"generic_hardware_manager": "1.2"}})
    };
    for (name, settings) in [
        ("burnin_cpu", json!({"agent_burnin_cpu_timeout": 2})),
        (
            "burnin_memory",
            json!({"agent_burnin_vm_vm": 1, "agent_burnin_vm_vm-bytes": "32m",
                   "agent_burnin_vm_timeout": 2}),
        ),
        (
            "burnin_disk",
            json!({"agent_burnin_fio_disk_runtime": 2, "agent_burnin_fio_disk_loops": 1}),
        ),
    ] {
        let t = std::time::Instant::now();
        let res = api
            .run_within(
                "clean.execute_clean_step",
                step(name, settings),
                Duration::from_secs(120),
            )
            .await;
        let secs = t.elapsed().as_secs_f64();
        let log = machine.vm.proc.log_text();
        assert_eq!(res["command_status"], "SUCCEEDED", "{name}: {res}\n{log}");
        assert!(secs >= 2.0, "{name} ended after {secs:.1} s");
        eprintln!("{tag}: {name} for 2 s in the guest: step took {secs:.1} s");
    }
    let log = machine.vm.proc.log_text();
    assert!(
        log.contains("disk burn-in finished") && log.contains("verify_errors: 0"),
        "no disk burn-in report in the log:\n{log}"
    );
    let failed = api
        .run_within(
            "clean.execute_clean_step",
            step(
                "burnin_memory",
                json!({"agent_burnin_vm_vm": 1, "agent_burnin_vm_vm-bytes": "1048576g",
                       "agent_burnin_vm_timeout": 2}),
            ),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(failed["command_status"], "FAILED", "{failed}");
    assert!(
        failed["command_error"]["details"]
            .as_str()
            .unwrap_or_default()
            .starts_with("memory burn-in (vm) failed:"),
        "{failed}"
    );
}

/// Benchmark, not a test (`scripts/bench-erase`): `erase_devices` of the
/// same 8 GiB NVMe namespace three ways in one guest: Format NVM (what the
/// agent does), Ironic's default shred (one random pass, then zeros; what
/// an agent without Format does, IPA's `shred`), and the zero pass alone.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_erase_format_vs_shred() {
    let _slot = vm_slot().await;
    let mac = "52:54:00:a5:00:e0";
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let uuid = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "bench-erase"}))
        .await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    conductor.create_port(&uuid, mac).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut machine = Machine::boot_with_disk(
        dir.path(),
        matrix_ramdisk(),
        port,
        ("igb", mac),
        Disk::Nvme.args("FERRITE-BENCH"),
        "bench-erase",
        NVME_BYTES,
        &ERASE_MARKS,
    );
    machine
        .vm
        .wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    let api = machine.vm.agent_api(&conductor, &uuid).await;
    let mut times = Vec::new();
    for (how, dii) in [
        ("Format NVM", json!({})),
        (
            "shred, 1 random pass + zeros (Ironic's defaults)",
            json!({"agent_enable_nvme_secure_erase": false,
                   "agent_erase_devices_iterations": 1, "agent_erase_devices_zeroize": true}),
        ),
        (
            "zeros only",
            json!({"agent_enable_nvme_secure_erase": false,
                   "agent_erase_devices_iterations": 0, "agent_erase_devices_zeroize": true}),
        ),
    ] {
        let step = json!({
            "step": {"step": "erase_devices", "interface": "deploy", "priority": 10},
            "node": {"driver_internal_info": dii},
            "ports": [], "clean_version": {"generic_hardware_manager": "1.2"}});
        let t = std::time::Instant::now();
        // Asynchronously, polled: a shred outlasts any one HTTP request.
        let body = json!({"name": "clean.execute_clean_step", "params": step});
        let started = loop {
            // 409 while the agent is busy (the conductor's get_clean_steps).
            match api.post("", body.clone()).await {
                (409, _) => tokio::time::sleep(Duration::from_millis(200)).await,
                (_, started) => break started,
            }
        };
        let id = started["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no command id in {started}"))
            .to_string();
        let res = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (_, res) = api
                .get(&format!("/v1/commands/{id}?agent_token={}", api.token))
                .await;
            if res["command_status"] != "RUNNING" {
                break res;
            }
        };
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(res["command_status"], "SUCCEEDED", "{how}: {res}");
        times.push(secs);
        println!("erase: {how}: {secs:.1} s");
    }
    println!(
        "erase: {} GiB NVMe namespace under TCG: shred takes {:.0}x as long as Format NVM, zeros alone {:.0}x",
        NVME_BYTES >> 30,
        times[1] / times[0],
        times[2] / times[0]
    );
}

/// A qcow2 whole-disk image of random bytes (made by qemu-img) and its
/// raw guest bytes, served by the conductor at /images/disk.qcow2.
pub(crate) struct TestImage {
    pub(crate) dir: PathBuf,
    pub(crate) raw: Vec<u8>,
    sha256: String,
}

impl TestImage {
    pub(crate) fn get() -> &'static TestImage {
        static IMAGE: OnceLock<TestImage> = OnceLock::new();
        IMAGE.get_or_init(|| {
            let dir = workspace().join("build/hardware-image");
            std::fs::create_dir_all(&dir).unwrap();
            // 24 MiB: random, a zero run, random again (a qcow2 with a hole).
            let mut raw = vec![0u8; 24 << 20];
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for (i, chunk) in raw.chunks_mut(8).enumerate() {
                if (8 << 17..16 << 17).contains(&i) {
                    continue;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            let raw_path = dir.join("disk.raw");
            std::fs::write(&raw_path, &raw).unwrap();
            let qcow2 = dir.join("disk.qcow2");
            let status = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw_path)
                .arg(&qcow2)
                .status()
                .expect("qemu-img");
            assert!(status.success());
            std::fs::remove_file(&raw_path).unwrap();
            let out = Command::new("sha256sum").arg(&qcow2).output().unwrap();
            let sha256 = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            TestImage { dir, raw, sha256 }
        })
    }

    /// Make the image the node's instance image, served by the conductor.
    pub(crate) async fn set_as_instance_image(&self, conductor: &Conductor, uuid: &str) {
        conductor
            .patch_node(
                uuid,
                json!([{"op": "add", "path": "/instance_info", "value": {
                    "image_source": "http://10.0.2.100/images/disk.qcow2",
                    "image_checksum": self.sha256, "image_disk_format": "qcow2"}}]),
            )
            .await;
    }

    /// The disk starts with the image's bytes.
    fn assert_written(&self, disk: &Path) {
        use std::io::Read;
        let mut head = vec![0u8; self.raw.len()];
        std::fs::File::open(disk)
            .and_then(|mut f| f.read_exact(&mut head))
            .unwrap();
        assert!(head == self.raw, "the disk does not hold the image's bytes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn e1000_and_ahci_deploy() {
    boot_case("e1000", Disk::Ahci, 1, Some(TestImage::get())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn e1000e_and_megasas_deploy() {
    boot_case("e1000e", Disk::Megasas, 2, Some(TestImage::get())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn igb_and_nvme() {
    boot_case("igb", Disk::Nvme, 3, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vmxnet3_and_lsi_scsi() {
    boot_case("vmxnet3", Disk::Lsi, 4, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rtl8139_and_virtio_scsi() {
    boot_case("rtl8139", Disk::VirtioScsi, 5, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn virtio_net_and_usb_storage() {
    boot_case("virtio-net-pci", Disk::UsbStorage, 6, None).await;
}

/// A MegaRAID controller, whose driver the `virtual` profile does not ship,
/// and an Intel 82551 NIC, whose e100 driver it ships without the microcode
/// the driver asks for: both are logged by name, and the agent still looks
/// up and heartbeats through its virtio NIC.
#[tokio::test(flavor = "multi_thread")]
async fn missing_driver_and_missing_firmware_are_logged_and_the_agent_runs() {
    let _slot = vm_slot().await;
    let mac = "52:54:00:a5:00:10";
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let uuid = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "hw-bad"}))
        .await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    conductor.create_port(&uuid, mac).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let devices = [
        "-device",
        "megasas",
        "-device",
        "i82551,mac=52:54:00:a5:00:11",
    ]
    .map(String::from)
    .to_vec();
    let mut machine = Machine::boot(
        dir.path(),
        virtual_ramdisk(),
        port,
        ("virtio-net-pci", mac),
        devices,
        "virtual-bad-input",
    );
    machine
        .vm
        .wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    let vm = &machine.vm;
    // The e100 asks for its microcode when its link comes up, which PID 1
    // does for every NIC without BOOTIF.
    let log = wait_for(
        "the missing firmware warning",
        Duration::from_secs(60),
        || {
            let log = vm.proc.log_text();
            async move { log.contains("firmware e100/").then_some(log) }
        },
    )
    .await;
    assert!(
        log.contains("modalias pci:v00001000d00000060")
            && log.contains("the kernel's megaraid_sas would drive it"),
        "no line naming the missing driver and modalias:\n{log}"
    );
    assert!(
        log.contains("firmware e100/d102e_ucode.bin is missing for driver e100"),
        "no line naming the missing firmware and its driver:\n{log}"
    );
    assert!(!log.contains("Kernel panic"), "{log}");
}
