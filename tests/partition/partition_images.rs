//! `image_type=partition`: IPA's layout on GPT (UEFI) and msdos (BIOS),
//! the image in root, the ESP, swap, ephemeral and config drive made, and
//! `get_partition_uuids` in IPA's shape with the UUIDs blkid sees.

use std::os::unix::fs::FileExt;
use std::path::Path;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{noise, to_qcow2, LoopDevice};
use serde_json::{json, Value};

use crate::*;

struct Deployed {
    table: Value,
    result: Value,
    uuids: Value,
    log: String,
}

async fn deploy(
    dir: &Path,
    disk: &LoopDevice,
    image: &str,
    format: &str,
    extra: Value,
    configdrive: &str,
) -> Deployed {
    let server = ImageServer::start(dir.to_path_buf()).await;
    let pair = pair_for(disk).await;
    let api = pair.api();
    let mut info = image_info(
        server.url_of(image),
        image,
        &sha256(&dir.join(image)),
        format,
    );
    for (k, v) in extra.as_object().unwrap() {
        info[k] = v.clone();
    }
    info["image_type"] = json!("partition");
    info["configdrive"] = json!(configdrive);
    let step = json!({"name": "deploy.execute_deploy_step", "params": {
        "step": {"interface": "deploy", "step": "write_image",
                 "args": {"image_info": info, "configdrive": configdrive}},
        "node": {"uuid": pair.uuid}, "ports": [],
        "deploy_version": {"generic_hardware_manager": "1.2"}}});
    let (_, done) = api.post("&wait=true", step).await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    let uuids = api.run("standby.get_partition_uuids", json!({})).await;
    Deployed {
        table: sfdisk_json(&disk.path),
        result: done["command_result"]["deploy_result"]["result"].clone(),
        uuids: uuids["command_result"].clone(),
        log: pair.agent.proc.log_text(),
    }
}

fn part_name(disk: &LoopDevice, n: usize) -> String {
    format!("{}p{n}", disk.path.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn uefi_gpt_layout_with_swap_ephemeral_and_configdrive() {
    let dir = tempfile::tempdir().unwrap();
    let root = ext4_image(dir.path(), "root.img", 48 * MIB);
    to_qcow2(&root, &dir.path().join("root.qcow2"), &[]);
    let iso = config_iso(dir.path(), "cd.iso");
    let disk = LoopDevice::new(dir.path(), "uefi.loop", DISK, true);
    let d = deploy(
        dir.path(),
        &disk,
        "root.qcow2",
        "qcow2",
        json!({"root_mb": 100, "swap_mb": 16, "ephemeral_mb": 40, "ephemeral_format": "ext4",
               "deploy_boot_mode": "uefi", "boot_option": "local"}),
        &gzip_b64(&std::fs::read(&iso).unwrap()),
    )
    .await;

    // The table: GPT, IPA's order, types, MiB alignment, root last.
    assert_eq!(d.table["label"], "gpt", "{}", d.table);
    sgdisk_clean(&disk.path);
    let parts = d.table["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        ],
        "{}",
        d.table
    );
    let spans: Vec<(u64, u64)> = (0..5).map(|i| part_span(&d.table, i)).collect();
    let cd_mib = std::fs::metadata(&iso).unwrap().len().div_ceil(MIB);
    assert_eq!(
        spans,
        [
            (MIB, 550 * MIB),
            (551 * MIB, 40 * MIB),
            (591 * MIB, 16 * MIB),
            (607 * MIB, cd_mib * MIB),
            ((607 + cd_mib) * MIB, 100 * MIB),
        ]
    );

    // Contents, as blkid sees them at each partition's offset.
    let (root_off, root_len) = spans[4];
    region_equals(&disk.path, root_off, &root);
    let root_fs = blkid_at(&disk.path, root_off, root_len);
    let image_fs = blkid_at(&root, 0, 48 * MIB);
    assert_eq!(root_fs["TYPE"], "ext4");
    assert_eq!(root_fs["UUID"], image_fs["UUID"]);
    let esp = blkid_at(&disk.path, spans[0].0, spans[0].1);
    assert_eq!(
        (esp["TYPE"].as_str(), esp["LABEL"].as_str()),
        ("vfat", "efi-part"),
        "{esp:?}"
    );
    let eph = blkid_at(&disk.path, spans[1].0, spans[1].1);
    assert_eq!(
        (eph["TYPE"].as_str(), eph["LABEL"].as_str()),
        ("ext4", "ephemeral0")
    );
    let swap = blkid_at(&disk.path, spans[2].0, spans[2].1);
    assert_eq!(
        (swap["TYPE"].as_str(), swap["LABEL"].as_str()),
        ("swap", "swap1"),
        "{swap:?}"
    );
    let cd = blkid_at(&disk.path, spans[3].0, spans[3].1);
    assert_eq!(
        (cd["TYPE"].as_str(), cd["LABEL"].as_str()),
        ("iso9660", "config-2")
    );
    region_equals(&disk.path, spans[3].0, &iso);

    // IPA's message and get_partition_uuids.
    assert_eq!(
        d.result,
        format!(
            "prepare_image: image (root.qcow2) written to device {} root_uuid={} efi_system_partition_uuid={}",
            disk.path.display(),
            root_fs["UUID"],
            esp["UUID"]
        )
    );
    assert_eq!(
        d.uuids,
        json!({
            "root uuid": root_fs["UUID"],
            "efi system partition uuid": esp["UUID"],
            "partitions": {
                "efi system partition": part_name(&disk, 1),
                "ephemeral": part_name(&disk, 2),
                "swap": part_name(&disk, 3),
                "configdrive": part_name(&disk, 4),
                "root": part_name(&disk, 5),
            }
        })
    );
    // Through the kernel's own partition devices too, where it has them.
    let nodes = disk.partition_nodes();
    let node_uuid = |n: &Path| {
        ferrite_tests::images::run(
            std::process::Command::new("blkid")
                .args(["-p", "-o", "value", "-s", "UUID"])
                .arg(n),
        )
        .trim()
        .to_string()
    };
    // The agent told the kernel about its partitions; devtmpfs made nodes,
    // and the (native) FAT formatting used them.
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    let esp_node = format!("target={}", nodes[0].display());
    assert!(
        d.log
            .lines()
            .any(|l| l.contains("making a FAT filesystem") && l.contains(&esp_node)),
        "{}",
        d.log
    );
    assert_eq!(node_uuid(&nodes[4]), root_fs["UUID"]);
    assert_eq!(node_uuid(&nodes[0]), esp["UUID"]);

    // Again, over the previous deploy's partitions: the new ESP is reported,
    // whichever way (node or disk offset) mkfs reached it.
    let again = deploy(
        dir.path(),
        &disk,
        "root.qcow2",
        "qcow2",
        json!({"root_mb": 100, "swap_mb": 16, "ephemeral_mb": 40, "deploy_boot_mode": "uefi"}),
        &gzip_b64(&std::fs::read(&iso).unwrap()),
    )
    .await;
    let esp2 = blkid_at(&disk.path, spans[0].0, spans[0].1);
    assert_ne!(esp2["UUID"], esp["UUID"], "a fresh ESP");
    assert_eq!(again.uuids["efi system partition uuid"], esp2["UUID"]);
    assert_eq!(again.uuids["root uuid"], root_fs["UUID"]);
    let nodes = disk.partition_nodes();
    assert_eq!(node_uuid(&nodes[0]), esp2["UUID"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bios_msdos_layout_raw_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = ext4_image(dir.path(), "root.img", 40 * MIB);
    let iso = config_iso(dir.path(), "cd.iso");
    let disk = LoopDevice::new(dir.path(), "bios.loop", DISK, true);
    let d = deploy(
        dir.path(),
        &disk,
        "root.img",
        "raw",
        json!({"root_mb": 64, "swap_mb": 8, "ephemeral_mb": 24, "deploy_boot_mode": "bios"}),
        &gzip_b64(&std::fs::read(&iso).unwrap()),
    )
    .await;

    assert_eq!(d.table["label"], "dos", "{}", d.table);
    run(std::process::Command::new("sfdisk")
        .arg("--verify")
        .arg(&disk.path));
    let parts = d.table["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["83", "82", "83", "83"], "{}", d.table);
    // Only root (last) is active, as parted's `boot` flag on BIOS.
    let boot: Vec<bool> = parts
        .iter()
        .map(|p| p["bootable"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(boot, [false, false, false, true]);
    let spans: Vec<(u64, u64)> = (0..4).map(|i| part_span(&d.table, i)).collect();
    assert_eq!(spans[0], (MIB, 24 * MIB));
    assert_eq!(spans[1], (25 * MIB, 8 * MIB));
    assert_eq!(spans[3].1, 64 * MIB);
    assert!(spans.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));

    let (root_off, root_len) = spans[3];
    region_equals(&disk.path, root_off, &root);
    let root_fs = blkid_at(&disk.path, root_off, root_len);
    assert_eq!(root_fs["UUID"], blkid_at(&root, 0, 40 * MIB)["UUID"]);
    assert_eq!(blkid_at(&disk.path, spans[1].0, spans[1].1)["TYPE"], "swap");
    assert_eq!(
        blkid_at(&disk.path, spans[2].0, spans[2].1)["LABEL"],
        "config-2"
    );
    region_equals(&disk.path, spans[2].0, &iso);
    assert_eq!(
        d.result,
        format!(
            "prepare_image: image (root.img) written to device {} root_uuid={}",
            disk.path.display(),
            root_fs["UUID"]
        )
    );
    assert_eq!(d.uuids["root uuid"], root_fs["UUID"]);
    assert_eq!(d.uuids["efi system partition uuid"], Value::Null);
    assert_eq!(
        d.uuids["partitions"],
        json!({"ephemeral": part_name(&disk, 1), "swap": part_name(&disk, 2),
               "configdrive": part_name(&disk, 3), "root": part_name(&disk, 4)})
    );

    // A rebuild with preserve_ephemeral: the disk is not wiped and the
    // ephemeral filesystem (and a file on it) survives; swap is made anew.
    let eph = blkid_at(&disk.path, spans[0].0, spans[0].1);
    assert_eq!(eph["LABEL"], "ephemeral0");
    let marker = noise(21, 4096);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .unwrap()
        .write_all_at(&marker, spans[0].0 + 8 * MIB)
        .unwrap();
    let swap = blkid_at(&disk.path, spans[1].0, spans[1].1);
    disk.partition_nodes();
    let again = deploy(
        dir.path(),
        &disk,
        "root.img",
        "raw",
        json!({"root_mb": 64, "swap_mb": 8, "ephemeral_mb": 24, "deploy_boot_mode": "bios",
               "preserve_ephemeral": true}),
        &gzip_b64(&std::fs::read(&iso).unwrap()),
    )
    .await;
    assert_eq!(again.uuids["root uuid"], root_fs["UUID"]);
    let eph2 = blkid_at(&disk.path, spans[0].0, spans[0].1);
    assert_eq!(
        eph2["UUID"], eph["UUID"],
        "the ephemeral filesystem was remade"
    );
    let mut back = vec![0u8; 4096];
    std::fs::File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut back, spans[0].0 + 8 * MIB)
        .unwrap();
    assert_eq!(back, marker);
    assert_ne!(
        blkid_at(&disk.path, spans[1].0, spans[1].1)["UUID"],
        swap["UUID"]
    );
}
