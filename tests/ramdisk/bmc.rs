//! The BMC in the inventory: QEMU's simulated BMC (`ipmi-bmc-sim`) behind
//! a KCS system interface (`isa-ipmi-kcs`), the server ramdisk. PID 1 loads
//! `ipmi_si` because the ACPI device QEMU describes (IPI0001) asks for it by
//! modalias, `ipmi_msghandler` as its dependency and `ipmi_devintf` as the
//! handler's soft dependency (and from the boot list); devtmpfs makes
//! `/dev/ipmi0` (there is no udev), and the agent's inspection asks the BMC
//! for its LAN channels; the inventory is read back through the conductor's
//! API.
//!
//! What QEMU's BMC answers (hw/ipmi/ipmi_bmc_sim.c, QEMU 10.0): Get
//! Device ID with its `mfg_id`/`product_id` properties and Device ID 0x20;
//! it implements the chassis, sensor/event, app and storage NetFns but not
//! transport (0x0c), so there are no LAN configuration parameters at all;
//! Get Channel Info knows channel 0 (IPMB) and 0xf (this system interface)
//! only and answers "invalid data field in request" (0xcc) for the LAN
//! channels 1–11 that IPA asks about. With no LAN channel IPA reports its null
//! addresses: `bmc_address` "0.0.0.0" (`ipmitool lan print N` fails for
//! every channel), `bmc_v6address` "::/0", and no `bmc_mac` key
//! (`get_bmc_mac` raises IncompatibleHardwareMethodError, which drops it).
//! Without a working `/dev/ipmi0` both addresses would be null instead,
//! and without the BMC's replies the agent would report null as well.

use std::time::Duration;

use ferrite_tests::{wait_for, Conductor};
use serde_json::json;

use crate::e2e::{verb, wait_states};
use crate::qemu::{ramdisk, vm_slot, Arch, DirectBoot, Vm};

const MAC: &str = "52:54:00:b3:c0:01";

#[tokio::test(flavor = "multi_thread")]
async fn ipmi_si_finds_qemus_kcs_bmc_and_the_inventory_reports_what_it_answers() {
    let _vm_slot = vm_slot().await;
    let ramdisk = ramdisk();
    let c = Conductor::start(&["--fast-track", "true"]).await;
    let uuid = c
        .create_node(json!({"driver": "fake-hardware", "name": "bmc-0"}))
        .await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    c.create_port(&uuid, MAC).await;
    verb(&c, &uuid, "manage").await;
    wait_states(&c, &uuid, &["manageable"], Duration::from_secs(30)).await;
    verb(&c, &uuid, "inspect").await;
    wait_states(&c, &uuid, &["inspect wait"], Duration::from_secs(30)).await;

    let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(5 << 30))
        .unwrap();
    let vm = Vm::boot_direct(
        dir.path(),
        port,
        DirectBoot {
            arch: Arch::X86_64,
            ramdisk,
            memory_mib: 512,
            nic: "virtio-net-pci",
            mac: MAC,
            bootif: true,
            params: "ipa-inspection-callback-url=http://10.0.2.100/v1/continue_inspection",
            devices: [
                "-device",
                // Unusual IDs, so the kernel's report is this BMC's answer.
                // (Its `device_id` property is no use: realize resets the
                // Device ID to 0x20.)
                "ipmi-bmc-sim,id=bmc0,mfg_id=0x00c0de,product_id=0x4242",
                "-device",
                "isa-ipmi-kcs,bmc=bmc0",
                "-drive",
                &format!("file={},format=raw,if=virtio", disk.display()),
            ]
            .map(String::from)
            .to_vec(),
            keep_as: "bmc-serial.log",
            open_net: false,
        },
    );

    // Inspection posts the inventory, then the agent looks itself up
    // (fast track) and heartbeats.
    let inspected = wait_states(
        &c,
        &uuid,
        &["manageable", "inspect failed"],
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(
        inspected["provision_state"], "manageable",
        "last_error: {}",
        inspected["last_error"]
    );
    wait_for("the first heartbeat", Duration::from_secs(120), || {
        let n = c.node(&uuid);
        async move {
            n.await["driver_internal_info"]["agent_last_heartbeat"]
                .is_string()
                .then_some(())
        }
    })
    .await;
    eprintln!(
        "QEMU start -> inspected and heartbeating: {:.1} s",
        vm.started.elapsed().as_secs_f64()
    );

    let stored = c.inventory(&uuid).await;
    let inv = &stored["inventory"];
    let serial = vm.proc.log_text();
    assert_eq!(inv["bmc_address"], "0.0.0.0", "{inv}\n{serial}");
    assert_eq!(inv["bmc_v6address"], "::/0", "{inv}");
    let keys: Vec<&str> = inv
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert!(
        !keys.contains(&"bmc_mac"),
        "no LAN channel, no bmc_mac: {keys:?}"
    );

    // The kernel side: the modules loaded, ipmi_si found the KCS interface
    // and read this BMC's Get Device ID; the agent asked /dev/ipmi0.
    for expected in [
        "IPMI kcs interface initialized",
        "Found new BMC (man_id: 0x00c0de, prod_id: 0x4242, dev_id: 0x20)",
        "device=/dev/ipmi0",
        "asked the BMC for its addresses",
    ] {
        assert!(serial.contains(expected), "no {expected:?}:\n{serial}");
    }
    assert!(!serial.contains("Cannot get BMC"), "{serial}");
}
