//! `clean.*`, `deploy.*` and `service.*`: the same two commands per kind,
//! `get_<kind>_steps` and `execute_<kind>_step`, over the hardware managers.

use serde_json::{json, Map, Value};
use tracing::info;

use std::sync::Arc;

use crate::api::registry::{object_param, Mode, Params, Registry};
use crate::command_progress::CommandProgress;
use crate::errors::RestError;
use crate::hardware::disk_wait::cache_command_node;
use crate::hardware::{StepCall, StepKind};
use crate::state::AgentContext;

pub fn register(reg: &mut Registry, kind: StepKind) {
    let ext = kind.word();
    let get = format!("get_{ext}_steps");
    let execute = format!("execute_{ext}_step");
    reg.blocking(ext, &get, Mode::Sync, move |ctx, params, _progress| {
        // IPA's cache_node: a node it did not have makes it wait for that
        // node's root disk first.
        if let Some(Value::Object(node)) = params.get("node") {
            cache_command_node(&ctx, node);
        }
        Ok(json!({
            format!("{}_steps", kind.word()): ctx.hardware.steps(kind),
            "hardware_manager_version": ctx.hardware.versions(),
        }))
    });
    reg.blocking(ext, &execute, Mode::Async, move |ctx, params, progress| {
        execute_step(ctx, kind, params, progress)
    });
    reg.validate_with(ext, &execute, validate_step_params);
}

fn validate_step_params(params: &Params) -> Result<(), RestError> {
    let step = object_param(params, "step")?;
    if !matches!(step.get("step"), Some(Value::String(_))) {
        return Err(RestError::invalid_params(format!(
            "Malformed step, no \"step\" key: {}",
            Value::Object(step.clone())
        )));
    }
    if let Some(node) = params.get("node") {
        if !node.is_object() {
            return Err(RestError::invalid_params("node must be an object"));
        }
    }
    if let Some(ports) = params.get("ports") {
        if !(ports.is_array() || ports.is_null()) {
            return Err(RestError::invalid_params("ports must be a list"));
        }
    }
    Ok(())
}

fn execute_step(
    ctx: Arc<AgentContext>,
    kind: StepKind,
    mut params: Params,
    progress: CommandProgress,
) -> Result<Value, RestError> {
    let managers = ctx.hardware.clone();
    let word = kind.word();
    let step = params
        .remove("step")
        .and_then(|s| s.as_object().cloned())
        .ok_or_else(|| RestError::invalid_params("missing step"))?;
    let node = match params.remove("node") {
        Some(Value::Object(n)) => n,
        _ => Map::new(),
    };
    // IPA caches the node before it compares versions.
    cache_command_node(&ctx, &node);
    managers.check_versions(params.get(&format!("{word}_version")))?;
    params.remove(&format!("{word}_version"));

    let ports = match params.remove("ports") {
        Some(Value::Array(p)) => p,
        _ => Vec::new(),
    };
    // IPA: remaining keyword params, then the step's own args on top.
    let mut args = params;
    if let Some(Value::Object(step_args)) = step.get("args") {
        args.extend(step_args.clone());
    }
    let name = step
        .get("step")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    info!(step = %name, kind = word, "executing step");
    let call = StepCall {
        node,
        ports,
        args,
        ctx,
        progress,
    };
    let result = managers.dispatch(kind, &name, &call)?;
    Ok(json!({
        format!("{word}_result"): result,
        format!("{word}_step"): Value::Object(step),
    }))
}
