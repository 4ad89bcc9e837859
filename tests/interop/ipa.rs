//! The real ironic-python-agent 13 (PyPI, build/ipa-venv) against
//! ferrite-conductor: inspection (IPA posts its inventory), lookup, agent
//! token, heartbeats over IPA's auto-TLS, cleaning's `get_clean_steps`, and
//! direct command round trips.
//!
//! IPA is written to own the machine it runs on, and here that machine is
//! this host. It is confined three ways:
//! 1. a private mount namespace whose `/dev` is a fresh tmpfs holding only
//!    null, zero, random and urandom: there is no disk device node to open,
//!    whatever IPA is asked;
//! 2. a directory of refusing stand-ins first on its PATH for every tool that
//!    changes disks, firmware, power, the network or the kernel (`ip`,
//!    `wipefs`, `dd`, `poweroff`, `modprobe`, ...: IPA's lockdown would
//!    otherwise take the host's links down);
//! 3. the conductor drives it only through non-destructive work: inspection,
//!    lookup, heartbeats, and cleaning whose steps all have priority 0, so
//!    only `get_clean_steps` runs.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferrite_protocol::inventory::Inventory;
use ferrite_tests::recorder::Recorder;
use ferrite_tests::{agent_client, free_port, AgentApi, Conductor, Proc};
use serde_json::{json, Value};

use crate::ironic::venv_bin;
use crate::{command_table, print_table, save_recording};

/// Tools IPA may run that change the host; each stand-in refuses.
const REFUSED: &[&str] = &[
    "ip",
    "ifconfig",
    "dhclient",
    "dhcpcd",
    "poweroff",
    "reboot",
    "shutdown",
    "halt",
    "systemctl",
    "wipefs",
    "dd",
    "sgdisk",
    "parted",
    "sfdisk",
    "blkdiscard",
    "shred",
    "hdparm",
    "nvme",
    "mdadm",
    "mkfs",
    "mkfs.ext4",
    "mkfs.vfat",
    "mkswap",
    "efibootmgr",
    "modprobe",
    "partprobe",
    "ntpdate",
    "chronyd",
    "hwclock",
    "ipmitool",
    "vgchange",
    "vgremove",
    "pvremove",
    "lvremove",
    "cryptsetup",
    "qemu-img",
];

/// The host's physical NICs' MACs: IPA looks up with those (it skips
/// interfaces without a device, such as lo or ifb).
fn host_macs() -> Vec<String> {
    let mut macs: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty() && m != "00:00:00:00:00:00")
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

/// Start IPA confined (see the module comment), talking to `api_url`.
fn start_ipa(dir: &Path, api_url: &str, port: u16) -> Proc {
    let stubs = dir.join("refused-tools");
    std::fs::create_dir_all(&stubs).unwrap();
    for tool in REFUSED {
        let path = stubs.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool}: refused (IPA is confined in this test)\" >&2\nexit 1\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let conf = dir.join("ipa.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\n\
             api_url = {api_url}\n\
             inspection_callback_url = {api_url}/v1/continue_inspection\n\
             inspection_dhcp_wait_timeout = 0\n\
             listen_host = 127.0.0.1\n\
             listen_port = {port}\n\
             advertise_host = 127.0.0.1\n\
             advertise_port = {port}\n\
             disk_wait_attempts = 1\n\
             disk_wait_delay = 0\n\
             lookup_interval = 1\n\
             debug = True\n"
        ),
    )
    .unwrap();
    let ipa = venv_bin("ipa-venv", "ironic-python-agent");
    let venv_bin_dir = ipa.parent().unwrap().display().to_string();
    // A fresh /dev with no disks, then IPA.
    let script = format!(
        "set -e\n\
         mount -t tmpfs -o mode=755 ferrite-confined-dev /dev\n\
         mknod -m 666 /dev/null c 1 3\n\
         mknod -m 666 /dev/zero c 1 5\n\
         mknod -m 666 /dev/random c 1 8\n\
         mknod -m 666 /dev/urandom c 1 9\n\
         mkdir /dev/shm /dev/pts\n\
         exec \"{ipa}\" --config-file \"{conf}\"\n",
        ipa = ipa.display(),
        conf = conf.display(),
    );
    let path = format!(
        "{}:{venv_bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        stubs.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(script)
        .env("PATH", path)
        .current_dir(dir)
        .process_group(0);
    Proc::spawn(cmd, dir.join("ipa.log"))
}

/// Ends IPA (and the shell that started it) on drop.
struct Ipa(Proc);

impl Drop for Ipa {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ipa_works_with_ferrite_conductor() {
    let macs = host_macs();
    assert!(!macs.is_empty(), "the host has no physical NIC");
    let conductor = Conductor::start(&[
        "--fast-track",
        "true",
        "--periodic-interval",
        "1",
        "--inspector-add-ports",
        "all",
        // Cleaning asks IPA for its steps and runs none of them.
        "--clean-step-priorities",
        "erase_devices=0,erase_devices_metadata=0,erase_devices_express=0,erase_pstore=0",
    ])
    .await;
    let recorder = Recorder::start(&conductor.url).await;
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "ipa-host"}))
        .await;
    let uuid = node["uuid"].as_str().expect("uuid").to_string();
    for mac in &macs {
        conductor.create_port(&uuid, mac).await;
    }
    conductor.act(&uuid, json!({"target": "manage"})).await;
    conductor
        .wait_state(&uuid, "manageable", Duration::from_secs(60))
        .await;

    // Inspection: IPA posts its inventory before its first lookup.
    conductor.act(&uuid, json!({"target": "inspect"})).await;
    conductor
        .wait_state(&uuid, "inspect wait", Duration::from_secs(60))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ipa = Ipa(start_ipa(dir.path(), &recorder.api_url, port));
    let node = conductor
        .wait_state(&uuid, "manageable", Duration::from_secs(180))
        .await;
    let props = &node["properties"];
    assert_eq!(props["cpu_arch"], "x86_64", "{props}");
    assert!(props["cpus"].as_u64().unwrap_or(0) > 0, "{props}");
    assert!(props["memory_mb"].as_u64().unwrap_or(0) > 0, "{props}");
    let (status, stored) = conductor
        .request(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/inventory"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("inventory");
    assert_eq!(status, 200);
    let stored: Value = stored.json().await.expect("inventory JSON");
    let inventory: Inventory = serde_json::from_value(stored["inventory"].clone())
        .unwrap_or_else(|e| panic!("IPA's inventory does not parse as ours: {e}: {stored}"));
    assert!(inventory
        .interfaces
        .iter()
        .any(|i| i.mac_address == macs[0]));

    // Lookup (fast track: a manageable node may be looked up), token,
    // heartbeat over IPA's auto-TLS.
    conductor
        .wait_agent_certificate(&uuid, Duration::from_secs(120))
        .await;
    let agent_url = conductor.wait_agent(&uuid).await;
    assert!(agent_url.starts_with("https://"), "{agent_url}");

    // Cleaning: get_clean_steps only (every step has priority 0).
    conductor.act(&uuid, json!({"target": "provide"})).await;
    conductor
        .wait_state(&uuid, "available", Duration::from_secs(120))
        .await;

    // Direct command round trips, as a conductor sends them.
    let api = AgentApi {
        client: agent_client(conductor.agent_certificate(&uuid).as_deref()).expect("client"),
        base: agent_url,
        token: conductor.agent_token(&uuid).expect("token"),
    };
    let info = api.run("poll.get_hardware_info", json!({})).await;
    assert_eq!(info["command_status"], "SUCCEEDED", "{info}");
    let _: Inventory = serde_json::from_value(info["command_result"].clone())
        .unwrap_or_else(|e| panic!("IPA's poll.get_hardware_info does not parse: {e}"));
    let steps = api
        .run(
            "deploy.get_deploy_steps",
            json!({"node": node, "ports": []}),
        )
        .await;
    assert_eq!(steps["command_status"], "SUCCEEDED", "{steps}");
    let (status, unknown) = api
        .post("", json!({"name": "nosuch.command", "params": {}}))
        .await;
    assert_eq!(status, 404, "{unknown}");
    let (status, listed) = api
        .get(&format!("/v1/commands/?agent_token={}", api.token))
        .await;
    assert_eq!(status, 200);
    assert!(listed["commands"].as_array().is_some_and(|c| c.len() >= 3));

    let exchanges = recorder.exchanges();
    drop(ipa);
    let path = save_recording(&recorder, "ipa-13-to-ferrite-conductor");
    print_table(&format!("recorded in {}", path.display()), &exchanges);
    let names: Vec<String> = command_table(&exchanges)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.iter().any(|n| n == "clean.get_clean_steps"),
        "{names:?}"
    );
    let posted = |path: &str| {
        exchanges
            .iter()
            .any(|e| e.from == "agent" && e.path.starts_with(path) && e.status < 300)
    };
    assert!(posted("/v1/continue_inspection"), "no inspection");
    assert!(posted("/v1/lookup"), "no lookup");
    assert!(posted("/v1/heartbeat/"), "no heartbeat");
    for e in &exchanges {
        assert!(e.status < 500, "{} {} -> {}", e.method, e.path, e.status);
    }
}
