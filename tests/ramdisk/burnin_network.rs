//! `burnin_network` between two QEMU machines, as an operator runs it: both
//! nodes enrolled with their MACs, `manageable`, their `driver_info`
//! holding IPA's `agent_burnin_fio_network_*` settings, then a manual clean
//! of each with `burnin_network`. The agents pair through the conductor
//! (`agent_burnin_fio_network_pairing_backend_url`), write and read for
//! the runtime in each direction, and both cleans land back in
//! `manageable`. A second round pairs them statically across a second
//! network, where neither advertises an address: each writer must listen
//! on every address of its machine, as fio's `--listen` does.
//!
//! The network is sealed from the host's: the test body runs in a network
//! namespace it owns, with two bridges (provisioning and data), a tap per
//! machine on each, one dnsmasq serving IPv4 DHCP on both, and the
//! conductor listening on the provisioning bridge's address. The `virtual`
//! ramdisk boots directly (no firmware, no PXE).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_tests::{Conductor, Proc};
use nix::sched::CloneFlags;
use serde_json::{json, Value};

use crate::dhcp::ip;
use crate::e2e::{verb, wait_states};
use crate::qemu::{direct_boot_from, virtual_ramdisk, vm_slots_blocking, Arch};

/// Seconds each direction runs (IPA's `agent_burnin_fio_network_runtime`).
const RUNTIME: u64 = 3;
const PROV_NET: &str = "10.77.0";
const DATA_NET: &str = "10.78.0";

/// One machine: its NICs on the provisioning and the data network, and
/// the address dnsmasq gives it on the data network.
struct Spec {
    name: &'static str,
    prov_mac: &'static str,
    data_mac: &'static str,
    data_ip: &'static str,
}

static MACHINES: [Spec; 2] = [
    Spec {
        name: "burnin-net-a",
        prov_mac: "52:54:00:b3:00:01",
        data_mac: "52:54:00:b3:01:01",
        data_ip: "10.78.0.11",
    },
    Spec {
        name: "burnin-net-b",
        prov_mac: "52:54:00:b3:00:02",
        data_mac: "52:54:00:b3:01:02",
        data_ip: "10.78.0.12",
    },
];

/// The namespace, its two bridges and a tap per machine on each; the
/// namespace (and everything in it) is deleted on drop.
struct Bridges {
    ns: String,
    prov: String,
    data: String,
    /// `(provisioning tap, data tap)` per machine.
    taps: Vec<(String, String)>,
}

impl Bridges {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let b = Self {
            ns: format!("ferrite-bn{id}"),
            prov: format!("fbp{id}"),
            data: format!("fbd{id}"),
            taps: (0..MACHINES.len())
                .map(|i| (format!("fbp{id}t{i}"), format!("fbd{id}t{i}")))
                .collect(),
        };
        let ns = b.ns.as_str();
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        for (bridge, net) in [(&b.prov, PROV_NET), (&b.data, DATA_NET)] {
            ip(&["-n", ns, "link", "add", bridge, "type", "bridge"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{net}.1/24"),
                "dev",
                bridge,
            ]);
            ip(&["-n", ns, "link", "set", bridge, "up"]);
        }
        for (prov_tap, data_tap) in &b.taps {
            for (tap, bridge) in [(prov_tap, &b.prov), (data_tap, &b.data)] {
                ip(&["-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"]);
                ip(&["-n", ns, "link", "set", tap, "master", bridge]);
                ip(&["-n", ns, "link", "set", tap, "up"]);
            }
        }
        b
    }
}

impl Drop for Bridges {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn burnin_network_between_two_qemu_machines_paired_through_the_conductor() {
    // Built before entering the namespace: the build fetches packages.
    let ramdisk = virtual_ramdisk();
    // Both machines run at once: both slots, taken together.
    let _vm_slots = vm_slots_blocking(2);
    let started = Instant::now();
    let net = Bridges::new();
    let netns_path = format!("/run/netns/{}", net.ns);
    let (prov, data, taps) = (net.prov.clone(), net.data.clone(), net.taps.clone());
    let body = std::thread::spawn(move || {
        let f = std::fs::File::open(&netns_path).expect("netns file");
        nix::sched::setns(f, CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(in_netns(ramdisk, &prov, &data, &taps));
    });
    let res = body.join();
    drop(net);
    if let Err(panic) = res {
        std::panic::resume_unwind(panic);
    }
    eprintln!(
        "burnin_network in QEMU, wall time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A running machine and its node.
struct Machine {
    spec: &'static Spec,
    uuid: String,
    vm: Proc,
    /// Where the agent heartbeats from (its provisioning address).
    prov_ip: String,
}

impl Drop for Machine {
    /// Keep the serial log (pass or fail) where CI can pick it up.
    fn drop(&mut self) {
        let dest =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-{}.log", self.spec.name));
        let _ = std::fs::copy(&self.vm.log, &dest);
        eprintln!("serial log: {}", dest.display());
    }
}

async fn in_netns(ramdisk: &(PathBuf, PathBuf), prov: &str, data: &str, taps: &[(String, String)]) {
    let conductor = Conductor::start_on(
        &format!("{PROV_NET}.1"),
        &[
            "--fast-track",
            "true",
            "--heartbeat-timeout",
            "10",
            "--periodic-interval",
            "2",
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dnsmasq = dnsmasq(dir.path(), prov, data);

    // IPA's settings, as an operator sets them on the nodes.
    let pairing = json!({
        "agent_burnin_fio_network_runtime": RUNTIME,
        "agent_burnin_fio_network_outputfile": "/tmp/burnin-network.json",
        "agent_burnin_fio_network_pairing_backend_url": format!("ferrite+{}", conductor.url),
        "agent_burnin_fio_network_pairing_group_name": "qemu-rack",
        "agent_burnin_fio_network_pairing_timeout": 120,
        // Ferrite's: how long the two sides wait to connect.
        "agent_burnin_fio_network_connect_timeout": 60,
    });
    let mut uuids = Vec::new();
    for spec in &MACHINES {
        let node = conductor
            .create_node(json!({"driver": "fake-hardware", "name": spec.name,
                                "driver_info": pairing}))
            .await;
        let uuid = node["uuid"].as_str().unwrap().to_string();
        conductor.create_port(&uuid, spec.prov_mac).await;
        verb(&conductor, &uuid, "manage").await;
        uuids.push(uuid);
    }
    for uuid in &uuids {
        wait_states(&conductor, uuid, &["manageable"], Duration::from_secs(30)).await;
    }

    let booted = Instant::now();
    let mut machines: Vec<Machine> = MACHINES
        .iter()
        .zip(taps)
        .zip(uuids)
        .map(|((spec, (prov_tap, data_tap)), uuid)| {
            let vm_dir = dir.path().join(spec.name);
            std::fs::create_dir_all(&vm_dir).unwrap();
            let vm = boot(ramdisk, &conductor.url, spec, prov_tap, data_tap, &vm_dir);
            Machine {
                spec,
                uuid,
                vm,
                prov_ip: String::new(),
            }
        })
        .collect();
    for m in &mut machines {
        m.prov_ip = wait_heartbeat(&conductor, m, &dnsmasq).await;
    }
    eprintln!(
        "both machines heartbeating after {:.1} s",
        booted.elapsed().as_secs_f64()
    );

    // 1. Paired through the conductor, on the provisioning network.
    let t = Instant::now();
    clean_both(&conductor, &mut machines).await;
    eprintln!(
        "manual clean with burnin_network, paired through the conductor: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let [a, b] = [0, 1].map(|i| directions(&machines[i].vm.log_text(), 0));
    let a_first = a[0].role == "writer";
    let (writer, reader) = if a_first { (0, 1) } else { (1, 0) };
    eprintln!(
        "{} was paired as the writer first",
        machines[writer].spec.name
    );
    let all = [a, b];
    // The conductor told each the address the other heartbeats from, and
    // each writer was reached there.
    assert_directions(
        &all[writer],
        &all[reader],
        &machines[writer].prov_ip,
        &machines[reader].prov_ip,
    );
    let log = conductor.proc.log_text();
    assert!(log.contains("network burn-in pair"), "{log}");

    // 2. Statically paired on the data network, which neither advertises.
    for (m, (role, partner)) in machines.iter().zip([
        ("writer", MACHINES[1].data_ip),
        ("reader", MACHINES[0].data_ip),
    ]) {
        conductor
            .patch_node(
                &m.uuid,
                json!([{"op": "add", "path": "/driver_info/agent_burnin_fio_network_config",
                        "value": {"role": role, "partner": partner}}]),
            )
            .await;
    }
    let t = Instant::now();
    clean_both(&conductor, &mut machines).await;
    eprintln!(
        "manual clean with burnin_network, static pairing on the data network: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let [a, b] = [0, 1].map(|i| directions(&machines[i].vm.log_text(), 2));
    assert_eq!(a[0].role, "writer", "{a:?}");
    assert_directions(&a, &b, MACHINES[0].data_ip, MACHINES[1].data_ip);
    drop(dnsmasq);
}

/// One dnsmasq for both bridges: a pool on the provisioning network (the
/// conductor's address as the router), fixed addresses and no router on
/// the data network.
fn dnsmasq(dir: &Path, prov: &str, data: &str) -> Proc {
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        "--log-dhcp",
    ])
    .arg(format!("--interface={prov}"))
    .arg(format!("--interface={data}"))
    .arg(format!(
        "--dhcp-range=set:prov,{PROV_NET}.10,{PROV_NET}.50,255.255.255.0,1h"
    ))
    .arg(format!(
        "--dhcp-range=set:data,{DATA_NET}.10,{DATA_NET}.50,255.255.255.0,1h"
    ))
    .arg(format!("--dhcp-option=tag:prov,option:router,{PROV_NET}.1"))
    .arg("--dhcp-option=tag:data,option:router")
    .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
    .arg("--pid-file=");
    for spec in &MACHINES {
        cmd.arg(format!("--dhcp-host={},{}", spec.data_mac, spec.data_ip));
    }
    Proc::spawn(cmd, dir.join("dnsmasq.log"))
}

/// The `virtual` ramdisk on its two taps; BOOTIF names the provisioning
/// NIC, and `ipa-inspection-dhcp-all-interfaces` has PID 1 configure the
/// data NIC too.
fn boot(
    ramdisk: &(PathBuf, PathBuf),
    api_url: &str,
    spec: &Spec,
    prov_tap: &str,
    data_tap: &str,
    dir: &Path,
) -> Proc {
    let append = format!(
        "console=ttyS0 panic=-1 ipa-api-url={api_url} BOOTIF=01-{} \
         ipa-inspection-dhcp-all-interfaces=1 ipa-lookup-interval=1",
        spec.prov_mac.replace(':', "-")
    );
    let mut cmd = direct_boot_from(Arch::X86_64, ramdisk, 512, &append);
    for (id, (tap, mac)) in [(prov_tap, spec.prov_mac), (data_tap, spec.data_mac)]
        .into_iter()
        .enumerate()
    {
        cmd.args([
            "-netdev",
            &format!("tap,id=n{id},ifname={tap},script=no,downscript=no"),
            "-device",
            &format!("virtio-net-pci,netdev=n{id},mac={mac}"),
        ]);
    }
    Proc::spawn(cmd, dir.join("serial.log"))
}

/// Wait for the machine's first heartbeat; the address in its callback URL.
async fn wait_heartbeat(conductor: &Conductor, m: &mut Machine, dnsmasq: &Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let internal = conductor.node(&m.uuid).await["driver_internal_info"].clone();
        if internal["agent_last_heartbeat"].is_string() {
            let url = internal["agent_url"].as_str().unwrap_or_default();
            let host = url
                .split_once("://")
                .and_then(|(_, rest)| rest.rsplit_once(':'))
                .map(|(h, _)| h.to_string())
                .unwrap_or_else(|| panic!("agent_url {url:?}"));
            assert!(host.starts_with(&format!("{PROV_NET}.")), "{internal}");
            return host;
        }
        if let Some(status) = m.vm.exited() {
            panic!(
                "{}: QEMU exited ({status}) before a heartbeat:\n{}",
                m.spec.name,
                m.vm.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{}: no heartbeat:\n{}\n---- dnsmasq ----\n{}",
            m.spec.name,
            m.vm.log_text(),
            dnsmasq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A manual clean of both nodes with `burnin_network` (the settings are
/// the nodes' `driver_info`); both must come back to `manageable` without
/// an error.
async fn clean_both(conductor: &Conductor, machines: &mut [Machine]) {
    let steps = json!([{"interface": "deploy", "step": "burnin_network"}]);
    for m in machines.iter() {
        let (code, body) = conductor
            .act(&m.uuid, json!({"target": "clean", "clean_steps": steps}))
            .await;
        assert_eq!(code, 202, "{}: {body}", m.spec.name);
    }
    for m in machines.iter_mut() {
        let node = wait_states(
            conductor,
            &m.uuid,
            &["manageable", "clean failed"],
            Duration::from_secs(240),
        )
        .await;
        assert_eq!(
            (&node["provision_state"], &node["last_error"]),
            (&json!("manageable"), &Value::Null),
            "{}: {node}\n{}",
            m.spec.name,
            m.vm.log_text()
        );
        assert!(m.vm.exited().is_none(), "{} stopped", m.spec.name);
    }
}

/// One direction as the agent logged it.
#[derive(Debug)]
struct Direction {
    order: u64,
    role: String,
    local: String,
    partner: String,
    streams: u64,
    bytes: u64,
    seconds: f64,
}

/// The two directions a serial log reports after the first `earlier`.
fn directions(serial: &str, earlier: usize) -> Vec<Direction> {
    let found: Vec<Direction> = serial
        .lines()
        .filter_map(|line| line.split_once("network burn-in direction finished"))
        .map(|(_, fields)| {
            let kv: HashMap<&str, &str> = fields
                .split_whitespace()
                .filter_map(|f| f.split_once('='))
                .collect();
            let get = |k: &str| {
                kv.get(k)
                    .unwrap_or_else(|| panic!("no {k} in {fields:?}"))
                    .to_string()
            };
            let num = |k: &str| get(k).parse::<u64>().unwrap_or_else(|e| panic!("{k}: {e}"));
            Direction {
                order: num("direction"),
                role: get("role"),
                local: get("local"),
                partner: get("partner"),
                streams: num("streams"),
                bytes: num("bytes"),
                seconds: get("seconds").parse().expect("seconds"),
            }
        })
        .skip(earlier)
        .collect();
    assert_eq!(found.len(), 2, "{found:?}\n{serial}");
    found
}

/// `first` wrote first, to `second`; then the other way. Each direction:
/// 16 streams, the same bytes counted on both ends, for about the runtime.
fn assert_directions(first: &[Direction], second: &[Direction], first_ip: &str, second_ip: &str) {
    let pairs = [
        (&first[0], &second[0], first_ip, second_ip),
        (&second[1], &first[1], second_ip, first_ip),
    ];
    for (order, (w, r, w_ip, r_ip)) in (1..).zip(pairs) {
        assert_eq!((w.order, r.order), (order, order), "{w:?}\n{r:?}");
        assert_eq!((w.role.as_str(), r.role.as_str()), ("writer", "reader"));
        assert_eq!((w.streams, r.streams), (16, 16), "{w:?}");
        assert!(w.bytes > 0 && w.bytes == r.bytes, "{w:?}\n{r:?}");
        // The writer was reached at `w_ip`, from `r_ip`.
        assert_eq!((w.local.as_str(), r.partner.as_str()), (w_ip, w_ip));
        assert_eq!((r.local.as_str(), w.partner.as_str()), (r_ip, r_ip));
        let runtime = RUNTIME as f64;
        assert!(w.seconds >= runtime && w.seconds < runtime + 10.0, "{w:?}");
        assert!(
            r.seconds >= runtime - 1.0 && r.seconds < runtime + 10.0,
            "{r:?}"
        );
        eprintln!(
            "direction {order}: {w_ip} -> {r_ip}: {} bytes in {:.1} s ({:.1} MiB/s)",
            w.bytes,
            w.seconds,
            w.bytes as f64 / f64::from(1 << 20) / w.seconds
        );
    }
}
