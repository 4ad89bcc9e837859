//! NVMe secure erase through the kernel's admin passthrough, as IPA does
//! with `nvme id-ctrl` and `nvme format -s <ses>`: a cryptographic erase
//! (SES=2) where the controller's FNA says it has one, else a user-data
//! erase (SES=1), keeping the namespace's LBA format and protection
//! information. No nvme-cli in the ramdisk. Beyond IPA, and only when the
//! operator asks (`ferrite-nvme-sanitize`), a Sanitize where the controller
//! offers the operation asked for and has no other namespace.

mod admin;
mod format;
mod identify;
mod passthru;
mod sanitize;
mod sanitize_log;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use admin::Admin;
pub use format::{FormatPlan, SecureErase};
pub use identify::{Controller, Namespace};
pub use sanitize::{Preference as SanitizePreference, SanitizeAction};

/// How long the controller may take to format, as nvme-cli's default.
pub const FORMAT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{}: {command} failed with NVMe status {status:#06x} ({meaning})", path.display())]
    Status {
        path: PathBuf,
        command: &'static str,
        status: u16,
        meaning: &'static str,
    },
    #[error("{}: the controller does not support Format NVM (OACS {oacs:#06x})", path.display())]
    FormatUnsupported { path: PathBuf, oacs: u16 },
    #[error("{}: {reason}", path.display())]
    Identify { path: PathBuf, reason: String },
    #[error("{}: Sanitize failed (SSTAT={sstat}); {}", path.display(), failure_advice(*left_failure_mode))]
    SanitizeFailed {
        path: PathBuf,
        sstat: u8,
        left_failure_mode: bool,
    },
    #[error("{}: Sanitize still running after {} s ({percent}% done); the controller carries \
             on with it and refuses media access until it ends", path.display(), waited.as_secs())]
    SanitizeTimeout {
        path: PathBuf,
        waited: Duration,
        percent: u32,
    },
}

fn failure_advice(left_failure_mode: bool) -> &'static str {
    if left_failure_mode {
        "the controller was told to exit failure mode (Sanitize, SANACT=1) so that the disk can \
         be erased otherwise"
    } else {
        "the controller refuses media access until a sanitize succeeds or it is told to exit \
         failure mode (Sanitize with SANACT=1, e.g. `nvme sanitize -a 1`)"
    }
}

/// What erased the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erased {
    Format(SecureErase),
    Sanitize(SanitizeAction),
}

/// How the erase may go beyond IPA's Format NVM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EraseOptions {
    /// Sanitize instead, when the controller offers one of these.
    pub sanitize: SanitizePreference,
    /// Another erase follows a failure (discard, shred, a metadata wipe):
    /// leave sanitize failure mode so that it can write the disk.
    pub leave_failure_mode: bool,
}

/// A whole NVMe namespace by its block device name (`nvme0n1`), as IPA's
/// `_is_nvme` decides by the `/dev/nvme` prefix.
pub fn is_nvme(name: &str) -> bool {
    name.starts_with("nvme")
}

/// Erase the namespace at `path`: Sanitize when opted in and offered,
/// else Format NVM as IPA does.
pub fn secure_erase(path: &Path, options: EraseOptions) -> Result<Erased, NvmeError> {
    // Nobody else may hold the namespace open while it is erased.
    let f = open(path, true)?;
    let nsid = passthru::namespace_id(&f).map_err(io_err(path, "reading the namespace id"))?;
    let mut dev = passthru::Ioctl { file: &f, path };
    let erased = erase(&mut dev, nsid, options, &mut sanitize::RealClock::start())?;
    // The namespace may have a new capacity or block size, and certainly
    // no partitions: let the kernel see it.
    if let Err(e) = crate::disk::ioctl::reread_partitions(&f) {
        tracing::debug!(device = %path.display(), error = %e, "re-reading partitions after the erase");
    }
    Ok(erased)
}

fn erase(
    dev: &mut dyn Admin,
    nsid: u32,
    options: EraseOptions,
    clock: &mut dyn sanitize::Clock,
) -> Result<Erased, NvmeError> {
    let ctrl = identify::controller(dev)?;
    let path = dev.path().to_path_buf();
    if let Some(action) = options.sanitize.choose(ctrl.sanicap) {
        // A sanitize erases every namespace of the subsystem, including
        // any the step's guards keep (skip_block_devices, RAID members,
        // virtual media) and any not even listed here: only a controller
        // with this one namespace is sanitized.
        match identify::active_namespaces(dev) {
            Ok(1) => {
                sanitize::run(dev, action, options.leave_failure_mode, clock)?;
                return Ok(Erased::Sanitize(action));
            }
            Ok(n) => warn!(device = %path.display(), namespaces = n,
                "not sanitizing a controller with more than one active namespace; Format NVM instead"),
            Err(e) => warn!(device = %path.display(), error = %e,
                "could not count the active namespaces; Format NVM instead of Sanitize"),
        }
    } else if !options.sanitize.is_off() {
        info!(device = %path.display(), sanicap = format_args!("{:#010x}", ctrl.sanicap.0),
              asked = ?options.sanitize.actions().map(SanitizeAction::word).collect::<Vec<_>>(),
              "the controller offers none of the sanitize operations asked for; Format NVM instead");
    }
    let ns = identify::namespace(dev, nsid)?;
    let plan = FormatPlan::for_erase(&ctrl, &ns, nsid).ok_or(NvmeError::FormatUnsupported {
        path: path.clone(),
        oacs: ctrl.oacs,
    })?;
    info!(device = %path.display(), model = %ctrl.model, ses = ?plan.ses,
          nsid = plan.nsid, "NVMe Format NVM");
    format::run(dev, &plan, FORMAT_TIMEOUT)?;
    Ok(Erased::Format(plan.ses))
}

fn open(path: &Path, exclusive: bool) -> Result<File, NvmeError> {
    let mut o = OpenOptions::new();
    o.read(true);
    if exclusive {
        // Nobody else may hold the namespace open while it is formatted.
        o.write(true).custom_flags(libc::O_EXCL);
    }
    o.open(path).map_err(io_err(path, "opening"))
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> NvmeError + 'a {
    move |source| NvmeError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

#[cfg(test)]
mod fake;

#[cfg(test)]
mod tests {
    use super::fake::{Controller as Fake, Ending, FakeClock};
    use super::*;

    const IDENTIFY: u8 = 0x06;
    const GET_LOG_PAGE: u8 = 0x02;
    const SANITIZE: u8 = 0x84;
    const FORMAT: u8 = 0x80;
    const ALL: u32 = 0b111;

    fn opted_in(value: &str, leave_failure_mode: bool) -> EraseOptions {
        EraseOptions {
            sanitize: SanitizePreference::parse(value).unwrap(),
            leave_failure_mode,
        }
    }

    fn run(c: &mut Fake, options: EraseOptions) -> (Result<Erased, NvmeError>, FakeClock) {
        let mut clock = FakeClock::default();
        let r = erase(c, 1, options, &mut clock);
        (r, clock)
    }

    #[test]
    fn not_opted_in_is_ipas_format_whatever_the_controller_offers() {
        let mut c = Fake::new(ALL);
        let (r, clock) = run(&mut c, EraseOptions::default());
        assert_eq!(r.unwrap(), Erased::Format(SecureErase::Crypto));
        assert_eq!(c.opcodes(), [IDENTIFY, IDENTIFY, FORMAT]);
        assert_eq!(c.sent[2].cdw10, 2 << 9, "SES=2");
        assert!(clock.sleeps.is_empty());
    }

    #[test]
    fn a_crypto_sanitize_is_followed_to_its_end() {
        let mut c = Fake::new(ALL);
        c.estimates = [7200, 600, 4];
        c.ending = Ending::Succeeds(4);
        let (r, clock) = run(&mut c, opted_in("crypto,block", false));
        assert_eq!(r.unwrap(), Erased::Sanitize(SanitizeAction::Crypto));
        // Identify, active namespaces, status before, Sanitize, then the
        // status read until it completes; no Format.
        let ops = c.opcodes();
        assert_eq!(ops[..4], [IDENTIFY, IDENTIFY, GET_LOG_PAGE, SANITIZE]);
        assert!(ops[4..].iter().all(|o| *o == GET_LOG_PAGE), "{ops:?}");
        assert_eq!(ops.len(), 4 + 5, "four reads in progress, one completed");
        assert_eq!(c.sent[1].cdw10, 0x02, "CNS 02h");
        assert_eq!(c.sent[2].cdw10, 0x007f_8081);
        assert_eq!(c.sanitizes(), [0x0c]);
        assert_eq!(c.sprog, 0xffff);
        // Polls 3 s apart: the 600 s floor on the bound over 200.
        assert_eq!(clock.sleeps, [Duration::from_secs(3); 4]);
    }

    #[test]
    fn the_first_preference_the_controller_offers_runs() {
        let mut c = Fake::new(0b010);
        let (r, _) = run(&mut c, opted_in("crypto,block", false));
        assert_eq!(r.unwrap(), Erased::Sanitize(SanitizeAction::Block));
        assert_eq!(c.sanitizes(), [0x0a]);
        let mut c = Fake::new(0b100);
        let (r, _) = run(&mut c, opted_in("overwrite", false));
        assert_eq!(r.unwrap(), Erased::Sanitize(SanitizeAction::Overwrite));
        assert_eq!(c.sanitizes(), [0x1b]);
    }

    #[test]
    fn an_operation_not_offered_falls_back_to_format() {
        for sanicap in [0, 0b001, 1 << 29 | 0b11 << 30] {
            let mut c = Fake::new(sanicap);
            c.fna = 0;
            let (r, _) = run(&mut c, opted_in("block,overwrite", false));
            assert_eq!(r.unwrap(), Erased::Format(SecureErase::UserData));
            assert_eq!(c.opcodes(), [IDENTIFY, IDENTIFY, FORMAT], "{sanicap:#x}");
        }
    }

    #[test]
    fn a_controller_with_other_namespaces_is_formatted_not_sanitized() {
        let mut c = Fake::new(ALL);
        c.active_namespaces = vec![1, 2];
        let (r, _) = run(&mut c, opted_in("crypto", false));
        assert_eq!(r.unwrap(), Erased::Format(SecureErase::Crypto));
        assert_eq!(c.opcodes(), [IDENTIFY, IDENTIFY, IDENTIFY, FORMAT]);
        assert!(c.sanitizes().is_empty());
    }

    #[test]
    fn a_failed_sanitize_is_an_error_and_leaves_failure_mode_only_if_asked() {
        let mut c = Fake::new(ALL);
        c.ending = Ending::Fails(2);
        let (r, _) = run(&mut c, opted_in("crypto", false));
        let e = r.unwrap_err();
        assert!(
            matches!(e, NvmeError::SanitizeFailed { sstat: 3, .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("Sanitize failed (SSTAT=3)"), "{msg}");
        assert!(
            msg.contains("exit failure mode (Sanitize with SANACT=1"),
            "{msg}"
        );
        assert_eq!(c.sanitizes(), [0x0c], "no Exit Failure Mode, no Format");
        assert!(!c.opcodes().contains(&FORMAT));

        let mut c = Fake::new(ALL);
        c.ending = Ending::Fails(0);
        let (r, _) = run(&mut c, opted_in("block", true));
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                NvmeError::SanitizeFailed {
                    left_failure_mode: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(c.sanitizes(), [0x0a, 0x01], "then Exit Failure Mode");
    }

    #[test]
    fn a_sanitize_that_never_ends_is_bounded_by_its_estimate() {
        let mut c = Fake::new(ALL);
        c.ending = Ending::Never;
        c.estimates = [u32::MAX, 1800, 5];
        let (r, clock) = run(&mut c, opted_in("block", false));
        let e = r.unwrap_err();
        assert!(
            matches!(e, NvmeError::SanitizeTimeout { waited, .. } if waited == Duration::from_secs(3600)),
            "{e:?}"
        );
        assert!(e.to_string().contains("still running after 3600 s"), "{e}");
        // Twice the 1800 s estimate, polled every 10 s at most.
        assert_eq!(clock.now, Duration::from_secs(3600));
        assert!(clock.sleeps.iter().all(|s| *s <= Duration::from_secs(10)));
        assert_eq!(clock.sleeps.len(), 360);

        // No estimate for a crypto erase: an hour.
        let mut c = Fake::new(ALL);
        c.ending = Ending::Never;
        let (r, clock) = run(&mut c, opted_in("crypto", false));
        assert!(matches!(r, Err(NvmeError::SanitizeTimeout { .. })));
        assert_eq!(clock.now, Duration::from_secs(3600));
    }

    #[test]
    fn an_earlier_sanitize_still_running_is_waited_for_first() {
        let mut c = Fake::new(ALL);
        // An overwrite an earlier agent started, for two more reads.
        c.already_running(0x1b, 2);
        let (r, clock) = run(&mut c, opted_in("crypto", false));
        assert_eq!(r.unwrap(), Erased::Sanitize(SanitizeAction::Crypto));
        // Three reads until it ended; only then ours.
        let ops = c.opcodes();
        assert_eq!(ops[2..5], [GET_LOG_PAGE; 3][..], "{ops:?}");
        assert_eq!(ops[5], SANITIZE, "{ops:?}");
        assert_eq!(c.sanitizes(), [0x0c]);
        assert!(!clock.sleeps.is_empty());
    }
}
