//! `system.*`: `lockdown` stops the API and heartbeats for good (Ironic uses
//! it for nodes that must not be powered off).

use serde_json::Value;
use tracing::warn;

use crate::api::registry::{Mode, Registry};

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
}
