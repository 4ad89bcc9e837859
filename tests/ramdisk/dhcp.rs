//! `ferrite-agent dhcp` (PID 1's client) in a network namespace, talking to
//! dnsmasq across a veth pair in another namespace: the host's own
//! interfaces are never touched.

use std::process::{Command, Output, Stdio};

use ferrite_tests::{bin, Proc};
use serde_json::Value;

/// Two namespaces joined by a veth pair, removed (with the pair) on drop.
pub(crate) struct Netns {
    pub(crate) server: String,
    pub(crate) client: String,
    pub(crate) client_if: String,
    pub(crate) server_if: String,
}

pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    pub(crate) fn new(tag: &str) -> Self {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let n = Self {
            server: format!("ferrite-dhcp-s{id}"),
            client: format!("ferrite-dhcp-c{id}"),
            client_if: format!("fdc{id}"),
            server_if: format!("fds{id}"),
        };
        let server_if = n.server_if.clone();
        ip(&["netns", "add", &n.server]);
        ip(&["netns", "add", &n.client]);
        // Created inside the server namespace: never visible on the host.
        ip(&[
            "-n",
            &n.server,
            "link",
            "add",
            &server_if,
            "type",
            "veth",
            "peer",
            "name",
            &n.client_if,
            "netns",
            &n.client,
        ]);
        ip(&[
            "-n",
            &n.server,
            "addr",
            "add",
            "192.168.77.1/24",
            "dev",
            &server_if,
        ]);
        ip(&["-n", &n.server, "link", "set", &server_if, "up"]);
        n
    }

    fn dnsmasq(&self, dir: &std::path::Path) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server, "dnsmasq", "--no-daemon"])
            .args(["--conf-file=/dev/null", "--port=0", "--bind-interfaces"])
            .arg("--except-interface=lo")
            .arg("--dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,1h")
            .arg("--dhcp-option=option:router,192.168.77.1")
            .arg("--dhcp-option=option:dns-server,192.168.77.1")
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg("--pid-file=");
        Proc::spawn(cmd, dir.join("dnsmasq.log"))
    }

    fn client(&self, extra: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client])
            .arg(bin("ferrite-agent"))
            .args(["dhcp", "--interface", &self.client_if])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("running ferrite-agent dhcp")
    }

    pub(crate) fn in_client(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.client])
            .args(args)
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn lease_from_dnsmasq_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("a");
    let server = ns.dnsmasq(dir.path());
    let out = ns.client(&["--apply", "--timeout", "30"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dhcp failed: {stderr}\n{}",
        server.log_text()
    );
    let lease: Value = serde_json::from_slice(&out.stdout).expect("lease JSON");
    let addr = lease["address"].as_str().unwrap();
    let last: u8 = addr.strip_prefix("192.168.77.").unwrap().parse().unwrap();
    assert!((50..=60).contains(&last), "{lease}");
    assert_eq!(lease["prefix_len"], 24);
    assert_eq!(lease["routers"], serde_json::json!(["192.168.77.1"]));
    assert_eq!(lease["dns"], serde_json::json!(["192.168.77.1"]));
    assert_eq!(lease["lease_secs"], 3600);
    // The lease is on the interface, and its router is the default route.
    let addrs = ns.in_client(&["-4", "addr", "show", "dev", &ns.client_if]);
    assert!(addrs.contains(&format!("inet {addr}/24")), "{addrs}");
    let routes = ns.in_client(&["-4", "route"]);
    assert!(
        routes.contains(&format!("default via 192.168.77.1 dev {}", ns.client_if)),
        "{routes}"
    );
    // The server handed out exactly that address.
    let log = server.log_text();
    assert!(log.contains("DHCPACK(fds") && log.contains(addr), "{log}");
}

#[test]
fn no_server_is_a_clear_timeout() {
    let ns = Netns::new("b");
    let started = std::time::Instant::now();
    let out = ns.client(&["--timeout", "3"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no DHCP answer on {} within 3 s", ns.client_if)),
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 20);
    // Nothing was configured.
    let addrs = ns.in_client(&["-4", "addr", "show", "dev", &ns.client_if]);
    assert!(!addrs.contains("inet "), "{addrs}");
}
