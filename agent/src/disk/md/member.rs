//! A member device's version-1 superblock: read it, write it, zero it. One
//! 4 KiB block, at 4 KiB (1.2) or near the end (1.0); the data area is
//! never touched.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::geometry::{v1_0_super_offset, Metadata, SUPER_OFFSET_SECTORS};
use super::superblock::{DecodeError, EncodeError, Superblock};
use crate::disk::ioctl;
use crate::disk::region::Region;

/// Where a member's bytes are: a whole device (or file), or a partition
/// reached through its disk.
pub trait Medium {
    fn sectors(&self) -> io::Result<u64>;
    /// Up to `want` bytes at `at`; fewer near the end.
    fn read_upto(&self, at: u64, want: usize) -> io::Result<Vec<u8>>;
    fn write_bytes_at(&self, data: &[u8], at: u64) -> io::Result<()>;
    fn sync(&self) -> io::Result<()>;
}

impl Medium for File {
    fn sectors(&self) -> io::Result<u64> {
        let bytes = ioctl::device_size(self).or_else(|_| self.metadata().map(|m| m.len()))?;
        Ok(bytes / 512)
    }

    fn read_upto(&self, at: u64, want: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; want];
        let mut done = 0;
        while done < want {
            let got = self.read_at(&mut buf[done..], at + done as u64)?;
            if got == 0 {
                break;
            }
            done += got;
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn write_bytes_at(&self, data: &[u8], at: u64) -> io::Result<()> {
        self.write_all_at(data, at)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl Medium for Region {
    fn sectors(&self) -> io::Result<u64> {
        Ok(self.len / 512)
    }

    fn read_upto(&self, at: u64, want: usize) -> io::Result<Vec<u8>> {
        let n = self.len.saturating_sub(at).min(want as u64) as usize;
        let mut buf = vec![0u8; n];
        self.read_at(&mut buf, at)?;
        Ok(buf)
    }

    fn write_bytes_at(&self, data: &[u8], at: u64) -> io::Result<()> {
        // Region writes are synced as they go.
        self.write_at(data, at)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Byte offset of the version-1.2 superblock.
pub const SB_OFFSET: u64 = 4096;
/// Bytes read and written there: the kernel's one page.
const SB_BLOCK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("md member I/O: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("md member of {have} sectors cannot hold data up to sector {need}")]
    TooSmall { have: u64, need: u64 },
    #[error("superblock says it lives at sector {said}, but a member of {sectors} sectors has it at 8 (1.2) or {end} (1.0)")]
    Misplaced { said: u64, sectors: u64, end: u64 },
}

/// The 1.2 superblock on `f`; `None` when there is no md magic there.
pub fn read<M: Medium + ?Sized>(f: &M) -> Result<Option<Superblock>, MemberError> {
    read_at(f, SB_OFFSET)
}

/// The 1.0 superblock near the end of `f`; `None` when there is no md magic there.
pub fn read_v1_0<M: Medium + ?Sized>(f: &M) -> Result<Option<Superblock>, MemberError> {
    let sectors = f.sectors()?;
    if sectors < 16 {
        return Ok(None);
    }
    read_at(f, v1_0_super_offset(sectors) * 512)
}

/// Whichever version-1 superblock `f` carries, 1.2 first.
pub fn read_any<M: Medium + ?Sized>(f: &M) -> Result<Option<(Metadata, Superblock)>, MemberError> {
    if let Some(sb) = read(f)? {
        return Ok(Some((Metadata::V1_2, sb)));
    }
    Ok(read_v1_0(f)?.map(|sb| (Metadata::V1_0, sb)))
}

fn read_at<M: Medium + ?Sized>(f: &M, at: u64) -> Result<Option<Superblock>, MemberError> {
    let buf = f.read_upto(at, SB_BLOCK)?;
    // No magic, however few bytes there are, is no superblock; a cut-off
    // one after the magic is an error.
    if buf.get(..4) != Some(super::MAGIC.to_le_bytes().as_slice()) {
        return Ok(None);
    }
    match Superblock::decode(&buf) {
        Ok(sb) => Ok(Some(sb)),
        Err(DecodeError::NoMagic(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Write `sb` where its `super_offset` says (1.2: sector 8; 1.0: this
/// member's end), checking that the member holds the data area it
/// describes, and flush it to the device.
pub fn write<M: Medium + ?Sized>(f: &M, sb: &Superblock) -> Result<(), MemberError> {
    let have = f.sectors()?;
    let end = v1_0_super_offset(have);
    // The data must end before a 1.0 superblock, or before the device's end.
    let limit = match sb.super_offset {
        SUPER_OFFSET_SECTORS => have,
        at if at == end && have >= 16 => end,
        said => {
            return Err(MemberError::Misplaced {
                said,
                sectors: have,
                end,
            })
        }
    };
    let need = sb.data_offset.saturating_add(sb.data_size);
    if need > limit {
        return Err(MemberError::TooSmall { have: limit, need });
    }
    let mut block = sb.encode()?;
    block.resize(SB_BLOCK.min(((have - sb.super_offset) * 512) as usize), 0);
    f.write_bytes_at(&block, sb.super_offset * 512)?;
    f.sync()?;
    Ok(())
}

/// Zero the 1.2 and 1.0 superblock blocks that hold md magic; how many it zeroed.
pub fn zero<M: Medium + ?Sized>(f: &M) -> Result<usize, MemberError> {
    let have = f.sectors()?;
    let mut places = vec![SB_OFFSET];
    if have >= 16 {
        places.push(v1_0_super_offset(have) * 512);
    }
    let mut zeroed = 0;
    for at in places {
        let magic = f.read_upto(at, 4)?;
        if magic.as_slice() == super::MAGIC.to_le_bytes() {
            let len = SB_BLOCK.min((have * 512).saturating_sub(at) as usize);
            f.write_bytes_at(&vec![0u8; len], at)?;
            zeroed += 1;
        }
    }
    if zeroed > 0 {
        f.sync()?;
    }
    Ok(zeroed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::md::geometry::{superblocks, ArraySpec, Level, Metadata};
    use uuid::Uuid;

    fn member(dir: &std::path::Path, name: &str, bytes: u64) -> File {
        let path = dir.join(name);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.set_len(bytes).unwrap();
        f
    }

    fn one_sb(sectors: u64) -> Superblock {
        sb_with(Metadata::V1_2, sectors)
    }

    fn sb_with(metadata: Metadata, sectors: u64) -> Superblock {
        superblocks(&ArraySpec {
            metadata,
            level: Level::Raid1,
            set_uuid: Uuid::from_u128(5),
            name: "root".into(),
            member_sectors: vec![sectors; 2],
            device_uuids: vec![Uuid::from_u128(1), Uuid::from_u128(2)],
            now: 1,
        })
        .unwrap()
        .remove(0)
    }

    #[test]
    fn writes_reads_and_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        let f = member(dir.path(), "m", 64 << 20);
        assert!(read(&f).unwrap().is_none(), "blank");
        let sb = one_sb(64 << 11);
        write(&f, &sb).unwrap();
        assert_eq!(read(&f).unwrap(), Some(sb));
        assert_eq!(zero(&f).unwrap(), 1);
        assert!(read(&f).unwrap().is_none());
        assert_eq!(zero(&f).unwrap(), 0, "nothing left to zero");
    }

    #[test]
    fn v1_0_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = (64 << 20) + 3 * 512;
        let f = member(dir.path(), "m", bytes);
        let sb = sb_with(Metadata::V1_0, bytes / 512);
        write(&f, &sb).unwrap();
        assert!(read(&f).unwrap().is_none(), "nothing at 4 KiB");
        assert_eq!(read_v1_0(&f).unwrap(), Some(sb.clone()));
        assert_eq!(read_any(&f).unwrap(), Some((Metadata::V1_0, sb.clone())));
        let mut head = [0u8; 4096];
        f.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(
            head, [0u8; 4096],
            "the data area from sector 0 is untouched"
        );
        assert_eq!(zero(&f).unwrap(), 1);
        assert_eq!(read_any(&f).unwrap(), None);
        // A superblock computed for another size does not belong on this member.
        let other = sb_with(Metadata::V1_0, bytes / 512 + 64);
        assert!(matches!(
            write(&f, &other),
            Err(MemberError::Misplaced { .. })
        ));
    }

    #[test]
    fn refuses_a_member_smaller_than_its_superblock_says() {
        let dir = tempfile::tempdir().unwrap();
        let f = member(dir.path(), "m", 32 << 20);
        let sb = one_sb(64 << 11);
        assert!(matches!(write(&f, &sb), Err(MemberError::TooSmall { .. })));
        assert!(read(&f).unwrap().is_none(), "nothing written");
    }

    #[test]
    fn a_tiny_device_has_no_superblock() {
        let dir = tempfile::tempdir().unwrap();
        let f = member(dir.path(), "m", 4096);
        assert!(read(&f).unwrap().is_none());
        assert!(read_any(&f).unwrap().is_none());
    }

    #[test]
    fn a_short_tail_without_magic_is_no_superblock() {
        let dir = tempfile::tempdir().unwrap();
        let f = member(dir.path(), "m", 4096 + 100);
        assert!(read(&f).unwrap().is_none());
        f.write_all_at(&super::super::MAGIC.to_le_bytes(), SB_OFFSET)
            .unwrap();
        assert!(matches!(
            read(&f),
            Err(MemberError::Decode(DecodeError::Short { .. }))
        ));
    }

    #[test]
    fn a_corrupt_superblock_is_an_error_not_absence() {
        let dir = tempfile::tempdir().unwrap();
        let f = member(dir.path(), "m", 64 << 20);
        write(&f, &one_sb(64 << 11)).unwrap();
        f.write_all_at(&[0xff], SB_OFFSET + 100).unwrap();
        assert!(matches!(
            read(&f),
            Err(MemberError::Decode(DecodeError::Checksum { .. }))
        ));
    }
}
