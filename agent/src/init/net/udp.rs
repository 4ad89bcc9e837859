//! The DHCP clients' sockets: UDP on a fixed client port that only sees
//! and sends on one interface (SO_BINDTODEVICE), so that each NIC's client
//! gets its own server's replies even before the NIC has an address.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};
use tokio::net::UdpSocket;

/// Which family, on which client port.
#[derive(Debug, Clone, Copy)]
pub enum ClientPort {
    /// DHCPv4 (68): may send to the broadcast address.
    V4(u16),
    /// DHCPv6 (546): IPv6 only.
    V6(u16),
}

/// The socket, or why not (for the caller's own error type).
pub fn bound_to(iface: &str, port: ClientPort) -> Result<UdpSocket, String> {
    let family = match port {
        ClientPort::V4(_) => AddressFamily::Inet,
        ClientPort::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| e.to_string())?;
    match port {
        ClientPort::V4(_) => socket::setsockopt(&fd, sockopt::Broadcast, &true),
        ClientPort::V6(_) => socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true),
    }
    .map_err(|e| e.to_string())?;
    socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(iface))
        .map_err(|e| format!("SO_BINDTODEVICE: {e}"))?;
    let bound = match port {
        ClientPort::V4(p) => socket::bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p)),
        ),
        ClientPort::V6(p) => socket::bind(
            fd.as_raw_fd(),
            &SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, p, 0, 0)),
        ),
    };
    bound.map_err(|e| {
        let (ClientPort::V4(p) | ClientPort::V6(p)) = port;
        format!("bind to port {p}: {e}")
    })?;
    // SAFETY: we own `fd` and hand it over.
    let std_sock = unsafe { std::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) };
    UdpSocket::from_std(std_sock).map_err(|e| e.to_string())
}
