//! A partition image whose root is a real Debian (debootstrap bookworm:
//! cloud kernel, initramfs-tools, GRUB for BIOS, no boot loader installed)
//! deployed by ferrite-conductor to a BIOS QEMU machine, with
//! `[conductor]enable_bios_bootloader_install` on. The agent lays out the
//! disk, streams the ext4 root into its partition and runs the image's own
//! `grub-install --target=i386-pc` and `grub-mkconfig` in a chroot against
//! the machine's virtio disk. On the next power-on the conductor sends the
//! machine to its disk, and the serial console must show GRUB's menu,
//! GRUB loading the image's kernel and initrd, and the image's init
//! printing a marker with the command line grub-mkconfig made
//! (`BOOT_IMAGE=/boot/vmlinuz-<version> root=UUID=<the root's UUID>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrite_tests::{wait_exit, wait_for};
use serde_json::json;

use crate::e2e::{conductor_serving, enroll_with, keep_logs, verb, wait_states, Machine};
use crate::qemu::{workspace, ONE_VM_AT_A_TIME};

const IMAGE: &str = "debian-grub.qcow2";

/// tests/qemu/make-grub-root-image's output (cached under build/) and
/// what it says about the image (kernel version, root UUID, marker).
fn grub_image() -> &'static (PathBuf, HashMap<String, String>) {
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

#[tokio::test(flavor = "multi_thread")]
async fn bios_partition_image_boots_through_its_own_grub() {
    let _vm_slot = ONE_VM_AT_A_TIME.lock().await;
    let (images, info) = grub_image();
    let kernel = &info["kernel"];
    let fs_uuid = &info["fs_uuid"];
    let marker = &info["marker"];
    let checksum = std::fs::read_to_string(images.join(format!("{IMAGE}.sha256")))
        .unwrap()
        .trim()
        .to_string();
    let c = conductor_serving(images, &["--enable-bios-bootloader-install", "true"]).await;
    let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut machine = Machine::new(dir.path(), "52:54:00:e2:e0:04", false, port);
    // A partition image as Ironic takes it: image_type=partition and the
    // root partition's size; no kernel/ramdisk (local boot only).
    let uuid = enroll_with(
        &c,
        &machine,
        json!({"image_source": format!("http://10.0.2.100/images/{IMAGE}"),
               "image_checksum": checksum, "image_disk_format": "qcow2",
               "image_type": "partition", "root_gb": 1,
               "capabilities": "boot_mode:bios"}),
    )
    .await;
    verb(&c, &uuid, "active").await;
    wait_states(&c, &uuid, &["wait call-back"], Duration::from_secs(30)).await;

    let tag = "grub-bios";
    let (mut vm, started) = machine.power_on();
    wait_for("the first heartbeat", Duration::from_secs(240), || {
        let n = c.node(&uuid);
        async move {
            let n = n.await;
            n["driver_internal_info"]["agent_last_heartbeat"]
                .is_string()
                .then_some(())
        }
    })
    .await;
    eprintln!(
        "{tag}: QEMU start -> first heartbeat {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let done = wait_states(
        &c,
        &uuid,
        &["active", "deploy failed"],
        Duration::from_secs(600),
    )
    .await;
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
    assert!(
        deploy_log.contains("grub-install --target=i386-pc"),
        "the agent did not run grub-install (serial log of the deploy kept as e2e-{tag}/serial-1.log)"
    );
    eprintln!(
        "{tag}: deploy took {:.1} s from power on",
        started.elapsed().as_secs_f64()
    );

    // The disk, seen from the host: GRUB's boot code in the MBR, root as the
    // bootable partition, and a grub.cfg made at deploy time that boots the
    // image's kernel from its root by UUID.
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
    let serial = vm.log_text();
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
    assert!(
        serial.contains("GRUB loading.") && serial.contains("Welcome to GRUB!"),
        "GRUB's boot code did not run:\n{serial}"
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
