//! PID 1's network manager on a machine with three NICs, only one of them
//! on a network with a DHCP server (QEMU's sealed user network); the
//! others are each alone on a QEMU hub with nothing else on it (carrier,
//! no server). With `BOOTIF` naming the third NIC, DHCP runs there and
//! only there; without `BOOTIF`, every NIC tries, the second gets the
//! lease, and the two others are reported as having none. Both machines
//! look the node up and heartbeat.

use std::path::Path;
use std::time::Duration;

use ferrite_tests::{wait_for, Conductor};
use serde_json::json;

use crate::qemu::{virtual_ramdisk, vm_slot, Arch, DirectBoot, Vm};

/// A machine with three virtio NICs at PCI slots 3, 4 and 5 (so the kernel
/// names them eth0, eth1, eth2 in that order); `on_net` (0-based) is the
/// one on the user network with `mac`.
fn boot(dir: &Path, conductor_port: u16, mac: &str, on_net: u8, bootif: bool, tag: &str) -> Vm {
    let disk = dir.join("disk.raw");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(5 << 30))
        .unwrap();
    let mut devices = vec![
        "-drive".to_string(),
        format!("file={},format=raw,if=virtio", disk.display()),
    ];
    for i in (0..3u8).filter(|&i| i != on_net) {
        devices.extend([
            "-netdev".to_string(),
            format!("hubport,id=iso{i},hubid={i}"),
            "-device".to_string(),
            format!(
                "virtio-net-pci,addr={},netdev=iso{i},mac=52:54:00:77:00:0{i}",
                3 + i
            ),
        ]);
    }
    let nic = format!("virtio-net-pci,addr={}", 3 + on_net);
    Vm::boot_direct(
        dir,
        conductor_port,
        DirectBoot {
            arch: Arch::X86_64,
            ramdisk: virtual_ramdisk(),
            memory_mib: 512,
            nic: &nic,
            mac,
            bootif,
            params: "ferrite-link-wait=5",
            devices,
            keep_as: &format!("multi-nic-{tag}.log"),
            open_net: false,
        },
    )
}

async fn node(conductor: &Conductor, name: &str, mac: &str) -> String {
    let uuid = conductor
        .create_node(json!({"driver": "fake-hardware", "name": name}))
        .await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    conductor.create_port(&uuid, mac).await;
    uuid
}

/// The serial log's lines from ferrite (not the kernel's), for the report.
fn net_lines(serial: &str) -> String {
    serial
        .lines()
        .filter(|l| {
            [
                "eth0",
                "eth1",
                "eth2",
                "network",
                "carrier",
                "BOOTIF",
                "not configured",
            ]
            .iter()
            .any(|w| l.contains(w))
                && !l.starts_with('[')
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nics_bootif_third_and_no_bootif_second() {
    let _slot = vm_slot().await;
    let conductor = Conductor::start(&["--fast-track", "true"]).await;
    let port: u16 = conductor.url.rsplit(':').next().unwrap().parse().unwrap();

    // BOOTIF names the third NIC: DHCP there, the others left alone.
    let mac = "52:54:00:77:01:02";
    let uuid = node(&conductor, "multi-bootif", mac).await;
    let dir = tempfile::tempdir().unwrap();
    let mut vm = boot(dir.path(), port, mac, 2, true, "bootif");
    vm.wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    let serial = vm.proc.log_text();
    eprintln!("--- BOOTIF=third NIC ---\n{}", net_lines(&serial));
    assert!(
        serial.contains("eth2: BOOTIF NIC, starting DHCP")
            && serial.contains("eth2: bound 10.0.2.15/24 from 10.0.2.2")
            && serial.contains("network: 10.0.2.15 on eth2"),
        "{serial}"
    );
    // Named once the link wait (5 s here) is over.
    let vm_ref = &vm;
    let serial = wait_for(
        "the line naming the NICs left alone",
        Duration::from_secs(60),
        || {
            let log = vm_ref.proc.log_text();
            async move {
                log.contains(
                    r#"not configured (not BOOTIF, and ipa-inspection-dhcp-all-interfaces is off): ["eth0", "eth1"]"#,
                )
                .then_some(log)
            }
        },
    )
    .await;
    for other in ["eth0", "eth1"] {
        assert!(
            !serial.contains(&format!("{other}: carrier, starting DHCP"))
                && !serial.contains(&format!("{other}: bound")),
            "{serial}"
        );
    }
    drop(vm);

    // No BOOTIF: every NIC tries; the second one's lease makes it ready,
    // and the two without a server are reported.
    let mac = "52:54:00:77:02:01";
    let uuid = node(&conductor, "multi-any", mac).await;
    let dir = tempfile::tempdir().unwrap();
    let mut vm = boot(dir.path(), port, mac, 1, false, "no-bootif");
    vm.wait_heartbeat(&conductor, &uuid, Duration::from_secs(240))
        .await;
    let serial = vm.proc.log_text();
    assert!(
        serial.contains("eth1: bound 10.0.2.15/24 from 10.0.2.2")
            && serial.contains("network: 10.0.2.15 on eth1"),
        "{serial}"
    );
    let vm_ref = &vm;
    let serial = wait_for(
        "the no-lease lines of eth0 and eth2",
        Duration::from_secs(90),
        || {
            let log = vm_ref.proc.log_text();
            async move {
                ["eth0", "eth2"]
                    .iter()
                    .all(|n| {
                        log.contains(&format!(
                            "{n}: no DHCP answer on {n} within 30 s; DHCP keeps trying"
                        ))
                    })
                    .then_some(log)
            }
        },
    )
    .await;
    eprintln!(
        "--- no BOOTIF, server on the second NIC ---\n{}",
        net_lines(&serial)
    );
    for n in ["eth0", "eth1", "eth2"] {
        assert!(
            serial.contains(&format!("{n}: carrier, starting DHCP")),
            "{serial}"
        );
    }
    assert!(
        !serial.contains("eth0: bound") && !serial.contains("eth2: bound"),
        "{serial}"
    );
    assert!(!serial.contains("Kernel panic"), "{serial}");
}
