//! Whole RAID operations on a machine, in IPA's order: creating (guard,
//! partition, superblocks, start each array) and deleting (assemble what is
//! on disk, wipe and stop each array, zero every superblock, wipe the
//! holders; twice, then what is left is an error). The pieces are
//! [`super::create`], [`super::delete`] and [`super::running`].

use std::path::{Path, PathBuf};

use super::create::{self, CreateError, WrittenArray};
use super::delete::{self, DeleteError};
use super::plan::RaidPlan;
use super::running::{self, LoadModule, RunError};
use crate::disk::md::{self, scan, Metadata};
use crate::disk::{wipe, BlockDevice};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Delete(#[from] DeleteError),
    #[error("starting md{index} ({name}): {source} (is the md driver loaded?)")]
    Start {
        index: usize,
        name: String,
        #[source]
        source: RunError,
    },
    #[error(
        "/dev/md{0} already exists; delete the existing configuration first (delete_configuration)"
    )]
    Exists(usize),
    #[error("the kernel made no device node for RAID member {0}")]
    NoMemberNode(String),
    #[error("stopping md{index}: {source}")]
    Stop {
        index: usize,
        #[source]
        source: RunError,
    },
    #[error("wiping /dev/md{index}: {source}")]
    WipeArray {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("Unable to clean all softraid correctly. Remaining {0:?}")]
    Remaining(Vec<String>),
}

/// An array made by [`create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub array: WrittenArray,
    pub device: PathBuf,
    pub is_root_volume: Option<bool>,
}

/// How long to wait for partition nodes after the tables are written
/// (devtmpfs makes them at once; udev a little later): 25 × 200 ms.
const NODE_WAIT_ATTEMPTS: u32 = 25;

/// `create_configuration` on the disks: IPA's "Partitions detected" guard,
/// the holders' tables, every array's superblocks, then each array started
/// through sysfs as `/dev/md<index>`.
pub fn create(
    sysfs_root: &Path,
    plan: &RaidPlan,
    homehost: Option<&str>,
    now: u64,
    load: LoadModule<'_>,
) -> Result<Vec<Created>, LifecycleError> {
    create::check_unpartitioned(plan)?;
    // Never add members to an array the kernel already has (it may not be ours).
    let existing = running::arrays(sysfs_root);
    if let Some(a) = plan
        .arrays
        .iter()
        .find(|a| existing.iter().any(|e| e.index == a.index))
    {
        return Err(LifecycleError::Exists(a.index));
    }
    let written = create::write(plan, homehost, now)?;
    let mut out = Vec::with_capacity(written.len());
    for (array, planned) in written.into_iter().zip(&plan.arrays) {
        let mut nodes = Vec::with_capacity(array.members.len());
        for region in &array.members {
            let mut region = region.clone();
            region.wait_for_node(NODE_WAIT_ATTEMPTS);
            let node = region
                .node
                .clone()
                .ok_or_else(|| LifecycleError::NoMemberNode(region.path().display().to_string()))?;
            nodes.push(node);
        }
        running::start(
            sysfs_root,
            array.index,
            array.level.md_level(),
            Metadata::V1_2,
            &nodes,
            load,
        )
        .map_err(|source| LifecycleError::Start {
            index: array.index,
            name: array.set_name.clone(),
            source,
        })?;
        tracing::info!(md = array.index, name = %array.set_name, "software RAID device created");
        out.push(Created {
            device: PathBuf::from(format!("/dev/md{}", array.index)),
            is_root_volume: planned.is_root_volume,
            array,
        });
    }
    Ok(out)
}

/// The volume name of a kernel array, read from its first member's superblock.
pub fn volume_name(array: &running::RunningArray) -> Option<String> {
    let member = array.members.first()?;
    let found = scan::scan(&[Path::new("/dev").join(member)]);
    found
        .first()
        .map(|f| md::volume_name(&f.sb.set_name).to_string())
}

/// `delete_configuration` over `disks` (the disks the agent may touch),
/// keeping arrays named in `keep_volumes` (the node's skip list) with every
/// disk they are on. Two passes, as IPA: what still carries md metadata
/// after the second is an error.
pub fn delete(
    sysfs_root: &Path,
    disks: &[BlockDevice],
    keep_volumes: &[String],
    load: LoadModule<'_>,
) -> Result<(), LifecycleError> {
    for pass in 1..=2 {
        let kept = delete_pass(sysfs_root, disks, keep_volumes, load)?;
        let remaining = leftovers(sysfs_root, disks, &kept);
        if remaining.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            pass,
            ?remaining,
            "software RAID still present after a delete pass"
        );
        if pass == 2 {
            return Err(LifecycleError::Remaining(remaining));
        }
    }
    Ok(())
}

/// One pass; returns the disk names kept for skip-listed volumes.
fn delete_pass(
    sysfs_root: &Path,
    disks: &[BlockDevice],
    keep_volumes: &[String],
    load: LoadModule<'_>,
) -> Result<Vec<String>, LifecycleError> {
    running::assemble_found(
        sysfs_root,
        &running::member_candidates(sysfs_root, disks),
        load,
    );
    let mut kept: Vec<String> = Vec::new();
    let allowed = |h: &String| disks.iter().any(|d| &d.name == h);
    for array in running::arrays(sysfs_root) {
        if !array.holders.iter().all(allowed) {
            tracing::info!(md = array.index, holders = ?array.holders, "md array on disks not ours: left alone");
            kept.extend(array.holders.iter().cloned());
            continue;
        }
        let name = volume_name(&array);
        if name.as_ref().is_some_and(|n| keep_volumes.contains(n)) {
            tracing::info!(md = array.index, volume = ?name, "md array on the skip list: kept");
            kept.extend(array.holders.iter().cloned());
            continue;
        }
        if array.is_running() {
            // IPA wipes the array's own signatures before stopping it.
            wipe::wipe_device(&array.path).map_err(|source| LifecycleError::WipeArray {
                index: array.index,
                source,
            })?;
        }
        running::stop(sysfs_root, array.index).map_err(|source| LifecycleError::Stop {
            index: array.index,
            source,
        })?;
        tracing::info!(md = array.index, volume = ?name, "md array stopped");
    }
    let targets: Vec<PathBuf> = disks
        .iter()
        .filter(|d| !kept.contains(&d.name))
        .map(|d| d.path.clone())
        .collect();
    for cleaned in delete::clean(&targets)? {
        tracing::info!(disk = %cleaned.disk.display(), members = ?cleaned.members, "software RAID removed from disk");
    }
    Ok(kept)
}

/// Arrays the kernel still has, and superblocks still on disks not kept.
fn leftovers(sysfs_root: &Path, disks: &[BlockDevice], kept: &[String]) -> Vec<String> {
    let mut out: Vec<String> = running::arrays(sysfs_root)
        .iter()
        .filter(|a| !a.holders.iter().any(|h| kept.contains(h)))
        .map(running::RunningArray::name)
        .collect();
    let ours: Vec<BlockDevice> = disks
        .iter()
        .filter(|d| !kept.contains(&d.name))
        .cloned()
        .collect();
    out.extend(
        scan::scan(&running::member_candidates(sysfs_root, &ours))
            .into_iter()
            .map(|f| f.device.display().to_string()),
    );
    out
}
