//! `standby.*`: image preparation, partition UUIDs and `sync`. Power
//! commands join in with the ramdisk's PID 1 mode.

use serde_json::{Map, Value};

use crate::api::registry::{object_param, Mode, Params, Registry};
use crate::deploy::{partition_uuids, prepare_image};
use crate::errors::RestError;

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
            let node: Map<String, Value> = ctx
                .node()
                .and_then(|n| serde_json::to_value(n).ok())
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            let image_info = params.get("image_info").cloned().unwrap_or(Value::Null);
            prepare_image(
                &ctx,
                &node,
                &image_info,
                params.get("configdrive"),
                &progress,
            )
            .map(Value::String)
        },
    );
    reg.validate_with("standby", "prepare_image", validate_prepare_image);
    reg.blocking(
        "standby",
        "get_partition_uuids",
        Mode::Sync,
        |ctx, _params, _progress| Ok(partition_uuids(&ctx)),
    );
}

/// IPA validates `image_info` before accepting the command (HTTP 400).
fn validate_prepare_image(params: &Params) -> Result<(), RestError> {
    let info = object_param(params, "image_info")?;
    crate::deploy::ImageInfo::parse(&Value::Object(info.clone()), true).map(|_| ())
}
