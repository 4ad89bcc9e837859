//! Bad input fails the command with a clear error, and leaves the disk as
//! IPA would: untouched when the config drive is refused before the write,
//! the image intact when the config drive cannot be placed after it.

use std::os::unix::fs::FileExt;
use std::path::Path;

use base64::Engine;
use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{noise, run, LoopDevice};
use serde_json::json;

use crate::*;

fn head(dev: &Path, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    std::fs::File::open(dev)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_inputs() {
    let dir = tempfile::tempdir().unwrap();
    // A whole-disk image with four primary partitions: no room for a config drive.
    let four = dir.path().join("four.img");
    let f = std::fs::File::create(&four).unwrap();
    f.set_len(32 * MIB).unwrap();
    f.write_all_at(&noise(9, MIB as usize), 20 * MIB).unwrap();
    drop(f);
    let mut child = std::process::Command::new("sfdisk")
        .arg("-q")
        .arg(&four)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"label: dos\n,4M,83\n,4M,83\n,4M,83\n,8M,83\n",
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let root = ext4_image(dir.path(), "root.img", 48 * MIB);
    let iso = config_iso(dir.path(), "cd.iso");
    let disk = LoopDevice::new(dir.path(), "bad.loop", DISK, true);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let pair = pair_for(&disk).await;
    let api = pair.api();
    let four_info = image_info(server.url_of("four.img"), "four.img", &sha256(&four), "raw");
    let before = head(&disk.path, 4 << 20);

    // Over 64 MiB once decompressed (a few KiB on the wire).
    let big = gzip_b64(&vec![0u8; 65 << 20]);
    let r = api
        .run(
            "standby.prepare_image",
            json!({"image_info": four_info, "configdrive": big}),
        )
        .await;
    assert_eq!(r["command_status"], "FAILED", "{r}");
    let details = r["command_error"]["details"].as_str().unwrap();
    assert!(
        details
            .contains("exceeds maximum limit of 64MiB. Size of the given config drive is 65 MiB"),
        "{details}"
    );
    assert_eq!(head(&disk.path, 4 << 20), before, "the disk was touched");

    // Not base64, not a URL.
    let r = api
        .run(
            "standby.prepare_image",
            json!({"image_info": four_info, "configdrive": "this is *not* base64 %%%"}),
        )
        .await;
    assert_eq!(r["command_status"], "FAILED", "{r}");
    let details = r["command_error"]["details"].as_str().unwrap();
    assert!(details.contains("not base64 encoded"), "{details}");
    assert_eq!(head(&disk.path, 4 << 20), before, "the disk was touched");

    // Valid base64 that is not gzip either: IPA takes it as the ISO itself.
    // (Covered in the unit tests; here the MBR with four primaries refuses.)
    let plain = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&iso).unwrap());
    let r = api
        .run(
            "standby.prepare_image",
            json!({"image_info": four_info, "configdrive": plain}),
        )
        .await;
    assert_eq!(r["command_status"], "FAILED", "{r}");
    let details = r["command_error"]["details"].as_str().unwrap();
    assert!(
        details.contains("uses MBR partitioning and already has 4 primary partitions"),
        "{details}"
    );
    // The image stays as written.
    region_equals(&disk.path, 0, &four);

    // A whole-disk image without any partition table (a bare ext4): the
    // config drive is refused and the filesystem's first sector is kept.
    let bare_info = image_info(server.url_of("root.img"), "root.img", &sha256(&root), "raw");
    let cd = gzip_b64(&std::fs::read(&iso).unwrap());
    let r = api
        .run(
            "standby.prepare_image",
            json!({"image_info": bare_info, "configdrive": cd}),
        )
        .await;
    assert_eq!(r["command_status"], "FAILED", "{r}");
    let details = r["command_error"]["details"].as_str().unwrap();
    assert!(details.contains("has no partition table"), "{details}");
    region_equals(&disk.path, 0, &root);

    // A partition image bigger than root_mb.
    let mut info = image_info(server.url_of("root.img"), "root.img", &sha256(&root), "raw");
    info["image_type"] = json!("partition");
    info["root_mb"] = json!(16);
    let r = api
        .run("standby.prepare_image", json!({"image_info": info}))
        .await;
    assert_eq!(r["command_status"], "FAILED", "{r}");
    assert_eq!(r["command_error"]["type"], "ImageWriteError", "{r}");
    let details = r["command_error"]["details"].as_str().unwrap();
    assert!(
        details.contains(&format!("{}p1", disk.path.display()))
            && details.contains(&format!(
                "needs {} bytes but {}p1 holds only {}",
                48 * MIB,
                disk.path.display(),
                16 * MIB
            )),
        "{details}"
    );
    // The layout was made (as IPA would have) but nothing of the image landed.
    let table = sfdisk_json(&disk.path);
    let (off, _) = part_span(&table, 0);
    assert_eq!(off, MIB);
    run(std::process::Command::new("sfdisk")
        .arg("--verify")
        .arg(&disk.path));
    // A partition layout that cannot fit the disk: refused before anything is written.
    let before = head(&disk.path, 4 << 20);
    let mut huge = info.clone();
    huge["root_mb"] = json!(10 << 20);
    let r = api
        .run("standby.prepare_image", json!({"image_info": huge}))
        .await;
    assert_eq!(r["command_status"], "FAILED", "{r}");
    let details = r["command_error"]["details"].as_str().unwrap();
    assert!(details.contains("usable"), "{details}");
    assert_eq!(head(&disk.path, 4 << 20), before, "the disk was touched");

    // Two partitions called config-2: IPA refuses to guess.
    let two = dir.path().join("two.img");
    std::fs::File::create(&two)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    run(std::process::Command::new("sgdisk")
        .args([
            "-n",
            "1:2048:+4M",
            "-c",
            "1:config-2",
            "-n",
            "2:0:+4M",
            "-c",
            "2:config-2",
        ])
        .arg(&two));
    let info = image_info(server.url_of("two.img"), "two.img", &sha256(&two), "raw");
    let r = api
        .run(
            "standby.prepare_image",
            json!({"image_info": info, "configdrive": gzip_b64(&std::fs::read(&iso).unwrap())}),
        )
        .await;
    assert_eq!(r["command_status"], "FAILED", "{r}");
    let details = r["command_error"]["details"].as_str().unwrap();
    assert!(
        details.contains("More than one partition with label \"config-2\""),
        "{details}"
    );
}
