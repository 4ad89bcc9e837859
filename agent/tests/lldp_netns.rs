//! LLDP capture for real: a private network namespace with two veth pairs,
//! a raw LLDP frame sent from one peer, and `lldp::collect` listening on
//! the other ends. Needs root; never touches the host's interfaces.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_agent::hardware::inventory::lldp;

struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("ferrite-lldp-{}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Self(name);
        for (a, b) in [("veth0", "veth1"), ("veth2", "veth3")] {
            ip(&[
                "-n", &ns.0, "link", "add", a, "type", "veth", "peer", "name", b,
            ]);
            ip(&["-n", &ns.0, "link", "set", a, "up"]);
            ip(&["-n", &ns.0, "link", "set", b, "up"]);
        }
        ns
    }

    /// Move the calling thread into the namespace (setns is per thread).
    fn enter(&self) {
        let f = File::open(format!("/run/netns/{}", self.0)).expect("open netns");
        // SAFETY: a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let header = ((kind as u16) << 9) | value.len() as u16;
    let mut out = header.to_be_bytes().to_vec();
    out.extend_from_slice(value);
    out
}

/// What a switch sends: chassis (MAC), port (interface name), TTL, system
/// name, End.
fn lldp_frame() -> Vec<u8> {
    let mut f = vec![
        0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e, 0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc,
    ];
    f.extend_from_slice(&lldp::LLDP_ETHERTYPE.to_be_bytes());
    f.extend(tlv(1, &[4, 0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc]));
    f.extend(tlv(2, b"\x05Ethernet1/7"));
    f.extend(tlv(3, &[0, 120]));
    f.extend(tlv(5, b"switch-a.example"));
    f.extend(tlv(0, &[]));
    f
}

/// Send the frame out of `ifname` with a raw socket, every 100 ms until told to stop.
fn send_until(ifname: &str, stop: &AtomicBool) {
    let cname = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: plain libc calls on values owned here.
    unsafe {
        let index = libc::if_nametoindex(cname.as_ptr());
        assert_ne!(index, 0);
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        let frame = lldp_frame();
        while !stop.load(Ordering::Relaxed) {
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(
                n,
                frame.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        libc::close(fd);
    }
}

#[test]
fn captures_a_real_lldp_frame_and_times_out_on_a_silent_link() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (network namespaces)"
    );
    let ns = Arc::new(Netns::new());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (ns, stop) = (ns.clone(), stop.clone());
        std::thread::spawn(move || {
            ns.enter();
            send_until("veth1", &stop);
        })
    };
    let listener = {
        let ns = ns.clone();
        std::thread::spawn(move || {
            ns.enter();
            let started = Instant::now();
            let names = ["veth0", "veth2", "nosuch0", "lo"].map(String::from);
            let found = lldp::collect(&names, Duration::from_secs(3));
            (found, started.elapsed())
        })
    };
    let (found, elapsed) = listener.join().expect("listener");
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender");

    let veth0 = lldp::to_json(&found["veth0"]);
    assert_eq!(
        veth0,
        serde_json::json!([
            [1, "04020000aabbcc"],
            [2, "0545746865726e6574312f37"],
            [3, "0078"],
            [5, "7377697463682d612e6578616d706c65"],
            [0, ""]
        ])
    );
    assert_eq!(found["veth2"], Vec::new(), "silent link: empty list");
    assert!(!found.contains_key("nosuch0") && !found.contains_key("lo"));
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(6),
        "waited for the silent link until the timeout: {elapsed:?}"
    );
    drop(ns);
}
