//! A partition image whose root is a real Debian (debootstrap bookworm:
//! cloud kernel, initramfs-tools, GRUB for BIOS and UEFI, no boot loader
//! installed) deployed by ferrite-conductor to a QEMU machine.
//!
//! BIOS (SeaBIOS), with `[conductor]enable_bios_bootloader_install` on: the
//! agent lays out the disk (msdos), streams the ext4 root into its
//! partition and runs the image's own `grub-install --target=i386-pc` and
//! `grub-mkconfig` in a chroot against the machine's virtio disk.
//! UEFI (OVMF): the agent adds and formats the ESP, runs the image's
//! `grub-install --target=x86_64-efi` with the ESP on /boot/efi, and writes
//! the NVRAM entry for `\EFI\debian\grubx64.efi`.
//!
//! On the next power-on the conductor sends the machine to its disk, and
//! the serial console must show GRUB's menu, GRUB loading the image's
//! kernel and initrd, and the image's init printing a marker with the
//! command line grub-mkconfig made (`BOOT_IMAGE=/boot/vmlinuz-<version>
//! root=UUID=<the root's UUID>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrite_tests::wait_exit;
use serde_json::json;

use crate::e2e::{
    conductor_serving, enroll_with, keep_logs, power_on_and_deploy, verb, wait_states, Machine,
};
use crate::qemu::{vm_slot, workspace};

pub(crate) const IMAGE: &str = "debian-grub.qcow2";

/// tests/qemu/make-grub-root-image's output (cached under build/) and
/// what it says about the image (kernel version, root UUID, marker).
pub(crate) fn grub_image() -> &'static (PathBuf, HashMap<String, String>) {
    static BUILT: OnceLock<(PathBuf, HashMap<String, String>)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = workspace().join("build/grub-image");
        let started = Instant::now();
        let status = Command::new(workspace().join("tests/qemu/make-grub-root-image"))
            .env("OUT", &out)
            .status()
            .expect("running make-grub-root-image");
        assert!(status.success(), "make-grub-root-image failed");
        eprintln!(
            "grub image ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let info = std::fs::read_to_string(out.join("debian-grub.info")).unwrap();
        let info = info
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (out, info)
    })
}

/// The first primary MBR partition marked bootable: (start, length) in bytes.
fn bootable_partition(mbr: &[u8]) -> Option<(u64, u64)> {
    (0..4).find_map(|i| {
        let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
        let le = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().unwrap()));
        (e[0] == 0x80).then(|| (le(&e[8..12]) * 512, le(&e[12..16]) * 512))
    })
}

/// A GPT entry as stored: type and unique GUIDs in on-disk (mixed-endian)
/// byte order, bytes from the disk's start, the name.
pub(crate) struct GptEntry {
    pub(crate) type_guid: [u8; 16],
    pub(crate) unique_guid: [u8; 16],
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) name: String,
}

/// C12A7328-F81F-11D2-BA4B-00A0C93EC93B, as stored (mixed endian).
pub(crate) const ESP_GUID: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];

/// The used entries of the GPT on `disk` (512-byte sectors).
pub(crate) fn gpt_entries(disk: &Path) -> Vec<GptEntry> {
    let f = std::fs::File::open(disk).unwrap();
    let read = |offset: u64, len: usize| {
        let mut b = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, offset).unwrap();
        b
    };
    let header = read(512, 92);
    assert_eq!(&header[..8], b"EFI PART", "no GPT on {}", disk.display());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let (lba, count, size) = (
        u64_at(&header, 72),
        u32_at(&header, 80) as usize,
        u32_at(&header, 84) as usize,
    );
    let entries = read(lba * 512, count * size);
    entries
        .chunks(size)
        .filter(|e| e[..16].iter().any(|&b| b != 0))
        .map(|e| {
            let (first, last) = (u64_at(e, 32), u64_at(e, 40));
            let name: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            GptEntry {
                type_guid: e[..16].try_into().unwrap(),
                unique_guid: e[16..32].try_into().unwrap(),
                start: first * 512,
                len: (last - first + 1) * 512,
                name: String::from_utf16_lossy(&name),
            }
        })
        .collect()
}

/// The GPT partition that starts last (root, as Ironic lays the disk out)
/// and the ESP: (start, length) in bytes.
fn gpt_root_and_esp(disk: &Path) -> ((u64, u64), (u64, u64)) {
    let parts = gpt_entries(disk);
    let root = parts.iter().max_by_key(|p| p.start).expect("no partitions");
    let esp = parts
        .iter()
        .find(|p| p.type_guid == ESP_GUID)
        .expect("no ESP");
    ((root.start, root.len), (esp.start, esp.len))
}

/// A file of the ext4 filesystem at `offset` in `disk`, read with debugfs
/// (no loop device, nothing mounted).
fn ext4_file(disk: &Path, offset: u64, path: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(format!("{}?offset={offset}", disk.display()))
        .output()
        .expect("debugfs (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The serial log without terminal control sequences (CSI `ESC [ ... final`,
/// and the other `ESC [intermediates] final` ones) and carriage returns:
/// GRUB may draw a line in pieces, with a CR and a cursor move between them
/// (`W\r\x1b[04;02Helcome to GRUB!`), depending on timing.
pub(crate) fn without_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            continue;
        }
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            // Parameters and intermediates, up to the final byte (@ to ~).
            for p in chars.by_ref() {
                if ('@'..='~').contains(&p) {
                    break;
                }
            }
        } else {
            // ESC, intermediates (space to /), one final byte: `ESC ( B`.
            while chars.next_if(|p| (' '..='/').contains(p)).is_some() {}
            chars.next();
        }
    }
    out
}

#[test]
fn escapes_are_removed() {
    assert_eq!(
        without_escapes("Welcome to G\x1b[25;12H\x1b[25;13HRUB!\x1b[0m\x1b(B ok"),
        "Welcome to GRUB! ok"
    );
    // As CI saw it once (the raid BIOS boot).
    assert_eq!(
        without_escapes("\x1b[0;30;47mW\r\x1b[04;02Helcome to GRUB!\r\n"),
        "Welcome to GRUB!\n"
    );
}

async fn deploy_debian_and_boot(uefi: bool) {
    let _vm_slot = vm_slot().await;
    let (images, info) = grub_image();
    let kernel = &info["kernel"];
    let fs_uuid = &info["fs_uuid"];
    let marker = &info["marker"];
    let checksum = std::fs::read_to_string(images.join(format!("{IMAGE}.sha256")))
        .unwrap()
        .trim()
        .to_string();
    // BIOS needs the operator's consent (Ironic's default is off); UEFI does not.
    let extra: &[&str] = if uefi {
        &[]
    } else {
        &["--enable-bios-bootloader-install", "true"]
    };
    let c = conductor_serving(images, extra).await;
    let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mac, mode, tag) = if uefi {
        ("52:54:00:e2:e0:05", "uefi", "grub-uefi")
    } else {
        ("52:54:00:e2:e0:04", "bios", "grub-bios")
    };
    let mut machine = Machine::new(dir.path(), mac, uefi, port);
    // A partition image as Ironic takes it: image_type=partition and the
    // root partition's size; no kernel/ramdisk (local boot only).
    let uuid = enroll_with(
        &c,
        &machine,
        json!({"image_source": format!("http://10.0.2.100/images/{IMAGE}"),
               "image_checksum": checksum, "image_disk_format": "qcow2",
               "image_type": "partition", "root_gb": 1,
               "capabilities": format!("boot_mode:{mode}")}),
    )
    .await;
    verb(&c, &uuid, "active").await;
    wait_states(&c, &uuid, &["wait call-back"], Duration::from_secs(30)).await;

    let (mut vm, done, started) =
        power_on_and_deploy(&c, &uuid, &mut machine, tag, Duration::from_secs(600)).await;
    keep_logs(&machine, tag);
    assert_eq!(
        done["provision_state"], "active",
        "last_error: {}",
        done["last_error"]
    );
    let internal = &done["driver_internal_info"];
    assert_eq!(internal["is_whole_disk_image"], false, "{internal}");
    // get_partition_uuids reported the image's own filesystem UUID as root.
    assert_eq!(
        internal["root_uuid_or_disk_id"].as_str(),
        Some(fs_uuid.as_str()),
        "{internal}"
    );
    wait_exit(&mut vm, Duration::from_secs(90))
        .await
        .expect("the VM did not power off after the deploy");
    drop(vm);
    let deploy_log = std::fs::read_to_string(dir.path().join("serial-1.log")).unwrap_or_default();
    let target = if uefi { "x86_64-efi" } else { "i386-pc" };
    assert!(
        deploy_log.contains(&format!("grub-install --target={target}")),
        "the agent did not run grub-install (serial log of the deploy kept as e2e-{tag}/serial-1.log)"
    );
    eprintln!(
        "{tag}: deploy took {:.1} s from power on",
        started.elapsed().as_secs_f64()
    );

    // The disk, seen from the host. BIOS: GRUB's boot code in the MBR, root
    // the bootable partition. UEFI: GRUB in the ESP (under the image's
    // distribution and the removable path) and an NVRAM entry for it. Both:
    // a grub.cfg made at deploy time that boots the image's kernel from
    // its root by UUID.
    let root_start = if uefi {
        let ((root_start, root_len), (esp_start, _)) = gpt_root_and_esp(&machine.disk);
        assert_eq!(root_len, 1 << 30, "root partition is not root_gb=1");
        let esp = format!("{}@@{esp_start}", machine.disk.display());
        for dir in ["::/EFI/debian", "::/EFI/BOOT"] {
            let out = Command::new("mdir")
                .args(["-b", "-i", &esp, dir])
                .output()
                .expect("mdir (mtools)");
            let listing = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
            assert!(
                listing.contains("grubx64.efi") || listing.contains("bootx64.efi"),
                "no GRUB in {dir} of the ESP: {listing}"
            );
        }
        let vars = std::fs::read(&machine.vars).unwrap();
        let label: Vec<u8> = "debian".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(
            vars.windows(label.len()).any(|w| w == label.as_slice()),
            "no boot entry labelled debian in the NVRAM"
        );
        root_start
    } else {
        let mut mbr = vec![0u8; 512];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(&machine.disk).unwrap(),
            &mut mbr,
            0,
        )
        .unwrap();
        assert_eq!(&mbr[510..], &[0x55, 0xaa], "no MBR signature");
        assert!(
            mbr[..440].windows(4).any(|w| w == b"GRUB"),
            "no GRUB boot code in the MBR"
        );
        let (root_start, root_len) = bootable_partition(&mbr).expect("no bootable partition");
        assert_eq!(root_len, 1 << 30, "root partition is not root_gb=1");
        root_start
    };
    let grub_cfg = ext4_file(&machine.disk, root_start, "/boot/grub/grub.cfg");
    assert!(
        grub_cfg.contains(&format!("/boot/vmlinuz-{kernel}"))
            && grub_cfg.contains(&format!("root=UUID={fs_uuid}"))
            && grub_cfg.contains("terminal_output serial"),
        "grub.cfg on the deployed root:\n{grub_cfg}"
    );

    // Power on again: iPXE hands over to the disk, GRUB boots the image.
    let (mut vm, booted) = machine.power_on();
    let status = wait_exit(&mut vm, Duration::from_secs(420)).await;
    // GRUB draws on the serial line with cursor moves that can split its
    // words ("Welcome to G\x1b[25;12H\x1b[25;13HRUB!"): read it as text.
    let serial = without_escapes(&vm.log_text());
    keep_logs(&machine, tag);
    eprintln!(
        "{tag}: power on -> deployed Debian powered itself off {:.1} s",
        booted.elapsed().as_secs_f64()
    );
    assert!(
        status.is_ok(),
        "the deployed OS did not power off:\n{serial}"
    );
    let line = serial
        .lines()
        .find(|l| l.contains(marker.as_str()))
        .unwrap_or_else(|| panic!("the deployed Debian did not boot:\n{serial}"));
    eprintln!("{tag}: {}", line.trim());
    // GRUB (its boot code in the MBR, core.img, the menu it draws on the
    // serial line, the messages of the entry grub-mkconfig wrote) loaded
    // the image's kernel and initrd ...
    if uefi {
        // OVMF started the NVRAM entry the agent wrote for the image's GRUB.
        assert!(
            serial.contains("starting Boot")
                && serial.contains("\"debian\" from HD(")
                && serial.contains("\\EFI\\debian\\grubx64.efi"),
            "firmware did not start the image's GRUB through its NVRAM entry:\n{serial}"
        );
    } else {
        assert!(
            serial.contains("GRUB loading."),
            "GRUB's boot code did not run:\n{serial}"
        );
    }
    assert!(
        serial.contains("Welcome to GRUB!"),
        "GRUB did not start:\n{serial}"
    );
    assert!(serial.contains("GNU GRUB"), "no GRUB menu:\n{serial}");
    assert!(
        serial.contains(&format!("Loading Linux {kernel} ..."))
            && serial.contains("Loading initial ramdisk ..."),
        "GRUB did not load the image's kernel:\n{serial}"
    );
    // ... with the command line from the deployed root's /etc/default/grub,
    // and the kernel mounted that root (the initrd found it by UUID).
    assert!(
        line.contains(&format!("kernel={kernel} "))
            && line.contains(&format!("BOOT_IMAGE=/boot/vmlinuz-{kernel} "))
            && line.contains(&format!("root=UUID={fs_uuid} "))
            && line.contains("init=/usr/local/sbin/ferrite-boot-marker"),
        "{line}"
    );
    let node = c.node(&uuid).await;
    assert_eq!(node["provision_state"], "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn bios_partition_image_boots_through_its_own_grub() {
    deploy_debian_and_boot(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uefi_partition_image_boots_through_its_own_grub() {
    deploy_debian_and_boot(true).await;
}
