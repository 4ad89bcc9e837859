//! The SG_IO ioctl (`<scsi/sg.h>`), carrying ATA PASS-THROUGH CDBs to a
//! disk, and the sense data that says how an ATA command ended.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::time::Duration;

use super::cdb::{self, Protocol};
use super::AtaError;

/// How ATA commands reach a drive: SG_IO on the real thing, a scripted
/// drive in tests (the frozen and locked cases no QEMU device offers).
pub trait Transport {
    /// A command that reads `buf.len()` bytes from the drive.
    fn data_in(
        &mut self,
        command: u8,
        buf: &mut [u8; 512],
        timeout: Duration,
    ) -> Result<(), AtaError>;
    /// A command that sends one 512-byte block.
    fn data_out(
        &mut self,
        command: u8,
        block: &[u8; 512],
        timeout: Duration,
    ) -> Result<(), AtaError>;
    fn non_data(&mut self, command: u8, timeout: Duration) -> Result<(), AtaError>;
}

const SG_IO: libc::Ioctl = 0x2285;
const SG_DXFER_NONE: libc::c_int = -1;
const SG_DXFER_TO_DEV: libc::c_int = -2;
const SG_DXFER_FROM_DEV: libc::c_int = -3;
const SENSE_LEN: usize = 32;

/// `struct sg_io_hdr`.
#[repr(C)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

/// A disk opened for SG_IO.
pub struct SgIo<'a> {
    pub file: &'a File,
}

impl SgIo<'_> {
    fn run(
        &mut self,
        command: u8,
        protocol: Protocol,
        direction: libc::c_int,
        data: Option<&mut [u8; 512]>,
        timeout: Duration,
    ) -> Result<(), AtaError> {
        let sectors = u8::from(data.is_some());
        let cdb = cdb::pass_through_16(command, protocol, sectors);
        let mut sense = [0u8; SENSE_LEN];
        let (ptr, len) = match data {
            Some(d) => (d.as_mut_ptr().cast::<libc::c_void>(), d.len() as u32),
            None => (std::ptr::null_mut(), 0),
        };
        let mut hdr = SgIoHdr {
            interface_id: libc::c_int::from(b'S'),
            dxfer_direction: direction,
            cmd_len: cdb.len() as u8,
            mx_sb_len: SENSE_LEN as u8,
            iovec_count: 0,
            dxfer_len: len,
            dxferp: ptr,
            cmdp: cdb.as_ptr(),
            sbp: sense.as_mut_ptr(),
            timeout: timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            flags: 0,
            pack_id: 0,
            usr_ptr: std::ptr::null_mut(),
            status: 0,
            masked_status: 0,
            msg_status: 0,
            sb_len_wr: 0,
            host_status: 0,
            driver_status: 0,
            resid: 0,
            duration: 0,
            info: 0,
        };
        // SAFETY: the header points at the CDB, the sense buffer and (for a
        // transfer) a 512-byte buffer, all alive across the call; the kernel
        // writes at most `mx_sb_len` and `dxfer_len` bytes into them.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), SG_IO, &mut hdr as *mut SgIoHdr) } != 0 {
            return Err(AtaError::Transport(std::io::Error::last_os_error()));
        }
        let written = usize::from(hdr.sb_len_wr).min(SENSE_LEN);
        outcome(
            hdr.status,
            hdr.host_status,
            hdr.driver_status,
            &sense[..written],
        )
    }
}

impl Transport for SgIo<'_> {
    fn data_in(
        &mut self,
        command: u8,
        buf: &mut [u8; 512],
        timeout: Duration,
    ) -> Result<(), AtaError> {
        self.run(
            command,
            Protocol::PioDataIn,
            SG_DXFER_FROM_DEV,
            Some(buf),
            timeout,
        )
    }

    fn data_out(
        &mut self,
        command: u8,
        block: &[u8; 512],
        timeout: Duration,
    ) -> Result<(), AtaError> {
        let mut copy = *block;
        self.run(
            command,
            Protocol::PioDataOut,
            SG_DXFER_TO_DEV,
            Some(&mut copy),
            timeout,
        )
    }

    fn non_data(&mut self, command: u8, timeout: Duration) -> Result<(), AtaError> {
        self.run(command, Protocol::NonData, SG_DXFER_NONE, None, timeout)
    }
}

/// How a pass-through command ended, from SCSI status and sense data.
pub fn outcome(status: u8, host: u16, driver: u16, sense: &[u8]) -> Result<(), AtaError> {
    const CHECK_CONDITION: u8 = 0x02;
    if host != 0 {
        return Err(AtaError::Host(host));
    }
    if status == 0 && driver & 0x0f == 0 {
        return Ok(());
    }
    if status != CHECK_CONDITION && sense.is_empty() {
        return Err(AtaError::Status(status));
    }
    let s = Sense::parse(sense);
    let info_available = s.asc == 0x00 && s.ascq == 0x1d;
    match s.key {
        // NO SENSE or RECOVERED ERROR with "ATA pass-through information
        // available" and a clean ATA status: the command succeeded.
        0x00 | 0x01 if info_available && s.ata_status.is_some_and(|st| st & 0x01 == 0) => Ok(()),
        // ILLEGAL REQUEST: the bridge or device has no ATA pass-through.
        0x05 => Err(AtaError::NotAta),
        _ => Err(AtaError::Aborted {
            sense_key: s.key,
            asc: s.asc,
            ascq: s.ascq,
            ata_error: s.ata_error,
            ata_status: s.ata_status,
        }),
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Sense {
    key: u8,
    asc: u8,
    ascq: u8,
    ata_error: Option<u8>,
    ata_status: Option<u8>,
}

impl Sense {
    /// Descriptor (72h/73h) or fixed (70h/71h) format; anything shorter
    /// than its header reads as zeros.
    fn parse(b: &[u8]) -> Self {
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        match at(0) & 0x7f {
            0x72 | 0x73 => {
                let mut s = Self {
                    key: at(1) & 0x0f,
                    asc: at(2),
                    ascq: at(3),
                    ..Self::default()
                };
                // Walk the descriptors for the ATA Status Return (09h).
                let end = (8 + usize::from(at(7))).min(b.len());
                let mut d = 8;
                while d + 1 < end {
                    let len = usize::from(at(d + 1)) + 2;
                    if at(d) == 0x09 && d + 13 < end {
                        s.ata_error = Some(at(d + 3));
                        s.ata_status = Some(at(d + 13));
                    }
                    d += len;
                }
                s
            }
            0x70 | 0x71 => Self {
                key: at(2) & 0x0f,
                asc: at(12),
                ascq: at(13),
                // SAT: the INFORMATION field carries ERROR and STATUS.
                ata_error: (at(12) == 0 && at(13) == 0x1d).then(|| at(3)),
                ata_status: (at(12) == 0 && at(13) == 0x1d).then(|| at(4)),
            },
            _ => Self::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor_sense(key: u8, error: u8, status: u8) -> Vec<u8> {
        let mut s = vec![0x72, key, 0x00, 0x1d, 0, 0, 0, 14];
        let mut d = vec![0u8; 14];
        d[0] = 0x09;
        d[1] = 0x0c;
        d[3] = error;
        d[13] = status;
        s.extend(d);
        s
    }

    #[test]
    fn good_status_is_success() {
        assert!(outcome(0, 0, 0, &[]).is_ok());
        assert!(outcome(2, 0, 8, &descriptor_sense(0x01, 0, 0x50)).is_ok());
    }

    #[test]
    fn an_aborted_command_carries_the_ata_registers() {
        // ABORTED COMMAND, ATA error ABRT (04h), status ERR|DRDY (51h).
        let e = outcome(2, 0, 8, &descriptor_sense(0x0b, 0x04, 0x51)).unwrap_err();
        match e {
            AtaError::Aborted {
                sense_key,
                ata_error,
                ata_status,
                ..
            } => {
                assert_eq!(sense_key, 0x0b);
                assert_eq!(ata_error, Some(0x04));
                assert_eq!(ata_status, Some(0x51));
            }
            other => panic!("{other:?}"),
        }
        // The same in fixed format.
        let mut fixed = vec![0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x0b;
        fixed[3] = 0x04;
        fixed[4] = 0x51;
        fixed[13] = 0x1d;
        assert!(matches!(
            outcome(2, 0, 8, &fixed),
            Err(AtaError::Aborted {
                ata_error: Some(4),
                ..
            })
        ));
    }

    #[test]
    fn illegal_request_means_no_ata_behind_it() {
        let mut fixed = vec![0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x05;
        fixed[12] = 0x20;
        assert!(matches!(outcome(2, 0, 8, &fixed), Err(AtaError::NotAta)));
    }

    #[test]
    fn truncated_or_garbage_sense_is_an_error_not_a_panic() {
        for junk in [
            &[0x72u8][..],
            &[0x72, 0x0b, 0, 0, 0, 0, 0, 200, 9],
            &[0xff; 32],
        ] {
            assert!(outcome(2, 0, 8, junk).is_err(), "{junk:?}");
        }
        assert!(matches!(outcome(0, 7, 0, &[]), Err(AtaError::Host(7))));
    }

    #[test]
    fn a_file_is_not_an_sg_device() {
        let f = tempfile::tempfile().unwrap();
        let mut t = SgIo { file: &f };
        let mut buf = [0u8; 512];
        let e = t
            .data_in(cdb::IDENTIFY_DEVICE, &mut buf, Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(e, AtaError::Transport(_)), "{e:?}");
    }
}
