//! The ramdisk's hardware capture: PID 1 with `ferrite-capture-hardware=`
//! writes what the inventory reads as a tar onto the named disk and powers
//! off (what scripts/capture-qemu-fixture records fixtures with). The
//! unpacked tree must give the guest's inventory: here an NVMe disk whose
//! multipath path device the inventory must leave out.

use std::process::Command;
use std::time::Duration;

use ferrite_tests::{bin, wait_exit, Proc};
use serde_json::Value;

use crate::qemu::{direct_boot, vm_slot};

#[tokio::test(flavor = "multi_thread")]
async fn pid1_captures_the_hardware_onto_a_disk_and_powers_off() {
    let _vm_slot = vm_slot().await;
    let dir = tempfile::tempdir().unwrap();
    let disk = |name: &str, size: u64| {
        let p = dir.path().join(name);
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(size))
            .unwrap();
        p
    };
    let nvme = disk("nvme.raw", 6 << 30);
    let capture = disk("capture.raw", 16 << 20);
    let mut cmd = direct_boot(
        256,
        "console=ttyS0 panic=-1 ferrite-capture-hardware=/dev/vda",
    );
    cmd.args(["-smp", "2"])
        .args(["-smbios", "type=1,manufacturer=Ferrite Test,serial=CAP-1"])
        .args([
            "-drive",
            &format!("file={},format=raw,if=none,id=nv0", nvme.display()),
            "-device",
            "nvme,serial=CAPTURE-NVME,drive=nv0",
            "-drive",
            &format!("file={},format=raw,if=virtio", capture.display()),
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:ca:97:01",
        ]);
    let mut vm = Proc::spawn(cmd, dir.path().join("serial.log"));
    let status = wait_exit(&mut vm, Duration::from_secs(180))
        .await
        .expect("QEMU did not power off after the capture");
    let serial = vm.log_text();
    assert!(status.success(), "{status:?}\n{serial}");
    assert!(serial.contains("FERRITE-CAPTURE-DONE"), "{serial}");
    assert!(!serial.contains("Kernel panic"), "{serial}");
    assert!(
        !serial.contains("agent started"),
        "no agent in capture mode:\n{serial}"
    );

    let tree = dir.path().join("tree");
    tar::Archive::new(std::fs::File::open(&capture).unwrap())
        .unpack(&tree)
        .unwrap();
    let out = Command::new(bin("ferrite-agent"))
        .arg("--sysfs-root")
        .arg(tree.join("sys"))
        .arg("--procfs-root")
        .arg(tree.join("proc"))
        .arg("--dev-root")
        .arg(tree.join("dev"))
        .args(["inventory", "--skip-bmc"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let inv: Value = serde_json::from_slice(&out.stdout).unwrap();
    let disks: Vec<(&str, &str)> = inv["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["serial"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        disks,
        [("/dev/nvme0n1", "CAPTURE-NVME"), ("/dev/vda", "")],
        "{inv}"
    );
    assert_eq!(inv["disks"][0]["size"], 6u64 << 30);
    assert_eq!(inv["disks"][0]["tran"], "nvme");
    assert_eq!(inv["interfaces"][0]["mac_address"], "52:54:00:ca:97:01");
    assert_eq!(inv["interfaces"][0]["driver"], "virtio_net");
    assert_eq!(inv["cpu"]["count"], 2);
    assert_eq!(inv["system_vendor"]["manufacturer"], "Ferrite Test");
    assert_eq!(inv["system_vendor"]["serial_number"], "CAP-1");
}
