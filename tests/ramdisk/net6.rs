//! IPv6 (DHCPv6, SLAAC) and VLANs learnt from LLDP, driven through
//! `ferrite-agent net-up` in a network namespace against dnsmasq in
//! another (the veth pair of [`crate::dhcp::Netns`]); the host's own
//! interfaces are never touched.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ferrite_tests::{bin, Proc};
use serde_json::Value;

use crate::dhcp::{ip, Netns};

/// dnsmasq in the server namespace with only `args` for its ranges and options.
fn dnsmasq(ns: &Netns, dir: &Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.server, "dnsmasq", "--no-daemon"])
        .args(["--conf-file=/dev/null", "--port=0", "--bind-interfaces"])
        .arg("--except-interface=lo")
        .arg("--log-dhcp")
        .args(args)
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .arg("--pid-file=");
    Proc::spawn(cmd, dir.join("dnsmasq.log"))
}

fn net_up(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.client])
        .arg(bin("ferrite-agent"))
        .arg("net-up")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ferrite-agent net-up")
}

fn json_out(out: &Output, server: &Proc) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "net-up failed: {stderr}\n---- dnsmasq ----\n{}",
        server.log_text()
    );
    eprintln!("{stderr}");
    serde_json::from_slice(&out.stdout).expect("net-up JSON")
}

/// The switch: an LLDP frame every half second on the server's end of the
/// veth, naming VLAN `vid` (802.1 VLAN Name TLV), until dropped.
fn lldp_sender(ns: &Netns, dir: &Path, vid: u16) -> Proc {
    const SCRIPT: &str = r#"
import socket, struct, sys, time
ifname, vid = sys.argv[1], int(sys.argv[2])
def tlv(t, v):
    return struct.pack("!H", (t << 9) | len(v)) + v
frame = (bytes.fromhex("0180c200000e") + bytes.fromhex("020000000042") + struct.pack("!H", 0x88cc)
         + tlv(1, b"\x04" + bytes.fromhex("020000000042"))
         + tlv(2, b"\x05" + b"Ethernet42")
         + tlv(3, struct.pack("!H", 120))
         + tlv(127, bytes.fromhex("0080c203") + struct.pack("!H", vid) + bytes([4]) + b"prov")
         + tlv(0, b""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
while True:
    s.send(frame)
    time.sleep(0.5)
"#;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.server, "python3", "-c", SCRIPT])
        .arg(&ns.server_if)
        .arg(vid.to_string());
    Proc::spawn(cmd, dir.join("lldp.log"))
}

/// The server's VLAN `vid` over its veth end, at 192.168.<vid>.1/24;
/// `None` when this kernel has no 802.1Q support (CONFIG_VLAN_8021Q).
fn server_vlan(ns: &Netns, vid: u16) -> Option<String> {
    let name = format!("{}.{vid}", ns.server_if);
    let add = Command::new("ip")
        .args(["-n", &ns.server, "link", "add", "link", &ns.server_if])
        .args(["name", &name, "type", "vlan", "id", &vid.to_string()])
        .output()
        .expect("ip");
    if !add.status.success() {
        let err = String::from_utf8_lossy(&add.stderr);
        assert!(err.contains("Unknown device type"), "{err}");
        eprintln!("this kernel has no 802.1Q VLANs: only the agent's side is checked");
        return None;
    }
    let cidr = format!("192.168.{vid}.1/24");
    ip(&["-n", &ns.server, "addr", "add", &cidr, "dev", &name]);
    ip(&["-n", &ns.server, "link", "set", &name, "up"]);
    Some(name)
}

/// On a kernel without VLANs the agent still learnt the VLAN and asked
/// netlink for `<if>.<vid>`; the kernel refused.
fn assert_vlan_refused(ns: &Netns, out: &Output, vid: u16) {
    let got: Value = serde_json::from_slice(&out.stdout).expect("net-up JSON");
    let name = format!("{}.{vid}", ns.client_if);
    let v = got["vlans"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["interface"] == name.as_str()))
        .unwrap_or_else(|| panic!("{name} not in {got}"));
    let want = format!(
        "creating VLAN interface {name}: Received a netlink error message \
         Operation not supported (os error 95)"
    );
    assert_eq!(v["error"].as_str().unwrap_or_default(), want, "{got}");
}

/// The VLAN interface got a lease from the VLAN's range, and the kernel
/// has it tagged `vid` with the address on it.
fn assert_vlan_addressed(ns: &Netns, out: &Value, vid: u16) {
    let name = format!("{}.{vid}", ns.client_if);
    let vlans = out["vlans"].as_array().expect("vlans");
    let v = vlans
        .iter()
        .find(|v| v["interface"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not in {out}"));
    let addr: Ipv4Addr = v["address"].as_str().unwrap().parse().unwrap();
    let o = addr.octets();
    assert_eq!(&o[..3], &[192, 168, vid as u8], "{out}");
    assert!((50..=60).contains(&o[3]), "{out}");
    let link = ns.in_client(&["-d", "link", "show", "dev", &name]);
    assert!(
        link.contains(&format!("vlan protocol 802.1Q id {vid}")),
        "{link}"
    );
    assert!(link.contains(&format!("{name}@{}", ns.client_if)), "{link}");
    let addrs = ns.in_client(&["-4", "addr", "show", "dev", &name]);
    assert!(addrs.contains(&format!("inet {addr}/24")), "{addrs}");
}

#[test]
fn vlan_learnt_from_lldp_gets_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("v");
    let vlan_if = server_vlan(&ns, 42);
    // Only the VLAN has a range: an untagged request goes unanswered.
    let server = dnsmasq(
        &ns,
        dir.path(),
        &["--dhcp-range=192.168.42.50,192.168.42.60,255.255.255.0,1h"],
    );
    let _switch = lldp_sender(&ns, dir.path(), 42);
    let started = std::time::Instant::now();
    let args = [
        "--vlan-interfaces",
        "all",
        "--lldp-timeout",
        "20",
        "--timeout",
        "30",
    ];
    let out = net_up(
        &ns,
        &[&["--interface", ns.client_if.as_str()][..], &args].concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Found LLDP info"), "{stderr}");
    let Some(vlan_if) = vlan_if else {
        return assert_vlan_refused(&ns, &out, 42);
    };
    let got = json_out(&out, &server);
    eprintln!(
        "LLDP → VLAN → lease: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_vlan_addressed(&ns, &got, 42);
    assert_eq!(got["vlans"].as_array().unwrap().len(), 1, "{got}");
    let log = server.log_text();
    assert!(log.contains(&format!("DHCPACK({vlan_if})")), "{log}");
    // The inventory lists the VLAN as IPA does: `name.NNN`, the parent's
    // MAC, its own address.
    let inv = Command::new("ip")
        .args(["netns", "exec", &ns.client])
        .arg(bin("ferrite-agent"))
        .args(["inventory", "--skip-bmc"])
        .output()
        .expect("running ferrite-agent inventory");
    let err = String::from_utf8_lossy(&inv.stderr);
    assert!(inv.status.success(), "{err}");
    let inv: Value = serde_json::from_slice(&inv.stdout).expect("inventory JSON");
    let name = format!("{}.42", ns.client_if);
    let entry = inv["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not in {}", inv["interfaces"]));
    let mac = ns.in_client(&["link", "show", "dev", &ns.client_if]);
    let want = format!("link/ether {}", entry["mac_address"].as_str().unwrap());
    assert!(mac.contains(&want), "{entry} vs {mac}");
    assert_eq!(entry["ipv4_address"], got["vlans"][0]["address"], "{entry}");
}

#[test]
fn vlan_list_naming_a_missing_nic_still_does_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("w");
    let vlans = server_vlan(&ns, 43).is_some();
    let server = dnsmasq(
        &ns,
        dir.path(),
        &["--dhcp-range=192.168.43.50,192.168.43.60,255.255.255.0,1h"],
    );
    let spec = format!("nosuch0.5,{}.43,{}.9999", ns.client_if, ns.client_if);
    let out = net_up(
        &ns,
        &[
            "--interface",
            &ns.client_if,
            "--vlan-interfaces",
            &spec,
            "--timeout",
            "30",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("VLAN interface nosuch0.5: no NIC named nosuch0, skipping it"),
        "{stderr}"
    );
    let bad_vid = format!(
        "ipa-enable-vlan-interfaces entry \"{}.9999\": the VLAN id must be a number from 1 to 4094",
        ns.client_if
    );
    assert!(stderr.contains(&bad_vid), "{stderr}");
    assert!(!ns.in_client(&["link"]).contains("nosuch0"));
    if !vlans {
        return assert_vlan_refused(&ns, &out, 43);
    }
    let got = json_out(&out, &server);
    assert_vlan_addressed(&ns, &got, 43);
}

/// The server's veth end gets `prefix::1/64` (no DAD wait) for dnsmasq.
fn server_v6(ns: &Netns, addr: &str) {
    ip(&[
        "-n",
        &ns.server,
        "addr",
        "add",
        addr,
        "dev",
        &ns.server_if,
        "nodad",
    ]);
}

fn v6(out: &Value) -> Ipv6Addr {
    out["ipv6"]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no IPv6 address in {out}"))
        .parse()
        .unwrap()
}

#[test]
fn dhcpv6_gives_an_address_and_dns() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("6");
    server_v6(&ns, "fd00:77::1/64");
    let server = dnsmasq(
        &ns,
        dir.path(),
        &[
            "--enable-ra",
            "--dhcp-range=fd00:77::10,fd00:77::100,64,1h",
            "--dhcp-option=option6:dns-server,[fd00:77::1]",
            "--dhcp-option=option6:domain-search,example.test",
        ],
    );
    let resolv = dir.path().join("resolv.conf");
    let started = std::time::Instant::now();
    let out = net_up(
        &ns,
        &[
            "--interface",
            &ns.client_if,
            "--ipv6",
            "--timeout",
            "40",
            "--resolv-conf",
            resolv.to_str().unwrap(),
        ],
    );
    let got = json_out(&out, &server);
    eprintln!(
        "link up → DHCPv6 address: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let addr = v6(&got);
    let n = u128::from(addr);
    let base = u128::from("fd00:77::".parse::<Ipv6Addr>().unwrap());
    assert!(
        (base + 0x10..=base + 0x100).contains(&n),
        "{addr} not from the range"
    );
    let addrs = ns.in_client(&["-6", "addr", "show", "dev", &ns.client_if]);
    assert!(
        addrs.contains(&format!("inet6 {addr}/128 scope global")),
        "{addrs}"
    );
    let text = std::fs::read_to_string(&resolv).expect("resolv.conf written");
    assert!(text.contains("nameserver fd00:77::1\n"), "{text}");
    assert!(text.contains("search example.test\n"), "{text}");
    let log = server.log_text();
    assert!(
        log.contains(&format!("DHCPREPLY({}) {addr}", ns.server_if)),
        "{log}"
    );
}

#[test]
fn router_advertisements_alone_give_a_slaac_address() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("s");
    server_v6(&ns, "fd00:78::1/64");
    let server = dnsmasq(
        &ns,
        dir.path(),
        &["--enable-ra", "--dhcp-range=fd00:78::,ra-only,64,1h"],
    );
    let started = std::time::Instant::now();
    let out = net_up(
        &ns,
        &["--interface", &ns.client_if, "--ipv6", "--timeout", "40"],
    );
    let got = json_out(&out, &server);
    eprintln!(
        "link up → SLAAC address: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let addr = v6(&got);
    assert_eq!(&addr.segments()[..4], &[0xfd00, 0x78, 0, 0], "{addr}");
    let addrs = ns.in_client(&["-6", "addr", "show", "dev", &ns.client_if]);
    assert!(
        addrs.contains(&format!("inet6 {addr}/64 scope global")),
        "{addrs}"
    );
    // Nobody served DHCPv6 on this network.
    assert!(
        !server.log_text().contains("DHCPREPLY"),
        "{}",
        server.log_text()
    );
}

/// dnsmasq's shortest lease (two minutes: T1 one minute) is renewed at T1
/// and the address keeps its place with fresh lifetimes.
#[test]
fn dhcpv6_lease_is_renewed_at_t1() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("r");
    server_v6(&ns, "fd00:79::1/64");
    let server = dnsmasq(
        &ns,
        dir.path(),
        &["--enable-ra", "--dhcp-range=fd00:79::10,fd00:79::100,64,2m"],
    );
    let out = net_up(
        &ns,
        &[
            "--interface",
            &ns.client_if,
            "--ipv6",
            "--timeout",
            "40",
            "--hold",
            "80",
        ],
    );
    let got = json_out(&out, &server);
    let addr = v6(&got);
    let log = server.log_text();
    let renew = log
        .find(&format!("DHCPRENEW({})", ns.server_if))
        .unwrap_or_else(|| panic!("no renewal:\n{log}"));
    assert!(
        log[renew..].contains(&format!("DHCPREPLY({}) {addr}", ns.server_if)),
        "{log}"
    );
    let addrs = ns.in_client(&["-6", "addr", "show", "dev", &ns.client_if]);
    assert!(
        addrs.contains(&format!("inet6 {addr}/128 scope global")),
        "{addrs}"
    );
    // Renewed about 20 s ago with a 120 s lifetime; unrenewed, the first
    // lease would have had 40 s left.
    let valid: u64 = addrs
        .split(&format!("inet6 {addr}/128"))
        .nth(1)
        .and_then(|rest| rest.split("valid_lft ").nth(1))
        .and_then(|v| v.split("sec").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no valid_lft in {addrs}"));
    assert!(valid > 60, "valid_lft {valid} s: {addrs}");
}
