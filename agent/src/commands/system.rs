//! `system.*` (and IPA's `poll.get_hardware_info`): the hardware inventory,
//! and `lockdown`, which stops the API and heartbeats for good (Ironic uses
//! it for nodes that must not be powered off).

use serde_json::Value;
use tracing::warn;

use crate::api::registry::{Mode, Registry};
use crate::errors::RestError;
use crate::hardware::inventory::{self, Roots};
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
    let cfg = &ctx.config;
    let roots = Roots {
        sysfs: cfg.sysfs_root.clone(),
        procfs: cfg.procfs_root.clone(),
        dev: cfg.dev_root.clone(),
    };
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let arch = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.to_string());
    let inv = inventory::collect(&roots, cfg.bootif_raw.as_deref(), &hostname, &arch);
    serde_json::to_value(inv).map_err(|e| RestError::command_execution(e.to_string()))
}
