//! The Sanitize command (admin opcode 84h, NVMe Base Specification 2.0
//! section 5.24), which IPA does not have: the operator opts in
//! (`ferrite-nvme-sanitize`). A sanitize erases all user data in the NVM
//! subsystem, every namespace and every cache, and runs in the background
//! after the command completes, so the erase follows it through the
//! Sanitize Status log page until it ends, within a bound derived from the
//! controller's own estimate.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::admin::{Admin, Command};
use super::identify::Sanicap;
use super::sanitize_log::{self, SanitizeLog, Status};
use super::NvmeError;

pub const OPCODE: u8 = 0x84;
/// The Sanitize command itself only starts the operation.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Never wait less than this for a sanitize the controller estimates.
const MIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Without an estimate: a crypto erase replaces a key; a block erase or
/// an overwrite may take as long as the slowest drives take to write.
const CRYPTO_WITHOUT_ESTIMATE: Duration = Duration::from_secs(3600);
const MEDIA_WITHOUT_ESTIMATE: Duration = Duration::from_secs(12 * 3600);
const POLL_MIN: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(10);

/// A sanitize operation (SANACT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeAction {
    /// The media encryption keys replaced (SANACT 100b).
    Crypto,
    /// Every block erased in the media (SANACT 010b).
    Block,
    /// The media overwritten (SANACT 011b).
    Overwrite,
}

impl SanitizeAction {
    const ALL: [Self; 3] = [Self::Crypto, Self::Block, Self::Overwrite];

    /// The word in `ferrite-nvme-sanitize`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Crypto => "crypto",
            Self::Block => "block",
            Self::Overwrite => "overwrite",
        }
    }

    /// The name in logs and a step's result.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crypto => "nvme_sanitize_crypto_erase",
            Self::Block => "nvme_sanitize_block_erase",
            Self::Overwrite => "nvme_sanitize_overwrite",
        }
    }

    fn sanact(self) -> u32 {
        match self {
            Self::Block => 2,
            Self::Overwrite => 3,
            Self::Crypto => 4,
        }
    }

    /// SANICAP's CES, BES and OWS bits.
    pub fn supported_by(self, sanicap: Sanicap) -> bool {
        match self {
            Self::Crypto => sanicap.crypto_erase(),
            Self::Block => sanicap.block_erase(),
            Self::Overwrite => sanicap.overwrite(),
        }
    }

    /// How long to wait for it: twice the controller's estimate (ETCE,
    /// ETBE, ETO), at least [`MIN_TIMEOUT`].
    pub fn timeout(self, log: &SanitizeLog) -> Duration {
        let (estimate, without) = match self {
            Self::Crypto => (log.crypto_erase_time, CRYPTO_WITHOUT_ESTIMATE),
            Self::Block => (log.block_erase_time, MEDIA_WITHOUT_ESTIMATE),
            Self::Overwrite => (log.overwrite_time, MEDIA_WITHOUT_ESTIMATE),
        };
        estimate.map_or(without, |e| (e.saturating_mul(2)).max(MIN_TIMEOUT))
    }

    /// The Sanitize command that runs it: AUSE set (unrestricted
    /// completion), so that after a failure the erase may leave failure
    /// mode and fall back as it does when Format NVM fails; one overwrite
    /// pass of zeros, not inverted; the media deallocated afterwards
    /// (NDAS clear, which NDI never refuses).
    pub fn command(self) -> Command {
        let owpass: u32 = if self == Self::Overwrite { 1 } else { 0 };
        Command {
            opcode: OPCODE,
            cdw10: cdw10(self.sanact(), true, owpass, false, false),
            cdw11: 0,
            ..Command::default()
        }
    }
}

/// Exit Failure Mode (SANACT 001b): media access again after a failed
/// sanitize that was started with AUSE set.
pub fn exit_failure_mode() -> Command {
    Command {
        opcode: OPCODE,
        cdw10: cdw10(1, false, 0, false, false),
        ..Command::default()
    }
}

/// Command Dword 10: SANACT 2:0, AUSE 3, OWPASS 7:4, OIPBP 8, NDAS 9.
fn cdw10(sanact: u32, ause: bool, owpass: u32, oipbp: bool, ndas: bool) -> u32 {
    (sanact & 0x7)
        | u32::from(ause) << 3
        | (owpass & 0xf) << 4
        | u32::from(oipbp) << 8
        | u32::from(ndas) << 9
}

/// The operator's sanitize operations in order of preference
/// (`ferrite-nvme-sanitize=crypto,block`); none: off, IPA's Format NVM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preference([Option<SanitizeAction>; 3]);

impl Preference {
    /// `crypto`, `block`, `overwrite` or a comma-separated list of them;
    /// empty or a false word (`0`, `off`, ...) is off.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() || ferrite_protocol::loose::bool_word(value) == Some(false) {
            return Ok(Self::default());
        }
        let mut list = [None; 3];
        for (n, word) in value.split(',').map(str::trim).enumerate() {
            let action = SanitizeAction::ALL
                .into_iter()
                .find(|a| a.word().eq_ignore_ascii_case(word))
                .ok_or_else(|| {
                    format!(
                        "{word:?} is not a sanitize operation: expected crypto, block or \
                         overwrite, or a comma-separated list of them in order of preference, \
                         or off"
                    )
                })?;
            if list.contains(&Some(action)) {
                return Err(format!("{word:?} is listed twice"));
            }
            // Three distinct actions at most, so `n` stays in bounds.
            list[n] = Some(action);
        }
        Ok(Self(list))
    }

    pub fn is_off(self) -> bool {
        self.0[0].is_none()
    }

    pub fn actions(self) -> impl Iterator<Item = SanitizeAction> {
        self.0.into_iter().flatten()
    }

    /// What an express erase may run: a crypto erase takes seconds, a
    /// block erase or an overwrite as long as writing the media.
    pub fn express(self) -> Self {
        let crypto = self.actions().any(|a| a == SanitizeAction::Crypto);
        Self([crypto.then_some(SanitizeAction::Crypto), None, None])
    }

    /// The first preferred operation the controller offers.
    pub fn choose(self, sanicap: Sanicap) -> Option<SanitizeAction> {
        self.actions().find(|a| a.supported_by(sanicap))
    }
}

/// Time as the poll loop sees it; a fake one in tests.
pub trait Clock {
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, d: Duration);
}

/// The monotonic clock and real sleeps.
pub struct RealClock(Instant);

impl RealClock {
    pub fn start() -> Self {
        Self(Instant::now())
    }
}

impl Clock for RealClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Run `action` and wait for it to end. With `leave_failure_mode`, a
/// failed sanitize is followed by Exit Failure Mode, so that the disk can
/// be written by whatever erase comes next.
pub fn run(
    dev: &mut dyn Admin,
    action: SanitizeAction,
    leave_failure_mode: bool,
    clock: &mut dyn Clock,
) -> Result<(), NvmeError> {
    let log = sanitize_log::read(dev)?;
    if log.status == Status::InProgress {
        // An earlier agent's sanitize (the controller refuses another
        // while one runs): let it end, whatever its outcome.
        warn!(device = %dev.path().display(), progress = log.percent(),
              "a sanitize is already running; waiting for it to end");
        let timeout = SanitizeAction::ALL
            .into_iter()
            .find(|a| a.sanact() == log.cdw10 & 0x7)
            .map_or(MEDIA_WITHOUT_ESTIMATE, |a| a.timeout(&log));
        if let Err(e) = wait(dev, log.cdw10, timeout, clock) {
            // A failed one does not stop a new sanitize; a running one
            // makes the controller refuse it, which says so.
            warn!(device = %dev.path().display(), error = %e, "the earlier sanitize did not complete");
        }
    }
    let timeout = action.timeout(&log);
    let cmd = action.command();
    info!(device = %dev.path().display(), action = action.name(), cdw10 = cmd.cdw10,
          timeout_s = timeout.as_secs(), "NVMe Sanitize");
    dev.submit("Sanitize", &cmd, &mut [], COMMAND_TIMEOUT)?;
    match wait(dev, cmd.cdw10, timeout, clock) {
        Err(NvmeError::SanitizeFailed { path, sstat, .. }) if leave_failure_mode => {
            let left = dev.submit(
                "Sanitize (Exit Failure Mode)",
                &exit_failure_mode(),
                &mut [],
                COMMAND_TIMEOUT,
            );
            if let Err(e) = &left {
                warn!(device = %path.display(), error = %e, "could not leave sanitize failure mode");
            }
            Err(NvmeError::SanitizeFailed {
                path,
                sstat,
                left_failure_mode: left.is_ok(),
            })
        }
        other => other,
    }
}

/// Poll the log page until the sanitize whose CDW10 is `cdw10` has ended,
/// or `timeout` has passed.
fn wait(
    dev: &mut dyn Admin,
    cdw10: u32,
    timeout: Duration,
    clock: &mut dyn Clock,
) -> Result<(), NvmeError> {
    let start = clock.elapsed();
    let interval = (timeout / 200).clamp(POLL_MIN, POLL_MAX);
    let mut seen_running = false;
    let mut reported = 0;
    loop {
        let log = sanitize_log::read(dev)?;
        // The page is about this sanitize once it names it or has shown
        // it running; until then it may still describe an older one.
        let ours = log.cdw10 == cdw10 || seen_running;
        match log.status {
            Status::Completed | Status::CompletedNoDeallocate if ours => return Ok(()),
            Status::Failed if ours => {
                return Err(NvmeError::SanitizeFailed {
                    path: dev.path().to_path_buf(),
                    sstat: log.status.sstat(),
                    left_failure_mode: false,
                })
            }
            Status::InProgress => {
                seen_running = true;
                if log.percent() >= reported + 10 {
                    reported = log.percent() / 10 * 10;
                    info!(device = %dev.path().display(), progress = log.percent(), "NVMe Sanitize");
                }
            }
            _ => {}
        }
        let waited = clock.elapsed().saturating_sub(start);
        if waited >= timeout {
            return Err(NvmeError::SanitizeTimeout {
                path: dev.path().to_path_buf(),
                waited,
                percent: log.percent(),
            });
        }
        clock.sleep(interval.min(timeout - waited));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_dwords_are_the_specs() {
        // Crypto erase: SANACT 100b, AUSE (bit 3).
        let c = SanitizeAction::Crypto.command();
        assert_eq!((c.opcode, c.nsid, c.cdw10, c.cdw11), (0x84, 0, 0x0c, 0));
        // Block erase: SANACT 010b, AUSE.
        assert_eq!(SanitizeAction::Block.command().cdw10, 0x0a);
        // Overwrite: SANACT 011b, AUSE, OWPASS 1 (bits 7:4), pattern 0.
        let c = SanitizeAction::Overwrite.command();
        assert_eq!((c.cdw10, c.cdw11), (0x1b, 0));
        // Exit Failure Mode: SANACT 001b alone.
        assert_eq!(exit_failure_mode().cdw10, 0x01);
        // Every field in its place: 16 passes (0), OIPBP bit 8, NDAS bit 9.
        assert_eq!(cdw10(3, true, 16, true, true), 0x30b);
        assert_eq!(cdw10(3, false, 15, false, false), 0xf3);
    }

    #[test]
    fn sanicap_decides_what_runs() {
        let p = Preference::parse("crypto,block").unwrap();
        assert_eq!(p.choose(Sanicap(0b111)), Some(SanitizeAction::Crypto));
        assert_eq!(p.choose(Sanicap(0b110)), Some(SanitizeAction::Block));
        assert_eq!(p.choose(Sanicap(0b100)), None, "overwrite not asked for");
        assert_eq!(p.choose(Sanicap(0)), None, "no Sanitize command");
        // NDI and NODMMAS say nothing about support.
        assert_eq!(p.choose(Sanicap(0b11 << 30 | 1 << 29)), None);
        let p = Preference::parse("overwrite, Block").unwrap();
        assert_eq!(p.choose(Sanicap(0b111)), Some(SanitizeAction::Overwrite));
        assert_eq!(p.choose(Sanicap(0b011)), Some(SanitizeAction::Block));
        assert_eq!(Preference::default().choose(Sanicap(0b111)), None);
    }

    #[test]
    fn express_keeps_only_a_crypto_erase() {
        let p = Preference::parse("block,crypto").unwrap().express();
        assert_eq!(p.actions().collect::<Vec<_>>(), [SanitizeAction::Crypto]);
        assert!(Preference::parse("block,overwrite")
            .unwrap()
            .express()
            .is_off());
    }

    #[test]
    fn the_option_parses_or_says_why_not() {
        for off in ["", "off", "0", "false", "no"] {
            assert!(Preference::parse(off).unwrap().is_off(), "{off:?}");
        }
        let p = Preference::parse("crypto,block,overwrite").unwrap();
        assert_eq!(p.actions().count(), 3);
        let e = Preference::parse("crypto,shred").unwrap_err();
        assert!(e.contains("\"shred\" is not a sanitize operation"), "{e}");
        let e = Preference::parse("crypto,CRYPTO").unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        assert!(Preference::parse("crypto,").is_err());
        assert!(Preference::parse("yes").is_err(), "which one?");
        assert!(Preference::parse("crypto,block,overwrite,crypto").is_err());
    }

    #[test]
    fn the_wait_follows_the_estimate() {
        let log = |eto: u32, etbe: u32, etce: u32| {
            SanitizeLog::parse(&sanitize_log::tests::page(0, 0, 0, eto, etbe, etce)).unwrap()
        };
        let l = log(3 * 3600, u32::MAX, 5);
        assert_eq!(
            SanitizeAction::Overwrite.timeout(&l),
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(SanitizeAction::Crypto.timeout(&l), MIN_TIMEOUT);
        assert_eq!(SanitizeAction::Block.timeout(&l), MEDIA_WITHOUT_ESTIMATE);
        let l = log(u32::MAX, 0, u32::MAX);
        assert_eq!(SanitizeAction::Crypto.timeout(&l), CRYPTO_WITHOUT_ESTIMATE);
        assert_eq!(SanitizeAction::Block.timeout(&l), MIN_TIMEOUT);
    }
}
