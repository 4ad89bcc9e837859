//! DHCPv4 on the wire (RFC 2131): the client's packets, the server's
//! replies parsed into types, and the exchanges over a UDP socket bound to
//! one interface: DISCOVER → OFFER → REQUEST → ACK to get a lease, and the
//! REQUEST with `ciaddr` that renews or rebinds it. The lease's life (T1,
//! T2, expiry) is in `v4.rs`. Before the interface has an address, servers
//! are asked to broadcast their replies (the BROADCAST flag).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn};

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
    /// `detail` says what did come back (bad replies, NAKs), if anything.
    #[error("no DHCP answer on {iface} within {secs} s{detail}")]
    Timeout {
        iface: String,
        secs: u64,
        detail: String,
    },
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
    /// Option 51; `None` (no option) and 0xffffffff never expire.
    pub lease_secs: Option<u32>,
    /// Option 58 (T1).
    pub renew_secs: Option<u32>,
    /// Option 59 (T2).
    pub rebind_secs: Option<u32>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 119 (RFC 3397), without trailing dots.
    pub search: Vec<String>,
}

/// A server's reply, as far as the client cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer { address: Ipv4Addr, server: Ipv4Addr },
    Ack(Lease),
    Nak,
}

const PARAMS: [OptionCode; 9] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::DomainSearch,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::ServerIdentifier,
];

fn base(xid: u32, mac: &[u8], kind: MessageType, broadcast: bool) -> Message {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, zero, zero, zero, zero, &mac[..mac.len().min(16)]);
    msg.set_opcode(Opcode::BootRequest);
    if broadcast {
        msg.set_flags(Flags::default().set_broadcast());
    }
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
    encode(&base(xid, mac, MessageType::Discover, true))
}

/// REQUEST in SELECTING state: the offered address and the chosen server.
pub fn request(xid: u32, mac: &[u8], address: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut msg = base(xid, mac, MessageType::Request, true);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(address));
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    encode(&msg)
}

/// REQUEST in RENEWING (unicast to the server) or REBINDING (broadcast)
/// state, RFC 2131 table 4: `ciaddr` is the leased address, and neither
/// the server identifier nor the requested address is sent. The address
/// is configured, so replies can come unicast: no BROADCAST flag.
pub fn request_extend(xid: u32, mac: &[u8], ciaddr: Ipv4Addr) -> Vec<u8> {
    let mut msg = base(xid, mac, MessageType::Request, false);
    msg.set_ciaddr(ciaddr);
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
    let secs = |code| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
        ) => Some(*s),
        _ => None,
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
            let domain = match opts.get(OptionCode::DomainName) {
                Some(DhcpOption::DomainName(d)) => domain_name(d),
                _ => None,
            };
            let search = match opts.get(OptionCode::DomainSearch) {
                Some(DhcpOption::DomainSearch(names)) => names
                    .iter()
                    .filter_map(|n| domain_name(&n.to_utf8()))
                    .collect(),
                _ => Vec::new(),
            };
            Ok(Reply::Ack(Lease {
                address: nonzero(msg.yiaddr(), "an address (yiaddr)")?,
                prefix_len: prefix_len(mask)?,
                routers: ips(OptionCode::Router),
                dns: ips(OptionCode::DomainNameServer),
                server,
                lease_secs: secs(OptionCode::AddressLeaseTime),
                renew_secs: secs(OptionCode::Renewal),
                rebind_secs: secs(OptionCode::Rebinding),
                domain,
                search,
            }))
        }
        _ => Err(DhcpError::Missing("a known message type")),
    }
}

/// A domain as resolv.conf can hold it: printable, no spaces, no trailing
/// dot; anything else from the wire is dropped.
fn domain_name(raw: &str) -> Option<String> {
    let name = raw.trim_end_matches('.');
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    ok.then(|| name.to_string())
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
    super::udp::bound_to(iface, super::udp::ClientPort::V4(68)).map_err(|reason| {
        DhcpError::Socket {
            iface: iface.to_string(),
            reason,
        }
    })
}

/// What came back in one round that was not what we waited for; turned
/// into one warning per round (a flood of garbage must not flood the log)
/// and into the timeout's detail.
#[derive(Default)]
struct Unusable {
    bad: u32,
    naks: u32,
    last: Option<String>,
}

impl Unusable {
    fn bad(&mut self, iface: &str, from: SocketAddr, e: &DhcpError, round_first: &mut bool) {
        self.bad += 1;
        self.last = Some(format!("{e} (from {from})"));
        if std::mem::take(round_first) {
            warn!("{iface}: ignoring a bad DHCP reply from {from}: {e}");
        } else {
            debug!("{iface}: ignoring a bad DHCP reply from {from}: {e}");
        }
    }

    fn detail(&self) -> String {
        let mut parts = Vec::new();
        if self.naks > 0 {
            parts.push(format!("{} DHCPNAK", self.naks));
        }
        if let (n @ 1.., Some(last)) = (self.bad, &self.last) {
            parts.push(format!("{n} unusable replies, the last: {last}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
        }
    }
}

/// A lease acknowledged by a server, and when its REQUEST went out (T1,
/// T2 and expiry count from then, RFC 2131 §4.4.1).
#[derive(Debug, Clone)]
pub struct Acked {
    pub lease: Lease,
    pub sent: Instant,
}

/// The outcome of one RENEWING/REBINDING transmission.
#[derive(Debug)]
pub enum Extended {
    Ack(Acked),
    Nak,
    /// Nothing usable before the round's end.
    NoAnswer,
}

/// One interface's DHCP socket, with its fixed 1500-byte receive buffer
/// (a longer datagram is truncated, then fails to parse).
pub struct Client {
    iface: String,
    mac: Vec<u8>,
    sock: UdpSocket,
    buf: Box<[u8; 1500]>,
}

impl Client {
    pub fn new(iface: &str, mac: &[u8]) -> Result<Self, DhcpError> {
        Ok(Self {
            iface: iface.to_string(),
            mac: mac.to_vec(),
            sock: client_socket(iface)?,
            buf: Box::new([0; 1500]),
        })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    fn io(&self, e: std::io::Error) -> DhcpError {
        DhcpError::Socket {
            iface: self.iface.clone(),
            reason: e.to_string(),
        }
    }

    /// Wait until `until` for a reply to `xid`; bad ones are counted.
    async fn recv(
        &mut self,
        xid: u32,
        until: Instant,
        unusable: &mut Unusable,
        round_first: &mut bool,
    ) -> Result<Option<Reply>, DhcpError> {
        loop {
            let Ok(got) = timeout_at(until, self.sock.recv_from(&mut self.buf[..])).await else {
                return Ok(None);
            };
            let (n, from) = got.map_err(|e| self.io(e))?;
            match parse_reply(&self.buf[..n], xid, &self.mac) {
                Ok(reply) => return Ok(Some(reply)),
                Err(DhcpError::NotOurs) => continue,
                Err(e) => unusable.bad(&self.iface, from, &e, round_first),
            }
        }
    }

    /// Get a lease (INIT → SELECTING → REQUESTING), retransmitting with
    /// RFC 2131's doubling backoff (1, 2, 4, 8, 8... s), or time out after
    /// `budget`.
    pub async fn obtain(&mut self, budget: Duration) -> Result<Acked, DhcpError> {
        let deadline = Instant::now() + budget;
        let to_servers = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
        let mut unusable = Unusable::default();
        let mut wait = Duration::from_secs(1);
        // One xid for all retransmissions, so a slow server's offer (dnsmasq
        // pings the address first) still matches; a new one after a NAK.
        let mut xid: u32 = rand::random();
        let iface = self.iface.clone();
        loop {
            // SELECTING: take the first offer.
            let discover = discover(xid, &self.mac);
            self.sock
                .send_to(&discover, to_servers)
                .await
                .map_err(|e| self.io(e))?;
            debug!("{iface}: DHCPDISCOVER xid {xid:#x}");
            let round = (Instant::now() + wait).min(deadline);
            wait = (wait * 2).min(Duration::from_secs(8));
            let mut first = true;
            let offer = loop {
                match self.recv(xid, round, &mut unusable, &mut first).await? {
                    Some(Reply::Offer { address, server }) => break Some((address, server)),
                    Some(Reply::Nak) => {
                        unusable.naks += 1;
                        warn!("{iface}: DHCPNAK in answer to DHCPDISCOVER, ignored");
                    }
                    Some(Reply::Ack(_)) => debug!("{iface}: unsolicited DHCPACK ignored"),
                    None => break None,
                }
            };
            if let Some((address, server)) = offer {
                info!("{iface}: offered {address} by {server}");
                // REQUESTING: the ACK (or NAK) for this offer.
                let sent = Instant::now();
                self.sock
                    .send_to(&request(xid, &self.mac, address, server), to_servers)
                    .await
                    .map_err(|e| self.io(e))?;
                let round = (sent + Duration::from_secs(4)).min(deadline);
                let mut first = true;
                loop {
                    match self.recv(xid, round, &mut unusable, &mut first).await? {
                        Some(Reply::Ack(lease)) => return Ok(Acked { lease, sent }),
                        Some(Reply::Nak) => {
                            unusable.naks += 1;
                            warn!(
                                "{iface}: DHCPNAK from {server} for {address}; starting over \
                                 with DHCPDISCOVER in {} s",
                                wait.as_secs()
                            );
                            // Not at once: a server that NAKs everything
                            // would otherwise get a packet storm.
                            tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
                            xid = rand::random();
                            break;
                        }
                        Some(Reply::Offer { .. }) => continue,
                        None => break,
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(DhcpError::Timeout {
                    iface,
                    secs: budget.as_secs(),
                    detail: unusable.detail(),
                });
            }
        }
    }

    /// One RENEWING (`to` = the server, unicast) or REBINDING (`to` =
    /// broadcast) transmission for `ciaddr`, waiting for its answer until
    /// `until`.
    pub async fn extend(
        &mut self,
        ciaddr: Ipv4Addr,
        to: Ipv4Addr,
        until: Instant,
    ) -> Result<Extended, DhcpError> {
        let xid: u32 = rand::random();
        let sent = Instant::now();
        self.sock
            .send_to(
                &request_extend(xid, &self.mac, ciaddr),
                SocketAddr::from((to, 67)),
            )
            .await
            .map_err(|e| self.io(e))?;
        debug!(
            "{}: DHCPREQUEST for {ciaddr} to {to} xid {xid:#x}",
            self.iface
        );
        let mut unusable = Unusable::default();
        let mut first = true;
        loop {
            match self.recv(xid, until, &mut unusable, &mut first).await? {
                Some(Reply::Ack(lease)) => return Ok(Extended::Ack(Acked { lease, sent })),
                Some(Reply::Nak) => return Ok(Extended::Nak),
                Some(Reply::Offer { .. }) => continue,
                None => return Ok(Extended::NoAnswer),
            }
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
    fn renew_and_rebind_requests_follow_rfc2131_table_4() {
        let r = Message::decode(&mut Decoder::new(&request_extend(
            11,
            &MAC,
            Ip::new(10, 0, 2, 15),
        )))
        .unwrap();
        assert_eq!(r.opcode(), Opcode::BootRequest);
        assert_eq!(r.xid(), 11);
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.ciaddr(), Ip::new(10, 0, 2, 15), "ciaddr MUST be set");
        assert_eq!(r.opts().get(OptionCode::ServerIdentifier), None);
        assert_eq!(r.opts().get(OptionCode::RequestedIpAddress), None);
        assert!(
            !r.flags().broadcast(),
            "the client can take unicast replies"
        );
        assert_eq!(r.chaddr(), &MAC);
        match r.opts().get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(p)) => assert!(
                p.contains(&OptionCode::Renewal)
                    && p.contains(&OptionCode::Rebinding)
                    && p.contains(&OptionCode::DomainSearch)
            ),
            other => panic!("no parameter list: {other:?}"),
        }
    }

    #[test]
    fn ack_carries_timers_and_search_domains() {
        let bytes = reply(
            9,
            MessageType::Ack,
            vec![
                DhcpOption::SubnetMask(Ip::new(255, 255, 255, 0)),
                DhcpOption::AddressLeaseTime(120),
                DhcpOption::Renewal(10),
                DhcpOption::Rebinding(30),
                DhcpOption::DomainName("lab.example.".into()),
                DhcpOption::DomainSearch(vec![
                    "a.example".parse().unwrap(),
                    "b.example.".parse().unwrap(),
                ]),
            ],
        );
        let Ok(Reply::Ack(l)) = parse_reply(&bytes, 9, &MAC) else {
            panic!("not an ACK");
        };
        assert_eq!(
            (l.lease_secs, l.renew_secs, l.rebind_secs),
            (Some(120), Some(10), Some(30))
        );
        assert_eq!(l.domain.as_deref(), Some("lab.example"));
        assert_eq!(l.search, vec!["a.example", "b.example"]);
        // A domain resolv.conf cannot hold is dropped, not written.
        let bytes = reply(
            9,
            MessageType::Ack,
            vec![
                DhcpOption::SubnetMask(Ip::new(255, 255, 255, 0)),
                DhcpOption::DomainName("evil\nnameserver 6.6.6.6".into()),
            ],
        );
        let Ok(Reply::Ack(l)) = parse_reply(&bytes, 9, &MAC) else {
            panic!("not an ACK");
        };
        assert_eq!(l.domain, None);
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
                renew_secs: None,
                rebind_secs: None,
                domain: None,
                search: Vec::new(),
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
