//! The real Ironic 39 drives the real ferrite-agent through a machine's
//! life: automated cleaning, a direct deploy of a qcow2 image, undeploy and
//! cleaning, a direct deploy of a raw image, undeploy, then in-band
//! inspection. The "machine" is an agent process on a loop-device disk:
//! Ironic's fake power is the test's hand, which boots a fresh agent when
//! Ironic waits for one, and `standby.power_off` ends the process
//! (`ferrite-allow-power=exit`).

use std::process::Command;
use std::time::Duration;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{make_raw, noise, same_prefix, sha256_file, to_qcow2, LoopDevice};
use ferrite_tests::recorder::Recorder;
use ferrite_tests::{wait_exit, Agent};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha512};

use crate::ironic::Ironic;
use crate::{command_table, print_table, save_recording};

const PXE_MAC: &str = "52:54:00:1e:39:01";
const SECOND_MAC: &str = "52:54:00:1e:39:02";
const WAIT: Duration = Duration::from_secs(180);

/// Power the machine on: a fresh agent against the recorder.
fn boot(recorder: &Recorder, disk: &LoopDevice, extra: &[&str]) -> Agent {
    let disks = format!("ferrite-disks={}", disk.path.display());
    let bootif = format!("BOOTIF=01-{}", PXE_MAC.replace(':', "-"));
    let mut params = vec![disks.as_str(), bootif.as_str(), "ferrite-allow-power=exit"];
    params.extend_from_slice(extra);
    Agent::start(&recorder.api_url, &[PXE_MAC, SECOND_MAC], &params)
}

fn wipefs(dev: &std::path::Path) -> String {
    let out = Command::new("wipefs")
        .arg("-n")
        .arg(dev)
        .output()
        .expect("wipefs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn head(dev: &std::path::Path, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading the disk");
    buf
}

async fn deploy(
    ironic: &Ironic,
    recorder: &Recorder,
    disk: &LoopDevice,
    uuid: &str,
    instance_info: Value,
) {
    let ops: Vec<Value> = instance_info
        .as_object()
        .expect("instance_info")
        .iter()
        .map(|(k, v)| json!({"op": "add", "path": format!("/instance_info/{k}"), "value": v}))
        .collect();
    ironic.patch_node(uuid, Value::Array(ops)).await;
    ironic.provision(uuid, "active").await;
    ironic.wait_state(uuid, "wait call-back", WAIT).await;
    let mut agent = boot(recorder, disk, &[]);
    let node = ironic.wait_state(uuid, "active", WAIT).await;
    assert_eq!(node["last_error"], Value::Null);
    // Ironic's tear_down_agent sent standby.power_off: the machine went dark.
    let status = wait_exit(&mut agent.proc, Duration::from_secs(30))
        .await
        .expect("the agent powers off after the deploy");
    assert!(status.success(), "agent exit: {status}");
}

/// Undeploy; automated cleaning boots the ramdisk once more.
async fn undeploy_and_clean(ironic: &Ironic, recorder: &Recorder, disk: &LoopDevice, uuid: &str) {
    ironic.provision(uuid, "deleted").await;
    ironic.wait_state(uuid, "clean wait", WAIT).await;
    let agent = boot(recorder, disk, &[]);
    ironic.wait_state(uuid, "available", WAIT).await;
    drop(agent); // cleaning ends with an out-of-band power off
}

#[tokio::test(flavor = "multi_thread")]
async fn ironic_drives_ferrite_agent() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let raw_a = make_raw(&dir.path().join("a.raw"), 24 << 20);
    let qcow = to_qcow2(&raw_a, &images.join("a.qcow2"), &[]);
    let raw_b = images.join("b.raw");
    std::fs::write(&raw_b, noise(39, 20 << 20)).unwrap();
    let server = ImageServer::start(images.clone()).await;
    let disk = LoopDevice::new(dir.path(), "machine.loop", 5 << 30, true);

    let ironic = Ironic::start(|c| {
        // Full-disk overwrites belong in benchmarks; metadata erasure stays
        // (priority 99, from the agent).
        c.set("deploy", "erase_devices_priority", "0".into());
        c.set("inspector", "add_ports", "all".into());
    })
    .await;
    let recorder = Recorder::start(&ironic.url).await;

    let node = ironic
        .ok(
            Method::POST,
            "/v1/nodes",
            Some(json!({
                "name": "ferrite-machine",
                "driver": "fake-hardware",
                "deploy_interface": "direct",
                "boot_interface": "fake",
                "inspect_interface": "agent",
                // Fake management cannot set boot device "disk"; Ironic
                // skips that call for Lenovo machines in UEFI mode. Nothing
                // on the agent's wire depends on it.
                "properties": {"vendor": "lenovo"},
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

    // 1. provide: automated cleaning (erase_devices_metadata) on a disk
    // that carries a GPT.
    let sgdisk = Command::new("sgdisk")
        .args(["-o", "-n", "1:2048:+64M"])
        .arg(&disk.path)
        .output()
        .expect("sgdisk");
    assert!(sgdisk.status.success(), "{sgdisk:?}");
    assert!(wipefs(&disk.path).contains("gpt"), "no GPT to erase");
    ironic.provision(&uuid, "provide").await;
    ironic.wait_state(&uuid, "clean wait", WAIT).await;
    let agent = boot(&recorder, &disk, &[]);
    ironic.wait_state(&uuid, "available", WAIT).await;
    drop(agent);
    assert_eq!(wipefs(&disk.path), "", "signatures left after cleaning");
    assert!(head(&disk.path, 512).iter().all(|b| *b == 0));

    // 2. direct deploy of a qcow2 image, checked by sha256.
    deploy(
        &ironic,
        &recorder,
        &disk,
        &uuid,
        json!({
            "image_source": format!("{}/a.qcow2", server.url),
            "image_checksum": sha256_file(&qcow),
            "image_disk_format": "qcow2",
        }),
    )
    .await;
    same_prefix(&raw_a, &disk.path, 24 << 20).expect("the disk holds the qcow2's guest bytes");

    // 3. undeploy: automated cleaning again.
    undeploy_and_clean(&ironic, &recorder, &disk, &uuid).await;
    assert!(head(&disk.path, 512).iter().all(|b| *b == 0));

    // 4. direct deploy of a raw image, checked by os_hash (sha512).
    let sha512: String = Sha512::digest(std::fs::read(&raw_b).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    deploy(
        &ironic,
        &recorder,
        &disk,
        &uuid,
        json!({
            "image_source": format!("{}/b.raw", server.url),
            "image_os_hash_algo": "sha512",
            "image_os_hash_value": sha512,
            "image_disk_format": "raw",
        }),
    )
    .await;
    same_prefix(&raw_b, &disk.path, 20 << 20).expect("the disk holds the raw image");
    undeploy_and_clean(&ironic, &recorder, &disk, &uuid).await;

    // 5. in-band inspection: the agent posts its inventory to Ironic.
    ironic.provision(&uuid, "manage").await;
    ironic.wait_state(&uuid, "manageable", WAIT).await;
    ironic.provision(&uuid, "inspect").await;
    ironic.wait_state(&uuid, "inspect wait", WAIT).await;
    let callback = format!(
        "ipa-inspection-callback-url={}/v1/continue_inspection",
        recorder.api_url
    );
    // The fixture NICs never get a lease: do not wait for one (IPA's
    // default is 60 s).
    let agent = boot(
        &recorder,
        &disk,
        &[&callback, "ipa-inspection-dhcp-wait-timeout=0"],
    );
    let node = ironic.wait_state(&uuid, "manageable", WAIT).await;
    drop(agent);
    let props = &node["properties"];
    assert_eq!(props["cpu_arch"], "x86_64", "{props}");
    assert!(props["memory_mb"].as_u64().unwrap_or(0) > 0, "{props}");
    assert!(props["cpus"].as_u64().unwrap_or(0) > 0, "{props}");
    // The root device is the 5 GiB disk; Ironic keeps 1 GiB back.
    assert_eq!(props["local_gb"], 4, "{props}");
    assert_eq!(
        ironic.port_macs(&uuid).await,
        vec![PXE_MAC.to_string(), SECOND_MAC.to_string()]
    );
    let inventory = ironic
        .ok(Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None)
        .await;
    let disk_name = disk.path.display().to_string();
    assert!(
        inventory["inventory"]["disks"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["name"] == disk_name.as_str()),
        "{inventory}"
    );

    // 6. a deploy with a wrong checksum fails cleanly: Ironic reports the
    // agent's error, fetches its logs, and nothing of the image is left.
    ironic.provision(&uuid, "provide").await;
    ironic.wait_state(&uuid, "clean wait", WAIT).await;
    let agent = boot(&recorder, &disk, &[]);
    ironic.wait_state(&uuid, "available", WAIT).await;
    drop(agent);
    let ops = json!([
        {"op": "add", "path": "/instance_info/image_source", "value": format!("{}/a.qcow2", server.url)},
        {"op": "add", "path": "/instance_info/image_checksum", "value": "0".repeat(64)},
        {"op": "add", "path": "/instance_info/image_disk_format", "value": "qcow2"},
    ]);
    ironic.patch_node(&uuid, ops).await;
    ironic.provision(&uuid, "active").await;
    ironic.wait_state(&uuid, "wait call-back", WAIT).await;
    let agent = boot(&recorder, &disk, &[]);
    let failed = ironic.wait_state(&uuid, "deploy failed", WAIT).await;
    drop(agent);
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("write_image") && error.to_lowercase().contains("checksum"),
        "{error}"
    );
    assert!(
        head(&disk.path, 1 << 20).iter().all(|b| *b == 0),
        "image bytes left on a failed deploy"
    );
    // Ironic stored the agent's logs (log.collect_system_logs) as a tarball.
    let logs: Vec<_> = std::fs::read_dir(ironic.dir.path().join("state/deploy-logs"))
        .expect("deploy-logs")
        .flatten()
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(logs[0].path())
        .output()
        .expect("tar");
    assert!(
        listing.status.success(),
        "Ironic's copy of the logs is not a tar.gz"
    );
    assert!(!listing.stdout.is_empty());

    // What went over the wire, both ways.
    let exchanges = recorder.exchanges();
    let path = save_recording(&recorder, "ironic-39-to-ferrite-agent");
    print_table(&format!("recorded in {}", path.display()), &exchanges);
    let commands = command_table(&exchanges);
    for (name, status) in &commands {
        assert!(
            status.starts_with("200 SUCCEEDED") || status.starts_with("200 RUNNING"),
            "{name}: {status}"
        );
    }
    let names: Vec<&str> = commands.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "clean.get_clean_steps",
        "clean.execute_clean_step (erase_devices_metadata)",
        "deploy.get_deploy_steps",
        "deploy.execute_deploy_step (write_image)",
        "standby.get_partition_uuids",
        "image.install_bootloader",
        "standby.power_off",
        "log.collect_system_logs",
    ] {
        assert!(names.contains(&want), "Ironic never sent {want}: {names:?}");
    }
    for e in &exchanges {
        assert!(e.status < 500, "{} {} -> {}", e.method, e.path, e.status);
    }
    assert!(
        !ironic.log_text().contains("Traceback"),
        "Ironic logged a traceback"
    );
}
