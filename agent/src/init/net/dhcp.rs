//! A DHCPv4 client (RFC 2131's DISCOVER → OFFER → REQUEST → ACK) on a UDP
//! socket bound to one interface. The interface has no address yet, so we
//! ask servers to broadcast their replies (the BROADCAST flag).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpError {
    #[error("malformed DHCP packet: {0}")]
    Malformed(String),
    #[error("not a reply to us (xid or hardware address differs)")]
    NotOurs,
    #[error("DHCP reply without {0}")]
    Missing(&'static str),
    #[error("subnet mask {0} is not contiguous")]
    BadMask(Ipv4Addr),
    #[error("the server refused the request (DHCPNAK)")]
    Nak,
    #[error("no DHCP answer on {iface} within {secs} s")]
    Timeout { iface: String, secs: u64 },
    #[error("DHCP socket on {iface}: {reason}")]
    Socket { iface: String, reason: String },
}

/// What the client keeps from an ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: Option<u32>,
}

/// A server's reply, as far as the client cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer { address: Ipv4Addr, server: Ipv4Addr },
    Ack(Lease),
    Nak,
}

const PARAMS: [OptionCode; 5] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
];

fn base(xid: u32, mac: &[u8], kind: MessageType) -> Message {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, zero, zero, zero, zero, &mac[..mac.len().min(16)]);
    msg.set_opcode(Opcode::BootRequest)
        .set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(mac);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(PARAMS.to_vec()));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    msg
}

fn encode(msg: &Message) -> Vec<u8> {
    // Encoding an in-memory message with valid options cannot fail.
    msg.to_vec().unwrap_or_default()
}

pub fn discover(xid: u32, mac: &[u8]) -> Vec<u8> {
    encode(&base(xid, mac, MessageType::Discover))
}

/// REQUEST in SELECTING state: the offered address and the chosen server.
pub fn request(xid: u32, mac: &[u8], address: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut msg = base(xid, mac, MessageType::Request);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(address));
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    encode(&msg)
}

/// Parse a packet from port 67 and check it answers `xid` for `mac`.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8]) -> Result<Reply, DhcpError> {
    let msg = Message::decode(&mut Decoder::new(bytes))
        .map_err(|e| DhcpError::Malformed(e.to_string()))?;
    if msg.opcode() != Opcode::BootReply
        || msg.xid() != xid
        || msg.chaddr().get(..mac.len()) != Some(mac)
    {
        return Err(DhcpError::NotOurs);
    }
    let opts = msg.opts();
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => msg.siaddr(),
    };
    match opts.msg_type() {
        Some(MessageType::Offer) => Ok(Reply::Offer {
            address: nonzero(msg.yiaddr(), "an offered address (yiaddr)")?,
            server: nonzero(server, "a server identifier")?,
        }),
        Some(MessageType::Nak) => Ok(Reply::Nak),
        Some(MessageType::Ack) => {
            let mask = match opts.get(OptionCode::SubnetMask) {
                Some(DhcpOption::SubnetMask(m)) => *m,
                _ => return Err(DhcpError::Missing("a subnet mask")),
            };
            let ips = |code| match opts.get(code) {
                Some(DhcpOption::Router(r)) | Some(DhcpOption::DomainNameServer(r)) => r.clone(),
                _ => Vec::new(),
            };
            Ok(Reply::Ack(Lease {
                address: nonzero(msg.yiaddr(), "an address (yiaddr)")?,
                prefix_len: prefix_len(mask)?,
                routers: ips(OptionCode::Router),
                dns: ips(OptionCode::DomainNameServer),
                server,
                lease_secs: match opts.get(OptionCode::AddressLeaseTime) {
                    Some(DhcpOption::AddressLeaseTime(s)) => Some(*s),
                    _ => None,
                },
            }))
        }
        _ => Err(DhcpError::Missing("a known message type")),
    }
}

fn nonzero(ip: Ipv4Addr, what: &'static str) -> Result<Ipv4Addr, DhcpError> {
    if ip.is_unspecified() {
        Err(DhcpError::Missing(what))
    } else {
        Ok(ip)
    }
}

/// 255.255.255.0 → 24; holes in the mask are an error.
pub fn prefix_len(mask: Ipv4Addr) -> Result<u8, DhcpError> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(DhcpError::BadMask(mask));
    }
    Ok(ones as u8)
}

/// A UDP socket on port 68 that only sees and sends on `iface`.
fn client_socket(iface: &str) -> Result<UdpSocket, DhcpError> {
    let err = |reason: String| DhcpError::Socket {
        iface: iface.to_string(),
        reason,
    };
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| err(format!("socket: {e}")))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| err(e.to_string()))?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true).map_err(|e| err(e.to_string()))?;
    socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(iface))
        .map_err(|e| err(format!("SO_BINDTODEVICE: {e}")))?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)),
    )
    .map_err(|e| err(format!("bind to port 68: {e}")))?;
    // SAFETY: we own `fd` and hand it over.
    let std_sock = unsafe { std::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) };
    UdpSocket::from_std(std_sock).map_err(|e| err(e.to_string()))
}

/// Get a lease on `iface` (retransmitting every 2 s, as RFC 2131 suggests
/// with backoff), or time out after `budget`.
pub async fn obtain(iface: &str, mac: &[u8], budget: Duration) -> Result<Lease, DhcpError> {
    let sock = client_socket(iface)?;
    let deadline = Instant::now() + budget;
    let server_port = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
    let timeout = || DhcpError::Timeout {
        iface: iface.to_string(),
        secs: budget.as_secs(),
    };
    let io = |e: std::io::Error| DhcpError::Socket {
        iface: iface.to_string(),
        reason: e.to_string(),
    };
    let mut buf = vec![0u8; 1500];
    let mut wait = Duration::from_secs(1);
    // One xid for all retransmissions, so a slow server's offer (dnsmasq
    // pings the address first) still matches; a new one after a NAK.
    let mut xid: u32 = rand::random();
    loop {
        // SELECTING: take the first offer.
        sock.send_to(&discover(xid, mac), server_port)
            .await
            .map_err(io)?;
        debug!("{iface}: DHCPDISCOVER xid {xid:#x}");
        let round = (Instant::now() + wait).min(deadline);
        wait = (wait * 2).min(Duration::from_secs(8));
        let offer = loop {
            let Ok(got) = timeout_at(round, sock.recv_from(&mut buf)).await else {
                break None;
            };
            let (n, _) = got.map_err(io)?;
            match parse_reply(&buf[..n], xid, mac) {
                Ok(Reply::Offer { address, server }) => break Some((address, server)),
                Ok(_) | Err(DhcpError::NotOurs) => continue,
                Err(e) => debug!("{iface}: ignoring a reply: {e}"),
            }
        };
        let Some((address, server)) = offer else {
            if Instant::now() >= deadline {
                return Err(timeout());
            }
            continue;
        };
        info!("{iface}: offered {address} by {server}");
        // REQUESTING: the ACK (or NAK) for this offer.
        sock.send_to(&request(xid, mac, address, server), server_port)
            .await
            .map_err(io)?;
        let round = (Instant::now() + Duration::from_secs(4)).min(deadline);
        loop {
            let Ok(got) = timeout_at(round, sock.recv_from(&mut buf)).await else {
                break;
            };
            let (n, _) = got.map_err(io)?;
            match parse_reply(&buf[..n], xid, mac) {
                Ok(Reply::Ack(lease)) => return Ok(lease),
                Ok(Reply::Nak) => {
                    info!("{iface}: DHCPNAK, starting over");
                    xid = rand::random();
                    break;
                }
                Ok(Reply::Offer { .. }) | Err(DhcpError::NotOurs) => continue,
                Err(e) => debug!("{iface}: ignoring a reply: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(timeout());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr as Ip;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A server's reply to `xid`, built with dhcproto as a server would.
    fn reply(xid: u32, kind: MessageType, opts: Vec<DhcpOption>) -> Vec<u8> {
        let z = Ip::UNSPECIFIED;
        let mut msg = Message::new_with_id(xid, z, Ip::new(10, 0, 2, 15), z, z, &MAC);
        msg.set_opcode(Opcode::BootReply);
        msg.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in opts {
            msg.opts_mut().insert(o);
        }
        msg.to_vec().unwrap()
    }

    #[test]
    fn discover_and_request_carry_what_servers_need() {
        let d = Message::decode(&mut Decoder::new(&discover(7, &MAC))).unwrap();
        assert_eq!(d.opcode(), Opcode::BootRequest);
        assert_eq!(d.xid(), 7);
        assert_eq!(d.chaddr(), &MAC);
        assert!(d.flags().broadcast(), "replies must be broadcast");
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        match d.opts().get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(p)) => {
                assert!(p.contains(&OptionCode::SubnetMask) && p.contains(&OptionCode::Router))
            }
            other => panic!("no parameter list: {other:?}"),
        }
        let r = Message::decode(&mut Decoder::new(&request(
            7,
            &MAC,
            Ip::new(10, 0, 2, 15),
            Ip::new(10, 0, 2, 2),
        )))
        .unwrap();
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ip::new(10, 0, 2, 15)))
        );
        assert_eq!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ip::new(10, 0, 2, 2)))
        );
        assert_eq!(r.ciaddr(), Ip::UNSPECIFIED);
    }

    #[test]
    fn ack_becomes_a_lease() {
        let bytes = reply(
            9,
            MessageType::Ack,
            vec![
                DhcpOption::SubnetMask(Ip::new(255, 255, 255, 0)),
                DhcpOption::Router(vec![Ip::new(10, 0, 2, 2)]),
                DhcpOption::DomainNameServer(vec![Ip::new(10, 0, 2, 3)]),
                DhcpOption::ServerIdentifier(Ip::new(10, 0, 2, 2)),
                DhcpOption::AddressLeaseTime(86400),
            ],
        );
        assert_eq!(
            parse_reply(&bytes, 9, &MAC),
            Ok(Reply::Ack(Lease {
                address: Ip::new(10, 0, 2, 15),
                prefix_len: 24,
                routers: vec![Ip::new(10, 0, 2, 2)],
                dns: vec![Ip::new(10, 0, 2, 3)],
                server: Ip::new(10, 0, 2, 2),
                lease_secs: Some(86400),
            }))
        );
    }

    #[test]
    fn offers_naks_and_strangers() {
        let offer = reply(
            3,
            MessageType::Offer,
            vec![DhcpOption::ServerIdentifier(Ip::new(192, 168, 1, 1))],
        );
        assert_eq!(
            parse_reply(&offer, 3, &MAC),
            Ok(Reply::Offer {
                address: Ip::new(10, 0, 2, 15),
                server: Ip::new(192, 168, 1, 1)
            })
        );
        assert_eq!(parse_reply(&offer, 4, &MAC), Err(DhcpError::NotOurs));
        assert_eq!(
            parse_reply(&offer, 3, &[1, 2, 3, 4, 5, 6]),
            Err(DhcpError::NotOurs)
        );
        assert_eq!(
            parse_reply(&reply(3, MessageType::Nak, vec![]), 3, &MAC),
            Ok(Reply::Nak)
        );
        // Our own broadcast DISCOVER comes back on the socket: not a reply.
        assert_eq!(
            parse_reply(&discover(3, &MAC), 3, &MAC),
            Err(DhcpError::NotOurs)
        );
    }

    #[test]
    fn bad_replies_are_clear_errors() {
        assert!(matches!(
            parse_reply(&[1, 2, 3], 1, &MAC),
            Err(DhcpError::Malformed(_))
        ));
        let no_mask = reply(5, MessageType::Ack, vec![]);
        assert_eq!(
            parse_reply(&no_mask, 5, &MAC),
            Err(DhcpError::Missing("a subnet mask"))
        );
        let holey = reply(
            5,
            MessageType::Ack,
            vec![DhcpOption::SubnetMask(Ip::new(255, 0, 255, 0))],
        );
        assert_eq!(
            parse_reply(&holey, 5, &MAC),
            Err(DhcpError::BadMask(Ip::new(255, 0, 255, 0)))
        );
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_len(Ip::new(255, 255, 255, 255)), Ok(32));
        assert_eq!(prefix_len(Ip::new(255, 255, 240, 0)), Ok(20));
        assert_eq!(prefix_len(Ip::new(0, 0, 0, 0)), Ok(0));
    }
}
