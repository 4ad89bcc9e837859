//! Files inside a mounted filesystem, resolved as the deployed OS would
//! resolve them: every lookup goes through `openat2` with
//! `RESOLVE_IN_ROOT`, so an absolute or `..` symlink in the image stays
//! inside the image and never reaches the ramdisk's own files.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Mode of created directories and files before `mode`/`dirmode`: what
/// Python's `makedirs`/`open` give under the usual umask 022.
const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

pub struct FsRoot {
    fd: OwnedFd,
}

/// How a written file ends up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attributes {
    pub mode: Option<u32>,
    pub dirmode: Option<u32>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl FsRoot {
    pub fn open(mountpoint: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(
            mountpoint,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    fn resolve(&self, relative: &Path, flags: OFlag, mode: u32) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // An empty path is the root itself.
        let path = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        loop {
            match openat2(&self.fd, path, how) {
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                other => return other,
            }
        }
    }

    pub fn is_dir(&self, relative: &Path) -> bool {
        self.resolve(relative, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)
            .is_ok()
    }

    /// `os.makedirs` for `dir`: every missing directory is created; returns
    /// whether the last one was (IPA applies `dirmode` only then).
    fn make_dirs(&self, dir: &Path, dirmode: Option<u32>) -> io::Result<bool> {
        let mut prefix = PathBuf::new();
        let mut parent = self.resolve(&prefix, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
        let mut created_last = false;
        let parts: Vec<_> = dir.components().collect();
        for (i, part) in parts.iter().enumerate() {
            prefix.push(part);
            created_last = false;
            let here = match self.resolve(&prefix, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(
                        &parent,
                        part.as_os_str(),
                        Mode::from_bits_truncate(DIR_MODE),
                    ) {
                        Ok(()) => created_last = true,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    let fd = self.resolve(&prefix, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
                    if created_last && i + 1 == parts.len() {
                        if let Some(mode) = dirmode {
                            fchmod(&fd, Mode::from_bits_truncate(mode))?;
                        }
                    }
                    fd
                }
                Err(e) => return Err(e.into()),
            };
            parent = here;
        }
        Ok(created_last)
    }

    /// Create or replace `relative` with what `fill` writes, then apply the
    /// attributes; returns the bytes written.
    pub fn write(
        &self,
        relative: &Path,
        attributes: Attributes,
        fill: impl FnOnce(&mut File) -> io::Result<u64>,
    ) -> io::Result<u64> {
        if let Some(dir) = relative.parent() {
            self.make_dirs(dir, attributes.dirmode)?;
        }
        let fd = self.resolve(
            relative,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
            FILE_MODE,
        )?;
        let mut file = File::from(fd);
        let written = fill(&mut file)?;
        if let Some(mode) = attributes.mode {
            fchmod(&file, Mode::from_bits_truncate(mode))?;
        }
        if attributes.owner.is_some() || attributes.group.is_some() {
            std::os::unix::fs::fchown(&file, attributes.owner, attributes.group)?;
        }
        file.sync_all()?;
        Ok(written)
    }

    /// Remove `relative`; `false` when there was nothing to remove.
    pub fn delete(&self, relative: &Path) -> io::Result<bool> {
        let (Some(dir), Some(name)) = (relative.parent(), relative.file_name()) else {
            return Ok(false);
        };
        let parent = match self.resolve(dir, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        match unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn writes_create_parents_and_symlinks_stay_inside() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root_dir = dir.path();
        std::fs::create_dir(root_dir.join("etc")).unwrap();
        // An absolute symlink in the image, and a relative one climbing out.
        std::os::unix::fs::symlink(outside.path(), root_dir.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", root_dir.join("etc/up")).unwrap();
        let root = FsRoot::open(root_dir).unwrap();

        let attrs = Attributes {
            mode: Some(0o600),
            dirmode: Some(0o700),
            ..Default::default()
        };
        let n = root
            .write(Path::new("etc/new/deeper/f"), attrs, |f| {
                f.write_all(b"hello")?;
                Ok(5)
            })
            .unwrap();
        assert_eq!(n, 5);
        let f = root_dir.join("etc/new/deeper/f");
        assert_eq!(std::fs::read(&f).unwrap(), b"hello");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        // dirmode is for the leaf directory only.
        let leaf = std::fs::metadata(root_dir.join("etc/new/deeper")).unwrap();
        assert_eq!(leaf.mode() & 0o7777, 0o700);
        let mid = std::fs::metadata(root_dir.join("etc/new")).unwrap();
        assert_ne!(mid.mode() & 0o7777, 0o700);

        // The absolute link resolves to the image's own /tmp..., not the host's.
        let inside = outside.path().strip_prefix("/").unwrap();
        std::fs::create_dir_all(root_dir.join(inside)).unwrap();
        let target = inside.join("escaped");
        root.write(
            &Path::new("etc/abs").join("escaped"),
            Attributes::default(),
            |f| {
                f.write_all(b"x")?;
                Ok(1)
            },
        )
        .unwrap();
        assert!(!outside.path().join("escaped").exists());
        assert_eq!(std::fs::read(root_dir.join(&target)).unwrap(), b"x");
        // `..` through a link stops at the filesystem's root.
        root.write(Path::new("etc/up/top"), Attributes::default(), |_| Ok(0))
            .unwrap();
        assert!(root_dir.join("top").exists());

        // Deleting: present, absent, absent parent.
        assert!(root.delete(Path::new("etc/new/deeper/f")).unwrap());
        assert!(!root.delete(Path::new("etc/new/deeper/f")).unwrap());
        assert!(!root.delete(Path::new("nope/f")).unwrap());
        assert!(root.is_dir(Path::new("etc")));
        assert!(!root.is_dir(Path::new("var")));
    }
}
