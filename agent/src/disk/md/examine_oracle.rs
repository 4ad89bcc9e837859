//! `mdadm --examine` as the oracle for what [`super::member::write`] puts
//! on disk: mdadm must parse each superblock, find its checksum correct and
//! report the fields we chose. scripts/setup installs mdadm for this test
//! only; the ramdisk does not ship it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

use super::geometry::{array_sectors, superblocks, ArraySpec, Level, Metadata};
use super::member;

fn member_file(dir: &Path, name: &str, bytes: u64) -> (PathBuf, File) {
    let path = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(bytes).unwrap();
    (path, f)
}

/// `mdadm --examine` of `path` as `key -> value` (first occurrence wins).
fn examine(path: &Path) -> HashMap<String, String> {
    let out = Command::new("mdadm")
        .arg("--examine")
        .arg(path)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("mdadm: {e} (run scripts/setup)"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mdadm --examine {}: {text}{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fields = HashMap::new();
    fields.insert("(text)".to_string(), text.to_string());
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(" : ") {
            fields
                .entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    fields
}

/// mdadm prints a UUID as four colon-separated 32-bit hex groups.
fn mdadm_uuid(u: &Uuid) -> String {
    let h = u.simple().to_string();
    format!("{}:{}:{}:{}", &h[0..8], &h[8..16], &h[16..24], &h[24..32])
}

fn write_array(
    level: Level,
    name: &str,
    members: usize,
    bytes: u64,
) -> Vec<HashMap<String, String>> {
    write_array_as(Metadata::V1_2, level, name, members, bytes)
}

fn write_array_as(
    metadata: Metadata,
    level: Level,
    name: &str,
    members: usize,
    bytes: u64,
) -> Vec<HashMap<String, String>> {
    let dir = tempfile::tempdir().unwrap();
    let set_uuid = Uuid::new_v4();
    let spec = ArraySpec {
        metadata,
        level,
        set_uuid,
        name: name.into(),
        member_sectors: vec![bytes / 512; members],
        device_uuids: (0..members).map(|_| Uuid::new_v4()).collect(),
        now: 1_764_000_000,
    };
    let sbs = superblocks(&spec).unwrap();
    let mut fields = Vec::new();
    for (i, sb) in sbs.iter().enumerate() {
        let (path, f) = member_file(dir.path(), &format!("m{i}"), bytes);
        member::write(&f, sb).unwrap();
        let e = examine(&path);
        eprintln!("{}", e["(text)"]);
        assert_eq!(e["Magic"], "a92b4efc");
        let version = match metadata {
            Metadata::V1_0 => "1.0",
            Metadata::V1_2 => "1.2",
        };
        assert_eq!(e["Version"], version);
        assert_eq!(e["Feature Map"], "0x0");
        assert_eq!(e["Array UUID"], mdadm_uuid(&set_uuid));
        assert_eq!(e["Device UUID"], mdadm_uuid(&spec.device_uuids[i]));
        assert!(e["Name"].starts_with(name), "Name {:?}", e["Name"]);
        assert_eq!(e["Raid Devices"], members.to_string());
        match metadata {
            Metadata::V1_2 => {
                assert_eq!(e["Data Offset"], format!("{} sectors", sb.data_offset))
            }
            // mdadm leaves out a zero data offset; "before=0" says it.
            Metadata::V1_0 => assert!(e["Unused Space"].starts_with("before=0 sectors")),
        }
        assert_eq!(e["Super Offset"], format!("{} sectors", sb.super_offset));
        assert_eq!(e["Device Role"], format!("Active device {i}"));
        assert!(
            e["Checksum"].ends_with(" - correct"),
            "Checksum {:?}",
            e["Checksum"]
        );
        // mdadm prints "Used Dev Size" only when it differs from this.
        assert!(
            e["Avail Dev Size"].starts_with(&format!("{} sectors", sb.data_size)),
            "Avail Dev Size {:?} vs {}",
            e["Avail Dev Size"],
            sb.data_size
        );
        assert!(!e.contains_key("Used Dev Size"), "size == data_size");
        // mdadm prints the array size only for redundant levels.
        if level != Level::Raid0 {
            let array = array_sectors(level, sb.size, members);
            assert!(
                e["Array Size"].starts_with(&format!("{} KiB", array / 2)),
                "Array Size {:?} vs {} KiB",
                e["Array Size"],
                array / 2
            );
        }
        assert_eq!(
            e["Array State"].split(' ').next(),
            Some("A".repeat(members).as_str())
        );
        fields.push(e);
    }
    fields
}

#[test]
fn mdadm_examines_a_raid1_we_wrote() {
    for e in write_array(Level::Raid1, "ramdisk:root", 2, 64 << 20) {
        assert_eq!(e["Raid Level"], "raid1");
        assert!(!e.contains_key("Chunk Size"), "no chunk on a mirror");
        assert_eq!(e["Name"], "ramdisk:root");
        // Not in sync yet: the kernel resyncs a new mirror once it runs.
        assert_eq!(e["State"], "active");
    }
}

#[test]
fn mdadm_examines_a_raid10_we_wrote() {
    for e in write_array(Level::Raid10, "data", 4, 96 << 20) {
        assert_eq!(e["Raid Level"], "raid10");
        assert_eq!(e["Layout"], "near=2");
        assert_eq!(e["Chunk Size"], "512K");
        assert_eq!(e["State"], "active");
    }
}

#[test]
fn mdadm_examines_a_raid0_we_wrote() {
    for e in write_array(Level::Raid0, "scratch", 2, 64 << 20) {
        assert_eq!(e["Raid Level"], "raid0");
        assert_eq!(e["Chunk Size"], "512K");
        assert_eq!(e["State"], "clean");
        assert!(!e.contains_key("Layout"), "one zone needs no RAID-0 layout");
    }
}

#[test]
fn mdadm_examines_an_esp_mirror_with_metadata_1_0() {
    // IPA's ESP RAID: `--metadata=1.0 --level 1 --name esp`.
    let bytes = (550 << 20) + 7 * 512;
    for e in write_array_as(Metadata::V1_0, Level::Raid1, "esp", 2, bytes) {
        assert_eq!(e["Raid Level"], "raid1");
        assert!(!e.contains_key("Data Offset"));
        assert_eq!(
            e["Super Offset"],
            format!("{} sectors", (bytes / 512 - 16) & !7)
        );
    }
}

#[test]
fn mdadm_sees_no_superblock_after_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (path, f) = member_file(dir.path(), "m", 64 << 20);
    let sb = superblocks(&ArraySpec {
        metadata: Metadata::V1_2,
        level: Level::Raid1,
        set_uuid: Uuid::new_v4(),
        name: "root".into(),
        member_sectors: vec![(64 << 20) / 512; 2],
        device_uuids: vec![Uuid::new_v4(), Uuid::new_v4()],
        now: 1,
    })
    .unwrap()
    .remove(0);
    member::write(&f, &sb).unwrap();
    assert_eq!(member::zero(&f).unwrap(), 1);
    let out = Command::new("mdadm")
        .arg("--examine")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No md superblock detected"));
}
