//! A DHCPv4 lease's timers (RFC 2131 §4.4.5): when to renew (T1), rebind
//! (T2) and give the address up, and how long to wait between
//! retransmissions in RENEWING and REBINDING. Pure arithmetic.

use std::time::Duration;

/// Offsets from the moment the acknowledged REQUEST was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub expiry: Duration,
}

/// Option 51's "infinity".
pub const INFINITE: u32 = 0xffff_ffff;
/// Shorter leases are taken as this long, so that a server handing out
/// 0-second leases cannot make the client cycle as fast as packets go.
pub const MIN_LEASE_SECS: u32 = 8;

impl Timers {
    /// `None` for a lease that never expires (0xffffffff, or no lease time
    /// at all, which RFC 2131 forbids in an ACK: treated as the old client
    /// did, as a lease to keep). T1 and T2 come from options 58 and 59 if
    /// they are consistent (0 < T1 ≤ T2 ≤ lease), else the RFC's defaults of
    /// 0.5 and 0.875 of the lease.
    pub fn of(lease_secs: Option<u32>, t1: Option<u32>, t2: Option<u32>) -> Option<Self> {
        let lease = match lease_secs {
            None | Some(INFINITE) => return None,
            Some(s) => u64::from(s.max(MIN_LEASE_SECS)),
        };
        let default_t2 = lease * 7 / 8;
        let t2 = t2
            .map(u64::from)
            .filter(|&t| t > 0 && t <= lease)
            .unwrap_or(default_t2);
        let t1 = t1
            .map(u64::from)
            .filter(|&t| t > 0 && t <= t2)
            .unwrap_or(lease / 2)
            .min(t2);
        Some(Self {
            t1: Duration::from_secs(t1),
            t2: Duration::from_secs(t2),
            expiry: Duration::from_secs(lease),
        })
    }
}

/// How long to wait for an answer before retransmitting in RENEWING or
/// REBINDING, with `remaining` left until T2 (or expiry): RFC 2131 says
/// half the remaining time, but not less than 60 s. That floor assumes
/// leases of hours; a 2-minute lease would get one try per state. So the
/// floor scales with the lease (1/16 of it, at least 2 s so a short lease
/// does not flood the server, at most the RFC's 60 s), and a wait never
/// runs past the state's end.
pub fn retransmit_wait(remaining: Duration, lease: Duration) -> Duration {
    let floor = (lease / 16).clamp(Duration::from_secs(2), Duration::from_secs(60));
    (remaining / 2).max(floor).min(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_are_half_and_seven_eighths() {
        assert_eq!(
            Timers::of(Some(3600), None, None),
            Some(Timers {
                t1: secs(1800),
                t2: secs(3150),
                expiry: secs(3600)
            })
        );
    }

    #[test]
    fn server_t1_t2_are_used_when_consistent() {
        assert_eq!(
            Timers::of(Some(120), Some(10), Some(30)),
            Some(Timers {
                t1: secs(10),
                t2: secs(30),
                expiry: secs(120)
            })
        );
        // T2 past the lease: the default T2; T1 past T2: the default T1.
        assert_eq!(
            Timers::of(Some(100), Some(90), Some(200)),
            Some(Timers {
                t1: secs(50),
                t2: secs(87),
                expiry: secs(100)
            })
        );
        // Only T2 given, below the default T1: T1 is clamped to it.
        assert_eq!(Timers::of(Some(100), None, Some(20)).unwrap().t1, secs(20));
    }

    #[test]
    fn infinite_and_missing_leases_never_renew() {
        assert_eq!(Timers::of(Some(INFINITE), Some(10), Some(20)), None);
        assert_eq!(Timers::of(None, None, None), None);
        // A zero lease (or T1) does not make the client spin.
        let t = Timers::of(Some(0), Some(0), Some(0)).unwrap();
        assert_eq!((t.t1, t.t2, t.expiry), (secs(4), secs(7), secs(8)));
        // The largest finite lease does not overflow.
        let t = Timers::of(Some(INFINITE - 1), None, None).unwrap();
        assert!(t.t1 < t.t2 && t.t2 < t.expiry);
    }

    #[test]
    fn retransmit_waits() {
        // An hour-long lease: half the remaining time, never under 60 s...
        assert_eq!(retransmit_wait(secs(1000), secs(3600)), secs(500));
        assert_eq!(retransmit_wait(secs(100), secs(3600)), secs(60));
        // ...and never past the state's end.
        assert_eq!(retransmit_wait(secs(30), secs(3600)), secs(30));
        // A 2-minute lease: the floor is 7.5 s, so several tries per state.
        assert_eq!(retransmit_wait(secs(20), secs(120)), secs(10));
        assert_eq!(
            retransmit_wait(secs(10), secs(120)),
            Duration::from_millis(7500)
        );
        // A tiny lease still waits 2 s between tries.
        assert_eq!(retransmit_wait(secs(3), secs(10)), secs(2));
        assert_eq!(retransmit_wait(Duration::ZERO, secs(10)), Duration::ZERO);
    }
}
