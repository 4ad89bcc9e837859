//! A disk that comes late: the machine boots the ramdisk with an empty
//! virtio-scsi controller and no disk. The agent looks for a root disk
//! (`ipa-disk-wait-attempts`, `ipa-disk-wait-delay`) before it does
//! anything else, so nothing reaches the conductor while it waits. Seconds
//! later the test attaches a SCSI disk through QEMU's monitor (QMP
//! `blockdev-add` + `device_add`: a virtio-scsi hotplug event, no ACPI PCI
//! hotplug involved); the agent finds it, pauses for
//! `ipa-hardware-initialization-delay`, looks itself up, and the
//! conductor's whole-disk deploy writes the image onto that disk. The
//! bytes are compared from the host afterwards.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ferrite_tests::{wait_exit, wait_for};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::e2e::{conductor_serving, enroll_node, verb, wait_states};
use crate::qemu::{ramdisk, vm_slot, Arch, DirectBoot, Vm};

const MAC: &str = "52:54:00:5d:15:01";
/// The image: 8 MiB, a readable first sector, then a deterministic pattern.
const IMAGE_BYTES: usize = 8 << 20;

fn image() -> Vec<u8> {
    let mut out = Vec::with_capacity(IMAGE_BYTES);
    out.extend_from_slice(b"FERRITE-SLOW-DISK-IMAGE\n");
    out.resize(512, 0);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < IMAGE_BYTES {
        // xorshift64: never mistaken for an image container's magic here.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(IMAGE_BYTES);
    out
}

/// One QMP session: the greeting, capabilities, then each command; every
/// command must return (not error).
fn qmp(socket: &Path, commands: &[Value]) {
    let stream = UnixStream::connect(socket).expect("connecting to QMP");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut read_reply = || -> Value {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("reading QMP");
            assert!(!line.is_empty(), "QMP closed the connection");
            let v: Value = serde_json::from_str(&line).expect("QMP JSON");
            // Events (hotplug, ...) come in between; skip them.
            if v.get("event").is_none() {
                return v;
            }
        }
    };
    let greeting = read_reply();
    assert!(greeting.get("QMP").is_some(), "{greeting}");
    let mut all = vec![json!({"execute": "qmp_capabilities"})];
    all.extend_from_slice(commands);
    for cmd in &all {
        writeln!(writer, "{cmd}").expect("writing QMP");
        let reply = read_reply();
        assert!(reply.get("return").is_some(), "{cmd} -> {reply}");
    }
}

/// When the agent logged its first line that carries `message` (the
/// guest's clock).
fn logged_at(serial: &str, message: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let line = serial
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no {message:?}:\n{serial}"));
    line.split_whitespace()
        .next()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("no time on {line:?}"))
}

/// The `attempt=N` of the agent's log lines that carry `message`.
fn attempts_logged(serial: &str, message: &str) -> Vec<u32> {
    serial
        .lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("attempt="))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_attached_after_boot_is_waited_for_and_receives_the_image() {
    let _vm_slot = vm_slot().await;
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let bytes = image();
    std::fs::write(images.join("late.raw"), &bytes).unwrap();
    let checksum = format!("{:x}", Sha256::digest(&bytes));

    let c = conductor_serving(&images, &[]).await;
    let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    let uuid = enroll_node(
        &c,
        MAC,
        json!({}),
        json!({"image_source": "http://10.0.2.100/images/late.raw",
               "image_checksum": checksum, "image_disk_format": "raw"}),
    )
    .await;
    verb(&c, &uuid, "active").await;
    wait_states(&c, &uuid, &["wait call-back"], Duration::from_secs(30)).await;

    // The disk to come: 5 GiB (sparse), enough for the no-hints rule.
    let late = dir.path().join("late-disk.raw");
    std::fs::File::create(&late)
        .and_then(|f| f.set_len(5 << 30))
        .unwrap();
    let socket = dir.path().join("qmp.sock");
    let mut vm = Vm::boot_direct(
        dir.path(),
        port,
        DirectBoot {
            arch: Arch::X86_64,
            ramdisk: ramdisk(),
            memory_mib: 512,
            nic: "virtio-net-pci",
            mac: MAC,
            bootif: true,
            params: "ipa-disk-wait-attempts=30 ipa-disk-wait-delay=2 \
                     ipa-hardware-initialization-delay=3",
            devices: vec![
                "-device".into(),
                "virtio-scsi-pci,id=scsi0".into(),
                "-qmp".into(),
                format!("unix:{},server=on,wait=off", socket.display()),
            ],
            keep_as: "slow-disk-serial.log",
            open_net: false,
        },
    );

    // The agent is waiting: its second look found no disk either.
    const WAITING: &str = "Still waiting for the root device to appear";
    wait_for(
        "the agent's second look for a disk",
        Duration::from_secs(180),
        || {
            let serial = vm.proc.log_text();
            async move { attempts_logged(&serial, WAITING).contains(&2).then_some(()) }
        },
    )
    .await;
    // While it waits it has not looked itself up: nothing heartbeats.
    let node = c.node(&uuid).await;
    assert!(
        node["driver_internal_info"]["agent_last_heartbeat"].is_null(),
        "the agent went on before it had a disk: {node}"
    );
    let attached_at = vm.started.elapsed();
    let late_path = late.display().to_string();
    let qmp_socket = socket.clone();
    tokio::task::spawn_blocking(move || {
        qmp(
            &qmp_socket,
            &[
                json!({"execute": "blockdev-add", "arguments": {
                    "node-name": "late0", "driver": "raw",
                    "file": {"driver": "file", "filename": late_path}}}),
                json!({"execute": "device_add", "arguments": {
                    "driver": "scsi-hd", "bus": "scsi0.0", "drive": "late0", "id": "late"}}),
            ],
        )
    })
    .await
    .unwrap();
    eprintln!(
        "disk attached {:.1} s after QEMU started",
        attached_at.as_secs_f64()
    );

    let done = wait_states(
        &c,
        &uuid,
        &["active", "deploy failed"],
        Duration::from_secs(300),
    )
    .await;
    let deployed_at = vm.started.elapsed();
    assert_eq!(
        done["provision_state"], "active",
        "last_error: {}",
        done["last_error"]
    );
    assert_eq!(done["driver_internal_info"]["is_whole_disk_image"], true);
    // The agent powers the machine off once the conductor is done.
    let powered_off = Instant::now();
    wait_exit(&mut vm.proc, Duration::from_secs(90))
        .await
        .expect("the VM did not power off after the deploy");
    eprintln!(
        "QEMU start -> active {:.1} s; powered off {:.1} s later",
        deployed_at.as_secs_f64(),
        powered_off.elapsed().as_secs_f64()
    );

    // The log: looks 1, 2, ... without a disk, then the disk at a later
    // look, the initialization delay, and only then the lookup.
    let serial = vm.proc.log_text();
    let misses = attempts_logged(&serial, WAITING);
    let found = attempts_logged(&serial, "the root device appeared");
    assert_eq!(found.len(), 1, "{serial}");
    assert!(found[0] >= 3, "found at look {}:\n{serial}", found[0]);
    assert_eq!(
        misses,
        (1..found[0]).collect::<Vec<_>>(),
        "one miss per look before the disk came:\n{serial}"
    );
    assert!(
        serial.contains("attempts=30"),
        "ipa-disk-wait-attempts not honoured:\n{serial}"
    );
    assert!(
        !serial.contains("The root device was not detected"),
        "{serial}"
    );
    let at = |needle: &str| {
        serial
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?}:\n{serial}"))
    };
    let appeared = at("the root device appeared");
    assert!(serial[appeared..]
        .lines()
        .next()
        .is_some_and(|l| l.contains("device=/dev/sda")));
    let paused = at("Waiting 3 seconds before proceeding");
    let looked_up = at("lookup succeeded");
    assert!(
        appeared < paused && paused < looked_up,
        "disk, pause, lookup: in that order"
    );
    // The delays were kept: 2 s between looks, 3 s of initialization pause.
    let look = |n: u32| logged_at(&serial, &format!("attempt={n} attempts=30"));
    let between_looks = (look(2) - look(1)).to_std().unwrap_or_default();
    assert!(
        between_looks >= Duration::from_secs(2),
        "{between_looks:?} between looks"
    );
    let pause = (logged_at(&serial, "network interfaces found")
        - logged_at(&serial, "Waiting 3 seconds before proceeding"))
    .to_std()
    .unwrap_or_default();
    assert!(pause >= Duration::from_secs(3), "{pause:?} paused");
    eprintln!("between looks {between_looks:?}; initialization pause {pause:?}");

    // The image is on the disk that came late, byte for byte.
    let mut head = vec![0u8; IMAGE_BYTES];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&late).unwrap(), &mut head, 0)
        .unwrap();
    assert!(head == bytes, "the late disk does not hold the image");
}
