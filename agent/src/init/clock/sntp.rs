//! The SNTP exchange (RFC 4330): one 48-byte client request, one 48-byte
//! server reply, validated before its time is trusted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An NTP packet without extension fields or authenticator.
pub const PACKET_LEN: usize = 48;
/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_TO_UNIX: i64 = 2_208_988_800;
/// LI 0 (no warning), VN 4, mode 3 (client).
const REQUEST_FLAGS: u8 = (4 << 3) | 3;
const MODE_SERVER: u8 = 4;
const LEAP_UNSYNCHRONISED: u8 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SntpError {
    #[error("reply of {0} bytes, an NTP packet has at least {PACKET_LEN}")]
    Short(usize),
    #[error("reply has NTP version {0}, expected 3 or 4")]
    Version(u8),
    #[error("reply has mode {0}, expected 4 (server)")]
    Mode(u8),
    #[error("server is not synchronised (leap indicator 3)")]
    Unsynchronised,
    #[error("kiss-o'-death from the server (stratum 0, code {0:?})")]
    KissOfDeath(String),
    #[error("reply has stratum {0}, expected 1 to 15")]
    Stratum(u8),
    #[error("reply's originate timestamp does not echo our request (a stale or forged reply)")]
    Originate,
    #[error("reply's transmit timestamp is zero")]
    ZeroTransmit,
}

/// A 64-bit NTP timestamp: seconds since 1900 (32 bits) and a binary
/// fraction (32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    pub fn from_system(t: SystemTime) -> Self {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        // Wraps in 2036 by design: [`Self::unix_nanos`] reads era 1 back.
        let secs = (since.as_secs() as i64 + NTP_TO_UNIX) as u64 & 0xffff_ffff;
        let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        Self((secs << 32) | frac)
    }

    /// Nanoseconds since the Unix epoch. Seconds with the top bit clear are
    /// read as era 1 (2036 to 2104), as RFC 4330 section 3 recommends.
    pub fn unix_nanos(self) -> i128 {
        let secs = (self.0 >> 32) as i64;
        let secs = if secs & 0x8000_0000 == 0 {
            secs + (1 << 32)
        } else {
            secs
        } - NTP_TO_UNIX;
        let nanos = ((self.0 & 0xffff_ffff) * 1_000_000_000) >> 32;
        i128::from(secs) * 1_000_000_000 + i128::from(nanos)
    }

    fn read(buf: &[u8], at: usize) -> Self {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[at..at + 8]);
        Self(u64::from_be_bytes(b))
    }
}

/// The client request; `transmit` is echoed back as the reply's originate
/// timestamp.
pub fn request(transmit: NtpTimestamp) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = REQUEST_FLAGS;
    p[40..48].copy_from_slice(&transmit.0.to_be_bytes());
    p
}

/// What a valid reply tells us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub stratum: u8,
    /// T2: when the server received the request.
    pub receive: NtpTimestamp,
    /// T3: when the server sent the reply.
    pub transmit: NtpTimestamp,
}

/// Validate a server's reply to the request sent with `sent`.
pub fn parse_reply(buf: &[u8], sent: NtpTimestamp) -> Result<Reply, SntpError> {
    if buf.len() < PACKET_LEN {
        return Err(SntpError::Short(buf.len()));
    }
    let (leap, version, mode) = (buf[0] >> 6, (buf[0] >> 3) & 7, buf[0] & 7);
    if !(3..=4).contains(&version) {
        return Err(SntpError::Version(version));
    }
    if mode != MODE_SERVER {
        return Err(SntpError::Mode(mode));
    }
    let stratum = buf[1];
    if stratum == 0 {
        let code = buf[12..16]
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect();
        return Err(SntpError::KissOfDeath(code));
    }
    if stratum > 15 {
        return Err(SntpError::Stratum(stratum));
    }
    if leap == LEAP_UNSYNCHRONISED {
        return Err(SntpError::Unsynchronised);
    }
    if NtpTimestamp::read(buf, 24) != sent {
        return Err(SntpError::Originate);
    }
    let transmit = NtpTimestamp::read(buf, 40);
    if transmit.0 == 0 {
        return Err(SntpError::ZeroTransmit);
    }
    Ok(Reply {
        stratum,
        receive: NtpTimestamp::read(buf, 32),
        transmit,
    })
}

/// The clock offset and round-trip delay (RFC 4330 section 5) in
/// nanoseconds, from T1 (sent), the reply's T2 and T3, and T4 (received).
pub fn offset_and_delay(t1: NtpTimestamp, reply: &Reply, t4: NtpTimestamp) -> (i128, Duration) {
    let (t1, t2, t3, t4) = (
        t1.unix_nanos(),
        reply.receive.unix_nanos(),
        reply.transmit.unix_nanos(),
        t4.unix_nanos(),
    );
    let offset = ((t2 - t1) + (t3 - t4)) / 2;
    let delay = ((t4 - t1) - (t3 - t2)).max(0);
    (
        offset,
        Duration::from_nanos(delay.min(u64::MAX as i128) as u64),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A server's reply to `req` claiming `now` (stratum 2, no warning).
    pub(crate) fn good_reply(req: &[u8; PACKET_LEN], now: SystemTime) -> [u8; PACKET_LEN] {
        let mut r = [0u8; PACKET_LEN];
        r[0] = (4 << 3) | 4;
        r[1] = 2;
        r[12..16].copy_from_slice(&[10, 0, 2, 2]);
        r[24..32].copy_from_slice(&req[40..48]);
        let ts = NtpTimestamp::from_system(now).0.to_be_bytes();
        r[32..40].copy_from_slice(&ts);
        r[40..48].copy_from_slice(&ts);
        r
    }

    fn sent() -> (NtpTimestamp, [u8; PACKET_LEN]) {
        // The RTC far in the past, as the QEMU test boots.
        let t1 = NtpTimestamp::from_system(UNIX_EPOCH + Duration::from_secs(978_307_200));
        (t1, request(t1))
    }

    #[test]
    fn request_is_a_v4_client_packet_carrying_t1() {
        let (t1, req) = sent();
        assert_eq!(req[0], 0x23);
        assert_eq!(&req[40..48], &t1.0.to_be_bytes());
        assert!(req[1..40].iter().all(|&b| b == 0));
    }

    #[test]
    fn timestamps_round_trip_across_2036() {
        for secs in [978_307_200u64, 1_796_000_000, 2_085_978_496, 2_200_000_000] {
            let t = UNIX_EPOCH + Duration::new(secs, 500_000_000);
            let back = NtpTimestamp::from_system(t).unix_nanos();
            assert!((back - (secs as i128 * 1_000_000_000 + 500_000_000)).abs() <= 1);
        }
    }

    #[test]
    fn good_reply_gives_the_offset() {
        let (t1, req) = sent();
        let server_now = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let reply = parse_reply(&good_reply(&req, server_now), t1).unwrap();
        assert_eq!(reply.stratum, 2);
        let (offset, delay) = offset_and_delay(t1, &reply, t1);
        assert_eq!(offset, (1_796_000_000 - 978_307_200) * 1_000_000_000);
        assert_eq!(delay, Duration::ZERO);
    }

    #[test]
    fn garbage_and_short_replies_are_rejected() {
        let (t1, req) = sent();
        assert_eq!(parse_reply(b"hello", t1), Err(SntpError::Short(5)));
        // 48 bytes of text: version 5 ('h' = 0x68: LI 1, VN 5, mode 0).
        let text = [b'h'; PACKET_LEN];
        assert_eq!(parse_reply(&text, t1), Err(SntpError::Version(5)));
        // Well-formed, but not an answer to our request.
        let mut r = good_reply(&req, SystemTime::now());
        r[24..32].copy_from_slice(&[0; 8]);
        assert_eq!(parse_reply(&r, t1), Err(SntpError::Originate));
        let mut r = good_reply(&req, SystemTime::now());
        r[40..48].copy_from_slice(&[0; 8]);
        assert_eq!(parse_reply(&r, t1), Err(SntpError::ZeroTransmit));
    }

    #[test]
    fn wrong_mode_is_rejected() {
        let (t1, req) = sent();
        // Our own request reflected back: mode 3.
        assert_eq!(parse_reply(&req, t1), Err(SntpError::Mode(3)));
        let mut r = good_reply(&req, SystemTime::now());
        r[0] = (4 << 3) | 5; // broadcast
        assert_eq!(parse_reply(&r, t1), Err(SntpError::Mode(5)));
    }

    #[test]
    fn kiss_of_death_and_bad_stratum_are_rejected() {
        let (t1, req) = sent();
        let mut r = good_reply(&req, SystemTime::now());
        r[1] = 0;
        r[12..16].copy_from_slice(b"RATE");
        assert_eq!(
            parse_reply(&r, t1),
            Err(SntpError::KissOfDeath("RATE".into()))
        );
        r[1] = 16;
        assert_eq!(parse_reply(&r, t1), Err(SntpError::Stratum(16)));
    }

    #[test]
    fn unsynchronised_server_is_rejected() {
        let (t1, req) = sent();
        let mut r = good_reply(&req, SystemTime::now());
        r[0] |= 3 << 6;
        assert_eq!(parse_reply(&r, t1), Err(SntpError::Unsynchronised));
        // Leap second warnings (LI 1 and 2) are fine.
        r[0] = (1 << 6) | (4 << 3) | 4;
        assert!(parse_reply(&r, t1).is_ok());
    }
}
