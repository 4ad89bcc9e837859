//! The `inject_files` deploy step as Ironic calls it: the wire arguments are
//! parsed here, the work is `deploy::inject`'s.

use serde_json::{json, Value};
use tracing::info;

use super::manager::StepCall;
use crate::deploy::inject::{self, DiskEnv, InjectError};
use crate::errors::RestError;

/// IPA's `inject_files.ARGSINFO`.
pub fn argsinfo() -> Value {
    json!({
        "files": {
            "description": "Files to inject, a list of file structures with keys: 'path' \
                (path to the file), 'partition' (partition specifier), 'content' (base64 \
                encoded string), 'mode' (new file mode) and 'dirmode' (mode for the leaf \
                directory, if created). Merged with the values from \
                node.properties[inject_files].",
            "required": false,
        },
        "verify_ca": {
            "description": "Whether to verify TLS certificates. Global agent options are \
                used by default.",
            "required": false,
        },
    })
}

pub fn inject_files(call: &StepCall) -> Result<Value, RestError> {
    let ctx = &call.ctx;
    let from_properties = call
        .node
        .get("properties")
        .and_then(|p| p.get("inject_files"));
    let files = inject::spec::parse(
        from_properties,
        call.args.get("files"),
        &call.node,
        &call.ports,
    )
    .map_err(RestError::invalid_params)?;
    if files.is_empty() {
        info!("No files to inject");
        return Ok(Value::Null);
    }
    // As IPA: `verify_ca: false` turns verification off; true keeps the
    // agent's own setting (an `ipa-insecure=1` agent stays insecure).
    let verify_ca = match call.args.get("verify_ca").filter(|v| !v.is_null()) {
        None => true,
        Some(v) => ferrite_protocol::loose::value_as_bool(v).ok_or_else(|| {
            RestError::invalid_params(format!("verify_ca must be a boolean, got {v}"))
        })?,
    };
    let http = crate::deploy::stream::http_client_verifying(ctx, verify_ca)?;
    let disk = crate::deploy::install_device(ctx)?;
    let cfg = &ctx.config;
    let policy = cfg.disk_policy();
    let env = DiskEnv {
        sysfs_root: &cfg.sysfs_root,
        dev_root: &cfg.dev_root,
        policy: &policy,
    };
    info!(files = files.len(), disk = %disk.display(), "injecting files");
    inject::inject(&env, &disk, &files, &http).map_err(|e| match e {
        InjectError::Invalid(m) => RestError::invalid_params(m),
        InjectError::NotFound(m) => RestError::device_not_found(m),
        e @ (InjectError::Mount(_) | InjectError::File { .. }) => {
            RestError::command_execution(e.to_string())
        }
    })?;
    Ok(Value::Null)
}
