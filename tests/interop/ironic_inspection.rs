//! The real Ironic 39 inspects ferrite-agent with every collector IPA
//! ships (`default,logs,pci-devices,numa-topology,dmi-decode,usb-devices,
//! extra-hardware`), its `pci-devices` and `extra-hardware` hooks on, and
//! stores the keys IPA's collectors produce; a second inspection with an
//! unknown collector name succeeds too (the agent logs and skips it).
//!
//! The machine's sysfs holds captured trees: PCI, NUMA and CPU topology
//! from agent/tests/fixtures/hardware/ferrite-ci-host, the SMBIOS table of
//! qemu-nvme-multinic, and one vendor-specific USB device.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferrite_tests::recorder::Recorder;
use ferrite_tests::Agent;
use reqwest::Method;
use serde_json::{json, Value};

use crate::ironic::Ironic;

const PXE_MAC: &str = "52:54:00:1e:39:11";
const WAIT: Duration = Duration::from_secs(180);
const ALL: &str = "default,logs,pci-devices,numa-topology,dmi-decode,usb-devices,extra-hardware";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/tests/fixtures/hardware")
        .join(name)
}

/// Copy captured trees (symlinks kept) and a USB device into `sys`.
fn machine(sys: &Path) {
    let host = fixture("ferrite-ci-host").join("sys");
    for part in [
        "bus/pci",
        "devices/pci0000:00",
        "devices/system/node",
        "devices/system/cpu",
    ] {
        let to = sys.join(part);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("fixture sysfs");
        let out = Command::new("cp")
            .arg("-a")
            .arg(host.join(part))
            .arg(&to)
            .output()
            .expect("cp");
        assert!(out.status.success(), "{out:?}");
    }
    // The harness links the host's SMBIOS when it has one: use the capture's.
    let dmi = sys.join("firmware/dmi");
    if dmi.is_symlink() {
        std::fs::remove_file(&dmi).expect("unlink host dmi");
    }
    std::fs::create_dir_all(dmi.join("tables")).expect("dmi dir");
    std::fs::copy(
        fixture("qemu-nvme-multinic").join("sys/firmware/dmi/tables/DMI"),
        dmi.join("tables/DMI"),
    )
    .expect("DMI table");
    let usb = sys.join("bus/usb/devices/1-1");
    std::fs::create_dir_all(&usb).expect("usb");
    for (f, v) in [
        ("busnum", "1"),
        ("devnum", "2"),
        ("bDeviceClass", "ff"),
        ("product", "Remote Management Bridge"),
        ("manufacturer", "Ferrite Labs"),
    ] {
        std::fs::write(usb.join(f), format!("{v}\n")).expect("usb attr");
    }
}

async fn inspect(ironic: &Ironic, recorder: &Recorder, uuid: &str, collectors: &str) -> Agent {
    ironic.provision(uuid, "inspect").await;
    ironic.wait_state(uuid, "inspect wait", WAIT).await;
    let callback = format!(
        "ipa-inspection-callback-url={}/v1/continue_inspection",
        recorder.api_url
    );
    let collectors = format!("ipa-inspection-collectors={collectors}");
    let agent = Agent::start_with_sysfs(
        &recorder.api_url,
        &[PXE_MAC],
        &[&callback, &collectors, "ipa-inspection-dhcp-wait-timeout=0"],
        machine,
    );
    let node = ironic.wait_state(uuid, "manageable", WAIT).await;
    assert_eq!(node["last_error"], Value::Null, "{}", agent.proc.log_text());
    agent
}

#[tokio::test(flavor = "multi_thread")]
async fn ironic_inspects_with_every_collector() {
    let ironic = Ironic::start(|c| {
        c.set(
            "inspector",
            "hooks",
            "$default_hooks,pci-devices,extra-hardware".into(),
        );
        c.set(
            "inspector",
            "pci_device_alias",
            r#"{"vendor_id": "1af4", "product_id": "1041", "name": "virtio_net"}"#.into(),
        );
    })
    .await;
    let recorder = Recorder::start(&ironic.url).await;
    let node = ironic
        .ok(
            Method::POST,
            "/v1/nodes",
            Some(json!({
                "name": "ferrite-collectors",
                "driver": "fake-hardware",
                "inspect_interface": "agent",
            })),
        )
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    ironic
        .ok(
            Method::POST,
            "/v1/ports",
            Some(json!({"node_uuid": uuid, "address": PXE_MAC})),
        )
        .await;
    ironic.provision(&uuid, "manage").await;
    ironic.wait_state(&uuid, "manageable", WAIT).await;

    // 1. Every collector.
    let agent = inspect(&ironic, &recorder, &uuid, ALL).await;
    drop(agent);
    let stored = ironic
        .ok(Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None)
        .await;
    let plugin = &stored["plugin_data"];
    let posted = recorder
        .exchanges()
        .into_iter()
        .rev()
        .find(|e| e.path.ends_with("/continue_inspection"))
        .expect("the agent posted its data");
    let body = &posted.body;
    assert_eq!(body["error"], Value::Null, "{}", body["error"]);
    assert_eq!(
        body["configuration"]["collectors"],
        json!(ALL.split(',').collect::<Vec<_>>())
    );
    // pci-devices: IPA's keys for every device of the captured machine.
    let pci = plugin["pci_devices"].as_array().expect("pci_devices");
    assert!(!pci.is_empty(), "{plugin}");
    for d in pci {
        let mut keys: Vec<&str> = d
            .as_object()
            .expect("device")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "bus",
                "class",
                "numa_node_id",
                "product_id",
                "revision",
                "vendor_id"
            ]
        );
    }
    // Ironic's pci-devices hook counted the aliased device.
    let node = ironic.node(&uuid).await;
    let caps = node["properties"]["capabilities"]
        .as_str()
        .unwrap_or_default();
    assert!(caps.contains("virtio_net:1"), "{caps}");
    // numa-topology: ram, cpus, nics.
    let numa = &plugin["numa_topology"];
    assert!(
        numa["ram"][0]["size_kb"].as_u64().unwrap_or(0) > 0,
        "{numa}"
    );
    assert!(numa["cpus"][0]["thread_siblings"].is_array(), "{numa}");
    assert!(numa["nics"].is_array(), "{numa}");
    // dmi-decode: dmidecode's fields under bios, cpu and memory.
    let dmi = &plugin["dmi"];
    assert_eq!(dmi["bios"]["Vendor"], "Ferrite Firmware Inc.", "{dmi}");
    assert_eq!(dmi["cpu"][0]["Socket Designation"], "CPU 0", "{dmi}");
    assert_eq!(dmi["memory"]["Number Of Devices"], 1, "{dmi}");
    assert_eq!(dmi["memory"]["devices"][0]["Locator"], "DIMM 0", "{dmi}");
    // usb-devices.
    assert_eq!(
        plugin["usb_devices"],
        json!([{"product": "Remote Management Bridge", "vendor": "Ferrite Labs", "handle": "USB:1:2"}])
    );
    // extra-hardware: posted as `data`, which Ironic's hook turned into
    // `extra` (and dropped) because every record was well formed.
    assert!(body["data"].as_array().is_some_and(|d| !d.is_empty()));
    assert_eq!(plugin.get("data"), None, "{plugin}");
    let extra = &plugin["extra"];
    assert_eq!(
        extra["system"]["product"]["name"], "FX-1000 Test Node",
        "{extra}"
    );
    assert_eq!(
        extra["firmware"]["bios"]["vendor"], "Ferrite Firmware Inc.",
        "{extra}"
    );
    assert!(
        extra["cpu"]["logical"]["number"].as_u64().unwrap_or(0) > 0,
        "{extra}"
    );
    assert!(
        extra["memory"]["total"]["size"].as_u64().unwrap_or(0) > 0,
        "{extra}"
    );
    assert_eq!(extra["network"]["eth0"]["serial"], PXE_MAC, "{extra}");
    assert!(
        extra["numa"]["nodes"]["count"].as_u64().unwrap_or(0) > 0,
        "{extra}"
    );
    assert!(stored["inventory"]["interfaces"].is_array());

    // 2. An unknown collector: logged, skipped, the inspection succeeds.
    let agent = inspect(&ironic, &recorder, &uuid, "default,no-such-collector").await;
    let log = agent.proc.log_text();
    assert!(
        log.contains("unknown inspection collector") && log.contains("no-such-collector"),
        "{log}"
    );
    drop(agent);
    let stored = ironic
        .ok(Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None)
        .await;
    assert!(stored["inventory"]["interfaces"].is_array(), "{stored}");
    assert_eq!(stored["plugin_data"].get("pci_devices"), None);

    assert!(
        !ironic.log_text().contains("Traceback"),
        "Ironic logged a traceback"
    );
}
