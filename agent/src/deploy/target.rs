//! The disk the OS goes to (IPA's `get_os_install_device`): the one the
//! image was written to in this boot, else the root device hints' choice.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::whole_disk::hints;
use crate::disk::skip_list::SkipList;
use crate::disk::{choose_root_device, list_block_devices};
use crate::errors::RestError;
use crate::state::AgentContext;

pub fn install_device(ctx: &AgentContext) -> Result<PathBuf, RestError> {
    if let Some(prepared) = ctx.prepared() {
        return Ok(prepared.device);
    }
    let node: Map<String, Value> = ctx
        .node()
        .and_then(|n| serde_json::to_value(n).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let cfg = &ctx.config;
    let devices = SkipList::from_node(&node)
        .map_err(RestError::invalid_params)?
        .apply(list_block_devices(
            &cfg.sysfs_root,
            &cfg.dev_root,
            &cfg.disk_policy(),
        ));
    Ok(choose_root_device(&devices, hints(&node).as_ref())?.path)
}
