//! IPA's ATA Security Erase (`_ata_erase`), natively: the same states
//! (SEC1-SEC6 of ACS-4 figure 12) and the same decisions, with the empty
//! user password IPA sets through `hdparm ... NULL`.

use std::time::Duration;

use super::cdb;
use super::identify::{Identify, Security};
use super::sgio::Transport;
use super::AtaError;

/// The empty user password (32 zero bytes), IPA's `NULL`.
const PASSWORD: [u8; 32] = [0u8; 32];
const SHORT: Duration = Duration::from_secs(30);
/// When the drive gives no estimate: as long as the slowest drives take.
const ERASE_WITHOUT_ESTIMATE: Duration = Duration::from_secs(12 * 3600);

/// What the erase did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No security feature set (or no ATA at all): IPA shreds instead.
    Unsupported,
    Erased {
        enhanced: bool,
    },
}

pub fn identify(t: &mut dyn Transport) -> Result<Identify, AtaError> {
    let mut data = [0u8; 512];
    t.data_in(cdb::IDENTIFY_DEVICE, &mut data, SHORT)?;
    Ok(Identify::parse(&data))
}

/// Erase the drive behind `t` with SECURITY ERASE UNIT, following IPA.
pub fn secure_erase(t: &mut dyn Transport) -> Result<Outcome, AtaError> {
    let sec = match identify(t) {
        Ok(id) => id.security,
        // IPA's smartctl check: a device that does not answer ATA commands
        // is not secure-erasable, which is not an error.
        Err(AtaError::NotAta | AtaError::Transport(_)) => return Ok(Outcome::Unsupported),
        Err(e) => return Err(e),
    };
    if !sec.supported {
        return Ok(Outcome::Unsupported);
    }
    if sec.frozen {
        return Err(AtaError::Frozen);
    }
    let sec = if sec.locked { unlock(t)? } else { sec };
    if sec.locked {
        return Err(AtaError::PasswordSet);
    }
    if !sec.enabled {
        t.data_out(
            cdb::SECURITY_SET_PASSWORD,
            &cdb::security_block(false, &PASSWORD),
            SHORT,
        )
        .map_err(|e| AtaError::Step("setting the security password", Box::new(e)))?;
    }
    let enhanced = sec.enhanced_erase;
    let timeout = if enhanced {
        sec.enhanced_erase_time
    } else {
        sec.erase_time
    }
    // Twice the drive's estimate, and never less than ten minutes.
    .map_or(ERASE_WITHOUT_ESTIMATE, |t| {
        (t * 2).max(Duration::from_secs(600))
    });
    let erased = t
        .non_data(cdb::SECURITY_ERASE_PREPARE, SHORT)
        .and_then(|()| {
            t.data_out(
                cdb::SECURITY_ERASE_UNIT,
                &cdb::security_block(enhanced, &PASSWORD),
                timeout,
            )
        });
    if let Err(e) = erased {
        // Unlock, so that a shred can still run if Ironic allows one.
        let _ = unlock(t);
        return Err(AtaError::Step("erasing", Box::new(e)));
    }
    // A completed erase leaves security disabled (SEC1).
    if identify(t)?.security.enabled {
        return Err(AtaError::StillEnabled);
    }
    Ok(Outcome::Erased { enhanced })
}

/// SECURITY UNLOCK with the empty user password, as IPA tries after a
/// failed earlier attempt; the state afterwards.
fn unlock(t: &mut dyn Transport) -> Result<Security, AtaError> {
    if let Err(e) = t.data_out(
        cdb::SECURITY_UNLOCK,
        &cdb::security_block(false, &PASSWORD),
        SHORT,
    ) {
        tracing::info!(error = %e, "security unlock with the empty password failed");
    }
    Ok(identify(t)?.security)
}

#[cfg(test)]
mod tests {
    use super::super::identify::tests::identify_data;
    use super::*;

    /// A drive in a given security state that follows ACS's transitions,
    /// and records the commands it was sent.
    struct Drive {
        w128: u16,
        password: Option<[u8; 32]>,
        sent: Vec<u8>,
        fail_erase: bool,
        erase_timeout: Option<Duration>,
    }

    impl Drive {
        fn new(w128: u16) -> Self {
            Self {
                w128,
                password: None,
                sent: Vec::new(),
                fail_erase: false,
                erase_timeout: None,
            }
        }
        fn aborted() -> AtaError {
            AtaError::Aborted {
                sense_key: 0x0b,
                asc: 0,
                ascq: 0x1d,
                ata_error: Some(0x04),
                ata_status: Some(0x51),
            }
        }
    }

    impl Transport for Drive {
        fn data_in(&mut self, c: u8, buf: &mut [u8; 512], _: Duration) -> Result<(), AtaError> {
            self.sent.push(c);
            *buf = identify_data(self.w128, 0x0002, 0x0003);
            Ok(())
        }
        fn data_out(&mut self, c: u8, block: &[u8; 512], t: Duration) -> Result<(), AtaError> {
            self.sent.push(c);
            let given: [u8; 32] = block[2..34].try_into().unwrap();
            match c {
                cdb::SECURITY_SET_PASSWORD => {
                    if self.w128 & 0x0008 != 0 {
                        return Err(Self::aborted());
                    }
                    self.password = Some(given);
                    self.w128 |= 0x0002;
                }
                cdb::SECURITY_UNLOCK => {
                    if self.password != Some(given) {
                        return Err(Self::aborted());
                    }
                    self.w128 &= !0x0004;
                }
                cdb::SECURITY_ERASE_UNIT => {
                    self.erase_timeout = Some(t);
                    if self.fail_erase || self.password != Some(given) {
                        // A failed erase leaves the drive locked (SEC4).
                        self.w128 |= 0x0004;
                        return Err(Self::aborted());
                    }
                    self.password = None;
                    self.w128 &= !0x0006;
                }
                _ => return Err(AtaError::NotAta),
            }
            Ok(())
        }
        fn non_data(&mut self, c: u8, _: Duration) -> Result<(), AtaError> {
            self.sent.push(c);
            Ok(())
        }
    }

    #[test]
    fn sec1_sets_the_empty_password_then_erases_enhanced() {
        // Supported, enhanced erase supported, not enabled, not frozen.
        let mut d = Drive::new(0x0021);
        assert_eq!(
            secure_erase(&mut d).unwrap(),
            Outcome::Erased { enhanced: true }
        );
        assert_eq!(
            d.sent,
            [
                cdb::IDENTIFY_DEVICE,
                cdb::SECURITY_SET_PASSWORD,
                cdb::SECURITY_ERASE_PREPARE,
                cdb::SECURITY_ERASE_UNIT,
                cdb::IDENTIFY_DEVICE
            ]
        );
        // Word 90 said 3 x 2 minutes: twice that, at least ten minutes.
        assert_eq!(d.erase_timeout, Some(Duration::from_secs(720)));
        assert_eq!(d.w128 & 0x0006, 0, "security disabled again");
    }

    #[test]
    fn frozen_is_an_error_and_nothing_is_sent() {
        let mut d = Drive::new(0x0009);
        let e = secure_erase(&mut d).unwrap_err();
        assert!(matches!(e, AtaError::Frozen), "{e}");
        assert_eq!(d.sent, [cdb::IDENTIFY_DEVICE]);
    }

    #[test]
    fn no_security_feature_set_is_unsupported_not_an_error() {
        let mut d = Drive::new(0x0000);
        assert_eq!(secure_erase(&mut d).unwrap(), Outcome::Unsupported);
        assert_eq!(d.sent, [cdb::IDENTIFY_DEVICE], "nothing else is sent");
    }

    #[test]
    fn a_drive_locked_by_an_earlier_attempt_is_unlocked_and_erased() {
        let mut d = Drive::new(0x0007);
        d.password = Some(PASSWORD);
        assert_eq!(
            secure_erase(&mut d).unwrap(),
            Outcome::Erased { enhanced: false }
        );
        assert_eq!(d.sent[1], cdb::SECURITY_UNLOCK);
    }

    #[test]
    fn someone_elses_password_is_refused() {
        let mut d = Drive::new(0x0007);
        d.password = Some([b'x'; 32]);
        let e = secure_erase(&mut d).unwrap_err();
        assert!(matches!(e, AtaError::PasswordSet), "{e}");
        assert!(!d.sent.contains(&cdb::SECURITY_ERASE_UNIT));
    }

    #[test]
    fn a_failed_erase_unlocks_the_drive_for_a_shred() {
        let mut d = Drive::new(0x0001);
        d.fail_erase = true;
        let e = secure_erase(&mut d).unwrap_err();
        assert!(e.to_string().contains("erasing"), "{e}");
        assert_eq!(d.w128 & 0x0004, 0, "unlocked after the failure");
        assert_eq!(d.sent.last(), Some(&cdb::IDENTIFY_DEVICE));
    }

    #[test]
    fn a_device_without_ata_is_unsupported() {
        struct Scsi;
        impl Transport for Scsi {
            fn data_in(&mut self, _: u8, _: &mut [u8; 512], _: Duration) -> Result<(), AtaError> {
                Err(AtaError::NotAta)
            }
            fn data_out(&mut self, _: u8, _: &[u8; 512], _: Duration) -> Result<(), AtaError> {
                Err(AtaError::NotAta)
            }
            fn non_data(&mut self, _: u8, _: Duration) -> Result<(), AtaError> {
                Err(AtaError::NotAta)
            }
        }
        assert_eq!(secure_erase(&mut Scsi).unwrap(), Outcome::Unsupported);
    }
}
