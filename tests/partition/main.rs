//! Partition images and config drives through the real agent on real loop
//! devices: layouts checked by `sfdisk`/`sgdisk`, filesystems by `blkid -p`,
//! bytes compared with the images made by `mkfs.ext4`, `qemu-img` and
//! `genisoimage`.

mod bad_input;
mod inject_files;
mod partition_images;
mod whole_disk;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use ferrite_tests::images::{noise, run, LoopDevice};
use ferrite_tests::Pair;
use serde_json::{json, Value};

pub const MIB: u64 = 1 << 20;
/// Root device selection wants at least 4 GiB; the files are sparse.
pub const DISK: u64 = 5 << 30;

/// An ext4 filesystem image with a file of noise in it.
pub fn ext4_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let content = dir.join(format!("{name}.content"));
    std::fs::create_dir_all(content.join("etc")).unwrap();
    std::fs::write(content.join("etc/noise"), noise(7, 3 << 20)).unwrap();
    std::fs::write(content.join("etc/hostname"), b"ferrite\n").unwrap();
    let path = dir.join(name);
    File::create(&path).unwrap().set_len(size).unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rootfs", "-d"])
        .arg(&content)
        .arg(&path));
    path
}

/// A config drive as Nova makes one: ISO9660 labelled `config-2`.
pub fn config_iso(dir: &Path, name: &str) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    let latest = tree.join("openstack/latest");
    std::fs::create_dir_all(&latest).unwrap();
    std::fs::write(
        latest.join("meta_data.json"),
        br#"{"uuid": "ferrite-test", "hostname": "node-0"}"#,
    )
    .unwrap();
    std::fs::write(latest.join("user_data"), noise(11, 300_000)).unwrap();
    let iso = dir.join(name);
    run(Command::new("genisoimage")
        .args(["-quiet", "-o"])
        .arg(&iso)
        .args(["-V", "config-2", "-r", "-J", "-l"])
        .arg(&tree));
    iso
}

/// gzip then base64, as Ironic sends a config drive.
pub fn gzip_b64(data: &[u8]) -> String {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    w.write_all(data).unwrap();
    base64::engine::general_purpose::STANDARD.encode(w.finish().unwrap())
}

pub fn sha256(path: &Path) -> String {
    ferrite_tests::images::sha256_file(path)
}

/// `blkid -p` on `len` bytes at `offset` of `dev`: TYPE, UUID, LABEL, ….
pub fn blkid_at(dev: &Path, offset: u64, len: u64) -> HashMap<String, String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(offset.to_string())
        .args(["-S", &len.to_string()])
        .arg(dev)
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `len` bytes of `dev` at `offset` equal the whole of `file`.
pub fn region_equals(dev: &Path, offset: u64, file: &Path) {
    let want = std::fs::read(file).unwrap();
    let mut got = vec![0u8; want.len()];
    File::open(dev)
        .unwrap()
        .read_exact_at(&mut got, offset)
        .unwrap();
    if got != want {
        let i = (0..want.len()).find(|i| got[*i] != want[*i]).unwrap_or(0);
        panic!(
            "{} at {offset} differs from {} at byte {i}",
            dev.display(),
            file.display()
        );
    }
}

/// `sfdisk --json`: the label and its partitions.
pub fn sfdisk_json(dev: &Path) -> Value {
    let out = run(Command::new("sfdisk").arg("--json").arg(dev));
    serde_json::from_str::<Value>(&out).unwrap()["partitiontable"].clone()
}

/// `sgdisk -v` must find nothing wrong.
pub fn sgdisk_clean(dev: &Path) {
    let out = Command::new("sgdisk").arg("-v").arg(dev).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No problems found"),
        "sgdisk -v {}: {text}{}",
        dev.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A conductor + agent allowed to touch `disk` only.
pub async fn pair_for(disk: &LoopDevice) -> Pair {
    let disks = format!("ferrite-disks={}", disk.path.display());
    Pair::start(
        &[],
        "52:54:00:ff:00:21",
        &[&disks, "ipa-image-download-connection-retry-interval=0.2"],
    )
    .await
}

/// `image_info` for a served file.
pub fn image_info(url: String, id: &str, sum: &str, format: &str) -> Value {
    json!({"id": id, "urls": [url], "disk_format": format, "container_format": "bare",
           "os_hash_algo": "sha256", "os_hash_value": sum})
}

/// The `N`th partition's start and size in bytes from sfdisk's JSON.
pub fn part_span(table: &Value, n: usize) -> (u64, u64) {
    let p = &table["partitions"][n];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    (
        p["start"].as_u64().unwrap() * sector,
        p["size"].as_u64().unwrap() * sector,
    )
}
