//! The arm64 ramdisk (`ARCH=arm64 ramdisk-build/build`: Debian's generic
//! arm64 kernel, the static aarch64 agent) on QEMU's `virt` machine (TCG,
//! `-cpu max`, direct kernel boot, no firmware: no SMBIOS, no EFI) against
//! the real conductor. The node goes through in-band inspection first, so
//! the conductor stores what the agent saw: the inventory must say
//! `aarch64` and show the virtio disk and NIC; then lookup and heartbeat
//! (fast track), a manual clean (`erase_devices_metadata`: the block ioctls
//! of an aarch64 build) wipes the GPT header put on the disk, and
//! `standby.power_off` stops the VM (PSCI).
//!
//! Same sealed network as the x86 smoke test (tests/ramdisk/qemu.rs). TCG
//! emulates aarch64 on x86 (no KVM), so the timeouts are generous; the test
//! prints how long the build, the boot and the whole run took.

use std::time::{Duration, Instant};

use ferrite_tests::Conductor;
use serde_json::{json, Value};

use crate::qemu::{ramdisk_for, vm_slot, Arch, DirectBoot, Vm, MAC};

/// QEMU start to the first heartbeat took 5 s on the 2-core development
/// machine (the x86 smoke test allows 180 s for about 3 s); the bound
/// leaves room for a loaded CI machine.
const BOOT_TO_HEARTBEAT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread")]
async fn arm64_ramdisk_inspects_heartbeats_and_reports_aarch64() {
    let t0 = Instant::now();
    // Build before taking the VM slot: the other VM tests need not wait
    // for a cross build.
    let built = tokio::task::spawn_blocking(|| ramdisk_for(Arch::Arm64))
        .await
        .expect("building the arm64 ramdisk");
    assert!(built.0.exists() && built.1.exists());
    let _vm_slot = vm_slot().await;
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "qemu-arm64"}))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    conductor.create_port(&uuid, MAC).await;
    let within = Duration::from_secs(60);
    let (code, body) = conductor.act(&uuid, json!({"target": "manage"})).await;
    assert_eq!(code, 202, "{body}");
    conductor.wait_state(&uuid, "manageable", within).await;
    let (code, body) = conductor.act(&uuid, json!({"target": "inspect"})).await;
    assert_eq!(code, 202, "{body}");
    conductor.wait_state(&uuid, "inspect wait", within).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Metadata for the clean step to erase: a GPT header's signature.
    // 5 GiB (sparse): a disk the agent accepts as its root device at once.
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, [&[0u8; 512][..], b"EFI PART"].concat()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .and_then(|f| f.set_len(5 << 30))
        .unwrap();
    let mut vm = Vm::boot_direct(
        dir.path(),
        port,
        DirectBoot {
            arch: Arch::Arm64,
            ramdisk: built,
            memory_mib: 512,
            nic: "virtio-net-pci",
            mac: MAC,
            bootif: true,
            params: "ipa-inspection-callback-url=http://10.0.2.100/v1/continue_inspection \
                     ipa-inspection-dhcp-wait-timeout=0",
            devices: vec![
                "-drive".into(),
                format!("file={},format=raw,if=virtio", disk.display()),
            ],
            keep_as: "qemu-arm64-serial.log",
            open_net: false,
        },
    );
    let internal = vm
        .wait_heartbeat(&conductor, &uuid, BOOT_TO_HEARTBEAT)
        .await;
    let heartbeat = vm.started.elapsed();
    eprintln!(
        "arm64: QEMU start -> first heartbeat: {:.1} s",
        heartbeat.as_secs_f64()
    );
    let serial = vm.proc.log_text();
    assert!(
        serial.contains("10.0.2.15/24 from 10.0.2.2"),
        "no lease:\n{serial}"
    );
    assert!(
        internal["agent_url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("://127.0.0.1:{}", vm.agent_port))),
        "{internal}"
    );

    // Inspection came first: the conductor has the inventory and the
    // properties it derived from it.
    let node = conductor.node(&uuid).await;
    assert_eq!(node["provision_state"], "manageable", "{node}");
    assert_eq!(node["last_error"], Value::Null, "{node}");
    assert_eq!(node["properties"]["cpu_arch"], "aarch64", "{node}");
    let stored = conductor.inventory(&uuid).await;
    let inv = &stored["inventory"];
    eprintln!("arm64 inventory: {inv}");
    assert_eq!(inv["cpu"]["architecture"], "aarch64", "{inv}");
    assert_eq!(inv["cpu"]["count"], 1, "{inv}");
    assert!(
        inv["cpu"]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "asimd")),
        "aarch64 Features: {inv}"
    );
    // QEMU's `max` CPU has implementer 0: lscpu names no model, nor do we.
    assert_eq!(inv["cpu"]["model_name"], Value::Null, "{inv}");
    let disks = inv["disks"].as_array().expect("disks");
    assert!(
        disks
            .iter()
            .any(|d| d["name"] == "/dev/vda" && d["size"] == 5u64 << 30),
        "{inv}"
    );
    let nics = inv["interfaces"].as_array().expect("interfaces");
    assert!(
        nics.iter()
            .any(|n| n["mac_address"] == MAC && n["driver"] == "virtio_net"),
        "{inv}"
    );
    // No firmware on `virt` with a direct kernel boot: no SMBIOS, no EFI.
    assert_eq!(inv["system_vendor"]["manufacturer"], Value::Null, "{inv}");
    assert_eq!(inv["boot"]["current_boot_mode"], "bios", "{inv}");
    assert!(
        inv["memory"]["total"].as_u64().unwrap_or(0) > 256 << 20,
        "{inv}"
    );

    // Manual cleaning through the conductor: the agent erases the disk's
    // metadata.
    let steps = json!([{"interface": "deploy", "step": "erase_devices_metadata"}]);
    let (code, body) = conductor
        .act(&uuid, json!({"target": "clean", "clean_steps": steps}))
        .await;
    assert_eq!(code, 202, "{body}");
    let cleaned = conductor
        .wait_state(&uuid, "manageable", Duration::from_secs(180))
        .await;
    assert_eq!(cleaned["last_error"], Value::Null, "{cleaned}");
    let head = std::fs::read(&disk).unwrap();
    assert!(
        head[..4096].iter().all(|&b| b == 0),
        "the GPT header was not erased"
    );

    // standby.power_off through the agent's API: PSCI SYSTEM_OFF ends QEMU.
    let api = vm.agent_api(&conductor, &uuid).await;
    vm.power_off(&api, Duration::from_secs(120)).await;
    eprintln!(
        "arm64: QEMU ran {:.1} s; test (with the ramdisk build) {:.1} s",
        vm.started.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
