//! The BMC's addresses for the inventory (`bmc_address`, `bmc_v6address`,
//! `bmc_mac`), asked of the BMC itself through the kernel's IPMI device
//! (`/dev/ipmi0`, the `ipmi_devintf` ioctls) instead of running ipmitool.
//! The questions and the rules for answers are IPA's: LAN channels 1–11,
//! the first configured address wins, `0.0.0.0` / `::/0` when the BMC has
//! none, nothing at all (`None`) without an IPMI device.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, warn};

/// The BMC facts of the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BmcInfo {
    pub address: Option<String>,
    pub v6address: Option<String>,
    pub mac: Option<String>,
}

/// IPMI NetFns and commands used here.
const NETFN_APP: u8 = 0x06;
const CMD_GET_CHANNEL_INFO: u8 = 0x42;
const NETFN_TRANSPORT: u8 = 0x0c;
const CMD_GET_LAN_CONFIG: u8 = 0x02;
/// LAN configuration parameters (IPMI 2.0 table 23-4).
const PARAM_IP: u8 = 3;
const PARAM_MAC: u8 = 5;
const PARAM_IPV6_STATUS: u8 = 50;
const PARAM_IPV6_ENABLES: u8 = 51;
const PARAM_IPV6_STATIC: u8 = 56;
const PARAM_IPV6_DYNAMIC: u8 = 59;
/// Channel medium type "802.3 LAN": only those have LAN parameters.
const MEDIUM_LAN: u8 = 0x04;
/// Channels 0 and 12–15 are reserved or special (IPA's comment).
const CHANNELS: std::ops::RangeInclusive<u8> = 1..=11;

/// One IPMI request/response exchange with the BMC. The reply starts with
/// the completion code.
pub trait IpmiTransport {
    fn request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> io::Result<Vec<u8>>;
}

/// `Get LAN Configuration Parameters` request data: get (not revision
/// only), the channel, parameter, set and block selectors.
pub fn lan_param_request(channel: u8, param: u8, set: u8) -> [u8; 4] {
    [channel & 0x0f, param, set, 0]
}

/// The parameter data of a `Get LAN Configuration Parameters` reply, or
/// `None` for a failed completion code or a truncated reply.
pub fn lan_param_data(reply: &[u8], min_len: usize) -> Option<&[u8]> {
    match reply {
        // [completion code, parameter revision, data...]
        [0, _rev, data @ ..] if data.len() >= min_len => Some(data),
        _ => None,
    }
}

fn lan_param(t: &mut dyn IpmiTransport, channel: u8, param: u8, set: u8) -> io::Result<Vec<u8>> {
    let reply = t.request(
        NETFN_TRANSPORT,
        CMD_GET_LAN_CONFIG,
        &lan_param_request(channel, param, set),
    )?;
    Ok(lan_param_data(&reply, 0)
        .map(<[u8]>::to_vec)
        .unwrap_or_default())
}

/// Whether a channel exists and is a LAN channel (ipmitool's "Invalid
/// channel" otherwise).
fn is_lan_channel(t: &mut dyn IpmiTransport, channel: u8) -> io::Result<bool> {
    let reply = t.request(NETFN_APP, CMD_GET_CHANNEL_INFO, &[channel])?;
    // [cc, channel, medium type, protocol type, ...]
    Ok(matches!(reply.as_slice(), [0, _, medium, ..] if medium & 0x7f == MEDIUM_LAN))
}

fn channel_ipv4(t: &mut dyn IpmiTransport, channel: u8) -> io::Result<Option<Ipv4Addr>> {
    let data = lan_param(t, channel, PARAM_IP, 0)?;
    Ok(<[u8; 4]>::try_from(data.get(..4).unwrap_or_default())
        .ok()
        .map(Ipv4Addr::from))
}

fn channel_mac(t: &mut dyn IpmiTransport, channel: u8) -> io::Result<Option<String>> {
    let data = lan_param(t, channel, PARAM_MAC, 0)?;
    Ok(data.get(..6).map(|m| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }))
}

/// One IPv6 address entry (parameters 56 and 59): `[set, source/type,
/// address(16), prefix length, status]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Entry {
    pub enabled: bool,
    pub source: u8,
    pub address: Ipv6Addr,
    pub prefix: u8,
    pub active: bool,
}

pub fn decode_ipv6_entry(data: &[u8]) -> Option<Ipv6Entry> {
    if data.len() < 20 {
        return None;
    }
    let addr: [u8; 16] = data[2..18].try_into().ok()?;
    Some(Ipv6Entry {
        enabled: data[1] & 0x80 != 0,
        source: data[1] & 0x0f,
        address: Ipv6Addr::from(addr),
        prefix: data[18],
        active: data[19] == 0,
    })
}

/// The channel's configured IPv6 addresses: dynamic (SLAAC/DHCPv6) first,
/// then static, only active ones, as ipmitool's `lan6 print` shows them.
fn channel_ipv6(t: &mut dyn IpmiTransport, channel: u8) -> io::Result<Vec<Ipv6Entry>> {
    let enables = lan_param(t, channel, PARAM_IPV6_ENABLES, 0)?;
    // 0: IPv4 only, 1: IPv6 only, 2: both.
    if !matches!(enables.first(), Some(1) | Some(2)) {
        return Ok(Vec::new());
    }
    let status = lan_param(t, channel, PARAM_IPV6_STATUS, 0)?;
    let (static_max, dynamic_max) = (
        status.first().copied().unwrap_or(0),
        status.get(1).copied().unwrap_or(0),
    );
    let mut out = Vec::new();
    for set in 0..dynamic_max {
        if let Some(e) = decode_ipv6_entry(&lan_param(t, channel, PARAM_IPV6_DYNAMIC, set)?) {
            // Source 1 = SLAAC, 2 = DHCPv6.
            if e.active && matches!(e.source, 1 | 2) {
                out.push(e);
            }
        }
    }
    for set in 0..static_max {
        if let Some(e) = decode_ipv6_entry(&lan_param(t, channel, PARAM_IPV6_STATIC, set)?) {
            if e.active && e.enabled {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// IPA's null address test: `::` with any prefix.
fn usable_v6(addr: &Ipv6Addr) -> bool {
    !addr.is_unspecified()
}

/// IPA's `get_bmc_address`: the first non-zero IPv4 over LAN channels.
pub fn bmc_address(t: &mut dyn IpmiTransport) -> io::Result<String> {
    for channel in CHANNELS {
        if !is_lan_channel(t, channel)? {
            continue;
        }
        match channel_ipv4(t, channel)? {
            Some(ip) if !ip.is_unspecified() => return Ok(ip.to_string()),
            _ => {}
        }
    }
    Ok("0.0.0.0".into())
}

/// IPA's `get_bmc_v6address`: the first configured IPv6 address.
pub fn bmc_v6address(t: &mut dyn IpmiTransport) -> io::Result<String> {
    for channel in CHANNELS {
        if !is_lan_channel(t, channel)? {
            continue;
        }
        if let Some(e) = channel_ipv6(t, channel)?
            .into_iter()
            .find(|e| usable_v6(&e.address))
        {
            return Ok(e.address.to_string());
        }
    }
    Ok("::/0".into())
}

/// IPA's `get_bmc_mac`: the MAC of the first channel that has an address
/// (IPv4, or a non-link-local IPv6); `None` when no channel qualifies.
pub fn bmc_mac(t: &mut dyn IpmiTransport) -> io::Result<Option<String>> {
    for channel in CHANNELS {
        if !is_lan_channel(t, channel)? {
            continue;
        }
        let ip = channel_ipv4(t, channel)?;
        if ip.is_none_or(|ip| ip.is_unspecified()) {
            let global = channel_ipv6(t, channel)?
                .iter()
                .any(|e| usable_v6(&e.address) && (e.address.segments()[0] & 0xffc0) != 0xfe80);
            if !global {
                continue;
            }
        }
        match channel_mac(t, channel)? {
            Some(mac) if mac != "00:00:00:00:00:00" => return Ok(Some(mac)),
            _ => {}
        }
    }
    Ok(None)
}

/// IPA's `any_ipmi_device_exists`: a character device at `ipmi*`,
/// `ipmi/*` or `ipmidev/*` under `dev`.
pub fn find_device(dev: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dev) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ipmi") {
                candidates.push(e.path());
            }
        }
    }
    for sub in ["ipmi", "ipmidev"] {
        if let Ok(rd) = std::fs::read_dir(dev.join(sub)) {
            candidates.extend(rd.flatten().map(|e| e.path()));
        }
    }
    candidates.sort();
    candidates.into_iter().find(|p| {
        std::fs::metadata(p)
            .map(|m| m.file_type().is_char_device())
            .unwrap_or(false)
    })
}

/// The BMC facts, or all `None` without an IPMI device. A failing device
/// gives `None` for what could not be read, as IPA's `OSError` handling.
pub fn collect(dev: &Path) -> BmcInfo {
    let Some(path) = find_device(dev) else {
        debug!("no IPMI device: no BMC address");
        return BmcInfo::default();
    };
    let mut device = match LinuxIpmi::open(&path) {
        Ok(d) => d,
        Err(e) => {
            warn!(device = %path.display(), error = %e, "Cannot get BMC address");
            return BmcInfo::default();
        }
    };
    let warn_none = |what: &str, e: io::Error| {
        warn!(error = %e, "Cannot get BMC {what}");
        None
    };
    let info = BmcInfo {
        address: bmc_address(&mut device).map_or_else(|e| warn_none("address", e), Some),
        v6address: bmc_v6address(&mut device).map_or_else(|e| warn_none("v6 address", e), Some),
        mac: bmc_mac(&mut device).unwrap_or_else(|e| warn_none("MAC address", e)),
    };
    info!(
        device = %path.display(),
        address = ?info.address,
        v6address = ?info.v6address,
        mac = ?info.mac,
        "asked the BMC for its addresses"
    );
    info
}

// ---- the Linux IPMI device (`<linux/ipmi.h>`) ----

const IPMI_SYSTEM_INTERFACE_ADDR_TYPE: libc::c_int = 0x0c;
const IPMI_BMC_CHANNEL: libc::c_short = 0x0f;
const IPMI_RESPONSE_RECV_TYPE: libc::c_int = 1;
/// Longer than any BMC takes for these; a hung BMC must not hang inspection.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[repr(C)]
struct SystemInterfaceAddr {
    addr_type: libc::c_int,
    channel: libc::c_short,
    lun: libc::c_uchar,
}

#[repr(C)]
struct IpmiMsg {
    netfn: libc::c_uchar,
    cmd: libc::c_uchar,
    data_len: libc::c_ushort,
    data: *mut libc::c_uchar,
}

#[repr(C)]
struct IpmiReq {
    addr: *mut libc::c_uchar,
    addr_len: libc::c_uint,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

#[repr(C)]
struct IpmiRecv {
    recv_type: libc::c_int,
    addr: *mut libc::c_uchar,
    addr_len: libc::c_uint,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

/// `_IOC(dir, 'i', nr, size)` as the kernel computes it.
const fn ioc(dir: u32, nr: u32, size: usize) -> libc::Ioctl {
    ((dir << 30) | ((size as u32) << 16) | ((b'i' as u32) << 8) | nr) as libc::Ioctl
}
/// `_IOR('i', 13, struct ipmi_req)`.
const IPMICTL_SEND_COMMAND: libc::Ioctl = ioc(2, 13, std::mem::size_of::<IpmiReq>());
/// `_IOWR('i', 12, struct ipmi_recv)`.
const IPMICTL_RECEIVE_MSG: libc::Ioctl = ioc(3, 12, std::mem::size_of::<IpmiRecv>());

pub struct LinuxIpmi {
    file: File,
    next_id: libc::c_long,
}

impl LinuxIpmi {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self { file, next_id: 1 })
    }
}

impl IpmiTransport for LinuxIpmi {
    fn request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut addr = SystemInterfaceAddr {
            addr_type: IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
            channel: IPMI_BMC_CHANNEL,
            lun: 0,
        };
        let mut payload = data.to_vec();
        let msgid = self.next_id;
        self.next_id += 1;
        let mut req = IpmiReq {
            addr: (&mut addr as *mut SystemInterfaceAddr).cast(),
            addr_len: std::mem::size_of::<SystemInterfaceAddr>() as libc::c_uint,
            msgid,
            msg: IpmiMsg {
                netfn,
                cmd,
                data_len: payload.len() as libc::c_ushort,
                data: payload.as_mut_ptr(),
            },
        };
        // SAFETY: the request and the buffers it points to outlive the call;
        // the kernel copies them in before returning.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), IPMICTL_SEND_COMMAND, &mut req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let ready =
                unsafe { libc::poll(&mut pfd, 1, REPLY_TIMEOUT.as_millis() as libc::c_int) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if ready == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no IPMI reply to netfn {netfn:#04x} cmd {cmd:#04x}"),
                ));
            }
            let mut reply_addr = [0u8; 32];
            let mut buf = vec![0u8; 1024];
            let mut recv = IpmiRecv {
                recv_type: 0,
                addr: reply_addr.as_mut_ptr(),
                addr_len: reply_addr.len() as libc::c_uint,
                msgid: 0,
                msg: IpmiMsg {
                    netfn: 0,
                    cmd: 0,
                    data_len: buf.len() as libc::c_ushort,
                    data: buf.as_mut_ptr(),
                },
            };
            // SAFETY: the kernel writes at most addr_len / data_len bytes
            // into the buffers, which live until after the call.
            if unsafe { libc::ioctl(self.file.as_raw_fd(), IPMICTL_RECEIVE_MSG, &mut recv) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // Stale replies (an earlier timed-out request) are dropped.
            if recv.recv_type != IPMI_RESPONSE_RECV_TYPE || recv.msgid != msgid {
                continue;
            }
            buf.truncate(recv.msg.data_len as usize);
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A BMC answering from byte fixtures keyed by (netfn, cmd, request).
    #[derive(Default)]
    struct FixtureBmc {
        replies: HashMap<(u8, u8, Vec<u8>), Vec<u8>>,
        asked: Vec<Vec<u8>>,
    }

    impl FixtureBmc {
        fn lan_channel(mut self, ch: u8) -> Self {
            // cc 0, channel, medium 802.3 LAN, protocol IPMB-1.0.
            self.replies.insert(
                (NETFN_APP, CMD_GET_CHANNEL_INFO, vec![ch]),
                vec![0, ch, 0x04, 0x01, 0x80, 0, 0, 0, 0, 0],
            );
            self
        }
        fn param(mut self, ch: u8, param: u8, set: u8, data: &[u8]) -> Self {
            let mut reply = vec![0x00, 0x11];
            reply.extend_from_slice(data);
            self.replies.insert(
                (
                    NETFN_TRANSPORT,
                    CMD_GET_LAN_CONFIG,
                    lan_param_request(ch, param, set).to_vec(),
                ),
                reply,
            );
            self
        }
    }

    impl IpmiTransport for FixtureBmc {
        fn request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> io::Result<Vec<u8>> {
            self.asked.push(data.to_vec());
            // Unknown channel/parameter: 0xcc "invalid data field in request".
            Ok(self
                .replies
                .get(&(netfn, cmd, data.to_vec()))
                .cloned()
                .unwrap_or_else(|| vec![0xcc]))
        }
    }

    #[test]
    fn request_bytes_and_reply_decoding() {
        assert_eq!(lan_param_request(1, PARAM_IP, 0), [0x01, 0x03, 0x00, 0x00]);
        assert_eq!(
            lan_param_request(11, PARAM_IPV6_STATIC, 2),
            [0x0b, 0x38, 0x02, 0x00]
        );
        assert_eq!(
            lan_param_data(&[0x00, 0x11, 10, 1, 0, 5], 4),
            Some(&[10u8, 1, 0, 5][..])
        );
        assert_eq!(lan_param_data(&[0x80], 4), None, "parameter not supported");
        assert_eq!(lan_param_data(&[0x00, 0x11, 10], 4), None, "truncated");
        let mut entry = vec![0x00, 0x80];
        entry.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        entry.extend_from_slice(&[64, 0]);
        assert_eq!(
            decode_ipv6_entry(&entry),
            Some(Ipv6Entry {
                enabled: true,
                source: 0,
                address: "2001:db8::7".parse().unwrap(),
                prefix: 64,
                active: true
            })
        );
        assert_eq!(decode_ipv6_entry(&entry[..19]), None);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // x86_64/aarch64: sizeof(struct ipmi_req) = 40, ipmi_recv = 48.
        if std::mem::size_of::<libc::c_long>() == 8 {
            assert_eq!(IPMICTL_SEND_COMMAND as u32, 0x8028_690d);
            assert_eq!(IPMICTL_RECEIVE_MSG as u32, 0xc030_690c);
        }
    }

    #[test]
    fn first_configured_channel_wins() {
        // Channel 1 is LAN but unconfigured; channel 2 is serial; channel 3 has it all.
        let mut bmc = FixtureBmc::default()
            .lan_channel(1)
            .param(1, PARAM_IP, 0, &[0, 0, 0, 0])
            .param(1, PARAM_MAC, 0, &[0; 6])
            .lan_channel(3)
            .param(3, PARAM_IP, 0, &[192, 0, 2, 10])
            .param(3, PARAM_MAC, 0, &[0x0c, 0xc4, 0x7a, 0x01, 0x02, 0x03])
            .param(3, PARAM_IPV6_ENABLES, 0, &[2])
            .param(3, PARAM_IPV6_STATUS, 0, &[1, 1, 0])
            .param(3, PARAM_IPV6_STATIC, 0, &{
                let mut e = vec![0x00, 0x80];
                e.extend_from_slice(&"2001:db8::10".parse::<Ipv6Addr>().unwrap().octets());
                e.extend_from_slice(&[64, 0]);
                e
            })
            .param(3, PARAM_IPV6_DYNAMIC, 0, &{
                // SLAAC, but status 1 (disabled): skipped.
                let mut e = vec![0x00, 0x01];
                e.extend_from_slice(&"2001:db8::99".parse::<Ipv6Addr>().unwrap().octets());
                e.extend_from_slice(&[64, 1]);
                e
            });
        bmc.replies.insert(
            (NETFN_APP, CMD_GET_CHANNEL_INFO, vec![2]),
            vec![0, 2, 0x05, 0x05, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(bmc_address(&mut bmc).unwrap(), "192.0.2.10");
        assert_eq!(bmc_v6address(&mut bmc).unwrap(), "2001:db8::10");
        assert_eq!(
            bmc_mac(&mut bmc).unwrap().as_deref(),
            Some("0c:c4:7a:01:02:03")
        );
        assert!(
            !bmc.asked
                .contains(&lan_param_request(2, PARAM_IP, 0).to_vec()),
            "a serial channel has no LAN parameters to ask for"
        );
    }

    #[test]
    fn unconfigured_bmc_reports_ipas_null_addresses() {
        let mut bmc = FixtureBmc::default()
            .lan_channel(1)
            .param(1, PARAM_IP, 0, &[0, 0, 0, 0])
            .param(1, PARAM_MAC, 0, &[0x0c, 0xc4, 0x7a, 0x01, 0x02, 0x03])
            .param(1, PARAM_IPV6_ENABLES, 0, &[0]);
        assert_eq!(bmc_address(&mut bmc).unwrap(), "0.0.0.0");
        assert_eq!(bmc_v6address(&mut bmc).unwrap(), "::/0");
        assert_eq!(bmc_mac(&mut bmc).unwrap(), None, "no address: no MAC");
    }

    #[test]
    fn no_device_means_no_bmc() {
        let dev = tempfile::tempdir().unwrap();
        std::fs::write(dev.path().join("ipmi0"), b"not a char device").unwrap();
        assert_eq!(find_device(dev.path()), None);
        assert_eq!(collect(dev.path()), BmcInfo::default());
    }
}
