//! Software RAID through ferrite-conductor, as Ironic's agent RAID
//! interface drives it, on a QEMU machine with two virtio disks.
//!
//! BIOS (SeaBIOS), with `[conductor]enable_bios_bootloader_install` on:
//! 1. `PUT .../states/raid` sets a RAID-1 `target_raid_config`; manual
//!    cleaning runs `delete_configuration` then `create_configuration`:
//!    the agent lays out both disks (GPT, `disk_label:gpt`), writes md v1.2
//!    superblocks and starts `/dev/md0` through sysfs (no mdadm). The
//!    node's `raid_config` records the result.
//! 2. The Debian partition image of the GRUB tests (its own GRUB, and mdadm
//!    in its initramfs) is deployed (fast track) onto `md0`:
//!    `install_bootloader` gives each disk a BIOS boot partition and runs
//!    the image's `grub-install` on both disks, `grub-mkconfig` once.
//! 3. The machine boots from its disks: GRUB reads the root through md,
//!    the image's initramfs assembles the array and the image's init prints
//!    its marker. Then from the second disk alone (a degraded mirror).
//!
//! UEFI (OVMF): the bootable `uefi.qcow2` onto the mirror:
//! `install_bootloader` gives each disk an ESP, mirrors them (md metadata
//! 1.0, plain FAT to firmware), copies the image's ESP onto them and writes
//! an NVRAM entry per disk. The machine boots from its disks, and from the
//! second disk alone. A second ramdisk boot then runs `clean_uefi_nvram`
//! with a pattern naming the first disk's ESP (its entry goes, every other
//! entry stays, read from the variable store file on the host) and
//! `delete_configuration` (both arrays assembled from disk, stopped,
//! superblocks zeroed, disks wiped; the host finds them clean).
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
use crate::grub::{gpt_entries, grub_image, without_escapes, GptEntry, ESP_GUID, IMAGE};
use crate::ovmf_vars::{boot_entries, boot_order, BootEntry};
use crate::qemu::{ramdisk, vm_slot, Arch, DirectBoot, Vm};

const MAC: &str = "52:54:00:a5:10:01";
/// Each disk: the root device rule wants 4 GiB, and md0 is a little less
/// than its members.
const DISK_BYTES: u64 = 5 << 30;
/// md's superblock magic, little-endian on disk.
const MD_MAGIC: [u8; 4] = 0xa92b_4efc_u32.to_le_bytes();
/// 21686148-6449-6E6F-744E-656564454649 (`ef02`), as stored.
const BIOS_BOOT_GUID: [u8; 16] = *b"Hah!IdontNeedEFI";
const MIB: u64 = 1 << 20;

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

/// Two empty sparse disks in `dir`.
fn blank_disks(dir: &Path) -> Vec<PathBuf> {
    (0..2)
        .map(|i| {
            let d = dir.join(format!("disk{i}.raw"));
            std::fs::File::create(&d)
                .unwrap()
                .set_len(DISK_BYTES)
                .unwrap();
            d
        })
        .collect()
}

/// The machine powered on from its disks (no kernel given, no network),
/// with `firmware` (OVMF's flash, or nothing for SeaBIOS). Returns the
/// serial log, without terminal escapes, once the machine stops.
async fn boot_from_disks(
    dir: &Path,
    firmware: Vec<String>,
    disks: &[PathBuf],
    tag: &str,
    within: Duration,
) -> String {
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
    .args(firmware);
    for (i, d) in disks.iter().enumerate() {
        cmd.args([
            "-drive",
            &format!("file={},format=raw,if=none,id=r{i}", d.display()),
        ])
        .args(["-device", &format!("virtio-blk-pci,drive=r{i}")]);
    }
    let log = dir.join(format!("{tag}.log"));
    let started = std::time::Instant::now();
    let mut vm = Proc::spawn(cmd, log.clone());
    let status = wait_exit(&mut vm, within).await;
    // GRUB draws on the serial line with cursor moves that can split words.
    let serial = without_escapes(&vm.log_text());
    let _ = std::fs::copy(
        &log,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("raid-{tag}.log")),
    );
    eprintln!(
        "raid {tag}: power on -> off {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(status.is_ok(), "{tag}: the machine did not stop:\n{serial}");
    serial
}

/// The Debian image's marker line: GRUB booted its kernel with the
/// grub.cfg made at deploy time, and the root it runs on is on md.
fn assert_debian_booted_from_md(serial: &str, info: &std::collections::HashMap<String, String>) {
    let (kernel, fs_uuid, marker) = (&info["kernel"], &info["fs_uuid"], &info["marker"]);
    assert!(
        serial.contains("Welcome to GRUB!") && serial.contains("GNU GRUB"),
        "GRUB did not start from the disks:\n{serial}"
    );
    assert!(
        serial.contains(&format!("Loading Linux {kernel} ...")),
        "GRUB did not load the image's kernel from the array:\n{serial}"
    );
    let line = serial
        .lines()
        .find(|l| l.contains(marker.as_str()))
        .unwrap_or_else(|| panic!("the deployed Debian did not boot:\n{serial}"));
    assert!(
        line.contains(&format!("root=UUID={fs_uuid} ")) && line.contains(" root=/dev/md"),
        "not the deployed root, or not mounted through md: {line}"
    );
}

/// A GUID stored mixed-endian, as text.
fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        u32::from_le_bytes(b[..4].try_into().unwrap()),
        u16::from_le_bytes(b[4..6].try_into().unwrap()),
        u16::from_le_bytes(b[6..8].try_into().unwrap()),
        b[8],
        b[9],
        b[10..]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn raid1_bios_partition_image_boots_from_either_disk() {
    let _slot = vm_slot().await;
    let (images, info) = grub_image();
    let checksum = std::fs::read_to_string(images.join(format!("{IMAGE}.sha256")))
        .unwrap()
        .trim()
        .to_string();
    let conductor = conductor_serving(
        images,
        &[
            "--fast-track",
            "true",
            "--enable-bios-bootloader-install",
            "true",
        ],
    )
    .await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();
    let uuid = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "raid-1",
            "automated_clean": false,
            "properties": {"capabilities": "boot_mode:bios,disk_label:gpt"}}))
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
    let disks = blank_disks(dir.path());
    let vm_dir = dir.path().join("ramdisk");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let started = std::time::Instant::now();
    let mut vm = boot(&vm_dir, port, &disks, "raid-bios-ramdisk.log");
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

    // 2. The partition image onto the array, its GRUB onto both disks.
    let serial = deploy(&conductor, &uuid, &mut vm, |c, u| async move {
        c.patch_node(
            u,
            json!([{"op": "add", "path": "/instance_info", "value": {
                "image_source": format!("http://10.0.2.100/images/{IMAGE}"),
                "image_checksum": checksum, "image_disk_format": "qcow2",
                "image_type": "partition", "root_gb": 1,
                "capabilities": "boot_mode:bios"}}]),
        )
        .await
    })
    .await;
    eprintln!(
        "raid bios: ramdisk power on -> deployed and off {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        serial.contains("md/raid1:md0: active with 2 out of 2 mirrors"),
        "the kernel did not run the mirror:\n{serial}"
    );
    assert!(
        serial.contains("device=/dev/md0"),
        "the deploy did not go to /dev/md0:\n{serial}"
    );
    for disk in ["/dev/vda", "/dev/vdb"] {
        assert!(
            serial.contains(&format!("grub-install --target=i386-pc {disk}")),
            "the image's grub-install did not run on {disk}:\n{serial}"
        );
    }
    drop(vm);

    // Each disk: GRUB's boot code in the (protective) MBR, core.img in a
    // BIOS boot partition at 1 MiB, the RAID member after the 8 MiB left.
    for (i, d) in disks.iter().enumerate() {
        let mbr = read_at(d, 0, 512);
        assert!(
            contains(&mbr[..440], b"GRUB"),
            "{}: no GRUB boot code in the MBR",
            d.display()
        );
        let parts = gpt_entries(d);
        let bios: Vec<&GptEntry> = parts
            .iter()
            .filter(|p| p.type_guid == BIOS_BOOT_GUID)
            .collect();
        assert_eq!(bios.len(), 1, "{}: BIOS boot partitions", d.display());
        assert_eq!(
            (bios[0].start, bios[0].len, bios[0].name.as_str()),
            (MIB, 2 * MIB, format!("bios-boot-part-{i}").as_str())
        );
        assert!(
            read_at(d, MIB, 512).iter().any(|&b| b != 0),
            "{}: no core.img in the BIOS boot partition",
            d.display()
        );
        assert!(
            parts.iter().any(|p| p.start == 8 * MIB),
            "{}: the RAID member moved",
            d.display()
        );
    }

    // 3. Power on from the disks, then from the second one alone.
    let serial = boot_from_disks(
        dir.path(),
        Vec::new(),
        &disks,
        "bios-both-disks",
        Duration::from_secs(420),
    )
    .await;
    assert_debian_booted_from_md(&serial, info);
    let serial = boot_from_disks(
        dir.path(),
        Vec::new(),
        &disks[1..],
        "bios-second-disk",
        Duration::from_secs(420),
    )
    .await;
    assert_debian_booted_from_md(&serial, info);
}

#[tokio::test(flavor = "multi_thread")]
async fn raid1_uefi_deploy_boots_from_either_disk_then_nvram_cleaned_and_deleted() {
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
    let disks = blank_disks(dir.path());
    let vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("OVMF (scripts/setup installs ovmf)");
    let vm_dir = dir.path().join("ramdisk");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let started = std::time::Instant::now();
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
    eprintln!(
        "raid uefi: ramdisk power on -> deployed and off {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(serial.contains("device=/dev/md0"), "{serial}");
    drop(vm);

    // Each disk's ESP is plain FAT at 1 MiB, ended by an md 1.0 superblock,
    // and has a live NVRAM entry naming it.
    let entries = boot_entries(&std::fs::read(&vars).unwrap());
    let mut esp_guids = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let esp = gpt_entries(d)
            .into_iter()
            .find(|p| p.type_guid == ESP_GUID)
            .unwrap_or_else(|| panic!("{}: no ESP", d.display()));
        assert_eq!(esp.start, MIB, "{}: ESP", d.display());
        let boot_sector = read_at(d, esp.start, 512);
        assert_eq!(
            &boot_sector[510..],
            &[0x55, 0xaa],
            "{}: no FAT at 1 MiB",
            d.display()
        );
        let tail = read_at(d, esp.start + esp.len - (64 << 10), 64 << 10);
        assert!(
            contains(&tail, &MD_MAGIC),
            "{}: no md 1.0 superblock at the ESP's end",
            d.display()
        );
        let label = format!("(RAID, part{i})");
        assert!(
            entries
                .iter()
                .any(|e| e.description.ends_with(&label) && contains(&e.path, &esp.unique_guid)),
            "no live {label} entry naming {}'s ESP: {entries:#?}\n{serial}",
            d.display()
        );
        esp_guids.push(esp.unique_guid);
    }

    // Power on from the disks: the deployed OS runs and powers off.
    let serial = boot_from_disks(
        dir.path(),
        ovmf_args(&vars),
        &disks,
        "uefi-both-disks",
        Duration::from_secs(240),
    )
    .await;
    assert!(
        serial.contains(&format!("{MARKER} ")) && serial.contains("ferrite.image=uefi"),
        "the deployed image did not boot from the mirror:\n{serial}"
    );
    // The first disk gone: the second one's ESP boots the same image.
    let serial = boot_from_disks(
        dir.path(),
        ovmf_args(&vars),
        &disks[1..],
        "uefi-second-disk",
        Duration::from_secs(240),
    )
    .await;
    assert!(
        serial.contains(&format!("{MARKER} ")) && serial.contains("ferrite.image=uefi"),
        "the deployed image did not boot from the second disk alone:\n{serial}"
    );

    // Unprovisioned (no automated clean), then a manual clean in the
    // ramdisk, booted in UEFI on the same NVRAM: clean_uefi_nvram with a
    // pattern naming the first disk's ESP, then delete_configuration.
    verb(&conductor, &uuid, "deleted").await;
    wait_states(&conductor, &uuid, &["available"], Duration::from_secs(120)).await;
    verb(&conductor, &uuid, "manage").await;
    wait_states(&conductor, &uuid, &["manageable"], Duration::from_secs(30)).await;
    let vm_dir = dir.path().join("ramdisk2");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let mut vm = boot_with(
        &vm_dir,
        port,
        &disks,
        "raid-uefi-ramdisk2.log",
        ovmf_args(&vars),
    );
    conductor.wait_agent(&uuid).await;
    // The firmware is done with its variables once the agent is up.
    let before = boot_entries(&std::fs::read(&vars).unwrap());
    let first_esp = guid_text(&esp_guids[0]);
    let node = clean(
        &conductor,
        &uuid,
        json!([
            {"interface": "deploy", "step": "clean_uefi_nvram",
             "args": {"match_patterns": [format!("HD\\(\\d+,GPT,{}", first_esp.to_uppercase())]}},
            {"interface": "raid", "step": "delete_configuration"},
        ]),
        &vm,
    )
    .await;
    assert_eq!(node["raid_config"], json!({}), "{node}");
    let serial = vm.proc.log_text();
    assert!(
        serial.contains("deleting UEFI boot entry"),
        "clean_uefi_nvram deleted nothing:\n{serial}"
    );
    assert!(
        serial.matches("md array assembled").count() >= 2,
        "the root array and the ESP mirror on disk were not assembled before deletion:\n{serial}"
    );
    let api = vm.agent_api(&conductor, &uuid).await;
    vm.power_off(&api, Duration::from_secs(120)).await;

    // The NVRAM: exactly the entries on the first disk's ESP are gone.
    let fd = std::fs::read(&vars).unwrap();
    let after = boot_entries(&fd);
    let on_first = |e: &BootEntry| contains(&e.path, &esp_guids[0]);
    let (gone, kept): (Vec<&BootEntry>, Vec<&BootEntry>) = before.iter().partition(|e| on_first(e));
    assert!(
        !gone.is_empty()
            && gone
                .iter()
                .all(|e| e.description.ends_with("(RAID, part0)")),
        "{before:#?}"
    );
    assert!(
        after.iter().all(|e| !on_first(e)),
        "an entry on the first disk's ESP is still live: {after:#?}"
    );
    for e in &kept {
        assert!(after.contains(e), "{e:?} was not to be deleted: {after:#?}");
    }
    assert!(
        kept.iter()
            .any(|e| e.description.ends_with("(RAID, part1)")),
        "{kept:#?}"
    );
    let order = boot_order(&fd).expect("BootOrder");
    assert!(
        gone.iter().all(|e| !order.contains(&e.number)),
        "BootOrder {order:04X?} still names a deleted entry"
    );

    // The disks: no table (MBR, GPT and its backup), no md superblock (the
    // root's at 4 KiB into its member, the ESP mirror's at the ESP's end).
    for d in &disks {
        let head = read_at(d, 0, 1 << 20);
        assert!(
            head.iter().all(|&b| b == 0),
            "{}: the table must be gone",
            d.display()
        );
        assert!(
            !contains(&read_at(d, DISK_BYTES - 512, 512), b"EFI PART"),
            "{}: the backup GPT is left",
            d.display()
        );
        let esp_end = MIB + (550 << 20);
        for (at, what) in [
            (esp_end - (64 << 10), "the ESP's end"),
            (esp_end + 4096, "the root member's start"),
            (DISK_BYTES - (1 << 20), "the disk's end"),
        ] {
            assert!(
                !contains(&read_at(d, at, 64 << 10), &MD_MAGIC),
                "{}: md magic left at {what}",
                d.display()
            );
        }
    }
}
