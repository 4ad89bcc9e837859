//! `standby.*`: for now `sync`; image and power commands join in later issues.

use serde_json::Value;

use crate::api::registry::{Mode, Registry};

pub fn register(reg: &mut Registry) {
    reg.blocking("standby", "sync", Mode::Sync, |_ctx, _params| {
        nix::unistd::sync();
        Ok(Value::Null)
    });
}
