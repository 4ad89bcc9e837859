//! Which loaders an ESP ships, as IPA's `efi_utils` finds them: a shim
//! `BOOT<arch>.CSV` (UTF-16) is authoritative and names the loader and its
//! label; otherwise the well-known loader file names, labelled `ironic<N>`.
//! The ESP is read in place with a FAT driver in Rust (`fatfs`), so nothing
//! is mounted and the kernel needs no vfat support for this.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

const KNOWN_LOADERS: &[&str] = &[
    "bootx64.efi",
    "bootia32.efi",
    "bootia64.efi",
    "bootarm.efi",
    "bootaa64.efi",
    "bootriscv64.efi",
    "grubaa64.efi",
    "winload.efi",
];
const CSV_NAMES: &[&str] = &["bootx64.csv", "bootaa64.csv", "boot.csv"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    /// Path on the ESP with backslashes, as firmware wants it.
    pub path: String,
    pub label: String,
}

type Slice = fscommon::StreamSlice<File>;
type FatDir<'a> = fatfs::Dir<'a, Slice>;

/// Files below `dir` as (backslash path, lower-case name, CSV content),
/// depth-first in directory order.
fn walk(
    dir: &FatDir,
    prefix: &str,
    out: &mut Vec<(String, String, Option<Vec<u8>>)>,
) -> io::Result<()> {
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{prefix}\\{name}");
        if entry.is_dir() {
            walk(&entry.to_dir(), &path, out)?;
        } else {
            let lower = name.to_lowercase();
            let csv = if CSV_NAMES.contains(&lower.as_str()) {
                let mut data = Vec::new();
                entry.to_file().read_to_end(&mut data)?;
                Some(data)
            } else {
                None
            };
            out.push((path, lower, csv));
        }
    }
    Ok(())
}

/// Parse a shim CSV: UTF-16LE (with BOM), `loader,label,options,comment`.
fn parse_csv(data: &[u8]) -> Option<(String, String)> {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16_lossy(&units);
    let line = text
        .trim_start_matches('\u{feff}')
        .lines()
        .next()?
        .to_string();
    let mut fields = line.split(',');
    let loader = fields.next()?.trim().to_string();
    let label = fields.next()?.trim().to_string();
    (!loader.is_empty() && !label.is_empty()).then_some((loader, label))
}

/// Does the ESP at `[start, start+len)` of `disk` contain `path` (backslashes)?
pub fn exists(disk: &Path, start: u64, len: u64, path: &str) -> io::Result<bool> {
    let fs = open(disk, start, len)?;
    let rel = path.trim_start_matches('\\').replace('\\', "/");
    let found = fs.root_dir().open_file(&rel).is_ok();
    Ok(found)
}

fn open(disk: &Path, start: u64, len: u64) -> io::Result<fatfs::FileSystem<Slice>> {
    let f = File::open(disk)?;
    let slice = fscommon::StreamSlice::new(f, start, start + len)?;
    fatfs::FileSystem::new(slice, fatfs::FsOptions::new())
        .map_err(|e| io::Error::new(e.kind(), format!("the ESP is not a FAT filesystem: {e}")))
}

/// The loaders on the ESP at `[start, start+len)` of `disk`.
pub fn find(disk: &Path, start: u64, len: u64) -> io::Result<Vec<Loader>> {
    let fs = open(disk, start, len)?;
    let mut files = Vec::new();
    walk(&fs.root_dir(), "", &mut files)?;
    let from_csv: Vec<Loader> = files
        .iter()
        .filter_map(|(path, _, csv)| {
            let (loader, label) = parse_csv(csv.as_ref()?)?;
            let dir = path.rsplit_once('\\').map(|(d, _)| d).unwrap_or("");
            Some(Loader {
                path: format!("{dir}\\{loader}"),
                label,
            })
        })
        .collect();
    if !from_csv.is_empty() {
        return Ok(from_csv);
    }
    Ok(files
        .iter()
        .filter(|(_, name, _)| KNOWN_LOADERS.contains(&name.as_str()))
        .enumerate()
        .map(|(i, (path, _, _))| Loader {
            path: path.clone(),
            label: format!("ironic{}", i + 1),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::Command;

    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        std::iter::once(0xfeffu16)
            .chain(s.encode_utf16())
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// A disk image with a FAT filesystem (real mkfs.vfat) at 1 MiB, files
    /// written into it with `files`.
    fn esp_image(files: &[(&str, &[u8])]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let fat = d.path().join("fat");
        File::create(&fat).unwrap().set_len(33 << 20).unwrap();
        let out = Command::new("mkfs.vfat")
            .args(["-F", "32"])
            .arg(&fat)
            .output()
            .expect("mkfs.vfat (run scripts/setup)");
        assert!(out.status.success(), "{out:?}");
        {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fat)
                .unwrap();
            let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
            for (path, data) in files {
                let mut dir = fs.root_dir();
                let parts: Vec<&str> = path.split('/').collect();
                for p in &parts[..parts.len() - 1] {
                    dir = dir.create_dir(p).unwrap();
                }
                dir.create_file(parts[parts.len() - 1])
                    .unwrap()
                    .write_all(data)
                    .unwrap();
            }
        }
        // Place it at 1 MiB of a "disk" to prove offsets are honoured.
        let disk = d.path().join("disk");
        let mut image = vec![0u8; 1 << 20];
        image.extend(std::fs::read(&fat).unwrap());
        std::fs::write(&disk, image).unwrap();
        (d, disk)
    }

    #[test]
    fn shim_csv_wins() {
        let csv = utf16("shimx64.efi,debian,,This is the boot entry for debian\n");
        let (_d, disk) = esp_image(&[
            ("EFI/BOOT/BOOTX64.EFI", b"MZ"),
            ("EFI/debian/shimx64.efi", b"MZ"),
            ("EFI/debian/BOOTX64.CSV", &csv),
        ]);
        assert_eq!(
            find(&disk, 1 << 20, 33 << 20).unwrap(),
            vec![Loader {
                path: r"\EFI\debian\shimx64.efi".into(),
                label: "debian".into()
            }]
        );
        assert!(exists(&disk, 1 << 20, 33 << 20, r"\EFI\debian\shimx64.efi").unwrap());
        assert!(!exists(&disk, 1 << 20, 33 << 20, r"\EFI\debian\grubx64.efi").unwrap());
    }

    #[test]
    fn known_names_without_csv() {
        let (_d, disk) = esp_image(&[("EFI/BOOT/BOOTX64.EFI", b"MZ"), ("EFI/BOOT/grub.cfg", b"x")]);
        let found = find(&disk, 1 << 20, 33 << 20).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, r"\EFI\BOOT\BOOTX64.EFI");
        assert_eq!(found[0].label, "ironic1");
        let (_e, empty) = esp_image(&[]);
        assert!(find(&empty, 1 << 20, 33 << 20).unwrap().is_empty());
    }

    #[test]
    fn not_fat_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let disk = d.path().join("zeros");
        File::create(&disk).unwrap().set_len(4 << 20).unwrap();
        let err = find(&disk, 0, 4 << 20).unwrap_err();
        assert!(err.to_string().contains("not a FAT filesystem"), "{err}");
    }
}
