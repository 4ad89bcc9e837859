//! An IPv6-only provisioning network, end to end: the `virtual` ramdisk in
//! QEMU on a tap device inside a network namespace the test owns, with
//! dnsmasq (router advertisements + DHCPv6, no IPv4) and the conductor
//! listening on the tap's IPv6 address. The test body runs on a thread
//! that entered the namespace, so the conductor, dnsmasq and QEMU it
//! spawns live there and the host's network is never touched.

use std::net::Ipv6Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_tests::{agent_client, wait_exit, AgentApi, Conductor, Proc};
use nix::sched::CloneFlags;
use serde_json::json;

use crate::dhcp::ip;
use crate::qemu::{direct_boot_from, virtual_ramdisk, vm_slot_blocking, Arch};

const MAC: &str = "52:54:00:12:34:66";
const PREFIX: &str = "fd00:99::";

/// A namespace holding one tap device at fd00:99::1/64; deleted on drop.
struct TapNetns {
    name: String,
    tap: String,
}

impl TapNetns {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let n = Self {
            name: format!("ferrite-v6q{id}"),
            tap: format!("fv6t{id}"),
        };
        ip(&["netns", "add", &n.name]);
        ip(&["-n", &n.name, "link", "set", "lo", "up"]);
        ip(&["-n", &n.name, "tuntap", "add", "dev", &n.tap, "mode", "tap"]);
        ip(&[
            "-n",
            &n.name,
            "addr",
            "add",
            &format!("{PREFIX}1/64"),
            "dev",
            &n.tap,
            "nodad",
        ]);
        ip(&["-n", &n.name, "link", "set", &n.tap, "up"]);
        n
    }
}

impl Drop for TapNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn ipv6_only_network_looks_up_heartbeats_and_is_called_back() {
    // Built before entering the namespace: the build fetches packages.
    let ramdisk = virtual_ramdisk();
    let _vm_slot = vm_slot_blocking();
    let ns = TapNetns::new();
    let netns_path = format!("/run/netns/{}", ns.name);
    let tap = ns.tap.clone();
    let body = std::thread::spawn(move || {
        let f = std::fs::File::open(&netns_path).expect("netns file");
        nix::sched::setns(f, CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(in_netns(ramdisk, &tap));
    });
    let res = body.join();
    drop(ns);
    if let Err(panic) = res {
        std::panic::resume_unwind(panic);
    }
}

async fn in_netns(ramdisk: &(std::path::PathBuf, std::path::PathBuf), tap: &str) {
    let conductor = Conductor::start_on(&format!("[{PREFIX}1]"), &["--fast-track", "true"]).await;
    let node = conductor
        .create_node(json!({"driver": "fake-hardware", "name": "v6-only"}))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    conductor.create_port(&uuid, MAC).await;
    let dir = tempfile::tempdir().unwrap();

    let append = format!(
        "console=ttyS0 panic=-1 ipa-api-url={} BOOTIF=01-{} ipa-lookup-interval=1",
        conductor.url,
        MAC.replace(':', "-")
    );
    let mut cmd = direct_boot_from(Arch::X86_64, ramdisk, 512, &append);
    cmd.args([
        "-netdev",
        &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={MAC}"),
    ]);
    let started = Instant::now();
    let mut vm = Proc::spawn(cmd, dir.path().join("serial.log"));
    let mut dnsmasq = Command::new("dnsmasq");
    dnsmasq
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--bind-interfaces",
        ])
        .arg(format!("--interface={tap}"))
        .args(["--enable-ra", "--log-dhcp"])
        .arg(format!("--dhcp-range={PREFIX}10,{PREFIX}100,64,1h"))
        .arg(format!("--dhcp-option=option6:dns-server,[{PREFIX}1]"))
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.path().join("leases").display()
        ))
        .arg("--pid-file=");
    let dnsmasq = Proc::spawn(dnsmasq, dir.path().join("dnsmasq.log"));

    // Lookup and heartbeat: there is no IPv4 on this network at all.
    let deadline = Instant::now() + Duration::from_secs(300);
    let internal = loop {
        let internal = conductor.node(&uuid).await["driver_internal_info"].clone();
        if internal["agent_last_heartbeat"].is_string() {
            break internal;
        }
        if let Some(status) = vm.exited() {
            panic!(
                "QEMU exited ({status}) before a heartbeat:\n{}",
                vm.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat:\n{}\n---- dnsmasq ----\n{}",
            vm.log_text(),
            dnsmasq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "QEMU start -> first heartbeat over IPv6: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let serial = vm.log_text();
    let _ = std::fs::copy(
        dir.path().join("serial.log"),
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-ipv6-only.log"),
    );

    // The callback URL is the DHCPv6 address, bracketed, on the agent's port.
    let agent_url = internal["agent_url"]
        .as_str()
        .expect("agent_url")
        .to_string();
    let host = agent_url
        .split_once("://[")
        .and_then(|(_, rest)| rest.split_once("]:9999"))
        .map(|(h, _)| h)
        .unwrap_or_else(|| panic!("agent_url {agent_url} is not a bracketed IPv6 URL"));
    let addr: Ipv6Addr = host.parse().expect("an IPv6 address");
    let base = u128::from(PREFIX.parse::<Ipv6Addr>().unwrap());
    assert!(
        (base + 0x10..=base + 0x100).contains(&u128::from(addr)),
        "{addr} is not from the DHCPv6 range"
    );
    assert!(
        dnsmasq
            .log_text()
            .contains(&format!("DHCPREPLY({tap}) {addr}")),
        "{}",
        dnsmasq.log_text()
    );
    assert!(
        serial.contains(&format!("{addr}/128 from DHCPv6")),
        "{serial}"
    );

    // The agent answers at that URL: power it off through it.
    let pem = conductor
        .wait_agent_certificate(&uuid, Duration::from_secs(60))
        .await;
    let api = AgentApi {
        client: agent_client(Some(&pem)).unwrap(),
        base: agent_url.clone(),
        token: conductor.agent_token(&uuid).expect("token"),
    };
    let res = api
        .run_within("standby.power_off", json!({}), Duration::from_secs(60))
        .await;
    assert_eq!(res["command_status"], "SUCCEEDED", "{res}");
    let status = wait_exit(&mut vm, Duration::from_secs(60))
        .await
        .expect("QEMU did not exit after power_off");
    assert!(status.success(), "{status:?}");
    assert!(!vm.log_text().contains("Kernel panic"));
}
