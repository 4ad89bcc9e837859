//! Which created array the OS goes to, kept for this boot: IPA remembers
//! `is_root_volume` of each array it created (in the agent's memory) and
//! `get_os_install_device` then prefers the `true` one over root device
//! hints and leaves the `false` ones out. Kept as a file in the agent's
//! run directory, so it also survives an agent restart within the boot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FILE: &str = "raid-root-volumes.json";

/// `/dev/mdN` → `is_root_volume`, for the arrays that had one.
pub type RootVolumes = BTreeMap<PathBuf, bool>;

pub fn save(run_dir: &Path, volumes: &RootVolumes) -> std::io::Result<()> {
    std::fs::create_dir_all(run_dir)?;
    let text = serde_json::to_vec(volumes).map_err(std::io::Error::other)?;
    std::fs::write(run_dir.join(FILE), text)
}

/// What [`save`] kept; nothing (or a damaged file) is no preference.
pub fn load(run_dir: &Path) -> RootVolumes {
    std::fs::read(run_dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn clear(run_dir: &Path) {
    let _ = std::fs::remove_file(run_dir.join(FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        let mut v = RootVolumes::new();
        v.insert("/dev/md1".into(), true);
        v.insert("/dev/md0".into(), false);
        save(dir.path(), &v).unwrap();
        assert_eq!(load(dir.path()), v);
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(load(dir.path()).is_empty());
        clear(dir.path());
        assert!(load(dir.path()).is_empty());
    }
}
