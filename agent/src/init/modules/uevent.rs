//! Kernel uevents (`NETLINK_KOBJECT_UEVENT`): what udev listens to. PID 1
//! opens the socket before coldplug so that no device added meanwhile is
//! missed, and afterwards loads drivers for every device that appears
//! (a disk attached late, USB enumeration, SCSI targets found by an async
//! scan) for as long as the ramdisk runs.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

/// The kernel's uevent buffer is 2 KiB (UEVENT_BUFFER_SIZE); a message
/// longer than this is truncated and still parsed.
const RECV_BYTES: usize = 8192;
/// Socket buffer for bursts (a controller with hundreds of disks).
const SOCKET_BUFFER: usize = 4 << 20;

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    /// Relative to /sys (`/devices/pci0000:00/...`).
    pub devpath: String,
    pub vars: BTreeMap<String, String>,
}

impl Uevent {
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }
}

/// `add@/devices/...\0ACTION=add\0DEVPATH=...\0MODALIAS=...\0`; `None`
/// for anything else (udev's own `libudev` messages, garbage).
pub fn parse(buf: &[u8]) -> Option<Uevent> {
    let mut fields = buf.split(|b| *b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    if action.is_empty() || !devpath.starts_with('/') {
        return None;
    }
    let vars = fields
        .filter_map(|f| std::str::from_utf8(f).ok())
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Uevent {
        action: action.to_string(),
        devpath: devpath.to_string(),
        vars,
    })
}

/// A socket bound to the kernel's uevent multicast group.
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // Best effort: the default buffer still works, with a risk of
        // dropping events in a burst (coldplug's rescans cover those).
        let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
        // Group 1: the kernel's events (udev re-broadcasts on group 2).
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
        Ok(Self { fd })
    }

    /// The next event (blocks).
    pub fn next(&self) -> io::Result<Option<Uevent>> {
        let mut buf = vec![0u8; RECV_BYTES];
        let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        Ok(parse(&buf[..n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_add_event() {
        let msg = b"add@/devices/pci0000:00/0000:00:04.0/virtio1\0ACTION=add\0\
DEVPATH=/devices/pci0000:00/0000:00:04.0/virtio1\0SUBSYSTEM=virtio\0\
MODALIAS=virtio:d00000002v00001AF4\0SEQNUM=1234\0";
        let ev = parse(msg).unwrap();
        assert_eq!(ev.action, "add");
        assert_eq!(ev.devpath, "/devices/pci0000:00/0000:00:04.0/virtio1");
        assert_eq!(ev.var("MODALIAS"), Some("virtio:d00000002v00001AF4"));
        assert_eq!(ev.var("SUBSYSTEM"), Some("virtio"));
        assert_eq!(ev.var("DRIVER"), None);
    }

    #[test]
    fn firmware_request_event() {
        let msg = b"add@/devices/pci0000:00/0000:00:05.0/firmware/0000:00:05.0\0ACTION=add\0\
SUBSYSTEM=firmware\0FIRMWARE=e100/d101m_ucode.bin\0TIMEOUT=60\0";
        let ev = parse(msg).unwrap();
        assert_eq!(ev.var("SUBSYSTEM"), Some("firmware"));
        assert_eq!(ev.var("FIRMWARE"), Some("e100/d101m_ucode.bin"));
    }

    #[test]
    fn other_messages_are_ignored() {
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"\0\0"), None);
        assert_eq!(parse(b"add@relative\0"), None);
        assert_eq!(parse(b"@/devices\0"), None);
        assert_eq!(parse(&[0xff, 0xfe, b'@', b'/']), None);
    }
}
