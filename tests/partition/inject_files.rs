//! The `inject_files` deploy step on a deployed loop disk: files from the
//! node's properties and the step's arguments land in the right
//! filesystem (found by its directory, or by partition number), with
//! their modes and owners, a URL template is filled from the node, a
//! symlink in the image cannot lead a write out of it, and a bad entry
//! fails the step before anything is written. Checked with `debugfs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{run, LoopDevice};
use serde_json::{json, Value};

use crate::*;

/// A 64 MiB disk: partition 1 swap, partition 2 ext4 holding `content`.
fn disk_image(dir: &Path, content: &Path) -> PathBuf {
    let fs = dir.join("root.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(content)
        .arg(&fs)
        .arg("40M"));
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 * MIB)
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

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `debugfs -R <request>` on the filesystem, stdout and stderr together.
fn debugfs(dev: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(dev)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn step(files: Value, node: Value) -> Value {
    json!({
        "step": {"step": "inject_files", "interface": "deploy", "priority": 0,
                 "args": {"files": files}},
        "node": node, "ports": [{"address": "52:54:00:ff:00:21"}],
        "deploy_version": {"generic_hardware_manager": "1.2"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn files_land_in_the_deployed_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let escape = format!("tmp/ferrite-inject-escape-{}", std::process::id());
    let content = dir.path().join("content");
    std::fs::create_dir_all(content.join("etc")).unwrap();
    std::fs::create_dir_all(content.join(&escape)).unwrap();
    std::fs::write(content.join("etc/old.conf"), "old").unwrap();
    std::fs::write(content.join("etc/keep.conf"), "keep").unwrap();
    std::os::unix::fs::symlink(Path::new("/").join(&escape), content.join("etc/abs")).unwrap();
    let image = disk_image(dir.path(), &content);
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let uuid = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
    std::fs::write(served.join(format!("{uuid}.conf")), "per-node\n").unwrap();
    std::fs::copy(&image, served.join("disk.img")).unwrap();

    let server = ImageServer::start(served.clone()).await;
    let disk = LoopDevice::new(dir.path(), "inject.loop", DISK, true);
    let pair = pair_for(&disk).await;
    let api = pair.api();
    let info = image_info(
        server.url_of("disk.img"),
        "disk.img",
        &sha256(&image),
        "raw",
    );
    let deployed = api
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    assert_eq!(deployed["command_status"], "SUCCEEDED", "{deployed}");

    // A bad entry after good ones: nothing at all is written.
    let node = json!({"uuid": uuid, "properties": {}});
    let refused = api
        .run(
            "deploy.execute_deploy_step",
            step(
                json!([{"path": "/etc/early.conf", "content": b64("x")},
                       {"path": "/hosts", "content": b64("x")}]),
                node.clone(),
            ),
        )
        .await;
    assert_eq!(refused["command_status"], "FAILED", "{refused}");
    assert_eq!(
        refused["command_error"]["type"],
        "InvalidCommandParamsError"
    );
    let details = refused["command_error"]["details"].as_str().unwrap();
    assert!(
        details.contains("in root directory requires \"partition\""),
        "{details}"
    );
    // A directory no filesystem has.
    let missing = api
        .run(
            "deploy.execute_deploy_step",
            step(json!([{"path": "/var/lib/x", "content": ""}]), node.clone()),
        )
        .await;
    assert_eq!(missing["command_status"], "FAILED", "{missing}");
    assert_eq!(missing["command_error"]["type"], "DeviceNotFound");
    assert!(
        missing["command_error"]["details"]
            .as_str()
            .unwrap()
            .contains("No partition found with path /var, scanned: [1, 2]"),
        "{missing}"
    );

    let node = json!({"uuid": uuid, "properties": {"inject_files": [
        {"path": "/etc/sysctl.d/90-ferrite.conf", "content": b64("vm.swappiness=1\n"),
         "mode": 0o600, "dirmode": 0o700, "owner": 1000, "group": 100}]}});
    let url = format!(
        "{}/{{node[uuid]}}.conf",
        server.url_of("").trim_end_matches('/')
    );
    let files = json!([
        {"path": "/etc/old.conf", "deleted": true},
        {"path": "/etc/from-url.conf", "content": url},
        {"path": "/top.txt", "partition": 2, "content": b64("top")},
        {"path": "/etc/abs/escaped", "content": b64("inside")},
    ]);
    let done = api
        .run("deploy.execute_deploy_step", step(files, node))
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");

    let nodes = disk.partition_nodes();
    let root = nodes
        .iter()
        .find(|n| n.to_string_lossy().ends_with("p2"))
        .expect("partition 2 node");
    let cat = |p: &str| debugfs(root, &format!("cat {p}"));
    assert!(cat("/etc/sysctl.d/90-ferrite.conf").contains("vm.swappiness=1\n"));
    let stat = debugfs(root, "stat /etc/sysctl.d/90-ferrite.conf");
    assert!(stat.contains("Mode:  0600"), "{stat}");
    assert!(
        stat.contains("User:  1000") && stat.contains("Group:   100"),
        "{stat}"
    );
    let dir_stat = debugfs(root, "stat /etc/sysctl.d");
    assert!(dir_stat.contains("Mode:  0700"), "{dir_stat}");
    assert!(cat("/etc/from-url.conf").contains("per-node"));
    assert!(cat("/top.txt").contains("top"));
    assert!(cat("/etc/keep.conf").contains("keep"));
    assert!(
        cat("/etc/old.conf").contains("File not found"),
        "old.conf survived"
    );
    assert!(cat("/etc/early.conf").contains("File not found"));
    // The image's absolute symlink led into the image, not the host's /tmp.
    assert!(cat(&format!("/{escape}/escaped")).contains("inside"));
    assert!(!Path::new("/").join(&escape).join("escaped").exists());
}
