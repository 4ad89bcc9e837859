//! `system.*` (and IPA's `poll.get_hardware_info`): the hardware inventory,
//! and `lockdown`, which stops the API and heartbeats for good (Ironic uses
//! it for nodes that must not be powered off).

use serde_json::Value;
use tracing::warn;

use crate::api::registry::{Mode, Registry};
use crate::errors::RestError;
use crate::hardware::inventory;
use crate::state::AgentContext;

pub fn register(reg: &mut Registry) {
    reg.blocking(
        "system",
        "lockdown",
        Mode::Sync,
        |ctx, _params, _progress| {
            warn!("lockdown requested by the conductor: the agent API closes now");
            ctx.enter_lockdown();
            Ok(Value::Null)
        },
    );
    for ext in ["system", "poll"] {
        reg.blocking(
            ext,
            "get_hardware_info",
            Mode::Sync,
            |ctx, _params, _progress| hardware_info(&ctx),
        );
    }
}

pub fn hardware_info(ctx: &AgentContext) -> Result<Value, RestError> {
    serde_json::to_value(inventory::collect_for(
        &ctx.config,
        ctx.lookup_config().is_some_and(|c| c.agent_skip_bmc_detect),
    ))
    .map_err(|e| RestError::command_execution(e.to_string()))
}
