//! Rescue, end to end through a booted ramdisk: a deployed node is
//! rescued with a password (`baremetal node rescue --rescue-password`, the
//! same REST call); the `rescue` profile's ramdisk boots in QEMU, the
//! conductor hands its agent the SHA-512 crypt hash, the agent closes its
//! API and PID 1 starts the ssh server. The host's OpenSSH client, through
//! a forwarded port, logs in as `rescue` with that password and runs
//! commands; a wrong password is refused. `unrescue` brings the node back
//! to `active`.
//!
//! One QEMU boot: the deploy that makes the node `active` is done by the
//! agent on this host (a loop device, as `tests/loopback/rescue.rs` does);
//! the rescue is what runs in the machine.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ferrite_tests::image_server::ImageServer;
use ferrite_tests::images::{make_raw, sha256_file, LoopDevice};
use ferrite_tests::ssh::{ssh, Login};
use ferrite_tests::{free_port, wait_for, Agent, Conductor};
use serde_json::{json, Value};

use crate::qemu::{layer_ramdisk, vm_slot, workspace, Arch, DirectBoot, Vm};

const MAC: &str = "52:54:00:5e:5c:21";
const PASSWORD: &str = "Tenant-qemu-rescue-9137";

/// The `rescue` profile (server + busybox), built once per test run.
fn rescue_ramdisk() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        layer_ramdisk(
            Arch::X86_64,
            "rescue",
            &workspace().join("build/ramdisk-rescue"),
        )
    })
}

/// A sparse 5 GiB virtio disk (the agent finds a root device at once).
fn disk(dir: &Path) -> Vec<String> {
    let disk = dir.join("disk.raw");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(5 << 30))
        .unwrap();
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=virtio", disk.display()),
    ]
}

/// A `fake-hardware` node with the agent rescue interface, deployed by an
/// agent on this host onto a loop device.
async fn active_node(c: &Conductor, dir: &Path, server: &ImageServer, sum: &str) -> String {
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "rescue-qemu",
                            "automated_clean": false, "rescue_interface": "agent"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(c.act(&uuid, json!({"target": "manage"})).await.0, 202);
    c.wait_state(&uuid, "manageable", Duration::from_secs(30))
        .await;
    assert_eq!(c.act(&uuid, json!({"target": "provide"})).await.0, 202);
    c.wait_state(&uuid, "available", Duration::from_secs(30))
        .await;
    c.create_port(&uuid, MAC).await;
    // The rescue kernel and ramdisk a PXE boot would fetch (the conductor
    // refuses a rescue without them); this test boots them directly.
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/driver_info/rescue_kernel", "value": "rescue.kernel"},
               {"op": "add", "path": "/driver_info/rescue_ramdisk", "value": "rescue.initramfs"}]),
    )
    .await;
    let disk = LoopDevice::new(dir, "target.loop", 5 << 30, true);
    let disks = format!("ferrite-disks={}", disk.path.display());
    let agent = Agent::start(&c.url, &[MAC], &[&disks]);
    c.wait_agent(&uuid).await;
    c.patch_node(
        &uuid,
        json!([{"op": "add", "path": "/instance_info", "value": {
            "image_source": server.url_of("disk.raw"), "image_checksum": sum,
            "image_disk_format": "raw"}}]),
    )
    .await;
    assert_eq!(c.act(&uuid, json!({"target": "active"})).await.0, 202);
    c.wait_state(&uuid, "active", Duration::from_secs(120))
        .await;
    drop(agent);
    uuid
}

#[tokio::test(flavor = "multi_thread")]
async fn rescued_machine_takes_an_ssh_login_with_the_password_then_unrescues() {
    let ramdisk = rescue_ramdisk();
    let _slot = vm_slot().await;
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&dir.path().join("disk.raw"), 4 << 20);
    let sum = sha256_file(&raw);
    let server = ImageServer::start(dir.path().to_path_buf()).await;
    // Ironic's non-default but common choice: SHA-512 crypt.
    let c = Conductor::start(&[
        "--fast-track",
        "true",
        "--periodic-interval",
        "1",
        "--rescue-password-hash-algorithm",
        "sha512",
    ])
    .await;
    let uuid = active_node(&c, dir.path(), &server, &sum).await;

    // baremetal node rescue <node> --rescue-password <password>
    let (code, body) = c
        .act(
            &uuid,
            json!({"target": "rescue", "rescue_password": PASSWORD}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    c.wait_state(&uuid, "rescue wait", Duration::from_secs(30))
        .await;

    // The machine "powers on" into the rescue ramdisk.
    let conductor_port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    let ssh_port = free_port();
    let vm_dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::boot_direct_forwarding(
        vm_dir.path(),
        conductor_port,
        DirectBoot {
            arch: Arch::X86_64,
            ramdisk,
            memory_mib: 512,
            nic: "virtio-net-pci",
            mac: MAC,
            bootif: true,
            params: "",
            devices: disk(vm_dir.path()),
            keep_as: "rescue-serial.log",
            open_net: false,
        },
        &[(ssh_port, 22)],
    );
    let rescued = wait_for("the node to reach rescue", Duration::from_secs(300), || {
        let c = &c;
        let uuid = &uuid;
        let exited = vm.proc.exited();
        async move {
            assert!(exited.is_none(), "QEMU exited ({exited:?})");
            let node: Value = c.node(uuid).await;
            let state = node["provision_state"].as_str().unwrap_or_default();
            assert_ne!(state, "rescue failed", "{}", node["last_error"]);
            (state == "rescue").then_some(node)
        }
    })
    .await;
    assert_eq!(rescued["last_error"], Value::Null);
    eprintln!(
        "QEMU start -> rescue {:.1} s",
        vm.started.elapsed().as_secs_f64()
    );

    // PID 1 starts the server once the agent has finalized the rescue; the
    // console names the host key.
    let listening = wait_for(
        "the rescue ssh server on the console",
        Duration::from_secs(60),
        || {
            let serial = vm.proc.log_text();
            async move {
                serial
                    .lines()
                    .find(|l| l.contains("rescue ssh: listening on"))
                    .map(str::to_string)
            }
        },
    )
    .await;
    let fingerprint = listening
        .split("host key ED25519 ")
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint: {listening}"))
        .trim()
        .to_string();

    let login = |password| Login {
        host: "127.0.0.1",
        port: ssh_port,
        user: "rescue",
        password,
    };
    let run = ssh(
        dir.path(),
        login(PASSWORD),
        Some("cat /proc/cmdline; echo rescued-$((1+1)); ls /etc/.rescued"),
        false,
        b"",
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}\n{}", vm.proc.log_text());
    assert!(run.stdout.lines().any(|l| l == "rescued-2"), "{run:?}");
    assert!(
        run.stdout.contains("ipa-api-url=http://10.0.2.100"),
        "the ramdisk's command line: {run:?}"
    );
    assert!(run.stdout.contains("/etc/.rescued"), "{run:?}");
    assert_eq!(run.host_key_fingerprint().as_deref(), Some(&*fingerprint));

    let run = ssh(
        dir.path(),
        login("not-the-password"),
        Some("echo IN"),
        false,
        b"",
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(run.code, Some(255), "{run:?}");
    assert!(run.stderr.contains("Permission denied"), "{run:?}");
    assert!(!run.stdout.contains("IN"), "{run:?}");

    // The agent's API is closed (IPA's serve_api = False).
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", vm.agent_port))
            .await
            .map(|_| ())
            .is_err()
            || {
                // slirp accepts on the host side and then drops; a request
                // must get no answer.
                reqwest::Client::new()
                    .get(format!("http://127.0.0.1:{}/v1/status", vm.agent_port))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_err()
            },
        "the agent API still answers"
    );

    // baremetal node unrescue <node>
    assert_eq!(c.act(&uuid, json!({"target": "unrescue"})).await.0, 202);
    let back = c.wait_state(&uuid, "active", Duration::from_secs(60)).await;
    assert_eq!(back["last_error"], Value::Null);

    let serial = vm.proc.log_text();
    assert!(serial.contains("rescue ssh: rescue logged in"), "{serial}");
    assert!(
        serial.contains("login refused for \"rescue\" (wrong password)"),
        "{serial}"
    );
    assert!(!serial.contains(PASSWORD), "the password on the console");
    assert!(!c.proc.log_text().contains(PASSWORD));
}
