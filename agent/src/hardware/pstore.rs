//! `erase_pstore`: empty the kernel's persistent store (crash dumps kept
//! in firmware NVRAM across reboots), which may hold the previous tenant's
//! kernel messages. IPA finds the mount in `/proc/mounts` and deletes every
//! entry under it; no pstore mounted means nothing to do.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The first `pstore` filesystem in a mounts table (`/proc/mounts` format).
pub fn find_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (device, mountpoint, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (device == "pstore" && fstype == "pstore").then(|| PathBuf::from(unescape(mountpoint)))
    })
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let Some(b) = octal {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Delete everything under `root` (not `root` itself). Returns what was
/// removed; stops at the first failure, as IPA's step does.
pub fn erase(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(root)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pstore_mount_only() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
                      none /x/pstore tmpfs rw 0 0\n\
                      pstore /sys/fs/pstore pstore rw,nosuid 0 0\n";
        assert_eq!(find_mount(mounts), Some(PathBuf::from("/sys/fs/pstore")));
        assert_eq!(find_mount("sysfs /sys sysfs rw 0 0\n"), None);
        assert_eq!(
            find_mount("pstore /mnt/my\\040store pstore rw 0 0\n"),
            Some(PathBuf::from("/mnt/my store"))
        );
    }

    #[test]
    fn erases_files_and_directories_but_keeps_the_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pstore");
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("dmesg-efi-1"), b"oops").unwrap();
        fs::write(root.join("sub/deeper/x"), b"y").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("link")).unwrap();
        let removed = erase(&root).unwrap();
        assert_eq!(removed.len(), 3);
        assert!(root.is_dir());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        assert!(
            Path::new("/etc/hostname").exists(),
            "links are not followed"
        );
        assert!(erase(&dir.path().join("missing")).is_err());
    }
}
