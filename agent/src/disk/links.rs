//! `/dev/disk/by-uuid` and `/dev/disk/by-partuuid` links, as udev makes
//! them. The ramdisk has no udev, but tools run inside a deployed image
//! expect these links: `grub-mkconfig` writes `root=UUID=<uuid>` only when
//! `/dev/disk/by-uuid/<uuid>` exists, and otherwise the ramdisk's name of
//! the partition (`root=/dev/vda1`), which the booted OS may not share.

use std::io;
use std::path::{Path, PathBuf};

/// One link: `<dev>/disk/<dir>/<id>` → `../../<node's name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub dir: &'static str,
    pub id: String,
    pub node: PathBuf,
}

impl Link {
    pub fn by_uuid(id: &str, node: &Path) -> Self {
        Self {
            dir: "by-uuid",
            id: id.to_string(),
            node: node.to_path_buf(),
        }
    }

    pub fn by_partuuid(id: &str, node: &Path) -> Self {
        Self {
            dir: "by-partuuid",
            id: id.to_string(),
            node: node.to_path_buf(),
        }
    }
}

/// A name udev would use as is (no escaping needed).
fn plain_name(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Make the links under `dev` (`/dev` in the ramdisk); a link that points
/// elsewhere (an earlier disk layout) is replaced. Returns the links made.
pub fn ensure(dev: &Path, links: &[Link]) -> io::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for link in links {
        let Some(name) = link.node.file_name() else {
            continue;
        };
        if !plain_name(&link.id) {
            tracing::debug!(id = %link.id, "no /dev/disk link for an identifier udev would escape");
            continue;
        }
        let dir = dev.join("disk").join(link.dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(&link.id);
        let target = Path::new("../..").join(name);
        match std::fs::read_link(&path) {
            Ok(existing) if existing == target => continue,
            Ok(_) => std::fs::remove_file(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(&target, &path)?;
        made.push(path);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_replaces_and_keeps_links() {
        let dev = tempfile::tempdir().unwrap();
        let uuid = "5e1f0a2c-6b7d-4c1e-9a3f-0d2b8c7e6f51";
        let made = ensure(
            dev.path(),
            &[
                Link::by_uuid(uuid, Path::new("/dev/vda1")),
                Link::by_partuuid("1234abcd-01", Path::new("/dev/vda1")),
                Link::by_uuid("../evil", Path::new("/dev/vda2")),
                Link::by_uuid("", Path::new("/dev/vda2")),
            ],
        )
        .unwrap();
        assert_eq!(made.len(), 2);
        let by_uuid = dev.path().join("disk/by-uuid").join(uuid);
        assert_eq!(
            std::fs::read_link(&by_uuid).unwrap(),
            Path::new("../../vda1")
        );
        assert_eq!(
            std::fs::read_link(dev.path().join("disk/by-partuuid/1234abcd-01")).unwrap(),
            Path::new("../../vda1")
        );
        assert!(!dev.path().join("disk/evil").exists());
        // Unchanged: nothing to do. Moved: the link follows.
        assert!(
            ensure(dev.path(), &[Link::by_uuid(uuid, Path::new("/dev/vda1"))])
                .unwrap()
                .is_empty()
        );
        ensure(dev.path(), &[Link::by_uuid(uuid, Path::new("/dev/vda3"))]).unwrap();
        assert_eq!(
            std::fs::read_link(&by_uuid).unwrap(),
            Path::new("../../vda3")
        );
    }
}
