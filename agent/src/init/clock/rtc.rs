//! Writing the system time to the hardware clock before the machine goes
//! down, as IPA's `hwclock --systohc` (UTC): the next boot, and the OS the
//! node boots into, start from a clock the SNTP sync corrected.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Timelike};
use tracing::{info, warn};

pub const RTC_DEVICE: &str = "/dev/rtc0";
/// Shutdown waits at most this long for the RTC driver.
const WRITE_BUDGET: Duration = Duration::from_secs(2);

/// The kernel's `struct rtc_time` (`<linux/rtc.h>`): `struct tm` fields.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RtcTime {
    pub tm_sec: libc::c_int,
    pub tm_min: libc::c_int,
    pub tm_hour: libc::c_int,
    pub tm_mday: libc::c_int,
    /// 0 to 11.
    pub tm_mon: libc::c_int,
    /// Years since 1900.
    pub tm_year: libc::c_int,
    pub tm_wday: libc::c_int,
    pub tm_yday: libc::c_int,
    pub tm_isdst: libc::c_int,
}

// RTC_SET_TIME = _IOW('p', 0x0a, struct rtc_time)
nix::ioctl_write_ptr!(rtc_set_time, b'p', 0x0a, RtcTime);

impl RtcTime {
    /// UTC broken-down time of `secs` since the Unix epoch.
    pub fn from_unix(secs: i64) -> Option<Self> {
        let t = DateTime::from_timestamp(secs, 0)?;
        Some(Self {
            tm_sec: t.second() as i32,
            tm_min: t.minute() as i32,
            tm_hour: t.hour() as i32,
            tm_mday: t.day() as i32,
            tm_mon: t.month0() as i32,
            tm_year: t.year() - 1900,
            tm_wday: t.weekday().num_days_from_sunday() as i32,
            tm_yday: t.ordinal0() as i32,
            tm_isdst: 0,
        })
    }
}

impl std::fmt::Display for RtcTime {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.tm_year + 1900,
            self.tm_mon + 1,
            self.tm_mday,
            self.tm_hour,
            self.tm_min,
            self.tm_sec
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("opening {0}: {1}")]
    Open(String, std::io::Error),
    #[error("the system time is out of the RTC's range")]
    Range,
    #[error("RTC_SET_TIME on {0}: {1}")]
    Ioctl(String, nix::Error),
}

/// Set the RTC at `device` to the system time (UTC).
pub fn write_system_time(device: &Path) -> Result<RtcTime, RtcError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let tm = RtcTime::from_unix(now.as_secs() as i64).ok_or(RtcError::Range)?;
    let name = device.display().to_string();
    // hwclock opens it read-only too: RTC_SET_TIME needs CAP_SYS_TIME, not a writable fd.
    let file = std::fs::File::open(device).map_err(|e| RtcError::Open(name.clone(), e))?;
    // SAFETY: a valid fd and a pointer to a live, correctly laid out rtc_time.
    unsafe { rtc_set_time(file.as_raw_fd(), &tm) }.map_err(|e| RtcError::Ioctl(name, e))?;
    Ok(tm)
}

/// PID 1's shutdown hook: write the RTC, logging the outcome; a driver that
/// hangs costs shutdown at most [`WRITE_BUDGET`].
pub fn save_at_shutdown() {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("rtc".into())
        .spawn(move || {
            let _ = tx.send(write_system_time(Path::new(RTC_DEVICE)));
        });
    if let Err(e) = spawned {
        warn!("RTC not set: no thread: {e}");
        return;
    }
    match rx.recv_timeout(WRITE_BUDGET) {
        Ok(Ok(tm)) => info!("RTC set to {tm} from the system clock (hwclock --systohc)"),
        Ok(Err(e)) => warn!("RTC not set: {e}"),
        Err(_) => warn!("RTC not set: {RTC_DEVICE} did not answer within {WRITE_BUDGET:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_kernel() {
        // Nine ints, and the ioctl number <linux/rtc.h> gives RTC_SET_TIME.
        assert_eq!(std::mem::size_of::<RtcTime>(), 36);
        let nr = nix::request_code_write!(b'p', 0x0a, std::mem::size_of::<RtcTime>());
        assert_eq!(nr as u64, 0x4024_700a);
    }

    #[test]
    fn unix_time_to_rtc_fields() {
        // 2026-12-02 14:05:09 UTC, a Wednesday, day 336 of the year.
        let tm = RtcTime::from_unix(1_796_220_309).unwrap();
        assert_eq!(
            tm,
            RtcTime {
                tm_sec: 9,
                tm_min: 5,
                tm_hour: 14,
                tm_mday: 2,
                tm_mon: 11,
                tm_year: 126,
                tm_wday: 3,
                tm_yday: 335,
                tm_isdst: 0,
            }
        );
        assert_eq!(tm.to_string(), "2026-12-02 14:05:09 UTC");
        let epoch = RtcTime::from_unix(0).unwrap();
        assert_eq!(
            (epoch.tm_year, epoch.tm_mon, epoch.tm_mday, epoch.tm_wday),
            (70, 0, 1, 4)
        );
        // 2000-02-29, a leap day.
        let leap = RtcTime::from_unix(951_782_400).unwrap();
        assert_eq!((leap.tm_mon, leap.tm_mday, leap.tm_yday), (1, 29, 59));
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let e = write_system_time(Path::new("/nonexistent/rtc0")).unwrap_err();
        assert!(
            e.to_string().starts_with("opening /nonexistent/rtc0:"),
            "{e}"
        );
    }
}
