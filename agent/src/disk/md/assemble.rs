//! Start and stop arrays through md's sysfs interface instead of mdadm:
//! `new_array` creates `mdN`, `metadata_version` 1.2 makes the kernel read
//! each member's superblock as it is added through `new_dev` (checking
//! magic, checksum and set UUID against the first member), and
//! `array_state` runs or clears the array. The level's personality module
//! (`raid0`, `raid1`, `raid10`) must be loaded first.

use std::io;
use std::path::PathBuf;

use super::geometry::{Level, Metadata};

/// Text attributes under a sysfs root; a fake records writes in tests.
pub trait Attrs {
    fn write(&self, rel: &str, value: &str) -> io::Result<()>;
    fn read(&self, rel: &str) -> io::Result<String>;
}

/// The real thing, rooted at `/sys` (or a fixture tree).
pub struct Sysfs(pub PathBuf);

impl Attrs for Sysfs {
    fn write(&self, rel: &str, value: &str) -> io::Result<()> {
        // sysfs attributes exist; never create files elsewhere by mistake.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.0.join(rel))?;
        f.write_all(value.as_bytes())
    }

    fn read(&self, rel: &str) -> io::Result<String> {
        let mut s = std::fs::read_to_string(self.0.join(rel))?;
        s.truncate(s.trim_end().len());
        Ok(s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("md{index}: writing {value:?} to {attr}: {source}")]
    Write {
        index: usize,
        attr: String,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("reading {attr}: {source}")]
    Read {
        attr: String,
        #[source]
        source: io::Error,
    },
    #[error("{attr} holds {value:?}, not MAJOR:MINOR")]
    DevNumber { attr: String, value: String },
}

impl Level {
    /// The kernel module providing the level's personality.
    pub fn kernel_module(self) -> &'static str {
        match self {
            Self::Raid0 => "raid0",
            Self::Raid1 => "raid1",
            Self::Raid10 => "raid10",
        }
    }
}

/// A block device's `MAJOR:MINOR` from `class/block/<name>/dev`.
pub fn dev_number(sys: &dyn Attrs, name: &str) -> Result<(u32, u32), AssembleError> {
    let attr = format!("class/block/{name}/dev");
    let value = sys.read(&attr).map_err(|source| AssembleError::Read {
        attr: attr.clone(),
        source,
    })?;
    value
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or(AssembleError::DevNumber { attr, value })
}

fn put(sys: &dyn Attrs, index: usize, attr: String, value: String) -> Result<(), AssembleError> {
    tracing::debug!(%attr, %value, "md sysfs write");
    sys.write(&attr, &value)
        .map_err(|source| AssembleError::Write {
            index,
            attr,
            value,
            source,
        })
}

impl Metadata {
    /// `metadata_version` in sysfs.
    pub fn sysfs_version(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_2 => "1.2",
        }
    }
}

/// Start `md<index>` from members (`MAJOR:MINOR`, role order) whose
/// superblocks (of one `metadata` version) are already written.
pub fn assemble(
    sys: &dyn Attrs,
    index: usize,
    metadata: Metadata,
    members: &[(u32, u32)],
) -> Result<(), AssembleError> {
    let md = format!("block/md{index}/md");
    // An md device that already exists (say, from an earlier attempt) is reused.
    if sys.read(&format!("{md}/array_state")).is_err() {
        put(
            sys,
            index,
            "module/md_mod/parameters/new_array".into(),
            format!("md{index}"),
        )?;
    }
    put(
        sys,
        index,
        format!("{md}/metadata_version"),
        metadata.sysfs_version().into(),
    )?;
    for (major, minor) in members {
        put(
            sys,
            index,
            format!("{md}/new_dev"),
            format!("{major}:{minor}"),
        )?;
    }
    put(sys, index, format!("{md}/array_state"), "active".into())?;
    tracing::info!(md = index, members = members.len(), "md array started");
    Ok(())
}

/// Stop `md<index>` and release its members (mdadm's `--stop`).
pub fn stop(sys: &dyn Attrs, index: usize) -> Result<(), AssembleError> {
    put(
        sys,
        index,
        format!("block/md{index}/md/array_state"),
        "clear".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        files: HashMap<String, String>,
        writes: RefCell<Vec<(String, String)>>,
        refuse: Option<&'static str>,
    }

    impl Attrs for Fake {
        fn write(&self, rel: &str, value: &str) -> io::Result<()> {
            if self.refuse == Some(rel) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.writes.borrow_mut().push((rel.into(), value.into()));
            Ok(())
        }

        fn read(&self, rel: &str) -> io::Result<String> {
            self.files
                .get(rel)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    #[test]
    fn creates_sets_version_adds_members_in_role_order_and_runs() {
        let fake = Fake::default();
        assemble(&fake, 0, Metadata::V1_2, &[(252, 1), (252, 17)]).unwrap();
        let w = fake.writes.borrow();
        let want = [
            ("module/md_mod/parameters/new_array", "md0"),
            ("block/md0/md/metadata_version", "1.2"),
            ("block/md0/md/new_dev", "252:1"),
            ("block/md0/md/new_dev", "252:17"),
            ("block/md0/md/array_state", "active"),
        ];
        let got: Vec<(&str, &str)> = w.iter().map(|(a, v)| (a.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn reuses_an_existing_device_and_reports_the_failing_write() {
        let mut fake = Fake::default();
        fake.files
            .insert("block/md1/md/array_state".into(), "inactive".into());
        fake.refuse = Some("block/md1/md/new_dev");
        let err = assemble(&fake, 1, Metadata::V1_2, &[(8, 1)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("md1: writing \"8:1\" to block/md1/md/new_dev"),
            "{err}"
        );
        assert_eq!(
            fake.writes.borrow()[0],
            ("block/md1/md/metadata_version".into(), "1.2".into()),
            "no new_array for an existing md1"
        );
    }

    #[test]
    fn an_esp_mirror_is_metadata_1_0() {
        let fake = Fake::default();
        assemble(&fake, 2, Metadata::V1_0, &[(8, 3), (8, 19)]).unwrap();
        assert_eq!(
            fake.writes.borrow()[1],
            ("block/md2/md/metadata_version".into(), "1.0".into())
        );
    }

    #[test]
    fn stops_with_clear() {
        let fake = Fake::default();
        stop(&fake, 3).unwrap();
        assert_eq!(
            fake.writes.borrow()[0],
            ("block/md3/md/array_state".into(), "clear".into())
        );
    }

    #[test]
    fn reads_device_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let attr = dir.path().join("class/block/vda1");
        std::fs::create_dir_all(&attr).unwrap();
        std::fs::write(attr.join("dev"), "252:1\n").unwrap();
        std::fs::create_dir_all(dir.path().join("class/block/bad")).unwrap();
        std::fs::write(dir.path().join("class/block/bad/dev"), "junk\n").unwrap();
        let sys = Sysfs(dir.path().to_path_buf());
        assert_eq!(dev_number(&sys, "vda1").unwrap(), (252, 1));
        assert!(matches!(
            dev_number(&sys, "bad"),
            Err(AssembleError::DevNumber { .. })
        ));
        assert!(matches!(
            dev_number(&sys, "nope"),
            Err(AssembleError::Read { .. })
        ));
        assert!(
            sys.write("class/block/nope/dev", "1").is_err(),
            "never creates files"
        );
        assert_eq!(Level::Raid10.kernel_module(), "raid10");
    }
}
