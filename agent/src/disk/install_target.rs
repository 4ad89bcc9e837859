//! The device a deploy writes the OS to (IPA's `get_os_install_device`):
//! the disks the agent may touch, with software RAID as IPA's ramdisk sees
//! it (arrays found on disk are assembled, an array replaces its holder
//! disks), less the node's skip list, chosen by the RAID root volume, the
//! root device hints or IPA's size rule.

use std::path::Path;

use super::node_disks::NodeDisks;
use super::raid::{root_volume, running};
use super::root::choose_install_device;
use super::skip_list::SkipList;
use super::{list_block_devices, BlockDevice, DiskPolicy};

/// Where the agent looks.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub sysfs_root: &'a Path,
    pub dev_root: &'a Path,
    pub policy: &'a DiskPolicy,
    /// Where this boot's RAID root volume choice is kept.
    pub run_dir: &'a Path,
    /// For md's modules, when arrays on disk are assembled.
    pub load_module: running::LoadModule<'a>,
}

/// Every device an image may go to, arrays included.
pub fn candidates(scope: Scope<'_>, skip: &SkipList) -> Vec<BlockDevice> {
    let disks = list_block_devices(scope.sysfs_root, scope.dev_root, scope.policy);
    running::assemble_found(
        scope.sysfs_root,
        &running::member_candidates(scope.sysfs_root, &disks),
        scope.load_module,
    );
    skip.apply(running::install_candidates(
        disks,
        scope.sysfs_root,
        scope.policy,
    ))
}

pub fn install_device(
    scope: Scope<'_>,
    node: &NodeDisks,
) -> Result<BlockDevice, super::root::DeviceNotFound> {
    let devices = candidates(scope, &node.skip);
    choose_install_device(
        &devices,
        node.hints.as_ref(),
        &root_volume::load(scope.run_dir),
    )
}
