//! A member device's 1.2 superblock: read it, write it, zero it. One 4 KiB
//! block at 4 KiB; the data area is never touched.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::superblock::{DecodeError, EncodeError, Superblock};
use crate::disk::ioctl;

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
    #[error("superblock says it lives at sector {0}, not 8 (metadata 1.2)")]
    NotAt4k(u64),
}

fn sectors(f: &File) -> io::Result<u64> {
    let bytes = ioctl::device_size(f).or_else(|_| f.metadata().map(|m| m.len()))?;
    Ok(bytes / 512)
}

/// The 1.2 superblock on `f`; `None` when there is no md magic there.
pub fn read(f: &File) -> Result<Option<Superblock>, MemberError> {
    let mut buf = vec![0u8; SB_BLOCK];
    let mut done = 0;
    while done < SB_BLOCK {
        let got = f.read_at(&mut buf[done..], SB_OFFSET + done as u64)?;
        if got == 0 {
            break;
        }
        done += got;
    }
    buf.truncate(done);
    match Superblock::decode(&buf) {
        Ok(sb) => Ok(Some(sb)),
        Err(DecodeError::NoMagic(_)) => Ok(None),
        Err(DecodeError::Short { .. }) if done < 8 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Write `sb` as the member's 1.2 superblock, checking that the member
/// holds the data area it describes, and flush it to the device.
pub fn write(f: &File, sb: &Superblock) -> Result<(), MemberError> {
    if sb.super_offset != SB_OFFSET / 512 {
        return Err(MemberError::NotAt4k(sb.super_offset));
    }
    let have = sectors(f)?;
    let need = sb.data_offset.saturating_add(sb.data_size);
    if need > have {
        return Err(MemberError::TooSmall { have, need });
    }
    let mut block = sb.encode()?;
    block.resize(SB_BLOCK, 0);
    f.write_all_at(&block, SB_OFFSET)?;
    f.sync_data()?;
    Ok(())
}

/// Zero the 1.2 superblock block if it holds md magic; whether it did.
pub fn zero(f: &File) -> Result<bool, MemberError> {
    let mut magic = [0u8; 4];
    if f.read_at(&mut magic, SB_OFFSET)? < 4 || u32::from_le_bytes(magic) != super::MAGIC {
        return Ok(false);
    }
    f.write_all_at(&[0u8; SB_BLOCK], SB_OFFSET)?;
    f.sync_data()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::md::geometry::{superblocks, ArraySpec, Level};
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
        superblocks(&ArraySpec {
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
        assert!(zero(&f).unwrap());
        assert!(read(&f).unwrap().is_none());
        assert!(!zero(&f).unwrap(), "nothing left to zero");
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
