//! IPA's software RAID steps: `create_configuration` and
//! `delete_configuration` (clean steps of the `raid` interface) and
//! `apply_configuration` (a deploy step). The node's `target_raid_config`
//! (or the step's `raid_config`) is parsed once into
//! [`crate::disk::raid::SoftwareRaid`]; the disks are laid out, the md
//! superblocks written and the arrays started natively (no mdadm).

use serde_json::{json, Value};
use tracing::info;

use super::manager::StepCall;
use crate::disk::boot_mode::BootMode;
use crate::disk::md;
use crate::disk::raid::{self, config, lifecycle, node, root_volume, NodeContext, SoftwareRaid};
use crate::disk::{list_block_devices, BlockDevice};
use crate::errors::RestError;

fn node_value(call: &StepCall) -> Value {
    Value::Object(call.node.clone())
}

fn context<'a>(node: &'a Value, skip_list: &[String]) -> NodeContext<'a> {
    NodeContext {
        uuid: node.get("uuid").and_then(Value::as_str).unwrap_or_default(),
        raid_skip_list: !skip_list.is_empty(),
    }
}

/// The disks RAID may use: every disk the agent may touch, arrays' holders
/// included (RAID works on the physical disks).
fn disks(call: &StepCall) -> Vec<BlockDevice> {
    let cfg = &call.ctx.config;
    list_block_devices(&cfg.sysfs_root, &cfg.dev_root, &cfg.disk_policy())
}

fn raid_error(e: impl std::fmt::Display) -> RestError {
    RestError::software_raid(e.to_string())
}

/// Lay out and start `raid` (validated). Records which array is the root.
fn create(call: &StepCall, node: &Value, raid: &SoftwareRaid) -> Result<(), RestError> {
    let cfg = &call.ctx.config;
    let boot = node::boot_mode(node, BootMode::current(&cfg.sysfs_root));
    let label = node::table_label(node, boot);
    let plan = raid::plan(&disks(call), raid, boot, Some(label)).map_err(raid_error)?;
    info!(
        ?boot,
        ?label,
        arrays = plan.arrays.len(),
        holders = plan.holders.len(),
        "creating software RAID"
    );
    let created = lifecycle::create(
        &cfg.sysfs_root,
        &plan,
        md::homehost().as_deref(),
        md::now(),
        &crate::init::modules::load_in_ramdisk,
    )
    .map_err(raid_error)?;
    let volumes: root_volume::RootVolumes = created
        .iter()
        .filter_map(|c| Some((c.device.clone(), c.is_root_volume?)))
        .collect();
    root_volume::save(&cfg.run_dir, &volumes)
        .map_err(|e| raid_error(format!("recording the RAID root volume: {e}")))?;
    info!("Successfully created Software RAID");
    Ok(())
}

/// `create_configuration`: the node's `target_raid_config`; without a
/// `software` logical disk there is nothing to do and the result is `{}`,
/// as IPA's.
pub fn create_configuration(call: &StepCall) -> Result<Value, RestError> {
    let node = node_value(call);
    let target = node
        .get("target_raid_config")
        .cloned()
        .unwrap_or(Value::Null);
    let skip = node::raid_skip_list(&node);
    let Some(raid) = config::for_create(&target, context(&node, &skip)).map_err(raid_error)? else {
        info!("No Software RAID config found");
        return Ok(json!({}));
    };
    create(call, &node, &raid)?;
    Ok(target)
}

/// `delete_configuration`: every array on the disks the agent may touch,
/// except volumes on the node's skip list; returns null, as IPA's.
pub fn delete_configuration(call: &StepCall) -> Result<Value, RestError> {
    let node = node_value(call);
    let keep = node::raid_skip_list(&node);
    let cfg = &call.ctx.config;
    lifecycle::delete(
        &cfg.sysfs_root,
        &disks(call),
        &keep,
        &crate::init::modules::load_in_ramdisk,
    )
    .map_err(raid_error)?;
    root_volume::clear(&cfg.run_dir);
    Ok(Value::Null)
}

/// `apply_configuration` (deploy step): validate `raid_config`, delete the
/// existing arrays unless `delete_existing` is false, then create.
pub fn apply_configuration(call: &StepCall) -> Result<Value, RestError> {
    let node = node_value(call);
    let raid_config = call
        .args
        .get("raid_config")
        .filter(|v| !v.is_null())
        .cloned()
        .ok_or_else(|| RestError::invalid_params("raid_config is required"))?;
    let skip = node::raid_skip_list(&node);
    let parsed = config::validate(&raid_config, context(&node, &skip)).map_err(raid_error)?;
    if call.bool_setting("delete_existing", true)? {
        delete_configuration(call)?;
    }
    // Validation refuses any logical disk not on the `software` controller.
    match parsed {
        Some(raid) => create(call, &node, &raid)?,
        None => {
            info!("No Software RAID config found");
            return Ok(json!({}));
        }
    }
    Ok(raid_config)
}
