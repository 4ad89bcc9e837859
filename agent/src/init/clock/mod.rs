//! The clock at boot: IPA runs chrony/ntpdate against `ipa-ntp-server`
//! before anything else, ignoring errors. PID 1 does the same with one SNTP
//! exchange once the first address is up, before the agent starts (its
//! auto-TLS certificate is dated from this clock). Before power-off or
//! reboot the system time goes back to the RTC ([`rtc`]), as IPA's
//! `hwclock --systohc`.

pub mod rtc;
pub mod sntp;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{error, info, warn};

use sntp::{NtpTimestamp, SntpError, PACKET_LEN};

/// The kernel parameter naming the server.
pub const PARAM: &str = "ipa-ntp-server";
pub const DEFAULT_PORT: u16 = 123;
/// How long boot waits for the clock before the agent starts anyway.
pub const BOOT_BUDGET: Duration = Duration::from_secs(10);
/// Each request waits this long for its reply before the next is sent.
const PER_TRY: Duration = Duration::from_secs(2);

/// `ipa-ntp-server`: a hostname or an IP address, and (a Ferrite
/// extension; IPA takes no port) an optional `:port`, `[v6]:port` for
/// IPv6 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtpServer {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{PARAM}={value:?}: {why}")]
pub struct ParseError {
    value: String,
    why: &'static str,
}

impl FromStr for NtpServer {
    type Err = ParseError;

    fn from_str(value: &str) -> Result<Self, ParseError> {
        let bad = |why| ParseError {
            value: value.to_string(),
            why,
        };
        let v = value.trim();
        let (host, port) = if let Some(rest) = v.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or(bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or(bad("junk after ']'"))?),
                ),
            }
        } else if v.matches(':').count() > 1 {
            (v, None) // a bare IPv6 address
        } else {
            match v.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (v, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let bracketed = v.starts_with('[');
        if (bracketed || host.contains(':')) && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        {
            return Err(bad("not a hostname or IP address"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("port must be 1 to 65535")),
                Ok(p) => p,
            },
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for NtpServer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How far the clock was stepped, in nanoseconds (positive: forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(pub i128);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:+.3} s", self.0 as f64 / 1e9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("resolving {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("no valid reply from {server} within {budget:?} ({tries} requests; last: {last})")]
    NoReply {
        server: String,
        budget: Duration,
        tries: u32,
        last: String,
    },
    #[error("setting the clock: {0}")]
    Set(nix::Error),
}

/// What went wrong with one request.
#[derive(Debug, thiserror::Error)]
enum TryError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no reply")]
    Timeout,
    #[error("bad reply from {0}: {1}")]
    Bad(SocketAddr, SntpError),
}

/// Ask `server` for the time (retrying within `budget`) and step the
/// system clock to it.
pub async fn sync(server: &NtpServer, budget: Duration) -> Result<Offset, ClockError> {
    let deadline = Instant::now() + budget;
    let lookup = tokio::net::lookup_host((server.host.as_str(), server.port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout_at(deadline, lookup).await {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => return Err(ClockError::Resolve(server.host.clone(), e)),
        Err(_) => {
            return Err(ClockError::Resolve(
                server.host.clone(),
                std::io::ErrorKind::TimedOut.into(),
            ))
        }
    };
    if addrs.is_empty() {
        return Err(ClockError::NoAddress(server.host.clone()));
    }
    let (mut tries, mut last) = (0u32, String::from("none sent"));
    'outer: loop {
        for &addr in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break 'outer;
            }
            tries += 1;
            match query(addr, left.min(PER_TRY)).await {
                Ok((offset, delay, stratum)) => {
                    step(offset).map_err(ClockError::Set)?;
                    info!(
                        "clock: set from {server} ({addr}, stratum {stratum}): \
                         stepped {offset}, round trip {:.1} ms",
                        delay.as_secs_f64() * 1e3
                    );
                    return Ok(offset);
                }
                Err(e) => {
                    warn!("clock: {server} ({addr}): {e}");
                    last = e.to_string();
                    // A garbage answer comes at once: do not spin on it.
                    if matches!(e, TryError::Bad(..) | TryError::Io(_)) {
                        let pause = Duration::from_millis(500);
                        tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
                    }
                }
            }
        }
    }
    Err(ClockError::NoReply {
        server: server.to_string(),
        budget,
        tries,
        last,
    })
}

/// One request and its reply: the offset, round trip and server stratum.
async fn query(addr: SocketAddr, wait: Duration) -> Result<(Offset, Duration, u8), TryError> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(addr)
    } else {
        "[::]:0".parse().unwrap_or(addr)
    };
    let sock = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone else.
    sock.connect(addr).await?;
    let t1 = NtpTimestamp::from_system(SystemTime::now());
    sock.send(&sntp::request(t1)).await?;
    // Bounded: anything longer than this is not a reply we parse.
    let mut buf = [0u8; 2 * PACKET_LEN];
    let n = match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(r) => r?,
        Err(_) => return Err(TryError::Timeout),
    };
    let t4 = NtpTimestamp::from_system(SystemTime::now());
    let reply = sntp::parse_reply(&buf[..n], t1).map_err(|e| TryError::Bad(addr, e))?;
    let (offset, delay) = sntp::offset_and_delay(t1, &reply, t4);
    Ok((Offset(offset), delay, reply.stratum))
}

/// Step CLOCK_REALTIME by `offset`.
fn step(offset: Offset) -> nix::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    let target = (now + offset.0).max(0);
    let ts =
        nix::sys::time::TimeSpec::new((target / 1_000_000_000) as _, (target % 1_000_000_000) as _);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts)
}

/// PID 1's hook: sync from `ipa-ntp-server` if it is set. Errors are
/// logged, never fatal (IPA: `ignore_errors=True`).
pub async fn at_boot(params: &BTreeMap<String, String>) {
    let Some(value) = params.get(PARAM) else {
        return;
    };
    let server = match value.parse::<NtpServer>() {
        Ok(s) => s,
        Err(e) => {
            error!("clock: {e}; the clock is left as it is");
            return;
        }
    };
    info!("clock: asking {server} for the time (budget {BOOT_BUDGET:?})");
    if let Err(e) = sync(&server, BOOT_BUDGET).await {
        error!("clock: {e}; the clock is left as it is and the agent starts anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<NtpServer, ParseError> {
        v.parse()
    }

    fn server(host: &str, port: u16) -> NtpServer {
        NtpServer {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn server_parameter_forms() {
        assert_eq!(parse("10.0.2.2"), Ok(server("10.0.2.2", 123)));
        assert_eq!(parse("10.0.2.2:12345"), Ok(server("10.0.2.2", 12345)));
        assert_eq!(parse("ntp.example.org"), Ok(server("ntp.example.org", 123)));
        assert_eq!(
            parse("ntp.example.org:1123"),
            Ok(server("ntp.example.org", 1123))
        );
        assert_eq!(parse("fd00::1"), Ok(server("fd00::1", 123)));
        assert_eq!(parse("[fd00::1]"), Ok(server("fd00::1", 123)));
        assert_eq!(parse("[fd00::1]:4123"), Ok(server("fd00::1", 4123)));
        assert_eq!(server("fd00::1", 4123).to_string(), "[fd00::1]:4123");
    }

    #[test]
    fn bad_server_parameters() {
        for (v, why) in [
            ("", "no host"),
            (":123", "no host"),
            ("host:0", "port must be 1 to 65535"),
            ("host:70000", "port must be 1 to 65535"),
            ("host:ntp", "port must be 1 to 65535"),
            ("[fd00::1", "unclosed '['"),
            ("[fd00::1]x", "junk after ']'"),
            ("[nothex]:1", "not an IPv6 address"),
            ("a/b", "not a hostname or IP address"),
        ] {
            let e = parse(v).unwrap_err();
            assert_eq!(e.why, why, "{v:?}");
            assert!(e.to_string().starts_with("ipa-ntp-server="), "{e}");
        }
    }

    #[test]
    fn offset_display() {
        assert_eq!(Offset(1_500_000_000).to_string(), "+1.500 s");
        assert_eq!(Offset(-2_000_000).to_string(), "-0.002 s");
    }

    /// A UDP responder on loopback answering each request with `answer`.
    async fn responder(
        answer: impl Fn(&[u8; PACKET_LEN]) -> Option<Vec<u8>> + Send + 'static,
    ) -> NtpServer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = sock.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let mut req = [0u8; PACKET_LEN];
                if n >= PACKET_LEN {
                    req.copy_from_slice(&buf[..PACKET_LEN]);
                }
                if let Some(out) = answer(&req) {
                    let _ = sock.send_to(&out, peer).await;
                }
            }
        });
        server("127.0.0.1", port)
    }

    // The good path steps the host's clock, so it runs only in the QEMU
    // guest (tests/ramdisk); here the failures, over real UDP.
    #[tokio::test]
    async fn garbage_replies_fail_within_the_budget() {
        let s = responder(|_| Some(b"this is not ntp".to_vec())).await;
        let e = sync(&s, Duration::from_millis(1200)).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("no valid reply from 127.0.0.1:"), "{text}");
        assert!(text.contains("reply of 15 bytes"), "{text}");
    }

    #[tokio::test]
    async fn kiss_of_death_is_reported() {
        let s = responder(|req| {
            let mut r = sntp::tests::good_reply(req, SystemTime::now());
            r[1] = 0;
            r[12..16].copy_from_slice(b"DENY");
            Some(r.to_vec())
        })
        .await;
        let e = sync(&s, Duration::from_millis(800)).await.unwrap_err();
        assert!(e.to_string().contains("kiss-o'-death"), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let s = responder(|_| None).await;
        let e = sync(&s, Duration::from_millis(300)).await.unwrap_err();
        let text = e.to_string();
        assert!(text.ends_with("last: no reply)"), "{text}");
    }
}
