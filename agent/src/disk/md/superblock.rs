//! The md version-1 superblock (`struct mdp_superblock_1`, Linux
//! `include/uapi/linux/raid/md_p.h`): 256 bytes of fields, all
//! little-endian, then one 16-bit role per device slot. Encoded and decoded
//! by hand: no maintained crate covers md metadata.

use uuid::Uuid;

/// `MD_SB_MAGIC`.
pub const MAGIC: u32 = 0xa92b_4efc;
/// The fixed part; `dev_roles` follows.
pub const FIXED_LEN: usize = 256;
/// The kernel keeps a superblock in one 4 KiB page, so at most
/// (4096 - 256) / 2 role slots.
pub const MAX_DEV: u32 = 1920;
/// `dev_roles` value of a spare.
pub const ROLE_SPARE: u16 = 0xffff;
/// `dev_roles` value of a faulty device.
pub const ROLE_FAULTY: u16 = 0xfffe;
/// `resync_offset` of an array known to be in sync ("MaxSector").
pub const RESYNC_DONE: u64 = u64::MAX;
/// `set_name` is 32 bytes, NUL-padded (no terminator when full).
pub const NAME_LEN: usize = 32;

/// `MD_FEATURE_BITMAP_OFFSET`: an internal write-intent bitmap.
pub const FEATURE_BITMAP_OFFSET: u32 = 1;
/// `MD_FEATURE_ALL` (bitmap, recovery offset, reshape, bad blocks,
/// replacement, backwards reshape, new offset, recovery bitmap, clustered,
/// journal, PPL, multiple PPLs, RAID-0 layout): the kernel refuses a
/// superblock with any other bit, and so does [`Superblock::decode`]. Known
/// bits are kept, not acted on: this agent only writes `feature_map` 0.
pub const FEATURES_KNOWN: u32 = 0x1fff;

/// RAID-10 layout: `near_copies | far_copies << 8` (md's `raid10.c`).
pub const LAYOUT_RAID10_NEAR2: u32 = 0x102;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub feature_map: u32,
    pub set_uuid: Uuid,
    /// `set_name`, at most 32 bytes.
    pub set_name: String,
    /// Seconds since the epoch (the low 40 bits on disk).
    pub ctime: u64,
    /// 0, 1, 10 (also -1 linear, 4, 5, 6 when read).
    pub level: i32,
    pub layout: u32,
    /// Sectors of each member the array uses.
    pub size: u64,
    /// Sectors (512 B).
    pub chunk_sectors: u32,
    pub raid_disks: u32,
    pub data_offset: u64,
    pub data_size: u64,
    pub super_offset: u64,
    pub dev_number: u32,
    pub device_uuid: Uuid,
    pub utime: u64,
    pub events: u64,
    pub resync_offset: u64,
    /// Role of every device slot, indexed by `dev_number`; its length is `max_dev`.
    pub dev_roles: Vec<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("no md superblock (magic {0:#010x})")]
    NoMagic(u32),
    #[error("md superblock major version {0} is not 1")]
    Version(u32),
    #[error("md superblock max_dev {0} exceeds {MAX_DEV}")]
    MaxDev(u32),
    #[error("md superblock is {needed} bytes but only {got} were read")]
    Short { needed: usize, got: usize },
    #[error("md superblock checksum {stored:#010x} != computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("md superblock feature map {0:#x} has features this agent does not handle")]
    Features(u32),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("md set name {0:?} is longer than {NAME_LEN} bytes")]
    NameTooLong(String),
    #[error("md superblock with {0} role slots exceeds {MAX_DEV}")]
    MaxDev(usize),
}

const OFF_MAGIC: usize = 0;
const OFF_MAJOR: usize = 4;
const OFF_FEATURE: usize = 8;
const OFF_SET_UUID: usize = 16;
const OFF_SET_NAME: usize = 32;
const OFF_CTIME: usize = 64;
const OFF_LEVEL: usize = 72;
const OFF_LAYOUT: usize = 76;
const OFF_SIZE: usize = 80;
const OFF_CHUNK: usize = 88;
const OFF_RAID_DISKS: usize = 92;
const OFF_DATA_OFFSET: usize = 128;
const OFF_DATA_SIZE: usize = 136;
const OFF_SUPER_OFFSET: usize = 144;
const OFF_DEV_NUMBER: usize = 160;
const OFF_DEVICE_UUID: usize = 168;
const OFF_UTIME: usize = 192;
const OFF_EVENTS: usize = 200;
const OFF_RESYNC: usize = 208;
const OFF_CSUM: usize = 216;
const OFF_MAX_DEV: usize = 220;

/// The low 40 bits of `ctime`/`utime` are seconds (the top 24 microseconds).
const TIME_SEC_MASK: u64 = (1 << 40) - 1;

impl Superblock {
    /// Bytes on disk: the fixed part and two per role slot.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + 2 * self.dev_roles.len()
    }

    /// This device's role (its slot in the array), if it is active.
    pub fn role(&self) -> Option<u16> {
        self.dev_roles
            .get(self.dev_number as usize)
            .copied()
            .filter(|r| *r < ROLE_FAULTY)
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.set_name.len() > NAME_LEN {
            return Err(EncodeError::NameTooLong(self.set_name.clone()));
        }
        if self.dev_roles.len() > MAX_DEV as usize {
            return Err(EncodeError::MaxDev(self.dev_roles.len()));
        }
        let mut b = vec![0u8; self.encoded_len()];
        put32(&mut b, OFF_MAGIC, MAGIC);
        put32(&mut b, OFF_MAJOR, 1);
        put32(&mut b, OFF_FEATURE, self.feature_map);
        b[OFF_SET_UUID..OFF_SET_UUID + 16].copy_from_slice(self.set_uuid.as_bytes());
        b[OFF_SET_NAME..OFF_SET_NAME + self.set_name.len()]
            .copy_from_slice(self.set_name.as_bytes());
        put64(&mut b, OFF_CTIME, self.ctime & TIME_SEC_MASK);
        put32(&mut b, OFF_LEVEL, self.level as u32);
        put32(&mut b, OFF_LAYOUT, self.layout);
        put64(&mut b, OFF_SIZE, self.size);
        put32(&mut b, OFF_CHUNK, self.chunk_sectors);
        put32(&mut b, OFF_RAID_DISKS, self.raid_disks);
        put64(&mut b, OFF_DATA_OFFSET, self.data_offset);
        put64(&mut b, OFF_DATA_SIZE, self.data_size);
        put64(&mut b, OFF_SUPER_OFFSET, self.super_offset);
        put32(&mut b, OFF_DEV_NUMBER, self.dev_number);
        b[OFF_DEVICE_UUID..OFF_DEVICE_UUID + 16].copy_from_slice(self.device_uuid.as_bytes());
        put64(&mut b, OFF_UTIME, self.utime & TIME_SEC_MASK);
        put64(&mut b, OFF_EVENTS, self.events);
        put64(&mut b, OFF_RESYNC, self.resync_offset);
        put32(&mut b, OFF_MAX_DEV, self.dev_roles.len() as u32);
        for (i, role) in self.dev_roles.iter().enumerate() {
            let at = FIXED_LEN + 2 * i;
            b[at..at + 2].copy_from_slice(&role.to_le_bytes());
        }
        let csum = checksum(&b);
        put32(&mut b, OFF_CSUM, csum);
        Ok(b)
    }

    /// Parse and verify (magic, version, checksum) a superblock from the
    /// bytes at its offset; `b` may be longer than the superblock.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let short = |needed| DecodeError::Short {
            needed,
            got: b.len(),
        };
        if b.len() < FIXED_LEN {
            return Err(short(FIXED_LEN));
        }
        let magic = get32(b, OFF_MAGIC);
        if magic != MAGIC {
            return Err(DecodeError::NoMagic(magic));
        }
        let major = get32(b, OFF_MAJOR);
        if major != 1 {
            return Err(DecodeError::Version(major));
        }
        let max_dev = get32(b, OFF_MAX_DEV);
        if max_dev > MAX_DEV {
            return Err(DecodeError::MaxDev(max_dev));
        }
        let len = FIXED_LEN + 2 * max_dev as usize;
        let b = b.get(..len).ok_or_else(|| short(len))?;
        let stored = get32(b, OFF_CSUM);
        let computed = checksum(b);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed });
        }
        let feature_map = get32(b, OFF_FEATURE);
        if feature_map & !FEATURES_KNOWN != 0 {
            return Err(DecodeError::Features(feature_map));
        }
        let name = &b[OFF_SET_NAME..OFF_SET_NAME + NAME_LEN];
        let name = &name[..name.iter().position(|c| *c == 0).unwrap_or(NAME_LEN)];
        Ok(Self {
            feature_map,
            set_uuid: uuid_at(b, OFF_SET_UUID),
            set_name: String::from_utf8_lossy(name).into_owned(),
            ctime: get64(b, OFF_CTIME) & TIME_SEC_MASK,
            level: get32(b, OFF_LEVEL) as i32,
            layout: get32(b, OFF_LAYOUT),
            size: get64(b, OFF_SIZE),
            chunk_sectors: get32(b, OFF_CHUNK),
            raid_disks: get32(b, OFF_RAID_DISKS),
            data_offset: get64(b, OFF_DATA_OFFSET),
            data_size: get64(b, OFF_DATA_SIZE),
            super_offset: get64(b, OFF_SUPER_OFFSET),
            dev_number: get32(b, OFF_DEV_NUMBER),
            device_uuid: uuid_at(b, OFF_DEVICE_UUID),
            utime: get64(b, OFF_UTIME) & TIME_SEC_MASK,
            events: get64(b, OFF_EVENTS),
            resync_offset: get64(b, OFF_RESYNC),
            dev_roles: (0..max_dev as usize)
                .map(|i| u16::from_le_bytes([b[FIXED_LEN + 2 * i], b[FIXED_LEN + 2 * i + 1]]))
                .collect(),
        })
    }
}

/// `calc_sb_1_csum` (Linux `drivers/md/md.c`): the little-endian 32-bit
/// words of `256 + 2 * max_dev` bytes, `sb_csum` counted as zero, summed in
/// 64 bits and folded once; a trailing 16-bit word (odd `max_dev`) is added
/// on its own.
pub fn checksum(sb: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    let mut words = sb.chunks_exact(4);
    for (i, w) in words.by_ref().enumerate() {
        if i * 4 != OFF_CSUM {
            sum += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    if let [a, b] = words.remainder() {
        sum += u64::from(u16::from_le_bytes([*a, *b]));
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// Callers have checked `b` holds the fixed part, so these slices exist.
fn get32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn get64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn uuid_at(b: &[u8], at: usize) -> Uuid {
    let mut w = [0u8; 16];
    w.copy_from_slice(&b[at..at + 16]);
    Uuid::from_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(raid_disks: u32) -> Superblock {
        Superblock {
            feature_map: 0,
            set_uuid: Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
            set_name: "any:root".into(),
            ctime: 1_700_000_000,
            level: 1,
            layout: 0,
            size: 1 << 20,
            chunk_sectors: 0,
            raid_disks,
            data_offset: 2048,
            data_size: 1 << 20,
            super_offset: 8,
            dev_number: 1,
            device_uuid: Uuid::from_u128(7),
            utime: 1_700_000_001,
            events: 1,
            resync_offset: 0,
            dev_roles: (0..raid_disks as u16).collect(),
        }
    }

    #[test]
    fn round_trips_and_offsets_match_md_p_h() {
        let sb = sample(2);
        let b = sb.encode().unwrap();
        assert_eq!(b.len(), 260);
        assert_eq!(&b[0..4], &[0xfc, 0x4e, 0x2b, 0xa9]);
        assert_eq!(&b[32..40], b"any:root");
        assert_eq!(get32(&b, 92), 2, "raid_disks");
        assert_eq!(get64(&b, 128), 2048, "data_offset");
        assert_eq!(get32(&b, 160), 1, "dev_number");
        assert_eq!(get32(&b, 220), 2, "max_dev");
        assert_eq!(u16::from_le_bytes([b[258], b[259]]), 1, "dev_roles[1]");
        assert_eq!(Superblock::decode(&b).unwrap(), sb);
        assert_eq!(sb.role(), Some(1));
    }

    #[test]
    fn checksum_is_the_folded_word_sum() {
        // Two words and a trailing half word; the csum word is skipped.
        let mut b = vec![0u8; 256 + 2];
        put32(&mut b, 0, 0xffff_ffff);
        put32(&mut b, 4, 0x0000_0002);
        put32(&mut b, OFF_CSUM, 0xdead_beef);
        b[256..258].copy_from_slice(&0x0100u16.to_le_bytes());
        // 0xffffffff + 2 + 0x100 = 0x1_0000_0101 -> 0x101 + 1
        assert_eq!(checksum(&b), 0x102);
    }

    #[test]
    fn odd_slot_counts_use_the_half_word() {
        let sb = sample(3);
        let b = sb.encode().unwrap();
        assert_eq!(b.len(), 262);
        assert_eq!(Superblock::decode(&b).unwrap().dev_roles, vec![0, 1, 2]);
    }

    #[test]
    fn refuses_corruption() {
        let mut b = sample(2).encode().unwrap();
        b[100] ^= 1;
        assert!(matches!(
            Superblock::decode(&b),
            Err(DecodeError::Checksum { .. })
        ));
        assert!(matches!(
            Superblock::decode(&b[..200]),
            Err(DecodeError::Short { .. })
        ));
        assert!(matches!(
            Superblock::decode(&[0u8; 512]),
            Err(DecodeError::NoMagic(0))
        ));
        let mut v0 = sample(2).encode().unwrap();
        put32(&mut v0, OFF_MAJOR, 0);
        assert_eq!(Superblock::decode(&v0), Err(DecodeError::Version(0)));
        // An array mid-recovery (bit 1) is still an md member; bit 13 is unknown.
        let mut recovering = sample(2);
        recovering.feature_map = 2;
        assert_eq!(
            Superblock::decode(&recovering.encode().unwrap())
                .unwrap()
                .feature_map,
            2
        );
        let mut unknown = sample(2);
        unknown.feature_map = 1 << 13;
        assert_eq!(
            Superblock::decode(&unknown.encode().unwrap()),
            Err(DecodeError::Features(1 << 13))
        );
        let mut big = sample(2).encode().unwrap();
        put32(&mut big, OFF_MAX_DEV, 5000);
        assert_eq!(Superblock::decode(&big), Err(DecodeError::MaxDev(5000)));
    }

    #[test]
    fn refuses_long_names() {
        let mut sb = sample(2);
        sb.set_name = "h".repeat(33);
        assert!(matches!(sb.encode(), Err(EncodeError::NameTooLong(_))));
        sb.set_name = "h".repeat(32);
        let b = sb.encode().unwrap();
        assert_eq!(Superblock::decode(&b).unwrap().set_name.len(), 32);
    }
}
