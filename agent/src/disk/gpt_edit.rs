//! In-place edits of an existing GPT that keep every entry where it is
//! (the `gpt` crate repacks entries on write, which would renumber the
//! partitions of a deployed image): moving the backup header to the disk's
//! end (`sgdisk -e`, IPA's `fix_gpt_partition`) and adding one partition.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The most bytes of partition entries we accept (8192 entries of 128
/// bytes; tools write 16 KiB). The header's count and size are the image's
/// word, so they are bounded before anything is allocated.
pub const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// Where a GPT lives: a disk, or memory (tests, fuzzing).
pub trait Medium {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
}

impl Medium for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
}

/// A disk image in memory, of fixed size.
pub struct MemDisk(pub std::cell::RefCell<Vec<u8>>);

impl Medium for MemDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.0.borrow();
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| data.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.0.borrow_mut();
        let dst = usize::try_from(offset)
            .ok()
            .and_then(|o| data.get_mut(o..o.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::WriteZero))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

/// One partition entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub number: u32,
    pub type_guid: uuid::Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Gpt {
    sector: u64,
    /// The primary header (92 bytes as read; more is preserved).
    header: Vec<u8>,
    entries: Vec<u8>,
    entry_size: usize,
}

impl Gpt {
    /// The primary GPT of a disk of `sectors` sectors, if it has one. Every
    /// header field is checked as the UEFI spec allows before it sizes an
    /// allocation or an offset: CRCs, `my_lba` 1, entries of 128·2^n bytes,
    /// a bounded entry array inside the disk before the first usable LBA,
    /// usable LBAs in order and inside the disk.
    pub fn read<M: Medium + ?Sized>(f: &M, sector: u64, sectors: u64) -> io::Result<Option<Self>> {
        let sector_len = usize::try_from(sector)
            .ok()
            .filter(|s| (512..=65536).contains(s))
            .ok_or_else(|| invalid(format!("sector size {sector} is not valid")))?;
        if sectors < 3 {
            return Ok(None);
        }
        let mut header = vec![0u8; sector_len];
        f.read_at(&mut header, sector)?;
        if &header[..8] != b"EFI PART" {
            return Ok(None);
        }
        let size = u32_at(&header, 12) as usize;
        if !(92..=sector_len).contains(&size) {
            return Err(invalid(format!("GPT header size {size} is not valid")));
        }
        let mut check = header[..size].to_vec();
        check[16..20].fill(0);
        if crc32fast::hash(&check) != u32_at(&header, 16) {
            return Err(invalid("the primary GPT header fails its CRC"));
        }
        let my_lba = u64_at(&header, 24);
        if my_lba != 1 {
            return Err(invalid(format!(
                "the primary GPT header says it is at LBA {my_lba}"
            )));
        }
        let count = u64::from(u32_at(&header, 80));
        let entry_size = u64::from(u32_at(&header, 84));
        let bytes = count.saturating_mul(entry_size);
        if entry_size < 128 || !(entry_size / 128).is_power_of_two() || entry_size % 128 != 0 {
            return Err(invalid(format!(
                "GPT entry size {entry_size} is not 128 x 2^n bytes"
            )));
        }
        if count == 0 || bytes > MAX_ENTRY_BYTES {
            return Err(invalid(format!(
                "GPT with {count} entries of {entry_size} bytes is not valid (at most {MAX_ENTRY_BYTES} bytes of entries)"
            )));
        }
        let entry_sectors = bytes.div_ceil(sector);
        let entries_lba = u64_at(&header, 72);
        let first_usable = u64_at(&header, 40);
        let last_usable = u64_at(&header, 48);
        let backup = u64_at(&header, 32);
        let entries_end = entries_lba
            .checked_add(entry_sectors)
            .filter(|end| entries_lba >= 2 && *end <= first_usable)
            .ok_or_else(|| {
                invalid(format!(
                    "the GPT entries at LBA {entries_lba} overlap the header or the usable area"
                ))
            })?;
        if first_usable > last_usable || last_usable >= sectors || entries_end > sectors {
            return Err(invalid(format!(
                "GPT usable LBAs {first_usable}..={last_usable} do not fit a disk of {sectors} sectors"
            )));
        }
        if backup <= last_usable || backup >= sectors || backup < entry_sectors {
            return Err(invalid(format!(
                "the GPT backup header LBA {backup} is not after the usable area inside the disk"
            )));
        }
        // Bounded above: at most MAX_ENTRY_BYTES.
        let mut entries = vec![0u8; bytes as usize];
        f.read_at(&mut entries, entries_lba * sector)?;
        if crc32fast::hash(&entries) != u32_at(&header, 88) {
            return Err(invalid("the GPT partition entries fail their CRC"));
        }
        Ok(Some(Self {
            sector,
            header,
            entries,
            entry_size: entry_size as usize,
        }))
    }

    fn entry_sectors(&self) -> u64 {
        (self.entries.len() as u64).div_ceil(self.sector)
    }

    pub fn backup_lba(&self) -> u64 {
        u64_at(&self.header, 32)
    }

    pub fn last_usable(&self) -> u64 {
        u64_at(&self.header, 48)
    }

    pub fn used(&self) -> Vec<Entry> {
        self.entries
            .chunks_exact(self.entry_size)
            .enumerate()
            .filter(|(_, e)| e[..16].iter().any(|b| *b != 0))
            .map(|(i, e)| {
                let mut t = [0u8; 16];
                t.copy_from_slice(&e[..16]);
                let name: Vec<u16> = e[56..128]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|c| *c != 0)
                    .collect();
                Entry {
                    number: i as u32 + 1,
                    type_guid: uuid::Uuid::from_bytes_le(t),
                    first_lba: u64_at(e, 32),
                    last_lba: u64_at(e, 40),
                    name: String::from_utf16_lossy(&name),
                }
            })
            .collect()
    }

    /// Put the backup header in the last sector of a disk of `sectors`
    /// sectors. Returns whether it moved.
    pub fn relocate_backup(&mut self, sectors: u64) -> io::Result<bool> {
        let backup = sectors
            .checked_sub(1)
            .ok_or_else(|| invalid("an empty disk has no room for a GPT"))?;
        if self.backup_lba() == backup {
            return Ok(false);
        }
        // The usable area may grow, never shrink under existing partitions.
        let last_usable = backup
            .checked_sub(self.entry_sectors() + 1)
            .filter(|l| *l >= self.last_usable())
            .ok_or_else(|| {
                invalid(format!(
                    "the GPT does not fit a disk of {sectors} sectors with its backup at the end"
                ))
            })?;
        self.header[32..40].copy_from_slice(&backup.to_le_bytes());
        self.header[48..56].copy_from_slice(&last_usable.to_le_bytes());
        Ok(true)
    }

    /// Add a partition in the first free slot; returns its number.
    pub fn add(
        &mut self,
        type_guid: uuid::Uuid,
        first_lba: u64,
        last_lba: u64,
        name: &str,
    ) -> io::Result<u32> {
        if first_lba < u64_at(&self.header, 40) || last_lba > self.last_usable() {
            return Err(invalid("the new partition lies outside the usable area"));
        }
        if let Some(e) = self
            .used()
            .iter()
            .find(|e| e.first_lba <= last_lba && first_lba <= e.last_lba)
        {
            return Err(invalid(format!(
                "the new partition would overlap partition {} ({:?})",
                e.number, e.name
            )));
        }
        let slot = self
            .entries
            .chunks_exact(self.entry_size)
            .position(|e| e[..16].iter().all(|b| *b == 0))
            .ok_or_else(|| invalid("the GPT has no free entry"))?;
        let e = &mut self.entries[slot * self.entry_size..(slot + 1) * self.entry_size];
        e.fill(0);
        e[..16].copy_from_slice(&type_guid.to_bytes_le());
        e[16..32].copy_from_slice(&uuid::Uuid::new_v4().to_bytes_le());
        e[32..40].copy_from_slice(&first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&last_lba.to_le_bytes());
        for (i, c) in name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        Ok(slot as u32 + 1)
    }

    fn sealed(&self, current: u64, other: u64, part_start: u64) -> Vec<u8> {
        let mut h = self.header.clone();
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[72..80].copy_from_slice(&part_start.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&self.entries).to_le_bytes());
        let size = u32_at(&h, 12) as usize;
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h[..size]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Write both copies (backup first, so a crash leaves the primary's old view).
    pub fn write<M: Medium + ?Sized>(&self, f: &M) -> io::Result<()> {
        let backup = self.backup_lba();
        let at = |lba: u64| {
            lba.checked_mul(self.sector)
                .ok_or_else(|| invalid(format!("GPT LBA {lba} overflows")))
        };
        let backup_entries = backup
            .checked_sub(self.entry_sectors())
            .filter(|b| *b > self.last_usable())
            .ok_or_else(|| invalid("no room for the backup GPT entries"))?;
        f.write_at(&self.entries, at(backup_entries)?)?;
        f.write_at(&self.sealed(backup, 1, backup_entries), at(backup)?)?;
        let primary_entries = u64_at(&self.header, 72);
        f.write_at(&self.entries, at(primary_entries)?)?;
        f.write_at(&self.sealed(1, backup, primary_entries), self.sector)?;
        // The protective MBR covers the whole disk again.
        let mut mbr = [0u8; 512];
        f.read_at(&mut mbr, 0)?;
        if mbr[450] == 0xee && mbr[510..512] == [0x55, 0xaa] {
            let len = u32::try_from(backup).unwrap_or(u32::MAX);
            f.write_at(&len.to_le_bytes(), 446 + 12)?;
        }
        Ok(())
    }
}

/// IPA's `fix_gpt_partition`: a GPT image smaller than its disk has its
/// backup header moved to the disk's end. Returns whether it moved.
pub fn fix_backup(disk: &std::path::Path) -> io::Result<bool> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)?;
    let size = super::ioctl::device_size(&f).or_else(|_| f.metadata().map(|m| m.len()))?;
    let sector = super::ioctl::sector_size(&f);
    let Some(mut gpt) = Gpt::read(&f, sector, size / sector)? else {
        return Ok(false);
    };
    if !gpt.relocate_backup(size / sector)? {
        return Ok(false);
    }
    gpt.write(&f)?;
    f.sync_all()?;
    if let Err(e) = super::ioctl::reread_partitions(&f) {
        tracing::debug!(error = %e, "partition table not re-read");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    #[test]
    fn relocates_and_adds_without_renumbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(4 << 20).unwrap();
        // A GPT made by the crate (which packs entries: slots 1 and 2).
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .create_from_device(f.try_clone().unwrap(), None)
            .unwrap();
        let t = gpt::partition_types::LINUX_FS;
        disk.add_partition_at("a", 1, 2048, 1024, t.clone(), 0)
            .unwrap();
        disk.add_partition_at("c", 3, 4096, 1024, t.clone(), 0)
            .unwrap();
        disk.write().unwrap();
        let mut g = Gpt::read(&f, 512, (4 << 20) / 512).unwrap().unwrap();
        assert_eq!(g.used().len(), 2);
        f.set_len(8 << 20).unwrap();
        assert!(g.relocate_backup((8 << 20) / 512).unwrap());
        let n = g
            .add(t.guid, 8192, 10239, "config-2")
            .expect("room at the end");
        g.write(&f).unwrap();
        let mut again = Gpt::read(&f, 512, (8 << 20) / 512).unwrap().unwrap();
        assert_eq!(again.backup_lba(), (8 << 20) / 512 - 1);
        let used = again.used();
        assert_eq!(used.last().unwrap().name, "config-2");
        assert_eq!((used.last().unwrap().number, n), (3, 3));
        assert_eq!(used[0].first_lba, 2048);
        assert!(again.add(t.guid, 9000, 9100, "x").is_err(), "overlap");
        // The backup is a valid header too.
        let mut b = vec![0u8; 512];
        f.read_exact_at(&mut b, (8 << 20) - 512).unwrap();
        assert_eq!(&b[..8], b"EFI PART");
    }

    /// A valid primary header claiming `count` entries of `size` bytes.
    fn forged(count: u32, size: u32) -> MemDisk {
        let sectors = 128u64;
        let mut d = vec![0u8; (sectors * 512) as usize];
        let h = &mut d[512..1024];
        h[..8].copy_from_slice(b"EFI PART");
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&size.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        MemDisk(std::cell::RefCell::new(d))
    }

    #[test]
    fn forged_headers_are_refused_before_allocating() {
        let err = Gpt::read(&forged(4096, 1 << 30), 512, 128).unwrap_err();
        assert!(
            err.to_string()
                .contains("GPT with 4096 entries of 1073741824 bytes is not valid"),
            "{err}"
        );
        let err = Gpt::read(&forged(128, 384), 512, 128).unwrap_err();
        assert!(err.to_string().contains("not 128 x 2^n"), "{err}");
        // 128 entries of 128 bytes need 32 sectors: LBA 2..34 fits; claim 256.
        let err = Gpt::read(&forged(256, 128), 512, 128).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        assert!(
            Gpt::read(&forged(128, 128), 512, 128).is_err(),
            "entries CRC"
        );
    }
}
