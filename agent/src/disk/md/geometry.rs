//! A new array's geometry and the superblock each member gets: what
//! `mdadm --create --metadata=1.2` writes for RAID-0/1/10 without a
//! write-intent bitmap.
//!
//! Data offset: mdadm reserves 128 MiB of headroom (for later reshapes),
//! halved until it is at most 1/1024 of the member, plus room for the
//! superblock and a bitmap, rounded up to 1 MiB; so small members start
//! their data at 1 MiB and big ones at 129 MiB.
//!
//! Metadata 1.0 (what IPA uses for the ESP mirror) puts the superblock at
//! the end instead, 8 KiB from it and 4 KiB-aligned, with the data from
//! sector 0: firmware reading one member sees a plain FAT filesystem.
//!
//! Every member records the same `data_size` (the smallest member's,
//! rounded down to whole chunks): RAID-0 then has one zone, and the kernel
//! never needs a multi-zone RAID-0 layout.

use uuid::Uuid;

use super::superblock::{Superblock, LAYOUT_RAID10_NEAR2, RESYNC_DONE};

/// The 1.2 superblock sits 4 KiB (8 sectors) into each member.
pub const SUPER_OFFSET_SECTORS: u64 = 8;
/// mdadm's default chunk for striped levels, 512 KiB.
pub const DEFAULT_CHUNK_SECTORS: u32 = 1024;
/// RAID-1 has no chunk; mdadm still rounds its size to 64 KiB.
const RAID1_ROUND_SECTORS: u64 = 128;
const MAX_HEADROOM_SECTORS: u64 = 128 * 2048;
/// Superblock plus reserved bitmap space before the headroom.
const META_SECTORS: u64 = SUPER_OFFSET_SECTORS + 8 + 128;
const MIB_SECTORS: u64 = 2048;

/// Where the superblock lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// At the end of the member, data from sector 0.
    V1_0,
    /// 4 KiB from the start, data after a headroom.
    V1_2,
}

/// The sector of a 1.0 superblock on a member of `sectors` (md's `super_1_load`).
pub fn v1_0_super_offset(sectors: u64) -> u64 {
    sectors.saturating_sub(16) & !7
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Raid0,
    Raid1,
    /// md's raid10 with two near copies.
    Raid10,
}

impl Level {
    /// `level` in the superblock.
    pub fn md_level(self) -> i32 {
        match self {
            Self::Raid0 => 0,
            Self::Raid1 => 1,
            Self::Raid10 => 10,
        }
    }

    fn layout(self) -> u32 {
        match self {
            Self::Raid10 => LAYOUT_RAID10_NEAR2,
            _ => 0,
        }
    }

    fn chunk_sectors(self) -> u32 {
        match self {
            Self::Raid1 => 0,
            _ => DEFAULT_CHUNK_SECTORS,
        }
    }

    /// The fewest members md runs the level with. IPA passes `--force`, so
    /// mdadm builds a one-disk RAID-1 or RAID-0 too; RAID-10 needs both copies.
    pub fn min_members(self) -> usize {
        match self {
            Self::Raid0 | Self::Raid1 => 1,
            Self::Raid10 => 2,
        }
    }
}

/// What the caller decides about a new array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySpec {
    pub metadata: Metadata,
    pub level: Level,
    pub set_uuid: Uuid,
    /// `set_name`; see [`super::set_name`].
    pub name: String,
    /// Each member's size in 512-byte sectors, in role order.
    pub member_sectors: Vec<u64>,
    /// One per member (`device_uuid`, informational).
    pub device_uuids: Vec<Uuid>,
    /// Seconds since the epoch, for `ctime` and `utime`.
    pub now: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeometryError {
    #[error("RAID level {level:?} needs at least {min} members, got {got}")]
    TooFewMembers {
        level: Level,
        min: usize,
        got: usize,
    },
    #[error("{members} members but {uuids} device UUIDs")]
    UuidCount { members: usize, uuids: usize },
    #[error("a member of {sectors} sectors is too small for an md array")]
    TooSmall { sectors: u64 },
}

/// mdadm's data offset for members of `sectors`.
pub fn data_offset(sectors: u64) -> u64 {
    let mut headroom = MAX_HEADROOM_SECTORS;
    while headroom > 0 && (headroom << 10) > sectors {
        headroom >>= 1;
    }
    (META_SECTORS + headroom).div_ceil(MIB_SECTORS) * MIB_SECTORS
}

/// Sectors of the assembled array whose members each contribute `size`.
pub fn array_sectors(level: Level, size: u64, members: usize) -> u64 {
    let n = members as u64;
    match level {
        Level::Raid0 => size * n,
        Level::Raid1 => size,
        Level::Raid10 => {
            let chunk = u64::from(DEFAULT_CHUNK_SECTORS);
            (size / chunk) * n / 2 * chunk
        }
    }
}

/// One superblock per member, in role order.
pub fn superblocks(spec: &ArraySpec) -> Result<Vec<Superblock>, GeometryError> {
    let n = spec.member_sectors.len();
    if n < spec.level.min_members() {
        return Err(GeometryError::TooFewMembers {
            level: spec.level,
            min: spec.level.min_members(),
            got: n,
        });
    }
    if spec.device_uuids.len() != n {
        return Err(GeometryError::UuidCount {
            members: n,
            uuids: spec.device_uuids.len(),
        });
    }
    let smallest = spec.member_sectors.iter().copied().min().unwrap_or(0);
    let (offset, room) = match spec.metadata {
        Metadata::V1_2 => (
            data_offset(smallest),
            smallest.saturating_sub(data_offset(smallest)),
        ),
        Metadata::V1_0 => (0, v1_0_super_offset(smallest)),
    };
    let round = match spec.level.chunk_sectors() {
        0 => RAID1_ROUND_SECTORS,
        c => u64::from(c),
    };
    let size = room / round * round;
    if size == 0 || array_sectors(spec.level, size, n) == 0 {
        return Err(GeometryError::TooSmall { sectors: smallest });
    }
    // A new mirror is resynced by the kernel once it runs; a stripe has
    // nothing to resync.
    let resync_offset = match spec.level {
        Level::Raid0 => RESYNC_DONE,
        Level::Raid1 | Level::Raid10 => 0,
    };
    let roles: Vec<u16> = (0..n as u16).collect();
    Ok(spec
        .device_uuids
        .iter()
        .zip(&spec.member_sectors)
        .enumerate()
        .map(|(i, (device_uuid, sectors))| Superblock {
            feature_map: 0,
            set_uuid: spec.set_uuid,
            set_name: spec.name.clone(),
            ctime: spec.now,
            level: spec.level.md_level(),
            layout: spec.level.layout(),
            size,
            chunk_sectors: spec.level.chunk_sectors(),
            raid_disks: n as u32,
            data_offset: offset,
            data_size: size,
            super_offset: match spec.metadata {
                Metadata::V1_2 => SUPER_OFFSET_SECTORS,
                Metadata::V1_0 => v1_0_super_offset(*sectors),
            },
            dev_number: i as u32,
            device_uuid: *device_uuid,
            utime: spec.now,
            events: 1,
            resync_offset,
            dev_roles: roles.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 2 * 1024 * 1024;

    fn spec(level: Level, sizes: &[u64]) -> ArraySpec {
        ArraySpec {
            metadata: Metadata::V1_2,
            level,
            set_uuid: Uuid::from_u128(1),
            name: "root".into(),
            member_sectors: sizes.to_vec(),
            device_uuids: (0..sizes.len() as u128)
                .map(|i| Uuid::from_u128(100 + i))
                .collect(),
            now: 1_700_000_000,
        }
    }

    #[test]
    fn data_offset_follows_mdadm() {
        // mdadm: 2048 sectors for small members, 264192 from 128 GiB up.
        assert_eq!(data_offset(100 * 2048), 2048);
        assert_eq!(data_offset(10 * GIB), 18432);
        assert_eq!(data_offset(128 * GIB), 264_192);
        assert_eq!(data_offset(4096 * GIB), 264_192);
    }

    #[test]
    fn raid1_uses_the_smallest_member() {
        let sbs = superblocks(&spec(Level::Raid1, &[GIB, GIB + 4096])).unwrap();
        assert_eq!(sbs.len(), 2);
        let want = (GIB - data_offset(GIB)) / 128 * 128;
        for (i, sb) in sbs.iter().enumerate() {
            assert_eq!(sb.size, want);
            assert_eq!(sb.data_size, want);
            assert_eq!(sb.dev_number, i as u32);
            assert_eq!(sb.role(), Some(i as u16));
            assert_eq!(sb.chunk_sectors, 0);
            assert_eq!(sb.resync_offset, 0);
        }
        assert_eq!(array_sectors(Level::Raid1, want, 2), want);
    }

    #[test]
    fn raid10_is_near2_in_whole_chunks() {
        let sbs = superblocks(&spec(Level::Raid10, &[GIB + 77; 4])).unwrap();
        let sb = &sbs[3];
        assert_eq!((sb.level, sb.layout, sb.chunk_sectors), (10, 0x102, 1024));
        assert_eq!(sb.size % 1024, 0);
        assert_eq!(array_sectors(Level::Raid10, sb.size, 4), sb.size * 2);
        assert_eq!(array_sectors(Level::Raid10, 3 * 1024, 3), 4 * 1024);
    }

    #[test]
    fn raid0_is_clean_and_striped() {
        let sbs = superblocks(&spec(Level::Raid0, &[GIB, GIB])).unwrap();
        assert_eq!(sbs[0].resync_offset, RESYNC_DONE);
        assert_eq!(array_sectors(Level::Raid0, sbs[0].size, 2), 2 * sbs[0].size);
    }

    #[test]
    fn v1_0_sits_at_the_end_with_data_from_zero() {
        let mut s = spec(Level::Raid1, &[GIB + 5, GIB + 1000]);
        s.metadata = Metadata::V1_0;
        let sbs = superblocks(&s).unwrap();
        assert_eq!(sbs[0].super_offset, (GIB + 5 - 16) & !7);
        assert_eq!(sbs[1].super_offset, (GIB + 1000 - 16) & !7);
        for sb in &sbs {
            assert_eq!(sb.data_offset, 0);
            assert!(
                sb.data_size <= sbs[0].super_offset,
                "data stays below the superblock"
            );
            assert_eq!(sb.data_size % 128, 0);
        }
        assert_eq!(v1_0_super_offset(10), 0);
    }

    #[test]
    fn refuses_what_cannot_be_an_array() {
        assert!(matches!(
            superblocks(&spec(Level::Raid10, &[GIB])),
            Err(GeometryError::TooFewMembers { got: 1, .. })
        ));
        assert_eq!(
            superblocks(&spec(Level::Raid1, &[GIB])).unwrap()[0].raid_disks,
            1
        );
        assert!(matches!(
            superblocks(&spec(Level::Raid1, &[2048, 2048])),
            Err(GeometryError::TooSmall { .. })
        ));
        let mut s = spec(Level::Raid1, &[GIB, GIB]);
        s.device_uuids.pop();
        assert!(matches!(
            superblocks(&s),
            Err(GeometryError::UuidCount { .. })
        ));
    }
}
