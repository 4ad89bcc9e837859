//! Config drives: what Ironic sends (an http(s) URL, or gzip+base64 ISO
//! text; plain base64 and raw bytes are tolerated as IPA does), and where
//! they go on a whole-disk image (IPA's `create_config_drive_partition`):
//! an existing `config-2` partition, else a new one at the disk's end.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use base64::Engine;
use mbrman::{MBRPartitionEntry, BOOT_INACTIVE, CHS, MBR};
use serde_json::Value;
use tracing::info;

use super::DeployError;
use crate::disk::fsinfo;
use crate::disk::gpt_edit::Gpt;
use crate::disk::ioctl;
use crate::disk::layout::MIB;
use crate::disk::region::{announce, Region};

/// IPA's `MAX_CONFIG_DRIVE_SIZE_MB` for whole-disk images.
pub const WHOLE_DISK_MAX: u64 = 64 * MIB;
/// Bound for partition images, where the layout sizes a partition to fit.
pub const PARTITION_MAX: u64 = 1 << 30;
const LABEL: &str = "config-2";
/// How far past the limit an oversized (gzip) config drive is measured.
const COUNT_LIMIT: u64 = 1 << 30;
/// MBR partitions must end below 2 TiB (IPA's `MAX_DISK_SIZE_MB_SUPPORTED_BY_MBR`).
const MBR_LIMIT: u64 = 2 << 40;

fn fail(msg: impl Into<String>) -> DeployError {
    DeployError::Deployment(msg.into())
}

/// The config drive's bytes, at most `max` of them.
pub async fn fetch(
    http: &reqwest::Client,
    value: &Value,
    node: &str,
    max: u64,
) -> Result<Vec<u8>, DeployError> {
    let (data, from_url) = match value {
        Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
            let resp = http
                .get(s)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| {
                    fail(format!(
                        "Can't download the configdrive content for node {node} from {s}: {e}"
                    ))
                })?;
            // base64 of the largest drive allowed, plus line breaks.
            let cap = max.saturating_mul(4) / 3 + (1 << 20);
            let body = super::body::read_capped(resp, cap).await.map_err(|e| {
                fail(format!(
                    "Can't download the configdrive content for node {node} from {s}: {e}"
                ))
            })?;
            (body, true)
        }
        Value::String(s) => (s.as_bytes().to_vec(), false),
        other => {
            return Err(fail(format!(
                "Config drive for node {node} must be a string (a URL or base64 text), not {}",
                match other {
                    Value::Object(_) => "an object: the conductor builds the ISO",
                    _ => "this JSON value",
                }
            )))
        }
    };
    decode(&data, from_url, node, max)
}

/// base64 (else raw bytes, for downloads only), then gunzip if gzipped.
pub fn decode(data: &[u8], from_url: bool, node: &str, max: u64) -> Result<Vec<u8>, DeployError> {
    let text: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let decoded = match base64::engine::general_purpose::STANDARD.decode(&text) {
        Ok(d) => d,
        Err(e) if from_url => {
            tracing::warn!(error = %e, "config drive for node {node} is not base64 encoded; assuming binary");
            data.to_vec()
        }
        Err(e) => {
            return Err(fail(format!(
            "Config drive for node {node} is not base64 encoded or the content is malformed: {e}"
        )))
        }
    };
    let gz_error = |e: std::io::Error| {
        fail(format!(
            "Encountered error while decompressing and writing config drive for node {node}. Error: {e}"
        ))
    };
    let (bytes, size) = if decoded.starts_with(&[0x1f, 0x8b]) {
        let mut gz = flate2::read::MultiGzDecoder::new(&decoded[..]);
        let mut out = Vec::new();
        (&mut gz)
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(gz_error)?;
        // Too big: count the rest (up to a bound) only to say how big.
        let rest = if out.len() as u64 > max {
            std::io::copy(&mut gz.take(COUNT_LIMIT), &mut std::io::sink()).map_err(gz_error)?
        } else {
            0
        };
        let size = out.len() as u64 + rest;
        (out, size)
    } else {
        let size = decoded.len() as u64;
        (decoded, size)
    };
    if bytes.is_empty() {
        return Err(fail(format!("Config drive for node {node} is empty")));
    }
    if size > max {
        return Err(fail(format!(
            "Config drive size exceeds maximum limit of {}MiB. Size of the given config drive is {}{} MiB for node {node}.",
            max / MIB,
            if size >= max + 1 + COUNT_LIMIT { "more than " } else { "" },
            size.div_ceil(MIB)
        )));
    }
    Ok(bytes)
}

/// The partitions of a disk as (number, start, len, GPT name).
struct Part {
    number: u32,
    start: u64,
    len: u64,
    name: String,
}

enum Table {
    Gpt(Vec<Part>),
    Mbr(Vec<Part>),
}

fn read_table(disk: &Path, sector: u64) -> Result<Table, DeployError> {
    let name = disk.display();
    let f = File::open(disk).map_err(|e| fail(format!("opening {name}: {e}")))?;
    let mut sig = [0u8; 8];
    f.read_exact_at(&mut sig, sector)
        .map_err(|e| fail(format!("reading {name}: {e}")))?;
    if &sig == b"EFI PART" {
        let sectors = crate::disk::ioctl::device_size(&f)
            .or_else(|_| f.metadata().map(|m| m.len()))
            .map_err(|e| fail(format!("reading {name}: {e}")))?
            / sector;
        let gpt = Gpt::read(&f, sector, sectors)
            .map_err(|e| fail(format!("reading the GPT of {name}: {e}")))?
            .ok_or_else(|| fail(format!("{name} has no valid primary GPT")))?;
        return Ok(Table::Gpt(
            gpt.used()
                .into_iter()
                .map(|p| Part {
                    number: p.number,
                    start: p.first_lba * sector,
                    len: (p.last_lba + 1 - p.first_lba) * sector,
                    name: p.name,
                })
                .collect(),
        ));
    }
    // No boot signature: no table (a bare filesystem image, say), and
    // writing one would overwrite what sits in sector 0.
    let mut boot_sig = [0u8; 2];
    f.read_exact_at(&mut boot_sig, 510)
        .map_err(|e| fail(format!("reading {name}: {e}")))?;
    if boot_sig != [0x55, 0xaa] {
        return Err(fail(format!(
            "{name} has no partition table (neither GPT nor MBR); cannot add a config drive partition"
        )));
    }
    let mut f = f;
    let mbr = MBR::read_from(&mut f, sector as u32).map_err(|e| {
        fail(format!(
            "{name} has neither a GPT nor an MBR partition table: {e}"
        ))
    })?;
    // Primaries (extended included) in slots 1-4, then logicals from 5.
    Ok(Table::Mbr(
        mbr.iter()
            .filter(|(_, p)| p.is_used())
            .map(|(n, p)| Part {
                number: n as u32,
                start: u64::from(p.starting_lba) * sector,
                len: u64::from(p.sectors) * sector,
                name: String::new(),
            })
            .collect(),
    ))
}

/// The partition named or labelled `config-2`; two of them is an error, as in IPA.
fn existing(disk: &Path, parts: &[Part], node: &str) -> Result<Option<Region>, DeployError> {
    let found: Vec<Region> = parts
        .iter()
        .filter_map(|p| {
            let region = Region::new(disk, p.number, p.start, p.len);
            let labelled = p.name.eq_ignore_ascii_case(LABEL)
                || fsinfo::probe(&region)
                    .ok()
                    .flatten()
                    .and_then(|i| i.label)
                    .is_some_and(|l| l.eq_ignore_ascii_case(LABEL));
            labelled.then_some(region)
        })
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        [a, b, ..] => Err(fail(format!(
            "More than one partition with label \"{LABEL}\" exists on device {} for node {node}: {} and {}.",
            disk.display(),
            a.path().display(),
            b.path().display()
        ))),
    }
}

/// Put the config drive on a disk that holds a whole-disk image.
pub fn write_whole_disk(disk: &Path, iso: &[u8], node: &str) -> Result<Region, DeployError> {
    let name = disk.display().to_string();
    let io = |what: &str, e: std::io::Error| fail(format!("{what} {name}: {e}"));
    let f = File::open(disk).map_err(|e| io("opening", e))?;
    let size = ioctl::device_size(&f)
        .or_else(|_| f.metadata().map(|m| m.len()))
        .map_err(|e| io("sizing", e))?;
    let sector = ioctl::sector_size(&f);
    drop(f);
    let table = read_table(disk, sector)?;
    let parts = match &table {
        Table::Gpt(p) | Table::Mbr(p) => p,
    };
    let region = match existing(disk, parts, node)? {
        Some(r) => {
            info!(partition = %r.path().display(), "reusing the existing config-2 partition");
            r
        }
        None => match table {
            Table::Gpt(_) => add_gpt(disk, size, sector)?,
            Table::Mbr(parts) => add_mbr(disk, &parts, size, sector, node)?,
        },
    };
    if iso.len() as u64 > region.len {
        return Err(fail(format!(
            "the config drive ({} bytes) does not fit in {} ({} bytes)",
            iso.len(),
            region.path().display(),
            region.len
        )));
    }
    region
        .write_all(iso)
        .map_err(|e| io("writing the config drive to", e))?;
    info!(partition = %region.path().display(), bytes = iso.len(), "config drive written");
    Ok(region)
}

/// `sgdisk -e` (backup header to the disk's end) then `sgdisk -n 0:-64MB:0`.
fn add_gpt(disk: &Path, size: u64, sector: u64) -> Result<Region, DeployError> {
    let name = disk.display().to_string();
    let err = |e: std::io::Error| fail(format!("updating the GPT of {name}: {e}"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(err)?;
    let mut gpt = Gpt::read(&file, sector, size / sector)
        .map_err(err)?
        .ok_or_else(|| fail(format!("{name} has no valid primary GPT")))?;
    gpt.relocate_backup(size / sector).map_err(err)?;
    // Checked: the GPT is now bounded by the disk, its entries are not.
    let end = (gpt.last_usable() + 1) * sector;
    let start = end
        .checked_sub(WHOLE_DISK_MAX)
        .ok_or_else(|| fail(format!("{name} is too small for a config drive")))?
        / MIB
        * MIB;
    if let Some(p) = gpt
        .used()
        .iter()
        .find(|p| p.last_lba.saturating_add(1).saturating_mul(sector) > start)
    {
        return Err(fail(format!(
            "no room for a config drive at the end of {name}: partition {} ({:?}) reaches into the last 64 MiB",
            p.number, p.name
        )));
    }
    let (first, last) = (start / sector, end / sector - 1);
    let number = gpt
        .add(gpt::partition_types::LINUX_FS.guid, first, last, LABEL)
        .map_err(err)?;
    gpt.write(&file).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    let spans: Vec<(u32, u64, u64)> = gpt
        .used()
        .iter()
        .map(|p| {
            (
                p.number,
                p.first_lba * sector,
                (p.last_lba + 1 - p.first_lba) * sector,
            )
        })
        .collect();
    announce(disk, &spans);
    info!(disk = %name, number, "config drive partition added at the end of the GPT");
    Ok(Region::new(disk, number, start, end - start))
}

/// `parted mkpart primary -64MiB -0`, below 2 TiB on bigger disks.
fn add_mbr(
    disk: &Path,
    parts: &[Part],
    size: u64,
    sector: u64,
    node: &str,
) -> Result<Region, DeployError> {
    let name = disk.display().to_string();
    let primaries: Vec<&Part> = parts.iter().filter(|p| p.number <= 4).collect();
    if primaries.len() > 3 {
        return Err(fail(format!(
            "Config drive cannot be created for node {node}. Disk ({name}) uses MBR partitioning and already has {} primary partitions.",
            primaries.len()
        )));
    }
    let end = if size > MBR_LIMIT {
        MBR_LIMIT - MIB
    } else {
        size / sector * sector
    };
    let start = end
        .checked_sub(WHOLE_DISK_MAX)
        .ok_or_else(|| fail(format!("{name} is too small for a config drive")))?
        / MIB
        * MIB;
    if let Some(p) = primaries
        .iter()
        .find(|p| p.start + p.len > start && p.start < end)
    {
        return Err(fail(format!(
            "no room for a config drive at the end of {name}: partition {} reaches into the last 64 MiB",
            p.number
        )));
    }
    let merr = |e: mbrman::Error| fail(format!("updating the MBR of {name}: {e}"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(|e| fail(format!("opening {name}: {e}")))?;
    let mut mbr = MBR::read_from(&mut file, sector as u32).map_err(merr)?;
    let number = (1..=4usize)
        .find(|i| mbr.get(*i).is_some_and(|p| p.is_unused()))
        .ok_or_else(|| fail(format!("no free primary slot on {name}")))?;
    mbr[number] = MBRPartitionEntry {
        boot: BOOT_INACTIVE,
        first_chs: CHS::empty(),
        sys: 0x0c, // parted's "fat32" type, as IPA asks for
        last_chs: CHS::empty(),
        starting_lba: (start / sector) as u32,
        sectors: ((end - start) / sector) as u32,
    };
    mbr.write_into(&mut file).map_err(merr)?;
    file.sync_all()
        .map_err(|e| fail(format!("syncing {name}: {e}")))?;
    drop(file);
    let mut spans: Vec<(u32, u64, u64)> =
        parts.iter().map(|p| (p.number, p.start, p.len)).collect();
    spans.push((number as u32, start, end - start));
    announce(disk, &spans);
    info!(disk = %name, number, "config drive partition added at the end of the MBR");
    Ok(Region::new(disk, number as u32, start, end - start))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz_b64(data: &[u8]) -> Vec<u8> {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        w.write_all(data).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(w.finish().unwrap())
            .into_bytes()
    }

    #[test]
    fn decodes_gzip_base64_plain_base64_and_binary_downloads() {
        let iso = b"CD001 pretend iso".to_vec();
        assert_eq!(decode(&gz_b64(&iso), false, "n", 1 << 20).unwrap(), iso);
        let plain = base64::engine::general_purpose::STANDARD.encode(&iso);
        assert_eq!(decode(plain.as_bytes(), false, "n", 1 << 20).unwrap(), iso);
        assert_eq!(decode(&iso, true, "n", 1 << 20).unwrap(), iso);
        let e = decode(b"not base64 at all!", false, "n", 1 << 20).unwrap_err();
        assert!(
            e.to_string().contains("not base64 encoded"),
            "{}",
            e.to_string()
        );
        let e = decode(&gz_b64(&vec![7u8; 3 << 20]), false, "n", 1 << 20).unwrap_err();
        assert!(
            e.to_string().contains("exceeds maximum limit of 1MiB. Size of the given config drive is 3 MiB for node n."),
            "{}",
            e.to_string()
        );
    }
}
