//! The disk the OS goes to (IPA's `get_os_install_device`): the one the
//! image was written to in this boot, else the root device hints' choice.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::whole_disk::hints;
use crate::disk::install_target;
use crate::disk::skip_list::SkipList;
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
    let skip = SkipList::from_node(&node).map_err(RestError::invalid_params)?;
    let policy = cfg.disk_policy();
    Ok(
        install_target::install_device(cfg.install_scope(&policy), &skip, hints(&node).as_ref())?
            .path,
    )
}
