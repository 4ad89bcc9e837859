//! LLDP for the inventory (`ipa-collect-lldp`): listen on each NIC for one
//! LLDP frame from the switch and report its TLVs as `[[type, "hex"], ...]`
//! (IPA's `netutils.get_lldp_info` + `collect_lldp_data`).
//!
//! IPA puts each NIC in promiscuous mode; here each socket instead joins the
//! three LLDP multicast groups (`PACKET_ADD_MEMBERSHIP`), which the kernel
//! drops with the socket, so no interface flag is left changed if the agent
//! dies mid-listen.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tracing::{info, warn};

pub const LLDP_ETHERTYPE: u16 = 0x88cc;
/// Nearest bridge, nearest non-TPMR bridge, nearest customer bridge.
const LLDP_GROUPS: [[u8; 6]; 3] = [
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e],
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x03],
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00],
];
const ETH_HEADER: usize = 14;

/// One TLV: type and value bytes.
pub type Tlv = (u8, Vec<u8>);

/// IPA's `_parse_tlv`: 7-bit type, 9-bit length, value; a short trailer is
/// dropped. (Like IPA, it does not stop at the End TLV.)
pub fn parse_tlvs(mut buf: &[u8]) -> Vec<Tlv> {
    let mut out = Vec::new();
    while buf.len() >= 2 {
        let header = u16::from_be_bytes([buf[0], buf[1]]);
        let kind = (header >> 9) as u8;
        let len = (header & 0x01ff) as usize;
        let end = (2 + len).min(buf.len());
        out.push((kind, buf[2..end].to_vec()));
        buf = &buf[end..];
    }
    if !buf.is_empty() {
        warn!(trailing = ?buf, "Trailing byte received in an LLDP package");
    }
    out
}

/// A received frame's TLVs (after the Ethernet header).
pub fn parse_frame(frame: &[u8]) -> Vec<Tlv> {
    if frame.len() < ETH_HEADER {
        return Vec::new();
    }
    parse_tlvs(&frame[ETH_HEADER..])
}

/// TLVs as the inventory carries them: `[[type, "hex"], ...]`.
pub fn to_json(tlvs: &[Tlv]) -> serde_json::Value {
    serde_json::Value::Array(
        tlvs.iter()
            .map(|(kind, data)| {
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                serde_json::json!([kind, hex])
            })
            .collect(),
    )
}

/// An AF_PACKET socket receiving only LLDP frames on one interface.
pub fn open_socket(ifname: &str) -> io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let proto = LLDP_ETHERTYPE.to_be();
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            proto as libc::c_int,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as libc::c_int;
    // SAFETY: addr is a valid sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    for group in LLDP_GROUPS {
        // SAFETY: packet_mreq is plain data.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = index as libc::c_int;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as libc::c_ushort;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&group);
        // SAFETY: mreq is a valid packet_mreq of the given size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(sock)
}

/// Listen on every interface at once until each has sent one LLDP frame or
/// `timeout` passes. Interfaces that stayed silent get an empty list; ones
/// that could not be listened on are left out (logged).
pub fn collect(interfaces: &[String], timeout: Duration) -> BTreeMap<String, Vec<Tlv>> {
    let mut out = BTreeMap::new();
    let mut waiting: Vec<(String, OwnedFd)> = Vec::new();
    for name in interfaces.iter().filter(|n| n.as_str() != "lo") {
        match open_socket(name) {
            Ok(sock) => waiting.push((name.clone(), sock)),
            Err(e) => warn!(interface = %name, error = %e, "cannot listen for LLDP"),
        }
    }
    let deadline = Instant::now() + timeout;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        info!(interfaces = ?waiting.iter().map(|w| &w.0).collect::<Vec<_>>(), ?left, "Waiting on LLDP info");
        let mut fds: Vec<libc::pollfd> = waiting
            .iter()
            .map(|(_, s)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: fds is a valid array of fds.len() pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            warn!(error = %e, "waiting for LLDP failed");
            break;
        }
        for i in (0..fds.len()).rev() {
            if fds[i].revents == 0 {
                continue;
            }
            let (name, sock) = waiting.remove(i);
            let mut frame = [0u8; 1600];
            // SAFETY: recv writes at most frame.len() bytes into frame.
            let n =
                unsafe { libc::recv(sock.as_raw_fd(), frame.as_mut_ptr().cast(), frame.len(), 0) };
            if n < 0 {
                warn!(interface = %name, error = %io::Error::last_os_error(), "reading an LLDP frame failed");
                continue;
            }
            info!(interface = %name, "Found LLDP info");
            out.insert(name, parse_frame(&frame[..n as usize]));
        }
    }
    for (name, _) in waiting {
        warn!(interface = %name, "LLDP timed out");
        out.insert(name, Vec::new());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlvs_parse_like_ipa() {
        // Chassis ID (MAC subtype), TTL 120, End, and a stray byte.
        let buf = [
            0x02, 0x07, 0x04, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 0x06, 0x02, 0x00, 0x78, 0x00,
            0x00, 0xff,
        ];
        let tlvs = parse_tlvs(&buf);
        assert_eq!(
            to_json(&tlvs),
            serde_json::json!([[1, "04525400000001"], [3, "0078"], [0, ""]])
        );
        // A length running past the buffer takes what is there.
        assert_eq!(
            parse_tlvs(&[0x0a, 0x05, b'a', b'b']),
            vec![(5, b"ab".to_vec())]
        );
        assert!(parse_frame(&[0u8; 10]).is_empty());
    }
}
