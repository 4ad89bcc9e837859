//! ATA PASS-THROUGH (16) command blocks (SAT-4, 12.2.2): an ATA command
//! carried in a SCSI CDB, the way the kernel's libata and SAT bridges
//! accept them.

pub const OPCODE: u8 = 0x85;

/// The ATA commands the security feature set uses (ACS-4, 7.33-7.40).
pub const IDENTIFY_DEVICE: u8 = 0xec;
pub const SECURITY_SET_PASSWORD: u8 = 0xf1;
pub const SECURITY_UNLOCK: u8 = 0xf2;
pub const SECURITY_ERASE_PREPARE: u8 = 0xf3;
pub const SECURITY_ERASE_UNIT: u8 = 0xf4;

/// The ATA protocol field (byte 1, bits 4:1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    NonData = 3,
    PioDataIn = 4,
    PioDataOut = 5,
}

/// A 16-byte CDB for a 28-bit ATA command moving `sectors` 512-byte blocks.
pub fn pass_through_16(command: u8, protocol: Protocol, sectors: u8) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = OPCODE;
    // MULTIPLE_COUNT 0, PROTOCOL, EXTEND 0 (28-bit command).
    cdb[1] = (protocol as u8) << 1;
    cdb[2] = match protocol {
        // No data: no transfer length.
        Protocol::NonData => 0,
        // T_DIR (bit 3: from the device), BYTE_BLOCK (bit 2: in blocks),
        // T_LENGTH = 2 (bits 1:0: the length is in the sector count field).
        Protocol::PioDataIn => 0x08 | 0x04 | 0x02,
        Protocol::PioDataOut => 0x04 | 0x02,
    };
    cdb[6] = sectors;
    // DEVICE: bit 6 (LBA) set, as the standard recommends for new commands.
    cdb[13] = 0x40;
    cdb[14] = command;
    cdb
}

/// The 512-byte data block of SECURITY SET PASSWORD, UNLOCK and ERASE
/// UNIT (ACS-4 tables 70, 73, 74): word 0 bit 0 chooses the master
/// password (1) or the user's (0); for ERASE UNIT bit 1 asks for the
/// enhanced erase; words 1-16 hold the 32-byte password.
pub fn security_block(enhanced: bool, password: &[u8; 32]) -> [u8; 512] {
    let mut block = [0u8; 512];
    block[0] = if enhanced { 0x02 } else { 0x00 };
    block[2..34].copy_from_slice(password);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_device_is_a_pio_in_of_one_block() {
        // The same bytes `hdparm -I` and `sg_sat_identify` send.
        assert_eq!(
            pass_through_16(IDENTIFY_DEVICE, Protocol::PioDataIn, 1),
            [0x85, 0x08, 0x0e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0xec, 0]
        );
    }

    #[test]
    fn security_commands_carry_their_data_out() {
        assert_eq!(
            pass_through_16(SECURITY_SET_PASSWORD, Protocol::PioDataOut, 1),
            [0x85, 0x0a, 0x06, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0xf1, 0]
        );
        assert_eq!(
            pass_through_16(SECURITY_ERASE_UNIT, Protocol::PioDataOut, 1)[14],
            0xf4
        );
        assert_eq!(
            pass_through_16(SECURITY_ERASE_PREPARE, Protocol::NonData, 0),
            [0x85, 0x06, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0xf3, 0]
        );
    }

    #[test]
    fn the_erase_block_says_user_password_and_enhanced() {
        let b = security_block(true, &[0u8; 32]);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x0002);
        assert!(b[2..].iter().all(|x| *x == 0));
        let b = security_block(false, &[b'p'; 32]);
        assert_eq!(b[0], 0);
        assert_eq!(&b[2..34], &[b'p'; 32]);
        assert!(b[34..].iter().all(|x| *x == 0));
    }
}
