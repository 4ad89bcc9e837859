//! The seeds' operator session, typed with the real `baremetal` CLI against
//! ferrite-conductor, with a real ferrite-agent (loop-device disk) on the
//! other end: create, manage, provide (automated cleaning), manual clean,
//! deploy of a qcow2 image, node show, undeploy. The "machine" is the agent
//! process: powering it off ends it, booting it again starts a new one.

use std::time::Duration;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{make_raw, same_prefix, sha256_file, to_qcow2, LoopDevice};
use ferrite_tests::{wait_for, Agent, Conductor};
use serde_json::Value;

use crate::{json, run};

const MAC: &str = "52:54:00:5e:ed:01";

async fn wait_state(conductor: &Conductor, uuid: &str, want: &str) -> Value {
    let what = format!("node {uuid} to reach {want}");
    wait_for(&what, Duration::from_secs(120), || {
        let node = conductor.node(uuid);
        let want = want.to_string();
        async move {
            let n = node.await;
            let state = n["provision_state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                !state.ends_with("failed") || want.ends_with("failed"),
                "node failed: {} (last_error: {})",
                state,
                n["last_error"]
            );
            (state == want).then_some(n)
        }
    })
    .await
}

fn boot_agent(conductor: &Conductor, disk: &LoopDevice) -> Agent {
    let disks = format!("ferrite-disks={}", disk.path.display());
    Agent::start(&conductor.url, &[MAC], &[&disks])
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_session_against_ferrite() {
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&dir.path().join("disk.raw"), 24 << 20);
    let qcow = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    let sum = sha256_file(&qcow);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "target.loop", 5 << 30, true);
    let conductor = Conductor::start(&[
        "--fast-track",
        "true",
        "--heartbeat-timeout",
        "4",
        "--periodic-interval",
        "1",
        // Full-disk overwrites belong in benchmarks; metadata erasure stays.
        "--clean-step-priorities",
        "erase_devices=0",
    ])
    .await;
    let c = &conductor;

    let created = json(
        c,
        &[
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            "seed-node",
            "--driver-info",
            "deploy_kernel=http://example.invalid/k",
            "--property",
            "cpus=2",
            "--property",
            "memory_mb=4096",
            "--property",
            "local_gb=5",
            "--property",
            "cpu_arch=x86_64",
        ],
    );
    let uuid = created["uuid"].as_str().unwrap().to_string();
    assert_eq!(created["provision_state"], "enroll");
    run(c, &["port", "create", MAC, "--node", &uuid]);

    // manage: enroll → verifying → manageable.
    run(c, &["node", "manage", &uuid]);
    let node = wait_state(c, &uuid, "manageable").await;
    assert_eq!(node["power_state"], "power off");

    // The machine boots the ramdisk (fast track keeps it up).
    let agent = boot_agent(c, &disk);
    c.wait_agent(&uuid).await;

    // provide: automated cleaning (erase_devices_metadata, 99) → available.
    run(c, &["node", "provide", &uuid]);
    wait_state(c, &uuid, "available").await;
    let mut head = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(disk.backing()).unwrap(),
        &mut head,
        0,
    )
    .unwrap();
    assert!(
        head.iter().all(|&b| b == 0),
        "metadata erasure zeroed the disk's first sectors"
    );

    // In-band inspection: the machine reboots into the ramdisk, which posts
    // its inventory to /v1/continue_inspection before looking itself up.
    run(c, &["node", "manage", &uuid]);
    wait_state(c, &uuid, "manageable").await;
    run(c, &["node", "inspect", &uuid]);
    wait_state(c, &uuid, "inspect wait").await;
    drop(agent);
    let disks = format!("ferrite-disks={}", disk.path.display());
    let callback = format!(
        "ipa-inspection-callback-url={}/v1/continue_inspection",
        c.url
    );
    let agent = Agent::start(&c.url, &[MAC], &[&disks, &callback]);
    let inspected = wait_state(c, &uuid, "manageable").await;
    assert_eq!(inspected["last_error"], Value::Null);
    assert!(
        inspected["inspection_finished_at"].is_string(),
        "{inspected}"
    );
    // Operator-set properties survive; what was missing is filled in.
    assert_eq!(inspected["properties"]["cpus"], 2);
    assert_eq!(
        inspected["properties"]["memory_mb"], 4096,
        "not the inventory's"
    );
    assert_eq!(inspected["properties"]["cpu_arch"], "x86_64");
    let inventory: Value =
        serde_json::from_str(&run(c, &["node", "inventory", "save", &uuid])).unwrap();
    assert!(
        inventory["inventory"]["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().any(|n| n["mac_address"] == MAC)),
        "{inventory}"
    );
    c.wait_agent(&uuid).await;

    // Manual cleaning with the step the seeds use.
    run(
        c,
        &[
            "node",
            "clean",
            &uuid,
            "--clean-steps",
            r#"[{"interface": "deploy", "step": "erase_devices_metadata"}]"#,
        ],
    );
    let node = wait_state(c, &uuid, "manageable").await;
    assert_eq!(node["last_error"], Value::Null);
    assert_eq!(node["clean_step"], serde_json::json!({}));

    // An illegal verb is refused as Ironic refuses it.
    let refused = std::process::Command::new(crate::baremetal_cli())
        .args(["node", "undeploy", &uuid])
        .env("OS_ENDPOINT", &c.url)
        .env("OS_AUTH_TYPE", "http_basic")
        .env("OS_USERNAME", ferrite_tests::API_USER)
        .env("OS_PASSWORD", ferrite_tests::API_PASSWORD)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("can not be performed on node") && err.contains("manageable"),
        "{err}"
    );

    run(c, &["node", "provide", &uuid]);
    wait_state(c, &uuid, "available").await;

    // Deploy a qcow2 image with its checksum.
    let url = server.url_of("disk.qcow2");
    run(
        c,
        &[
            "node",
            "set",
            &uuid,
            "--instance-info",
            &format!("image_source={url}"),
            "--instance-info",
            &format!("image_checksum={sum}"),
            "--instance-info",
            "image_disk_format=qcow2",
        ],
    );
    run(c, &["node", "deploy", &uuid]);
    let node = wait_state(c, &uuid, "active").await;
    same_prefix(&raw, &disk.path, 24 << 20).expect("the disk holds the image");
    let shown = json(c, &["node", "show", &uuid]);
    assert_eq!(shown["provision_state"], "active");
    assert_eq!(shown["target_provision_state"], Value::Null);
    assert_eq!(shown["power_state"], "power on");
    let dii = &node["driver_internal_info"];
    assert_eq!(dii["is_whole_disk_image"], true);
    assert!(dii["root_uuid_or_disk_id"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    let boot = json(c, &["node", "boot", "device", "show", &uuid]);
    assert_eq!(boot["boot_device"], "disk");
    drop(agent); // powered off by the deploy

    // undeploy: deleting → cleaning (the ramdisk boots again) → available.
    run(c, &["node", "undeploy", &uuid]);
    let _agent = boot_agent(c, &disk);
    let node = wait_state(c, &uuid, "available").await;
    assert_eq!(node["instance_info"], serde_json::json!({}));

    // What happened, as `baremetal node history list` shows it.
    let history = json(c, &["node", "history", "list", &uuid]);
    let events: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.contains("from deploying to active")),
        "{history}"
    );
}
