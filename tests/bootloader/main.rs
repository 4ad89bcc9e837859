//! `image.install_bootloader` on real loop devices: the image's own GRUB
//! (a Debian root made by debootstrap, see scripts/setup) installed from a
//! chroot for BIOS, and UEFI boot entries written for whole-disk images.
//! UEFI GRUB installs need the ESP mounted (vfat), which this host kernel
//! lacks; they run in the QEMU guests.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferrite_tests::images::{run, LoopDevice};
use ferrite_tests::Pair;
use serde_json::{json, Value};

const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn sh(cmd: &str) -> String {
    run(Command::new("sh").arg("-c").arg(cmd))
}

fn debian_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/debian-root");
    assert!(
        root.join(".complete").exists(),
        "{} is missing: run scripts/setup (debootstrap)",
        root.display()
    );
    root
}

fn blkid(dev: &Path, tag: &str) -> String {
    sh(&format!("blkid -p -s {tag} -o value {}", dev.display()))
        .trim()
        .to_string()
}

fn mounts_left() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains("ferrite-root-") || l.contains("ferrite-esp-"))
        .map(str::to_string)
        .collect()
}

/// IPA's error text: `message: details`.
fn error_text(result: &Value) -> String {
    let e = &result["command_error"];
    format!(
        "{}: {}",
        e["message"].as_str().unwrap_or_default(),
        e["details"].as_str().unwrap_or_default()
    )
}

fn bootloader_params(root_uuid: &str, esp: Option<&str>, mode: &str) -> Value {
    json!({"root_uuid": root_uuid, "efi_system_part_uuid": esp,
           "prep_boot_part_uuid": null, "target_boot_mode": mode})
}

/// GPT: BIOS boot (1 MiB), ESP (64 MiB), root (the rest).
fn gpt_disk(dir: &Path, name: &str) -> (LoopDevice, Vec<PathBuf>) {
    // 5 GiB (sparse): root device selection wants at least 4 GiB.
    let disk = LoopDevice::new(dir, name, 5 << 30, false);
    sh(&format!(
        "sgdisk -n 1:0:+1M -t 1:ef02 -n 2:0:+64M -t 2:ef00 -n 3:0:0 -t 3:8300 {} >/dev/null",
        disk.path.display()
    ));
    let parts = disk.partition_nodes();
    assert_eq!(parts.len(), 3, "{parts:?}");
    (disk, parts)
}

/// The image's own grub-install runs inside its root, with /dev, /proc,
/// /sys and /run bound in, and every mount is gone afterwards. GRUB itself
/// cannot map partitions of loop devices (no HDIO_GETGEO, no device-mapper
/// on this host), so on loop disks it stops with its own error: proof that
/// the chroot ran the image's GRUB against the right disk and partition.
/// The successful BIOS install is proven on a virtio disk in the QEMU e2e.
#[tokio::test(flavor = "multi_thread")]
async fn bios_partition_image_runs_its_own_grub_in_a_chroot() {
    let root = debian_root();
    let dir = tempfile::tempdir().unwrap();
    let (disk, parts) = gpt_disk(dir.path(), "bios.loop");
    sh(&format!(
        "mkfs.ext4 -q -F -L rootfs -d {} {}",
        root.display(),
        parts[2].display()
    ));
    let root_uuid = blkid(&parts[2], "UUID");
    let disks = format!("ferrite-disks={}", disk.path.display());
    let pair = Pair::start(
        &["--enable-bios-bootloader-install", "true"],
        "52:54:00:b0:00:01",
        &[&disks],
    )
    .await;
    let api = pair.api();

    // A UUID no partition has: a clear error, nothing left mounted.
    let wrong = api
        .run(
            "image.install_bootloader",
            bootloader_params("0e3e0b6c-0000-4000-8000-000000000000", None, "bios"),
        )
        .await;
    assert_eq!(wrong["command_status"], "FAILED", "{wrong}");
    let msg = error_text(&wrong);
    assert!(msg.contains("has UUID 0e3e0b6c"), "{msg}");
    assert!(
        msg.contains(&root_uuid),
        "the error lists what it saw: {msg}"
    );
    assert!(mounts_left().is_empty(), "{:?}", mounts_left());

    let ran = api
        .run(
            "image.install_bootloader",
            bootloader_params(&root_uuid, None, "bios"),
        )
        .await;
    let msg = error_text(&ran);
    let grub_ran = msg.contains("/usr/sbin/grub-install --target=i386-pc")
        && msg.contains("Installing for i386-pc platform.")
        && msg.contains(&format!("{}p3", disk.path.display()));
    assert!(
        ran["command_status"] == "SUCCEEDED" || grub_ran,
        "the image's grub-install did not run: {ran}"
    );
    assert!(mounts_left().is_empty(), "{:?}", mounts_left());
    // The deployed root is intact and unmounted: it mounts cleanly here.
    let check = dir.path().join("check");
    std::fs::create_dir_all(&check).unwrap();
    sh(&format!(
        "mount -o ro {} {}",
        parts[2].display(),
        check.display()
    ));
    let os_release = std::fs::read_to_string(check.join("etc/os-release"));
    sh(&format!("umount {}", check.display()));
    assert!(os_release.unwrap().contains("ID=debian"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bios_install_refused_unless_the_conductor_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, parts) = gpt_disk(dir.path(), "refused.loop");
    sh(&format!("mkfs.ext4 -q -F {}", parts[2].display()));
    let root_uuid = blkid(&parts[2], "UUID");
    let disks = format!("ferrite-disks={}", disk.path.display());
    let pair = Pair::start(&[], "52:54:00:b0:00:02", &[&disks]).await;
    let api = pair.api();
    let refused = api
        .run(
            "image.install_bootloader",
            bootloader_params(&root_uuid, None, "bios"),
        )
        .await;
    assert_eq!(refused["command_status"], "FAILED", "{refused}");
    assert_eq!(refused["command_error"]["type"], "InvalidImage");
    let msg = error_text(&refused);
    assert!(msg.contains("enable_bios_bootloader_install"), "{msg}");
    let mut ignored = bootloader_params(&root_uuid, None, "bios");
    ignored["ignore_bootloader_failure"] = json!(true);
    let ok = api.run("image.install_bootloader", ignored).await;
    assert_eq!(ok["command_status"], "SUCCEEDED", "{ok}");
    // Nothing was written to the disk's boot code.
    let mbr = std::fs::read(disk.backing()).unwrap();
    assert!(!mbr[..440].windows(4).any(|w| w == b"GRUB"));

    let bad = api
        .run(
            "image.install_bootloader",
            bootloader_params(&root_uuid, None, "legacy"),
        )
        .await;
    assert_eq!(bad["command_status"], "FAILED", "{bad}");
    assert!(error_text(&bad).contains("target_boot_mode"), "{bad}");
}

/// Ironic asks for a boot loader after every whole-disk deploy in UEFI mode,
/// with the MBR disk identifier as `root_uuid`. A BIOS-booted ramdisk has
/// nothing to do then, even on an image without any partition table (found
/// by the real Ironic 39 driving ferrite: it used to fail reading the table).
#[tokio::test(flavor = "multi_thread")]
async fn whole_disk_image_without_a_table_needs_nothing_in_bios() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    // Root device selection wants at least 4 GiB (sparse); the first and
    // last 64 MiB hold garbage without any partition table.
    let size = 5u64 << 30;
    let disk = LoopDevice::new(dir.path(), "bare.loop", size, true);
    let ends = || {
        let f = std::fs::File::open(disk.backing()).unwrap();
        let (mut head, mut tail) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        f.read_exact_at(&mut head, 0).unwrap();
        f.read_exact_at(&mut tail, size - (1 << 20)).unwrap();
        (head, tail)
    };
    let before = ends();
    let disks = format!("ferrite-disks={}", disk.path.display());
    let pair = Pair::start(&[], "52:54:00:b0:00:03", &[&disks]).await;
    let done = pair
        .api()
        .run(
            "image.install_bootloader",
            bootloader_params("0x12345678", None, "uefi"),
        )
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    assert!(ends() == before, "the disk changed");
}

/// A load option as firmware reads it: (description, partition number,
/// start LBA, partition GUID, loader path).
fn parse_load_option(data: &[u8]) -> (String, u32, u64, String, String) {
    let utf16 = |b: &[u8]| {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16(&units).unwrap()
    };
    let desc = utf16(&data[6..]);
    let hd = &data[6 + (desc.encode_utf16().count() + 1) * 2..];
    assert_eq!(&hd[..4], &[4, 1, 42, 0], "hard drive media node");
    let number = u32::from_le_bytes(hd[4..8].try_into().unwrap());
    let start = u64::from_le_bytes(hd[8..16].try_into().unwrap());
    let g = &hd[24..40];
    let guid = format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        u32::from_le_bytes(g[0..4].try_into().unwrap()),
        u16::from_le_bytes(g[4..6].try_into().unwrap()),
        u16::from_le_bytes(g[6..8].try_into().unwrap()),
        g[8..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        g[10..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let file = &hd[42..];
    assert_eq!(&file[..2], &[4, 4], "file path node");
    (desc, number, start, guid, utf16(&file[4..]))
}

#[tokio::test(flavor = "multi_thread")]
async fn uefi_whole_disk_image_gets_nvram_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, parts) = gpt_disk(dir.path(), "uefi.loop");
    let esp = &parts[1];
    sh(&format!("mkfs.vfat -F 32 {} >/dev/null", esp.display()));
    // What a distribution's shim package ships (the CSV is UTF-16 with a BOM).
    let csv = dir.path().join("BOOTX64.CSV");
    let mut csv_bytes = vec![0xff, 0xfe];
    for u in "shimx64.efi,debian,,This is the boot entry for debian\n".encode_utf16() {
        csv_bytes.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(&csv, csv_bytes).unwrap();
    std::fs::write(dir.path().join("stub.efi"), b"MZ stub").unwrap();
    let m = sh;
    let img = esp.display();
    m(&format!("mmd -i {img} ::/EFI ::/EFI/BOOT ::/EFI/debian"));
    m(&format!(
        "mcopy -i {img} {}/stub.efi ::/EFI/BOOT/BOOTX64.EFI",
        dir.path().display()
    ));
    m(&format!(
        "mcopy -i {img} {}/stub.efi ::/EFI/debian/shimx64.efi",
        dir.path().display()
    ));
    m(&format!(
        "mcopy -i {img} {} ::/EFI/debian/BOOTX64.CSV",
        csv.display()
    ));
    let esp_partuuid = blkid(esp, "PART_ENTRY_UUID");
    let esp_start: u64 = blkid(esp, "PART_ENTRY_OFFSET").parse().unwrap();

    let disks = format!("ferrite-disks={}", disk.path.display());
    let pair = Pair::start(&[], "52:54:00:b0:00:03", &[&disks]).await;
    // Booted in UEFI mode: the firmware's variables, with its PXE entry.
    let vars = pair.agent.dir.path().join("sys/firmware/efi/efivars");
    std::fs::create_dir_all(&vars).unwrap();
    let var = |name: &str| vars.join(format!("{name}-{EFI_GLOBAL}"));
    let mut pxe = vec![7, 0, 0, 0, 1, 0, 0, 0, 4, 0];
    for u in "UEFI PXEv4\0".encode_utf16() {
        pxe.extend_from_slice(&u.to_le_bytes());
    }
    pxe.extend_from_slice(&[0x7f, 0xff, 4, 0]);
    std::fs::write(var("Boot0000"), &pxe).unwrap();
    std::fs::write(var("BootOrder"), [7, 0, 0, 0, 0, 0]).unwrap();

    let api = pair.api();
    for round in 0..2 {
        let done = api
            .run(
                "image.install_bootloader",
                bootloader_params("0x1234abcd", None, "uefi"),
            )
            .await;
        assert_eq!(done["command_status"], "SUCCEEDED", "round {round}: {done}");
        let entry = std::fs::read(var("Boot0001")).expect("Boot0001 written");
        assert_eq!(
            &entry[..4],
            &[7, 0, 0, 0],
            "non-volatile, boot and runtime access"
        );
        let (desc, number, start, guid, loader) = parse_load_option(&entry[4..]);
        assert_eq!(desc, "debian", "the label from shim's CSV");
        assert_eq!(number, 2);
        assert_eq!(
            start, esp_start,
            "start LBA (blkid counts 512-byte sectors)"
        );
        assert_eq!(guid, esp_partuuid);
        assert_eq!(loader, r"\EFI\debian\shimx64.efi");
        // The same label again replaces the entry; the firmware's PXE entry stays.
        let order = std::fs::read(var("BootOrder")).unwrap();
        assert_eq!(order, vec![7, 0, 0, 0, 1, 0, 0, 0], "round {round}");
        assert!(var("Boot0000").exists());
        assert!(
            !var("Boot0002").exists(),
            "round {round}: a duplicate entry"
        );
    }

    // A whole-disk image without an ESP cannot boot in UEFI mode.
    sh(&format!(
        "sgdisk -t 2:8300 {} >/dev/null",
        disk.path.display()
    ));
    let no_esp = api
        .run(
            "image.install_bootloader",
            bootloader_params("0x1234abcd", None, "uefi"),
        )
        .await;
    assert_eq!(no_esp["command_status"], "FAILED", "{no_esp}");
    assert!(
        error_text(&no_esp).contains("No EFI system partition"),
        "{no_esp}"
    );
}
