//! Find arrays on disk without a running md driver or mdadm: read every
//! candidate device's version-1 superblock and group members by set UUID
//! (what `mdadm --examine --scan` reports). `delete_configuration` zeroes
//! what this finds; assembly starts the complete groups.

use std::fs::File;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::geometry::Metadata;
use super::member;
use super::superblock::Superblock;

/// A device carrying a superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub device: PathBuf,
    pub metadata: Metadata,
    pub sb: Superblock,
}

/// One array's members as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayFound {
    pub set_uuid: Uuid,
    pub set_name: String,
    pub level: i32,
    pub raid_disks: u32,
    pub metadata: Metadata,
    /// (device, role), by role; spares and faulty devices left out.
    pub members: Vec<(PathBuf, u16)>,
}

impl ArrayFound {
    /// Every role from 0 to `raid_disks - 1` has a member.
    pub fn complete(&self) -> bool {
        (0..self.raid_disks).all(|r| self.members.iter().any(|(_, role)| u32::from(*role) == r))
    }

    /// The name IPA would report for it.
    pub fn volume_name(&self) -> &str {
        super::volume_name(&self.set_name)
    }
}

/// The superblocks on `devices`; unreadable devices and corrupt
/// superblocks are logged and skipped, as `mdadm --examine` failures are.
pub fn scan(devices: &[PathBuf]) -> Vec<Found> {
    devices
        .iter()
        .filter_map(|device| match read(device) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(device = %device.display(), error = %e, "md superblock unreadable");
                None
            }
        })
        .collect()
}

fn read(device: &Path) -> Result<Option<Found>, member::MemberError> {
    let f = File::open(device)?;
    Ok(member::read_any(&f)?.map(|(metadata, sb)| Found {
        device: device.to_path_buf(),
        metadata,
        sb,
    }))
}

/// Group by set UUID, in order of first appearance. When two devices claim
/// one role, the one with more events (the fresher superblock) keeps it.
pub fn group(found: &[Found]) -> Vec<ArrayFound> {
    let mut arrays: Vec<(ArrayFound, Vec<u64>)> = Vec::new();
    for f in found {
        let at = match arrays.iter().position(|(a, _)| a.set_uuid == f.sb.set_uuid) {
            Some(i) => i,
            None => {
                arrays.push((
                    ArrayFound {
                        set_uuid: f.sb.set_uuid,
                        set_name: f.sb.set_name.clone(),
                        level: f.sb.level,
                        raid_disks: f.sb.raid_disks,
                        metadata: f.metadata,
                        members: Vec::new(),
                    },
                    Vec::new(),
                ));
                arrays.len() - 1
            }
        };
        let Some(role) = f.sb.role() else { continue };
        let (array, events) = &mut arrays[at];
        match array.members.iter().position(|(_, r)| *r == role) {
            Some(i) if events[i] >= f.sb.events => {}
            Some(i) => {
                array.members[i] = (f.device.clone(), role);
                events[i] = f.sb.events;
            }
            None => {
                array.members.push((f.device.clone(), role));
                events.push(f.sb.events);
            }
        }
    }
    arrays
        .into_iter()
        .map(|(mut a, _)| {
            a.members.sort_by_key(|(_, role)| *role);
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::md::geometry::{superblocks, ArraySpec, Level};
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    fn write_array(dir: &Path, prefix: &str, level: Level, n: usize, name: &str) -> Vec<PathBuf> {
        let bytes: u64 = 16 << 20;
        let sbs = superblocks(&ArraySpec {
            metadata: Metadata::V1_2,
            level,
            set_uuid: Uuid::new_v4(),
            name: name.into(),
            member_sectors: vec![bytes / 512; n],
            device_uuids: (0..n).map(|_| Uuid::new_v4()).collect(),
            now: 1,
        })
        .unwrap();
        // Reverse order on "disk" to show grouping sorts by role.
        sbs.iter()
            .enumerate()
            .rev()
            .map(|(i, sb)| {
                let path = dir.join(format!("{prefix}{i}"));
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap();
                f.set_len(bytes).unwrap();
                member::write(&f, sb).unwrap();
                path
            })
            .collect()
    }

    #[test]
    fn groups_members_by_set_and_role() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut devices = write_array(d, "a", Level::Raid1, 2, "host:root");
        devices.extend(write_array(d, "b", Level::Raid10, 4, "data"));
        let blank = d.join("blank");
        std::fs::File::create(&blank)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let corrupt = write_array(d, "c", Level::Raid1, 2, "bad").remove(0);
        OpenOptions::new()
            .write(true)
            .open(&corrupt)
            .unwrap()
            .write_all_at(&[0xff], member::SB_OFFSET + 40)
            .unwrap();
        devices.extend([blank, corrupt, d.join("missing")]);

        let found = scan(&devices);
        assert_eq!(
            found.len(),
            6,
            "two arrays' members; blank, corrupt, missing skipped"
        );
        let arrays = group(&found);
        assert_eq!(arrays.len(), 2);
        assert_eq!(arrays[0].volume_name(), "root");
        assert_eq!(arrays[0].level, 1);
        assert_eq!(
            arrays[0].members,
            vec![(d.join("a0"), 0), (d.join("a1"), 1)]
        );
        assert!(arrays[0].complete());
        assert_eq!(arrays[1].volume_name(), "data");
        assert_eq!(arrays[1].members.len(), 4);
        assert!(arrays[1].complete());

        let partial = group(&found[..3]);
        assert!(!partial[1].complete(), "one RAID-10 member of four");
    }

    #[test]
    fn the_fresher_superblock_keeps_a_role() {
        let dir = tempfile::tempdir().unwrap();
        let devices = write_array(dir.path(), "a", Level::Raid1, 2, "root");
        let mut found = scan(&devices);
        // A stale copy of role 0 elsewhere, with fewer events.
        let mut stale = found
            .iter()
            .find(|f| f.sb.role() == Some(0))
            .unwrap()
            .clone();
        stale.device = dir.path().join("stale");
        stale.sb.events = 0;
        found.insert(0, stale);
        let arrays = group(&found);
        assert_eq!(arrays[0].members[0].0, dir.path().join("a0"));
    }
}
