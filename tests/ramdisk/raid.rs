//! Software RAID through ferrite-conductor, as Ironic's agent RAID
//! interface drives it, on a QEMU machine with two virtio disks:
//!
//! 1. `PUT .../states/raid` sets a RAID-1 `target_raid_config`; manual
//!    cleaning runs `delete_configuration` then `create_configuration`:
//!    the agent partitions both disks, writes md v1.2 superblocks and
//!    starts `/dev/md0` through sysfs (no mdadm). The node's `raid_config`
//!    records the result.
//! 2. A whole-disk image is deployed (fast track): the install device is
//!    `md0`, not a disk, so both disks hold the image after the member's
//!    data offset (a mirror), read back from the host.
//! 3. A second boot of the same disks: `delete_configuration` assembles the
//!    array it finds on disk, stops it, zeroes the superblocks and wipes
//!    both disks; the host then finds no partition table and no md magic.
//!
//!
//! In UEFI (OVMF), a second test deploys the bootable `uefi.qcow2` onto the
//! mirror: `install_bootloader` gives each disk an ESP, mirrors them (md
//! metadata 1.0, plain FAT to firmware), copies the image's ESP onto them
//! and writes an NVRAM entry per disk. The machine then boots from its
//! disks, and from the second disk alone.
//!
//! Direct kernel boot (PXE is not what this proves) on a sealed network.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrite_tests::{wait_exit, Conductor, Proc};
use serde_json::{json, Value};

use crate::e2e::{
    checksum_of, conductor_serving, test_images, verb, wait_states, MARKER, OVMF_CODE, OVMF_VARS,
};
use crate::hardware::TestImage;
use crate::qemu::{ramdisk, vm_slot, Arch, DirectBoot, Vm};

const MAC: &str = "52:54:00:a5:10:01";
/// Each disk: the root device rule wants 4 GiB, and md0 is a little less
/// than its members.
const DISK_BYTES: u64 = 5 << 30;
/// md's superblock magic, little-endian on disk.
const MD_MAGIC: [u8; 4] = 0xa92b_4efc_u32.to_le_bytes();

fn boot(dir: &Path, port: u16, disks: &[PathBuf], keep_as: &str) -> Vm {
    boot_with(dir, port, disks, keep_as, Vec::new())
}

/// OVMF with its own variable store (the machine's NVRAM).
fn ovmf_args(vars: &Path) -> Vec<String> {
    vec![
        "-machine".into(),
        "q35".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ]
}

fn boot_with(
    dir: &Path,
    port: u16,
    disks: &[PathBuf],
    keep_as: &str,
    mut devices: Vec<String>,
) -> Vm {
    for (i, d) in disks.iter().enumerate() {
        devices.push("-drive".to_string());
        devices.push(format!("file={},format=raw,if=none,id=r{i}", d.display()));
        devices.push("-device".to_string());
        devices.push(format!("virtio-blk-pci,drive=r{i},serial=FERRITE-RAID-{i}"));
    }
    Vm::boot_direct(
        dir,
        port,
        DirectBoot {
            arch: Arch::X86_64,
            ramdisk: ramdisk(),
            memory_mib: 768,
            nic: "virtio-net-pci",
            mac: MAC,
            bootif: true,
            params: "",
            devices,
            keep_as,
            open_net: false,
        },
    )
}

async fn put_raid(conductor: &Conductor, uuid: &str, config: Value) -> (u16, String) {
    let resp = conductor
        .request(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/raid"),
        )
        .json(&config)
        .send()
        .await
        .expect("PUT states/raid");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// Manual cleaning with `steps`; the node must come back to `manageable`
/// without an error.
async fn clean(conductor: &Conductor, uuid: &str, steps: Value, vm: &Vm) -> Value {
    let (code, body) = conductor
        .act(uuid, json!({"target": "clean", "clean_steps": steps}))
        .await;
    assert_eq!(code, 202, "{body}");
    let node = wait_states(
        conductor,
        uuid,
        &["manageable", "clean failed"],
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(
        node["last_error"],
        Value::Null,
        "{steps}: {node}\n{}",
        vm.proc.log_text()
    );
    assert_eq!(node["provision_state"], "manageable", "{node}");
    node
}

/// From `manageable`: `provide`, the instance image (set by `set_image`),
/// `active` by fast track; the deploy must succeed and the agent power
/// the machine off. Returns the machine's serial log.
async fn deploy<'a, F, Fut>(
    conductor: &'a Conductor,
    uuid: &'a str,
    vm: &mut Vm,
    set_image: F,
) -> String
where
    F: FnOnce(&'a Conductor, &'a str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    verb(conductor, uuid, "provide").await;
    wait_states(conductor, uuid, &["available"], Duration::from_secs(60)).await;
    set_image(conductor, uuid).await;
    verb(conductor, uuid, "active").await;
    let node = wait_states(
        conductor,
        uuid,
        &["active", "deploy failed"],
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(
        node["provision_state"],
        "active",
        "{}\n{}",
        node["last_error"],
        vm.proc.log_text()
    );
    wait_exit(&mut vm.proc, Duration::from_secs(60))
        .await
        .expect("the agent powers the machine off after the deploy");
    vm.proc.log_text()
}

fn read_at(disk: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// The first msdos partition's start, in bytes.
fn first_partition_start(disk: &Path) -> u64 {
    let mbr = read_at(disk, 0, 512);
    assert_eq!(
        &mbr[510..],
        &[0x55, 0xaa],
        "no msdos table on {}",
        disk.display()
    );
    let lba = u32::from_le_bytes(mbr[0x1be + 8..0x1be + 12].try_into().unwrap());
    u64::from(lba) * 512
}

/// Where the array's data starts on a member disk: the partition start
/// plus the superblock's `data_offset` (sectors, at byte 128).
fn member_data_start(disk: &Path) -> u64 {
    let start = first_partition_start(disk);
    let sb = read_at(disk, start + 4096, 256);
    assert_eq!(sb[..4], MD_MAGIC, "no md superblock on {}", disk.display());
    assert_eq!(u32::from_le_bytes(sb[4..8].try_into().unwrap()), 1);
    assert_eq!(
        i32::from_le_bytes(sb[72..76].try_into().unwrap()),
        1,
        "level"
    );
    start + u64::from_le_bytes(sb[128..136].try_into().unwrap()) * 512
}

#[tokio::test(flavor = "multi_thread")]
async fn raid1_created_deployed_onto_and_deleted() {
    let _slot = vm_slot().await;
    let img = TestImage::get();
    let conductor = conductor_serving(&img.dir, &["--fast-track", "true"]).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();
    let uuid = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "raid-1",
            "automated_clean": false}))
        .await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    conductor.create_port(&uuid, MAC).await;

    // The API refuses what Ironic's schema refuses.
    let (code, body) = put_raid(
        &conductor,
        &uuid,
        json!({"logical_disks": [{"size_gb": "MAX", "raid_level": "7"}]}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("RAID config validation error"), "{body}");
    let target = json!({"logical_disks": [{"size_gb": "MAX", "raid_level": "1",
        "controller": "software", "is_root_volume": true}]});
    let (code, body) = put_raid(&conductor, &uuid, target.clone()).await;
    assert_eq!(code, 204, "{body}");
    assert_eq!(conductor.node(&uuid).await["target_raid_config"], target);

    verb(&conductor, &uuid, "manage").await;
    wait_states(&conductor, &uuid, &["manageable"], Duration::from_secs(30)).await;

    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("disk{i}.raw")))
        .collect();
    for d in &disks {
        std::fs::File::create(d)
            .unwrap()
            .set_len(DISK_BYTES)
            .unwrap();
    }
    let vm1_dir = dir.path().join("boot1");
    std::fs::create_dir_all(&vm1_dir).unwrap();
    let mut vm = boot(&vm1_dir, port, &disks, "raid-boot1.log");
    vm.wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;

    // 1. Create (after deleting whatever is there, as operators do).
    let steps = json!([
        {"interface": "raid", "step": "delete_configuration"},
        {"interface": "raid", "step": "create_configuration"},
    ]);
    let node = clean(&conductor, &uuid, steps, &vm).await;
    let lds = &node["raid_config"]["logical_disks"];
    assert_eq!(lds[0]["raid_level"], "1", "{node}");
    assert_eq!(lds[0]["controller"], "software", "{node}");
    assert!(node["raid_config"]["last_updated"].is_string(), "{node}");

    // 2. Deploy onto the array.
    let serial = deploy(&conductor, &uuid, &mut vm, |c, u| async move {
        img.set_as_instance_image(c, u).await
    })
    .await;
    assert!(
        serial.contains("md/raid1:md0: active with 2 out of 2 mirrors"),
        "the kernel did not run the mirror:\n{serial}"
    );
    assert!(
        serial.contains("device=/dev/md0"),
        "the deploy did not go to /dev/md0:\n{serial}"
    );
    for d in &disks {
        let at = member_data_start(d);
        let got = read_at(d, at, img.raw.len());
        assert!(
            got == img.raw,
            "{} does not hold the image at the array's data offset {at}",
            d.display()
        );
    }
    drop(vm);

    // 3. A fresh ramdisk on the same disks deletes the configuration.
    verb(&conductor, &uuid, "deleted").await;
    wait_states(&conductor, &uuid, &["available"], Duration::from_secs(120)).await;
    verb(&conductor, &uuid, "manage").await;
    wait_states(&conductor, &uuid, &["manageable"], Duration::from_secs(30)).await;
    let vm2_dir = dir.path().join("boot2");
    std::fs::create_dir_all(&vm2_dir).unwrap();
    let mut vm = boot(&vm2_dir, port, &disks, "raid-boot2.log");
    conductor.wait_agent(&uuid).await;
    let node = clean(
        &conductor,
        &uuid,
        json!([{"interface": "raid", "step": "delete_configuration"}]),
        &vm,
    )
    .await;
    assert_eq!(node["raid_config"], json!({}), "{node}");
    let serial = vm.proc.log_text();
    assert!(
        serial.contains("md array assembled"),
        "the array on disk was not assembled before deletion:\n{serial}"
    );
    let api = vm.agent_api(&conductor, &uuid).await;
    vm.power_off(&api, Duration::from_secs(120)).await;
    for d in &disks {
        let head = read_at(d, 0, 2 << 20);
        assert!(
            head.iter().all(|&b| b == 0),
            "{}: the table and first member superblock must be gone",
            d.display()
        );
        let tail = read_at(d, DISK_BYTES - (1 << 20), 1 << 20);
        assert!(
            !tail.windows(4).any(|w| w == MD_MAGIC),
            "{}: md magic left at the end",
            d.display()
        );
    }
}

/// The machine powered on from its disks (no kernel given, no network):
/// OVMF follows its NVRAM entries. Returns the serial log once it stops.
async fn boot_from_disks(dir: &Path, vars: &Path, disks: &[PathBuf], tag: &str) -> String {
    let mut cmd = std::process::Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
    ])
    .args(["-serial", "stdio", "-nic", "none"])
    .args(ovmf_args(vars));
    for (i, d) in disks.iter().enumerate() {
        cmd.args([
            "-drive",
            &format!("file={},format=raw,if=none,id=r{i}", d.display()),
        ])
        .args(["-device", &format!("virtio-blk-pci,drive=r{i}")]);
    }
    let log = dir.join(format!("{tag}.log"));
    let mut vm = Proc::spawn(cmd, log.clone());
    let status = wait_exit(&mut vm, Duration::from_secs(240)).await;
    let serial = vm.log_text();
    let _ = std::fs::copy(
        &log,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("raid-{tag}.log")),
    );
    assert!(status.is_ok(), "{tag}: the machine did not stop:\n{serial}");
    serial
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn raid1_uefi_deploy_boots_from_either_disk() {
    let _slot = vm_slot().await;
    let images = test_images();
    let conductor = conductor_serving(images, &["--fast-track", "true"]).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();
    let uuid = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "raid-uefi",
            "automated_clean": false,
            "properties": {"capabilities": "boot_mode:uefi"}}))
        .await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    conductor.create_port(&uuid, MAC).await;
    let target = json!({"logical_disks": [{"size_gb": "MAX", "raid_level": "1",
        "controller": "software"}]});
    let (code, body) = put_raid(&conductor, &uuid, target).await;
    assert_eq!(code, 204, "{body}");
    verb(&conductor, &uuid, "manage").await;
    wait_states(&conductor, &uuid, &["manageable"], Duration::from_secs(30)).await;

    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("disk{i}.raw")))
        .collect();
    for d in &disks {
        std::fs::File::create(d)
            .unwrap()
            .set_len(DISK_BYTES)
            .unwrap();
    }
    let vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("OVMF (scripts/setup installs ovmf)");
    let vm_dir = dir.path().join("ramdisk");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let mut vm = boot_with(
        &vm_dir,
        port,
        &disks,
        "raid-uefi-ramdisk.log",
        ovmf_args(&vars),
    );
    vm.wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    clean(
        &conductor,
        &uuid,
        json!([{"interface": "raid", "step": "create_configuration"}]),
        &vm,
    )
    .await;
    let serial = deploy(&conductor, &uuid, &mut vm, |c, u| async move {
        c.patch_node(
            u,
            json!([{"op": "add", "path": "/instance_info", "value": {
                "image_source": "http://10.0.2.100/images/uefi.qcow2",
                "image_checksum": checksum_of("uefi.qcow2"), "image_disk_format": "qcow2"}}]),
        )
        .await
    })
    .await;
    assert!(serial.contains("device=/dev/md0"), "{serial}");
    drop(vm);

    // One NVRAM entry per disk's ESP.
    let nvram = std::fs::read(&vars).unwrap();
    for part in ["(RAID, part0)", "(RAID, part1)"] {
        let label = utf16(part);
        assert!(
            nvram.windows(label.len()).any(|w| w == label.as_slice()),
            "no {part} boot entry in the NVRAM\n{serial}"
        );
    }
    // Each disk's ESP is plain FAT at 1 MiB, ended by an md 1.0 superblock.
    for d in &disks {
        let boot_sector = read_at(d, 1 << 20, 512);
        assert_eq!(
            &boot_sector[510..],
            &[0x55, 0xaa],
            "{}: no FAT at 1 MiB",
            d.display()
        );
        let esp_end = (1 << 20) + (550 << 20);
        let tail = read_at(d, esp_end - (64 << 10), 64 << 10);
        assert!(
            tail.windows(4).any(|w| w == MD_MAGIC),
            "{}: no md 1.0 superblock at the ESP's end",
            d.display()
        );
    }

    // Power on from the disks: the deployed OS runs and powers off.
    let serial = boot_from_disks(dir.path(), &vars, &disks, "uefi-both-disks").await;
    assert!(
        serial.contains(&format!("{MARKER} ")) && serial.contains("ferrite.image=uefi"),
        "the deployed image did not boot from the mirror:\n{serial}"
    );
    // The first disk gone: the second one's ESP boots the same image.
    let serial = boot_from_disks(dir.path(), &vars, &disks[1..], "uefi-second-disk").await;
    assert!(
        serial.contains(&format!("{MARKER} ")) && serial.contains("ferrite.image=uefi"),
        "the deployed image did not boot from the second disk alone:\n{serial}"
    );
}
