//! IPA's `prepare_boot_partitions_for_softraid` (UEFI): firmware cannot
//! read md, so every holder of the root array gets its own ESP in the room
//! the RAID layout left at the disk's start (550 MiB at 1 MiB), the ESPs
//! are mirrored as md `esp` with metadata 1.0 (superblock at the end, so
//! each one is plain FAT to firmware), and the image's ESP is copied onto
//! the mirror. The bootloader then names each holder's ESP in NVRAM.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::plan::ESP_MIB;
use super::running::{self, LoadModule, RunError};
use crate::disk::gpt_edit::Gpt;
use crate::disk::ioctl;
use crate::disk::md::geometry::{superblocks, ArraySpec, Level, Metadata};
use crate::disk::md::member;
use crate::disk::partitions::{read_table, ESP_TYPE};
use crate::disk::region::{announce, Region};

const MIB: u64 = 1 << 20;
/// Copy chunk for the image's ESP.
const CHUNK: usize = 4 << 20;

/// One holder's ESP, as NVRAM entries name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderEsp {
    pub disk: PathBuf,
    pub number: u32,
    /// Bytes from the disk's start.
    pub start: u64,
    pub len: u64,
    pub part_uuid: Uuid,
    pub sector: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("{disk}: {source}")]
    Io {
        disk: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no GPT (software RAID in UEFI mode lays holders out with GPT)")]
    NoGpt(String),
    #[error("{disk}: no room for a {ESP_MIB} MiB ESP before its first partition at byte {first}")]
    NoRoom { disk: String, first: u64 },
    #[error("{disk}: ESP partition {number} has no usable PARTUUID ({value:?})")]
    PartUuid {
        disk: String,
        number: u32,
        value: String,
    },
    #[error("{0}: the new ESP partition is not in the partition table")]
    Lost(String),
    #[error("the kernel made no device node for ESP {0}")]
    NoNode(String),
    #[error("ESP mirror: {0}")]
    Superblock(String),
    #[error("starting the ESP mirror md{index}: {source}")]
    Start {
        index: usize,
        #[source]
        source: RunError,
    },
    #[error("the image's ESP ({image} bytes) does not fit the ESP mirror ({mirror} bytes)")]
    TooLarge { image: u64, mirror: u64 },
}

fn io(disk: &Path) -> impl FnOnce(std::io::Error) -> EspError + '_ {
    move |source| EspError::Io {
        disk: disk.display().to_string(),
        source,
    }
}

/// The `uefi-holder-<i>` ESP on `disk`, added when missing.
fn holder_esp(disk: &Path, i: usize) -> Result<HolderEsp, EspError> {
    let name = format!("uefi-holder-{i}");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(io(disk))?;
    let size = ioctl::device_size(&f)
        .or_else(|_| f.metadata().map(|m| m.len()))
        .map_err(io(disk))?;
    let sector = ioctl::sector_size(&f);
    let mut gpt = Gpt::read(&f, sector, size / sector)
        .map_err(io(disk))?
        .ok_or_else(|| EspError::NoGpt(disk.display().to_string()))?;
    let used = gpt.used();
    let number = match used
        .iter()
        .find(|e| e.name == name && e.type_guid == ESP_TYPE)
    {
        Some(e) => e.number,
        None => {
            let first = MIB / sector;
            let last = first + ESP_MIB * MIB / sector - 1;
            let next = used.iter().map(|e| e.first_lba).min().unwrap_or(u64::MAX);
            if last >= next {
                return Err(EspError::NoRoom {
                    disk: disk.display().to_string(),
                    first: next.saturating_mul(sector),
                });
            }
            let n = gpt.add(ESP_TYPE, first, last, &name).map_err(io(disk))?;
            gpt.write(&f).map_err(io(disk))?;
            f.sync_all().map_err(io(disk))?;
            n
        }
    };
    drop(f);
    let table = read_table(disk).map_err(|e| EspError::Io {
        disk: disk.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let p = table
        .get(number)
        .ok_or_else(|| EspError::Lost(disk.display().to_string()))?;
    let part_uuid = Uuid::parse_str(&p.part_uuid).map_err(|_| EspError::PartUuid {
        disk: disk.display().to_string(),
        number,
        value: p.part_uuid.clone(),
    })?;
    announce(disk, &[(number, p.start, p.len)]);
    Ok(HolderEsp {
        disk: disk.to_path_buf(),
        number,
        start: p.start,
        len: p.len,
        part_uuid,
        sector,
    })
}

/// ESPs on `holders`, mirrored as md `esp` (metadata 1.0), holding a copy
/// of the `image_esp_len` bytes at `image_esp_start` of `image_disk`.
pub fn prepare(
    sysfs_root: &Path,
    holders: &[PathBuf],
    (image_disk, image_esp_start, image_esp_len): (&Path, u64, u64),
    homehost: Option<&str>,
    now: u64,
    load: LoadModule<'_>,
) -> Result<Vec<HolderEsp>, EspError> {
    let esps = holders
        .iter()
        .enumerate()
        .map(|(i, d)| holder_esp(d, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes = Vec::with_capacity(esps.len());
    let mut regions = Vec::with_capacity(esps.len());
    for e in &esps {
        let mut region = Region::new(&e.disk, e.number, e.start, e.len);
        region.wait_for_node(25);
        let node = region
            .node
            .clone()
            .ok_or_else(|| EspError::NoNode(region.path().display().to_string()))?;
        nodes.push(node);
        regions.push(region);
    }
    let spec = ArraySpec {
        metadata: Metadata::V1_0,
        level: Level::Raid1,
        set_uuid: Uuid::new_v4(),
        name: crate::disk::md::set_name(homehost, "esp"),
        member_sectors: esps.iter().map(|e| e.len / 512).collect(),
        device_uuids: esps.iter().map(|_| Uuid::new_v4()).collect(),
        now,
    };
    let sbs = superblocks(&spec).map_err(|e| EspError::Superblock(e.to_string()))?;
    for (region, sb) in regions.iter().zip(&sbs) {
        let failed = |e: member::MemberError| {
            EspError::Superblock(format!("{}: {e}", region.path().display()))
        };
        member::zero(region).map_err(failed)?;
        member::write(region, sb).map_err(failed)?;
    }
    let index =
        running::free_index(sysfs_root).map_err(|source| EspError::Start { index: 0, source })?;
    running::start(sysfs_root, index, 1, Metadata::V1_0, &nodes, load)
        .map_err(|source| EspError::Start { index, source })?;
    let mirror = PathBuf::from(format!("/dev/md{index}"));
    copy(image_disk, image_esp_start, image_esp_len, &mirror)?;
    tracing::info!(
        md = index,
        holders = esps.len(),
        "ESP mirror (md esp, metadata 1.0) holds the image's ESP"
    );
    Ok(esps)
}

/// The image's ESP onto the mirror, as IPA's `dd`.
fn copy(from: &Path, start: u64, len: u64, to: &Path) -> Result<(), EspError> {
    let src = File::open(from).map_err(io(from))?;
    let dst = OpenOptions::new().write(true).open(to).map_err(io(to))?;
    let room = ioctl::device_size(&dst).map_err(io(to))?;
    if len > room {
        return Err(EspError::TooLarge {
            image: len,
            mirror: room,
        });
    }
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        src.read_exact_at(&mut buf[..n], start + done)
            .map_err(io(from))?;
        dst.write_all_at(&buf[..n], done).map_err(io(to))?;
        done += n as u64;
    }
    dst.sync_all().map_err(io(to))
}
