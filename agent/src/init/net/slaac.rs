//! SLAAC is the kernel's job once the link is up and router advertisements
//! are accepted; here we switch that on and watch the interface's IPv6
//! addresses (`/proc/net/if_inet6`, the calling thread's namespace) for a
//! usable global one.

use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use tokio::time::{sleep, Instant};

/// `IFA_F_*` flags as if_inet6 prints them.
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;
/// Scope 0 is global (ULAs included); 0x20 link, 0x10 host.
const SCOPE_GLOBAL: u32 = 0;

/// One line of `/proc/net/if_inet6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct If6Addr {
    pub addr: Ipv6Addr,
    pub ifindex: u32,
    pub prefix_len: u8,
    pub scope: u32,
    pub flags: u32,
    pub name: String,
}

impl If6Addr {
    /// Global, and past duplicate address detection.
    pub fn usable_global(&self) -> bool {
        self.scope == SCOPE_GLOBAL && self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0
    }
}

/// Parse if_inet6 (`addr ifindex plen scope flags name`, all hex but the
/// name); lines that do not fit are skipped.
pub fn parse_if_inet6(text: &str) -> Vec<If6Addr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [addr, idx, plen, scope, flags, name] = f.as_slice() else {
                return None;
            };
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            Some(If6Addr {
                addr: Ipv6Addr::from(
                    u128::from_str_radix(addr, 16)
                        .ok()
                        .filter(|_| addr.len() == 32)?,
                ),
                ifindex: hex(idx)?,
                prefix_len: u8::try_from(hex(plen)?).ok()?,
                scope: hex(scope)?,
                flags: hex(flags)?,
                name: name.to_string(),
            })
        })
        .collect()
}

/// The interface's addresses now.
pub fn addresses(ifname: &str) -> Vec<If6Addr> {
    std::fs::read_to_string("/proc/net/if_inet6")
        .map(|t| parse_if_inet6(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.name == ifname)
        .collect()
}

/// Usable global addresses on `ifname`.
pub fn usable_globals(ifname: &str) -> Vec<Ipv6Addr> {
    addresses(ifname)
        .into_iter()
        .filter(If6Addr::usable_global)
        .map(|a| a.addr)
        .collect()
}

/// Turn IPv6 on for `ifname` and let it take router advertisements and
/// build SLAAC addresses from them.
pub fn enable(procfs: &Path, ifname: &str) -> std::io::Result<()> {
    let dir = procfs.join("sys/net/ipv6/conf").join(ifname);
    for (knob, value) in [("disable_ipv6", "0"), ("accept_ra", "1"), ("autoconf", "1")] {
        std::fs::write(dir.join(knob), value).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", dir.join(knob).display()))
        })?;
    }
    Ok(())
}

/// Wait (polling, bounded by `budget`) until `addr` on `ifname` has passed
/// DAD; false if it did not (DAD failed, or it is gone).
pub async fn wait_usable(ifname: &str, addr: Ipv6Addr, budget: Duration) -> bool {
    let deadline = Instant::now() + budget;
    loop {
        if usable_globals(ifname).contains(&addr) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The first usable global address on `ifname` within `budget`.
pub async fn wait_global(ifname: &str, budget: Duration) -> Option<Ipv6Addr> {
    let deadline = Instant::now() + budget;
    loop {
        if let Some(a) = usable_globals(ifname).into_iter().next() {
            return Some(a);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_inet6_lines() {
        let text = "\
fd007700000000005054fffe123456 02 40 00 00     eth0
fd007700000000000000000000000042 02 80 00 40     eth0
fe800000000000005054fffe123456ff 02 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd007700000000000000000000000043 03 80 00 08     eth1
garbage line
zz007700000000000000000000000043 03 80 00 08     eth1
";
        let all = parse_if_inet6(text);
        // The first line's address is 30 hex digits: skipped, as is garbage.
        assert_eq!(all.len(), 4, "{all:?}");
        let tentative = &all[0];
        assert_eq!(tentative.addr, "fd00:7700::42".parse::<Ipv6Addr>().unwrap());
        assert_eq!((tentative.ifindex, tentative.prefix_len), (2, 128));
        assert!(!tentative.usable_global(), "tentative");
        assert!(!all[1].usable_global(), "link-local");
        assert!(!all[2].usable_global(), "host scope");
        assert!(!all[3].usable_global(), "DAD failed");
        let ok = parse_if_inet6("fd007700000000005054fffe12345600 02 40 00 00 eth0\n");
        assert!(ok[0].usable_global());
        assert_eq!(ok[0].name, "eth0");
    }
}
