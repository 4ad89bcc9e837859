//! The disk the OS goes to (IPA's `get_os_install_device`): the one the
//! image was written to in this boot, else the root device hints' choice.

use std::path::PathBuf;

use super::DeployError;
use crate::config::Config;
use crate::disk::install_target;
use crate::disk::node_disks::NodeDisks;
use crate::disk::DiskPolicy;
use crate::state::AgentContext;

/// Where a deploy looks for its install device, under `policy` (from
/// [`Config::disk_policy`]); arrays found on disk are started with the
/// ramdisk's module loader.
pub fn install_scope<'a>(cfg: &'a Config, policy: &'a DiskPolicy) -> install_target::Scope<'a> {
    install_target::Scope {
        sysfs_root: &cfg.sysfs_root,
        dev_root: &cfg.dev_root,
        policy,
        run_dir: &cfg.run_dir,
        load_module: &crate::init::modules::load_in_ramdisk,
    }
}

pub fn install_device(ctx: &AgentContext) -> Result<PathBuf, DeployError> {
    if let Some(prepared) = ctx.prepared() {
        return Ok(prepared.device);
    }
    let disks = match ctx.node() {
        Some(node) => NodeDisks::of(&node).map_err(DeployError::InvalidParams)?,
        None => NodeDisks::default(),
    };
    let cfg = &ctx.config;
    let policy = cfg.disk_policy();
    Ok(install_target::install_device(install_scope(cfg, &policy), &disks)?.path)
}
