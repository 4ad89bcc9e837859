//! `standby.*`: image preparation, partition UUIDs, `sync`, and the power
//! commands (`power_off`, and `run_image`, which reboots into the image).

use std::time::Duration;

use serde_json::Value;

use crate::api::registry::{object_param, Mode, Params, Registry};
use crate::deploy::stream::md5_enabled;
use crate::deploy::{partition_uuids, prepare_image, DeployError, ImageInfo};
use crate::errors::RestError;
use crate::power::PowerAction;

/// The result must reach the conductor before the machine goes away.
const POWER_DELAY: Duration = Duration::from_secs(1);

pub fn register(reg: &mut Registry) {
    reg.blocking("standby", "sync", Mode::Sync, |_ctx, _params, _progress| {
        nix::unistd::sync();
        Ok(Value::Null)
    });
    reg.blocking(
        "standby",
        "prepare_image",
        Mode::Async,
        |ctx, params, progress| {
            let info = ImageInfo::parse(
                params.get("image_info").unwrap_or(&Value::Null),
                md5_enabled(&ctx),
            )
            .map_err(DeployError::from)?;
            // A node not looked up yet has no hints and no skip list.
            let node = ctx.node().unwrap_or_default();
            Ok(
                prepare_image(&ctx, &node, &info, params.get("configdrive"), &progress)
                    .map(Value::String)?,
            )
        },
    );
    reg.validate_with("standby", "prepare_image", validate_prepare_image);
    reg.blocking(
        "standby",
        "get_partition_uuids",
        Mode::Sync,
        |ctx, _params, _progress| Ok(partition_uuids(&ctx)),
    );
    // IPA: sync, then `poweroff` / `reboot`; both async commands.
    for (name, action) in [
        ("power_off", PowerAction::PowerOff),
        ("run_image", PowerAction::Reboot),
    ] {
        reg.blocking(
            "standby",
            name,
            Mode::Async,
            move |ctx, _params, _progress| {
                crate::power::schedule(action, ctx.config.power_policy, POWER_DELAY)
                    .map_err(|e| RestError::command_execution(e.to_string()))?;
                Ok(Value::Null)
            },
        );
    }
}

/// IPA validates `image_info` before accepting the command (HTTP 400).
/// MD5 is allowed here; the command itself applies the conductor's
/// `agent_md5_checksum_enable` when it parses the same text again.
fn validate_prepare_image(params: &Params) -> Result<(), RestError> {
    let info = object_param(params, "image_info")?;
    ImageInfo::parse(&Value::Object(info.clone()), true)
        .map(|_| ())
        .map_err(|e| RestError::invalid_params(e.to_string()))
}
