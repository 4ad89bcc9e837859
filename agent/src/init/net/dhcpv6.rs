//! A stateful DHCPv6 client (RFC 8415): SOLICIT → ADVERTISE → REQUEST →
//! REPLY for one IA_NA, then RENEW at T1 and REBIND at T2. The codec is
//! dhcproto's; this module builds and checks messages and runs the
//! exchanges with the RFC's retransmission rules, every wait bounded.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use dhcproto::v6::{
    DhcpOption, IAAddr, Message, MessageType, OptionCode, Status, StatusCode, IANA, ORO,
};
use dhcproto::{Decodable, Decoder, Encodable};

use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn};

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
/// All_DHCP_Relay_Agents_and_Servers.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// Lifetimes of 0xffffffff never end.
pub const INFINITY: u32 = u32::MAX;
/// Bigger replies are cut, and then fail to decode (a clear error).
const MAX_MESSAGE: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Dhcp6Error {
    #[error("malformed DHCPv6 message: {0}")]
    Malformed(String),
    #[error("not a reply to us (transaction or client id differs)")]
    NotOurs,
    #[error("DHCPv6 {0} without {1}")]
    Missing(&'static str, &'static str),
    #[error("the DHCPv6 server says {status:?}: {msg}")]
    Status { status: Status, msg: String },
    #[error("no DHCPv6 answer on {iface} within {secs} s")]
    Timeout { iface: String, secs: u64 },
    #[error("DHCPv6 socket on {iface}: {reason}")]
    Socket { iface: String, reason: String },
}

/// Who we are to the server: DUID-LL (type 3, hardware type 1) from the
/// MAC, and an IAID from its last four bytes (stable across boots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    pub duid: Vec<u8>,
    pub iaid: u32,
}

impl ClientId {
    pub fn from_mac(mac: &[u8]) -> Self {
        let mut duid = vec![0, 3, 0, 1];
        duid.extend_from_slice(mac);
        let mut tail = [0u8; 4];
        let n = mac.len().min(4);
        tail[4 - n..].copy_from_slice(&mac[mac.len() - n..]);
        Self {
            duid,
            iaid: u32::from_be_bytes(tail),
        }
    }
}

/// One address of the IA_NA, with its lifetimes in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IaAddress {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
}

/// What the client keeps from an ADVERTISE or a REPLY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6 {
    pub server_id: Vec<u8>,
    pub preference: u8,
    pub addresses: Vec<IaAddress>,
    /// Seconds from now; already defaulted when the server sent 0.
    pub t1: u32,
    pub t2: u32,
    pub dns: Vec<Ipv6Addr>,
    pub search: Vec<String>,
}

impl Lease6 {
    /// The shortest valid lifetime (when the lease is gone).
    pub fn valid(&self) -> u32 {
        self.addresses.iter().map(|a| a.valid).min().unwrap_or(0)
    }
}

/// The client's message kinds (Confirm, Release, Decline and
/// Information-request are not needed in a ramdisk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing<'a> {
    Solicit,
    Request(&'a Lease6),
    Renew(&'a Lease6),
    Rebind(&'a Lease6),
}

impl Outgoing<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Outgoing::Solicit => "SOLICIT",
            Outgoing::Request(_) => "REQUEST",
            Outgoing::Renew(_) => "RENEW",
            Outgoing::Rebind(_) => "REBIND",
        }
    }
}

/// Encode one client message; `elapsed` is in hundredths of a second since
/// the exchange began (RFC 8415 §21.9).
pub fn build(kind: &Outgoing, xid: u32, id: &ClientId, elapsed: Duration) -> Vec<u8> {
    let (msg_type, lease) = match kind {
        Outgoing::Solicit => (MessageType::Solicit, None),
        Outgoing::Request(l) => (MessageType::Request, Some(*l)),
        Outgoing::Renew(l) => (MessageType::Renew, Some(*l)),
        Outgoing::Rebind(l) => (MessageType::Rebind, Some(*l)),
    };
    let mut msg = Message::new(msg_type);
    msg.set_xid_num(xid & 0x00ff_ffff);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::ClientId(id.duid.clone()));
    let cs = (elapsed.as_millis() / 10).min(u16::MAX as u128) as u16;
    opts.insert(DhcpOption::ElapsedTime(cs));
    opts.insert(DhcpOption::ORO(ORO {
        opts: vec![OptionCode::DomainNameServers, OptionCode::DomainSearchList],
    }));
    // Rebind goes to any server: no server id.
    if let Some(l) = lease {
        if !matches!(kind, Outgoing::Rebind(_)) {
            opts.insert(DhcpOption::ServerId(l.server_id.clone()));
        }
    }
    let mut ia = IANA {
        id: id.iaid,
        t1: 0,
        t2: 0,
        opts: Default::default(),
    };
    for a in lease.map(|l| l.addresses.as_slice()).unwrap_or_default() {
        // Lifetimes in a client's IA Address are ignored by servers.
        ia.opts.insert(DhcpOption::IAAddr(IAAddr {
            addr: a.addr,
            preferred_life: 0,
            valid_life: 0,
            opts: Default::default(),
        }));
    }
    opts.insert(DhcpOption::IANA(ia));
    // Encoding an in-memory message with valid options cannot fail.
    msg.to_vec().unwrap_or_default()
}

fn status_error(code: &StatusCode) -> Option<Dhcp6Error> {
    (code.status != Status::Success).then(|| Dhcp6Error::Status {
        status: code.status,
        msg: code.msg.clone(),
    })
}

/// Parse a server message and check it answers `xid` for `id`. Returns
/// the message type (Advertise or Reply) and the lease it carries.
pub fn parse(bytes: &[u8], xid: u32, id: &ClientId) -> Result<(MessageType, Lease6), Dhcp6Error> {
    let msg = Message::decode(&mut Decoder::new(bytes))
        .map_err(|e| Dhcp6Error::Malformed(e.to_string()))?;
    let kind = msg.msg_type();
    if !matches!(kind, MessageType::Advertise | MessageType::Reply)
        || msg.xid_num() != (xid & 0x00ff_ffff)
    {
        return Err(Dhcp6Error::NotOurs);
    }
    let what = if kind == MessageType::Reply {
        "REPLY"
    } else {
        "ADVERTISE"
    };
    let opts = msg.opts();
    match opts.get(OptionCode::ClientId) {
        Some(DhcpOption::ClientId(d)) if *d == id.duid => {}
        _ => return Err(Dhcp6Error::NotOurs),
    }
    let server_id = match opts.get(OptionCode::ServerId) {
        Some(DhcpOption::ServerId(s)) if !s.is_empty() => s.clone(),
        _ => return Err(Dhcp6Error::Missing(what, "a server id")),
    };
    if let Some(DhcpOption::StatusCode(code)) = opts.get(OptionCode::StatusCode) {
        if let Some(e) = status_error(code) {
            return Err(e);
        }
    }
    let ia = opts
        .get_all(OptionCode::IANA)
        .unwrap_or_default()
        .iter()
        .find_map(|o| match o {
            DhcpOption::IANA(ia) if ia.id == id.iaid => Some(ia),
            _ => None,
        })
        .ok_or(Dhcp6Error::Missing(what, "our IA_NA"))?;
    if let Some(DhcpOption::StatusCode(code)) = ia.opts.get(OptionCode::StatusCode) {
        if let Some(e) = status_error(code) {
            return Err(e);
        }
    }
    // RFC 8415 §21.6: an address whose preferred lifetime exceeds its
    // valid one is dropped; so is one already expired.
    let addresses: Vec<IaAddress> = ia
        .opts
        .get_all(OptionCode::IAAddr)
        .unwrap_or_default()
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IAAddr(a) if a.preferred_life <= a.valid_life && a.valid_life > 0 => {
                Some(IaAddress {
                    addr: a.addr,
                    preferred: a.preferred_life,
                    valid: a.valid_life,
                })
            }
            _ => None,
        })
        .collect();
    if addresses.is_empty() {
        return Err(Dhcp6Error::Missing(what, "an address in the IA_NA"));
    }
    let (t1, t2) = timers(ia.t1, ia.t2, &addresses);
    let dns = match opts.get(OptionCode::DomainNameServers) {
        Some(DhcpOption::DomainNameServers(d)) => d.clone(),
        _ => Vec::new(),
    };
    let search = match opts.get(OptionCode::DomainSearchList) {
        Some(DhcpOption::DomainSearchList(names)) => names
            .iter()
            .map(|n| n.to_utf8().trim_end_matches('.').to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    let preference = match opts.get(OptionCode::Preference) {
        Some(DhcpOption::Preference(p)) => *p,
        _ => 0,
    };
    Ok((
        kind,
        Lease6 {
            server_id,
            preference,
            addresses,
            t1,
            t2,
            dns,
            search,
        },
    ))
}

/// T1 and T2 as the client uses them: the server's, or (when it left them
/// to the client, or sent T1 > T2) 0.5 and 0.8 of the shortest preferred
/// lifetime (RFC 8415 §21.4).
pub fn timers(t1: u32, t2: u32, addrs: &[IaAddress]) -> (u32, u32) {
    let preferred = addrs.iter().map(|a| a.preferred).min().unwrap_or(0);
    if t1 != 0 && t2 != 0 && t1 <= t2 {
        return (t1, t2);
    }
    if preferred == INFINITY {
        return (INFINITY, INFINITY);
    }
    let p = u64::from(preferred);
    ((p / 2) as u32, (p * 4 / 5) as u32)
}

/// Retransmission timing of RFC 8415 §15: IRT, doubling up to MRT, each
/// with ±10 % jitter; the first Solicit timeout is never below IRT.
#[derive(Debug, Clone)]
pub struct Backoff {
    rt: Duration,
    mrt: Duration,
    first: bool,
    solicit: bool,
}

impl Backoff {
    pub fn new(irt: Duration, mrt: Duration, solicit: bool) -> Self {
        Self {
            rt: irt,
            mrt,
            first: true,
            solicit,
        }
    }

    /// The next timeout; `rand` is in [-0.1, 0.1] (caller's randomness).
    pub fn step_with(&mut self, rand: f64) -> Duration {
        let rand = rand.clamp(-0.1, 0.1);
        if self.first {
            self.first = false;
            let r = if self.solicit { rand.abs() } else { rand };
            self.rt = self.rt.mul_f64(1.0 + r);
        } else {
            self.rt = self.rt.mul_f64(2.0 + rand);
            if self.rt > self.mrt {
                self.rt = self.mrt.mul_f64(1.0 + rand);
            }
        }
        self.rt
    }

    pub fn step(&mut self) -> Duration {
        self.step_with(rand::random::<f64>() * 0.2 - 0.1)
    }
}

/// SOL_MAX_RT is an hour in the RFC; a ramdisk waiting for its network
/// wants to hear sooner, so Solicits repeat at most every minute.
const SOL_MAX_RT: Duration = Duration::from_secs(60);
const REQ_MAX_RC: u32 = 10;

/// A UDP socket on [::]:546 that only sees and sends on `iface`.
pub fn client_socket(iface: &str) -> Result<UdpSocket, Dhcp6Error> {
    super::udp::bound_to(iface, super::udp::ClientPort::V6(CLIENT_PORT)).map_err(|reason| {
        Dhcp6Error::Socket {
            iface: iface.to_string(),
            reason,
        }
    })
}

/// One interface's client: its socket, identity and the multicast
/// destination scoped to the interface.
pub struct Client {
    sock: UdpSocket,
    pub iface: String,
    pub id: ClientId,
    dest: SocketAddrV6,
}

impl Client {
    pub fn new(iface: &str, ifindex: u32, mac: &[u8]) -> Result<Self, Dhcp6Error> {
        Ok(Self {
            sock: client_socket(iface)?,
            iface: iface.to_string(),
            id: ClientId::from_mac(mac),
            dest: SocketAddrV6::new(ALL_SERVERS, SERVER_PORT, 0, ifindex),
        })
    }

    /// Run one exchange: send `kind` with retransmissions until a reply of
    /// `want` arrives, `max_rc` transmissions are spent, or `deadline`.
    /// For Solicit, Advertises are collected until the current timeout
    /// ends and the most preferred wins (255 wins at once).
    async fn exchange(
        &self,
        kind: Outgoing<'_>,
        want: MessageType,
        mut backoff: Backoff,
        max_rc: Option<u32>,
        deadline: Instant,
    ) -> Result<Option<Lease6>, Dhcp6Error> {
        let xid: u32 = rand::random::<u32>() & 0x00ff_ffff;
        let started = Instant::now();
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut sent = 0u32;
        let mut best: Option<Lease6> = None;
        while Instant::now() < deadline && max_rc.is_none_or(|m| sent < m) {
            let bytes = build(&kind, xid, &self.id, started.elapsed());
            // Right after link-up the link-local address is still in DAD
            // and sending fails; the next retransmission will do.
            match self.sock.send_to(&bytes, self.dest).await {
                Ok(_) => debug!("{}: DHCPv6 {} xid {xid:#x}", self.iface, kind.name()),
                Err(e) => debug!("{}: sending DHCPv6 {}: {e}", self.iface, kind.name()),
            }
            sent += 1;
            let round = (Instant::now() + backoff.step()).min(deadline);
            loop {
                let Ok(got) = timeout_at(round, self.sock.recv_from(&mut buf)).await else {
                    break;
                };
                let (n, from) = got.map_err(|e| Dhcp6Error::Socket {
                    iface: self.iface.clone(),
                    reason: e.to_string(),
                })?;
                match parse(&buf[..n], xid, &self.id) {
                    Ok((t, lease)) if t == want => {
                        // RFC 8415 §18.2.1: Advertises are compared only
                        // during the first timeout; later the first wins.
                        if want != MessageType::Advertise || lease.preference == 255 || sent > 1 {
                            return Ok(Some(lease));
                        }
                        if best
                            .as_ref()
                            .is_none_or(|b| lease.preference > b.preference)
                        {
                            best = Some(lease);
                        }
                    }
                    Ok(_) | Err(Dhcp6Error::NotOurs) => {}
                    Err(e) => warn!("{}: ignoring a DHCPv6 message from {from}: {e}", self.iface),
                }
            }
            if best.is_some() {
                return Ok(best);
            }
        }
        Ok(None)
    }

    /// SOLICIT until an ADVERTISE, then REQUEST it; `None` if `deadline`
    /// passes first.
    pub async fn obtain(&self, deadline: Instant) -> Result<Option<Lease6>, Dhcp6Error> {
        while Instant::now() < deadline {
            let sol = Backoff::new(Duration::from_secs(1), SOL_MAX_RT, true);
            let Some(adv) = self
                .exchange(
                    Outgoing::Solicit,
                    MessageType::Advertise,
                    sol,
                    None,
                    deadline,
                )
                .await?
            else {
                return Ok(None);
            };
            info!(
                "{}: DHCPv6 advertise of {:?}",
                self.iface,
                adv.addresses.iter().map(|a| a.addr).collect::<Vec<_>>()
            );
            let req = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), false);
            match self
                .exchange(
                    Outgoing::Request(&adv),
                    MessageType::Reply,
                    req,
                    Some(REQ_MAX_RC),
                    deadline,
                )
                .await?
            {
                Some(lease) => return Ok(Some(lease)),
                // RFC 8415 §18.2.2: a server that stops answering sends the
                // client back to Solicit.
                None => info!(
                    "{}: no DHCPv6 reply to REQUEST, soliciting again",
                    self.iface
                ),
            }
        }
        Ok(None)
    }

    /// RENEW (to `lease`'s server) until `until`; `None` if nobody answered.
    pub async fn renew(
        &self,
        lease: &Lease6,
        until: Instant,
    ) -> Result<Option<Lease6>, Dhcp6Error> {
        let b = Backoff::new(Duration::from_secs(10), Duration::from_secs(600), false);
        self.exchange(Outgoing::Renew(lease), MessageType::Reply, b, None, until)
            .await
    }

    /// REBIND (to any server) until `until`.
    pub async fn rebind(
        &self,
        lease: &Lease6,
        until: Instant,
    ) -> Result<Option<Lease6>, Dhcp6Error> {
        let b = Backoff::new(Duration::from_secs(10), Duration::from_secs(600), false);
        self.exchange(Outgoing::Rebind(lease), MessageType::Reply, b, None, until)
            .await
    }
}

/// `secs` from `from`, where infinity (or anything past a year) is "a year".
pub fn after(from: Instant, secs: u32) -> Instant {
    let secs = if secs == INFINITY {
        365 * 86400
    } else {
        secs.min(365 * 86400)
    };
    from + Duration::from_secs(u64::from(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::Name;
    use std::str::FromStr;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const SERVER: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0, 1];

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A server's message as dnsmasq would send it.
    fn server_msg(
        kind: MessageType,
        xid: u32,
        extra: Vec<DhcpOption>,
        ia: Option<IANA>,
    ) -> Vec<u8> {
        let mut msg = Message::new(kind);
        msg.set_xid_num(xid);
        let id = ClientId::from_mac(&MAC);
        msg.opts_mut().insert(DhcpOption::ClientId(id.duid));
        msg.opts_mut().insert(DhcpOption::ServerId(SERVER.to_vec()));
        if let Some(ia) = ia {
            msg.opts_mut().insert(DhcpOption::IANA(ia));
        }
        for o in extra {
            msg.opts_mut().insert(o);
        }
        msg.to_vec().unwrap()
    }

    fn ia(t1: u32, t2: u32, addrs: &[(&str, u32, u32)]) -> IANA {
        let mut ia = IANA {
            id: ClientId::from_mac(&MAC).iaid,
            t1,
            t2,
            opts: Default::default(),
        };
        for (a, p, v) in addrs {
            ia.opts.insert(DhcpOption::IAAddr(IAAddr {
                addr: addr(a),
                preferred_life: *p,
                valid_life: *v,
                opts: Default::default(),
            }));
        }
        ia
    }

    #[test]
    fn duid_ll_and_iaid_come_from_the_mac() {
        let id = ClientId::from_mac(&MAC);
        assert_eq!(id.duid, [0, 3, 0, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(id.iaid, 0x0012_3456);
    }

    #[test]
    fn solicit_asks_for_an_address_dns_and_domains() {
        let id = ClientId::from_mac(&MAC);
        let bytes = build(
            &Outgoing::Solicit,
            0xabcdef,
            &id,
            Duration::from_millis(1500),
        );
        let msg = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(msg.msg_type(), MessageType::Solicit);
        assert_eq!(msg.xid_num(), 0xabcdef);
        let o = msg.opts();
        assert_eq!(
            o.get(OptionCode::ClientId),
            Some(&DhcpOption::ClientId(id.duid.clone()))
        );
        assert_eq!(
            o.get(OptionCode::ElapsedTime),
            Some(&DhcpOption::ElapsedTime(150))
        );
        assert_eq!(
            o.get(OptionCode::ORO),
            Some(&DhcpOption::ORO(ORO {
                opts: vec![OptionCode::DomainNameServers, OptionCode::DomainSearchList]
            }))
        );
        assert!(o.get(OptionCode::ServerId).is_none());
        match o.get(OptionCode::IANA) {
            Some(DhcpOption::IANA(ia)) => {
                assert_eq!(ia.id, id.iaid);
                assert!(ia.opts.get(OptionCode::IAAddr).is_none());
            }
            other => panic!("no IA_NA: {other:?}"),
        }
    }

    #[test]
    fn request_renew_rebind_carry_the_lease() {
        let id = ClientId::from_mac(&MAC);
        let lease = Lease6 {
            server_id: SERVER.to_vec(),
            preference: 0,
            addresses: vec![IaAddress {
                addr: addr("fd00::10"),
                preferred: 100,
                valid: 200,
            }],
            t1: 50,
            t2: 80,
            dns: vec![],
            search: vec![],
        };
        for (kind, t, server) in [
            (Outgoing::Request(&lease), MessageType::Request, true),
            (Outgoing::Renew(&lease), MessageType::Renew, true),
            (Outgoing::Rebind(&lease), MessageType::Rebind, false),
        ] {
            let msg =
                Message::decode(&mut Decoder::new(&build(&kind, 1, &id, Duration::ZERO))).unwrap();
            assert_eq!(msg.msg_type(), t);
            assert_eq!(
                msg.opts().get(OptionCode::ServerId).is_some(),
                server,
                "{t:?}"
            );
            let Some(DhcpOption::IANA(ia)) = msg.opts().get(OptionCode::IANA) else {
                panic!("no IA_NA in {t:?}");
            };
            match ia.opts.get(OptionCode::IAAddr) {
                Some(DhcpOption::IAAddr(a)) => assert_eq!(a.addr, addr("fd00::10")),
                other => panic!("{t:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn reply_becomes_a_lease() {
        let id = ClientId::from_mac(&MAC);
        let bytes = server_msg(
            MessageType::Reply,
            7,
            vec![
                DhcpOption::DomainNameServers(vec![addr("fd00:77::1")]),
                DhcpOption::DomainSearchList(vec![Name::from_str("example.test.").unwrap()]),
                DhcpOption::Preference(10),
            ],
            Some(ia(1800, 2880, &[("fd00:77::42", 3600, 7200)])),
        );
        let (kind, lease) = parse(&bytes, 7, &id).unwrap();
        assert_eq!(kind, MessageType::Reply);
        assert_eq!(
            lease,
            Lease6 {
                server_id: SERVER.to_vec(),
                preference: 10,
                addresses: vec![IaAddress {
                    addr: addr("fd00:77::42"),
                    preferred: 3600,
                    valid: 7200
                }],
                t1: 1800,
                t2: 2880,
                dns: vec![addr("fd00:77::1")],
                search: vec!["example.test".into()],
            }
        );
        assert_eq!(lease.valid(), 7200);
    }

    #[test]
    fn timers_default_to_half_and_four_fifths_of_preferred() {
        let a = |p, v| IaAddress {
            addr: Ipv6Addr::LOCALHOST,
            preferred: p,
            valid: v,
        };
        assert_eq!(timers(0, 0, &[a(1000, 2000)]), (500, 800));
        // T1 > T2 is ignored.
        assert_eq!(timers(900, 100, &[a(1000, 2000)]), (500, 800));
        assert_eq!(timers(10, 20, &[a(1000, 2000)]), (10, 20));
        assert_eq!(timers(0, 0, &[a(INFINITY, INFINITY)]), (INFINITY, INFINITY));
    }

    #[test]
    fn strangers_and_bad_replies_are_clear_errors() {
        let id = ClientId::from_mac(&MAC);
        let good_ia = || Some(ia(0, 0, &[("fd00::1", 10, 20)]));
        let adv = server_msg(MessageType::Advertise, 3, vec![], good_ia());
        assert!(parse(&adv, 3, &id).is_ok());
        assert_eq!(parse(&adv, 4, &id), Err(Dhcp6Error::NotOurs));
        let other = ClientId::from_mac(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(parse(&adv, 3, &other), Err(Dhcp6Error::NotOurs));
        // Our own multicast Solicit looped back is not a reply.
        let sol = build(&Outgoing::Solicit, 3, &id, Duration::ZERO);
        assert_eq!(parse(&sol, 3, &id), Err(Dhcp6Error::NotOurs));
        assert!(matches!(
            parse(&[2, 0, 0], 0, &id),
            Err(Dhcp6Error::Malformed(_))
        ));
        // A client id running past the end is dropped by the codec: the
        // message is then nobody's.
        assert_eq!(
            parse(&[7, 0, 0, 3, 0, 1, 0, 200, 1], 3, &id),
            Err(Dhcp6Error::NotOurs)
        );

        let no_addrs = server_msg(
            MessageType::Advertise,
            3,
            vec![],
            Some({
                let mut i = ia(0, 0, &[]);
                i.opts.insert(DhcpOption::StatusCode(StatusCode {
                    status: Status::NoAddrsAvail,
                    msg: "no addresses".into(),
                }));
                i
            }),
        );
        assert_eq!(
            parse(&no_addrs, 3, &id),
            Err(Dhcp6Error::Status {
                status: Status::NoAddrsAvail,
                msg: "no addresses".into()
            })
        );
        let no_ia = server_msg(MessageType::Reply, 3, vec![], None);
        assert_eq!(
            parse(&no_ia, 3, &id),
            Err(Dhcp6Error::Missing("REPLY", "our IA_NA"))
        );
        // Preferred longer than valid: the address is dropped, none left.
        let bad_life = server_msg(
            MessageType::Reply,
            3,
            vec![],
            Some(ia(0, 0, &[("fd00::1", 30, 20)])),
        );
        assert_eq!(
            parse(&bad_life, 3, &id),
            Err(Dhcp6Error::Missing("REPLY", "an address in the IA_NA"))
        );
        let mut no_server = Message::new(MessageType::Reply);
        no_server.set_xid_num(3);
        no_server
            .opts_mut()
            .insert(DhcpOption::ClientId(id.duid.clone()));
        assert_eq!(
            parse(&no_server.to_vec().unwrap(), 3, &id),
            Err(Dhcp6Error::Missing("REPLY", "a server id"))
        );
    }

    #[test]
    fn backoff_follows_rfc_8415() {
        let ms = |d: Duration| d.as_millis();
        let mut sol = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), true);
        // The first Solicit timeout is at least IRT, even with negative jitter.
        assert_eq!(ms(sol.step_with(-0.1)), 1100);
        assert_eq!(ms(sol.step_with(0.0)), 2200);
        let mut req = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), false);
        assert_eq!(ms(req.step_with(-0.1)), 900);
        for _ in 0..10 {
            req.step_with(0.1);
        }
        // Capped at MRT (±10 %).
        assert_eq!(ms(req.step_with(0.1)), 33000);
        assert_eq!(ms(req.step_with(5.0)), 33000, "jitter is clamped");
    }
}
