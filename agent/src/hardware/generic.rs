//! The generic hardware manager: steps that work on any machine. Steps are
//! listed only once they are implemented, so a conductor never schedules a
//! step this agent cannot run.

use std::sync::Arc;
use std::time::Duration;

use ferrite_protocol::steps::Step;
use serde_json::Value;
use tracing::info;

use super::burnin::burn_cpu;
use super::manager::{HardwareManager, StepCall, StepDef, StepKind};
use crate::errors::RestError;

/// IPA's `agent_burnin_cpu_timeout` default: one day.
const DEFAULT_BURNIN_SECS: u64 = 86_400;

pub struct GenericHardwareManager;

impl HardwareManager for GenericHardwareManager {
    fn name(&self) -> &'static str {
        "generic_hardware_manager"
    }

    fn class_name(&self) -> &'static str {
        "GenericHardwareManager"
    }

    fn version(&self) -> &'static str {
        "1.2"
    }

    fn support(&self) -> u8 {
        1
    }

    fn steps(&self) -> Vec<StepDef> {
        vec![
            StepDef {
                step: step("burnin_cpu", 0, "deploy"),
                kinds: &[StepKind::Clean, StepKind::Service],
                run: Arc::new(burnin_cpu),
            },
            StepDef {
                step: step("write_image", 0, "deploy"),
                kinds: &[StepKind::Deploy, StepKind::Service],
                run: Arc::new(write_image),
            },
        ]
    }
}

fn step(name: &str, priority: i64, interface: &str) -> Step {
    Step {
        step: name.into(),
        priority,
        interface: interface.into(),
        reboot_requested: false,
        abortable: true,
        argsinfo: None,
        requires_ramdisk: None,
    }
}

/// `driver_info` values come as numbers or strings; both are accepted.
fn u64_setting(call: &StepCall, key: &str) -> Result<Option<u64>, RestError> {
    match call.args.get(key).or_else(|| call.driver_info(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            RestError::invalid_params(format!("{key} must be a non-negative integer"))
        }),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
            RestError::invalid_params(format!("{key} must be a non-negative integer, got {s:?}"))
        }),
        Some(other) => Err(RestError::invalid_params(format!(
            "{key} must be an integer, got {other}"
        ))),
    }
}

fn burnin_cpu(call: &StepCall) -> Result<Value, RestError> {
    let secs = u64_setting(call, "agent_burnin_cpu_timeout")?.unwrap_or(DEFAULT_BURNIN_SECS);
    let cpus = u64_setting(call, "agent_burnin_cpu_cpu")?.unwrap_or(0) as usize;
    info!(seconds = secs, cpus, "CPU burn-in started");
    let rounds = burn_cpu(Duration::from_secs(secs), cpus);
    info!(rounds, "CPU burn-in finished");
    Ok(Value::Null)
}

/// The `write_image` deploy step: `prepare_image` in-process; its result is
/// what the `prepare_image` command would have returned.
fn write_image(call: &StepCall) -> Result<Value, RestError> {
    let image_info = call
        .args
        .get("image_info")
        .ok_or_else(|| RestError::invalid_params("write_image needs image_info"))?;
    let message = crate::deploy::prepare_image(
        &call.ctx,
        &call.node,
        image_info,
        call.args.get("configdrive"),
        &call.progress,
    )?;
    Ok(serde_json::json!({ "result": format!("prepare_image: {message}") }))
}
