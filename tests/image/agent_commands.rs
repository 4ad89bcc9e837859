//! The engine behind the agent's commands, as Ironic drives them: the
//! `write_image` deploy step, `prepare_image`, progress while running,
//! `get_partition_uuids`, and failures as IPA reports them.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{same_prefix, sha256_file, to_qcow2, LoopDevice};
use ferrite_tests::{wait_for, Pair};
use serde_json::json;

use crate::fixture;

const SIZE: u64 = 24 << 20;

/// IPA's whole-disk `root uuid`: the MBR signature at offset 440.
fn mbr_signature(path: &std::path::Path) -> String {
    let mut b = [0u8; 4];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, 440)
        .unwrap();
    format!("0x{:08x}", u32::from_le_bytes(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn write_image_deploy_step_as_ironic_sends_it() {
    let (dir, raw) = fixture(SIZE);
    let qcow = to_qcow2(&raw, &dir.path().join("disk.qcow2"), &[]);
    let sum = sha256_file(&qcow);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    // 5 GiB (sparse): root device selection wants at least 4 GiB.
    let disk = LoopDevice::new(dir.path(), "root.loop", 5 << 30, true);
    let disks = format!("ferrite-disks={}", disk.path.display());
    let pair = Pair::start(
        &[],
        "52:54:00:ff:00:01",
        &[&disks, "ipa-image-download-connection-retry-interval=0.2"],
    )
    .await;
    let api = pair.api();

    let uuids = api.run("standby.get_partition_uuids", json!({})).await;
    assert_eq!(uuids["command_result"], json!({}), "nothing prepared yet");

    // Slow the server so the command is observably RUNNING with progress.
    server.faults().rate = 3 << 20;
    let image_info = json!({
        "id": "disk.qcow2", "urls": [server.url_of("disk.qcow2")], "disk_format": "qcow2",
        "container_format": "bare", "stream_raw_images": true, "checksum": sum,
        "os_hash_algo": "sha256", "os_hash_value": sum, "node_uuid": pair.uuid,
    });
    let step = json!({"name": "deploy.execute_deploy_step", "params": {
        "step": {"interface": "deploy", "step": "write_image", "args": {"image_info": image_info, "configdrive": null}},
        "node": {"uuid": pair.uuid, "instance_info": {}, "properties": {}, "driver_info": {}},
        "ports": [], "deploy_version": {"generic_hardware_manager": "1.2"}}});
    let (code, started) = api.post("&wait=false", step.clone()).await;
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["command_status"], "RUNNING");
    let id = started["id"].as_str().unwrap().to_string();
    let path = format!("/v1/commands/{id}?agent_token={}", api.token);
    let progress = wait_for(
        "progress in the running command",
        Duration::from_secs(30),
        || {
            let (api, path) = (api.clone(), path.clone());
            async move {
                let (_, r) = api.get(&path).await;
                (r["command_status"] == "RUNNING"
                    && r["command_result"]["progress"]["bytes_received"].as_u64()? > 0)
                    .then(|| r["command_result"]["progress"].clone())
            }
        },
    )
    .await;
    assert!(progress["bytes_total"].as_u64().unwrap() > 0, "{progress}");
    let (_, done) = api.get(&format!("{path}&wait=true")).await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    let root_uuid = mbr_signature(&raw);
    assert_eq!(
        done["command_result"]["deploy_result"]["result"],
        format!(
            "prepare_image: image (disk.qcow2) written to device {} root_uuid={root_uuid}",
            disk.path.display()
        )
    );
    assert_eq!(done["command_result"]["deploy_step"]["step"], "write_image");
    same_prefix(&disk.path, &raw, SIZE).unwrap();
    let uuids = api.run("standby.get_partition_uuids", json!({})).await;
    assert_eq!(uuids["command_result"], json!({"root uuid": root_uuid}));

    // A wrong checksum: FAILED with IPA's error type and both digests.
    server.faults().rate = 0;
    let mut bad = step.clone();
    bad["params"]["step"]["args"]["image_info"]["os_hash_value"] = json!("1".repeat(64));
    let (_, failed) = api.post("&wait=true", bad).await;
    assert_eq!(failed["command_status"], "FAILED");
    assert_eq!(failed["command_error"]["type"], "ImageChecksumError");
    let details = failed["command_error"]["details"].as_str().unwrap();
    assert!(
        details.contains(&"1".repeat(64)) && details.contains(&sum),
        "{details}"
    );
    // The unverified bytes cannot boot: the disk's first sectors are blank.
    let mut head = vec![0xffu8; 4096];
    std::fs::File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert!(
        head.iter().all(|&b| b == 0),
        "the failed image's start was left on disk"
    );

    // A partition image without its sizes: said plainly.
    let mut partition = step.clone();
    partition["params"]["step"]["args"]["image_info"]["image_type"] = json!("partition");
    let (_, failed) = api.post("&wait=true", partition).await;
    assert_eq!(failed["command_error"]["type"], "InvalidCommandParamsError");
    assert!(failed["command_error"]["details"]
        .as_str()
        .unwrap()
        .contains("root_mb"));

    // prepare_image validates image_info up front (HTTP 400, nothing recorded).
    let (code, fault) = api
        .post("", json!({"name": "standby.prepare_image", "params": {"image_info": {"id": "x", "urls": []}}}))
        .await;
    assert_eq!(code, 400, "{fault}");

    // `checksum` as the URL of a checksums file, as Ironic passes it through.
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!("{}  other.img\n{sum} *disk.qcow2\n", "0".repeat(64)),
    )
    .unwrap();
    let by_url = api
        .run(
            "standby.prepare_image",
            json!({"image_info": {"id": "disk.qcow2", "urls": [server.url_of("disk.qcow2")],
            "disk_format": "qcow2", "checksum": server.url_of("SHA256SUMS")}}),
        )
        .await;
    assert_eq!(by_url["command_status"], "SUCCEEDED", "{by_url}");
    assert!(by_url["command_result"]["result"]
        .as_str()
        .unwrap()
        .starts_with("prepare_image: image (disk.qcow2) written"));

    // A missing image: ImageDownloadError naming the status.
    let failed = api
        .run(
            "standby.prepare_image",
            json!({"image_info": {"id": "gone", "urls": [server.url_of("gone.qcow2")],
            "os_hash_algo": "sha256", "os_hash_value": sum}}),
        )
        .await;
    assert_eq!(
        failed["command_error"]["type"], "ImageDownloadError",
        "{failed}"
    );
    assert!(failed["command_error"]["details"]
        .as_str()
        .unwrap()
        .contains("404"));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_disk_is_touched_without_an_allow_list() {
    let (dir, raw) = fixture(SIZE);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let pair = Pair::start(&[], "52:54:00:ff:00:02", &[]).await;
    let failed = pair
        .api()
        .run(
            "standby.prepare_image",
            json!({"image_info": {"id": "disk.raw", "urls": [server.url_of("disk.raw")],
            "os_hash_algo": "sha256", "os_hash_value": sha256_file(&raw)}}),
        )
        .await;
    assert_eq!(failed["command_status"], "FAILED");
    assert_eq!(failed["command_error"]["type"], "DeviceNotFound");
    assert!(server.log().is_empty(), "nothing was even downloaded");
}
