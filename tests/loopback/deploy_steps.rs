//! Operator deploy steps (`deploy_steps` on `active`/`rebuild`, API
//! 1.69), as Ironic takes them: the schema and the conductor's checks
//! refuse bad ones with Ironic's texts and leave the node `available`; a
//! step only the agent knows is accepted and checked once the agent has
//! said what it offers; `inject_files` at priority 50 runs after
//! `write_image` and its file is on the deployed disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{run, sha256_file, LoopDevice};
use ferrite_tests::{Agent, Conductor};
use serde_json::{json, Value};

const MAC: &str = "52:54:00:5e:d5:01";
const WAIT: Duration = Duration::from_secs(120);
const INJECTED: &str = "injected by a deploy step\n";

fn faultstring(body: &Value) -> String {
    let inner: Value =
        serde_json::from_str(body["error_message"].as_str().unwrap_or("{}")).unwrap_or_default();
    inner["faultstring"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A 64 MiB whole-disk image: partition 1 swap, partition 2 ext4 with /etc.
fn disk_image(dir: &Path) -> PathBuf {
    let content = dir.join("content");
    std::fs::create_dir_all(content.join("etc")).unwrap();
    std::fs::write(content.join("etc/hostname"), "image\n").unwrap();
    let fs = dir.join("root.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&fs)
        .arg("40M"));
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run(Command::new("sgdisk")
        .args([
            "-n",
            "1:2048:+8M",
            "-t",
            "1:8200",
            "-n",
            "2:18432:+40M",
            "-t",
            "2:8300",
        ])
        .arg(&disk));
    run(Command::new("dd")
        .arg(format!("if={}", fs.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "seek=9", "conv=notrunc,fsync", "status=none"]));
    disk
}

/// `debugfs -R "cat PATH"` on a filesystem.
fn debugfs_cat(dev: &Path, path: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(dev)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `PUT .../states/provision` at an explicit microversion.
async fn provision_at(c: &Conductor, uuid: &str, version: &str, body: Value) -> (u16, Value) {
    let r = c
        .http
        .put(format!("{}/v1/nodes/{uuid}/states/provision", c.url))
        .header("X-OpenStack-Ironic-API-Version", version)
        .json(&body)
        .send()
        .await
        .expect("PUT states/provision");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// An `available` node with a port and `instance_info` for `image`.
async fn available_node(c: &Conductor, image: &str, sum: &str) -> String {
    let uuid = c.available_node(json!({})).await;
    c.create_port(&uuid, MAC).await;
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/instance_info", "value": {
            "image_source": image, "image_checksum": sum, "image_disk_format": "raw"}}]),
    )
    .await;
    uuid
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_deploy_steps_are_refused_with_ironics_words() {
    let c = Conductor::start(&["--fast-track", "true"]).await;
    let uuid = available_node(&c, "http://images.example/disk.img", &"0".repeat(64)).await;
    let inject = json!({"interface": "deploy", "step": "inject_files", "args": {}, "priority": 50});

    // The API's checks, in Ironic's words.
    let missing_priority = json!({"target": "active", "deploy_steps": [
        {"interface": "deploy", "step": "inject_files", "args": {}}]});
    let (code, body) = c.act(&uuid, missing_priority).await;
    assert_eq!(code, 400, "{body}");
    let text = faultstring(&body);
    assert!(
        text.starts_with(
            "Invalid deploy_steps: 'priority' is a required property\n\nFailed validating 'required' in schema['items']:\n    {'type': 'object',\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with(
            "\n\nOn instance[0]:\n    {'args': {}, 'interface': 'deploy', 'step': 'inject_files'}"
        ),
        "{text}"
    );
    let bad_interface = json!({"target": "active", "deploy_steps": [
        {"interface": "cleaning", "step": "inject_files", "args": {}, "priority": 50}]});
    let (code, body) = c.act(&uuid, bad_interface).await;
    assert_eq!(code, 400, "{body}");
    assert!(faultstring(&body).starts_with(
        "Invalid deploy_steps: 'cleaning' is not one of ['vendor', 'power', 'management', 'firmware', 'deploy', 'bios', 'raid']\n\nFailed validating 'enum' in schema['items']['properties']['interface']:"
    ), "{body}");
    let (code, body) = c
        .act(
            &uuid,
            json!({"target": "active", "deploy_steps": "inject_files"}),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        faultstring(&body),
        "Expected types <class 'NoneType'>, <class 'list'> for deploy_steps: inject_files"
    );
    let (code, _) = provision_at(
        &c,
        &uuid,
        "1.68",
        json!({"target": "active", "deploy_steps": [inject.clone()]}),
    )
    .await;
    assert_eq!(code, 406, "deploy_steps need API 1.69");
    let (code, body) = c
        .act(
            &uuid,
            json!({"target": "manage", "deploy_steps": [inject.clone()]}),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        faultstring(&body),
        "\"deploy_steps\" is only valid when setting target provision state to active or rebuild"
    );
    // The conductor's: the disallow list, then the steps it knows itself.
    let (code, body) = c
        .act(
            &uuid,
            json!({"target": "active", "deploy_steps": [
            {"interface": "vendor", "step": "send_raw", "args": {}, "priority": 50}]}),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        faultstring(&body),
        "deploy step 'vendor.send_raw' is not allowed. Disallowed by operator configuration [api]disallow_deploy_steps."
    );
    let (code, body) = c
        .act(&uuid, json!({"target": "active", "deploy_steps": [
            {"interface": "deploy", "step": "deploy", "args": {}, "priority": 95},
            {"interface": "deploy", "step": "write_image", "args": {"force": true}, "priority": 80}]}))
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        faultstring(&body),
        format!(
            "Failed to validate deploy or power info for node {uuid}: Validation of deploy steps from \"deploy steps\" argument failed.\
             deploy step deploy on interface deploy is a core step and cannot be overridden by user steps. It may be disabled by setting the priority to 0; \
             deploy step {{'args': {{'force': True}}, 'interface': 'deploy', 'priority': 80, 'step': 'write_image'}} has these unexpected arguments: force"
        )
    );
    let after = c.node(&uuid).await;
    assert_eq!(after["provision_state"], "available");
    assert_eq!(after["target_provision_state"], Value::Null);
    assert!(after["driver_internal_info"]
        .get("user_deploy_steps")
        .is_none());

    // A step only an agent could offer passes the API (Ironic validates it
    // once the agent has booted) and fails the deploy then.
    let disk = tempfile::tempdir().unwrap();
    let lo = LoopDevice::new(disk.path(), "unknown.loop", 5 << 30, true);
    let agent = Agent::start(
        &c.url,
        &[MAC],
        &[&format!("ferrite-disks={}", lo.path.display())],
    );
    let unknown =
        json!({"interface": "deploy", "step": "no_such_step", "args": {}, "priority": 50});
    let (code, body) = c
        .act(
            &uuid,
            json!({"target": "active", "deploy_steps": [unknown]}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let failed = c.wait_state(&uuid, "deploy failed", WAIT).await;
    // Then `. Ramdisk logs: <path>` (`deploy_logs_collect`).
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "Failed to validate the final deploy steps list for node {uuid}: Validation of deploy steps from \"deploy steps\" argument failed.\
             node does not support this deploy step: {{'args': {{}}, 'interface': 'deploy', 'priority': 50, 'step': 'no_such_step'}}"
        )),
        "{failed}"
    );
    assert!(failed["driver_internal_info"].get("deploy_steps").is_none());
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn inject_files_deploy_step_writes_into_the_deployed_disk() {
    let dir = tempfile::tempdir().unwrap();
    let image = disk_image(dir.path());
    let sum = sha256_file(&image);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let disk = LoopDevice::new(dir.path(), "target.loop", 5 << 30, true);
    let c = Conductor::start(&["--fast-track", "true"]).await;
    let uuid = available_node(&c, &server.url_of("disk.img"), &sum).await;
    let agent = Agent::start(
        &c.url,
        &[MAC],
        &[&format!("ferrite-disks={}", disk.path.display())],
    );
    c.wait_agent(&uuid).await;

    let content = base64::engine::general_purpose::STANDARD.encode(INJECTED);
    let steps = json!([{"interface": "deploy", "step": "inject_files", "priority": 50,
                        "args": {"files": [{"path": "/etc/ferrite/injected.conf",
                                            "content": content, "mode": 0o640}]}}]);
    let (code, body) = c
        .act(&uuid, json!({"target": "active", "deploy_steps": steps}))
        .await;
    assert_eq!(code, 202, "{body}");
    // While it runs, the operator's steps are on the node as Ironic keeps them.
    let running = c.node(&uuid).await;
    assert_eq!(
        running["driver_internal_info"]["user_deploy_steps"][0]["step"],
        "inject_files"
    );
    let active = c.wait_state(&uuid, "active", WAIT).await;
    assert_eq!(active["last_error"], Value::Null);
    assert!(active["driver_internal_info"]
        .get("user_deploy_steps")
        .is_none());
    assert!(active["driver_internal_info"].get("deploy_steps").is_none());

    // The order the conductor ran: write_image (80), then inject_files (50).
    let log = c.proc.log_text();
    let written = log
        .find("write_image started")
        .expect("write_image started");
    let injected = log
        .find("step=deploy.inject_files")
        .expect("inject_files started");
    assert!(written < injected, "inject_files ran before write_image");

    // The bytes, on the deployed disk's root filesystem.
    let root = disk
        .partition_nodes()
        .into_iter()
        .find(|n| n.to_string_lossy().ends_with("p2"))
        .expect("partition 2 node");
    assert_eq!(debugfs_cat(&root, "/etc/ferrite/injected.conf"), INJECTED);
    assert_eq!(debugfs_cat(&root, "/etc/hostname"), "image\n");
    drop(agent);
}
