//! `ferrite-agent dhcp` (PID 1's client) in a network namespace, talking to
//! dnsmasq (or a misbehaving server written here) across a veth pair in
//! another namespace: the host's own interfaces are never touched.

use std::net::UdpSocket;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        self.dnsmasq_with(dir, "1h", &[])
    }

    /// dnsmasq leasing for `lease` (its shortest is 2m), with `extra` args.
    fn dnsmasq_with(&self, dir: &std::path::Path, lease: &str, extra: &[&str]) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server, "dnsmasq", "--no-daemon"])
            .args(["--conf-file=/dev/null", "--port=0", "--bind-interfaces"])
            .arg("--except-interface=lo")
            .arg(format!(
                "--dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,{lease}"
            ))
            .args(extra)
            .arg("--dhcp-option=option:router,192.168.77.1")
            .arg("--dhcp-option=option:dns-server,192.168.77.1")
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg("--pid-file=");
        Proc::spawn(cmd, dir.join("dnsmasq.log"))
    }

    fn client_cmd(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client])
            .arg(bin("ferrite-agent"))
            .args(["dhcp", "--interface", &self.client_if])
            .args(extra)
            .stdin(Stdio::null());
        cmd
    }

    fn client(&self, extra: &[&str]) -> Output {
        self.client_cmd(extra)
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
    // It kept asking until the budget ran out (1 s, then 2 s apart).
    let discovers = stderr.matches("DHCPDISCOVER xid").count();
    assert!(discovers >= 2, "{discovers} DHCPDISCOVERs:\n{stderr}");
    // Nothing was configured.
    let addrs = ns.in_client(&["-4", "addr", "show", "dev", &ns.client_if]);
    assert!(!addrs.contains("inet "), "{addrs}");
}

/// Where a backgrounded client's stdout and stderr go.
struct Logs {
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Logs {
    fn new(dir: &std::path::Path, tag: &str) -> Self {
        Self {
            out: dir.join(format!("{tag}.out")),
            err: dir.join(format!("{tag}.err")),
        }
    }

    fn spawn(&self, ns: &Netns, extra: &[&str]) -> Child {
        ns.client_cmd(extra)
            .stdout(std::fs::File::create(&self.out).unwrap())
            .stderr(std::fs::File::create(&self.err).unwrap())
            .spawn()
            .expect("spawning ferrite-agent dhcp")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The JSON lines on stdout (the lease, then one per state change).
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|v| v["event"].as_str().map(String::from))
            .collect()
    }
}

/// The `inet a.b.c.d/nn` on the client's interface, if any.
fn client_inet(ns: &Netns) -> Option<String> {
    let addrs = ns.in_client(&["-4", "-o", "addr", "show", "dev", &ns.client_if]);
    let mut words = addrs.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next().map(String::from)
}

/// dnsmasq's shortest lease is 2 minutes; T1 = 10 s and T2 = 20 s (options
/// 58 and 59, which dnsmasq passes on) make the client renew every 10 s.
/// Over more than two minutes: many renewals, all for the same address,
/// seen by dnsmasq; the address never leaves the interface.
#[test]
fn short_lease_is_renewed_and_the_address_never_drops() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("c");
    let server = ns.dnsmasq_with(
        dir.path(),
        "2m",
        &["--dhcp-option=option:T1,10", "--dhcp-option=option:T2,20"],
    );
    const KEEP_SECS: u64 = 130;
    let logs = Logs::new(dir.path(), "client");
    let mut child = logs.spawn(
        &ns,
        &["--timeout", "30", "--keep-for", &KEEP_SECS.to_string()],
    );
    let started = Instant::now();
    let mut first: Option<String> = None;
    let (mut samples, mut gaps) = (0, Vec::new());
    let mut lifetimes = String::new();
    while child.try_wait().unwrap().is_none() {
        let now = client_inet(&ns);
        match (&first, now) {
            (None, Some(a)) => {
                lifetimes = ns.in_client(&["-4", "addr", "show", "dev", &ns.client_if]);
                first = Some(a);
            }
            (Some(f), Some(a)) if *f == a => samples += 1,
            (Some(f), other) => gaps.push(format!(
                "at {:.1} s: {other:?} instead of {f}",
                started.elapsed().as_secs_f64()
            )),
            (None, None) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(KEEP_SECS + 60),
            "the client did not exit:\n{}",
            logs.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {}", logs.stderr());
    let addr = first.expect("the address never appeared");
    assert!(gaps.is_empty(), "the address dropped: {gaps:?}");
    assert!(samples > 300, "only {samples} samples of the address");
    // The address carries the lease's lifetime (not "forever").
    assert!(
        lifetimes.contains("valid_lft") && !lifetimes.contains("valid_lft forever"),
        "{lifetimes}"
    );

    let lines = logs.lines();
    assert_eq!(lines[0]["lease_secs"], 120, "{lines:?}");
    assert_eq!(lines[0]["renew_secs"], 10, "{lines:?}");
    let events = logs.events();
    let renewed = events.iter().filter(|e| *e == "renewed").count();
    assert!(
        renewed >= 8,
        "{renewed} renewals in {KEEP_SECS} s: {events:?}"
    );
    for bad in ["rebinding", "expired", "nak", "bound"] {
        let n = events.iter().filter(|e| *e == bad).count();
        assert!(n <= usize::from(bad == "bound"), "{bad}: {events:?}");
    }
    let ip = addr.split('/').next().unwrap();
    assert!(
        lines
            .iter()
            .filter(|l| l["event"] == "renewed")
            .all(|l| l["address"] == ip),
        "{lines:?}"
    );
    // dnsmasq acknowledged each renewal, for the same address.
    let log = server.log_text();
    let acks = log
        .lines()
        .filter(|l| l.contains("DHCPACK(") && l.contains(ip))
        .count();
    let requests = log
        .lines()
        .filter(|l| l.contains("DHCPREQUEST(") && l.contains(ip))
        .count();
    assert!(acks > renewed && requests > renewed, "{acks} ACKs:\n{log}");
    eprintln!(
        "{renewed} renewals of {ip} in {KEEP_SECS} s ({acks} DHCPACKs in dnsmasq's log, \
         {samples} samples of the address, no gap)"
    );
}

/// What the hand-written server below does with each request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Misbehaviour {
    /// Answer every request with three unusable replies.
    Garbage,
    /// Offer an address, then refuse it.
    NakEverything,
    /// Grant a lease (T1 2 s), refuse its first renewal, then go silent.
    NakTheRenewal,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    kind: u8,
    ciaddr: [u8; 4],
    server_id: bool,
    requested_ip: bool,
}

/// DHCP options from byte 240 (after the magic cookie): (code, value).
fn options(packet: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut opts = Vec::new();
    let mut rest = packet.get(240..).unwrap_or_default();
    while let [code, tail @ ..] = rest {
        match code {
            255 => break,
            0 => rest = tail,
            _ => {
                let Some((&len, tail)) = tail.split_first() else {
                    break;
                };
                let Some(value) = tail.get(..usize::from(len)) else {
                    break;
                };
                opts.push((*code, value.to_vec()));
                rest = &tail[usize::from(len)..];
            }
        }
    }
    opts
}

/// A BOOTREPLY to `request` (its xid, flags and chaddr) with `options`.
fn reply(request: &[u8], yiaddr: [u8; 4], options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[..4].copy_from_slice(&[2, 1, 6, 0]);
    p[4..8].copy_from_slice(&request[4..8]);
    p[10..12].copy_from_slice(&request[10..12]);
    p[16..20].copy_from_slice(&yiaddr);
    p[28..44].copy_from_slice(&request[28..44]);
    p.extend_from_slice(&[99, 130, 83, 99]);
    for (code, value) in options {
        p.push(*code);
        p.push(value.len() as u8);
        p.extend_from_slice(value);
    }
    p.push(255);
    p
}

const SERVER: [u8; 4] = [192, 168, 77, 1];
const OFFERED: [u8; 4] = [192, 168, 77, 99];

fn answer(how: Misbehaviour, req: &[u8], seen: &Seen, naks_sent: &mut u32) -> Vec<Vec<u8>> {
    let mask: &[u8] = &[255, 255, 255, 0];
    let lease = |kind: u8| {
        reply(
            req,
            OFFERED,
            &[
                (53, &[kind]),
                (54, &SERVER),
                (1, mask),
                (51, &60u32.to_be_bytes()),
                (58, &2u32.to_be_bytes()),
            ],
        )
    };
    let nak = || reply(req, [0; 4], &[(53, &[6]), (54, &SERVER)]);
    match (how, seen.kind) {
        (Misbehaviour::Garbage, _) => {
            // Not DHCP at all; a reply to us whose option runs past the end;
            // an ACK with a subnet mask that has holes.
            let mut truncated = reply(req, OFFERED, &[(53, &[5])]);
            truncated.truncate(truncated.len() - 1);
            truncated.extend_from_slice(&[3, 200, 1, 2]);
            let holey = reply(req, OFFERED, &[(53, &[5]), (1, &[255, 0, 255, 0])]);
            vec![b"this is not DHCP".to_vec(), truncated, holey]
        }
        (_, 1) if *naks_sent == 0 || how == Misbehaviour::NakEverything => vec![lease(2)],
        (Misbehaviour::NakEverything, 3) => vec![nak()],
        (Misbehaviour::NakTheRenewal, 3) if seen.ciaddr == [0; 4] && *naks_sent == 0 => {
            vec![lease(5)]
        }
        (Misbehaviour::NakTheRenewal, 3) if *naks_sent == 0 => {
            *naks_sent += 1;
            vec![nak()]
        }
        _ => Vec::new(),
    }
}

/// A DHCP server written for the test, on UDP port 67 in the server
/// namespace (a thread that entered it), answering as `how` says.
struct FakeServer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start(ns: &Netns, how: Misbehaviour) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let netns = format!("/run/netns/{}", ns.server);
        let iface = ns.server_if.clone();
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&netns).unwrap();
            // Only this thread moves into the namespace.
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let sock = UdpSocket::bind("0.0.0.0:67").unwrap();
            sock.set_broadcast(true).unwrap();
            nix::sys::socket::setsockopt(
                &sock,
                nix::sys::socket::sockopt::BindToDevice,
                &std::ffi::OsString::from(&iface),
            )
            .unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            let mut naks_sent = 0;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let req = &buf[..n];
                if n < 240 || req[0] != 1 {
                    continue;
                }
                let opts = options(req);
                let Some(kind) = opts
                    .iter()
                    .find(|(c, _)| *c == 53)
                    .and_then(|(_, v)| v.first())
                else {
                    continue;
                };
                let s = Seen {
                    kind: *kind,
                    ciaddr: req[12..16].try_into().unwrap(),
                    server_id: opts.iter().any(|(c, _)| *c == 54),
                    requested_ip: opts.iter().any(|(c, _)| *c == 50),
                };
                for r in answer(how, req, &s, &mut naks_sent) {
                    let _ = sock.send_to(&r, "255.255.255.255:68");
                }
                seen2.lock().unwrap().push(s);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the fake server did not start");
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn garbage_replies_are_named_and_the_client_keeps_asking() {
    let ns = Netns::new("d");
    let server = FakeServer::start(&ns, Misbehaviour::Garbage);
    let out = ns.client(&["--timeout", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ignoring a bad DHCP reply from 192.168.77.1:67: malformed DHCP packet"),
        "{stderr}"
    );
    // The timeout says what came back.
    assert!(
        stderr.contains(&format!("no DHCP answer on {} within 4 s (", ns.client_if))
            && stderr
                .contains("unusable replies, the last: subnet mask 255.0.255.0 is not contiguous"),
        "{stderr}"
    );
    let discovers = server.seen().iter().filter(|s| s.kind == 1).count();
    assert!(discovers >= 3, "{discovers} DHCPDISCOVERs\n{stderr}");
    assert!(client_inet(&ns).is_none());
}

#[test]
fn a_server_that_naks_is_named_and_the_client_starts_over() {
    let ns = Netns::new("e");
    let server = FakeServer::start(&ns, Misbehaviour::NakEverything);
    let out = ns.client(&["--timeout", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let naks = stderr
        .matches("DHCPNAK from 192.168.77.1 for 192.168.77.99; starting over with DHCPDISCOVER")
        .count();
    assert!(naks >= 2, "{naks} NAK lines:\n{stderr}");
    assert!(
        stderr.contains(&format!("no DHCP answer on {} within 5 s (", ns.client_if))
            && stderr.contains(" DHCPNAK)"),
        "{stderr}"
    );
    let requests = server.seen().iter().filter(|s| s.kind == 3).count();
    assert!(requests >= 2, "{requests} DHCPREQUESTs");
    assert!(client_inet(&ns).is_none());
}

/// A NAK in RENEWING takes the address off and starts over. The renewal on
/// the wire is RFC 2131's: ciaddr set, no server identifier, no requested
/// address.
#[test]
fn a_nak_while_renewing_removes_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("f");
    let server = FakeServer::start(&ns, Misbehaviour::NakTheRenewal);
    let logs = Logs::new(dir.path(), "client");
    let mut child = logs.spawn(&ns, &["--timeout", "10", "--keep-for", "6"]);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(40), "no exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = logs.stderr();
    let events = logs.events();
    let pos = |e: &str| events.iter().position(|x| x == e);
    assert!(
        pos("bound") < pos("renewing") && pos("renewing") < pos("nak") && pos("bound").is_some(),
        "{events:?}\n{stderr}"
    );
    assert!(
        stderr.contains(
            "the server refused to extend the lease on 192.168.77.99 (DHCPNAK): address removed, \
             starting over"
        ),
        "{stderr}"
    );
    // The silent server after the NAK: no lease again, and the address is gone.
    assert!(
        events.iter().any(|e| e == "no_lease") || events.last().map(String::as_str) == Some("nak"),
        "{events:?}"
    );
    assert_eq!(client_inet(&ns), None);
    let renewal = server
        .seen()
        .into_iter()
        .find(|s| s.kind == 3 && s.ciaddr != [0; 4])
        .expect("no renewal REQUEST");
    assert_eq!(renewal.ciaddr, OFFERED);
    assert!(!renewal.server_id && !renewal.requested_ip, "{renewal:?}");
}
