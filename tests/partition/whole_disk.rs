//! Config drives on whole-disk images: a new `config-2` partition in the
//! disk's last 64 MiB (GPT, after moving the backup header to the end;
//! MBR, a primary partition), or an existing `config-2` partition reused.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{noise, run, to_qcow2, LoopDevice};
use serde_json::{json, Value};

use crate::*;

/// A 32 MiB disk image whose table sgdisk `gpt_args` or an `sfdisk` script
/// (`{dev}` stands for the image's path) makes.
fn disk_image(dir: &Path, name: &str, gpt_args: Option<&[&str]>, sfdisk: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(32 * MIB).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&noise(5, 2 << 20), 4 * MIB).unwrap();
    drop(f);
    if let Some(args) = gpt_args {
        run(Command::new("sgdisk").args(args).arg(&path));
    }
    if let Some(script) = sfdisk {
        let mut child = Command::new("sfdisk")
            .arg("-q")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.replace("{dev}", &path.to_string_lossy()).as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    path
}

async fn deploy(dir: &Path, disk: &LoopDevice, image: &str, configdrive: &str) -> Value {
    let server = ImageServer::start(dir.to_path_buf()).await;
    let pair = pair_for(disk).await;
    let fmt = if image.ends_with(".qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    let info = image_info(server.url_of(image), image, &sha256(&dir.join(image)), fmt);
    pair.api()
        .run(
            "standby.prepare_image",
            json!({"image_info": info, "configdrive": configdrive}),
        )
        .await
}

fn check_iso_at(disk: &Path, table: &Value, n: usize, iso: &Path) {
    let (off, len) = part_span(table, n);
    let fs = blkid_at(disk, off, len);
    assert_eq!(
        (fs["TYPE"].as_str(), fs["LABEL"].as_str()),
        ("iso9660", "config-2"),
        "{fs:?}"
    );
    region_equals(disk, off, iso);
}

#[tokio::test(flavor = "multi_thread")]
async fn gpt_image_smaller_than_the_disk_gets_a_configdrive_partition_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let raw = disk_image(
        dir.path(),
        "gpt.img",
        Some(&["-n", "1:2048:+20M", "-t", "1:8300", "-c", "1:root"]),
        None,
    );
    to_qcow2(&raw, &dir.path().join("gpt.qcow2"), &[]);
    let iso = config_iso(dir.path(), "cd.iso");
    let disk = LoopDevice::new(dir.path(), "wd-gpt.loop", DISK, true);
    let done = deploy(
        dir.path(),
        &disk,
        "gpt.qcow2",
        &gzip_b64(&std::fs::read(&iso).unwrap()),
    )
    .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    sgdisk_clean(&disk.path);
    let table = sfdisk_json(&disk.path);
    assert_eq!(table["label"], "gpt");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["name"], "root");
    assert_eq!(parts[1]["name"], "config-2");
    // The last 64 MiB before the backup GPT (33 sectors).
    let (off, len) = part_span(&table, 1);
    assert_eq!(off + len, DISK - 33 * 512, "{table}");
    assert!(len >= 63 * MIB && off % MIB == 0, "{table}");
    check_iso_at(&disk.path, &table, 1, &iso);
    // The image's own partition is untouched.
    let (r0, _) = part_span(&table, 0);
    assert_eq!(r0, MIB);
    region_equals_prefix(&disk.path, &raw, 8 * MIB);
}

/// The first `len` bytes of the disk and of the image agree, past the MBR/GPT header.
fn region_equals_prefix(disk: &Path, image: &Path, len: u64) {
    let a = std::fs::read(image).unwrap();
    let mut b = vec![0u8; len as usize];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    // The partition entries (LBA 2..34) and header (LBA 1) changed; data did not.
    assert_eq!(&a[MIB as usize..len as usize], &b[MIB as usize..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mbr_image_gets_a_primary_configdrive_partition_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let raw = disk_image(
        dir.path(),
        "mbr.img",
        None,
        Some("label: dos\nstart=2048, size=40960, type=83, bootable\n"),
    );
    let iso = config_iso(dir.path(), "cd.iso");
    let disk = LoopDevice::new(dir.path(), "wd-mbr.loop", DISK, true);
    let done = deploy(
        dir.path(),
        &disk,
        "mbr.img",
        &gzip_b64(&std::fs::read(&iso).unwrap()),
    )
    .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    run(Command::new("sfdisk").arg("--verify").arg(&disk.path));
    let table = sfdisk_json(&disk.path);
    assert_eq!(table["label"], "dos");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    let (off, len) = part_span(&table, 1);
    assert_eq!((off, len), (DISK - 64 * MIB, 64 * MIB), "{table}");
    check_iso_at(&disk.path, &table, 1, &iso);
    region_equals_prefix(&disk.path, &raw, 8 * MIB);
    // Whole disk: root uuid is the MBR signature, untouched by the new entry.
    let sig = {
        let img = std::fs::read(&raw).unwrap();
        format!(
            "0x{:08x}",
            u32::from_le_bytes([img[440], img[441], img[442], img[443]])
        )
    };
    assert!(done["command_result"]["result"]
        .as_str()
        .unwrap()
        .ends_with(&format!("root_uuid={sig}")));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_config_2_partition_is_reused_and_a_url_works() {
    let dir = tempfile::tempdir().unwrap();
    let raw = disk_image(
        dir.path(),
        "cd2.img",
        Some(&[
            "-n",
            "1:2048:+8M",
            "-c",
            "1:root",
            "-n",
            "2:0:+4M",
            "-c",
            "2:config-2",
        ]),
        None,
    );
    let iso = config_iso(dir.path(), "cd.iso");
    // Served as plain binary: IPA accepts that from a URL.
    let disk = LoopDevice::new(dir.path(), "wd-cd2.loop", DISK, true);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    let pair = pair_for(&disk).await;
    let info = image_info(server.url_of("cd2.img"), "cd2.img", &sha256(&raw), "raw");
    let done = pair
        .api()
        .run(
            "standby.prepare_image",
            json!({"image_info": info, "configdrive": server.url_of("cd.iso")}),
        )
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    let table = sfdisk_json(&disk.path);
    assert_eq!(table["partitions"].as_array().unwrap().len(), 2, "{table}");
    check_iso_at(&disk.path, &table, 1, &iso);
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_numbers_of_the_image_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    // GPT with partitions 1 and 3 (2 free): the config drive takes 2, as sgdisk would.
    let gpt = disk_image(
        dir.path(),
        "gap.img",
        Some(&[
            "-n",
            "1:2048:+4M",
            "-c",
            "1:one",
            "-n",
            "3:0:+4M",
            "-c",
            "3:three",
        ]),
        None,
    );
    // MBR with a primary, an extended holding two logicals: two primaries count.
    let mbr = disk_image(
        dir.path(),
        "ext.img",
        None,
        Some(concat!(
            "label: dos\n",
            "{dev}1 : start=2048, size=16384, type=83\n",
            "{dev}2 : start=18432, size=24576, type=5\n",
            "{dev}5 : start=20480, size=8192, type=83\n",
            "{dev}6 : start=30720, size=8192, type=83\n",
        )),
    );
    let iso = config_iso(dir.path(), "cd.iso");
    let cd = gzip_b64(&std::fs::read(&iso).unwrap());

    let disk = LoopDevice::new(dir.path(), "gap.loop", DISK, false);
    let done = deploy(dir.path(), &disk, "gap.img", &cd).await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    sgdisk_clean(&disk.path);
    let out = run(Command::new("sgdisk").arg("-p").arg(&disk.path));
    let names: Vec<(String, String)> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Number"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.last()?.to_string()))
        })
        .collect();
    let want: Vec<(String, String)> = [("1", "one"), ("2", "config-2"), ("3", "three")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(names, want, "{out}");
    region_equals_prefix(&disk.path, &gpt, 8 * MIB);
    drop(disk);

    let disk = LoopDevice::new(dir.path(), "ext.loop", DISK, false);
    let done = deploy(dir.path(), &disk, "ext.img", &cd).await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    run(Command::new("sfdisk").arg("--verify").arg(&disk.path));
    let table = sfdisk_json(&disk.path);
    let nodes: Vec<&str> = table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node"].as_str().unwrap())
        .collect();
    let d = disk.path.display();
    assert_eq!(
        nodes,
        [
            format!("{d}p1"),
            format!("{d}p2"),
            format!("{d}p3"),
            format!("{d}p5"),
            format!("{d}p6")
        ],
        "{table}"
    );
    // p3 is the new primary at the end.
    let (off, len) = part_span(&table, 2);
    assert_eq!((off, len), (DISK - 64 * MIB, 64 * MIB), "{table}");
    check_iso_at(&disk.path, &table, 2, &iso);
    region_equals_prefix(&disk.path, &mbr, 8 * MIB);
}
