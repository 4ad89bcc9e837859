//! `erase_devices_metadata` on real loop devices prepared with every kind
//! of on-disk metadata: afterwards neither `wipefs` nor `blkid -p` may find
//! anything, on the disks or on their (former) partitions, except on the
//! disks IPA's guards keep: software RAID members, virtual media, the
//! node's `skip_block_devices`, and shared-disk filesystems, which fail
//! the step before anything is erased.

use std::path::Path;
use std::process::Command;

use ferrite_tests::images::{run, LoopDevice};
use ferrite_tests::Pair;
use serde_json::json;

fn sh(cmd: &str) {
    run(Command::new("sh").arg("-c").arg(cmd));
}

/// What the probers still see on a device (empty: clean).
fn leftovers(dev: &Path) -> String {
    let wipefs = Command::new("wipefs")
        .arg("--noheadings")
        .arg("-n")
        .arg(dev)
        .output()
        .expect("wipefs");
    let blkid = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(dev)
        .output()
        .expect("blkid");
    format!(
        "{}{}",
        String::from_utf8_lossy(&wipefs.stdout).trim(),
        String::from_utf8_lossy(&blkid.stdout).trim()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn no_signature_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mib = 1u64 << 20;
    let mk = |name: &str| LoopDevice::new(dir.path(), name, 320 * mib, false);
    let (ext4, xfs, vfat, swap, lvm, luks) = (
        mk("ext4"),
        mk("xfs"),
        mk("vfat"),
        mk("swap"),
        mk("lvm"),
        mk("luks"),
    );
    let (md_a, md_b, gpt, mbr) = (mk("md-a"), mk("md-b"), mk("gpt"), mk("mbr"));
    let p = |l: &LoopDevice| l.path.display().to_string();

    sh(&format!("mkfs.ext4 -q -F {}", p(&ext4)));
    sh(&format!("mkfs.xfs -q -f {}", p(&xfs)));
    sh(&format!("mkfs.vfat {} >/dev/null", p(&vfat)));
    sh(&format!("mkswap {} >/dev/null", p(&swap)));
    sh(&format!("pvcreate -qq -ff -y {}", p(&lvm)));
    sh(&format!("printf ferrite-test | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 {} -", p(&luks)));
    // Members of a software RAID that is not assembled (this kernel has no
    // md driver, so the v1.2 superblocks are written the way mdadm would):
    // kept, as IPA keeps them, for the RAID steps to take apart.
    ferrite_tests::images::write_md_v12_superblock(&md_a.path, 1);
    ferrite_tests::images::write_md_v12_superblock(&md_b.path, 1);
    // GPT with an ext4 partition, and a DOS table with a vfat partition.
    // Partition tables (this kernel does not scan loop partitions, so the
    // tables are checked on the disks themselves).
    sh(&format!(
        "sgdisk -n 1:2048:+20M -n 2:0:+20M {} >/dev/null",
        p(&gpt)
    ));
    sh(&format!(
        "printf 'start=2048, size=40960, type=c\\n' | sfdisk -q {}",
        p(&mbr)
    ));
    let partitions: Vec<_> = gpt
        .partition_nodes()
        .into_iter()
        .chain(mbr.partition_nodes())
        .collect();
    for part in &partitions {
        sh(&format!("mkfs.vfat {} >/dev/null", part.display()));
    }

    let all = [&ext4, &xfs, &vfat, &swap, &lvm, &luks, &gpt, &mbr];
    for l in all.iter().chain([&&md_a, &&md_b]) {
        assert!(!leftovers(&l.path).is_empty(), "{} was not prepared", p(l));
    }
    let raid_before = (leftovers(&md_a.path), leftovers(&md_b.path));
    assert!(
        raid_before.0.contains("linux_raid_member"),
        "{}",
        raid_before.0
    );
    assert!(leftovers(&gpt.path).contains("gpt") && leftovers(&mbr.path).contains("dos"));
    let allow = format!(
        "ferrite-disks={}",
        all.iter()
            .chain([&&md_a, &&md_b])
            .map(|l| p(l))
            .collect::<Vec<_>>()
            .join(",")
    );
    let pair = Pair::start(&[], "52:54:00:ee:00:09", &[&allow]).await;
    let result = pair
        .api()
        .run(
            "clean.execute_clean_step",
            json!({
            "step": {"step": "erase_devices_metadata", "interface": "deploy", "priority": 99},
            "node": {}, "ports": [], "clean_version": {"generic_hardware_manager": "1.2"}}),
        )
        .await;
    assert_eq!(result["command_status"], "SUCCEEDED", "{result}");
    for l in all {
        assert_eq!(leftovers(&l.path), "", "{} still has metadata", p(l));
    }
    assert_eq!(
        (leftovers(&md_a.path), leftovers(&md_b.path)),
        raid_before,
        "RAID members must be kept"
    );
    // Where the kernel shows partitions, they were wiped too and are gone with their tables.
    for part in &partitions {
        assert_eq!(leftovers(part), "", "{} still has metadata", part.display());
    }
    assert!(
        gpt.kernel_partitions().is_empty() && mbr.kernel_partitions().is_empty(),
        "stale partitions"
    );
}

/// All bytes of a device are zero.
fn all_zero(dev: &Path) -> bool {
    use std::io::Read;
    let mut f = std::fs::File::open(dev).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return true;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return false;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn erase_devices_leaves_only_zeros_and_refuses_read_only_disks() {
    let dir = tempfile::tempdir().unwrap();
    let a = LoopDevice::new(dir.path(), "a", 96 << 20, true);
    let b = LoopDevice::new(dir.path(), "b", 96 << 20, true);
    let allow = format!("ferrite-disks={},{}", a.path.display(), b.path.display());
    let pair = Pair::start(&[], "52:54:00:ee:00:0a", &[&allow]).await;
    let api = pair.api();
    let step = |name: &str, dii: serde_json::Value| {
        json!({
        "step": {"step": name, "interface": "deploy", "priority": 10},
        "node": {"driver_internal_info": dii}, "ports": [], "clean_version": {"generic_hardware_manager": "1.2"}})
    };
    let result = api
        .run(
            "clean.execute_clean_step",
            step(
                "erase_devices",
                json!({"agent_erase_devices_iterations": 1, "agent_erase_devices_zeroize": true}),
            ),
        )
        .await;
    assert_eq!(result["command_status"], "SUCCEEDED", "{result}");
    assert!(all_zero(&a.path) && all_zero(&b.path), "disks not erased");

    // A read-only disk fails the step unless Ironic says to skip it.
    let backing = dir.path().join("ro");
    std::fs::write(&backing, vec![7u8; 8 << 20]).unwrap();
    let out = run(Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&backing));
    let ro = out.trim().to_string();
    let allow = format!("ferrite-disks={ro}");
    let pair = Pair::start(&[], "52:54:00:ee:00:0b", &[&allow]).await;
    let api = pair.api();
    let failed = api
        .run("clean.execute_clean_step", step("erase_devices", json!({})))
        .await;
    let skipped = api
        .run(
            "clean.execute_clean_step",
            step(
                "erase_devices_express",
                json!({"agent_erase_skip_read_only": true}),
            ),
        )
        .await;
    let _ = Command::new("losetup").arg("-d").arg(&ro).status();
    assert_eq!(failed["command_status"], "FAILED", "{failed}");
    assert_eq!(failed["command_error"]["type"], "BlockDeviceEraseError");
    assert!(failed["command_error"]["details"]
        .as_str()
        .unwrap()
        .contains("read-only"));
    assert_eq!(skipped["command_status"], "SUCCEEDED", "{skipped}");
    assert!(
        std::fs::read(&backing).unwrap().iter().all(|b| *b == 7),
        "read-only disk untouched"
    );
}

/// The guards on real disks: a disk named in `skip_block_devices` and a
/// virtual media disk (`ir-vfd-dev`) are kept while the others are erased;
/// a GPFS partition fails the step with IPA's `ProtectedDeviceError`
/// before any disk is touched, unless Ironic says
/// `wipe_special_filesystems: false`.
#[tokio::test(flavor = "multi_thread")]
async fn skipped_virtual_media_and_protected_disks_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mk = |name: &str| LoopDevice::new(dir.path(), name, 64 << 20, false);
    let (skipped, vmedia, plain, gpfs) = (mk("skipped"), mk("vmedia"), mk("plain"), mk("gpfs"));
    let p = |l: &LoopDevice| l.path.display().to_string();
    sh(&format!("mkfs.ext4 -q -F {}", p(&skipped)));
    sh(&format!(
        "mkfs.vfat -n ir-vfd-dev {} >/dev/null",
        p(&vmedia)
    ));
    sh(&format!("mkfs.ext4 -q -F {}", p(&plain)));
    sh(&format!(
        "sgdisk -n 1:2048:+8M -t 1:37AFFC90-EF7D-4E96-91C3-2D7AE055B174 {} >/dev/null",
        p(&gpfs)
    ));
    let before: Vec<String> = [&skipped, &vmedia, &plain, &gpfs]
        .iter()
        .map(|l| leftovers(&l.path))
        .collect();
    assert!(before.iter().all(|l| !l.is_empty()), "{before:?}");

    let allow = format!(
        "ferrite-disks={}",
        [&skipped, &vmedia, &plain, &gpfs].map(p).join(",")
    );
    let pair = Pair::start(&[], "52:54:00:ee:00:0c", &[&allow]).await;
    let api = pair.api();
    let step = |dii: serde_json::Value| {
        json!({
        "step": {"step": "erase_devices_metadata", "interface": "deploy", "priority": 99},
        "node": {"properties": {"skip_block_devices": [{"name": p(&skipped)}]},
                 "driver_internal_info": dii},
        "ports": [], "clean_version": {"generic_hardware_manager": "1.2"}})
    };

    let refused = api.run("clean.execute_clean_step", step(json!({}))).await;
    assert_eq!(refused["command_status"], "FAILED", "{refused}");
    assert_eq!(
        refused["command_error"]["type"], "ProtectedDeviceError",
        "{refused}"
    );
    let details = refused["command_error"]["details"].as_str().unwrap();
    assert!(
        details.starts_with(&format!(
            "Protected IBM GPFS Partition located on device {}. This volume or contents may be a shared block device.",
            p(&gpfs)
        )),
        "{details}"
    );
    let after: Vec<String> = [&skipped, &vmedia, &plain, &gpfs]
        .iter()
        .map(|l| leftovers(&l.path))
        .collect();
    assert_eq!(after, before, "a refused step erased something");

    let done = api
        .run(
            "clean.execute_clean_step",
            step(json!({"wipe_special_filesystems": false})),
        )
        .await;
    assert_eq!(done["command_status"], "SUCCEEDED", "{done}");
    assert_eq!(
        leftovers(&skipped.path),
        before[0],
        "skip_block_devices ignored"
    );
    assert_eq!(leftovers(&vmedia.path), before[1], "virtual media erased");
    assert_eq!(leftovers(&plain.path), "", "the plain disk was not erased");
    assert_eq!(
        leftovers(&gpfs.path),
        "",
        "the GPFS disk was not erased when allowed"
    );
}

/// md's superblock magic as it sits on disk.
const MD_MAGIC: [u8; 4] = 0xa92b_4efc_u32.to_le_bytes();

fn has_md_magic(dev: &Path) -> bool {
    let data = std::fs::read(dev).expect("read loop device");
    data.windows(4).any(|w| w == MD_MAGIC)
}

/// Software RAID steps over HTTP on loop disks (the arrays themselves need
/// the md driver, which only the QEMU test has; see tests/ramdisk/raid.rs):
/// a partitioned holder fails `create_configuration` with IPA's message
/// before anything is written; on clean disks the tables and superblocks
/// are written and, without md, starting the array fails with a clear
/// error; `delete_configuration` then leaves no superblock and no table.
#[tokio::test(flavor = "multi_thread")]
async fn software_raid_steps_on_loop_disks() {
    let dir = tempfile::tempdir().unwrap();
    let a = LoopDevice::new(dir.path(), "a", 96 << 20, false);
    let b = LoopDevice::new(dir.path(), "b", 96 << 20, false);
    let p = |l: &LoopDevice| l.path.display().to_string();
    let allow = format!("ferrite-disks={},{}", p(&a), p(&b));
    let pair = Pair::start(&[], "52:54:00:ee:00:0d", &[&allow]).await;
    let api = pair.api();
    let target = json!({"logical_disks": [{"size_gb": "MAX", "raid_level": "1",
        "controller": "software"}]});
    let step = |name: &str, node: serde_json::Value| {
        json!({"step": {"step": name, "interface": "raid", "priority": 0},
            "node": node, "ports": [], "clean_version": {"generic_hardware_manager": "1.2"}})
    };
    let node = json!({"uuid": "raid-node", "target_raid_config": target,
        "properties": {"capabilities": "boot_mode:bios"}});

    // A holder with a partition table: refused, nothing written.
    sh(&format!(
        "printf 'label: dos\\nstart=2048, size=4096, type=83\\n' | sfdisk -q {}",
        p(&a)
    ));
    let before_a = std::fs::read(&a.path).unwrap();
    let refused = api
        .run(
            "clean.execute_clean_step",
            step("create_configuration", node.clone()),
        )
        .await;
    assert_eq!(refused["command_status"], "FAILED", "{refused}");
    assert_eq!(
        refused["command_error"]["type"], "SoftwareRAIDError",
        "{refused}"
    );
    assert_eq!(
        refused["command_error"]["details"],
        format!(
            "Partitions detected on devices {} during RAID config",
            p(&a)
        ),
        "{refused}"
    );
    assert!(
        std::fs::read(&a.path).unwrap() == before_a,
        "the partitioned disk changed"
    );
    assert!(all_zero(&b.path), "the other disk was touched");

    // A config Ironic's validation would refuse fails with IPA's words.
    let bad = json!({"uuid": "raid-node", "target_raid_config": {"logical_disks": [
        {"size_gb": "MAX", "raid_level": "5", "controller": "software"}]}});
    let invalid = api
        .run(
            "clean.execute_clean_step",
            step("create_configuration", bad),
        )
        .await;
    assert_eq!(invalid["command_status"], "FAILED", "{invalid}");
    let details = invalid["command_error"]["details"]
        .as_str()
        .unwrap_or_default();
    assert!(
        details.starts_with("Could not validate Software RAID config for raid-node:"),
        "{invalid}"
    );

    // Clean disks: both get a table and a member superblock.
    sh(&format!("wipefs -qa {}", p(&a)));
    let created = api
        .run(
            "clean.execute_clean_step",
            step("create_configuration", node.clone()),
        )
        .await;
    if Path::new("/sys/module/md_mod").exists() {
        assert_eq!(created["command_status"], "SUCCEEDED", "{created}");
    } else {
        assert_eq!(created["command_status"], "FAILED", "{created}");
        let details = created["command_error"]["details"]
            .as_str()
            .unwrap_or_default();
        assert!(
            details.contains("starting md0") && details.contains("is the md driver loaded?"),
            "{created}"
        );
    }
    for l in [&a, &b] {
        assert!(has_md_magic(&l.path), "{}: no md superblock written", p(l));
    }

    // delete_configuration: nothing of it is left.
    let deleted = api
        .run(
            "clean.execute_clean_step",
            step("delete_configuration", node),
        )
        .await;
    assert_eq!(deleted["command_status"], "SUCCEEDED", "{deleted}");
    assert_eq!(
        deleted["command_result"]["clean_result"],
        serde_json::Value::Null
    );
    for l in [&a, &b] {
        assert!(!has_md_magic(&l.path), "{}: md superblock left", p(l));
        assert!(
            leftovers(&l.path).is_empty(),
            "{}: {}",
            p(l),
            leftovers(&l.path)
        );
    }
}
