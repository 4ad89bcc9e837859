//! UEFI boot variables through efivarfs (`/sys/firmware/efi/efivars`):
//! `Boot####` entries and `BootOrder`, as `efibootmgr` manages them, without
//! efibootmgr. Each file is 4 bytes of attributes then the data; efivarfs
//! wants a whole variable in one write() and marks most files immutable.

use std::fs;
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::load_option;

/// EFI_GLOBAL_VARIABLE.
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const NV_BS_RT: u32 = 0x7;

const FS_IOC_GETFLAGS: libc::Ioctl = 0x8008_6601_u32 as libc::Ioctl;
const FS_IOC_SETFLAGS: libc::Ioctl = 0x4008_6602_u32 as libc::Ioctl;
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

pub struct EfiVars {
    dir: PathBuf,
}

fn var_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{GLOBAL}"))
}

/// efivarfs sets the immutable flag on variables the kernel does not know
/// to be safe to delete; clear it before touching one. Other filesystems
/// (test fixtures) may not support the flag at all, which is fine.
fn make_mutable(path: &Path) {
    let Ok(f) = fs::File::open(path) else { return };
    let mut flags: libc::c_long = 0;
    // SAFETY: GETFLAGS/SETFLAGS read or write one long through the pointer.
    unsafe {
        if libc::ioctl(
            f.as_raw_fd(),
            FS_IOC_GETFLAGS,
            &mut flags as *mut libc::c_long,
        ) == 0
            && flags & FS_IMMUTABLE_FL != 0
        {
            flags &= !FS_IMMUTABLE_FL;
            libc::ioctl(
                f.as_raw_fd(),
                FS_IOC_SETFLAGS,
                &flags as *const libc::c_long,
            );
        }
    }
}

impl EfiVars {
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not mounted (no efivarfs)", dir.display()),
            ));
        }
        Ok(Self { dir })
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(var_path(&self.dir, name)) {
            Ok(data) if data.len() >= 4 => Ok(Some(data[4..].to_vec())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let path = var_path(&self.dir, name);
        make_mutable(&path);
        let mut buf = NV_BS_RT.to_le_bytes().to_vec();
        buf.extend_from_slice(data);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(!is_efivarfs(&self.dir))
            .open(&path)?;
        // One write: efivarfs rejects a variable split over several.
        let n = f.write(&buf)?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write of {name}"),
            ));
        }
        Ok(())
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        let path = var_path(&self.dir, name);
        make_mutable(&path);
        fs::remove_file(path)
    }

    /// Numbers of all `Boot####` variables.
    pub fn boot_entries(&self) -> io::Result<Vec<u16>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix("Boot") else {
                continue;
            };
            let Some((num, guid)) = rest.split_once('-') else {
                continue;
            };
            if guid.eq_ignore_ascii_case(GLOBAL) && num.len() == 4 {
                if let Ok(n) = u16::from_str_radix(num, 16) {
                    out.push(n);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    pub fn boot_entry(&self, number: u16) -> io::Result<Option<Vec<u8>>> {
        self.read(&format!("Boot{number:04X}"))
    }

    pub fn boot_order(&self) -> io::Result<Vec<u16>> {
        Ok(self
            .read("BootOrder")?
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    fn set_boot_order(&self, order: &[u16]) -> io::Result<()> {
        let data: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
        self.write("BootOrder", &data)
    }

    /// Replace every entry labelled like `option` with it and put it first
    /// in `BootOrder` (efibootmgr's `-c` after deleting same-label entries,
    /// as IPA does). Returns the new entry's number.
    pub fn add_first(&self, option: &load_option::LoadOption) -> io::Result<u16> {
        let existing = self.boot_entries()?;
        let mut removed = Vec::new();
        for n in &existing {
            let data = self.boot_entry(*n)?.unwrap_or_default();
            if load_option::description(&data).as_deref() == Some(option.description.as_str()) {
                self.delete(&format!("Boot{n:04X}"))?;
                removed.push(*n);
            }
        }
        let taken: Vec<u16> = existing
            .into_iter()
            .filter(|n| !removed.contains(n))
            .collect();
        let number = (0..=0xffffu16)
            .find(|n| !taken.contains(n))
            .ok_or_else(|| io::Error::other("no free Boot#### number"))?;
        self.write(&format!("Boot{number:04X}"), &option.encode())?;
        let mut order: Vec<u16> = self
            .boot_order()?
            .into_iter()
            .filter(|n| !removed.contains(n) && *n != number)
            .collect();
        order.insert(0, number);
        self.set_boot_order(&order)?;
        Ok(number)
    }
}

/// A `Boot####` entry as `efibootmgr -v` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRecord {
    pub number: u16,
    pub description: String,
    /// The device path as text ([`super::device_path`]).
    pub path: String,
}

impl EfiVars {
    /// Every `Boot####` entry that reads as a load option.
    pub fn boot_records(&self) -> io::Result<Vec<BootRecord>> {
        let mut out = Vec::new();
        for number in self.boot_entries()? {
            let Some(data) = self.boot_entry(number)? else {
                continue;
            };
            let (Some(description), Some(path)) = (
                load_option::description(&data),
                super::device_path::load_option_path(&data),
            ) else {
                continue;
            };
            out.push(BootRecord {
                number,
                description,
                path,
            });
        }
        Ok(out)
    }

    /// Delete `Boot####` entries and take them out of `BootOrder`, as
    /// `efibootmgr -b #### -B` does.
    pub fn remove_entries(&self, numbers: &[u16]) -> io::Result<()> {
        if numbers.is_empty() {
            return Ok(());
        }
        for n in numbers {
            self.delete(&format!("Boot{n:04X}"))?;
        }
        let order = self.boot_order()?;
        let kept: Vec<u16> = order
            .iter()
            .copied()
            .filter(|n| !numbers.contains(n))
            .collect();
        if kept.len() != order.len() {
            self.set_boot_order(&kept)?;
        }
        Ok(())
    }
}

/// efivarfs (magic 0xde5e81e4) updates variables in place; plain
/// directories used as fixtures need truncation instead.
fn is_efivarfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::FsType(0xde5e_81e4_u32 as _))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::super::load_option::test_entry as option;
    use super::*;

    #[test]
    fn replaces_same_label_and_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let vars = EfiVars::new(dir.path()).unwrap();
        // Firmware's own entries: PXE (0000) and a stale "ironic1" (0003).
        vars.write("Boot0000", &option("UEFI PXEv4", r"\x").encode())
            .unwrap();
        vars.write("Boot0003", &option("ironic1", r"\old.efi").encode())
            .unwrap();
        vars.set_boot_order(&[0, 3]).unwrap();

        let n = vars
            .add_first(&option("ironic1", r"\EFI\BOOT\BOOTX64.EFI"))
            .unwrap();
        assert_eq!(n, 1, "the lowest free number");
        assert_eq!(vars.boot_entries().unwrap(), vec![0, 1]);
        assert_eq!(vars.boot_order().unwrap(), vec![1, 0]);
        let raw = fs::read(var_path(dir.path(), "Boot0001")).unwrap();
        assert_eq!(&raw[..4], &[7, 0, 0, 0], "NV+BS+RT attributes");
        let back = load_option::decode(&raw[4..]).unwrap();
        assert_eq!(back.loader, r"\EFI\BOOT\BOOTX64.EFI");
    }

    #[test]
    fn missing_efivarfs_is_an_error() {
        assert!(EfiVars::new("/nonexistent/efivars").is_err());
    }
}
